//! The `koryphaios` command line. Configuration comes from the environment only, so no secret
//! ever appears in arguments, shell history or `--help`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::app::{self, Application};
use crate::config::Config;

/// Koryphaios: provider credentials under envelope encryption, API keys, rate limits, audit.
///
/// Configure with KORYPHAIOS_* environment variables (see the README); nothing is needed for
/// the embedded defaults.
#[derive(Debug, Parser)]
#[command(name = "koryphaios", version)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (migrates the database first).
    Serve,
    /// Inspect or change the database schema.
    Migrate {
        /// status, up or down.
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Print the OpenAPI document as YAML.
    Openapi {
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// `koryphaios migrate …`
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// List every migration and whether it is applied.
    Status,
    /// Apply every pending migration.
    Up,
    /// Revert the newest applied migrations.
    Down {
        /// How many to revert.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        steps: u32,
    },
}

/// Runs a parsed command line.
pub async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let application = Application::build(&config).await?;
            tracing::info!(address = %application.local_addr()?, version = env!("CARGO_PKG_VERSION"), "koryphaios is serving");
            application.run_until_stopped(app::shutdown_signal()).await
        }
        Command::Migrate { action } => migrate(action, &config).await,
        Command::Openapi { output } => {
            let yaml = crate::openapi::yaml()?;
            match output {
                Some(path) => std::fs::write(&path, yaml)
                    .with_context(|| format!("cannot write {}", path.display())),
                None => Ok(std::io::stdout().write_all(yaml.as_bytes())?),
            }
        }
    }
}

async fn migrate(action: MigrateAction, config: &Config) -> anyhow::Result<()> {
    let store = app::open_store(config).await?;
    let mut out = std::io::stdout().lock();
    match action {
        MigrateAction::Status => {
            writeln!(out, "{:<8} {:<32} applied_at", "version", "name")?;
            for line in store.migration_status().await? {
                let applied = line.applied_at.map_or_else(
                    || "pending".to_owned(),
                    |at| {
                        at.format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default()
                    },
                );
                writeln!(out, "{:<8} {:<32} {applied}", line.version, line.name)?;
            }
        }
        MigrateAction::Up => {
            let applied = store.migrate_up().await?;
            writeln!(out, "applied {} migration(s): {applied:?}", applied.len())?;
        }
        MigrateAction::Down { steps } => {
            let reverted = store.migrate_down(steps as usize).await?;
            writeln!(
                out,
                "reverted {} migration(s): {reverted:?}",
                reverted.len()
            )?;
        }
    }
    Ok(())
}
