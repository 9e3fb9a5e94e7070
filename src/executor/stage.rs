//! One stage in a run: fingerprint it, restore it from a checkpoint or run it (with retries),
//! then verify and checkpoint its outputs before recording success.
//!
//! **Invariant:** a stage is recorded as succeeded only after its declared outputs were found
//! and stored; nothing of a failed attempt is stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Context, Done, Mode, StageEnd};
use crate::archive;
use crate::environment::{self, StageEnv};
use crate::fingerprint::{Manifest, summarize};
use crate::inputs;
use crate::journal::{Event, Outcome};
use crate::plan::{Stage, StageId};
use crate::process;
use crate::report::Finish;
use crate::stat_cache;
use crate::store::{self, RECORD_VERSION, StageRecord, StoreError, outputs_digest};

/// Runs `work` on the blocking pool, or right here when it is known to be trivial (a stage
/// with no inputs to hash, no outputs to store): a hop to another thread and back is two
/// wake-ups, which on a busy machine are most of what a small stage in a chain costs.
async fn blocking<T: Send + 'static>(
    trivial: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if trivial {
        Ok(work())
    } else {
        tokio::task::spawn_blocking(work).await
    }
}

pub(super) struct Task {
    pub ctx: Arc<Context>,
    pub id: StageId,
    /// Output digests of the stages this one needs, by name.
    pub upstream: BTreeMap<String, String>,
    pub mode: Mode,
    /// Remove the declared outputs first: a killed earlier attempt may have left them half made.
    pub discard: bool,
    /// Set when the stage succeeded before the run was resumed: checked again, not trusted.
    pub before: Option<Done>,
    pub cancel: watch::Receiver<bool>,
    /// The last run ran it: most likely it runs again (see [`super::Start::first`]).
    pub likely_runs: bool,
    /// For an archiving stage: the stages that led to it and how they ended.
    pub chain: Vec<archive::ChainStage>,
}

impl Task {
    pub(super) fn stage(&self) -> &Stage {
        &self.ctx.plan.stages[self.id]
    }

    pub(super) async fn run(mut self) -> StageEnd {
        let env = environment::resolve(
            &self.ctx.plan,
            self.stage(),
            &self.ctx.outer_env,
            &self.ctx.release_env,
        );
        // Why a stage runs is read from its last manifest (half a megabyte of JSON for
        // 5,000 inputs, a few ms): for one likely to run, read while its inputs are hashed
        // rather than after, when its command waits for it.
        let last = self.read_last_manifest_early();
        let (manifest, fingerprint) = match self.manifest(env).await {
            Ok(done) => done,
            Err(message) => return self.fail_before_running(message),
        };
        // What a killed attempt left (processes, half-written outputs) goes before anything
        // else happens to the stage, whether it is then restored or run again.
        if self.discard {
            self.discard_outputs();
        }
        let unread = match self.mode {
            Mode::Force => None,
            _ => self.pull_checkpoint(&fingerprint).await,
        };

        if let Mode::FromStore { needed_by } = self.mode {
            return self.take_from_store(&fingerprint, needed_by, unread).await;
        }
        if self.mode == Mode::Checkpoint {
            let ctx = self.ctx.clone();
            let name = self.stage().name.clone();
            let exact = ctx.store.lookup(&name, &fingerprint, &ctx.stat_cache);
            let (record, note) = match exact {
                Some(record) => (Some(record), None),
                None => (
                    ctx.store.latest(&name, &ctx.stat_cache),
                    Some(
                        "restored from its newest checkpoint (--from); its inputs changed since"
                            .to_owned(),
                    ),
                ),
            };
            return match record {
                Some(record) => match self.restore(record, note).await {
                    Ok(end) => end,
                    Err(message) => self.fail_before_running(message),
                },
                None => self
                    .fail_before_running(format!("stage `{name}` has no checkpoint to start from")),
            };
        }
        let mut why = None;
        // A changed stage may still have a checkpoint for what it is now (an edit undone):
        // then, as in `murphy run`, it is restored from that one.
        let mut look_up = true;
        if let Some(before) = self.before.take() {
            match self.recheck(&before, &manifest, &fingerprint).await {
                Ok(end) => return end,
                Err(Rerun::Changed(reason)) => why = Some(reason),
                Err(Rerun::Unverified(reason)) => {
                    why = Some(reason);
                    look_up = false;
                }
            }
        }
        if look_up
            && self.stage().cacheable
            && self.mode == Mode::Normal
            && let Some(record) =
                self.ctx
                    .store
                    .lookup(&self.stage().name, &fingerprint, &self.ctx.stat_cache)
        {
            match self.restore(record, None).await {
                Ok(end) => return end,
                Err(message) => {
                    tracing::warn!("{message}; running `{}` instead", self.stage().name)
                }
            }
        }

        // Why it runs is read from its last checkpoint's manifest, large for 20,000 inputs:
        // off the async thread, beside the listing of changed files its commands get.
        let (ctx, id, mode) = (self.ctx.clone(), self.id, self.mode);
        let explain = async move {
            match why {
                Some(why) => Ok((manifest, Some(why))),
                None => {
                    let last = match last {
                        Some(read) => read.await.ok(),
                        None => None,
                    };
                    tokio::task::spawn_blocking(move || {
                        let why = why_it_runs(&ctx, id, mode, &manifest, last);
                        (manifest, why)
                    })
                    .await
                }
            }
        };
        let started = Instant::now();
        let started_at = Timestamp::now();
        let (explained, env) = tokio::join!(explain, self.stage_env());
        let (manifest, why) = match explained {
            Ok(explained) => explained,
            Err(e) => return self.fail_before_running(format!("murphy failed internally: {e}")),
        };
        let env = match env {
            Ok(env) => env,
            Err(message) => return self.fail_before_running(message),
        };
        let encoding = match self.encode_while_running(manifest) {
            Ok(encoding) => encoding,
            Err(message) => return self.fail_before_running(message),
        };
        let attempt = match self.attempts(why, env).await {
            Ok(attempt) => attempt,
            Err(outcome) => {
                return StageEnd {
                    outcome,
                    output_digest: None,
                    cached: false,
                    stale: false,
                };
            }
        };
        let (elapsed, ended_at) = (started.elapsed(), Timestamp::now());
        let encoded = match encoding.await {
            Ok(encoded) => encoded
                .transpose()
                .map_err(|e| format!("cannot encode the manifest as JSON: {e}")),
            Err(_) => Err("murphy failed internally: encoding the manifest panicked".into()),
        };
        self.checkpoint(encoded, fingerprint, attempt, elapsed, started_at, ended_at)
            .await
    }

