//! `finwait-agent`: thin entry point; see the library for everything else.

use clap::Parser;
use finwait_agent::cli::{self, Cli, Command};
use finwait_agent::telemetry;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, "info");
    let res = match &cli.command {
        Command::Snapshot(args) => cli::snapshot(args).map(|table| {
            // Freeing 100,000 sockets one by one costs more than exiting: let the
            // kernel reclaim the memory.
            std::mem::forget(table);
        }),
        Command::Run(args) => cli::run(args),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("finwait-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
