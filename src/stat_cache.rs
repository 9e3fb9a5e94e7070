//! File digests that skip re-reading unchanged files, as git's index does.
//!
//! A file whose size, mtime, ctime, inode and device are what they were when it was hashed is
//! not read again. The catch is the "racily clean" file: one changed again within the same
//! timestamp granule as the hash, so its stat looks unchanged although its bytes are not. An
//! entry is therefore only kept when the file's ctime was older than the moment it was hashed
//! by more than its file system's granule ([`racy_window_ns`]); a file touched more recently
//! is hashed again next time. ctime, unlike mtime, cannot be set back by `touch -d` or an
//! archive extractor.

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::{File, Metadata};
use std::hash::BuildHasher;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::atomic_file;

mod walks;
pub use walks::{Seen, Trail, Walks};

/// A BLAKE3 digest: murphy's internal content key (SHA-256 is for digests others read).
pub type Digest = [u8; 32];

/// How long after its last change a file's stamp can vouch for its bytes: longer than the
/// granule of its timestamps, so a later change cannot leave the stamp as it was.
///
/// - A ctime with a fraction of a second comes from a file system that keeps fine times
///   (ext4, XFS, btrfs, tmpfs, APFS and NTFS to the nanosecond or 100 ns, exFAT to 10 ms), set
///   from the kernel's coarse clock, which lags by at most a tick (10 ms at HZ=100): 100 ms
///   is ten times that.
/// - A whole-second ctime may come from one that keeps whole seconds (HFS+, ext4 with small
///   inodes, some network file systems) or two (FAT): 2 s. Before this rule, every file
///   waited 2 s, and a run in the two seconds after a checkout read every file again.
///
/// The ctime is the file server's time, `hashed_at` this machine's: a server whose clock lags
/// by more than the window is not covered (nor was it past 2 s).
fn racy_window_ns(ctime_ns: i128) -> i128 {
    match ctime_ns % 1_000_000_000 {
        0 => 2_000_000_000,
        _ => 100_000_000,
    }
}

/// Whether a change made at `ctime_ns` was, at `at_ns`, older than its file system's granule
/// ([`racy_window_ns`]): a later change cannot leave the times as they were. The cache keeps
/// an entry only then.
fn settled(ctime_ns: i128, at_ns: i128) -> bool {
    ctime_ns < at_ns - racy_window_ns(ctime_ns)
}

const MAGIC: &[u8; 8] = b"MURPHYSC";
/// 2: entries sorted by path, each path stored as the length it shares with the one before
/// and the rest (20,000 paths below one folder shrink to a few bytes each). A file of
/// version 1 reads as an empty cache: every file is hashed once more, then it is rewritten.
const FORMAT_VERSION: u32 = 2;

/// What a file looked like when it was hashed: the times and identity a change moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    size: u64,
    mtime_ns: i128,
    /// When its inode last changed, in nanoseconds since the epoch: see [`settled`].
    ctime_ns: i128,
    inode: u64,
    device: u64,
}

impl Stamp {
    /// Taken from `stat` of `name` in `folder`, not following a symlink; `None` for a symlink.
    fn in_folder(folder: &Folder, name: &CStr) -> io::Result<Option<Stamp>> {
        use std::os::fd::AsRawFd;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: the descriptor is open for as long as `folder` lives, `name` is a C string,
        // and `st` is written whole by a call that returns 0.
        let st = unsafe {
            if libc::fstatat(
                folder.0.as_raw_fd(),
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            st.assume_init()
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Ok(None);
        }
        // As `std`'s `MetadataExt` converts them: the field types differ between Linux and
        // macOS, so a cast that is a no-op on one is needed on the other.
        #[allow(clippy::unnecessary_cast)]
        let ns = |s, n| i128::from(s as i64) * 1_000_000_000 + i128::from(n as i64);
        #[allow(clippy::unnecessary_cast)]
        Ok(Some(Stamp {
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
            inode: st.st_ino as u64,
            device: st.st_dev as u64,
        }))
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.mtime_ns.to_le_bytes());
        out.extend_from_slice(&self.ctime_ns.to_le_bytes());
        out.extend_from_slice(&self.inode.to_le_bytes());
        out.extend_from_slice(&self.device.to_le_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Option<Stamp> {
        Some(Stamp {
            size: u64::from_le_bytes(r.array()?),
            mtime_ns: i128::from_le_bytes(r.array()?),
            ctime_ns: i128::from_le_bytes(r.array()?),
            inode: u64::from_le_bytes(r.array()?),
            device: u64::from_le_bytes(r.array()?),
        })
    }

    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: changed_ns(meta),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }
}

/// When the inode of what `meta` describes last changed, in nanoseconds since the epoch, as
/// the kernel's file clock kept it.
pub fn changed_ns(meta: &Metadata) -> i128 {
    i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())
}

