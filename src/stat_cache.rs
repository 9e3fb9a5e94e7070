//! File digests that skip re-reading unchanged files, as git's index does.
//!
//! A file whose size, mtime, ctime, inode and device are what they were when it was hashed is
//! not read again. The catch is the "racily clean" file: one changed again within the same
//! timestamp granule as the hash, so its stat looks unchanged although its bytes are not. An
//! entry is therefore only kept when the file's ctime was at least [`RACY_WINDOW`] older than
//! the moment it was hashed; a file touched more recently is hashed again next time. ctime,
//! unlike mtime, cannot be set back by `touch -d` or an archive extractor.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::atomic_file;

/// A BLAKE3 digest: murphy's internal content key (SHA-256 is for digests others read).
pub type Digest = [u8; 32];

/// Wider than any local filesystem's timestamp granule (kernel ticks are at most 10 ms;
/// some network filesystems keep whole seconds), so a racy entry is never trusted.
const RACY_WINDOW_NS: i128 = 2_000_000_000;

const MAGIC: &[u8; 8] = b"MURPHYSC";
const FORMAT_VERSION: u32 = 1;

/// What the file looked like when it was hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
    device: u64,
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<PathBuf, (Stamp, Digest)>,
    changed: bool,
    /// What this run read again, for [`StatCache::rehashed`].
    rehashed: Rehashed,
}

/// The files a run read because the cache could not vouch for them (new, changed, touched,
/// or too recently changed to trust): why a run that changed nothing can still be slow.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rehashed {
    pub count: u64,
    /// The first few, as examples.
    pub examples: Vec<PathBuf>,
}

/// How many re-hashed paths [`Rehashed`] keeps.
const EXAMPLES: usize = 5;

/// The cache, shared by every stage of a run; hashing happens outside its lock.
#[derive(Debug)]
pub struct StatCache {
    path: PathBuf,
    entries: Mutex<Entries>,
}

impl StatCache {
    /// Loads the cache at `path`; a missing, foreign or damaged file is an empty cache.
    pub fn load(path: &Path) -> StatCache {
        let map = match std::fs::read(path) {
            Ok(bytes) => decode(&bytes).unwrap_or_else(|| {
                tracing::debug!(
                    "{} is damaged; starting an empty stat cache",
                    path.display()
                );
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        };
        StatCache {
            path: path.to_owned(),
            entries: Mutex::new(Entries {
                map,
                ..Entries::default()
            }),
        }
    }

    /// The digest and size of the file at `path`, reading it only when it may have changed.
    /// A symlink's digest covers both where it points and, if that is a file, its bytes.
    pub fn digest(&self, path: &Path) -> io::Result<(Digest, u64)> {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(path)?;
            let mut h = blake3::Hasher::new();
            h.update(target.as_os_str().as_bytes());
            if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
                h.update(&hash_file(path)?);
                self.note_rehashed(path);
            }
            return Ok((*h.finalize().as_bytes(), 0));
        }
        let stamp = Stamp::of(&meta);
        if let Some((cached, digest)) = self.lock().map.get(path)
            && *cached == stamp
        {
            return Ok((*digest, stamp.size));
        }
        let hashed_at = now_ns();
        let digest = hash_file(path)?;
        self.note_rehashed(path);
        // Keep the entry only if the file cannot change again unseen (see the module doc),
        // and only if it did not change while we read it.
        let after = std::fs::symlink_metadata(path).map(|m| Stamp::of(&m)).ok();
        if after == Some(stamp) && stamp.ctime_ns < hashed_at - RACY_WINDOW_NS {
            let mut entries = self.lock();
            entries.map.insert(path.to_owned(), (stamp, digest));
            entries.changed = true;
        }
        Ok((digest, stamp.size))
    }

    fn note_rehashed(&self, path: &Path) {
        let rehashed = &mut self.lock().rehashed;
        rehashed.count += 1;
        if rehashed.examples.len() < EXAMPLES {
            rehashed.examples.push(path.to_owned());
        }
    }

    /// The files read so far because the cache had no valid entry for them.
    pub fn rehashed(&self) -> Rehashed {
        self.lock().rehashed.clone()
    }

