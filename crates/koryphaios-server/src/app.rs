//! The composition root: `Application::build` wires configuration, store, use cases and the HTTP
//! pipeline. `koryphaios serve`, the CLI and the test harness all go through here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use koryphaios_core::api_keys::{ApiKeyService, Tier};
use koryphaios_core::audit::service::AuditService;
use koryphaios_core::credentials::CredentialService;
use koryphaios_core::envelope::hierarchy::KeyHierarchy;
use koryphaios_core::envelope::rotation;
use koryphaios_core::envelope::{KeyProvider, KmsError};
use koryphaios_core::ratelimit::MemoryLimiter;
use koryphaios_core::session::signing_keys;
use koryphaios_core::session::{
    AccessTokenCodec, AuthService, AuthSettings, JwtSecret, SigningKeys,
};
use koryphaios_core::store::Store;
use koryphaios_core::tokens::{StoreUseCounter, TokenService, UseCounter};
use koryphaios_core::users::{PasswordHasher, UserAdminService};
use koryphaios_core::{Clock, SystemClock};
use koryphaios_kms::{AgeKeyProvider, LocalKeyRing};
use koryphaios_ratelimit::{FallbackLimiter, RedisLimiter, RedisUseCounter};
use koryphaios_store_postgres::PostgresSettings;
use koryphaios_store_sqlite::SqliteSettings;
use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::config::{Config, DatabaseConfig, KmsConfig, LocalKeyringSource};
use crate::data_dir;
use crate::http::routes::starting::{self, Swappable};
use crate::http::routes::{self, PipelineSettings};
use crate::http::server::{self, ConnectionLimits};
use crate::proxy::pending::PendingRecords;
use crate::rate_limits::RateLimits;
use crate::state::{AppServices, AppState};

/// How often expired sessions and token revocations are purged.
const SESSION_PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often audit records past retention are purged.
const AUDIT_PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// How often the key material is re-read (to pick up `koryphaios kms rotate`) and data keys
/// under older versions are re-wrapped.
const KEY_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// How often batched API-key usage counters are written.
const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// DEKs re-wrapped per batch by the background job.
const REWRAP_BATCH: u32 = 200;

/// The parts that tests replace: the clock, the password hashing cost, and the root key
/// provider (to make it unreachable).
#[derive(Debug, Clone)]
pub struct Components {
    /// The source of "now".
    pub clock: Arc<dyn Clock>,
    /// Password hashing (tests use cheap parameters).
    pub password_hasher: PasswordHasher,
    /// The root key provider; `None` opens the configured one.
    pub root_kms: Option<Arc<dyn KeyProvider>>,
}

impl Default for Components {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            password_hasher: PasswordHasher::default(),
            root_kms: None,
        }
    }
}

impl Components {
    async fn root_kms(&self, config: &Config) -> anyhow::Result<Arc<dyn KeyProvider>> {
        match &self.root_kms {
            Some(root) => Ok(Arc::clone(root)),
            None => open_root_kms(config).await,
        }
    }
}

/// How often gauges that describe stored data (`credentials_stored`) are refreshed: scrapes read
/// the last values, so a scrape costs the same whatever the data size.
const DATA_GAUGES_INTERVAL: Duration = Duration::from_secs(30);

/// A built, bound, not yet serving instance.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    /// The separate metrics listener (`KORYPHAIOS_METRICS_ADDR`).
    metrics_listener: Option<TcpListener>,
    connection_limits: ConnectionLimits,
    shutdown_grace: Duration,
    store: Arc<dyn Store>,
    services: Services,
    /// The proxy's `credential_use` writes still in flight: waited for before the store closes.
    pending_records: PendingRecords,
}

/// The instance's use cases and routers, or what is needed to make them once the key provider
/// answers.
#[derive(Debug)]
enum Services {
    Ready(Box<Assembled>),
    /// The key provider was unreachable at start: serve "not ready" and keep trying.
    WaitingForKms {
        config: Box<Config>,
        components: Components,
        /// The root provider, opened once and asked again on every retry.
        root: Arc<dyn KeyProvider>,
    },
}

