//! The `koryphaios` command line. Configuration comes from the environment only, so no secret
//! ever appears in arguments, shell history or `--help`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use std::sync::Arc;

use koryphaios_core::audit::checkpoint::Checkpoint;
use koryphaios_core::envelope::{KeyProvider, rotation};
use koryphaios_core::session::{SigningKeys, signing_keys};
use koryphaios_kms::LocalKeyRing;
use time::OffsetDateTime;

use crate::app::{self, Application};
use crate::config::{Config, KmsConfig};

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
    /// Manage the key-encryption keys and the key provider's master key.
    Kms {
        /// status, rotate, rewrap, retire or init-keyring.
        #[command(subcommand)]
        action: KmsAction,
    },
    /// Manage the access-token signing keys kept in the database.
    Jwt {
        /// rotate.
        #[command(subcommand)]
        action: JwtAction,
    },
    /// Verify, checkpoint or purge the audit log.
    Audit {
        /// verify, checkpoint or purge.
        #[command(subcommand)]
        action: AuditAction,
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

/// `koryphaios audit …`
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Recompute the hash chain; exits non-zero and names the first broken link if any.
    Verify {
        /// Also check a checkpoint printed earlier by `koryphaios audit checkpoint`: fails when
        /// the chain no longer contains that record with that hash, or its MAC does not check.
        #[arg(long, value_name = "kcp1.…")]
        checkpoint: Option<String>,
    },
    /// Print the chain head (position and hash) with an HMAC under the audit key; keep it outside
    /// the database and check it later with `audit verify --checkpoint`.
    Checkpoint,
    /// Delete records older than KORYPHAIOS_AUDIT_RETENTION_DAYS (or --older-than-days), keeping
    /// an anchor so the rest still verifies.
    Purge {
        /// Override the configured retention for this run.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=36_500))]
        older_than_days: Option<u64>,
    },
}

/// `koryphaios jwt …`
#[derive(Debug, Subcommand)]
pub enum JwtAction {
    /// Add a signing key: instances sign with it after a short publish delay, and tokens signed
    /// by the previous key verify until it is retired (hours after every such token expired).
    Rotate,
}

