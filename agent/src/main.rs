//! `finwait-agent`: thin entry point; see the library for everything else.

use clap::Parser;
use finwait_agent::cli::{self, Cli, Command};
use finwait_agent::telemetry;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, "info");
    let res = match &cli.command {
        Command::Snapshot(args) => cli::snapshot(args),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("finwait-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
