//! One file per command: its arguments, the library call, its output.

pub mod analyze;
