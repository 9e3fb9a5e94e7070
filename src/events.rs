//! The event log: what other systems told `murphy serve` through their webhooks, appended as
//! JSON lines to `<state>/events.jsonl`, each line's SHA-256 digest covering the line before
//! it (a hash chain), so an edited, removed or reordered entry is found by [`verify`].
//!
//! **Invariant:** the log is only ever appended to, one whole line per `write`, by one writer
//! at a time (`events.lock`). A torn last line (a kill mid-write) is skipped by readers and
//! closed off with a newline before the next append, as in the run journal.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Format version of each event line.
pub const EVENT_VERSION: u32 = 1;

/// The digest the first entry's `prev` holds.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("cannot read the event log `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot append to the event log `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another `murphy serve` writes the event log `{}`", path.display())]
    Busy { path: PathBuf },
}

/// What a provider said, reduced to what links it to a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// `github`, `gitlab` or `azure-devops`.
    pub provider: String,
    /// The provider's id of the delivery (redeliveries share it).
    pub delivery: String,
    /// `push`, `pr_opened`, `pr_merged`, `pr_closed`, `pr_updated`, `pipeline`, `release`
    /// or `other`.
    pub kind: String,
    /// The provider's own name of the event (`pull_request`, `Pipeline Hook`, ...).
    pub event: String,
    pub commit: Option<String>,
    /// The branch or tag.
    pub reference: Option<String>,
    pub pr: Option<String>,
    /// A pipeline's or build's state, as the provider words it.
    pub status: Option<String>,
    pub title: Option<String>,
    pub url: Option<String>,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub v: u32,
    /// 1 for the first entry, one more for each after it.
    pub seq: u64,
    pub at: Timestamp,
    #[serde(flatten)]
    pub fact: Fact,
    /// The digest of the entry before (or [`GENESIS`]).
    pub prev: String,
    /// SHA-256 over `prev` and this entry without its digest.
    pub digest: String,
}

impl Entry {
    /// The digest this entry must carry: over its content with `digest` left empty.
    pub fn expected_digest(&self) -> String {
        let mut bare = self.clone();
        bare.digest = String::new();
        let bytes = serde_json::to_vec(&bare).unwrap_or_default();
        let mut hasher = Sha256::new();
        hasher.update(&bytes);
        crate::fingerprint::hex(&hasher.finalize())
    }
}

/// The log's file in a state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("events.jsonl")
}

/// The one writer of a log: it holds `events.lock` while it lives, and remembers the last
/// digest and every delivery seen, so a redelivery is not written twice.
pub struct EventLog {
    path: PathBuf,
    file: File,
    _lock: File,
    last: (u64, String),
    seen: HashSet<(String, String)>,
}

impl EventLog {
    /// Opens the log of `state_dir` for appending; fails when another process writes it.
    pub fn open(state_dir: &Path) -> Result<EventLog, EventsError> {
        let path = path(state_dir);
        let write = |source| EventsError::Write {
            path: path.clone(),
            source,
        };
        crate::atomic_file::private_dir(state_dir).map_err(write)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(state_dir.join("events.lock"))
            .map_err(write)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(EventsError::Busy { path: path.clone() });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(write(e)),
        }
        let mut file = OpenOptions::new()
            .create(true)
            .mode(0o600)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(write)?;
        let len = file.metadata().map_err(write)?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1)).map_err(write)?;
            file.read_exact(&mut last).map_err(write)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(write)?;
            }
        }
        let entries = read(&path)?;
        let last = entries
            .last()
            .map(|e| (e.seq, e.digest.clone()))
            .unwrap_or_else(|| (0, GENESIS.to_owned()));
        let seen = entries
            .into_iter()
            .map(|e| (e.fact.provider, e.fact.delivery))
            .collect();
        Ok(EventLog {
            path,
            file,
            _lock: lock,
            last,
            seen,
        })
    }

    /// Whether a delivery of `provider` is in the log already.
    pub fn has(&self, provider: &str, delivery: &str) -> bool {
        self.seen
            .contains(&(provider.to_owned(), delivery.to_owned()))
    }

    /// Appends `fact` unless its delivery is there already; returns the entry written. The
    /// line is synced: the provider hears "taken" only once it would survive a power cut.
    pub fn append(&mut self, fact: Fact) -> Result<Option<Entry>, EventsError> {
        if self.has(&fact.provider, &fact.delivery) {
            return Ok(None);
        }
        let mut entry = Entry {
            v: EVENT_VERSION,
            seq: self.last.0 + 1,
            at: Timestamp::now(),
            fact: redacted(fact),
            prev: self.last.1.clone(),
            digest: String::new(),
        };
        entry.digest = entry.expected_digest();
        let mut line = serde_json::to_vec(&entry).map_err(|e| EventsError::Write {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        line.push(b'\n');
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            // Half a line may be there: close it off so the next entry starts whole.
            let _ = self.file.write_all(b"\n");
            return Err(EventsError::Write {
                path: self.path.clone(),
                source,
            });
        }
        self.last = (entry.seq, entry.digest.clone());
        self.seen
            .insert((entry.fact.provider.clone(), entry.fact.delivery.clone()));
        Ok(Some(entry))
    }
}

