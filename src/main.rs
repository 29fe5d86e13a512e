//! The `snaproll` binary: parse, run, print the error chain on one line, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use snaproll::cli::Cli;
use snaproll::commands;

fn main() -> ExitCode {
    let cli = Cli::parse_from(commands::plugin_args(std::env::args_os()));
    commands::init_logging(&cli.global);
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            for line in commands::error_lines(&err) {
                eprintln!("error: {line}");
            }
            ExitCode::from(commands::exit_code(&err))
        }
    }
}
