//! Whether anything was written where a stage's inputs live while it ran, as the kernel saw it.
//!
//! A stage that writes into its own inputs (`__pycache__` beside its tests) never hits its
//! checkpoint, so after a run its inputs are read again to warn about it. That second read
//! costs as much as the first: for 20,000 inputs, more than a short step itself. inotify
//! watches on the directories the inputs were found in tell, for the price of one watch a
//! directory, that nothing was created, written, removed or renamed there; only then is the
//! read skipped. Where inotify is missing or out of watches, or its queue overflowed, the
//! inputs are read again as before.

use std::path::Path;

use crate::inputs::Places;

/// Watches set on a stage's input places; dropped (closed) when the check is done.
#[derive(Debug)]
pub struct Watch {
    #[cfg(target_os = "linux")]
    inner: linux::Watch,
}

impl Watch {
    /// Starts watching the `places` below `root`; `None` when the kernel cannot (no inotify,
    /// a limit reached), and the caller reads the inputs again instead.
    pub fn start(root: &Path, places: &Places) -> Option<Watch> {
        #[cfg(target_os = "linux")]
        return linux::Watch::start(root, places).map(|inner| Watch { inner });
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (root, places);
            None
        }
    }

    /// Whether anything that may be an input was created, written, removed or renamed since
    /// [`Watch::start`] (or events were lost, which counts as yes).
    pub fn saw_writes(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.inner.saw_writes();
        #[cfg(not(target_os = "linux"))]
        return true;
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashMap;
    use std::ffi::{CString, OsString};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use crate::inputs::Places;

    /// Changes to what a directory holds; reads and `touch`es (`IN_ATTRIB`) do not change
    /// an input's digest.
    const MASK: u32 = libc::IN_MODIFY
        | libc::IN_CREATE
        | libc::IN_DELETE
        | libc::IN_MOVED_FROM
        | libc::IN_MOVED_TO
        | libc::IN_DELETE_SELF
        | libc::IN_MOVE_SELF
        | libc::IN_ONLYDIR
        | libc::IN_DONT_FOLLOW;

    #[derive(Debug)]
    pub struct Watch {
        fd: OwnedFd,
        /// What each watched directory holds that counts: everything (a walked one), or
        /// only some names (the parent of a file named literally).
        scopes: HashMap<i32, Scope>,
    }

    #[derive(Debug)]
    enum Scope {
        All,
        Names(Vec<OsString>),
    }

    impl Watch {
        pub fn start(root: &Path, places: &Places) -> Option<Watch> {
            // SAFETY: inotify_init1 returns a new descriptor or -1.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if fd < 0 {
                return None;
            }
            // SAFETY: `fd` is a descriptor this function just opened and owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut watch = Watch {
                fd,
                scopes: HashMap::new(),
            };
            for dir in &places.dirs {
                let wd = watch.add(&root.join(dir))?;
                watch.scopes.insert(wd, Scope::All);
            }
            for file in &places.named {
                let (Some(parent), Some(name)) = (file.parent(), file.file_name()) else {
                    continue;
                };
                let wd = watch.add(&root.join(parent))?;
                match watch.scopes.entry(wd).or_insert(Scope::Names(Vec::new())) {
                    Scope::All => {}
                    Scope::Names(names) => names.push(name.to_owned()),
                }
            }
            Some(watch)
        }

        /// The watch descriptor of `dir`; `None` if it cannot be watched. A directory that
        /// is gone cannot gain an input without a change to its parent, which is watched.
        fn add(&self, dir: &Path) -> Option<i32> {
            let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
            // SAFETY: a valid descriptor and a NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), MASK) };
            (wd >= 0).then_some(wd)
        }

        pub fn saw_writes(&self) -> bool {
            // Room for many events with their names; fields are copied out, so unaligned.
            let mut buffer = [0u8; 4096];
            loop {
                // SAFETY: reads into a buffer of exactly that many bytes.
                let n = unsafe {
                    libc::read(
                        self.fd.as_raw_fd(),
                        buffer.as_mut_ptr().cast(),
                        buffer.len(),
                    )
                };
                if n <= 0 {
                    // EAGAIN: nothing (more) happened. Any other error: cannot tell.
                    let drained = n < 0
                        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock;
                    return !drained;
                }
                if self.relevant(&buffer[..n.unsigned_abs()]) {
                    return true;
                }
            }
        }

        /// Whether one read's events include one that counts.
        fn relevant(&self, mut bytes: &[u8]) -> bool {
            const HEAD: usize = std::mem::size_of::<libc::inotify_event>();
            while bytes.len() >= HEAD {
                let field = |at: usize| {
                    let mut word = [0u8; 4];
                    word.copy_from_slice(&bytes[at..at + 4]);
                    word
                };
                let wd = i32::from_ne_bytes(field(0));
                let mask = u32::from_ne_bytes(field(4));
                let len = u32::from_ne_bytes(field(12)) as usize;
                let Some(name) = bytes.get(HEAD..HEAD + len) else {
                    return true;
                };
                let name = name.split(|&b| b == 0).next().unwrap_or_default();
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    return true;
                }
                let counts = match self.scopes.get(&wd) {
                    Some(Scope::All) => mask & libc::IN_IGNORED == 0,
                    Some(Scope::Names(names)) => {
                        // The directory itself removed or moved, or a named file changed.
                        mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0
                            || names.iter().any(|n| n.as_bytes() == name)
                    }
                    None => false,
                };
                if counts {
                    return true;
                }
                bytes = &bytes[HEAD + len..];
            }
            false
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::inputs::Places;
        use std::path::PathBuf;

        fn places(dirs: &[&str], named: &[&str]) -> Places {
            Places {
                dirs: dirs.iter().map(PathBuf::from).collect(),
                named: named.iter().map(PathBuf::from).collect(),
            }
        }

        #[test]
        fn writes_count_where_inputs_live_and_reads_do_not() {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            std::fs::create_dir_all(root.join("src/deep")).unwrap();
            std::fs::write(root.join("src/deep/a.rs"), "a").unwrap();
            std::fs::write(root.join("Cargo.toml"), "x").unwrap();
            let places = places(&["src", "src/deep"], &["Cargo.toml"]);
            let watch = Watch::start(root, &places).unwrap();
            // Reading, touching, and writing beside the named file are no writes to inputs.
            std::fs::read(root.join("src/deep/a.rs")).unwrap();
            // `touch` sets both times: an attribute change (mtime alone counts as a write).
            let now = std::time::SystemTime::now();
            let times = std::fs::FileTimes::new()
                .set_accessed(now)
                .set_modified(now);
            std::fs::File::open(root.join("src/deep/a.rs"))
                .unwrap()
                .set_times(times)
                .unwrap();
            std::fs::write(root.join("out.txt"), "built").unwrap();
            assert!(!watch.saw_writes());
            std::fs::write(root.join("src/deep/a.rs"), "b").unwrap();
            assert!(watch.saw_writes());

            let watch = Watch::start(root, &places).unwrap();
            std::fs::create_dir(root.join("src/new")).unwrap();
            assert!(watch.saw_writes());

            let watch = Watch::start(root, &places).unwrap();
            std::fs::write(root.join("Cargo.toml"), "y").unwrap();
            assert!(watch.saw_writes());

            let watch = Watch::start(root, &places).unwrap();
            std::fs::remove_file(root.join("src/deep/a.rs")).unwrap();
            assert!(watch.saw_writes());
        }
    }
}
