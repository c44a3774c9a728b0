//! The data directory: created private (0700), the home of the embedded SQLite database and the
//! local key ring (0600). Needed only for what lives in it: an instance on PostgreSQL with its
//! key ring given as a file or contents runs without one (the JWT signing keys are in the
//! database, ADR 0011).

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::{Context as _, bail};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dir_is_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        prepare(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
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
