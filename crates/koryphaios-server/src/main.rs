//! The `koryphaios` binary.

use std::process::ExitCode;

use clap::Parser as _;
use koryphaios_server::cli::{self, Cli};
use koryphaios_server::config::Config;
use koryphaios_server::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("koryphaios: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    // Held to the end of `main`: dropping it writes the queued log lines.
    let _log_guard = match telemetry::init(&config.log_level, config.log_format) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("koryphaios: {error:#}");
            return ExitCode::from(2);
        }
    };
    let names: Vec<String> = std::env::vars().map(|(name, _)| name).collect();
    for unknown in Config::unknown_variables(names.iter().map(String::as_str)) {
        tracing::warn!(
            variable = unknown,
            "unknown KORYPHAIOS_ variable ignored (typo?)"
        );
    }
    // On the heap: the command's future holds the whole configuration and the application.
    match Box::pin(cli::run(cli, config)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("koryphaios: {error:#}");
            ExitCode::FAILURE
        }
    }
}
