//! Runs on the shared store: each run's meta, journal and logs pushed as it goes, and pulled
//! into the local state directory by any machine that lists, shows or resumes it.
//!
//! ```text
//! <url>/runs/<run-id>/meta.json                            written once
//! <url>/runs/<run-id>/journal/<byte offset, 016>.jsonl     whole journal lines from that offset
//! <url>/runs/<run-id>/logs/<stage>.log                     replaced as it grows
//! <url>/runs/<run-id>/lease                                held by the machine running it
//! <url>/pr/<n>/runs/<run-id>/...                           the same, for a pull request's run
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
use tokio::sync::{oneshot, watch};

use super::lease::{self, Lease, Renewed, Taken};
use super::{Remote, RemoteError};
use crate::records::{META_VERSION, RunDir, RunMeta, RunState, RunView, StateDir};

/// How long a machine's hold on a run lasts unless renewed (every third of it, each renewal
/// given at most a third): longer than a renewal can take, and a machine killed with -9
/// blocks a resume elsewhere for at most this long.
pub const LEASE_TTL: Duration = Duration::from_secs(90);

/// The shortest lease: below it a renewal has no time to answer.
pub const MIN_LEASE: Duration = Duration::from_secs(3);

/// How often new journal lines (and, when they moved, the logs) are pushed while a run goes on.
const TICK: Duration = Duration::from_secs(1);

/// The most a run's meta.json from the store may hold.
const MAX_META: u64 = 1024 * 1024;

/// The most one journal segment from the store may hold.
const MAX_SEGMENT: u64 = 64 * 1024 * 1024;

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

/// Where this run writes its records: below the run's own prefix (a pull request's under
/// `pr/<n>/runs`, never where trusted runs are listed).
fn own_root(remote: &Remote) -> Key {
    remote.own("runs")
}

fn run_prefix(root: &Key, run_id: &str) -> Key {
    root.clone().join(PathPart::from(run_id))
}

fn meta_key(root: &Key, run_id: &str) -> Key {
    run_prefix(root, run_id).join("meta.json")
}

fn segment_key(root: &Key, run_id: &str, offset: u64) -> Key {
    run_prefix(root, run_id)
        .join("journal")
        .join(format!("{offset:016}.jsonl"))
}

fn log_key(root: &Key, run_id: &str, stage: &str) -> Key {
    run_prefix(root, run_id)
        .join("logs")
        .join(PathPart::from(format!("{stage}.log")))
}