/// Everything built on top of the store and the keys.
#[derive(Debug)]
struct Assembled {
    router: Router,
    metrics_router: Option<Router>,
    kms: Arc<KeyHierarchy>,
    /// `KORYPHAIOS_ENCRYPTION_KEY_ROTATION_DAYS`.
    key_rotation: Option<time::Duration>,
    /// The database-kept signing keys and the codec they refresh (none with a configured secret).
    signing: Option<(SigningKeys, AccessTokenCodec)>,
    api_keys: Arc<ApiKeyService>,
    audit: Arc<AuditService>,
    rate_limits: Option<Arc<RateLimits>>,
    clock: Arc<dyn Clock>,
}

/// How often an instance waiting for its key provider tries again.
const KMS_RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// The background jobs of a serving instance, stopped at shutdown.
struct Upkeep {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    api_keys: Arc<ApiKeyService>,
}

impl Upkeep {
    fn start(store: &Arc<dyn Store>, parts: &Assembled) -> Self {
        let mut tasks = vec![
            tokio::spawn(purge_sessions_periodically(
                Arc::clone(store),
                Arc::clone(&parts.clock),
            )),
            tokio::spawn(maintain_keys_periodically(
                Arc::clone(store),
                Arc::clone(&parts.kms),
                parts.key_rotation,
                Arc::clone(&parts.clock),
            )),
            tokio::spawn(flush_usage_periodically(Arc::clone(&parts.api_keys))),
            tokio::spawn(purge_audit_periodically(Arc::clone(&parts.audit))),
            tokio::spawn(refresh_data_gauges_periodically(Arc::clone(store))),
        ];
        if let Some(limits) = &parts.rate_limits {
            tasks.push(tokio::spawn(Arc::clone(limits.limiter()).maintain()));
        }
        if let Some((keys, codec)) = &parts.signing {
            tasks.push(tokio::spawn(refresh_signing_keys_periodically(
                keys.clone(),
                codec.clone(),
                Arc::clone(&parts.clock),
            )));
        }
        Self {
            tasks,
            api_keys: Arc::clone(&parts.api_keys),
        }
    }

    async fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
        if let Err(error) = self.api_keys.flush_usage().await {
            tracing::warn!(%error, "final flush of API key usage failed");
        }
    }
}

/// Opens the configured store without migrating it (the `migrate` CLI decides what to apply).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match &config.database {
        DatabaseConfig::Sqlite(path) => {
            // The data directory is needed only for what lives in it.
            data_dir::prepare(&config.data_dir)?;
            data_dir::create_private_file(path)?;
            let store = koryphaios_store_sqlite::open(path, &SqliteSettings::default())
                .await
                .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
            Ok(Arc::new(store))
        }
        DatabaseConfig::Postgres {
            url,
            max_connections,
            acquire_timeout,
            statement_timeout,
        } => {
            let settings = PostgresSettings {
                max_connections: *max_connections,
                acquire_timeout: *acquire_timeout,
                statement_timeout: *statement_timeout,
                ..PostgresSettings::default()
            };
            // The error names the cause, never the URL (it may hold a password).
            let store = koryphaios_store_postgres::connect(url.expose_secret(), &settings)
                .await
                .context("cannot connect to PostgreSQL (KORYPHAIOS_DATABASE_URL)")?;
            Ok(Arc::new(store))
        }
    }
}

/// Opens the configured key provider, the root of the key hierarchy (creating its key file on
/// first start when it lives in the data directory).
pub async fn open_root_kms(config: &Config) -> anyhow::Result<Arc<dyn KeyProvider>> {
    if config.kms.uses_data_dir() {
        data_dir::prepare(&config.data_dir)?;
    }
    let kms = config.kms.clone();
    let data_dir = config.data_dir.clone();
    // Key files are read (and a passphrase stretched) off the async runtime.
    let provider = tokio::task::spawn_blocking(move || -> anyhow::Result<RootKms> {
        let provider: Arc<dyn KeyProvider> = match kms {
            KmsConfig::Local {
                passphrase,
                keyring,
            } => Arc::new(
                match keyring {
                    LocalKeyringSource::DataDir => {
                        LocalKeyRing::open(&LocalKeyRing::default_path(&data_dir), passphrase)
                    }
                    LocalKeyringSource::File(path) => LocalKeyRing::open_existing(
                        &path,
                        passphrase,
                        "KORYPHAIOS_KMS_LOCAL_KEYRING_FILE",
                    ),
                    LocalKeyringSource::Contents(contents) => LocalKeyRing::from_contents(
                        contents.expose_secret().as_bytes(),
                        passphrase,
                        "KORYPHAIOS_KMS_LOCAL_KEYRING",
                    ),
                }
                .context("local key ring")?,
            ),
            KmsConfig::Age { identity_file } => {
                let path = identity_file.unwrap_or_else(|| AgeKeyProvider::default_path(&data_dir));
                Arc::new(AgeKeyProvider::open(&path).context("age key provider")?)
            }
            #[cfg(any(feature = "aws", feature = "vault", feature = "gcp", feature = "azure"))]
            remote => return Ok(RootKms::Remote(remote)),
        };
        Ok(RootKms::Ready(provider))
    })
    .await??;
    match provider {
        RootKms::Ready(provider) => Ok(provider),
        #[cfg(any(feature = "aws", feature = "vault", feature = "gcp", feature = "azure"))]
        RootKms::Remote(settings) => open_remote_kms(settings).await,
    }
}

