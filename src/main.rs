//! The `diskvault` command: parse arguments, call the library, map errors to
//! exit codes. Everything here uses only the library's public API.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
