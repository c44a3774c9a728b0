//! The `age` key provider: DEKs wrapped to X25519 recipients in the real age format.
//!
//! The identities live in one age identity file (default `DATA_DIR/kms/age.identities`, mode 0600,
//! or `KORYPHAIOS_AGE_IDENTITY_FILE`), which the `age` tool reads as it is: `age -d -i FILE`
//! unwraps any DEK the service wrapped. Version N is the N-th key in the file; comments record
//! versions and retirements. The wrapped payload is `koryphaios/dek/v1|<user id>|` + the 32-byte
//! DEK, binding it to its owner (age has no associated data); anything encrypted to the recipient
//! with that payload, by the `age` tool too, unwraps here.
//!
//! age wraps with a *public* key: anyone who can write the database could wrap a DEK of their own
//! choosing. The `local` provider, whose wrapping is authenticated with a secret key, does not have
//! this limitation; prefer it (or a remote KMS) where the database is not fully trusted.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Mutex, RwLock};

use ::age::secrecy::ExposeSecret as _;
use ::age::x25519::{Identity, Recipient};
use async_trait::async_trait;
use koryphaios_core::envelope::{Dek, KeyProvider, KeyVersionInfo, KmsError, WrappedDek};
use koryphaios_core::ids::UserId;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const PROVIDER: &str = "age";

struct AgeKey {
    version: i64,
    created_at: OffsetDateTime,
    identity: Option<Identity>,
    recipient: String,
}

/// The age key provider.
pub struct AgeKeyProvider {
    path: PathBuf,
    keys: RwLock<Vec<AgeKey>>,
    /// The file as last read, so a change by another process is noticed before wrapping.
    loaded: Mutex<Option<(std::time::SystemTime, u64)>>,
}

/// The age plaintext is `koryphaios/dek/v1|<user id>|` followed by the 32-byte DEK: it binds the
/// DEK to its owner (age has no associated data) and stays readable with `age -d`.
fn bound_payload(owner: &UserId, dek: &Dek) -> zeroize::Zeroizing<Vec<u8>> {
    let mut payload =
        zeroize::Zeroizing::new(format!("koryphaios/dek/v1|{}|", owner.as_str()).into_bytes());
    payload.extend_from_slice(dek.expose_bytes());
    payload
}

impl std::fmt::Debug for AgeKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgeKeyProvider")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn poisoned() -> KmsError {
    KmsError::Internal("age key lock poisoned".into())
}

/// Parses an identity file: `# version N created T` / `# version N retired T` comments, key lines.
fn parse(text: &str) -> Result<Vec<AgeKey>, KmsError> {
    let mut keys: Vec<AgeKey> = Vec::new();
    let mut pending: Option<(i64, OffsetDateTime)> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            if let ["version", number, state, at, rest @ ..] = words.as_slice() {
                let version: i64 = number
                    .parse()
                    .map_err(|_| KmsError::Internal(format!("bad version comment {line:?}")))?;
                let at = OffsetDateTime::parse(at, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH);
                match *state {
                    "created" => pending = Some((version, at)),
                    "retired" => {
                        let recipient = rest.first().map(|s| (*s).to_owned()).unwrap_or_default();
                        keys.push(AgeKey {
                            version,
                            created_at: at,
                            identity: None,
                            recipient,
                        });
                    }
                    _ => {}
                }
            }
            continue;
        }
        let identity = Identity::from_str(line)
            .map_err(|e| KmsError::Internal(format!("age identity file: {e}")))?;
        let (version, created_at) = pending
            .take()
            .unwrap_or((keys.len() as i64 + 1, OffsetDateTime::UNIX_EPOCH));
        let recipient = identity.to_public().to_string();
        keys.push(AgeKey {
            version,
            created_at,
            identity: Some(identity),
            recipient,
        });
    }
    keys.sort_by_key(|k| k.version);
    if keys.iter().all(|k| k.identity.is_none()) {
        return Err(KmsError::Internal(
            "the age identity file holds no usable identity".into(),
        ));
    }
    Ok(keys)
}