    /// The manifest's JSON, which the store keeps beside a cacheable stage's checkpoint:
    /// half a megabyte for 5,000 inputs, encoded on a thread of its own (at nice 10, as the
    /// inputs are read) while the commands run, not after them, when the run waits for it. A
    /// small one is encoded here: a thread would cost more than it.
    fn encode_while_running(
        &self,
        manifest: Manifest,
    ) -> Result<tokio::sync::oneshot::Receiver<Option<serde_json::Result<Vec<u8>>>>, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.stage().cacheable {
            let _ = tx.send(None);
            return Ok(rx);
        }
        if manifest.input_count() < 256 {
            let _ = tx.send(Some(manifest.to_json()));
            return Ok(rx);
        }
        std::thread::Builder::new()
            .name("manifest".into())
            .spawn(move || {
                process::lower_priority();
                let _ = tx.send(Some(manifest.to_json()));
            })
            .map_err(|e| format!("cannot start a thread to encode the manifest: {e}"))?;
        Ok(rx)
    }

    /// Starts reading the stage's last manifest, for [`why_it_runs`], when the stage is
    /// likely to run and would need it: `None` otherwise. On a thread of its own, not the
    /// blocking pool: if the stage turns out cached, the run's end does not wait for it.
    fn read_last_manifest_early(&self) -> Option<tokio::sync::oneshot::Receiver<Option<Manifest>>> {
        let wanted = self.likely_runs
            && self.mode == Mode::Normal
            && self.stage().cacheable
            && self.before.is_none();
        if !wanted {
            return None;
        }
        // The store alone: the run's context must not outlive the run in this thread.
        let store = self.ctx.store.clone();
        let name = self.stage().name.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("last-manifest".into())
            .spawn(move || {
                let _ = tx.send(store.latest_manifest(&name));
            })
            .ok()?;
        Some(rx)
    }

    /// A need of a CI job, made by another job: restored from the checkpoint of exactly this
    /// fingerprint (pulled already), or failed with a message naming it. Never run here.
    async fn take_from_store(
        &self,
        fingerprint: &str,
        needed_by: StageId,
        unread: Option<String>,
    ) -> StageEnd {
        let ctx = self.ctx.clone();
        let stage = self.stage();
        let needer = &ctx.plan.stages[needed_by].name;
        if !stage.cacheable {
            return self.fail_before_running(format!(
                "stage `{needer}` needs `{}`, which is never cached (no `inputs` or `outputs`, or `cache: false`), so no job can hand it on through the store: give it `inputs`, or `cache: true`",
                stage.name
            ));
        }
        match ctx.store.lookup(&stage.name, fingerprint, &ctx.stat_cache) {
            Some(record) => match self.restore(record, None).await {
                Ok(end) => end,
                Err(message) => self.fail_before_running(message),
            },
            None => self.fail_before_running(match unread {
                Some(why) => format!(
                    "stage `{needer}` needs `{}`, whose checkpoint could not be read from the shared store: {why}",
                    stage.name
                ),
                None => format!(
                    "stage `{needer}` needs `{}`, which has no checkpoint in the store for this commit (did its job run?)",
                    stage.name
                ),
            }),
        }
    }

    /// Hashes the inputs off the async threads, at a low priority: 20,000 files is real work,
    /// and the commands of the stages already running are what the user waits for. Returns
    /// the manifest with its fingerprint (encoding 20,000 digests is work too, better done
    /// there than on the thread every stage shares).
    async fn manifest(&self, env: StageEnv) -> Result<(Manifest, String), String> {
        let ctx = self.ctx.clone();
        let id = self.id;
        let upstream = self.upstream.clone();
        let build = move || {
            let stage = &ctx.plan.stages[id];
            let (manifest, unmatched) = Manifest::build(
                stage,
                &env,
                &ctx.plan.root,
                &ctx.state_dir,
                upstream,
                &ctx.stat_cache,
            )
            .map_err(|e| format!("cannot read the inputs of `{}`: {e}", stage.name))?;
            for pattern in unmatched {
                tracing::warn!("{}", inputs::unmatched_warning(&stage.name, &pattern));
            }
            let fingerprint = manifest.fingerprint();
            Ok((manifest, fingerprint))
        };
        if self.stage().inputs.is_empty() {
            return build();
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("inputs".into())
            .spawn(move || {
                process::lower_priority();
                let _ = tx.send(build());
            });
        if let Err(err) = spawned {
            return Err(format!("cannot start a thread to read the inputs: {err}"));
        }
        rx.await
            .unwrap_or_else(|_| Err("fingerprinting failed: its thread panicked".into()))
    }

    /// Checks a stage that succeeded before the run was resumed, as `murphy run` checks a
    /// cached one: with the fingerprint unchanged its outputs are verified and restored where
    /// missing or different; `Err` says why it must run again instead.
    async fn recheck(
        &self,
        before: &Done,
        manifest: &Manifest,
        fingerprint: &str,
    ) -> Result<StageEnd, Rerun> {
        let ctx = self.ctx.clone();
        let name = self.stage().name.clone();
        if before.fingerprint.as_deref() != Some(fingerprint) {
            let changes = before
                .fingerprint
                .as_deref()
                .and_then(|fp| ctx.store.manifest(fp))
                .map(|then| manifest.changes_since(&then))
                .filter(|changes| !changes.is_empty());
            return Err(Rerun::Changed(match changes {
                Some(changes) => format!(
                    "changed since it succeeded before the resume: {}",
                    summarize(&changes, 3)
                ),
                None => "changed since it succeeded before the resume".into(),
            }));
        }
        let id = self.id;
        let fp = fingerprint.to_owned();
        let expected = before.output_digest.clone();
        let checked = tokio::task::spawn_blocking(move || -> Result<Option<usize>, String> {
            let stage = &ctx.plan.stages[id];
            if stage.cacheable {
                let Some(record) = ctx.store.lookup(&stage.name, &fp, &ctx.stat_cache) else {
                    return Ok(None);
                };
                if record.output_digest != expected {
                    return Ok(None);
                }
                return ctx
                    .store
                    .restore(
                        &ctx.plan.root,
                        &record,
                        stage.outside_links,
                        &ctx.stat_cache,
                    )
                    .map(Some)
                    .map_err(|e| crate::causes::line(&e));
            }
            // Nothing was stored to restore from: the outputs must be what it made.
            let outputs = ctx
                .store
                .collect_outputs(
                    &ctx.plan.root,
                    &stage.outputs,
                    stage.outside_links,
                    &ctx.stat_cache,
                )
                .map_err(|e| crate::causes::line(&e))?;
            Ok((outputs_digest(&outputs) == expected).then_some(0))
        })
        .await
        .map_err(|e| Rerun::Unverified(format!("checking its outputs failed: {e}")))?;
        let restored = match checked {
            Ok(Some(restored)) => restored,
            Ok(None) if self.stage().cacheable => {
                tracing::warn!(
                    "the checkpoint of `{name}` is missing or damaged; running it again"
                );
                return Err(Rerun::Unverified(
                    "its checkpoint was missing or damaged".into(),
                ));
            }
            Ok(None) => {
                return Err(Rerun::Unverified(
                    "its outputs changed since it succeeded".into(),
                ));
            }
            Err(message) => {
                return Err(Rerun::Unverified(format!(
                    "its outputs could not be checked: {message}"
                )));
            }
        };
        self.ctx.record(Event::StageRechecked {
            stage: name.clone(),
            fingerprint: fingerprint.to_owned(),
            output_digest: before.output_digest.clone(),
            restored,
        });
        self.ctx.reporter.stage_done_before(&name, restored);
        Ok(StageEnd {
            outcome: Outcome::Succeeded,
            output_digest: Some(before.output_digest.clone()),
            cached: false,
            stale: false,
        })
    }

    async fn restore(&self, record: StageRecord, note: Option<String>) -> Result<StageEnd, String> {
        // Only the fallback of `--from` (a checkpoint for other inputs) carries a note.
        let stale = note.is_some();
        let ctx = self.ctx.clone();
        let stage = self.stage().name.clone();
        let record2 = record.clone();
        let outside_links = self.stage().outside_links;
        let restored = tokio::task::spawn_blocking(move || {
            ctx.store
                .restore(&ctx.plan.root, &record2, outside_links, &ctx.stat_cache)
        })
        .await
        .map_err(|e| format!("restoring failed: {e}"))?
        .map_err(|e| format!("cannot restore `{stage}` from its checkpoint: {e}"))?;
        // Restored, but not shared: the stage fails rather than runs again (its push would
        // fail the same way), and `murphy resume` shares it once the store is back.
        if let Err(message) = self.push_checkpoint(&record).await {
            return Ok(self.fail_before_running(message));
        }
        self.ctx.record(Event::StageCached {
            stage: stage.clone(),
            fingerprint: record.fingerprint.clone(),
            output_digest: record.output_digest.clone(),
            restored,
            note,
        });
        self.ctx.reporter.stage_cached(&stage, restored);
        Ok(StageEnd {
            outcome: Outcome::Succeeded,
            output_digest: Some(record.output_digest),
            cached: true,
            stale,
        })
    }

    /// Stops what the dead attempt left running and removes what the declared outputs
    /// name, before a stage that died mid-way runs again.
    fn discard_outputs(&self) {
        let killed = process::kill_leftovers(&self.ctx.run.id, &self.stage().name);
        if killed > 0 {
            tracing::info!(
                "killed {killed} processes left running by `{}` when murphy stopped",
                self.stage().name
            );
        }
        let root = &self.ctx.plan.root;
        for pattern in &self.stage().outputs {
            let clean = inputs::clean(pattern);
            let paths = if inputs::is_glob(clean) {
                inputs::expand(root, &[clean.to_owned()], &self.ctx.state_dir).unwrap_or_default()
            } else {
                vec![clean.into()]
            };
            for path in paths {
                let path = root.join(path);
                // Never the project, the records, or anything holding them.
                let (Ok(target), Ok(project), Ok(state)) = (
                    std::path::absolute(&path),
                    std::path::absolute(root),
                    std::path::absolute(&self.ctx.state_dir),
                ) else {
                    continue;
                };
                if project.starts_with(&target) || state.starts_with(&target) {
                    tracing::warn!(
                        "not removing `{}`: it holds the project or its records",
                        path.display()
                    );
                    continue;
                }
                store::remove_any(&path);
            }
        }
    }

    /// Everything a stage's processes get: outer variables it may read, the run's, the
    /// secrets it lists, murphy's own.
    pub(super) async fn stage_env(&self) -> Result<Vec<(String, String)>, String> {
        let ctx = &self.ctx;
        let changed_files = ctx.changed_files().await?;
        let stage = self.stage();
        let resolved = environment::resolve(&ctx.plan, stage, &ctx.outer_env, &ctx.release_env);
        let mut env = resolved.vars;
        env.extend(ctx.run_env.iter().cloned());
        for name in ctx.plan.secrets.iter().chain(&stage.secrets) {
            if let Some(value) = ctx.secrets.get(name) {
                env.insert(name.clone(), value.clone());
            }
        }
        env.insert("MURPHY_RUN_ID".into(), ctx.run.id.clone());
        env.insert("MURPHY_STAGE".into(), stage.name.clone());
        env.insert(
            "MURPHY_STATE_DIR".into(),
            ctx.state_dir.to_string_lossy().into_owned(),
        );
        if let Some(list) = changed_files {
            env.insert(
                "MURPHY_CHANGED_FILES".into(),
                list.to_string_lossy().into_owned(),
            );
        }
        Ok(env.into_iter().collect())
    }

    /// Verifies and stores the outputs of a successful attempt with its `manifest` (as JSON;
    /// `None` for a stage that is not cached), then records the success. Its commands ran
    /// for `elapsed`, from `started_at` to `ended_at`.
    async fn checkpoint(
        &self,
        manifest: Result<Option<Vec<u8>>, String>,
        fingerprint: String,
        attempt: u32,
        elapsed: Duration,
        started_at: Timestamp,
        ended_at: Timestamp,
    ) -> StageEnd {
        let ctx = self.ctx.clone();
        let id = self.id;
        let fp = fingerprint.clone();
        let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let stage = self.stage();
        let trivial = stage.inputs.is_empty() && stage.outputs.is_empty() && !stage.cacheable;
        let saved = match manifest {
            Ok(manifest) => blocking(trivial, move || {
                let stage = &ctx.plan.stages[id];
                crate::crash::at("stage-exited", &stage.name);
                save_outputs(&ctx, stage, manifest, fp, duration_ms, ended_at)
            })
            .await
            .map_err(|e| format!("storing the outputs failed: {e}"))
            .and_then(|saved| saved.map_err(|e| crate::causes::line(&e))),
            Err(message) => Err(message),
        };

        let saved = match saved {
            Ok((digest, Some(record))) => self.push_checkpoint(&record).await.map(|()| digest),
            Ok((digest, None)) => Ok(digest),
            Err(message) => Err(message),
        };
        let saved = match saved {
            Ok(digest) => self.archive(started_at).await.map(|()| digest),
            Err(message) => Err(message),
        };
        let saved = match saved {
            Ok(digest) => self.publish().await.map(|()| digest),
            Err(message) => Err(message),
        };
        let stage = self.stage();
        let (outcome, message, output_digest) = match saved {
            Ok(digest) => (Outcome::Succeeded, None, Some(digest)),
            Err(message) => (Outcome::Failed, Some(message), None),
        };
        self.ctx.record(Event::StageFinished {
            stage: stage.name.clone(),
            attempt,
            outcome,
            exit_code: Some(0),
            signal: None,
            duration_ms,
            message: message.clone(),
            fingerprint: Some(fingerprint),
            output_digest: output_digest.clone(),
        });
        match &message {
            None => self
                .ctx
                .reporter
                .stage_finished(&stage.name, Finish::Succeeded, elapsed),
            Some(message) => {
                let how = format!("failed ({message})");
                self.ctx.reporter.stage_finished(
                    &stage.name,
                    Finish::Failed { how: &how },
                    elapsed,
                );
            }
        }
        StageEnd {
            outcome,
            output_digest,
            cached: false,
            stale: false,
        }
    }

    /// Records a stage that failed before any command could start.
    fn fail_before_running(&self, message: String) -> StageEnd {
        let name = &self.stage().name;
        self.ctx.record(Event::StageStarted {
            stage: name.clone(),
            attempt: 1,
            why: None,
        });
        self.ctx.record(Event::StageFinished {
            stage: name.clone(),
            attempt: 1,
            outcome: Outcome::Failed,
            exit_code: None,
            signal: None,
            duration_ms: 0,
            message: Some(message.clone()),
            fingerprint: None,
            output_digest: None,
        });
        let how = format!("failed ({message})");
        self.ctx
            .reporter
            .stage_finished(name, Finish::Failed { how: &how }, Duration::ZERO);
        StageEnd {
            outcome: Outcome::Failed,
            output_digest: None,
            cached: false,
            stale: false,
        }
    }
}