/// A folder held open, its files stat-ed by name: a path from `/` costs the kernel a lookup
/// for each of its parts, a fifth of the CPU of a run that checks 20,000 unchanged inputs.
#[derive(Debug)]
pub struct Folder(std::os::fd::OwnedFd);

impl Folder {
    pub fn open(path: &Path) -> io::Result<Folder> {
        Ok(Folder(File::open(path)?.into()))
    }
}

/// One file the cache vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    stamp: Stamp,
    digest: Digest,
}

/// The cache as the last run saved it, shared by every stage's threads and read without a
/// lock: a lookup per input file is the whole of a no-op run. Its paths sit in one buffer
/// and its index holds positions, so reading 20,000 entries allocates three times, not
/// 20,000.
#[derive(Debug, Default)]
struct Saved {
    /// Every entry's path, one after the other.
    paths: Vec<u8>,
    entries: Vec<SavedEntry>,
    /// Positions in `entries`, by the FxHash of their path (neither SipHash nor `PathBuf`'s
    /// component-wise hashing is needed for a local cache).
    index: HashTable<u32>,
}

/// Not looked up by this run.
const UNSEEN: u8 = 0;
/// Looked up with the stamp it was saved with.
const MATCHED: u8 = 1;
/// Looked up with another stamp.
const MOVED: u8 = 2;

#[derive(Debug)]
struct SavedEntry {
    path: Range<u32>,
    entry: Entry,
    /// What this run's lookups found ([`UNSEEN`], [`MATCHED`], [`MOVED`]): a file looked up
    /// exists, so [`StatCache::save`] need not check; one whose stamp moved has an entry that
    /// can never vouch again, which it drops.
    seen: AtomicU8,
}

impl Saved {
    fn path(&self, at: &SavedEntry) -> &[u8] {
        &self.paths[at.path.start as usize..at.path.end as usize]
    }

    fn get(&self, path: &[u8]) -> Option<&SavedEntry> {
        let hash = FxBuildHasher.hash_one(path);
        self.index
            .find(hash, |&i| self.path(&self.entries[i as usize]) == path)
            .map(|&i| &self.entries[i as usize])
    }

    /// Adds an entry read from the file; `false` past what positions can address.
    fn push(&mut self, path: &[u8], entry: Entry) -> bool {
        let (Ok(start), Ok(end), Ok(at)) = (
            u32::try_from(self.paths.len()),
            u32::try_from(self.paths.len() + path.len()),
            u32::try_from(self.entries.len()),
        ) else {
            return false;
        };
        self.paths.extend_from_slice(path);
        self.entries.push(SavedEntry {
            path: start..end,
            entry,
            seen: AtomicU8::new(UNSEEN),
        });
        let (paths, entries) = (&self.paths, &self.entries);
        let hash = FxBuildHasher.hash_one(path);
        self.index.insert_unique(hash, at, |&i| {
            let at = &entries[i as usize].path;
            FxBuildHasher.hash_one(&paths[at.start as usize..at.end as usize])
        });
        true
    }
}

/// What this run hashed and may keep, under a lock: few entries on most runs.
#[derive(Debug, Default)]
struct Fresh {
    map: HashMap<Box<[u8]>, Entry, FxBuildHasher>,
    /// Holds entries not yet written.
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
    /// Taken by the first lookup. Reading 20,000 entries takes a few ms, which a run's start
    /// (git, the lock, its records) hides.
    saved: Loading<Saved>,
    fresh: Mutex<Fresh>,
    /// The walks of `inputs` patterns, beside the cache in `walk-cache`.
    walks: Walks,
}