/// A root provider opened off the runtime, or the settings of a remote one to connect to.
enum RootKms {
    Ready(Arc<dyn KeyProvider>),
    #[cfg(any(feature = "aws", feature = "vault", feature = "gcp", feature = "azure"))]
    Remote(KmsConfig),
}

/// Connects a remote provider: fails only on unusable settings, never because the service is
/// unreachable (that shows as "not ready").
#[cfg(any(feature = "aws", feature = "vault", feature = "gcp", feature = "azure"))]
async fn open_remote_kms(settings: KmsConfig) -> anyhow::Result<Arc<dyn KeyProvider>> {
    let provider: Arc<dyn KeyProvider> = match settings {
        #[cfg(feature = "aws")]
        KmsConfig::Aws(settings) => Arc::new(
            koryphaios_kms::AwsKms::connect(settings)
                .await
                .context("AWS KMS (KORYPHAIOS_KMS_PROVIDER=aws)")?,
        ),
        #[cfg(feature = "vault")]
        KmsConfig::Vault(settings) => Arc::new(
            koryphaios_kms::VaultTransit::connect(settings)
                .await
                .context("Vault transit (KORYPHAIOS_KMS_PROVIDER=vault)")?,
        ),
        #[cfg(feature = "gcp")]
        KmsConfig::Gcp(settings) => Arc::new(
            koryphaios_kms::GcpKms::connect(settings)
                .await
                .context("Cloud KMS (KORYPHAIOS_KMS_PROVIDER=gcp)")?,
        ),
        #[cfg(feature = "azure")]
        KmsConfig::Azure(settings) => Arc::new(
            koryphaios_kms::AzureKeyVault::connect(settings)
                .await
                .context("Azure Key Vault (KORYPHAIOS_KMS_PROVIDER=azure)")?,
        ),
        KmsConfig::Local { .. } | KmsConfig::Age { .. } => {
            anyhow::bail!("not a remote key provider")
        }
    };
    Ok(provider)
}

/// Opens the key hierarchy: the root provider and the key-encryption keys in `store` (ADR 0011).
pub async fn open_kms(
    config: &Config,
    store: &Arc<dyn Store>,
) -> anyhow::Result<Arc<KeyHierarchy>> {
    open_hierarchy(open_root_kms(config).await?, store).await
}

async fn open_hierarchy(
    root: Arc<dyn KeyProvider>,
    store: &Arc<dyn Store>,
) -> anyhow::Result<Arc<KeyHierarchy>> {
    let hierarchy = KeyHierarchy::open(root, Arc::clone(store))
        .await
        .context("cannot load the key-encryption keys (KORYPHAIOS_KMS_PROVIDER)")?;
    Ok(Arc::new(hierarchy))
}

/// The access-token codec: the configured `KORYPHAIOS_JWT_SECRET`, or the signing keys kept in
/// the database (then also returned, for the refresh task).
async fn token_codec(
    config: &Config,
    store: &Arc<dyn Store>,
    kms: &Arc<KeyHierarchy>,
    now: time::OffsetDateTime,
) -> anyhow::Result<(AccessTokenCodec, Option<SigningKeys>)> {
    if let Some(configured) = &config.jwt_secret {
        let secret = JwtSecret::new(configured.expose_secret().as_bytes().to_vec())
            .context("KORYPHAIOS_JWT_SECRET")?;
        return Ok((AccessTokenCodec::new(&secret), None));
    }
    let keys = SigningKeys::new(Arc::clone(store), Arc::clone(kms) as Arc<dyn KeyProvider>);
    let codec = keys
        .codec(now)
        .await
        .context("cannot load the access-token signing keys")?;
    Ok((codec, Some(keys)))
}