fn render(keys: &[AgeKey]) -> String {
    let mut out = String::from(
        "# Koryphaios age identities. Version N is recorded in the comment above its key.\n# This file works with `age -d -i <this file>`.\n",
    );
    for key in keys {
        let at = key.created_at.format(&Rfc3339).unwrap_or_default();
        match &key.identity {
            Some(identity) => {
                out.push_str(&format!(
                    "# version {} created {at}\n# public key: {}\n",
                    key.version, key.recipient
                ));
                out.push_str(identity.to_string().expose_secret());
                out.push('\n');
            }
            None => out.push_str(&format!(
                "# version {} retired {at} {}\n",
                key.version, key.recipient
            )),
        }
    }
    out
}

impl AgeKeyProvider {
    /// The default identity file inside a data directory.
    pub fn default_path(data_dir: &Path) -> PathBuf {
        data_dir.join("kms").join("age.identities")
    }

    /// Opens the identity file, creating one identity on first start.
    pub fn open(path: &Path) -> Result<Self, KmsError> {
        // Under the lock, so two processes starting on an empty data dir create one identity.
        let _lock = crate::files::lock(path)?;
        let keys = match fs::read_to_string(path) {
            Ok(text) => parse(&text)?,
            Err(error) if error.kind() == ErrorKind::NotFound => {
                let identity = Identity::generate();
                let recipient = identity.to_public().to_string();
                let keys = vec![AgeKey {
                    version: 1,
                    created_at: OffsetDateTime::now_utc(),
                    identity: Some(identity),
                    recipient,
                }];
                crate::files::write_private(path, render(&keys).as_bytes())?;
                tracing::info!(path = %path.display(), "created age identity file");
                keys
            }
            Err(error) => {
                return Err(KmsError::Internal(format!(
                    "cannot read {}: {error}",
                    path.display()
                )));
            }
        };
        Ok(Self {
            path: path.to_owned(),
            keys: RwLock::new(keys),
            loaded: Mutex::new(crate::files::fingerprint(path)),
        })
    }

    /// The recipient (`age1…`) new DEKs are wrapped to.
    pub fn current_recipient(&self) -> String {
        self.with_current(|key| key.recipient.clone())
            .unwrap_or_default()
    }

    /// Reads from the newest usable key.
    fn with_current<T>(&self, read: impl FnOnce(&AgeKey) -> T) -> Option<T> {
        let keys = self.keys.read().ok()?;
        keys.iter().rev().find(|k| k.identity.is_some()).map(read)
    }

    fn try_unwrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<Option<Dek>, KmsError> {
        if wrapped.provider != PROVIDER {
            return Err(KmsError::WrongKey {
                provider: wrapped.provider.clone(),
                kek_id: wrapped.kek_id.clone(),
            });
        }
        let keys = self.keys.read().map_err(|_| poisoned())?;
        let Some(identity) = keys
            .iter()
            .find(|k| k.version == wrapped.kek_version)
            .and_then(|k| k.identity.as_ref())
        else {
            return Ok(None);
        };
        let raw =
            ::age::decrypt(identity, &wrapped.ciphertext).map_err(|_| KmsError::Unauthentic)?;
        let raw = zeroize::Zeroizing::new(raw);
        let binding = format!("koryphaios/dek/v1|{}|", owner.as_str());
        let dek = raw
            .strip_prefix(binding.as_bytes())
            .ok_or(KmsError::Unauthentic)?;
        Dek::from_slice(dek)
            .map(Some)
            .map_err(|_| KmsError::Unauthentic)
    }

    fn modify(
        &self,
        change: impl FnOnce(&mut Vec<AgeKey>) -> Result<i64, KmsError>,
    ) -> Result<i64, KmsError> {
        let _lock = crate::files::lock(&self.path)?;
        let mut keys = self.read_file()?;
        let result = change(&mut keys)?;
        crate::files::write_private(&self.path, render(&keys).as_bytes())?;
        self.install(keys)?;
        Ok(result)
    }

