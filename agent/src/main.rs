//! `finwait-agent`: thin entry point (telemetry, config, build, run); see the library
//! for everything else.

use finwait_agent::AgentError;
use finwait_agent::app::{self, App};
use finwait_agent::cli::{self, Cli, Command, RunArgs};
use finwait_agent::config::Config;
use finwait_agent::telemetry;

fn main() -> std::process::ExitCode {
    // `run` also reads a --config file: flags, then FINWAIT_* variables, then the
    // file, then the defaults.
    let cli = finwait_configfile::parse::<Cli>(&["run"]);
    telemetry::init(cli.log_format, "info");
    let res = match &cli.command {
        Command::Snapshot(args) => cli::snapshot(args).map(|table| {
            // Freeing 100,000 sockets one by one costs more than exiting: let the
            // kernel reclaim the memory.
            std::mem::forget(table);
        }),
        Command::Run(args) => run(args),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("finwait-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `run`: every configuration problem reported before anything starts, then sample
/// and stream until SIGINT or SIGTERM.
fn run(args: &RunArgs) -> Result<(), AgentError> {
    let app = App::build(Config::from_args(args)?)?;
    if let Some(addr) = app.metrics_addr() {
        // For scripts and tests that asked for port 0, like the collector's line.
        println!("finwait-agent metrics listening on {addr}");
    }
    app::runtime()?.block_on(app.run_until_stopped(app::shutdown_signal()))
}
