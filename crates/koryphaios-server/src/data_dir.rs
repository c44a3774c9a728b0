//! The data directory: created private (0700), and the home of generated secrets (0600).
//!
//! The JWT secret is generated here on first start when `KORYPHAIOS_JWT_SECRET` is unset, so a
//! restart keeps sessions valid.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use koryphaios_core::secret::random_bytes;
use koryphaios_kms::files;
use zeroize::Zeroizing;

/// The file that keeps a generated JWT secret.
pub const JWT_SECRET_FILE: &str = "jwt.secret";

/// Creates `dir` (mode 0700) if missing; warns when an existing one is readable by others.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict data directory {}", dir.display()))?;
        tracing::info!(path = %dir.display(), "created data directory");
    } else if !dir.is_dir() {
        bail!(
            "data directory {} exists and is not a directory",
            dir.display()
        );
    } else if let Ok(meta) = fs::metadata(dir)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %dir.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "data directory is accessible to other users; 0700 is recommended"
        );
    }
    Ok(())
}

/// Creates an empty file with mode 0600 unless it exists (for the SQLite database).
pub fn create_private_file(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// Reads the generated JWT secret from the data dir, creating it on first start.
pub fn load_or_create_jwt_secret(dir: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let path: PathBuf = dir.join(JWT_SECRET_FILE);
    // Two rounds suffice when another instance wins the creation race; a name that can be neither
    // read nor created (a dangling symbolic link) must not loop.
    for _ in 0..3 {
        match fs::read_to_string(&path) {
            Ok(text) => return parse_jwt_secret(&path, &Zeroizing::new(text)),
            Err(error) if error.kind() == ErrorKind::NotFound => {
                let bytes = Zeroizing::new(random_bytes::<64>()?.to_vec());
                let encoded = Zeroizing::new(STANDARD.encode(bytes.as_slice()));
                // Written whole under a temporary name, then linked into place: a crash never
                // leaves a partial secret, and of two instances starting at once, both use the
                // winner's.
                let created = files::create_private_exclusive(&path, encoded.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                if created {
                    tracing::info!(path = %path.display(), "generated a JWT signing secret");
                    return Ok(bytes);
                }
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        }
    }
    bail!(
        "{} exists but cannot be read (a dangling symbolic link?); remove it or make it point at the secret",
        path.display()
    )
}

fn parse_jwt_secret(path: &Path, text: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(STANDARD.decode(text.trim()).with_context(|| {
        format!(
            "{} is not valid base64; delete it to generate a new one (this ends every session)",
            path.display()
        )
    })?);
    if bytes.len() < 32 {
        bail!(
            "{} holds fewer than 32 bytes; delete it to generate a new one",
            path.display()
        );
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dangling_link_in_place_of_the_secret_is_an_error_not_a_loop() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        prepare(&dir).unwrap();
        std::os::unix::fs::symlink(root.path().join("missing"), dir.join(JWT_SECRET_FILE)).unwrap();
        let error = load_or_create_jwt_secret(&dir).unwrap_err().to_string();
        assert!(error.contains("dangling"), "{error}");
    }

    #[test]
    fn data_dir_and_secret_are_private_and_stable() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        prepare(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let first = load_or_create_jwt_secret(&dir).unwrap();
        let second = load_or_create_jwt_secret(&dir).unwrap();
        assert_eq!(first.as_slice(), second.as_slice());
        assert_eq!(first.len(), 64);
        let mode = fs::metadata(dir.join(JWT_SECRET_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_secret_and_leave_no_temporary_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().to_path_buf();
        let secrets: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| load_or_create_jwt_secret(&dir).unwrap().to_vec()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.windows(2).all(|pair| pair[0] == pair[1]));
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![JWT_SECRET_FILE.to_owned()]);
    }

    #[test]
    fn a_corrupt_secret_file_stops_the_start_without_being_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(JWT_SECRET_FILE), "not base64 !!!").unwrap();
        let error = load_or_create_jwt_secret(dir.path()).unwrap_err();
        assert!(error.to_string().contains("not valid base64"));
        assert_eq!(
            fs::read_to_string(dir.path().join(JWT_SECRET_FILE)).unwrap(),
            "not base64 !!!"
        );
    }

    #[test]
    fn private_files_are_created_0600_and_left_alone_when_present() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/k.db");
        create_private_file(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::write(&path, "x").unwrap();
        create_private_file(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "x");
    }
}
