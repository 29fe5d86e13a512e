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
            let code = commands::exit_code(&err);
            commands::print_error(&err, code);
            ExitCode::from(code)
        }
    }
}
