//! Whole-file writes that a crash cannot tear: temp file, fsync, rename, fsync of the directory.
//!
//! A kill between the temp file and the rename leaves the temp file behind (crash point
//! `temp-written:<file name>` makes one); its directory's owner sweeps it (`Store::sweep_temp_files`,
//! the archive's cleaner), since nothing else knows whether its writer is gone.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `bytes` so that a reader (or a reboot) sees the old file or the new
/// one, never a mix. The temp file sits in the same directory so the rename is atomic.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(temp_name(&name.to_string_lossy()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        crate::crash::at("temp-written", &name.to_string_lossy());
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// In every temp file murphy makes; walks of inputs and outputs pass such files by, so one
/// left by a kill never becomes part of a fingerprint or a record.
pub const TEMP_MARKER: &str = ".murphy-tmp-";

/// Whether `name` is one of murphy's temp files.
pub fn is_temp(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().contains(TEMP_MARKER)
}

/// Removes the temp files directly in `dir` and returns how many went. Only for a folder
/// whose every writer holds a lock the caller holds too: then any temp file is a dead
/// writer's. Best effort: what cannot be removed now is tried again next time.
pub fn sweep(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| is_temp(&e.file_name()) && fs::remove_file(e.path()).is_ok())
        .count()
}

/// A temp file name for `name` that no other thread or process writing `name` can pick:
/// two stages may store the same record or object at the same moment.
pub fn temp_name(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{name}{TEMP_MARKER}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes a rename or a new entry in `dir` survive a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Keeps a folder murphy fills (its state directory, an archive) out of `git status` and out
/// of what `cargo package` or `npm pack` bundle: a `.gitignore` of `*` inside it, written once
/// (a user's own is kept).
pub fn ignore_all(dir: &Path) -> io::Result<()> {
    let path = dir.join(".gitignore");
    if fs::symlink_metadata(&path).is_ok() {
        return Ok(());
    }
    write(&path, b"*\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ignore_all_writes_a_star_once_and_keeps_a_users_own() {
        let dir = tempfile::tempdir().unwrap();
        super::ignore_all(dir.path()).unwrap();
        let path = dir.path().join(".gitignore");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "*\n");
        std::fs::write(&path, "*.zip\n").unwrap();
        super::ignore_all(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "*.zip\n");
    }

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        super::write(&path, b"one").unwrap();
        super::write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
