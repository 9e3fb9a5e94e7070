//! Runs on the shared store: each run's meta, journal and logs pushed as it goes, and pulled
//! into the local state directory by any machine that lists, shows or resumes it.
//!
//! ```text
//! <url>/runs/<run-id>/meta.json                            written once
//! <url>/runs/<run-id>/journal/<byte offset, 016>.jsonl     whole journal lines from that offset
//! <url>/runs/<run-id>/logs/<stage>.log                     replaced as it grows
//! <url>/runs/<run-id>/lease                                held by the machine running it
//! ```
//!
//! **Invariant:** a journal segment is created only if absent (never rewritten), holds whole
//! lines, and starts where the one before it ends, so the segments in order are a byte prefix
//! of the journal of the machine that wrote them. A machine that finds its offset taken by
//! other bytes stops replicating the run rather than fork it.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::{Path as Key, PathPart};

use super::lease::{Lease, Taken};
use super::{Remote, RemoteError};
use crate::records::{META_VERSION, RunDir, RunMeta, RunState, RunView, StateDir};

/// How long a machine's hold on a run lasts unless renewed (every third of it): a machine
/// killed with -9 blocks a resume elsewhere for at most this long.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// How often new journal lines (and, when they moved, the logs) are pushed while a run goes on.
const TICK: Duration = Duration::from_secs(1);

/// A run another machine holds.
#[derive(Debug, thiserror::Error)]
#[error(
    "run {run} is being run by {holder} (its lease on the shared store ends at {until} unless renewed); try again when it has finished or its lease has ended"
)]
pub struct Leased {
    pub run: String,
    pub holder: String,
    /// When the lease ends, to the second, in UTC.
    pub until: String,
}

fn run_prefix(remote: &Remote, run_id: &str) -> Key {
    remote.shared("runs").join(PathPart::from(run_id))
}

fn meta_key(remote: &Remote, run_id: &str) -> Key {
    run_prefix(remote, run_id).join("meta.json")
}

fn segment_key(remote: &Remote, run_id: &str, offset: u64) -> Key {
    run_prefix(remote, run_id)
        .join("journal")
        .join(format!("{offset:016}.jsonl"))
}

fn log_key(remote: &Remote, run_id: &str, stage: &str) -> Key {
    run_prefix(remote, run_id)
        .join("logs")
        .join(PathPart::from(format!("{stage}.log")))
}