/// Why a stage that succeeded before the resume runs again, for `murphy status`.
enum Rerun {
    /// Its fingerprint changed: a checkpoint for the new one may still be restored.
    Changed(String),
    /// Same fingerprint, but what it made could not be verified or restored.
    Unverified(String),
}

/// Why stage `id` runs instead of being restored, for `murphy status`.
/// `last` is the stage's last manifest if it was read already (`Some(None)`: there is none).
fn why_it_runs(
    ctx: &Context,
    id: StageId,
    mode: Mode,
    manifest: &Manifest,
    last: Option<Option<Manifest>>,
) -> Option<String> {
    let stage = &ctx.plan.stages[id];
    if mode == Mode::Force {
        return Some("forced".into());
    }
    if !stage.cacheable {
        return None;
    }
    let last = last.unwrap_or_else(|| ctx.store.latest_manifest(&stage.name));
    Some(match last {
        None => "no checkpoint yet".into(),
        Some(before) => {
            warn_if_it_changed_its_inputs(ctx, stage, manifest, &before);
            let changes = manifest.changes_since(&before);
            if changes.is_empty() {
                "its checkpoint was missing or damaged".into()
            } else {
                summarize(&changes, 3)
            }
        }
    })
}

/// A stage that writes into its own inputs (`__pycache__` beside the tests it runs) gets a
/// new fingerprint every time and never hits its checkpoint. When it runs because inputs were
/// added or changed, those whose inode changed while it last ran (from its start to the end
/// of its commands, as its record says) are named, with the fix. Looked for here, among the
/// inputs that changed, not after every stage that ran: a second `stat` of each input cost
/// 4 ms of a 52 ms run that changed one input of 5,000. Files kept with whole-second times are
/// not judged: a second cannot tell the run from the moments after it.
fn warn_if_it_changed_its_inputs(
    ctx: &Context,
    stage: &Stage,
    manifest: &Manifest,
    before: &Manifest,
) {
    let mut new = manifest.inputs_new_since(before).peekable();
    if new.peek().is_none() {
        return;
    }
    let Some(last) = ctx.store.latest_unverified(&stage.name) else {
        return;
    };
    // File times come from a clock that lags by up to a timer tick (4 ms here, 10 at 100 Hz),
    // so the window opens a tick early; for the same reason a file written within a tick
    // after the commands ended (by a script, not by hand) may be named too.
    const TICK_NS: i128 = 10_000_000;
    let ended = last.created_at.as_nanosecond();
    let began = ended - i128::from(last.duration_ms) * 1_000_000 - TICK_NS;
    let changed: Vec<String> = new
        .filter(|path| {
            std::fs::symlink_metadata(ctx.plan.root.join(path)).is_ok_and(|meta| {
                let changed_ns = stat_cache::changed_ns(&meta);
                changed_ns % 1_000_000_000 != 0 && (began..=ended).contains(&changed_ns)
            })
        })
        .map(str::to_owned)
        .collect();
    if !changed.is_empty() {
        tracing::warn!("{}", inputs::changed_by_run_warning(&stage.name, &changed));
    }
}

