//! The `snaproll` binary: parse, run, print the error chain on one line, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use snaproll::cli::Cli;
use snaproll::commands;

/// mimalloc: rendering allocates and frees about a million small values per 1,000 datasets;
/// with the system allocator that was a sixth of `render`'s wall time (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = commands::plugin_args(std::env::args_os());
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(commands::print_parse_error(&e, &args)),
    };
    commands::init_logging(&cli.global);
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        // A closed stdout ends the run quietly with status 0, as ripgrep does.
        Err(err) if commands::closed_output(&err) => ExitCode::from(snaproll::exit::OK),
        Err(err) => {
            let code = commands::exit_code(&err);
            commands::print_error(&err, code);
            ExitCode::from(code)
        }
    }
}
