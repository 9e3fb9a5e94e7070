//! One live run per state directory, told apart from a dead one by the kernel, not by guesses.
//!
//! `run` and `resume` hold an exclusive `flock` on `<state>/lock` for as long as they live and
//! write their pid and run id into it. The kernel drops the lock when the process dies, even by
//! kill -9, so a run with no end in its journal and no lock holder was killed, and a pid left
//! in the file by a dead murphy (or reused by another process) can never block a new run.
//! A holder that ends normally writes [`RELEASED`] there instead: the next one then knows no
//! writer died holding the lock, and need not look for what such a writer leaves.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another murphy is live here: exit 75 (`EX_TEMPFAIL`), for scripts that try again later.
    #[error(
        "run {run_id} (pid {pid}) is still running in `{}`; wait for it, or stop it first",
        state_dir.display()
    )]
    Busy {
        run_id: String,
        pid: u32,
        state_dir: PathBuf,
    },
    #[error("cannot lock `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Held while a run is live; dropping it (or dying) releases it.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    left_clean: bool,
}

/// What the lock file holds after a holder ended normally ([`RunLock::release`]).
const RELEASED: &str = "released\n";

/// Who holds the lock: the live run's id and its murphy's pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub run_id: String,
    pub pid: u32,
}

fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("lock")
}

impl RunLock {
    /// Takes the lock for a run that is not yet named (`--from`, `run`) or is (`resume`).
    pub fn acquire(state_dir: &Path) -> Result<RunLock, LockError> {
        let path = lock_path(state_dir);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        crate::atomic_file::private_dir(state_dir).map_err(io_err)?;
        let mut file = OpenOptions::new()
            .create(true)
            .mode(0o600)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        // A `status` probing the lock holds it shared for a moment; that is not a live run.
        let mut tries = 0;
        while !try_flock(&file, libc::LOCK_EX).map_err(&io_err)? {
            tries += 1;
            if tries < 10 {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            let holder = read_holder(&mut file).unwrap_or(Holder {
                run_id: "(starting)".into(),
                pid: 0,
            });
            return Err(LockError::Busy {
                run_id: holder.run_id,
                pid: holder.pid,
                state_dir: state_dir.to_owned(),
            });
        }
        // Read before this holder writes its own line over it.
        let mut before = String::new();
        let left_clean = file.read_to_string(&mut before).is_ok() && before == RELEASED;
        let mut lock = RunLock { file, left_clean };
        // Until a run id is known, the file must not keep naming a dead holder.
        lock.set_run("(starting)").map_err(io_err)?;
        Ok(lock)
    }

    /// Whether the holder before this one ended normally ([`RunLock::release`]), rather than
    /// being killed or failing: then no temp file of a dead writer can be left in the state.
    pub fn left_clean(&self) -> bool {
        self.left_clean
    }

    /// Releases the lock of a holder whose every write ended (done or cleaned up), saying so
    /// for the next holder. Dropping the lock instead says nothing: the next holder sweeps.
    pub fn release(mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(RELEASED.as_bytes())
    }

    /// Records which run (or which command: `(gc)`) holds the lock, for the message a second
    /// murphy prints.
    pub fn set_run(&mut self, run_id: &str) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        // One write: `writeln!` on a file makes one per piece, and a reader could see half.
        let line = format!("{} {run_id}\n", std::process::id());
        self.file.write_all(line.as_bytes())
    }
}

/// The live run in `state_dir`, if any.
pub fn holder(state_dir: &Path) -> Option<Holder> {
    let mut file = File::open(lock_path(state_dir)).ok()?;
    // A shared lock is granted only when nobody holds the exclusive one.
    match try_flock(&file, libc::LOCK_SH) {
        Ok(true) => {
            // SAFETY: unlocking our own descriptor.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
            None
        }
        Ok(false) => read_holder(&mut file),
        Err(_) => None,
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    let (pid, run_id) = text.trim().split_once(' ')?;
    Some(Holder {
        run_id: run_id.to_owned(),
        pid: pid.parse().ok()?,
    })
}

/// `flock` without blocking: `Ok(false)` when someone else holds a conflicting lock.
fn try_flock(file: &File, kind: libc::c_int) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), kind | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = RunLock::acquire(dir.path()).unwrap();
        first.set_run("20261122-000000-abcd").unwrap();
        let holder = holder(dir.path()).unwrap();
        assert_eq!(holder.run_id, "20261122-000000-abcd");
        assert_eq!(holder.pid, std::process::id());
        match RunLock::acquire(dir.path()) {
            Err(LockError::Busy { run_id, pid, .. }) => {
                assert_eq!(
                    (run_id.as_str(), pid),
                    ("20261122-000000-abcd", std::process::id())
                );
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(first);
        assert_eq!(super::holder(dir.path()), None);
        assert!(RunLock::acquire(dir.path()).is_ok());
    }

    /// Only a holder that released the lock leaves it clean; one that dropped it (a failure)
    /// or died does not, and neither does the first holder of a new state directory.
    #[test]
    fn only_a_release_leaves_the_lock_clean() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        assert!(!first.left_clean());
        drop(first);
        let second = RunLock::acquire(dir.path()).unwrap();
        assert!(!second.left_clean());
        second.release().unwrap();
        let mut third = RunLock::acquire(dir.path()).unwrap();
        assert!(third.left_clean());
        third.set_run("20261207-000000-abcd").unwrap();
        drop(third);
        assert!(!RunLock::acquire(dir.path()).unwrap().left_clean());
    }
}
