//! `finwait`: parse the flags, run the command on a current-thread runtime, and turn
//! any failure into one `finwait: <reason>` line on stderr and a non-zero status.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use finwait_cli::cli::{Cli, ParseFailure};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            return match ParseFailure::from(e) {
                ParseFailure::Info(help) => {
                    // Nothing sensible to do if stdout is gone.
                    let _ = help.print();
                    ExitCode::SUCCESS
                }
                ParseFailure::Usage(message) => fail(&message, 2),
            };
        }
    };
    let token = match finwait_cli::env_token() {
        Ok(t) => t,
        Err(e) => return fail(&e.to_string(), e.exit_code()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}"), 1),
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(finwait_cli::run(cli, token, &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string(), e.exit_code()),
    }
}

/// Prints `finwait: <message>` as exactly one line on stderr.
fn fail(message: &str, code: u8) -> ExitCode {
    let line = finwait_cli::format::one_line(message);
    let _ = writeln!(std::io::stderr(), "finwait: {}", line.trim());
    ExitCode::from(code)
}
