//! `vtid`: the command-line front end. Parsing and dispatch only; see `vtid::cli`.

use std::process::ExitCode;

use clap::Parser;
use vtid::cli::{Cli, dispatch};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: "doing X: because Y".
            eprintln!("vtid: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