impl StatCache {
    /// Starts loading the cache at `path` on a thread of its own; a missing, foreign, older
    /// or damaged file is an empty cache.
    pub fn load(path: &Path) -> StatCache {
        StatCache {
            saved: Loading::start("stat-cache", path, read),
            fresh: Mutex::new(Fresh::default()),
            walks: Walks::load(&path.with_file_name("walk-cache")),
        }
    }

    pub fn walks(&self) -> &Walks {
        &self.walks
    }

    /// The digest and size of the file at `path`, reading it only when it may have changed.
    /// A symlink's digest covers both where it points and, if that is a file, its bytes.
    pub fn digest(&self, path: &Path) -> io::Result<(Digest, u64)> {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.file_type().is_symlink() {
            return self.digest_link(path);
        }
        self.digest_stamped(path, Stamp::of(&meta))
    }

    /// [`StatCache::digest`] of the file `name` in `folder`, whose path is `path`: stat-ed
    /// by its name in the open folder.
    pub fn digest_in(
        &self,
        folder: &Folder,
        name: &CStr,
        path: &Path,
    ) -> io::Result<(Digest, u64)> {
        match Stamp::in_folder(folder, name)? {
            Some(stamp) => self.digest_stamped(path, stamp),
            None => self.digest_link(path),
        }
    }

    fn digest_link(&self, path: &Path) -> io::Result<(Digest, u64)> {
        let target = std::fs::read_link(path)?;
        let mut h = blake3::Hasher::new();
        h.update(target.as_os_str().as_bytes());
        if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            h.update(&hash_file(path)?);
            self.note_rehashed(path);
        }
        Ok((*h.finalize().as_bytes(), 0))
    }

    /// The digest of the file at `path`, whose stat gave `stamp`.
    fn digest_stamped(&self, path: &Path, stamp: Stamp) -> io::Result<(Digest, u64)> {
        let key = path.as_os_str().as_bytes();
        if let Some(digest) = self.known(key, stamp) {
            return Ok((digest, stamp.size));
        }
        let hashed_at = now_ns();
        let (digest, after) = hash_and_stat(path, stamp.size)?;
        let mut fresh = self.fresh();
        note(&mut fresh.rehashed, path);
        // Keep the entry only if the file cannot change again unseen (see the module doc),
        // and only if the bytes read are those of the stamp: the file opened is the one
        // stat-ed (same inode) and did not change while it was read.
        if Stamp::of(&after) == stamp && settled(stamp.ctime_ns, hashed_at) {
            fresh.map.insert(key.into(), Entry { stamp, digest });
            fresh.changed = true;
        }
        Ok((digest, stamp.size))
    }

    /// The digest the cache holds for the file at `path` if its stamp is unchanged, without
    /// ever reading the file: `None` when [`StatCache::digest`] would have to hash it.
    pub fn vouched(&self, path: &Path) -> io::Result<Option<Digest>> {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.file_type().is_symlink() {
            return Ok(None);
        }
        Ok(self.known(path.as_os_str().as_bytes(), Stamp::of(&meta)))
    }

    /// The digest kept for `path` under `stamp`: saved by an earlier run (no lock taken), or
    /// hashed by this one.
    fn known(&self, path: &[u8], stamp: Stamp) -> Option<Digest> {
        if let Some(at) = self.saved().get(path) {
            if at.entry.stamp == stamp {
                at.seen.store(MATCHED, Ordering::Relaxed);
                return Some(at.entry.digest);
            }
            // A ctime never goes back: this entry cannot vouch for the file again.
            at.seen.store(MOVED, Ordering::Relaxed);
        }
        self.fresh()
            .map
            .get(path)
            .filter(|entry| entry.stamp == stamp)
            .map(|entry| entry.digest)
    }

    fn note_rehashed(&self, path: &Path) {
        note(&mut self.fresh().rehashed, path);
    }

    /// The files read so far because the cache had no valid entry for them.
    pub fn rehashed(&self) -> Rehashed {
        self.fresh().rehashed.clone()
    }

    /// Writes the cache and its walks back if this run made anything it may keep;
    /// atomically, so a kill leaves the old one. Not fsynced: a cache lost or torn by a
    /// power cut fails its checksum and is an empty one, and an old one still only vouches
    /// for stamps it saw.
    pub fn save(&self) -> io::Result<()> {
        let walks = self.walks.save();
        self.save_digests()?;
        walks
    }

    fn save_digests(&self) -> io::Result<()> {
        let mut fresh = self.fresh();
        if !fresh.changed {
            return Ok(());
        }
        let saved = self.saved();
        // Entries for files that are gone are dropped, so the cache does not grow forever;
        // those this run looked up exist, so only the others are checked. Entries whose file
        // moved since are dropped unchecked: after a checkout, stat-ing 20,000 of them again
        // cost a run 26 ms.
        let mut kept: Vec<(&[u8], &Entry)> = fresh.map.iter().map(|(p, e)| (&**p, e)).collect();
        kept.extend(saved.entries.iter().filter_map(|at| {
            let path = saved.path(at);
            let keep = !fresh.map.contains_key(path)
                && match at.seen.load(Ordering::Relaxed) {
                    MATCHED => true,
                    MOVED => false,
                    _ => Path::new(std::ffi::OsStr::from_bytes(path)).exists(),
                };
            keep.then_some((path, &at.entry))
        }));
        kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
        atomic_file::write_unsynced(self.saved.path(), &encode(&kept))?;
        fresh.changed = false;
        Ok(())
    }

    fn saved(&self) -> &Saved {
        self.saved.get()
    }

    fn fresh(&self) -> std::sync::MutexGuard<'_, Fresh> {
        self.fresh.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Freeing 20,000 fresh entries one by one (a run after a checkout hashed them all) costs a
