//! Walks of `inputs` patterns that need not be walked again, as git's untracked cache keeps
//! folder listings: the files a walk named, kept with the stamp of every folder it listed
//! and of every rules file it read or looked for.
//!
//! A folder's times move when an entry is added to it, removed or renamed, not when a file
//! in it is written. So while none of those stamps has moved, the same walk names the same
//! files, and a run that changed one input lists no folder and matches no glob. The racy
//! rule of the stat cache holds here too: a walk is kept only if everything it saw had
//! settled before it began ([`settled`]), so a change within the same clock tick as the
//! walk cannot leave a stamp as it was.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use super::{
    Loading, MATCHED, MOVED, Reader, Stamp, UNSEEN, begin_file, end_file, now_ns, open_file,
    settled,
};
use crate::atomic_file;

const MAGIC: &[u8; 8] = b"MURPHYWC";
const FORMAT_VERSION: u32 = 1;

/// Saves a walk survives without being looked up before it is dropped: a pattern no stage
/// has any more, or one only a run of a few stages skips.
const UNUSED_SAVES: u8 = 16;

/// What a walk found at a path where a rule could come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Absent,
    /// A folder: only that it is one counts (`.git`, whose own times move with every commit).
    Folder,
    File(Stamp),
}

impl Seen {
    /// Following a symlink, as reading the rules does.
    pub fn at(path: &Path) -> Seen {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Seen::Folder,
            Ok(meta) => Seen::File(Stamp::of(&meta)),
            Err(_) => Seen::Absent,
        }
    }
}

/// What one walk depends on, gathered as it goes.
#[derive(Debug)]
pub struct Trail {
    began_ns: i128,
    /// Each folder listed, stamped before it was.
    folders: Vec<(PathBuf, Stamp)>,
    /// Each path a rule was read from or looked for, seen before it was read.
    rules: Vec<(PathBuf, Seen)>,
    /// Everything seen had settled, and the walk is one that can be kept.
    keepable: bool,
}

impl Trail {
    pub fn begin() -> Trail {
        Trail {
            began_ns: now_ns(),
            folders: Vec::new(),
            rules: Vec::new(),
            keepable: true,
        }
    }

    /// Stamps the folder at `path`, about to be listed.
    pub fn folder(&mut self, path: &Path) {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                let stamp = Stamp::of(&meta);
                self.keepable &= settled(stamp.ctime_ns, self.began_ns);
                self.folders.push((path.to_owned(), stamp));
            }
            _ => self.keepable = false,
        }
    }

    /// Looks at `path`, about to be read for rules.
    pub fn look(&mut self, path: &Path) -> Seen {
        let seen = Seen::at(path);
        self.saw(path, seen, self.began_ns);
        seen
    }

    /// Records what was seen at `path` at `at_ns`, before it was read.
    pub fn saw(&mut self, path: &Path, seen: Seen, at_ns: i128) {
        if let Seen::File(stamp) = seen {
            self.keepable &= settled(stamp.ctime_ns, at_ns);
        }
        self.rules.push((path.to_owned(), seen));
    }

    /// A walk of a single file is one stat: not worth keeping.
    pub fn not_keepable(&mut self) {
        self.keepable = false;
    }
}

/// One walk as it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Walk {
    folders: Vec<(PathBuf, Stamp)>,
    rules: Vec<(PathBuf, Seen)>,
    /// The files it named, relative to the project root, sorted by their bytes, each
    /// followed by a NUL (which no path holds).
    files: Vec<u8>,
    /// Saves since it was last looked up.
    unused: u8,
}

impl Walk {
    /// Whether every folder and rules file is as the walk saw it.
    fn holds(&self) -> bool {
        self.folders.iter().all(|(path, stamp)| {
            std::fs::metadata(path).is_ok_and(|meta| meta.is_dir() && Stamp::of(&meta) == *stamp)
        }) && self
            .rules
            .iter()
            .all(|(path, seen)| Seen::at(path) == *seen)
    }

    fn push_files(&self, files: &mut Vec<PathBuf>) -> usize {
        let before = files.len();
        files.reserve(self.files.iter().filter(|&&b| b == 0).count());
        files.extend(
            self.files
                .split(|&b| b == 0)
                .filter(|f| !f.is_empty())
                .map(|f| PathBuf::from(OsStr::from_bytes(f))),
        );
        files.len() - before
    }
}

#[derive(Debug)]
struct SavedWalk {
    walk: Walk,
    /// What this run's lookup found: [`UNSEEN`], [`MATCHED`], [`MOVED`].
    seen: AtomicU8,
}

/// The walks the last runs kept, by key.
type Saved = HashMap<Box<[u8]>, SavedWalk>;

