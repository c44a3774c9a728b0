//! The `local` key provider: a versioned key ring in one file.
//!
//! The file (`DATA_DIR/kms/local.keyring`, mode 0600) holds the ring's id and its master keys by
//! version. With a passphrase (`KORYPHAIOS_KMS_PASSPHRASE`) the keys are sealed with AES-256-GCM
//! under a key derived by Argon2id, and a wrong passphrase refuses to open the ring without
//! touching the file. Rotation adds a version and never deletes one; retiring destroys one
//! version's key material once nothing uses it.
//!
//! Per-user KEK = HMAC-SHA256(master key of the version, "koryphaios/kek/v1" ‖ user id).
//! A wrapped DEK = AES-256-GCM(KEK, DEK, AAD = ring id ‖ version ‖ user id).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use argon2::{Algorithm, Argon2, Params, Version};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use koryphaios_core::envelope::{
    DEK_LEN, Dek, KeyProvider, KeyVersionInfo, KmsError, WrappedDek, open_with_key, seal_with_key,
};
use koryphaios_core::ids::UserId;
use koryphaios_core::secret::random_bytes;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;
use zeroize::Zeroizing;

const FORMAT: &str = "koryphaios-local-keyring/v1";
const PROVIDER: &str = "local";

/// One master key version on disk.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredKey {
    version: i64,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// Base64 key material; absent once retired.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

/// How the keys are protected on disk.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Protection {
    None,
    Argon2id {
        salt: String,
        m_cost: u32,
        t_cost: u32,
        p_cost: u32,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RingFile {
    format: String,
    id: String,
    protection: Protection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<StoredKey>>,
    /// Base64 of nonce ‖ AES-GCM(JSON of the keys) when protected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_keys: Option<String>,
}

struct MasterKey {
    version: i64,
    created_at: OffsetDateTime,
    material: Option<SecretBox<[u8; DEK_LEN]>>,
}

struct Ring {
    id: String,
    protection: Protection,
    keys: Vec<MasterKey>,
}

impl Ring {
    fn current(&self) -> Option<&MasterKey> {
        self.keys
            .iter()
            .filter(|k| k.material.is_some())
            .max_by_key(|k| k.version)
    }
}

/// The local key ring.
pub struct LocalKeyRing {
    path: PathBuf,
    passphrase: Option<SecretString>,
    ring: RwLock<Ring>,
    /// The file as last read, so a change by another process is noticed before wrapping.
    loaded: Mutex<Option<(std::time::SystemTime, u64)>>,
    /// `None` when the ring is ours to change; else the setting it was given through (a mounted
    /// secret or an environment variable), which rotation and retirement name when they refuse.
    read_only: Option<&'static str>,
}

impl std::fmt::Debug for LocalKeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyRing")
            .field("path", &self.path)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

fn internal(what: &str) -> impl Fn(String) -> KmsError + '_ {
    move |detail| KmsError::Internal(format!("{what}: {detail}"))
}