/// Verifies a successful attempt's outputs and, for a cacheable stage (one given its
/// `manifest`'s JSON), stores them with the manifest and the record of the attempt, whose
/// commands ended at `ended_at`; returns their digest and the record.
fn save_outputs(
    ctx: &Context,
    stage: &Stage,
    manifest: Option<Vec<u8>>,
    fingerprint: String,
    duration_ms: u64,
    ended_at: Timestamp,
) -> Result<(String, Option<StageRecord>), StoreError> {
    let outputs = ctx.store.collect_outputs(
        &ctx.plan.root,
        &stage.outputs,
        stage.outside_links,
        &ctx.stat_cache,
    )?;
    let output_digest = outputs_digest(&outputs);
    let Some(manifest) = manifest else {
        return Ok((output_digest, None));
    };
    let record = StageRecord {
        v: RECORD_VERSION,
        stage: stage.name.clone(),
        fingerprint,
        outputs,
        output_digest: output_digest.clone(),
        exit_code: 0,
        duration_ms,
        run_id: ctx.run.id.clone(),
        created_at: ended_at,
    };
    ctx.store
        .save(&ctx.plan.root, &record, &manifest, &ctx.stat_cache)?;
    crate::crash::at("record-written", &stage.name);
    Ok((output_digest, Some(record)))
}