/// Where agent tokens' `maxUses` are counted: Redis when configured (it is shared and cheap),
/// else the database every instance shares.
fn build_use_counter(
    config: &Config,
    store: &Arc<dyn Store>,
) -> anyhow::Result<Arc<dyn UseCounter>> {
    let settings = &config.rate_limit;
    Ok(match &settings.redis_url {
        Some(url) => Arc::new(
            RedisUseCounter::new(url.expose_secret(), settings.redis_timeout)
                .map_err(|e| anyhow::anyhow!("KORYPHAIOS_REDIS_URL: {e}"))?,
        ),
        None => Arc::new(StoreUseCounter(Arc::clone(store))),
    })
}

/// The rate limiter: Redis with the in-memory fallback, memory only, or none (disabled).
fn build_rate_limits(
    config: &Config,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<Option<Arc<RateLimits>>> {
    let settings = &config.rate_limit;
    if !settings.enabled {
        tracing::warn!("rate limiting is disabled (KORYPHAIOS_RATE_LIMIT_ENABLED=false)");
        return Ok(None);
    }
    let memory = MemoryLimiter::new(Arc::clone(clock));
    let limiter = match &settings.redis_url {
        Some(url) => {
            let redis = RedisLimiter::new(url.expose_secret(), settings.redis_timeout)
                .map_err(|e| anyhow::anyhow!("KORYPHAIOS_REDIS_URL: {e}"))?;
            FallbackLimiter::with_redis(redis, memory, settings.redis_timeout)
        }
        None => FallbackLimiter::memory_only(memory),
    };
    Ok(Some(Arc::new(RateLimits::new(
        Arc::new(limiter),
        settings.clone(),
    ))))
}

/// Opens the store (migrated), the key provider and the audit use cases, for the `audit` CLI.
pub async fn open_audit(config: &Config) -> anyhow::Result<AuditService> {
    let store = open_store(config).await?;
    store
        .migrate_up()
        .await
        .context("database migration failed")?;
    let kms = open_kms(config, &store).await?;
    start_audit(config, store, kms.as_ref(), Arc::new(SystemClock)).await
}

async fn start_audit(
    config: &Config,
    store: Arc<dyn Store>,
    kms: &dyn KeyProvider,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<AuditService> {
    let retention = i64::try_from(config.audit_retention_days).unwrap_or(365);
    AuditService::start(store, kms, clock, time::Duration::days(retention))
        .await
        .context("cannot load the audit chain key")
}

/// Whether `error` says the key provider could not be reached (rather than refused or broken).
fn kms_unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<KmsError>(),
            Some(KmsError::Unavailable(_))
        )
    })
}

