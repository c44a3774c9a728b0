//! Writing key files safely: mode 0600, written to a temporary file, synced, then renamed, so a
//! crash never leaves a half-written key file and a failed write never destroys the old one.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use koryphaios_core::envelope::KmsError;

/// Replaces `path` with `contents` atomically.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), KmsError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)
        .map_err(|e| KmsError::Internal(format!("cannot create {}: {e}", dir.display())))?;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        if let Ok(dir_handle) = fs::File::open(dir) {
            let _ = dir_handle.sync_all();
        }
        Ok::<_, std::io::Error>(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(|e| KmsError::Internal(format!("cannot write {}: {e}", path.display())))
}

/// Takes the cross-process lock that serialises changes to `path` (a `.lock` file beside it,
/// released when the returned handle drops). Creates the directory (0700) if needed.
pub(crate) fn lock(path: &Path) -> Result<fs::File, KmsError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)
        .map_err(|e| KmsError::Internal(format!("cannot create {}: {e}", dir.display())))?;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let lock_path = path.with_extension("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| KmsError::Internal(format!("cannot open {}: {e}", lock_path.display())))?;
    file.lock()
        .map_err(|e| KmsError::Internal(format!("cannot lock {}: {e}", lock_path.display())))?;
    Ok(file)
}

/// The file's identity for change detection: modification time and length.
pub(crate) fn fingerprint(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
