//! A stage's fingerprint: one BLAKE3 over everything that decides its result.
//!
//! The inputs to the fingerprint are kept as a [`Manifest`] so that `murphy status` can say
//! which input, variable or upstream stage changed, by diffing two manifests.
//! **Invariant:** change any field and the fingerprint changes; nothing outside the manifest
//! (mtimes, run ids, key order in the YAML) can change it.

use std::collections::BTreeMap;
use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::environment::StageEnv;
use crate::inputs;
use crate::plan::Stage;
use crate::stat_cache::{Folder, StatCache};

/// Bumped whenever the way a fingerprint is computed changes, so old checkpoints miss.
/// v4: input digests go in as their 32 bytes, not 64 hex digits.
const DOMAIN: &str = "murphy-fingerprint-v4";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Two stages never share a result, even with the same commands and inputs.
    pub stage: String,
    pub commands: Vec<String>,
    /// The `shell` the commands run in: `sh`, `bash` or a template. (Absent in records
    /// written before it was recorded; their fingerprints belong to an older domain anyway.)
    #[serde(default)]
    pub shell: String,
    /// The declared outputs: declaring one more must not restore a record without it.
    pub outputs: Vec<String>,
    pub workdir: String,
    /// Variable name to a digest of its value (values may be secrets; digests are not).
    pub env: BTreeMap<String, String>,
    /// Input path (relative to the pipeline's directory) to the digest of its bytes.
    pub inputs: InputDigests,
    /// Needed stage to the digest of its outputs.
    pub upstream: BTreeMap<String, String>,
}

/// The BLAKE3 digest of an input's bytes. Kept as bytes (a run holds one per input, 20,000
/// of them), and so encoded in the fingerprint; written as hex in manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputDigest(pub [u8; 32]);

impl InputDigest {
    /// Its 64 hex digits, on the stack: a manifest writes 20,000 of them, two digits a
    /// lookup.
    fn hex(&self) -> [u8; 64] {
        let mut out = [0; 64];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0) {
            pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
        }
        out
    }
}

/// Input paths with their digests, sorted by path and each once: a map, kept as the list it
/// is built and read as. A run holds 20,000 of them, and building a `BTreeMap` of them cost
/// a twelfth of the threads that hash the inputs. Written as a JSON map, as it always was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputDigests(Vec<(String, InputDigest)>);

impl InputDigests {
    /// From pairs in any order; a path given twice keeps its last digest, as a map would.
    fn new(mut pairs: Vec<(String, InputDigest)>) -> InputDigests {
        // Most come sorted (walks sort their paths, manifests are written sorted): then this
        // is one pass that finds them so.
        if !pairs.is_sorted_by(|a, b| a.0 < b.0) {
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            pairs.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    kept.1 = later.1;
                }
                same
            });
        }
        InputDigests(pairs)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    fn get(&self, path: &str) -> Option<&InputDigest> {
        let at = self
            .0
            .binary_search_by(|(p, _)| p.as_str().cmp(path))
            .ok()?;
        Some(&self.0[at].1)
    }

    #[cfg(test)]
    fn insert(&mut self, path: String, digest: InputDigest) {
        match self.0.binary_search_by(|(p, _)| p.cmp(&path)) {
            Ok(at) => self.0[at].1 = digest,
            Err(at) => self.0.insert(at, (path, digest)),
        }
    }
}

type Pairs<'a> = std::iter::Map<
    std::slice::Iter<'a, (String, InputDigest)>,
    fn(&'a (String, InputDigest)) -> (&'a String, &'a InputDigest),
>;

impl<'a> IntoIterator for &'a InputDigests {
    type Item = (&'a String, &'a InputDigest);
    type IntoIter = Pairs<'a>;
    fn into_iter(self) -> Pairs<'a> {
        self.0.iter().map(|(path, digest)| (path, digest))
    }
}

impl<const N: usize> From<[(String, InputDigest); N]> for InputDigests {
    fn from(pairs: [(String, InputDigest); N]) -> InputDigests {
        InputDigests::new(pairs.into())
    }
}