fn redacted(mut fact: Fact) -> Fact {
    for text in [&mut fact.title, &mut fact.url, &mut fact.reference]
        .into_iter()
        .flatten()
    {
        *text = crate::secrets::redact(text).into_owned();
    }
    fact
}

/// One line of the log as read: its number and the entry, or why it is not one.
type Line = (usize, Result<Entry, String>);

fn lines(path: &Path) -> Result<Vec<Line>, EventsError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(EventsError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut bytes = Vec::new();
    BufReader::new(file)
        .read_to_end(&mut bytes)
        .map_err(|source| EventsError::Read {
            path: path.to_owned(),
            source,
        })?;
    let complete = bytes.ends_with(b"\n");
    let mut out = Vec::new();
    let parts: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let count = parts.len();
    for (i, line) in parts.into_iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = serde_json::from_slice::<Entry>(line).map_err(|e| e.to_string());
        // A last line without its newline that does not parse was torn by a kill.
        if parsed.is_err() && i + 1 == count && !complete {
            tracing::debug!("{}:{}: skipping a torn last line", path.display(), i + 1);
            continue;
        }
        out.push((i + 1, parsed));
    }
    Ok(out)
}

/// Every entry of the log, in order; lines that do not read are skipped (`verify` names them).
pub fn read(path: &Path) -> Result<Vec<Entry>, EventsError> {
    Ok(lines(path)?
        .into_iter()
        .filter_map(|(_, e)| e.ok())
        .filter(|e| e.v == EVENT_VERSION)
        .collect())
}

/// What [`verify`] found: how many entries hold, and the first that does not.
#[derive(Debug, Serialize)]
pub struct Verified {
    pub entries: usize,
    pub first_bad: Option<Bad>,
}

#[derive(Debug, Serialize)]
pub struct Bad {
    /// The line of the log.
    pub line: usize,
    /// The entry's `seq`, when the line reads.
    pub seq: Option<u64>,
    pub problem: String,
}

/// Walks the chain: each entry's digest must be its own, its `prev` the digest before it and
/// its `seq` one more than the one before. A line that does not read is a torn write closed
/// off by the next writer, unless the chain breaks right after it: then it is the bad one.
pub fn verify(path: &Path) -> Result<Verified, EventsError> {
    let mut prev = (0u64, GENESIS.to_owned());
    let mut entries = 0;
    let mut unreadable: Option<(usize, String)> = None;
    for (line, entry) in lines(path)? {
        let bad = |line, seq, problem: String| {
            Ok(Verified {
                entries,
                first_bad: Some(Bad { line, seq, problem }),
            })
        };
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                unreadable.get_or_insert((line, err));
                continue;
            }
        };
        if entry.v != EVENT_VERSION {
            return bad(
                line,
                Some(entry.seq),
                format!("format version {} is not {EVENT_VERSION}", entry.v),
            );
        }
        if entry.digest != entry.expected_digest() {
            return bad(
                line,
                Some(entry.seq),
                "its digest does not match its content: the entry was edited".into(),
            );
        }
        if entry.prev != prev.1 {
            if let Some((at, err)) = unreadable {
                return bad(at, None, format!("the line is not an entry: {err}"));
            }
            return bad(
                line,
                Some(entry.seq),
                "it does not follow the entry before it: an entry was removed or moved".into(),
            );
        }
        if entry.seq != prev.0 + 1 {
            return bad(
                line,
                Some(entry.seq),
                format!("its seq {} should be {}", entry.seq, prev.0 + 1),
            );
        }
        unreadable = None;
        prev = (entry.seq, entry.digest.clone());
        entries += 1;
    }
    Ok(Verified {
        entries,
        first_bad: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(delivery: &str) -> Fact {
        Fact {
            provider: "github".into(),
            delivery: delivery.into(),
            kind: "push".into(),
            event: "push".into(),
            commit: Some("abc".into()),
            reference: Some("main".into()),
            pr: None,
            status: None,
            title: Some("a change".into()),
            url: None,
        }
    }

    #[test]
    fn a_chain_verifies_and_a_torn_last_line_is_skipped_then_closed_off() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = EventLog::open(dir.path()).unwrap();
            assert!(log.append(fact("1")).unwrap().is_some());
            assert!(log.append(fact("1")).unwrap().is_none(), "a redelivery");
            assert!(log.append(fact("2")).unwrap().is_some());
        }
        let file = path(dir.path());
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(br#"{"v":1,"seq":3,"at":"#).unwrap();
        let verified = verify(&file).unwrap();
        assert_eq!(verified.entries, 2);
        assert!(verified.first_bad.is_none());
        let mut log = EventLog::open(dir.path()).unwrap();
        assert!(log.has("github", "2"));
        let third = log.append(fact("3")).unwrap().unwrap();
        assert_eq!(third.seq, 3);
        let verified = verify(&file).unwrap();
        assert_eq!(verified.entries, 3, "{:?}", verified.first_bad);
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _log = EventLog::open(dir.path()).unwrap();
        assert!(matches!(
            EventLog::open(dir.path()),
            Err(EventsError::Busy { .. })
        ));
    }
}
