//! (written by a helper)