fn passphrase_key(
    passphrase: &SecretString,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, KmsError> {
    let params = Params::new(m, t, p, Some(32))
        .map_err(|e| KmsError::Internal(format!("argon2 parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.expose_secret().as_bytes(), salt, out.as_mut())
        .map_err(|e| KmsError::Internal(format!("argon2: {e}")))?;
    Ok(out)
}

impl Protection {
    /// The key that seals the ring's keys, stretched from the passphrase with Argon2id.
    fn derive_key(&self, passphrase: &SecretString) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        match self {
            Protection::None => Err(KmsError::Internal(
                "the key ring is not passphrase-protected".into(),
            )),
            Protection::Argon2id {
                salt,
                m_cost,
                t_cost,
                p_cost,
            } => {
                let salt = STANDARD
                    .decode(salt)
                    .map_err(|e| internal("key ring salt")(e.to_string()))?;
                passphrase_key(passphrase, &salt, *m_cost, *t_cost, *p_cost)
            }
        }
    }
}

fn ring_aad(id: &str) -> Vec<u8> {
    format!("{FORMAT}|{id}").into_bytes()
}

impl LocalKeyRing {
    /// The default file inside a data directory.
    pub fn default_path(data_dir: &Path) -> PathBuf {
        data_dir.join("kms").join("local.keyring")
    }

    /// Opens the ring at `path`, creating it with one version on first start.
    pub fn open(path: &Path, passphrase: Option<SecretString>) -> Result<Self, KmsError> {
        // Under the lock, so two processes starting on an empty data dir create one ring.
        let _lock = crate::files::lock(path)?;
        let ring = match fs::read(path) {
            Ok(bytes) => Self::decode(path, &bytes, passphrase.as_ref())?,
            Err(error) if error.kind() == ErrorKind::NotFound => {
                let ring = Self::new_ring(passphrase.as_ref())?;
                Self::write(path, &ring, passphrase.as_ref())?;
                tracing::info!(path = %path.display(), protected = passphrase.is_some(), "created local key ring");
                ring
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
            passphrase,
            ring: RwLock::new(ring),
            loaded: Mutex::new(crate::files::fingerprint(path)),
            read_only: None,
        })
    }

    /// Opens an existing ring given to every instance as a file (a mounted secret, named by
    /// `setting`): read without a lock and never written; a change to the file is picked up.
    pub fn open_existing(
        path: &Path,
        passphrase: Option<SecretString>,
        setting: &'static str,
    ) -> Result<Self, KmsError> {
        let bytes = fs::read(path).map_err(|e| {
            KmsError::Refused(format!(
                "{setting}: cannot read the key ring {} ({e}); create one with `koryphaios kms init-keyring <file>`",
                path.display()
            ))
        })?;
        let ring = Self::decode(path, &bytes, passphrase.as_ref())?;
        Ok(Self {
            path: path.to_owned(),
            passphrase,
            ring: RwLock::new(ring),
            loaded: Mutex::new(crate::files::fingerprint(path)),
            read_only: Some(setting),
        })
    }

    /// Opens a ring whose contents were given directly (an environment variable named
    /// `setting`); it is never written.
    pub fn from_contents(
        contents: &[u8],
        passphrase: Option<SecretString>,
        setting: &'static str,
    ) -> Result<Self, KmsError> {
        // The "path" only names the setting in messages; no file by that name is ever read.
        let path = PathBuf::from(setting);
        let ring = Self::decode(&path, contents, passphrase.as_ref())?;
        Ok(Self {
            path,
            passphrase,
            ring: RwLock::new(ring),
            loaded: Mutex::new(None),
            read_only: Some(setting),
        })
    }

    fn new_ring(passphrase: Option<&SecretString>) -> Result<Ring, KmsError> {
        let protection = match passphrase {
            None => Protection::None,
            Some(_) => {
                let salt = random_bytes::<16>().map_err(|e| KmsError::Internal(e.to_string()))?;
                Protection::Argon2id {
                    salt: STANDARD.encode(salt),
                    m_cost: 19_456,
                    t_cost: 2,
                    p_cost: 1,
                }
            }
        };
        let material = random_bytes::<DEK_LEN>().map_err(|e| KmsError::Internal(e.to_string()))?;
        Ok(Ring {
            id: format!("local-{}", uuid::Uuid::new_v4().simple()),
            protection,
            keys: vec![MasterKey {
                version: 1,
                created_at: OffsetDateTime::now_utc(),
                material: Some(SecretBox::new(Box::new(material))),
            }],
        })
    }

    fn decode(
        path: &Path,
        bytes: &[u8],
        passphrase: Option<&SecretString>,
    ) -> Result<Ring, KmsError> {
        let file: RingFile = serde_json::from_slice(bytes).map_err(|e| {
            KmsError::Internal(format!("{} is not a key ring: {e}", path.display()))
        })?;
        if file.format != FORMAT {
            return Err(KmsError::Internal(format!(
                "{} has unknown format {:?}",
                path.display(),
                file.format
            )));
        }
        let stored: Vec<StoredKey> = match (&file.protection, passphrase) {
            (Protection::None, None) => file.keys.unwrap_or_default(),
            (Protection::None, Some(_)) => {
                return Err(KmsError::Refused(format!(
                    "the key ring {} is not passphrase-protected, but KORYPHAIOS_KMS_PASSPHRASE is set; unset it",
                    path.display()
                )));
            }
            (Protection::Argon2id { .. }, None) => {
                return Err(KmsError::Refused(format!(
                    "the key ring {} is passphrase-protected: set KORYPHAIOS_KMS_PASSPHRASE",
                    path.display()
                )));
            }
            (protection @ Protection::Argon2id { .. }, Some(passphrase)) => {
                let key = protection.derive_key(passphrase)?;
                let sealed = STANDARD
                    .decode(file.sealed_keys.as_deref().unwrap_or_default())
                    .map_err(|e| internal("key ring")(e.to_string()))?;
                let plain = open_with_key(&key, &sealed, &ring_aad(&file.id)).map_err(|_| {
                    KmsError::Refused(format!(
                        "wrong KORYPHAIOS_KMS_PASSPHRASE for the key ring {} (or the file was altered)",
                        path.display()
                    ))
                })?;
                serde_json::from_slice(&plain)
                    .map_err(|e| internal("key ring keys")(e.to_string()))?
            }
        };
        let keys = stored
            .into_iter()
            .map(|k| {
                let material = match k.key {
                    None => None,
                    Some(encoded) => {
                        let raw = Zeroizing::new(
                            STANDARD
                                .decode(encoded)
                                .map_err(|e| internal("key material")(e.to_string()))?,
                        );
                        let array: [u8; DEK_LEN] = raw.as_slice().try_into().map_err(|_| {
                            KmsError::Internal(format!(
                                "key version {} has the wrong length",
                                k.version
                            ))
                        })?;
                        Some(SecretBox::new(Box::new(array)))
                    }
                };
                Ok(MasterKey {
                    version: k.version,
                    created_at: k.created_at,
                    material,
                })
            })
            .collect::<Result<Vec<_>, KmsError>>()?;
        let ring = Ring {
            id: file.id,
            protection: file.protection,
            keys,
        };
        if ring.current().is_none() {
            return Err(KmsError::Internal(format!(
                "{} has no usable key version",
                path.display()
            )));
        }
        Ok(ring)
    }

    fn write(path: &Path, ring: &Ring, passphrase: Option<&SecretString>) -> Result<(), KmsError> {
        let stored: Vec<StoredKey> = ring
            .keys
            .iter()
            .map(|k| StoredKey {
                version: k.version,
                created_at: k.created_at,
                key: k
                    .material
                    .as_ref()
                    .map(|m| STANDARD.encode(m.expose_secret())),
            })
            .collect();
        let mut file = RingFile {
            format: FORMAT.into(),
            id: ring.id.clone(),
            protection: ring.protection.clone(),
            keys: None,
            sealed_keys: None,
        };
        match (&ring.protection, passphrase) {
            (Protection::None, _) => file.keys = Some(stored),
            (protection @ Protection::Argon2id { .. }, Some(passphrase)) => {
                let key = protection.derive_key(passphrase)?;
                let plain = Zeroizing::new(
                    serde_json::to_vec(&stored).map_err(|e| internal("key ring")(e.to_string()))?,
                );
                let sealed = seal_with_key(&key, &plain, &ring_aad(&ring.id))
                    .map_err(|e| internal("key ring")(e.to_string()))?;
                file.sealed_keys = Some(STANDARD.encode(sealed));
            }
            (Protection::Argon2id { .. }, None) => {
                return Err(KmsError::Refused(
                    "a protected key ring cannot be written without its passphrase".into(),
                ));
            }
        }
        let json = Zeroizing::new(
            serde_json::to_vec_pretty(&file).map_err(|e| internal("key ring")(e.to_string()))?,
        );
        crate::files::write_private(path, &json)
    }

    /// Re-reads the file, applies `change`, writes it back, and keeps the result.
    fn modify(
        &self,
        change: impl FnOnce(&mut Ring) -> Result<i64, KmsError>,
    ) -> Result<i64, KmsError> {
        if let Some(setting) = self.read_only {
            return Err(KmsError::Refused(format!(
                "the key ring comes from {setting} and is not changed here: change a writable copy \
                 (`koryphaios kms rotate` with KORYPHAIOS_DATA_DIR holding it) and hand it out again"
            )));
        }
        let _lock = crate::files::lock(&self.path)?;
        let bytes = fs::read(&self.path)
            .map_err(|e| KmsError::Internal(format!("cannot read {}: {e}", self.path.display())))?;
        let mut ring = Self::decode(&self.path, &bytes, self.passphrase.as_ref())?;
        let result = change(&mut ring)?;
        Self::write(&self.path, &ring, self.passphrase.as_ref())?;
        self.install(ring)?;
        Ok(result)
    }

    /// Makes `ring` the one in use and remembers the file it came from.
    fn install(&self, ring: Ring) -> Result<(), KmsError> {
        *self
            .ring
            .write()
            .map_err(|_| KmsError::Internal("key ring lock poisoned".into()))? = ring;
        *self
            .loaded
            .lock()
            .map_err(|_| KmsError::Internal("key ring lock poisoned".into()))? =
            crate::files::fingerprint(&self.path);
        Ok(())
    }

    /// Re-reads the file if another process changed it since it was read (a stat otherwise).
    fn reload_if_changed(&self) -> Result<(), KmsError> {
        if self.read_only.is_some() && self.loaded.lock().map(|l| l.is_none()).unwrap_or(true) {
            // Given as contents: nothing to re-read.
            return Ok(());
        }
        let now = crate::files::fingerprint(&self.path);
        let known = *self
            .loaded
            .lock()
            .map_err(|_| KmsError::Internal("key ring lock poisoned".into()))?;
        if now == known {
            return Ok(());
        }
        let bytes = fs::read(&self.path)
            .map_err(|e| KmsError::Internal(format!("cannot read {}: {e}", self.path.display())))?;
        let ring = Self::decode(&self.path, &bytes, self.passphrase.as_ref())?;
        self.install(ring)
    }

    fn derive_kek(
        master: &[u8; DEK_LEN],
        owner: &UserId,
    ) -> Result<Zeroizing<[u8; DEK_LEN]>, KmsError> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(master)
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        mac.update(b"koryphaios/kek/v1\0");
        mac.update(owner.as_str().as_bytes());
        let out: [u8; DEK_LEN] = mac.finalize().into_bytes().into();
        Ok(Zeroizing::new(out))
    }

    fn dek_aad(ring_id: &str, version: i64, owner: &UserId) -> Vec<u8> {
        format!("koryphaios/dek/v1|{ring_id}|{version}|{}", owner.as_str()).into_bytes()
    }

    fn try_unwrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<Option<Dek>, KmsError> {
        let ring = self
            .ring
            .read()
            .map_err(|_| KmsError::Internal("key ring lock poisoned".into()))?;
        if wrapped.provider != PROVIDER || wrapped.kek_id != ring.id {
            return Err(KmsError::WrongKey {
                provider: wrapped.provider.clone(),
                kek_id: wrapped.kek_id.clone(),
            });
        }
        let Some(master) = ring
            .keys
            .iter()
            .find(|k| k.version == wrapped.kek_version)
            .and_then(|k| k.material.as_ref())
        else {
            return Ok(None);
        };
        let kek = Self::derive_kek(master.expose_secret(), owner)?;
        let raw = open_with_key(
            &kek,
            &wrapped.ciphertext,
            &Self::dek_aad(&ring.id, wrapped.kek_version, owner),
        )
        .map_err(|_| KmsError::Unauthentic)?;
        Dek::from_slice(&raw)
            .map(Some)
            .map_err(|_| KmsError::Unauthentic)
    }
}

#[async_trait]
impl KeyProvider for LocalKeyRing {
    fn provider_name(&self) -> &'static str {
        PROVIDER
    }

    fn kek_id(&self) -> String {
        self.ring
            .read()
            .map(|ring| ring.id.clone())
            .unwrap_or_default()
    }

    fn current_version(&self) -> i64 {
        self.ring
            .read()
            .ok()
            .and_then(|ring| ring.current().map(|k| k.version))
            .unwrap_or(0)
    }

    async fn wrap(&self, dek: &Dek, owner: &UserId) -> Result<WrappedDek, KmsError> {
        // Never wrap under a version another process has rotated away from or retired.
        self.reload_if_changed()?;
        let ring = self
            .ring
            .read()
            .map_err(|_| KmsError::Internal("key ring lock poisoned".into()))?;
        let current = ring
            .current()
            .ok_or_else(|| KmsError::Internal("no usable key version".into()))?;
        let master = current
            .material
            .as_ref()
            .ok_or_else(|| KmsError::Internal("current key retired".into()))?;
        let kek = Self::derive_kek(master.expose_secret(), owner)?;
        let ciphertext = seal_with_key(
            &kek,
            dek.expose_bytes(),
            &Self::dek_aad(&ring.id, current.version, owner),
        )
        .map_err(|e| KmsError::Internal(e.to_string()))?;
        Ok(WrappedDek {
            provider: PROVIDER.into(),
            kek_id: ring.id.clone(),
            kek_version: current.version,
            ciphertext,
        })
    }

    async fn unwrap(&self, wrapped: &WrappedDek, owner: &UserId) -> Result<Dek, KmsError> {
        if let Some(dek) = self.try_unwrap(wrapped, owner)? {
            return Ok(dek);
        }
        // Another process may have rotated the ring since we read it.
        self.reload().await?;
        self.try_unwrap(wrapped, owner)?
            .ok_or(KmsError::UnknownVersion(wrapped.kek_version))
    }

    async fn versions(&self) -> Result<Vec<KeyVersionInfo>, KmsError> {
        let ring = self
            .ring
            .read()
            .map_err(|_| KmsError::Internal("key ring lock poisoned".into()))?;
        let current = ring.current().map(|k| k.version);
        Ok(ring
            .keys
            .iter()
            .map(|k| KeyVersionInfo {
                version: k.version,
                created_at: k.created_at,
                retired: k.material.is_none(),
                current: Some(k.version) == current,
            })
            .collect())
    }

    async fn rotate(&self) -> Result<i64, KmsError> {
        let version = self.modify(|ring| {
            let next = ring.keys.iter().map(|k| k.version).max().unwrap_or(0) + 1;
            let material =
                random_bytes::<DEK_LEN>().map_err(|e| KmsError::Internal(e.to_string()))?;
            ring.keys.push(MasterKey {
                version: next,
                created_at: OffsetDateTime::now_utc(),
                material: Some(SecretBox::new(Box::new(material))),
            });
            Ok(next)
        })?;
        tracing::info!(version, "local key ring rotated");
        Ok(version)
    }

    async fn retire(&self, version: i64) -> Result<(), KmsError> {
        self.modify(|ring| {
            let current = ring.current().map(|k| k.version);
            if current == Some(version) {
                return Err(KmsError::Refused(format!(
                    "version {version} is current; rotate first"
                )));
            }
            let key = ring
                .keys
                .iter_mut()
                .find(|k| k.version == version)
                .ok_or(KmsError::UnknownVersion(version))?;
            key.material = None;
            Ok(version)
        })?;
        tracing::info!(version, "local key version retired");
        Ok(())
    }

    async fn reload(&self) -> Result<(), KmsError> {
        self.reload_if_changed()
    }

    async fn check(&self) -> Result<(), KmsError> {
        let probe =
            Dek::from_slice(&[0x5a; DEK_LEN]).map_err(|e| KmsError::Internal(e.to_string()))?;
        let owner = UserId::parse("usr_00000000000000000000000000000000")
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        let wrapped = self.wrap(&probe, &owner).await?;
        let back = self.unwrap(&wrapped, &owner).await?;
        if back.expose_bytes() == probe.expose_bytes() {
            Ok(())
        } else {
            Err(KmsError::Internal("self-check mismatch".into()))
        }
    }
}