/// The walks the last runs kept, and those this run made: shared by every stage's thread.
#[derive(Debug)]
pub struct Walks {
    saved: Loading<Saved>,
    fresh: Mutex<HashMap<Box<[u8]>, Walk>>,
}

impl Walks {
    /// Starts reading the walks kept at `path`; a missing or damaged file keeps none.
    pub fn load(path: &Path) -> Walks {
        Walks {
            saved: Loading::start("walk-cache", path, read),
            fresh: Mutex::new(HashMap::new()),
        }
    }

    /// Adds the files of the walk kept under `key` to `files` if nothing it saw has moved;
    /// returns how many, or `None` when it must be walked.
    pub fn walked(&self, key: &[u8], files: &mut Vec<PathBuf>) -> Option<usize> {
        if let Some(saved) = self.saved().get(key) {
            if saved.walk.holds() {
                saved.seen.store(MATCHED, Ordering::Relaxed);
                return Some(saved.walk.push_files(files));
            }
            saved.seen.store(MOVED, Ordering::Relaxed);
        }
        let fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        let walk = fresh.get(key).filter(|walk| walk.holds())?;
        Some(walk.push_files(files))
    }

    /// Keeps the walk that named `files` (in any order) under `key`, if its trail allows.
    pub fn keep(&self, key: &[u8], trail: Trail, files: &[PathBuf]) {
        if !trail.keepable {
            return;
        }
        let mut sorted: Vec<&[u8]> = files.iter().map(|f| f.as_os_str().as_bytes()).collect();
        sorted.sort_unstable();
        let mut list = Vec::with_capacity(sorted.iter().map(|f| f.len() + 1).sum());
        for file in sorted {
            list.extend_from_slice(file);
            list.push(0);
        }
        let walk = Walk {
            folders: trail.folders,
            rules: trail.rules,
            files: list,
            unused: 0,
        };
        let mut fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        fresh.insert(key.into(), walk);
    }

    /// Writes the walks back if this run made any worth keeping; atomically, unsynced, as
    /// the stat cache is (a torn file fails its checksum and keeps nothing).
    pub fn save(&self) -> io::Result<()> {
        let fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        if fresh.is_empty() {
            return Ok(());
        }
        let mut kept: Vec<Kept<'_>> = fresh.iter().map(|(k, w)| (&**k, w, 0)).collect();
        for (key, saved) in self.saved() {
            if fresh.contains_key(key) {
                continue;
            }
            let unused = match saved.seen.load(Ordering::Relaxed) {
                MATCHED => 0,
                UNSEEN if saved.walk.unused < UNUSED_SAVES => saved.walk.unused + 1,
                _ => continue,
            };
            kept.push((key, &saved.walk, unused));
        }
        kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
        atomic_file::write_unsynced(self.saved.path(), &encode(&kept))
    }

    fn saved(&self) -> &Saved {
        self.saved.get()
    }
}

fn read(path: &Path) -> Saved {
    let Ok(bytes) = std::fs::read(path) else {
        return HashMap::new();
    };
    decode(&bytes).unwrap_or_else(|| {
        tracing::debug!(
            "{} is damaged or of another version; walking again",
            path.display()
        );
        HashMap::new()
    })
}

/// Layout: magic, version, then per walk: its key, saves unused (u8), its folders (path,
/// stamp), its rules files (path, 0 absent / 1 folder / 2 file and stamp), its file list;
/// counts and lengths as u32, all little-endian; then a BLAKE3 of everything before it.
/// A walk as it is written: its key, itself, and how many saves it has gone unused.
type Kept<'a> = (&'a [u8], &'a Walk, u8);

