//! The `egret` command: see [`egret::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    egret::cli::main()
}