/// A run id another machine wrote is used as a folder name: only what murphy makes passes.
fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// A stage name from the store becomes a log file name: nothing that leaves the folder.
fn safe_stage(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// What the store holds of one run, from one listing.
#[derive(Debug, Default)]
struct Listed {
    meta: bool,
    /// Journal segments: offset, key, size; sorted by offset.
    segments: Vec<(u64, Key, u64)>,
    /// Every other object's size, by key.
    sizes: BTreeMap<String, u64>,
}

impl Listed {
    /// Where the store's journal ends: the end of the last of its contiguous segments.
    fn journal_end(&self) -> u64 {
        let mut end = 0;
        for (offset, _, size) in &self.segments {
            if *offset != end {
                break;
            }
            end += size;
        }
        end
    }
}

/// Lists the objects below `runs/`, by run id.
async fn list(
    remote: &Remote,
    only: Option<&str>,
) -> Result<BTreeMap<String, Listed>, RemoteError> {
    let prefix = match only {
        Some(id) => run_prefix(remote, id),
        None => remote.shared("runs"),
    };
    let base = remote.shared("runs");
    let mut runs: BTreeMap<String, Listed> = BTreeMap::new();
    for object in remote.list(&prefix).await? {
        let Some(parts) = object.location.prefix_match(&base) else {
            continue;
        };
        let parts: Vec<PathPart<'_>> = parts.collect();
        let [id, rest @ ..] = parts.as_slice() else {
            continue;
        };
        let listed = runs.entry(id.as_ref().to_owned()).or_default();
        match rest {
            [name] if name.as_ref() == "meta.json" => listed.meta = true,
            [dir, name] if dir.as_ref() == "journal" => {
                let offset = name
                    .as_ref()
                    .strip_suffix(".jsonl")
                    .filter(|n| n.len() == 16 && n.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|n| n.parse::<u64>().ok());
                match offset {
                    Some(offset) => {
                        listed
                            .segments
                            .push((offset, object.location.clone(), object.size))
                    }
                    None => tracing::debug!("ignoring `{}` in the shared store", object.location),
                }
            }
            _ => {
                listed
                    .sizes
                    .insert(object.location.to_string(), object.size);
            }
        }
    }
    for listed in runs.values_mut() {
        listed.segments.sort_by_key(|s| s.0);
    }
    Ok(runs)
}

/// Brings runs recorded by other machines into `state`: those missing here and those not
/// finished here (another machine may have resumed them), or only run `only`. A damaged run
/// is said and skipped; the others still come. Returns how many runs were brought up to date.
pub async fn pull(
    remote: &Remote,
    state: &StateDir,
    only: Option<&str>,
) -> Result<usize, RemoteError> {
    let mut pulled = 0;
    for (id, listed) in list(remote, only).await? {
        if !safe_id(&id) {
            tracing::warn!("ignoring run `{id}` in the shared store: not a murphy run id");
            continue;
        }
        let local = state.recorded_run(&id);
        if let Some(dir) = &local
            && RunView::load(state, dir).is_ok_and(|v| v.status == RunState::Succeeded)
        {
            continue;
        }
        match pull_run(remote, state, &id, &listed, local).await {
            Ok(true) => pulled += 1,
            Ok(false) => {}
            Err(err @ RemoteError::Request { .. }) => return Err(err),
            Err(err) => tracing::warn!(
                "skipping run {id} from the shared store: {}",
                crate::causes::line(&err)
            ),
        }
    }
    Ok(pulled)
}

/// Brings one run's meta (if it has no folder here, `local_dir`), the journal segments that
/// follow what the local journal holds, and the logs that grew. Whether anything changed.
async fn pull_run(
    remote: &Remote,
    state: &StateDir,
    id: &str,
    listed: &Listed,
    local_dir: Option<RunDir>,
) -> Result<bool, RemoteError> {
    if !listed.meta {
        // Being created, or lost: nothing to show without what the run was asked to do.
        return Ok(false);
    }
    let damaged = |problem: String| RemoteError::Damaged {
        what: format!("run {id}"),
        problem,
    };
    let local = RemoteError::local;
    let mut changed = false;
    let dir = match local_dir {
        Some(dir) => dir,
        None => {
            let Some(bytes) = remote.get(&meta_key(remote, id)).await? else {
                return Ok(false);
            };
            let meta: RunMeta = serde_json::from_slice(&bytes)
                .map_err(|e| damaged(format!("its meta.json does not parse: {e}")))?;
            if meta.v != META_VERSION || meta.run_id != id {
                return Err(damaged(format!(
                    "its meta.json is for run `{}`, format version {}",
                    meta.run_id, meta.v
                )));
            }
            if let Some(bad) = meta.params.stages.iter().find(|s| !safe_stage(s)) {
                return Err(damaged(format!("its meta.json names a stage `{bad}`")));
            }
            let dir = state
                .make_run_dir(id)
                .map_err(|e| damaged(crate::causes::line(&e)))?;
            // Before the meta: a run folder with a meta and no mark would pass for this
            // machine's own.
            let mark = dir.path.join(crate::records::PULLED);
            std::fs::write(&mark, b"").map_err(local(&mark))?;
            let meta_path = dir.meta_path();
            crate::atomic_file::write(&meta_path, &bytes).map_err(local(&meta_path))?;
            changed = true;
            dir
        }
    };
    let journal_path = dir.journal_path();
    let mut at = std::fs::metadata(&journal_path).map_or(0, |m| m.len());
    for (offset, key, size) in &listed.segments {
        if offset + size <= at {
            continue;
        }
        if *offset != at {
            tracing::warn!(
                "run {id}: the shared journal goes on from byte {offset}, the local one ends at byte {at}; keeping the local one"
            );
            break;
        }
        let Some(bytes) = remote.get(key).await? else {
            break;
        };
        if bytes.len() as u64 != *size || !bytes.ends_with(b"\n") {
            return Err(damaged(format!(
                "its journal segment `{key}` is not whole lines of the size listed"
            )));
        }
        // Appended as one write of whole lines, like the journal's own appends.
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&journal_path)
            .map_err(local(&journal_path))?;
        file.write_all(&bytes).map_err(local(&journal_path))?;
        at += size;
        changed = true;
    }
    let view = RunView::load(state, &dir).map_err(|e| damaged(crate::causes::line(&e)))?;
    for stage in view.stages.iter().map(|s| s.name.as_str()) {
        let key = log_key(remote, id, stage);
        let Some(&size) = listed.sizes.get(key.as_ref()) else {
            continue;
        };
        if !safe_stage(stage) {
            continue;
        }
        let path = dir.log_path(stage);
        if std::fs::metadata(&path).map_or(0, |m| m.len()) >= size {
            continue;
        }
        if let Some(bytes) = remote.get(&key).await? {
            crate::atomic_file::write(&path, &bytes).map_err(local(&path))?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Pushes one run's records to the shared store, keeping track of what is there.
#[derive(Debug)]
pub struct Replicator {
    remote: Remote,
    run: RunDir,
    /// Whether what the store holds of the run was looked up.
    ready: bool,
    /// Bytes of the local journal the store holds.
    pushed: u64,
    /// Size of each stage log the store holds, by file name.
    logs: BTreeMap<String, u64>,
    /// The journal moved since the logs were last pushed.
    logs_due: bool,
    /// Another machine writes this run: nothing more is pushed.
    stopped: bool,
}

impl Replicator {
    /// Replicates `run`; nothing is asked of the store until the first flush, so a store
    /// that is away costs tries, not the run.
    pub fn new(remote: Remote, run: RunDir) -> Replicator {
        Replicator {
            remote,
            run,
            ready: false,
            pushed: 0,
            logs: BTreeMap::new(),
            logs_due: true,
            stopped: false,
        }
    }

    /// Pushes the run's meta unless the store has it, and finds what the store holds of its
    /// journal and logs, so only what is new is pushed (all of it, to a store that lost it).
    /// A journal there that is not a prefix of the local one means another machine wrote the
    /// run: said, and nothing is pushed.
    async fn prepare(&mut self) -> Result<(), RemoteError> {
        let (remote, id) = (&self.remote, self.run.id.as_str());
        let meta_path = self.run.meta_path();
        let meta = std::fs::read(&meta_path).map_err(|source| RemoteError::Local {
            path: meta_path,
            source,
        })?;
        let key = meta_key(remote, id);
        if !remote.create(&key, Bytes::from(meta.clone())).await?
            && remote.get(&key).await?.is_some_and(|there| there != meta)
        {
            self.stop("the shared store holds another run's meta.json under its id");
            return Ok(());
        }
        let listed = list(remote, Some(id)).await?.remove(id).unwrap_or_default();
        let end = listed.journal_end();
        if let Some((offset, key, _)) = listed.segments.iter().rfind(|s| s.0 + s.2 == end) {
            let there = remote.get(key).await?.unwrap_or_default();
            if local_bytes(&self.run, *offset, Some(end)).ok().as_deref() != Some(&there[..]) {
                self.stop("its journal on the shared store differs from the local one");
                return Ok(());
            }
        }
        let logs_prefix = format!("{}/", run_prefix(remote, id).join("logs"));
        self.logs = listed
            .sizes
            .iter()
            .filter_map(|(key, size)| Some((key.strip_prefix(&logs_prefix)?.to_owned(), *size)))
            .collect();
        self.pushed = end;
        self.ready = true;
        Ok(())
    }

    fn stop(&mut self, why: &str) {
        tracing::warn!(
            "run {} is no longer shared: {why}; another machine writes it",
            self.run.id
        );
        self.stopped = true;
    }

    /// Pushes the journal's new whole lines as one segment, and every log that changed.
    pub async fn flush(&mut self) -> Result<(), RemoteError> {
        if !self.ready && !self.stopped {
            self.prepare().await?;
        }
        if self.stopped {
            return Ok(());
        }
        let new =
            local_bytes(&self.run, self.pushed, None).map_err(|source| RemoteError::Local {
                path: self.run.journal_path(),
                source,
            })?;
        if let Some(last) = new.iter().rposition(|&b| b == b'\n') {
            let segment = Bytes::copy_from_slice(&new[..=last]);
            let key = segment_key(&self.remote, &self.run.id, self.pushed);
            // A create whose answer was lost may have worked: the same bytes there are ours.
            if !self.remote.create(&key, segment.clone()).await?
                && self.remote.get(&key).await?.as_ref() != Some(&segment)
            {
                self.stop("another machine appended to its journal");
                return Ok(());
            }
            self.pushed += segment.len() as u64;
            self.logs_due = true;
        }
        if self.logs_due {
            self.push_logs().await?;
            self.logs_due = false;
        }
        Ok(())
    }

    /// Pushes every log that changed. Only after the journal moved (a stage started or
    /// ended, the run ended): a long stage's growing log is not uploaded again every second.
    async fn push_logs(&mut self) -> Result<(), RemoteError> {
        let logs = self.run.path.join("logs");
        let entries = match std::fs::read_dir(&logs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(RemoteError::Local { path: logs, source }),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stage) = name.strip_suffix(".log") else {
                continue;
            };
            let Ok(size) = entry.metadata().map(|m| m.len()) else {
                continue;
            };
            let key = log_key(&self.remote, &self.run.id, stage);
            let file = key.filename().unwrap_or_default().to_owned();
            if self.logs.get(&file) == Some(&size) {
                continue;
            }
            self.remote.upload(&entry.path(), &key).await?;
            self.logs.insert(file, size);
        }
        Ok(())
    }
}

/// The local journal's bytes from `from` to `to` (or its end): fewer if it ends before.
fn local_bytes(run: &RunDir, from: u64, to: Option<u64>) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(run.journal_path())?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    match to {
        Some(to) => file.take(to.saturating_sub(from)).read_to_end(&mut bytes)?,
        None => file.read_to_end(&mut bytes)?,
    };
    Ok(bytes)
}

/// This machine's name, for lease holders.
fn host() -> String {
    let mut name = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    if unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) } != 0 {
        return "an unnamed host".to_owned();
    }
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}