fn encode(walks: &[Kept<'_>]) -> Vec<u8> {
    let mut out = begin_file(MAGIC, FORMAT_VERSION, 0);
    let put = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    for &(key, walk, unused) in walks {
        put(&mut out, key);
        out.push(unused);
        out.extend_from_slice(&(walk.folders.len() as u32).to_le_bytes());
        for (path, stamp) in &walk.folders {
            put(&mut out, path.as_os_str().as_bytes());
            stamp.put(&mut out);
        }
        out.extend_from_slice(&(walk.rules.len() as u32).to_le_bytes());
        for (path, seen) in &walk.rules {
            put(&mut out, path.as_os_str().as_bytes());
            match seen {
                Seen::Absent => out.push(0),
                Seen::Folder => out.push(1),
                Seen::File(stamp) => {
                    out.push(2);
                    stamp.put(&mut out);
                }
            }
        }
        put(&mut out, &walk.files);
    }
    end_file(out)
}

fn decode(bytes: &[u8]) -> Option<Saved> {
    let mut r = open_file(bytes, MAGIC, FORMAT_VERSION)?;
    let bytes = |r: &mut Reader<'_>| -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(r.array()?) as usize;
        r.take(len).map(<[u8]>::to_vec)
    };
    let path = |r: &mut Reader<'_>| bytes(r).map(|b| PathBuf::from(OsStr::from_bytes(&b)));
    let count = |r: &mut Reader<'_>| r.array().map(u32::from_le_bytes);
    let mut walks = HashMap::new();
    while !r.0.is_empty() {
        let key = bytes(&mut r)?.into_boxed_slice();
        let unused = r.array::<1>()?[0];
        let mut folders = Vec::new();
        for _ in 0..count(&mut r)? {
            folders.push((path(&mut r)?, Stamp::read(&mut r)?));
        }
        let mut rules = Vec::new();
        for _ in 0..count(&mut r)? {
            let at = path(&mut r)?;
            let seen = match r.array::<1>()?[0] {
                0 => Seen::Absent,
                1 => Seen::Folder,
                2 => Seen::File(Stamp::read(&mut r)?),
                _ => return None,
            };
            rules.push((at, seen));
        }
        let files = bytes(&mut r)?;
        let walk = Walk {
            folders,
            rules,
            files,
            unused,
        };
        let seen = AtomicU8::new(UNSEEN);
        walks.insert(key, SavedWalk { walk, seen });
    }
    Some(walks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folders named `names` below `dir`, settled: older than the racy window.
    fn settled_folders<const N: usize>(dir: &Path, names: [&str; N]) -> [PathBuf; N] {
        let folders = names.map(|name| {
            let folder = dir.join(name);
            std::fs::create_dir(&folder).unwrap();
            folder
        });
        std::thread::sleep(std::time::Duration::from_millis(150));
        folders
    }

    fn walked(walks: &Walks, key: &str) -> Option<Vec<PathBuf>> {
        let mut files = Vec::new();
        walks.walked(key.as_bytes(), &mut files).map(|_| files)
    }

    fn keep(walks: &Walks, key: &str, folder: &Path, files: &[&str]) {
        let mut trail = Trail::begin();
        trail.folder(folder);
        trail.look(&folder.join(".gitignore"));
        let files: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
        walks.keep(key.as_bytes(), trail, &files);
    }

    #[test]
    fn a_kept_walk_holds_until_its_folder_moves_and_a_save_keeps_only_what_holds() {
        let dir = tempfile::tempdir().unwrap();
        let [a, b, c, d] = settled_folders(dir.path(), ["a", "b", "c", "d"]);
        let path = dir.path().join("walk-cache");
        let first = Walks::load(&path);
        keep(&first, "a/**", &a, &["a/y", "a/x"]);
        keep(&first, "b/**", &b, &["b/z"]);
        keep(&first, "d/**", &d, &[]);
        first.save().unwrap();

        let second = Walks::load(&path);
        // Sorted when kept.
        let sorted = [PathBuf::from("a/x"), PathBuf::from("a/y")];
        assert_eq!(walked(&second, "a/**").unwrap(), sorted);
        std::fs::write(b.join("new"), "").unwrap();
        assert_eq!(walked(&second, "b/**"), None);
        // A rules file appearing where none was is a change too.
        std::fs::write(a.join(".gitignore"), "y\n").unwrap();
        assert_eq!(walked(&second, "a/**"), None);
        // Too recent to keep: the walk of `b` is not replaced, and dropped.
        keep(&second, "b/**", &b, &["b/new", "b/z"]);
        assert_eq!(walked(&second, "b/**"), None);
        keep(&second, "c/**", &c, &[]);
        second.save().unwrap();
        // What moved is dropped; what this run did not look up is kept.
        let saved = read(&path);
        let mut keys: Vec<&[u8]> = saved.keys().map(|k| &**k).collect();
        keys.sort();
        assert_eq!(keys, [&b"c/**"[..], &b"d/**"[..]]);
        assert_eq!(saved[&b"d/**"[..]].walk.unused, 1);
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let [a] = settled_folders(dir.path(), ["a"]);
        std::fs::write(a.join(".gitignore"), "x\n").unwrap();
        let mut trail = Trail::begin();
        trail.folder(&a);
        trail.look(&dir.path().join("missing"));
        trail.look(&a);
        trail.saw(
            &a.join(".gitignore"),
            Seen::at(&a.join(".gitignore")),
            i128::MAX,
        );
        let walk = Walk {
            folders: trail.folders,
            rules: trail.rules,
            files: b"a/x\0a/y\0".to_vec(),
            unused: 3,
        };
        let mut bytes = encode(&[(b"key", &walk, 3)]);
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded[&b"key"[..]].walk, walk);
        assert!(walk.holds());
        let last = bytes.len() - 40;
        bytes[last] ^= 1;
        assert!(decode(&bytes).is_none());
    }
}
