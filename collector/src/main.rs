//! `finwait-collector`: telemetry, configuration, build, run.

use clap::Parser;
use finwait_collector::app::{self, App};
use finwait_collector::config::{Command, Config};
use finwait_collector::telemetry;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut config = Config::parse();
    if let Some(Command::Init(args)) = config.command.take() {
        return match finwait_collector::init::run(&args) {
            Ok(setup) => {
                print!("{}", setup.instructions());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("finwait-collector init: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    telemetry::init(config.log_format, "info,sqlx=warn");
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("finwait-collector: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("finwait-collector listening on {}", app.addr());
    match app.run_until_stopped(app::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("finwait-collector: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