    /// Writes the cache back if anything was added; atomically, so a kill leaves the old one.
    pub fn save(&self) -> io::Result<()> {
        let mut entries = self.lock();
        if !entries.changed {
            return Ok(());
        }
        // Entries for files that are gone are dropped, so the cache does not grow forever.
        entries.map.retain(|path, _| path.exists());
        atomic_file::write(&self.path, &encode(&entries.map))?;
        entries.changed = false;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Blocks read at a time; large enough for BLAKE3 to hash one block on several cores.
const BLOCK: usize = 4 << 20;

/// BLAKE3 of a file's bytes. Read, not mmapped: a file truncated while mapped would kill
/// murphy with SIGBUS. Full blocks are hashed on every core (BLAKE3 is a tree), which more
/// than pays for the copy a read costs.
pub fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    // Sized to the file: most inputs are small, and a 4 MiB buffer each is a cost of its own.
    let size = file.metadata().map_or(BLOCK as u64, |m| m.len());
    let mut buf = vec![0u8; usize::try_from(size).map_or(BLOCK, |s| (s + 1).min(BLOCK))];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if filled == BLOCK {
            hasher.update_rayon(&buf);
        } else if filled == buf.len() {
            // A file that grew since its size was read: keep reading.
            hasher.update(&buf);
        } else {
            hasher.update(&buf[..filled]);
            break;
        }
    }
    Ok(*hasher.finalize().as_bytes())
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Layout: magic, version, then per entry: path length (u32), path bytes, size, mtime, ctime,
/// inode, device, digest; all little-endian; then a BLAKE3 of everything before it.
fn encode(map: &HashMap<PathBuf, (Stamp, Digest)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + map.len() * 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    for (path, (stamp, digest)) in map {
        let bytes = path.as_os_str().as_bytes();
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
        out.extend_from_slice(&stamp.size.to_le_bytes());
        out.extend_from_slice(&stamp.mtime_ns.to_le_bytes());
        out.extend_from_slice(&stamp.ctime_ns.to_le_bytes());
        out.extend_from_slice(&stamp.inode.to_le_bytes());
        out.extend_from_slice(&stamp.device.to_le_bytes());
        out.extend_from_slice(digest);
    }
    let check = blake3::hash(&out);
    out.extend_from_slice(check.as_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<HashMap<PathBuf, (Stamp, Digest)>> {
    let (body, check) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if blake3::hash(body).as_bytes() != check {
        return None;
    }
    let mut r = Reader(body);
    if r.take(8)? != MAGIC || u32::from_le_bytes(r.array()?) != FORMAT_VERSION {
        return None;
    }
    let mut map = HashMap::new();
    while !r.0.is_empty() {
        let len = u32::from_le_bytes(r.array()?) as usize;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(r.take(len)?));
        let stamp = Stamp {
            size: u64::from_le_bytes(r.array()?),
            mtime_ns: i128::from_le_bytes(r.array()?),
            ctime_ns: i128::from_le_bytes(r.array()?),
            inode: u64::from_le_bytes(r.array()?),
            device: u64::from_le_bytes(r.array()?),
        };
        map.insert(path, (stamp, r.array()?));
    }
    Some(map)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets a file's mtime back; its ctime moves to now, which is what makes this safe.
    fn age(path: &Path) {
        let old = File::options().write(true).open(path).unwrap();
        old.set_modified(SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let mut map = HashMap::new();
        let stamp = Stamp {
            size: 3,
            mtime_ns: 1,
            ctime_ns: 2,
            inode: 4,
            device: 5,
        };
        map.insert(PathBuf::from("src/a.rs"), (stamp, [7u8; 32]));
        let mut bytes = encode(&map);
        assert_eq!(decode(&bytes).unwrap(), map);
        bytes[12] ^= 1;
        assert_eq!(decode(&bytes), None);
    }

    #[test]
    fn a_file_changed_within_the_granule_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "one").unwrap();
        let cache = StatCache::load(&dir.path().join("cache"));
        let first = cache.digest(&file).unwrap().0;
        // Same size, and on a coarse clock possibly the same mtime: only a re-hash sees it.
        std::fs::write(&file, "two").unwrap();
        let second = cache.digest(&file).unwrap().0;
        assert_ne!(first, second);
        assert_eq!(second, hash_file(&file).unwrap());
        assert!(cache.lock().map.is_empty(), "a racy entry must not be kept");
    }

    #[test]
    fn what_was_read_again_is_counted_and_what_was_served_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let cache = StatCache::load(&dir.path().join("cache"));
        let mut files = Vec::new();
        for i in 0..7 {
            let file = dir.path().join(format!("{i}.txt"));
            std::fs::write(&file, "x").unwrap();
            files.push(file);
        }
        // One file the cache knows (a marker digest stands in for one hashed long ago).
        let stamp = Stamp::of(&std::fs::metadata(&files[0]).unwrap());
        cache
            .lock()
            .map
            .insert(files[0].clone(), (stamp, [9u8; 32]));
        for file in &files {
            cache.digest(file).unwrap();
        }
        let rehashed = cache.rehashed();
        assert_eq!(rehashed.count, 6);
        assert_eq!(rehashed.examples, files[1..=EXAMPLES]);
    }

    #[test]
    fn an_unchanged_file_is_served_from_the_cache_until_touched() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "content").unwrap();
        let cache_path = dir.path().join("cache");
        let cache = StatCache::load(&cache_path);
        // A just-written file is racy; stand in for one hashed long after its last change,
        // with a marker digest that only the cache can return.
        let stamp = Stamp::of(&std::fs::metadata(&file).unwrap());
        let mut entries = cache.lock();
        entries.map.insert(file.clone(), (stamp, [9u8; 32]));
        entries.changed = true;
        drop(entries);
        assert_eq!(cache.digest(&file).unwrap().0, [9u8; 32]);
        cache.save().unwrap();
        let reloaded = StatCache::load(&cache_path);
        assert_eq!(reloaded.digest(&file).unwrap().0, [9u8; 32]);
        // Touching the file (even setting its mtime back) moves its ctime: read again.
        age(&file);
        assert_eq!(reloaded.digest(&file).unwrap().0, hash_file(&file).unwrap());
    }
}