impl Serialize for InputDigests {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self)
    }
}

impl<'de> Deserialize<'de> for InputDigests {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = InputDigests;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of input paths to digests")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                // A length read from the file is a hint, not a promise: capped.
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(InputDigests::new(pairs))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

impl Serialize for InputDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let hex = self.hex();
        serializer.serialize_str(std::str::from_utf8(&hex).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for InputDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = InputDigest;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a BLAKE3 digest in 64 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<InputDigest, E> {
                let nibble = |c: u8| char::from(c).to_digit(16);
                let mut digest = [0; 32];
                let digits = text.as_bytes();
                let read = digits.len() == 64
                    && digest
                        .iter_mut()
                        .zip(digits.chunks_exact(2))
                        .all(|(byte, pair)| match (nibble(pair[0]), nibble(pair[1])) {
                            (Some(high), Some(low)) => {
                                *byte = (high << 4 | low) as u8;
                                true
                            }
                            _ => false,
                        });
                match read {
                    true => Ok(InputDigest(digest)),
                    false => Err(E::invalid_value(serde::de::Unexpected::Str(text), &self)),
                }
            }
        }
        deserializer.deserialize_str(Hex)
    }
}

impl Manifest {
    /// Reads and hashes a stage's inputs. `upstream` are the output digests of its needs.
    /// Also returns the `inputs` patterns that named no file, for a warning.
    pub fn build(
        stage: &Stage,
        env: &StageEnv,
        root: &Path,
        state_dir: &Path,
        upstream: BTreeMap<String, String>,
        stat_cache: &StatCache,
    ) -> std::io::Result<(Manifest, Vec<String>)> {
        let _checking = Checking::begin();
        let expanded =
            inputs::expand_inputs(root, &stage.inputs, state_dir, Some(stat_cache.walks()))?;
        let files = digest_inputs(root, expanded.files, stat_cache)?;
        let env = env
            .fingerprinted
            .iter()
            .map(|(name, value)| {
                let digest = match value {
                    Some(v) => hex(blake3::hash(v.as_bytes()).as_bytes()),
                    None => "unset".to_owned(),
                };
                (name.clone(), digest)
            })
            .collect();
        let mut outputs: Vec<String> = stage
            .outputs
            .iter()
            .map(|o| inputs::clean(o).to_owned())
            .collect();
        outputs.sort();
        outputs.dedup();
        let manifest = Manifest {
            stage: stage.name.clone(),
            outputs,
            commands: stage.commands.clone(),
            shell: stage.shell.text().to_owned(),
            workdir: stage.workdir.to_string_lossy().into_owned(),
            env,
            inputs: files,
            upstream,
        };
        Ok((manifest, expanded.unmatched))
    }

    /// The fingerprint: a length-prefixed encoding of every field, so no two manifests
    /// can encode alike.
    pub fn fingerprint(&self) -> String {
        // Encoded whole, then hashed at once: BLAKE3 hashes a long buffer many chunks at a
        // time, where 40,000 small updates (20,000 inputs) go one block at a time.
        let entries = self.inputs.len() + self.env.len() + self.upstream.len();
        let mut bytes = Vec::with_capacity(entries * 90);
        let mut put = |s: &[u8]| {
            bytes.extend_from_slice(&(s.len() as u64).to_le_bytes());
            bytes.extend_from_slice(s);
        };
        put(DOMAIN.as_bytes());
        put(self.stage.as_bytes());
        for list in [&self.commands, &self.outputs] {
            put(list.len().to_string().as_bytes());
            list.iter().for_each(|c| put(c.as_bytes()));
        }
        put(self.shell.as_bytes());
        put(self.workdir.as_bytes());
        put(self.env.len().to_string().as_bytes());
        for (k, v) in &self.env {
            put(k.as_bytes());
            put(v.as_bytes());
        }
        put(self.inputs.len().to_string().as_bytes());
        for (k, v) in &self.inputs {
            put(k.as_bytes());
            put(&v.0);
        }
        put(self.upstream.len().to_string().as_bytes());
        for (k, v) in &self.upstream {
            put(k.as_bytes());
            put(v.as_bytes());
        }
        blake3::hash(&bytes).to_hex().to_string()
    }

