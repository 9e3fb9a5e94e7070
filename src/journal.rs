//! The run journal: an append-only file of JSON lines, one event each.
//!
//! **Invariant:** the journal is the only source of truth for what happened in a run; every
//! view of a run (`status`, `runs`, resume) is a replay of it. A record survives kill -9 once
//! its `write` returned; a torn last line (murphy killed mid-write) is skipped on reading,
//! never fatal. Records are not fsynced one by one: a run's end and its confirmed
//! publications are, with the run's folder (see ARCHITECTURE.md, "Crash safety").

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Format version of each journal line. A reader skips lines of a version it does not know.
pub const JOURNAL_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    pub at: Timestamp,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The first record; what the run was asked to do is in its `meta.json`.
    RunStarted { run_id: String, pid: u32 },
    /// A run picked up again by `murphy resume`, by the murphy with this pid.
    RunResumed { pid: u32 },
    StageStarted {
        stage: String,
        attempt: u32,
        /// Why the stage runs rather than being restored (first attempt only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// A stage whose fingerprint had a verified checkpoint: not run, outputs restored.
    StageCached {
        stage: String,
        fingerprint: String,
        output_digest: String,
        /// Output files, links and directories copied back into the workspace.
        restored: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// A stage that succeeded before the run was resumed, checked again on resume: same
    /// fingerprint, outputs verified against what it produced (and restored where they were
    /// missing or different). It keeps its state; a changed stage runs again instead.
    StageRechecked {
        stage: String,
        fingerprint: String,
        output_digest: String,
        /// Output files, links and directories copied back into the workspace.
        restored: usize,
    },
    StageFinished {
        stage: String,
        attempt: u32,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        duration_ms: u64,
        /// Why the stage failed when no exit code says it (it could not start, say).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<String>,
        /// The digest of the stage's outputs, on success: what its dependents build on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_digest: Option<String>,
    },
    /// A publication the server confirmed (fsynced at once: a release never publishes twice).
    Published {
        stage: String,
        target: String,
        file: String,
        digest: String,
        outcome: crate::publish::Confirmed,
    },
    /// An archiving stage made (or, resumed, found) its build.
    Archived {
        stage: String,
        build: u64,
        path: String,
    },
    StageSkipped {
        stage: String,
        reason: String,
        /// Skipped by its own `when:`, not because of another stage.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        when: bool,
    },
    RunFinished {
        status: RunStatus,
        /// Files read again because the stat cache could not vouch for them: why a run that
        /// changed nothing can still be slow.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rehashed: Option<u64>,
    },
}

impl Event {
    /// The event with secrets masked in its free text (messages, reasons). Names and digests
    /// are left alone: masking a stage that happens to share a secret's value would corrupt
    /// the record, and they come from the pipeline file, not from secrets.
    fn redacted(mut self) -> Event {
        let mask = |text: &mut String| {
            if let std::borrow::Cow::Owned(masked) = crate::secrets::redact(text) {
                *text = masked;
            }
        };
        match &mut self {
            Event::StageStarted {
                why: Some(text), ..
            }
            | Event::StageFinished {
                message: Some(text),
                ..
            }
            | Event::StageCached {
                note: Some(text), ..
            }
            | Event::StageSkipped { reason: text, .. } => mask(text),
            _ => {}
        }
        self
    }
}

/// How one attempt of a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Interrupted,
}

/// How a run ended, as recorded in its last journal line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    Interrupted,
}

/// A journal open for appending. Shared by the stages of a run; each append is one
/// `write` of one whole line, so lines from concurrent stages never interleave.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// The file, and whether a failed write (a full disk) may have left half a line.
    file: Mutex<(File, bool)>,
    /// The sync of the run's `meta.json` and of the folders naming the journal, started when
    /// the journal was opened; `None` once it has been waited for and succeeded.
    folder: Mutex<Option<FolderSync>>,
}