/// Builds the use cases and routers on top of a migrated store and loaded keys.
async fn assemble(
    config: &Config,
    components: Components,
    store: &Arc<dyn Store>,
    kms: Arc<KeyHierarchy>,
    pending_records: &PendingRecords,
) -> anyhow::Result<Assembled> {
    let audit = Arc::new(
        start_audit(
            config,
            Arc::clone(store),
            kms.as_ref(),
            Arc::clone(&components.clock),
        )
        .await?,
    );
    let (codec, signing_keys) = token_codec(config, store, &kms, components.clock.now()).await?;
    let settings = AuthSettings {
        allow_registration: config.allow_registration,
        default_user_tier: config.default_user_tier,
        ..AuthSettings::default()
    };
    let auth = AuthService::new(
        Arc::clone(store),
        Arc::clone(&components.clock),
        codec.clone(),
        components.password_hasher,
        settings,
    );
    let credentials = CredentialService::new(
        Arc::clone(store),
        Arc::clone(&kms) as Arc<dyn KeyProvider>,
        Arc::clone(&components.clock),
    );
    let mut api_keys = ApiKeyService::new(Arc::clone(store), Arc::clone(&components.clock));
    if config.rate_limit.enabled {
        api_keys = api_keys.with_tier_limits(
            Tier::ALL
                .map(|tier| u32::try_from(config.rate_limit.tier_limit(tier)).unwrap_or(u32::MAX)),
        );
    }
    let api_keys = Arc::new(api_keys);
    let tokens = Arc::new(TokenService::new(
        Arc::clone(store),
        Arc::clone(&components.clock),
        build_use_counter(config, store)?,
    ));
    let users = Arc::new(UserAdminService::new(
        Arc::clone(store),
        Arc::clone(&components.clock),
        Arc::clone(&api_keys),
    ));
    let rate_limits = build_rate_limits(config, &components.clock)?;
    let state = AppState::new(AppServices {
        rate_limits: rate_limits.clone(),
        trusted_proxies: Arc::new(config.rate_limit.trusted_proxies.clone()),
        metrics_token: config.metrics_token.clone(),
        rendered_metrics: Arc::new(routes::metrics::RenderedMetrics::new(
            config.metrics_max_age,
        )),
        serves_metrics: config.metrics_addr.is_none(),
        api_keys: Arc::clone(&api_keys),
        tokens,
        auth: Arc::new(auth),
        credentials: Arc::new(credentials),
        users,
        audit: Arc::clone(&audit),
        store: Arc::clone(store),
        kms: Arc::clone(&kms),
        clock: Arc::clone(&components.clock),
        proxy: Arc::new(crate::proxy::Proxy::new(
            &config.proxy,
            pending_records.clone(),
        )?),
    });
    let pipeline = PipelineSettings {
        cors_origins: config.cors_origins.clone(),
        hsts_max_age: config.hsts_max_age,
        request_timeout: config.request_timeout,
    };
    let metrics_router = config
        .metrics_addr
        .map(|_| routes::metrics::metrics_only_router(&state, config.hsts_max_age));
    Ok(Assembled {
        router: routes::router(state, &pipeline),
        metrics_router,
        kms,
        key_rotation: config.key_rotation,
        signing: signing_keys.map(|keys| (keys, codec)),
        api_keys,
        audit,
        rate_limits,
        clock: components.clock,
    })
}