    /// How many input files it names.
    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    /// As the store keeps it: JSON, in one buffer sized for it. Half a megabyte for 5,000
    /// inputs, which a buffer grown by doubling copies ten times.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut json = Vec::with_capacity(256 + self.inputs.len() * (100 + 64));
        serde_json::to_writer(&mut json, self)?;
        Ok(json)
    }

    /// The inputs added or changed since `before`, in order; not those removed.
    pub fn inputs_new_since<'a>(&'a self, before: &'a Manifest) -> impl Iterator<Item = &'a str> {
        compare(&before.inputs, &self.inputs)
            .into_iter()
            .filter(|(_, difference)| *difference != Difference::Removed)
            .map(|(path, _)| path.as_str())
    }

    /// What changed since `before`, in words: `input `src/a.rs` changed`, ...
    pub fn changes_since(&self, before: &Manifest) -> Vec<String> {
        let mut changes = Vec::new();
        if self.commands != before.commands {
            changes.push("its commands changed".to_owned());
        }
        if self.shell != before.shell {
            changes.push("its shell changed".to_owned());
        }
        if self.outputs != before.outputs {
            changes.push("its declared outputs changed".to_owned());
        }
        if self.workdir != before.workdir {
            changes.push("its workdir changed".to_owned());
        }
        diff(&mut changes, "input", &before.inputs, &self.inputs);
        diff(&mut changes, "env", &before.env, &self.env);
        diff(&mut changes, "upstream", &before.upstream, &self.upstream);
        changes
    }
}

/// Input path to the digest of its bytes; a file deleted since the walk is not an input.
/// The paths are taken, not copied: one allocation less for each of 20,000 inputs.
fn digest_inputs(
    root: &Path,
    files: Vec<PathBuf>,
    stat_cache: &StatCache,
) -> std::io::Result<InputDigests> {
    let digested = over_cores(&files, |part| digest_part(root, part, stat_cache))?;
    // The parts, in order, line up with the files.
    let pairs = files
        .into_iter()
        .zip(digested)
        .filter_map(|(file, digest)| {
            let digest = digest?;
            let key = file
                .into_os_string()
                .into_string()
                .unwrap_or_else(|path| path.to_string_lossy().into_owned());
            Some((key, digest))
        })
        .collect();
    Ok(InputDigests::new(pairs))
}

/// `work` on parts of `items`, a part per core left to it, its results in the order of
/// `items`. A stat per input is most of what a run that changed little costs, and a lone
/// large stage would otherwise use one core. Where other stages
/// are being checked as well, each keeps to its share of the cores: more threads than
/// cores only added their start and their contention (W3: 2 ms of 64, 4 of CPU).
fn over_cores<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&[T]) -> std::io::Result<Vec<R>> + Sync,
) -> std::io::Result<Vec<R>> {
    let share = (cores() / CHECKING.load(Ordering::Relaxed).max(1)).max(1);
    let parts = share.min(items.len() / PER_THREAD_AT_LEAST).max(1);
    let chunk = items.len().div_ceil(parts).max(1);
    let work = &work;
    let done: Vec<std::io::Result<Vec<R>>> = std::thread::scope(|scope| {
        let threads: Vec<_> = items
            .chunks(chunk)
            .skip(1)
            .map(|part| scope.spawn(move || work(part)))
            .collect();
        let first = work(items.chunks(chunk).next().unwrap_or(&[]));
        std::iter::once(first)
            .chain(threads.into_iter().map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("hashing inputs panicked")))
            }))
            .collect()
    });
    let mut all = Vec::with_capacity(items.len());
    for part in done {
        all.extend(part?);
    }
    Ok(all)
}

/// How many stages are having their inputs walked and hashed right now.
static CHECKING: AtomicUsize = AtomicUsize::new(0);

/// Counts a stage in [`CHECKING`] while it lives.
struct Checking;