    fn read_file(&self) -> Result<Vec<AgeKey>, KmsError> {
        let text = fs::read_to_string(&self.path)
            .map_err(|e| KmsError::Internal(format!("cannot read {}: {e}", self.path.display())))?;
        parse(&text)
    }

    fn install(&self, keys: Vec<AgeKey>) -> Result<(), KmsError> {
        *self.keys.write().map_err(|_| poisoned())? = keys;
        *self.loaded.lock().map_err(|_| poisoned())? = crate::files::fingerprint(&self.path);
        Ok(())
    }

    /// Re-reads the file if another process changed it since it was read (a stat otherwise).
    fn reload_if_changed(&self) -> Result<(), KmsError> {
        let now = crate::files::fingerprint(&self.path);
        if now == *self.loaded.lock().map_err(|_| poisoned())? {
            return Ok(());
        }
        let keys = self.read_file()?;
        self.install(keys)
    }
}

#[async_trait]
impl KeyProvider for AgeKeyProvider {
    fn provider_name(&self) -> &'static str {
        PROVIDER
    }

    fn kek_id(&self) -> String {
        self.current_recipient()
    }

    fn current_version(&self) -> i64 {
        self.with_current(|key| key.version).unwrap_or(0)
    }

    async fn wrap(&self, dek: &Dek, owner: &UserId) -> Result<WrappedDek, KmsError> {
        self.reload_if_changed()?;
        let keys = self.keys.read().map_err(|_| poisoned())?;
        let current = keys
            .iter()
            .rev()
            .find(|k| k.identity.is_some())
            .ok_or_else(|| KmsError::Internal("no usable age identity".into()))?;
        let recipient = Recipient::from_str(&current.recipient)
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        let ciphertext = ::age::encrypt(&recipient, &bound_payload(owner, dek))
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        Ok(WrappedDek {
            provider: PROVIDER.into(),
            kek_id: current.recipient.clone(),
            kek_version: current.version,
            ciphertext,
        })
    }

    async fn unwrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<Dek, KmsError> {
        if let Some(dek) = self.try_unwrap(wrapped, owner)? {
            return Ok(dek);
        }
        self.reload().await?;
        self.try_unwrap(wrapped, owner)?
            .ok_or(KmsError::UnknownVersion(wrapped.kek_version))
    }

    async fn versions(&self) -> Result<Vec<KeyVersionInfo>, KmsError> {
        let current = self.current_version();
        let keys = self.keys.read().map_err(|_| poisoned())?;
        Ok(keys
            .iter()
            .map(|k| KeyVersionInfo {
                version: k.version,
                created_at: k.created_at,
                retired: k.identity.is_none(),
                current: k.version == current,
            })
            .collect())
    }

    async fn rotate(&self) -> Result<i64, KmsError> {
        self.modify(|keys| {
            let next = keys.iter().map(|k| k.version).max().unwrap_or(0) + 1;
            let identity = Identity::generate();
            let recipient = identity.to_public().to_string();
            keys.push(AgeKey {
                version: next,
                created_at: OffsetDateTime::now_utc(),
                identity: Some(identity),
                recipient,
            });
            Ok(next)
        })
    }

    async fn retire(&self, version: i64) -> Result<(), KmsError> {
        self.modify(|keys| {
            let current = keys
                .iter()
                .rev()
                .find(|k| k.identity.is_some())
                .map(|k| k.version);
            if Some(version) == current {
                return Err(KmsError::Refused(format!(
                    "version {version} is current; rotate first"
                )));
            }
            let key = keys
                .iter_mut()
                .find(|k| k.version == version)
                .ok_or(KmsError::UnknownVersion(version))?;
            key.identity = None;
            Ok(version)
        })
        .map(|_| ())
    }

    async fn reload(&self) -> Result<(), KmsError> {
        self.reload_if_changed()
    }

    async fn check(&self) -> Result<(), KmsError> {
        if self.current_version() > 0 {
            Ok(())
        } else {
            Err(KmsError::Internal("no usable age identity".into()))
        }
    }
}