impl Application {
    /// Builds the production application.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        Self::build_with(config, Components::default()).await
    }

    /// Builds with replaced components (tests). When the key provider cannot be reached, the
    /// instance still binds and serves: not ready (503) until the keys load by themselves.
    pub async fn build_with(config: &Config, components: Components) -> anyhow::Result<Self> {
        let store = open_store(config).await?;
        let applied = store
            .migrate_up()
            .await
            .context("database migration failed")?;
        if !applied.is_empty() {
            tracing::info!(?applied, "database migrated");
        }
        crate::metrics::handle();
        let root = components.root_kms(config).await?;
        let pending_records = PendingRecords::default();
        let services = match open_hierarchy(Arc::clone(&root), &store).await {
            Ok(kms) => Services::Ready(Box::new(
                assemble(config, components, &store, kms, &pending_records).await?,
            )),
            Err(error) if kms_unreachable(&error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "the key provider is unreachable: not ready; retrying every {} s",
                    KMS_RETRY_INTERVAL.as_secs()
                );
                Services::WaitingForKms {
                    config: Box::new(config.clone()),
                    components,
                    root,
                }
            }
            Err(error) => return Err(error),
        };
        let metrics_listener = match config.metrics_addr {
            Some(address) => Some(TcpListener::bind(address).await.with_context(|| {
                format!("cannot listen on {address} (KORYPHAIOS_METRICS_ADDR)")
            })?),
            None => None,
        };
        let address = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(address).await.with_context(|| {
            format!("cannot listen on {address} (KORYPHAIOS_HOST/KORYPHAIOS_PORT)")
        })?;
        Ok(Self {
            listener,
            metrics_listener,
            connection_limits: config.connection_limits,
            shutdown_grace: config.shutdown_grace,
            store,
            services,
            pending_records,
        })
    }

    /// The address actually bound (port 0 resolves here).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The address of the separate metrics listener, when `KORYPHAIOS_METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        Ok(match &self.metrics_listener {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        })
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish for the grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            metrics_listener,
            connection_limits,
            shutdown_grace,
            store,
            services,
            pending_records,
        } = self;
        let upkeep: Arc<tokio::sync::Mutex<Option<Upkeep>>> =
            Arc::new(tokio::sync::Mutex::new(None));
        let (router, metrics_router, waiting) = match services {
            Services::Ready(parts) => {
                *upkeep.lock().await = Some(Upkeep::start(&store, &parts));
                let metrics_router = parts.metrics_router.clone();
                (parts.router.clone(), metrics_router, None)
            }
            Services::WaitingForKms {
                config,
                components,
                root,
            } => {
                let root_backend = root.provider_name();
                let starting = |serves_metrics| {
                    starting::router(
                        root_backend,
                        config.hsts_max_age,
                        config.metrics_token.clone(),
                        serves_metrics,
                    )
                };
                let main = Swappable::new(starting(config.metrics_addr.is_none()));
                let metrics = Swappable::new(starting(true));
                let task = tokio::spawn(wait_for_kms(
                    config,
                    components,
                    root,
                    Arc::clone(&store),
                    main.clone(),
                    metrics.clone(),
                    Arc::clone(&upkeep),
                    pending_records.clone(),
                ));
                (main.router(), Some(metrics.router()), Some(task))
            }
        };
        let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_server = metrics_listener
            .zip(metrics_router)
            .map(|(listener, router)| {
                let limits = ConnectionLimits {
                    max_connections: 64,
                    ..connection_limits
                };
                tokio::spawn(server::serve(listener, router, limits, async {
                    let _ = metrics_stopped.await;
                }))
            });
        crate::metrics::started();
        let metrics_upkeep = tokio::spawn(async {
            let mut interval = tokio::time::interval(Duration::from_secs(5));
            loop {
                interval.tick().await;
                crate::metrics::handle().run_upkeep();
            }
        });
        let stopping = Arc::new(Notify::new());
        let signal = Arc::clone(&stopping);
        let server = server::serve(listener, router, connection_limits, async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, draining requests");
            signal.notify_one();
        });
        let drain_deadline = async {
            stopping.notified().await;
            tokio::time::sleep(shutdown_grace).await;
        };
        let result = tokio::select! {
            served = server => served.context("server failed"),
            () = drain_deadline => {
                tracing::warn!(grace_secs = shutdown_grace.as_secs(), "drain period over; closing with requests in flight");
                Ok(())
            }
        };
        let _ = metrics_stop.send(());
        if let Some(metrics_server) = metrics_server {
            metrics_server.abort();
        }
        if let Some(task) = waiting {
            task.abort();
        }
        metrics_upkeep.abort();
        // The last proxied calls' audit records are written by tasks spawned as their responses
        // ended: closing the store under them would lose the records.
        if tokio::time::timeout(shutdown_grace, pending_records.idle())
            .await
            .is_err()
        {
            tracing::warn!(
                pending = pending_records.count(),
                "credential_use audit records still unwritten after the grace period"
            );
        }
        if let Some(upkeep) = upkeep.lock().await.take() {
            upkeep.stop().await;
        }
        store.close().await;
        result
    }
}

/// Retries loading the keys until the key provider answers, then installs the full routers and
/// starts the background jobs.
#[expect(
    clippy::too_many_arguments,
    reason = "the parts of the instance this task completes, each moved in once"
)]
async fn wait_for_kms(
    config: Box<Config>,
    components: Components,
    root: Arc<dyn KeyProvider>,
    store: Arc<dyn Store>,
    main: Swappable,
    metrics: Swappable,
    upkeep: Arc<tokio::sync::Mutex<Option<Upkeep>>>,
    pending_records: PendingRecords,
) {
    loop {
        tokio::time::sleep(KMS_RETRY_INTERVAL).await;
        let kms = match open_hierarchy(Arc::clone(&root), &store).await {
            Ok(kms) => kms,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "the key provider is still unreachable"
                );
                continue;
            }
        };
        match assemble(&config, components.clone(), &store, kms, &pending_records).await {
            Ok(parts) => {
                *upkeep.lock().await = Some(Upkeep::start(&store, &parts));
                if let Some(router) = &parts.metrics_router {
                    metrics.install(router.clone());
                }
                main.install(parts.router.clone());
                tracing::info!("the key provider answered: keys loaded, serving");
                return;
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "starting the services failed; retrying"
                );
            }
        }
    }
}