impl Checking {
    fn begin() -> Checking {
        CHECKING.fetch_add(1, Ordering::Relaxed);
        Checking
    }
}

impl Drop for Checking {
    fn drop(&mut self) {
        CHECKING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Below this many files a thread is not worth starting.
const PER_THREAD_AT_LEAST: usize = 2048;

fn cores() -> usize {
    crate::process::cores().min(4)
}

/// The digest of each of `files`, in their order; `None` for one deleted since the walk.
/// Each is stat-ed by its name in its folder, held open while the files run through it:
/// the walk's sorted order keeps a folder's files together.
fn digest_part(
    root: &Path,
    files: &[PathBuf],
    stat_cache: &StatCache,
) -> std::io::Result<Vec<Option<InputDigest>>> {
    // One buffer for every path, and one for every name as the kernel takes it: a join or a
    // `CString` each would allocate 20,000 times.
    let mut path = PathBuf::new();
    let mut c_name = Vec::new();
    let mut open: Option<(&[u8], Option<Folder>)> = None;
    let mut digests = Vec::with_capacity(files.len());
    for relative in files {
        // Split as bytes: `Path`'s parent and its comparison go component by component.
        let bytes = relative.as_os_str().as_bytes();
        let (parent, name) = match bytes.iter().rposition(|&b| b == b'/') {
            Some(slash) => (&bytes[..slash], &bytes[slash + 1..]),
            None => (&b""[..], bytes),
        };
        if open.as_ref().is_none_or(|(dir, _)| *dir != parent) {
            // A folder that cannot be opened is left to the stat by path, and its error.
            let folder = Folder::open(&root.join(OsStr::from_bytes(parent))).ok();
            open = Some((parent, folder));
        }
        path.as_mut_os_string().clear();
        path.push(root);
        path.push(relative);
        c_name.clear();
        c_name.extend_from_slice(name);
        c_name.push(0);
        let by_name = CStr::from_bytes_with_nul(&c_name)
            .ok()
            .filter(|_| !matches!(name, b"" | b"." | b".."));
        let digest = match (
            open.as_ref().and_then(|(_, folder)| folder.as_ref()),
            by_name,
        ) {
            (Some(folder), Some(name)) => stat_cache.digest_in(folder, name, &path),
            _ => stat_cache.digest(&path),
        };
        digests.push(match digest {
            Ok((digest, _)) => Some(InputDigest(digest)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ));
            }
        });
    }
    Ok(digests)
}

/// How a key differs between two maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Difference {
    Added,
    Changed,
    Removed,
}

/// The keys that differ between two maps given in key order: the added and changed ones in
/// order, then the removed ones. Walked side by side, not searched per key.
fn compare<'a, V: PartialEq + 'a>(
    before: impl IntoIterator<Item = (&'a String, &'a V)>,
    after: impl IntoIterator<Item = (&'a String, &'a V)>,
) -> Vec<(&'a String, Difference)> {
    let mut differ = Vec::new();
    let mut removed = Vec::new();
    let mut old = before.into_iter().peekable();
    for (key, value) in after {
        while let Some((gone, _)) = old.next_if(|(k, _)| *k < key) {
            removed.push((gone, Difference::Removed));
        }
        match old.next_if(|(k, _)| *k == key) {
            None => differ.push((key, Difference::Added)),
            Some((_, was)) if was != value => differ.push((key, Difference::Changed)),
            Some(_) => {}
        }
    }
    removed.extend(old.map(|(gone, _)| (gone, Difference::Removed)));
    differ.append(&mut removed);
    differ
}

/// What changed between two maps given in key order, in words ([`compare`]'s order).
fn diff<'a, V: PartialEq + 'a>(
    out: &mut Vec<String>,
    what: &str,
    before: impl IntoIterator<Item = (&'a String, &'a V)>,
    after: impl IntoIterator<Item = (&'a String, &'a V)>,
) {
    out.extend(
        compare(before, after)
            .into_iter()
            .map(|(key, difference)| match difference {
                Difference::Added => format!("{what} `{key}` was added"),
                Difference::Changed => format!("{what} `{key}` changed"),
                Difference::Removed => format!("{what} `{key}` was removed"),
            }),
    );
}