fn holder(host: &str, pid: u32) -> String {
    format!("{host} (pid {pid})")
}

/// Whether `holder` names a process of this machine that is gone: killed here, its lease
/// need not be waited out here.
fn dead_here(holder: &str) -> bool {
    let Some(pid) = holder
        .strip_prefix(&format!("{} (pid ", host()))
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|pid| pid.parse::<libc::pid_t>().ok())
        .filter(|&pid| pid > 0)
    else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists.
    let refused = unsafe { libc::kill(pid, 0) } != 0;
    refused && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Takes the lease on run `id` for `ttl`, or says who holds it. A lease left by a process of
/// this machine that is gone (a kill -9 here) is taken over at once.
pub async fn take_lease(
    remote: &Remote,
    id: &str,
    ttl: Duration,
) -> Result<Result<Lease, Leased>, RemoteError> {
    let key = run_prefix(remote, id).join("lease");
    let me = holder(&host(), std::process::id());
    let mut taken = Lease::take(remote, key.clone(), &me, ttl).await?;
    if let Taken::Held(held) = &taken
        && dead_here(&held.holder)
    {
        remote.delete(&key).await?;
        taken = Lease::take(remote, key, &me, ttl).await?;
    }
    Ok(match taken {
        Taken::Yes(lease) => Ok(lease),
        Taken::Held(held) => Err(Leased {
            run: id.to_owned(),
            holder: held.holder,
            until: held.expires.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        }),
    })
}