/// `koryphaios kms …`
#[derive(Debug, Subcommand)]
pub enum KmsAction {
    /// List the key-encryption-key versions, how many data keys each wraps, the next automatic
    /// rotation, and the key provider (root) that wraps them.
    Status,
    /// Add a key-encryption-key version; new data keys are wrapped under it. With `--root`,
    /// rotate the key provider's master key instead (the local ring) and re-wrap the KEKs.
    Rotate {
        /// Rotate the key provider's master key, not the key-encryption key.
        #[arg(long)]
        root: bool,
    },
    /// Create a local key ring file to hand to every instance
    /// (`KORYPHAIOS_KMS_LOCAL_KEYRING_FILE`, or its contents in `KORYPHAIOS_KMS_LOCAL_KEYRING`).
    InitKeyring {
        /// Where to write it (refused if it exists).
        path: PathBuf,
    },
    /// Re-wrap data keys under the newest version (resumable; the data stays sealed as it is).
    Rewrap {
        /// Data keys per batch.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch: u32,
    },
    /// Destroy an old version's key material once no data key uses it.
    Retire {
        /// The version to retire.
        #[arg(long)]
        version: i64,
        /// Refuse while the current version is younger than this many seconds (writes that
        /// wrapped under the old version just before the rotation must land and be re-wrapped).
        #[arg(long, default_value_t = 120)]
        settle_seconds: u64,
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
        Command::Kms {
            action: KmsAction::InitKeyring { path },
        } => init_keyring(&path, &config),
        Command::Kms { action } => kms(action, &config).await,
        Command::Jwt {
            action: JwtAction::Rotate,
        } => jwt_rotate(&config).await,
        Command::Audit { action } => audit(action, config).await,
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

async fn audit(action: AuditAction, mut config: Config) -> anyhow::Result<()> {
    if let AuditAction::Purge {
        older_than_days: Some(days),
    } = action
    {
        config.audit_retention_days = days;
    }
    let audit = app::open_audit(&config).await?;
    let mut out = std::io::stdout().lock();
    match action {
        AuditAction::Verify { checkpoint } => {
            // Parse first: a typo should not cost a full verification.
            let checkpoint = checkpoint
                .as_deref()
                .map(Checkpoint::parse)
                .transpose()
                .context("--checkpoint")?;
            let report = audit.verify_unchecked().await?;
            let mut failed = false;
            match &report.first_broken {
                None => writeln!(
                    out,
                    "audit chain valid: {} record(s) checked from position {} to {}",
                    report.checked,
                    report.anchor_seq + 1,
                    report.last_seq
                )?,
                Some(broken) => {
                    writeln!(
                        out,
                        "audit chain BROKEN at position {} (record {} at position {}): {}; {} record(s) before it verified",
                        broken.expected_seq,
                        broken.id,
                        broken.seq,
                        broken.kind.as_str(),
                        report.checked
                    )?;
                    failed = true;
                }
            }
            if let Some(checkpoint) = checkpoint {
                let verdict = audit.check_checkpoint(&checkpoint).await?;
                let status = if verdict.is_ok() { "ok" } else { "FAILED" };
                writeln!(
                    out,
                    "checkpoint at position {} {status}: {}",
                    checkpoint.seq,
                    verdict.describe()
                )?;
                if !verdict.is_ok() {
                    anyhow::bail!("the audit chain does not contain the checkpoint");
                }
            }
            if failed {
                anyhow::bail!("the audit chain does not verify");
            }
        }
        AuditAction::Checkpoint => {
            let checkpoint = audit.checkpoint().await?;
            writeln!(
                out,
                "seq {}\nhash {}\ncheckpoint {}",
                checkpoint.seq,
                base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    &checkpoint.hash
                ),
                checkpoint.encode()
            )?;
        }
        AuditAction::Purge { .. } => {
            let purge = audit.purge_expired().await?;
            writeln!(
                out,
                "purged {} audit record(s) older than {} day(s); the chain now starts after position {}",
                purge.deleted,
                audit.retention().whole_days(),
                purge.anchor.map_or(0, |a| a.seq)
            )?;
        }
    }
    Ok(())
}

fn init_keyring(path: &std::path::Path, config: &Config) -> anyhow::Result<()> {
    if path.exists() {
        anyhow::bail!("{} exists; choose another path", path.display());
    }
    let passphrase = match &config.kms {
        KmsConfig::Local { passphrase, .. } => passphrase.clone(),
        // `age` and, with their features, the remote providers.
        _ => None,
    };
    LocalKeyRing::open(path, passphrase).context("cannot create the key ring")?;
    writeln!(
        std::io::stdout().lock(),
        "created {}: hand it to every instance as KORYPHAIOS_KMS_LOCAL_KEYRING_FILE (a mounted secret) and keep a backup",
        path.display()
    )?;
    Ok(())
}

async fn jwt_rotate(config: &Config) -> anyhow::Result<()> {
    if config.jwt_secret.is_some() {
        anyhow::bail!(
            "KORYPHAIOS_JWT_SECRET is set: tokens are signed with it, not with database keys; change that secret instead"
        );
    }
    let store = app::open_store(config).await?;
    store
        .migrate_up()
        .await
        .context("database migration failed")?;
    let kms = app::open_kms(config, &store).await?;
    let keys = SigningKeys::new(Arc::clone(&store), kms as Arc<dyn KeyProvider>);
    let version = keys.rotate(OffsetDateTime::now_utc()).await?;
    writeln!(
        std::io::stdout().lock(),
        "created signing key v{version}: instances sign with it within {} s; tokens of the previous key verify until they expire",
        signing_keys::PUBLISH_DELAY.as_secs() + signing_keys::RELOAD_INTERVAL.as_secs()
    )?;
    Ok(())
}

async fn kms(action: KmsAction, config: &Config) -> anyhow::Result<()> {
    let store = app::open_store(config).await?;
    store
        .migrate_up()
        .await
        .context("database migration failed")?;
    let hierarchy = app::open_kms(config, &store).await?;
    let provider: Arc<dyn KeyProvider> = Arc::clone(&hierarchy) as Arc<dyn KeyProvider>;
    let root = Arc::clone(hierarchy.root());
    let mut out = std::io::stdout().lock();
    match action {
        KmsAction::Status => {
            let counts = rotation::inventory(&store).await?;
            writeln!(
                out,
                "root provider {} key {} version {}",
                root.provider_name(),
                root.kek_id(),
                root.current_version()
            )?;
            let next = match (config.key_rotation, hierarchy.current_created_at()) {
                (Some(period), Some(created)) => (created + period)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                _ => "off (KORYPHAIOS_ENCRYPTION_KEY_ROTATION_DAYS=0)".to_owned(),
            };
            writeln!(out, "next key-encryption-key rotation: {next}")?;
            writeln!(
                out,
                "{:<8} {:<8} {:<26} data_keys",
                "version", "state", "created_at"
            )?;
            for version in provider.versions().await? {
                let state = if version.current {
                    "current"
                } else if version.retired {
                    "retired"
                } else {
                    "active"
                };
                let used: u64 = counts
                    .iter()
                    .filter(|c| {
                        c.provider == provider.provider_name() && c.kek_version == version.version
                    })
                    .map(|c| c.count)
                    .sum();
                let created = version
                    .created_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:<8} {:<8} {:<26} {used}",
                    version.version, state, created
                )?;
            }
            for other in counts
                .iter()
                .filter(|c| c.provider != provider.provider_name())
            {
                writeln!(
                    out,
                    "note: {} data key(s) are still wrapped by provider {} directly (key {}, version {}); `koryphaios kms rewrap` moves them under the key-encryption key",
                    other.count, other.provider, other.kek_id, other.kek_version
                )?;
            }
        }
        KmsAction::Rotate { root: true } => {
            let version = root.rotate().await?;
            let moved = hierarchy.rewrap_keks().await?;
            writeln!(
                out,
                "rotated the {} master key to version {version}; {moved} key-encryption key(s) re-wrapped under it",
                root.provider_name()
            )?;
        }
        KmsAction::Rotate { root: false } => {
            let version = provider.rotate().await?;
            writeln!(
                out,
                "rotated: new data keys are wrapped under version {version}; run `koryphaios kms rewrap` to move existing ones"
            )?;
        }
        KmsAction::InitKeyring { .. } => unreachable!("handled before the store is opened"),
        KmsAction::Rewrap { batch } => {
            let moved = hierarchy.rewrap_keks().await?;
            if moved > 0 {
                writeln!(
                    out,
                    "{moved} key-encryption key(s) re-wrapped under the root's current version"
                )?;
            }
            let report = rotation::rewrap_all(&store, &provider, batch, |progress| {
                eprintln!(
                    "rewrap: {} re-wrapped, {} failed so far",
                    progress.rewrapped, progress.failed
                );
            })
            .await?;
            writeln!(
                out,
                "rewrap done: {} re-wrapped under version {}, {} changed concurrently, {} failed",
                report.rewrapped,
                provider.current_version(),
                report.skipped,
                report.failed
            )?;
            if report.failed > 0 {
                anyhow::bail!(
                    "{} data key(s) could not be re-wrapped; see the log",
                    report.failed
                );
            }
        }
        KmsAction::Retire {
            version,
            settle_seconds,
        } => {
            rotation::retire(
                &store,
                &provider,
                version,
                std::time::Duration::from_secs(settle_seconds),
            )
            .await?;
            writeln!(
                out,
                "retired version {version}: its key material is destroyed"
            )?;
        }
    }
    Ok(())
}