/// The folder sync: on a thread of its own while the first stages run, so the run's last sync
/// waits for one flush (the journal's) instead of four in a row (1.3 vs 2.7 ms on ext4).
#[derive(Debug)]
enum FolderSync {
    Started(std::thread::JoinHandle<io::Result<()>>),
    /// No thread could be started: the sync runs when it is needed.
    Due,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` for appending. A torn last line
    /// left by a kill is closed off first, so the next record does not glue onto it.
    pub fn open(path: &Path) -> io::Result<Journal> {
        let mut file = OpenOptions::new()
            .create(true)
            .mode(0o600)
            .read(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        let run = path.parent().map(Path::to_owned);
        let folder = match std::thread::Builder::new()
            .name("sync-run-folder".into())
            .spawn(move || run.as_deref().map_or(Ok(()), sync_run_folder))
        {
            Ok(thread) => FolderSync::Started(thread),
            Err(_) => FolderSync::Due,
        };
        Ok(Journal {
            path: path.to_owned(),
            file: Mutex::new((file, false)),
            folder: Mutex::new(Some(folder)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&self, event: Event) -> io::Result<()> {
        let event = event.redacted();
        let record = Record {
            v: JOURNAL_VERSION,
            at: Timestamp::now(),
            event,
        };
        let mut line = serde_json::to_vec(&record).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let (file, torn) = &mut *guard;
        if crate::crash::tear_journal_append() {
            let _ = file.write_all(&line[..line.len() / 2]);
            crate::crash::die();
        }
        if *torn {
            line.insert(0, b'\n');
        }
        let written = file.write_all(&line);
        *torn = written.is_err();
        written
    }

    /// Makes every record appended so far survive a power cut. The first time, it also waits
    /// for the sync of the run's `meta.json` and of the folders that name the journal, which
    /// [`Journal::open`] started: a run is made without fsyncs, so a power cut before that
    /// sync ends may lose the run whole, and one after it leaves its folder whole (its records
    /// as far as they were synced).
    pub fn sync(&self) -> io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .sync_data()?;
        let mut folder = self.folder.lock().unwrap_or_else(|e| e.into_inner());
        let synced = match folder.take() {
            None => return Ok(()),
            Some(FolderSync::Started(thread)) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the folder sync panicked"))),
            Some(FolderSync::Due) => self.path.parent().map_or(Ok(()), sync_run_folder),
        };
        // A failed sync is tried again by the next call, not taken for done.
        if synced.is_err() {
            *folder = Some(FolderSync::Due);
        }
        synced
    }
}

/// Syncs a run's `meta.json`, its folder, and the folder of runs that names it.
fn sync_run_folder(run: &Path) -> io::Result<()> {
    match File::open(run.join("meta.json")) {
        Ok(meta) => meta.sync_all()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    crate::atomic_file::sync_dir(run)?;
    if let Some(runs) = run.parent() {
        crate::atomic_file::sync_dir(runs)?;
    }
    Ok(())
}

/// Reads every intact record of a journal. A line that does not parse (torn by a kill,
/// or written by a newer murphy) is skipped with a debug message; nothing else is lost.
pub fn read(path: &Path) -> io::Result<Vec<Record>> {
    let reader = BufReader::new(File::open(path)?);
    let mut records = Vec::new();
    for (number, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(record) if record.v == JOURNAL_VERSION => records.push(record),
            Ok(record) => tracing::debug!(
                "{}:{}: skipping a record of journal version {}",
                path.display(),
                number + 1,
                record.v
            ),
            Err(err) => tracing::debug!(
                "{}:{}: skipping an unreadable record: {err}",
                path.display(),
                number + 1
            ),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let journal = Journal::open(&path).unwrap();
        journal
            .append(Event::StageStarted {
                stage: "a".into(),
                attempt: 1,
                why: None,
            })
            .unwrap();
        journal
            .append(Event::StageSkipped {
                stage: "b".into(),
                reason: "x".into(),
                when: false,
            })
            .unwrap();
        // A kill in the middle of a write leaves a prefix of a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"v":1,"at":"2026-11-22T00:00:00Z","event":"stage_fin"#)
            .unwrap();
        let records = read(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[1].event,
            Event::StageSkipped {
                stage: "b".into(),
                reason: "x".into(),
                when: false,
            }
        );
        // Reopening closes the torn line off, so the next record is whole.
        let journal = Journal::open(&path).unwrap();
        journal
            .append(Event::RunFinished {
                status: RunStatus::Failed,
                rehashed: None,
            })
            .unwrap();
        let records = read(&path).unwrap();
        assert_eq!(records.len(), 3);
        assert!(matches!(records[2].event, Event::RunFinished { .. }));
    }

    #[test]
    fn the_first_sync_waits_for_the_folder_sync_and_later_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join("meta.json"), "{}").unwrap();
        let journal = Journal::open(&run.join("journal.jsonl")).unwrap();
        assert!(journal.folder.lock().unwrap().is_some());
        journal.sync().unwrap();
        assert!(journal.folder.lock().unwrap().is_none());
        journal.sync().unwrap();
    }
}
