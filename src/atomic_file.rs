//! Whole-file writes that a crash cannot tear: temp file, fsync, rename, fsync of the directory.
//!
//! A kill between the temp file and the rename leaves the temp file behind (crash point
//! `temp-written:<file name>` makes one); its directory's owner sweeps it (`Store::sweep_temp_files`,
//! the archive's cleaner), since nothing else knows whether its writer is gone.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `bytes` so that a reader (or a reboot) sees the old file or the new
/// one, never a mix, readable by its owner only (mode 0600): most of what murphy writes is its
/// state, which holds whatever stages printed.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with_mode(path, bytes, 0o600)
}

/// [`write`] for a file meant for others too (`pipeline.lock`, an archive's manifest): the
/// mode a new file gets under the umask.
pub fn write_shared(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with_mode(path, bytes, 0o666)
}

/// [`write`] without the fsyncs, for files a power cut may cost but never damage unseen: a
/// reader still sees the old file or the new one after a kill (the rename is atomic), and
/// after a power cut a file that is empty or holds the wrong bytes fails its checksum and is
/// treated as absent (the stat cache, a checkpoint record, which is then made again). What
/// such files need to outlive a power cut is synced once, at the end of the run.
pub fn write_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, 0o600, false)
}

/// The temp file sits in the same directory as `path` so the rename is atomic; it is made
/// with `mode` (less the umask), so the file is never readable by more than that.
fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode, true)
}

fn replace(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(temp_name(&name.to_string_lossy()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if sync {
            file.sync_all()?;
        }
        crate::crash::at("temp-written", &name.to_string_lossy());
        fs::rename(&tmp, path)?;
        if sync { sync_dir(dir) } else { Ok(()) }
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
    // As bytes: asked of every file a walk meets.
    let marker = TEMP_MARKER.as_bytes();
    name.as_bytes().windows(marker.len()).any(|w| w == marker)
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

/// Creates `dir` (and its missing parents) for its owner only (mode 0700), and takes group
/// and other access away from one that exists: murphy's state directory and its runs hold
/// logs of whatever stages printed.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0
        && let Err(err) = fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o700))
    {
        // Someone else's folder (a shared state directory, a CI cache restored under another
        // owner): murphy cannot close it, and says so rather than refusing to work in it.
        if err.kind() != io::ErrorKind::PermissionDenied {
            return Err(err);
        }
        tracing::warn!(
            "{} is open to others (mode {:o}) and not yours to close: logs and records in it can be read by them",
            dir.display(),
            mode & 0o777
        );
    }
    Ok(())
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

    #[test]
    fn a_private_dir_is_made_or_tightened_to_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("a/b");
        super::private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let old = dir.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        super::private_dir(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
    }
}