/// Up to `n` reasons joined, with a count of the rest: for one line in `status`.
pub fn summarize(changes: &[String], n: usize) -> String {
    let mut text = changes
        .iter()
        .take(n)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if changes.len() > n {
        text.push_str(&format!(" and {} more", changes.len() - n));
    }
    text
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The two hex digits of every byte.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut pairs = [[0; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [HEX_DIGITS[byte >> 4], HEX_DIGITS[byte & 15]];
        byte += 1;
    }
    pairs
};

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            stage: "build".into(),
            outputs: vec!["dist".into()],
            commands: vec!["make".into()],
            shell: "sh".into(),
            workdir: ".".into(),
            env: [("A".to_owned(), "1".to_owned())].into(),
            inputs: [("src/a.rs".to_owned(), InputDigest([0xaa; 32]))].into(),
            upstream: [("build".to_owned(), "bb".to_owned())].into(),
        }
    }

    /// Checkpoints made by an earlier murphy must still be found: a change to this value
    /// makes every checkpoint miss once, and must come with a new `DOMAIN` (v4 encodes input
    /// digests as bytes, where v3 wrote them as hex).
    #[test]
    fn the_fingerprint_of_a_manifest_does_not_drift() {
        assert_eq!(
            manifest().fingerprint(),
            "90228b71693860a23fe97d7590d9f9f0436015bd33dc1a927f9dd7ef0750e141"
        );
    }

    /// Manifests are read back to say what changed: a digest is written as hex and read so,
    /// and anything else is refused with what was expected.
    #[test]
    fn a_manifest_reads_back_what_it_wrote() {
        let json = serde_json::to_string(&manifest()).unwrap();
        assert!(
            json.contains(&format!(r#""src/a.rs":"{}""#, "aa".repeat(32))),
            "{json}"
        );
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.inputs, manifest().inputs);
        let upper: Manifest = serde_json::from_str(&json.replace("aa", "AA")).unwrap();
        assert_eq!(upper.inputs, manifest().inputs);
        for bad in [
            "zz".to_owned(),
            "ag".repeat(32),
            "a".repeat(63),
            "a".repeat(66),
        ] {
            let bad = json.replace(&"aa".repeat(32), &bad);
            let err = serde_json::from_str::<Manifest>(&bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("a BLAKE3 digest in 64 hex digits"), "{err}");
        }
    }

    #[test]
    fn every_field_moves_the_fingerprint() {
        let base = manifest().fingerprint();
        let mut changed = Vec::new();
        let mut m = manifest();
        m.commands.push("x".into());
        changed.push(m);
        let mut m = manifest();
        m.workdir = "sub".into();
        changed.push(m);
        let mut m = manifest();
        m.shell = "bash".into();
        changed.push(m);
        let mut m = manifest();
        m.stage = "other".into();
        changed.push(m);
        let mut m = manifest();
        m.outputs.push("docs".into());
        changed.push(m);
        let mut m = manifest();
        m.env.insert("B".into(), "2".into());
        changed.push(m);
        let mut m = manifest();
        m.inputs.insert("src/a.rs".into(), InputDigest([0xab; 32]));
        changed.push(m);
        let mut m = manifest();
        m.upstream.insert("build".into(), "bc".into());
        changed.push(m);
        for m in changed {
            assert_ne!(m.fingerprint(), base, "{m:?}");
        }
        assert_eq!(manifest().fingerprint(), base);
    }

    #[test]
    fn fields_cannot_bleed_into_each_other() {
        let mut a = manifest();
        a.commands = vec!["ab".into()];
        let mut b = manifest();
        b.commands = vec!["a".into(), "b".into()];
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    /// Split over threads, with files deleted since the walk in each part: every digest
    /// must still be the one of its own path.
    #[test]
    fn each_input_keeps_its_own_digest_when_some_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let cache = StatCache::load(&dir.path().join("stat-cache"));
        let count = PER_THREAD_AT_LEAST * 2 + 7;
        let files: Vec<PathBuf> = (0..count)
            .map(|i| PathBuf::from(format!("f{i:05}")))
            .collect();
        let gone = [0, 3, PER_THREAD_AT_LEAST + 1, count - 1];
        for (i, file) in files.iter().enumerate() {
            if !gone.contains(&i) {
                std::fs::write(dir.path().join(file), format!("file {i}")).unwrap();
            }
        }
        let digests = digest_inputs(dir.path(), files, &cache).unwrap();
        assert_eq!(digests.len(), count - gone.len());
        for i in 0..count {
            let digest = digests.get(&format!("f{i:05}"));
            match gone.contains(&i) {
                true => assert_eq!(digest, None, "f{i:05}"),
                false => assert_eq!(
                    digest.map(|d| d.0),
                    Some(*blake3::hash(format!("file {i}").as_bytes()).as_bytes()),
                    "f{i:05}"
                ),
            }
        }
    }

    /// What the check for a stage that wrote into its own inputs looks at: files that are
    /// there now, added or changed, in order.
    #[test]
    fn inputs_new_since_names_the_added_and_changed_not_the_removed() {
        let digest = |b: u8| InputDigest([b; 32]);
        let before = Manifest {
            inputs: [
                ("a".to_owned(), digest(1)),
                ("b".to_owned(), digest(2)),
                ("d".to_owned(), digest(4)),
            ]
            .into(),
            ..Manifest::default()
        };
        let now = Manifest {
            inputs: [
                ("b".to_owned(), digest(9)),
                ("c".to_owned(), digest(3)),
                ("d".to_owned(), digest(4)),
            ]
            .into(),
            ..Manifest::default()
        };
        assert_eq!(
            now.inputs_new_since(&before).collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert_eq!(before.inputs_new_since(&before).count(), 0);
    }

    /// Inputs read from a manifest not written in order (by hand), or naming a path twice,
    /// come out sorted and once, as a map would hold them: the fingerprint and the diffs
    /// walk them in order.
    #[test]
    fn inputs_are_kept_sorted_and_once_however_they_are_read() {
        let digest = |n: u8| format!("{:02x}", n).repeat(32);
        let json = format!(
            r#"{{"b": "{}", "a": "{}", "c": "{}", "a": "{}"}}"#,
            digest(2),
            digest(1),
            digest(3),
            digest(9)
        );
        let read: InputDigests = serde_json::from_str(&json).unwrap();
        let paths: Vec<&str> = read.0.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["a", "b", "c"]);
        assert_eq!(read.get("a"), Some(&InputDigest([9; 32])));
        assert_eq!(read.get("d"), None);
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            format!(
                r#"{{"a":"{}","b":"{}","c":"{}"}}"#,
                digest(9),
                digest(2),
                digest(3)
            )
        );
    }

    /// Keys on either side of each other, at both ends: added and changed in order, then
    /// the removed ones in order.
    #[test]
    fn a_diff_names_every_key_once() {
        let map = |keys: &[(&str, u8)]| -> BTreeMap<String, u8> {
            keys.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        let before = map(&[("a", 1), ("b", 1), ("c", 1), ("e", 1), ("g", 1)]);
        let after = map(&[("b", 2), ("c", 1), ("d", 1), ("g", 1), ("h", 1)]);
        let mut out = Vec::new();
        diff(&mut out, "input", &before, &after);
        assert_eq!(
            out,
            [
                "input `b` changed",
                "input `d` was added",
                "input `h` was added",
                "input `a` was removed",
                "input `e` was removed"
            ]
        );
    }

    #[test]
    fn changes_are_named() {
        let before = manifest();
        let mut after = manifest();
        after
            .inputs
            .insert("src/a.rs".into(), InputDigest([0x11; 32]));
        after
            .inputs
            .insert("src/new.rs".into(), InputDigest([0xcc; 32]));
        after.env.remove("A");
        assert_eq!(
            after.changes_since(&before),
            [
                "input `src/a.rs` changed",
                "input `src/new.rs` was added",
                "env `A` was removed"
            ]
        );
    }
}