/// A run id another machine wrote is used as a folder name and sorted with ours: only
/// murphy's own format passes, `20261122-041500.123-3fa2c41b` (see `records::new_run_id`).
fn safe_id(id: &str) -> bool {
    let b = id.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    b.len() == 28
        && digits(0..8)
        && b[8] == b'-'
        && digits(9..15)
        && b[15] == b'.'
        && digits(16..19)
        && b[19] == b'-'
        && b[20..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// A commit id from the store: hex, SHA-1 or SHA-256 long.
fn safe_sha(sha: &str) -> bool {
    matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| b.is_ascii_hexdigit())
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

/// Lists the objects below `root` (a `runs/` folder), by run id.
async fn list(
    remote: &Remote,
    root: &Key,
    only: Option<&str>,
) -> Result<BTreeMap<String, Listed>, RemoteError> {
    let prefix = match only {
        Some(id) => run_prefix(root, id),
        None => root.clone(),
    };
    let mut runs: BTreeMap<String, Listed> = BTreeMap::new();
    for object in remote.list(&prefix).await? {
        let Some(parts) = object.location.prefix_match(root) else {
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
/// finished here (another machine may have resumed them), or only run `only`. Runs are read
/// from the shared `runs/` and, for a run that writes apart (a pull request's), from its own
/// too. A damaged run is said and skipped; the others still come. Returns how many runs were
/// brought up to date.
pub async fn pull(
    remote: &Remote,
    state: &StateDir,
    only: Option<&str>,
) -> Result<usize, RemoteError> {
    let mut roots = vec![remote.shared("runs")];
    if remote.writes_apart() {
        roots.push(own_root(remote));
    }
    let mut found = Vec::new();
    for root in roots {
        for (id, listed) in list(remote, &root, only).await? {
            found.push((root.clone(), id, listed));
        }
    }
    if found.is_empty() {
        return Ok(0);
    }
    // One pull at a time into a state directory: two views at once would both append the
    // same segment. What is local is looked at only under the lock.
    let _lock = lock_pulls(state).await?;
    let mut pulled = 0;
    for (root, id, listed) in found {
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
        match pull_run(remote, &root, state, &id, &listed, local).await {
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

/// Takes `<state>/pull.lock` (exclusive, waited for), made with the state directory if absent;
/// held until the file is dropped.
async fn lock_pulls(state: &StateDir) -> Result<std::fs::File, RemoteError> {
    let root = state.root().to_owned();
    let path = root.join("pull.lock");
    let locked = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            std::fs::create_dir_all(&root)?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)?;
            file.lock()?;
            Ok(file)
        }
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    locked.map_err(RemoteError::local(&path))
}

/// Brings one run's meta (if it has no folder here, `local_dir`), the journal segments that
/// follow what the local journal holds, and the logs that grew. Whether anything changed.
async fn pull_run(
    remote: &Remote,
    root: &Key,
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
            let Some(bytes) = remote.get_limited(&meta_key(root, id), MAX_META).await? else {
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
            let sha = meta
                .change
                .as_ref()
                .and_then(|c| c.git.as_ref()?.sha.as_ref());
            if let Some(sha) = sha.filter(|sha| !safe_sha(sha)) {
                return Err(damaged(format!(
                    "its meta.json names a commit `{}`, not a hex commit id",
                    sha.escape_debug()
                )));
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
        let Some(bytes) = remote.get_limited(key, MAX_SEGMENT).await? else {
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
        let key = log_key(root, id, stage);
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
        changed |= pull_log(remote, &key, &path).await?;
    }
    Ok(changed)
}

/// Streams a log into a temp file beside `path`, then renames it over: a log is never read
/// whole into memory, and never seen half written. Whether it was there.
async fn pull_log(remote: &Remote, key: &Key, path: &std::path::Path) -> Result<bool, RemoteError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(crate::atomic_file::temp_name(&name));
    let pulled = match remote.download(key, &temp).await {
        Ok(Some(_)) => std::fs::rename(&temp, path)
            .map(|()| true)
            .map_err(RemoteError::local(path)),
        Ok(None) => Ok(false),
        Err(err) => Err(err),
    };
    if !matches!(pulled, Ok(true)) {
        let _ = std::fs::remove_file(&temp);
    }
    pulled
}

/// Pushes one run's records to the shared store, keeping track of what is there.
#[derive(Debug)]
pub struct Replicator {
    remote: Remote,
    /// Where the run's records go: `runs/`, or a pull request's own.
    root: Key,
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
            root: own_root(&remote),
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
        let (remote, root, id) = (&self.remote, &self.root, self.run.id.as_str());
        let meta_path = self.run.meta_path();
        let meta = std::fs::read(&meta_path).map_err(|source| RemoteError::Local {
            path: meta_path,
            source,
        })?;
        let key = meta_key(root, id);
        if remote.create(&key, Bytes::from(meta.clone())).await? {
            // New to the store: it holds nothing else of the run yet.
            self.ready = true;
            return Ok(());
        }
        if remote
            .get_limited(&key, MAX_META)
            .await?
            .is_some_and(|there| there != meta)
        {
            self.stop("the shared store holds another run's meta.json under its id");
            return Ok(());
        }
        let listed = list(remote, root, Some(id))
            .await?
            .remove(id)
            .unwrap_or_default();
        let end = listed.journal_end();
        if let Some((offset, key, _)) = listed.segments.iter().rfind(|s| s.0 + s.2 == end) {
            let there = remote
                .get_limited(key, MAX_SEGMENT)
                .await?
                .unwrap_or_default();
            if local_bytes(&self.run, *offset, Some(end)).ok().as_deref() != Some(&there[..]) {
                self.stop("its journal on the shared store differs from the local one");
                return Ok(());
            }
        }
        let logs_prefix = format!("{}/", run_prefix(root, id).join("logs"));
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
            let key = segment_key(&self.root, &self.run.id, self.pushed);
            // A create whose answer was lost may have worked: the same bytes there are ours.
            if !self.remote.create(&key, segment.clone()).await?
                && self.remote.get_limited(&key, MAX_SEGMENT).await?.as_ref() != Some(&segment)
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
            let key = log_key(&self.root, &self.run.id, stage);
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

/// `remote` as this machine reads runs from it: on a pull request's runner (as its CI says),
/// where that pull request's runs write too.
pub fn read_here(remote: Remote, env: &std::collections::BTreeMap<String, String>) -> Remote {
    let number = crate::ci::detect(env)
        .filter(|ci| ci.trigger == crate::trigger::Trigger::Pr)
        .and_then(|ci| ci.pr_number)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    match number {
        Some(number) => remote.for_run(true, Some(&number), &number),
        None => remote,
    }
}

/// Takes the lease on run `id` for `ttl`, or says who holds it. A lease left by a process of
/// this machine that is gone (a kill -9 here) is taken over at once.
pub async fn take_lease(
    remote: &Remote,
    id: &str,
    ttl: Duration,
) -> Result<Result<Lease, Leased>, RemoteError> {
    let key = run_prefix(&own_root(remote), id).join("lease");
    let me = super::holder(id);
    Ok(
        match Lease::take_unless(remote, key, &me, ttl, lease::dead_here).await? {
            Taken::Yes(lease) => Ok(lease),
            Taken::Held(held) => Err(Leased {
                run: id.to_owned(),
                holder: held.holder,
                until: held.expires.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
            }),
        },
    )
}

/// A run being replicated in the background while it goes on, and its lease renewed by a
/// task of its own (a slow push never delays a renewal).
pub struct Replicating {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Replicator>,
    keeper: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<Option<Lease>>)>,
    /// Who took the lease, once it was lost.
    fence: watch::Receiver<Option<String>>,
}

impl Replicating {
    /// Pushes what is new every second, and renews `lease` every third of its length. A
    /// lease lost to another machine fences the run: pushing stops and `cancel` stops its
    /// stages.
    ///
    /// `lease` resolves to the lease held: at once for a resumed run (taken before any of
    /// its stages went on), or as it is taken beside the first stages of a new run, whose id
    /// no other machine can know yet.
    pub fn start(
        replicator: Replicator,
        lease: impl Future<Output = Option<Lease>> + Send + 'static,
        cancel: watch::Sender<bool>,
    ) -> Replicating {
        let (fence_tx, fence) = watch::channel(None);
        let keeper = {
            let (stop, stopped) = oneshot::channel();
            let run = replicator.run.id.clone();
            let task = tokio::spawn(async move {
                let lease = lease.await?;
                keep(lease, run, cancel, fence_tx, stopped).await
            });
            Some((stop, task))
        };
        let (stop, mut stopped) = oneshot::channel();
        let mut fenced = fence.clone();
        let task = tokio::spawn(async move {
            let mut replicator = replicator;
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = lost(&mut fenced) => break,
                    _ = tick.tick() => {}
                }
                let flushed = tokio::select! {
                    flushed = replicator.flush() => flushed,
                    () = lost(&mut fenced) => break,
                };
                // Tried again next tick; the final flush says it if it still fails.
                if let Err(err) = flushed {
                    tracing::debug!("cannot push the run yet: {}", crate::causes::line(&err));
                }
            }
            replicator
        });
        Replicating {
            stop,
            task,
            keeper,
            fence,
        }
    }

    /// Pushes what the run left, then gives its lease up. A push that fails is said, and the
    /// lease kept (it expires by itself): no machine resumes a run whose end the store never
    /// saw before the next `murphy resume` here pushes it. Returns who took the lease if it
    /// was lost: then nothing more was pushed.
    ///
    /// A run that `succeeded` keeps its lease too: no one resumes it, and the lease ends by
    /// itself, so the request to give it up is saved.
    pub async fn finish(self, succeeded: bool) -> Option<String> {
        let _ = self.stop.send(());
        let replicator = self.task.await;
        let mut fenced = self.fence.clone();
        let pushed = match replicator {
            Ok(mut replicator) if fenced.borrow().is_none() => {
                // The lease is still renewed meanwhile: a slow final push does not lose it.
                let flushed = tokio::select! {
                    flushed = replicator.flush() => Some(flushed),
                    () = lost(&mut fenced) => None,
                };
                match flushed {
                    Some(Err(err)) => {
                        tracing::warn!(
                            "run {} could not be pushed whole to the shared store ({}); `murphy resume {}` pushes what it lacks",
                            replicator.run.id,
                            crate::causes::line(&err),
                            replicator.run.id
                        );
                        false
                    }
                    Some(Ok(())) => true,
                    None => false,
                }
            }
            _ => false,
        };
        let lease = match self.keeper {
            Some((stop, task)) => {
                let _ = stop.send(());
                task.await.ok().flatten()
            }
            None => None,
        };
        if let Some(holder) = self.fence.borrow().clone() {
            return Some(holder);
        }
        if let Some(lease) = lease.filter(|_| pushed && !succeeded)
            && let Err(err) = lease.release().await
        {
            tracing::debug!(
                "cannot release the run's lease (it expires by itself): {}",
                crate::causes::line(&err)
            );
        }
        None
    }
}

/// Resolves once the lease is lost (never if it is not).
async fn lost(fence: &mut watch::Receiver<Option<String>>) {
    if fence.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Renews `lease` every third of its length, each try given at most that long (a store that
/// retries for a minute must not hold the next renewal up) and a failed one tried again a
/// second later, until `stop`. Lost to another holder, the run is fenced: `fence` names the
/// holder and `cancel` stops the stages.
async fn keep(
    mut lease: Lease,
    run: String,
    cancel: watch::Sender<bool>,
    fence: watch::Sender<Option<String>>,
    mut stop: oneshot::Receiver<()>,
) -> Option<Lease> {
    let every = lease.renew_every();
    let again = Duration::from_secs(1).min(every);
    let mut wait = every;
    loop {
        tokio::select! {
            _ = &mut stop => return Some(lease),
            () = tokio::time::sleep(wait) => {}
        }
        wait = again;
        let renewed = tokio::select! {
            _ = &mut stop => None,
            renewed = tokio::time::timeout(every, lease.renew()) => Some(renewed),
        };
        match renewed {
            None => return Some(lease),
            Some(Ok(Ok(Renewed::Yes))) => wait = every,
            Some(Ok(Ok(Renewed::LostTo(holder)))) => {
                tracing::error!(
                    "lost the lease on run {run} to {holder}: stopping before anything else is published or archived"
                );
                fence.send_replace(Some(holder));
                let _ = cancel.send(true);
                return None;
            }
            Some(Ok(Err(err))) => tracing::warn!(
                "cannot renew the lease on run {run} yet: {}",
                crate::causes::line(&err)
            ),
            Some(Err(_)) => tracing::warn!(
                "renewing the lease on run {run} took longer than {} s; trying again",
                every.as_secs()
            ),
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
        let listed = list(&remote, &remote.shared("runs"), Some(&run.id))
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
        let segment = segment_key(&remote.shared("runs"), &run.id, 0);
        let len = remote.get(&segment).await.unwrap().unwrap().len() as u64;
        // A segment cut short (no whole lines), and a run whose meta is not a run's.
        remote
            .put(
                &segment_key(&remote.shared("runs"), &run.id, len),
                Bytes::from_static(b"{\"v\":1"),
            )
            .await
            .unwrap();
        remote
            .put(
                &meta_key(&remote.shared("runs"), "20260101-000000.000-00000000"),
                Bytes::from_static(b"[]"),
            )
            .await
            .unwrap();
        remote
            .put(
                &meta_key(&remote.shared("runs"), ".."),
                Bytes::from_static(b"{}"),
            )
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
                .create(
                    &segment_key(&remote.shared("runs"), &run.id, end),
                    theirs.clone()
                )
                .await
                .unwrap()
        );
        started(&journal, 2);
        replicator.flush().await.unwrap();
        assert!(replicator.stopped);
        assert_eq!(
            remote
                .get(&segment_key(&remote.shared("runs"), &run.id, end))
                .await
                .unwrap(),
            Some(theirs)
        );
        // A machine starting over on its own copy finds the store differs, and stays off it.
        let mut again = Replicator::new(remote.clone(), run.clone());
        again.flush().await.unwrap();
        assert!(again.stopped);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn views_pulling_at_once_append_each_segment_once() {
        let (dir, remote, _, run, journal) = setup();
        started(&journal, 1);
        started(&journal, 2);
        Replicator::new(remote.clone(), run.clone())
            .flush()
            .await
            .unwrap();
        let local = std::fs::read(run.journal_path()).unwrap();
        for round in 0..8 {
            let other = StateDir::new(dir.path().join(format!("b{round}")));
            let pulls = (0..4).map(|_| {
                let (remote, other) = (remote.clone(), other.clone());
                tokio::spawn(async move { pull(&remote, &other, None).await.unwrap() })
            });
            let mut pulled = 0;
            for task in pulls.collect::<Vec<_>>() {
                pulled += task.await.unwrap();
            }
            assert_eq!(pulled, 1, "the run was brought by one pull only");
            let there = other.find_run(Some(&run.id)).unwrap();
            assert_eq!(std::fs::read(there.journal_path()).unwrap(), local);
        }
    }

    #[test]
    fn only_murphy_names_become_paths() {
        assert!(safe_id("20261122-041500.123-3fa2c41b"));
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "zzzzzzzz-zzzzzz.zzz-zzzzzzzz",
            "20261122-041500.123-3FA2C41B",
            "20261122-041500.123-3fa2c41b0",
            "20261122-041500.123-3fa2c4é",
        ] {
            assert!(!safe_id(bad), "{bad}");
        }
        assert!(safe_sha("0123456789abcdef0123456789abcdef01234567"));
        for bad in [
            "",
            "0123456789abcdef",
            "é123456789abcdef0123456789abcdef0123456",
        ] {
            assert!(!safe_sha(bad), "{bad}");
        }
        assert!(safe_stage("test[os=linux,py=3.12]"));
        for bad in ["", ".", "..", "a/../b"] {
            assert!(!safe_stage(bad), "{bad}");
        }
    }
}