/// A run being replicated in the background (and its lease renewed) while it goes on.
pub struct Replicating {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(Replicator, Option<Lease>)>,
}

impl Replicating {
    /// Pushes what is new every second, and renews `lease` every third of its length.
    pub fn start(replicator: Replicator, lease: Option<Lease>) -> Replicating {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let (mut replicator, mut lease) = (replicator, lease);
            let mut tick = tokio::time::interval(TICK);
            let every = lease.as_ref().map_or(LEASE_TTL, Lease::renew_every);
            let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {
                        // Tried again next tick; the final flush says it if it still fails.
                        if let Err(err) = replicator.flush().await {
                            tracing::debug!("cannot push the run yet: {}", crate::causes::line(&err));
                        }
                    }
                    _ = renew.tick(), if lease.is_some() => {
                        if let Some(held) = lease.as_mut() {
                            match held.renew().await {
                                Ok(true) => {}
                                Ok(false) => {
                                    tracing::warn!(
                                        "lost the lease on run {} to another machine",
                                        replicator.run.id
                                    );
                                    lease = None;
                                }
                                Err(err) => tracing::debug!(
                                    "cannot renew the run's lease yet: {}",
                                    crate::causes::line(&err)
                                ),
                            }
                        }
                    }
                }
            }
            (replicator, lease)
        });
        Replicating { stop, task }
    }

    /// Pushes what the run left, then gives its lease up. A push that fails is said: what the
    /// store lacks is pushed by the next `murphy resume` of the run, or the next run's start.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let Ok((mut replicator, lease)) = self.task.await else {
            return;
        };
        if let Err(err) = replicator.flush().await {
            tracing::warn!(
                "run {} could not be pushed whole to the shared store ({}); `murphy resume {}` pushes what it lacks",
                replicator.run.id,
                crate::causes::line(&err),
                replicator.run.id
            );
        }
        if let Some(lease) = lease
            && let Err(err) = lease.release().await
        {
            tracing::debug!(
                "cannot release the run's lease (it expires by itself): {}",
                crate::causes::line(&err)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Event, Journal};
    use crate::records::RunParams;

    /// A store in a temp dir, and a run recorded in a state dir of its own.
    fn setup() -> (tempfile::TempDir, Remote, StateDir, RunDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let url = super::super::StoreUrl::parse(&format!("file://{}/store", dir.path().display()))
            .unwrap();
        let remote = Remote::open(&url, &BTreeMap::new()).unwrap();
        let state = StateDir::new(dir.path().join("a"));
        let params = RunParams {
            stages: vec!["build".into()],
            ..RunParams::default()
        };
        let (run, _, journal) = state
            .create_run(
                "p",
                std::path::Path::new("pipeline.yml"),
                crate::change::Change::local(),
                params,
            )
            .unwrap();
        (dir, remote, state, run, journal)
    }

    fn started(journal: &Journal, attempt: u32) {
        journal
            .append(Event::StageStarted {
                stage: "build".into(),
                attempt,
                why: None,
            })
            .unwrap();
    }

    #[tokio::test]
    async fn segments_pushed_as_they_come_are_pulled_into_the_same_journal() {
        let (dir, remote, _, run, journal) = setup();
        let mut replicator = Replicator::new(remote.clone(), run.clone());
        started(&journal, 1);
        replicator.flush().await.unwrap();
        std::fs::write(run.log_path("build"), "$ make\n").unwrap();
        started(&journal, 2);
        // Half a line (a write in progress) is left for the next segment.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(run.journal_path())
            .unwrap();
        file.write_all(br#"{"v":1,"at":"2026-"#).unwrap();
        replicator.flush().await.unwrap();
        let listed = list(&remote, Some(&run.id))
            .await
            .unwrap()
            .remove(&run.id)
            .unwrap();
        assert_eq!(listed.segments.len(), 2);
        assert_eq!(listed.segments[0].0, 0);

        let other = StateDir::new(dir.path().join("b"));
        assert_eq!(pull(&remote, &other, None).await.unwrap(), 1);
        let there = other.find_run(Some(&run.id)).unwrap();
        let local = std::fs::read(run.journal_path()).unwrap();
        let pulled = std::fs::read(there.journal_path()).unwrap();
        assert_eq!(pulled[..], local[..pulled.len()]);
        assert!(pulled.ends_with(b"\n") && pulled.len() < local.len());
        assert_eq!(
            std::fs::read_to_string(there.log_path("build")).unwrap(),
            "$ make\n"
        );
        assert_eq!(RunView::load(&other, &there).unwrap().stages[0].attempts, 2);
        // Nothing new: nothing pulled.
        assert_eq!(pull(&remote, &other, None).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_damaged_or_foreign_run_is_skipped_and_the_rest_pulled() {
        let (dir, remote, _, run, journal) = setup();
        started(&journal, 1);
        Replicator::new(remote.clone(), run.clone())
            .flush()
            .await
            .unwrap();
        let segment = segment_key(&remote, &run.id, 0);
        let len = remote.get(&segment).await.unwrap().unwrap().len() as u64;
        // A segment cut short (no whole lines), and a run whose meta is not a run's.
        remote
            .put(
                &segment_key(&remote, &run.id, len),
                Bytes::from_static(b"{\"v\":1"),
            )
            .await
            .unwrap();
        remote
            .put(
                &meta_key(&remote, "20260101-000000.000-00000000"),
                Bytes::from_static(b"[]"),
            )
            .await
            .unwrap();
        remote
            .put(&meta_key(&remote, ".."), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let other = StateDir::new(dir.path().join("b"));
        assert_eq!(pull(&remote, &other, None).await.unwrap(), 0);
        // The whole segments before the damaged one were kept.
        let there = other.find_run(Some(&run.id)).unwrap();
        assert_eq!(std::fs::metadata(there.journal_path()).unwrap().len(), len);
        assert!(
            other
                .find_run(Some("20260101-000000.000-00000000"))
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_journal_another_machine_appended_to_is_not_pushed_over() {
        let (_dir, remote, _, run, journal) = setup();
        started(&journal, 1);
        let mut replicator = Replicator::new(remote.clone(), run.clone());
        replicator.flush().await.unwrap();
        let end = std::fs::metadata(run.journal_path()).unwrap().len();
        let theirs = Bytes::from_static(b"{\"v\":1,\"other\":true}\n");
        assert!(
            remote
                .create(&segment_key(&remote, &run.id, end), theirs.clone())
                .await
                .unwrap()
        );
        started(&journal, 2);
        replicator.flush().await.unwrap();
        assert!(replicator.stopped);
        assert_eq!(
            remote
                .get(&segment_key(&remote, &run.id, end))
                .await
                .unwrap(),
            Some(theirs)
        );
        // A machine starting over on its own copy finds the store differs, and stays off it.
        let mut again = Replicator::new(remote.clone(), run.clone());
        again.flush().await.unwrap();
        assert!(again.stopped);
    }

    #[test]
    fn only_murphy_names_become_paths() {
        assert!(safe_id("20261122-041500.123-3fa2c41b"));
        for bad in ["", "..", ".hidden", "a/b", "a b"] {
            assert!(!safe_id(bad), "{bad}");
        }
        assert!(safe_stage("test[os=linux,py=3.12]"));
        for bad in ["", ".", "..", "a/../b"] {
            assert!(!safe_stage(bad), "{bad}");
        }
    }
}