async fn purge_audit_periodically(audit: Arc<AuditService>) {
    let mut interval = tokio::time::interval(AUDIT_PURGE_INTERVAL);
    loop {
        interval.tick().await;
        match audit.purge_expired().await {
            Ok(purge) if purge.deleted > 0 => tracing::info!(
                deleted = purge.deleted,
                anchor_seq = purge.anchor.map(|a| a.seq),
                "purged audit records past retention"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "audit retention purge failed; retrying later"),
        }
    }
}

async fn refresh_data_gauges_periodically(store: Arc<dyn Store>) {
    let mut interval = tokio::time::interval(DATA_GAUGES_INTERVAL);
    loop {
        interval.tick().await;
        match store.count_credentials_by_provider().await {
            Ok(counts) => crate::metrics::credentials_stored(&counts),
            Err(error) => tracing::warn!(%error, "metrics: cannot count stored credentials"),
        }
    }
}

async fn purge_sessions_periodically(store: Arc<dyn Store>, clock: Arc<dyn Clock>) {
    let mut interval = tokio::time::interval(SESSION_PURGE_INTERVAL);
    loop {
        interval.tick().await;
        match store.purge_expired_sessions(clock.now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired session data"),
            Err(error) => tracing::warn!(%error, "purging expired session data failed"),
        }
        match store.purge_expired_tokens(clock.now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired agent tokens"),
            Err(error) => tracing::warn!(%error, "purging expired agent tokens failed"),
        }
    }
}

async fn flush_usage_periodically(api_keys: Arc<ApiKeyService>) {
    let mut interval = tokio::time::interval(USAGE_FLUSH_INTERVAL);
    loop {
        interval.tick().await;
        if let Err(error) = api_keys.flush_usage().await {
            tracing::warn!(%error, "flushing API key usage failed; will retry");
        }
    }
}

/// Keeps the key hierarchy current: re-reads the KEK ring (rotations by other instances or the
/// CLI), rotates the KEK when it is due (one instance wins: the version number is the lock),
/// reports whether the root provider answers, and re-wraps what is not under the newest keys.
async fn maintain_keys_periodically(
    store: Arc<dyn Store>,
    kms: Arc<KeyHierarchy>,
    rotation_period: Option<time::Duration>,
    clock: Arc<dyn Clock>,
) {
    let provider: Arc<dyn KeyProvider> = Arc::clone(&kms) as Arc<dyn KeyProvider>;
    let mut interval = tokio::time::interval(KEY_MAINTENANCE_INTERVAL);
    loop {
        interval.tick().await;
        let root_up = kms.root().check().await.is_ok();
        crate::metrics::kms_root_up(kms.root().provider_name(), root_up);
        if let Err(error) = kms.reload().await {
            tracing::warn!(%error, "re-reading key material failed");
            continue;
        }
        if let Some(period) = rotation_period {
            match kms.rotate_if_older_than(period, clock.now()).await {
                Ok(Some(version)) => {
                    tracing::info!(
                        version,
                        "rotated the key-encryption key (KORYPHAIOS_ENCRYPTION_KEY_ROTATION_DAYS)"
                    );
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "rotating the key-encryption key failed; retrying later")
                }
            }
        }
        match kms.rewrap_keks().await {
            Ok(0) => {}
            Ok(moved) => tracing::info!(
                moved,
                "re-wrapped key-encryption keys under the root's current version"
            ),
            Err(error) => tracing::warn!(%error, "re-wrapping key-encryption keys failed"),
        }
        match rotation::rewrap_all(&store, &provider, REWRAP_BATCH, |_| {}).await {
            Ok(report) if report.rewrapped + report.failed > 0 => {
                tracing::info!(
                    rewrapped = report.rewrapped,
                    failed = report.failed,
                    version = kms.current_version(),
                    "re-wrapped data keys"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "re-wrapping data keys failed"),
        }
    }
}

/// Re-reads the access-token signing keys, so a key made by `koryphaios jwt rotate` (or another
/// instance) is known here before anyone signs with it, and retired keys stop verifying.
async fn refresh_signing_keys_periodically(
    keys: SigningKeys,
    codec: AccessTokenCodec,
    clock: Arc<dyn Clock>,
) {
    let mut interval = tokio::time::interval(signing_keys::RELOAD_INTERVAL);
    loop {
        interval.tick().await;
        if let Err(error) = keys.refresh(&codec, clock.now()).await {
            tracing::warn!(%error, "re-reading the access-token signing keys failed");
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