/// run's end ~4 ms: a thread does it, which the process's exit, right after a run, ends
/// without waiting.
impl Drop for StatCache {
    fn drop(&mut self) {
        let fresh = std::mem::take(self.fresh.get_mut().unwrap_or_else(|e| e.into_inner()));
        if !fresh.map.is_empty() {
            let _ = std::thread::Builder::new().spawn(move || drop(fresh));
        }
    }
}

/// A cache file read on a thread of its own from the moment a run starts, and taken by its
/// first use; read there instead if the thread could not start or panicked.
#[derive(Debug)]
struct Loading<T> {
    path: PathBuf,
    read: fn(&Path) -> T,
    thread: Mutex<Option<std::thread::JoinHandle<T>>>,
    done: OnceLock<T>,
}

impl<T: Send + 'static> Loading<T> {
    fn start(name: &str, path: &Path, read: fn(&Path) -> T) -> Loading<T> {
        let from = path.to_owned();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || read(&from));
        Loading {
            path: path.to_owned(),
            read,
            thread: Mutex::new(thread.ok()),
            done: OnceLock::new(),
        }
    }

    fn get(&self) -> &T {
        self.done.get_or_init(|| {
            let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            thread
                .and_then(|thread| thread.join().ok())
                .unwrap_or_else(|| (self.read)(&self.path))
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

fn read(path: &Path) -> Saved {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes).unwrap_or_else(|| {
            tracing::debug!(
                "{} is damaged or of another version; starting an empty stat cache",
                path.display()
            );
            Saved::default()
        }),
        Err(_) => Saved::default(),
    }
}

fn note(rehashed: &mut Rehashed, path: &Path) {
    rehashed.count += 1;
    if rehashed.examples.len() < EXAMPLES {
        rehashed.examples.push(path.to_owned());
    }
}

/// Blocks read at a time; large enough for BLAKE3 to hash one block on several cores.
const BLOCK: usize = 4 << 20;

/// Read at a time from a file smaller than a [`BLOCK`]: a buffer the size of a 1.5 MB output
/// cost more in fresh pages than its hash (1.5 ms, where 256 KB at a time took 0.6).
const PIECE: usize = 256 << 10;

/// BLAKE3 of a file's bytes. Read, not mmapped: a file truncated while mapped would kill
/// murphy with SIGBUS. Full blocks are hashed on every core (BLAKE3 is a tree), which more
/// than pays for the copy a read costs.
pub fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = File::open(path)?;
    // Sized to the file: most inputs are small, and a 4 MiB buffer each is a cost of its own.
    let size = file.metadata().map_or(BLOCK as u64, |m| m.len());
    hash_open(&mut file, size)
}

/// [`hash_file`] for a file whose size is known from a stat just made, with the open file's
/// own stat after the read: what the bytes hashed belong to.
fn hash_and_stat(path: &Path, size: u64) -> io::Result<(Digest, Metadata)> {
    let mut file = File::open(path)?;
    let digest = hash_open(&mut file, size)?;
    Ok((digest, file.metadata()?))
}

fn hash_open(file: &mut File, size: u64) -> io::Result<Digest> {
    let mut hasher = blake3::Hasher::new();
    // One byte more than expected, so a small file read whole needs no further read to see
    // its end unless it grew.
    let mut small = [0u8; 16 << 10];
    let wanted = usize::try_from(size).map_or(BLOCK, |s| match s + 1 {
        n if n >= BLOCK => BLOCK,
        n => n.min(PIECE),
    });
    let mut large;
    let buf: &mut [u8] = if wanted <= small.len() {
        &mut small[..wanted]
    } else {
        large = vec![0u8; wanted];
        &mut large
    };
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
            hasher.update_rayon(buf);
        } else if filled == buf.len() {
            // More to come: a file larger than a piece, or one that grew.
            hasher.update(buf);
        } else {
            hasher.update(&buf[..filled]);
            break;
        }
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Now, in nanoseconds since the epoch, as file times are kept.
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Layout: magic, version, then per entry in path order: the length of the path it shares
/// with the one before (u16), the length of the rest (u16) and its bytes, size, mtime,
/// ctime, inode, device, digest; all little-endian; then a BLAKE3 of everything before it.
fn encode(sorted: &[(&[u8], &Entry)]) -> Vec<u8> {
    let mut out = begin_file(MAGIC, FORMAT_VERSION, sorted.len() * 100);
    let mut before: &[u8] = &[];
    for &(path, entry) in sorted {
        // Paths are at most PATH_MAX (4096) bytes; a longer one is not kept.
        let Ok(len) = u16::try_from(path.len()) else {
            continue;
        };
        let shared = before.iter().zip(path).take_while(|(a, b)| a == b).count() as u16;
        out.extend_from_slice(&shared.to_le_bytes());
        out.extend_from_slice(&(len - shared).to_le_bytes());
        out.extend_from_slice(&path[usize::from(shared)..]);
        entry.stamp.put(&mut out);
        out.extend_from_slice(&entry.digest);
        before = path;
    }
    end_file(out)
}

fn decode(bytes: &[u8]) -> Option<Saved> {
    let mut r = open_file(bytes, MAGIC, FORMAT_VERSION)?;
    let count = r.0.len() / 90;
    let mut saved = Saved {
        paths: Vec::with_capacity(count * 24),
        entries: Vec::with_capacity(count),
        index: HashTable::with_capacity(count),
    };
    let mut path: Vec<u8> = Vec::new();
    while !r.0.is_empty() {
        let shared = usize::from(u16::from_le_bytes(r.array()?));
        let rest = usize::from(u16::from_le_bytes(r.array()?));
        if shared > path.len() {
            return None;
        }
        path.truncate(shared);
        path.extend_from_slice(r.take(rest)?);
        let entry = Entry {
            stamp: Stamp::read(&mut r)?,
            digest: r.array()?,
        };
        if !saved.push(&path, entry) {
            return None;
        }
    }
    Some(saved)
}

/// A cache file's start: its magic and version, then `capacity` bytes to come.
fn begin_file(magic: &[u8; 8], version: u32, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + capacity + 32);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out
}

/// A cache file's end: a BLAKE3 of everything before it.
fn end_file(mut out: Vec<u8>) -> Vec<u8> {
    let check = blake3::hash(&out);
    out.extend_from_slice(check.as_bytes());
    out
}

/// What follows the magic and version of a file [`end_file`] wrote, if its checksum holds and
/// it is of `magic` and `version`.
fn open_file<'a>(bytes: &'a [u8], magic: &[u8; 8], version: u32) -> Option<Reader<'a>> {
    let (body, check) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if blake3::hash(body).as_bytes() != check {
        return None;
    }
    let mut r = Reader(body);
    if r.take(8)? != magic || u32::from_le_bytes(r.array()?) != version {
        return None;
    }
    Some(r)
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

    /// A file stat-ed by its name in its open folder has the stamp `std` gives it by path, so
    /// an entry saved by either vouches for the other; a symlink is told apart, not followed.
    #[test]
    fn a_stamp_by_name_in_a_folder_is_the_stamp_by_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("a.txt", dir.path().join("link")).unwrap();
        let folder = Folder::open(dir.path()).unwrap();
        let by_path = Stamp::of(&std::fs::symlink_metadata(dir.path().join("a.txt")).unwrap());
        let by_name = Stamp::in_folder(&folder, c"a.txt").unwrap();
        assert_eq!(by_name, Some(by_path));
        assert_eq!(Stamp::in_folder(&folder, c"link").unwrap(), None);
        let gone = Stamp::in_folder(&folder, c"gone").unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
    }

    /// Sets a file's mtime back; its ctime moves to now, which is what makes this safe.
    fn age(path: &Path) {
        let old = File::options().write(true).open(path).unwrap();
        old.set_modified(SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
    }

    /// Makes `cache` vouch for `path` as it is now with `digest`: a marker only the cache
    /// can return, standing in for a file hashed long after its last change.
    fn vouch(cache: &StatCache, path: &Path, digest: Digest) {
        let stamp = Stamp::of(&std::fs::metadata(path).unwrap());
        let mut fresh = cache.fresh();
        let entry = Entry { stamp, digest };
        fresh.map.insert(path.as_os_str().as_bytes().into(), entry);
        fresh.changed = true;
    }

    #[test]
    fn round_trips_shares_prefixes_and_rejects_damage() {
        let mut entries = Vec::new();
        for (i, path) in ["src/b.rs", "src/a.rs", "src/a/c.rs", "z"]
            .iter()
            .enumerate()
        {
            let stamp = Stamp {
                size: 3 + i as u64,
                mtime_ns: -1,
                ctime_ns: 2,
                inode: 4,
                device: 5,
            };
            let entry = Entry {
                stamp,
                digest: [i as u8; 32],
            };
            entries.push((path.as_bytes(), entry));
        }
        entries.sort_by_key(|e| e.0);
        let sorted: Vec<(&[u8], &Entry)> = entries.iter().map(|(p, e)| (*p, e)).collect();
        let mut bytes = encode(&sorted);
        let saved = decode(&bytes).unwrap();
        let read: Vec<(&[u8], &Entry)> = saved
            .entries
            .iter()
            .map(|at| (saved.path(at), &at.entry))
            .collect();
        assert_eq!(read, sorted);
        for (path, entry) in &sorted {
            assert_eq!(saved.get(path).map(|at| &at.entry), Some(*entry));
        }
        assert!(saved.get(b"src").is_none());
        // `src/a.rs` whole, then 5 bytes of it shared by `src/a/c.rs`, and so on.
        let paths = ["src/a.rs", "/c.rs", "b.rs", "z"];
        let expected = 12 + paths.iter().map(|p| 4 + p.len() + 88).sum::<usize>() + 32;
        assert_eq!(bytes.len(), expected);
        bytes[12] ^= 1;
        assert!(decode(&bytes).is_none());
    }

    #[test]
    fn a_cache_of_another_version_is_empty() {
        let mut bytes = encode(&[]);
        bytes.truncate(8);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        let check = blake3::hash(&bytes);
        bytes.extend_from_slice(check.as_bytes());
        assert!(decode(&bytes).is_none());
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
        assert!(
            cache.fresh().map.is_empty(),
            "a racy entry must not be kept"
        );
    }

    /// On a file system with sub-second times, a file last changed 150 ms before it is
    /// hashed is kept, where a whole-second ctime would make it wait 2 s.
    #[test]
    fn a_file_past_its_file_system_s_granule_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "one").unwrap();
        let stamp = Stamp::of(&std::fs::metadata(&file).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(150));
        let cache = StatCache::load(&dir.path().join("cache"));
        cache.digest(&file).unwrap();
        let kept = cache.fresh().map.contains_key(file.as_os_str().as_bytes());
        // The temp dir's file system decides which rule applies; both are checked.
        match stamp.ctime_ns % 1_000_000_000 {
            0 => assert!(!kept, "a whole-second ctime must wait 2 s"),
            _ => assert!(kept, "a sub-second ctime 150 ms old must be kept"),
        }
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
        // One file the cache knows.
        vouch(&cache, &files[0], [9u8; 32]);
        for file in &files {
            cache.digest(file).unwrap();
        }
        let rehashed = cache.rehashed();
        assert_eq!(rehashed.count, 6);
        assert_eq!(rehashed.examples, files[1..=EXAMPLES]);
    }

    /// Files named `names` in `dir`, each holding its name.
    fn files<const N: usize>(dir: &Path, names: [&str; N]) -> [PathBuf; N] {
        names.map(|name| {
            let file = dir.join(name);
            std::fs::write(&file, name).unwrap();
            file
        })
    }

    /// A save writes what this run hashed over what the last one saved, once per path, and
    /// drops the files that are gone.
    #[test]
    fn a_save_replaces_what_was_hashed_again_and_drops_what_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let cache_path = dir.path().join("cache");
        let [a, b, c] = files(dir.path(), ["a", "b", "c"]);
        let first = StatCache::load(&cache_path);
        for (i, file) in [&a, &b, &c].into_iter().enumerate() {
            vouch(&first, file, [i as u8; 32]);
        }
        first.save().unwrap();

        let second = StatCache::load(&cache_path);
        assert_eq!(second.digest(&a).unwrap().0, [0u8; 32]);
        std::fs::remove_file(&b).unwrap();
        vouch(&second, &c, [7u8; 32]);
        second.save().unwrap();

        let saved = read(&cache_path);
        let kept: Vec<(&[u8], Digest)> = saved
            .entries
            .iter()
            .map(|at| (saved.path(at), at.entry.digest))
            .collect();
        let key = |file: &Path| file.as_os_str().as_bytes().to_vec();
        assert_eq!(kept, [(&key(&a)[..], [0u8; 32]), (&key(&c)[..], [7u8; 32])]);
    }

    /// An entry whose file was looked up with another stamp can never vouch again: a save
    /// drops it without looking for the file (20,000 of them after a checkout), and keeps
    /// what this run did not look up and still exists.
    #[test]
    fn a_save_drops_entries_whose_file_moved_and_keeps_those_not_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let cache_path = dir.path().join("cache");
        let [a, b, c] = files(dir.path(), ["a", "b", "c"]);
        let first = StatCache::load(&cache_path);
        vouch(&first, &a, [1u8; 32]);
        vouch(&first, &b, [2u8; 32]);
        first.save().unwrap();

        let second = StatCache::load(&cache_path);
        std::fs::write(&a, "changed").unwrap();
        // Read again, and too recently changed for its new stamp to be kept.
        assert_eq!(second.digest(&a).unwrap().0, hash_file(&a).unwrap());
        vouch(&second, &c, [3u8; 32]);
        second.save().unwrap();

        let saved = read(&cache_path);
        let kept: Vec<&[u8]> = saved.entries.iter().map(|at| saved.path(at)).collect();
        let key = |file: &Path| file.as_os_str().as_bytes().to_vec();
        assert_eq!(kept, [&key(&b)[..], &key(&c)[..]]);
    }

    #[test]
    fn an_unchanged_file_is_served_from_the_cache_until_touched() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "content").unwrap();
        let cache_path = dir.path().join("cache");
        let cache = StatCache::load(&cache_path);
        // A just-written file is racy: stand in for one hashed long after its last change.
        vouch(&cache, &file, [9u8; 32]);
        assert_eq!(cache.digest(&file).unwrap().0, [9u8; 32]);
        cache.save().unwrap();
        let reloaded = StatCache::load(&cache_path);
        assert_eq!(reloaded.digest(&file).unwrap().0, [9u8; 32]);
        // Touching the file (even setting its mtime back) moves its ctime: read again.
        age(&file);
        assert_eq!(reloaded.digest(&file).unwrap().0, hash_file(&file).unwrap());
    }
}
