//! Runs a plan: starts each stage once its needs succeeded, at most `jobs` at once, and
//! records every step in the run's journal.
//!
//! The scheduler is one loop that owns all stage states; stage tasks ([`stage`]) fingerprint,
//! restore or run, checkpoint, and report back. Stopping (a failure without `--keep-going`,
//! or a signal) means: start nothing new, let running stages finish (or kill them, for a
//! signal), then record the end.

mod attempts;
mod deliver;
mod share;
mod stage;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::archive;
use crate::change::Change;
use crate::journal::{Event, Journal, Outcome, RunStatus};
use crate::plan::{Plan, StageId};
use crate::process;
use crate::records::RunDir;
use crate::report::{Reporter, format_duration};
use crate::stat_cache::StatCache;
use crate::store::Store;

pub struct Options {
    pub jobs: usize,
    pub keep_going: bool,
}

/// How a stage is to be treated in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Restored from its checkpoint if the fingerprint has one, else run.
    Normal,
    /// Run even if a checkpoint exists (`--force`, and the stage `--from` names).
    Force,
    /// Never run: restored from its checkpoint, the newest if the fingerprint has none
    /// (the stages before `--from`).
    Checkpoint,
    /// Never run: restored from the checkpoint of exactly its fingerprint, from the shared
    /// store if not here; without one, failed (`--needs-from-store`: the needs of a CI job,
    /// which other jobs made). `needed_by` names a stage that needs it, for the message.
    FromStore { needed_by: StageId },
}

/// A stage that succeeded before the run was resumed, as its journal recorded it.
#[derive(Debug, Clone)]
pub struct Done {
    /// The fingerprint it succeeded with (`None` in a journal that did not record one).
    pub fingerprint: Option<String>,
    pub output_digest: String,
}

/// Where a run starts from: a new run has nothing done; a resumed one has its journal's.
#[derive(Debug, Default)]
pub struct Start {
    /// Stages that already succeeded in this run. They are not trusted blindly: each is
    /// fingerprinted again in graph order, kept (its outputs verified and restored) only if
    /// nothing it depends on changed, and run again otherwise.
    pub done: HashMap<StageId, Done>,
    /// Stages that were running when murphy died: their partial outputs go first.
    pub discard: Vec<StageId>,
    /// Whether this continues a recorded run (`murphy resume`).
    pub resumed: bool,
    /// Stages whose `when:` does not hold for this run, with the reason.
    pub skip_when: HashMap<StageId, String>,
    /// Stages the previous run ran rather than restored: of the stages ready at once, these
    /// are checked first. In an edit-and-run loop the file just edited is most likely one of
    /// theirs, and a stage that must run then starts while the others are still checked.
    pub first: std::collections::HashSet<StageId>,
}

/// What every stage of one run shares.
pub struct Context {
    pub plan: Arc<Plan>,
    pub run: RunDir,
    pub journal: Journal,
    pub reporter: Reporter,
    /// Absolute, so stages can use it from any working directory.
    pub state_dir: PathBuf,
    pub store: Store,
    /// The shared store, if there is one: checkpoints are pulled from it and pushed to it.
    pub remote: Option<crate::remote::Remote>,
    /// Fingerprints whose shared checkpoint was found damaged: their push checks every object.
    heal: std::sync::Mutex<std::collections::HashSet<String>>,
    pub stat_cache: StatCache,
    /// The outer environment, read once: stages take from it what `environment` allows.
    pub outer_env: crate::environment::Outer,
    /// Per-run variables every stage gets and no fingerprint sees (`MURPHY_TRIGGER`, ...).
    pub run_env: Vec<(String, String)>,
    /// Per-run variables that decide results (`MURPHY_VERSION`, `MURPHY_PRERELEASE`).
    pub release_env: Vec<(String, String)>,
    /// What the run is about, for archive manifests.
    pub change: Option<Change>,
    /// Loaded secrets, by name; each stage gets the pipeline's and its own.
    pub secrets: BTreeMap<String, String>,
    /// Publications this run's journal already confirms (a resumed run skips them).
    pub confirmed: crate::publish::ConfirmedSet,
    /// Made on first use: loading the system's root certificates costs milliseconds a run
    /// that publishes and notifies nothing should not pay.
    client: std::sync::OnceLock<Result<reqwest::Client, String>>,
    pub verbose: bool,
    journal_failed: AtomicBool,
    /// `MURPHY_CHANGED_FILES`, made when the first stage starts a command (never on a run
    /// that restores everything): comparing the tree is the costliest git work there is.
    changed_files: tokio::sync::OnceCell<Result<Option<PathBuf>, String>>,
    /// The changed files, when the session began listing them early (see
    /// [`crate::change::list_early`]).
    pub changed_early: std::sync::Mutex<Option<crate::change::ListedEarly>>,
}

impl Context {
    pub fn new(
        plan: Arc<Plan>,
        run: RunDir,
        journal: Journal,
        reporter: Reporter,
        state_dir: PathBuf,
        outer_env: BTreeMap<String, String>,
        stat_cache: StatCache,
    ) -> Context {
        Context {
            run_env: Vec::new(),
            release_env: Vec::new(),
            change: None,
            secrets: BTreeMap::new(),
            confirmed: Default::default(),
            client: std::sync::OnceLock::new(),
            verbose: false,
            store: Store::new(&state_dir),
            remote: None,
            heal: Default::default(),
            stat_cache,
            outer_env: crate::environment::Outer::new(outer_env),
            plan,
            run,
            journal,
            reporter,
            state_dir,
            journal_failed: AtomicBool::new(false),
            changed_files: tokio::sync::OnceCell::new(),
            changed_early: std::sync::Mutex::new(None),
        }
    }

    /// The HTTP client for publishing and notifying.
    pub fn client(&self) -> Result<&reqwest::Client, String> {
        let made = self.client.get_or_init(|| {
            crate::publish::client(std::time::Duration::from_secs(300))
                .map_err(|e| format!("cannot set up the HTTP client: {e}"))
        });
        made.as_ref().map_err(Clone::clone)
    }

    /// The path of the run's list of changed files, written on first use.
    async fn changed_files(self: &Arc<Self>) -> Result<Option<PathBuf>, String> {
        let ctx = self.clone();
        self.changed_files
            .get_or_init(|| async move {
                let early = ctx
                    .changed_early
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                let written = match early {
                    Some(listed) => match listed.await {
                        // Listed since the run began: only the writing is left.
                        Ok(text) => crate::change::write_list(&ctx.run.path, text),
                        // Its thread ended without an answer: list them here.
                        Err(_) => list_changed_files(ctx).await,
                    },
                    None => list_changed_files(ctx).await,
                };
                written.map_err(|e| format!("cannot write the list of changed files: {e}"))
            })
            .await
            .clone()
    }

    /// Appends to the journal. A failed append stops the run: a run that cannot be
    /// recorded cannot be resumed, so going on would only waste work.
    fn record(&self, event: Event) {
        if let Err(err) = self.journal.append(event)
            && !self.journal_failed.swap(true, Ordering::SeqCst)
        {
            tracing::error!(
                "cannot append to {}: {err}; stopping the run",
                self.journal.path().display()
            );
        }
    }
}

/// Lists the changed files off the async thread and writes them into the run's folder.
async fn list_changed_files(ctx: Arc<Context>) -> io::Result<Option<PathBuf>> {
    tokio::task::spawn_blocking(move || {
        let change = ctx.change.clone().unwrap_or_else(Change::local);
        crate::change::write_changed_files(
            &ctx.plan,
            &change,
            &ctx.outer_env.vars,
            &ctx.run.path,
            &ctx.state_dir,
        )
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(format!("listing them failed: {e}"))))
}

/// How a stage task ended, for the scheduler.
#[derive(Debug, Clone)]
struct StageEnd {
    outcome: Outcome,
    /// On success: the digest of the outputs, which the stages after it build on.
    output_digest: Option<String>,
    cached: bool,
    stale: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Slot {
    NotSelected,
    Pending,
    Running,
    Succeeded {
        output_digest: String,
        cached: bool,
        /// Restored from an older checkpoint (`--from`): not a success for this commit.
        stale: bool,
    },
    Failed(Outcome),
    Skipped,
    SkippedWhen,
}

/// The digest a skipped optional need contributes to its dependents' fingerprints.
pub(crate) const SKIPPED_DIGEST: &str = "skipped";

/// Runs the selected stages and returns how the run ended. Errors are about the records
/// (the journal could not be written), never about stages: those end up in the journal.
pub async fn execute(
    ctx: Arc<Context>,
    selected: &[StageId],
    modes: &[Mode],
    start: Start,
    options: &Options,
    mut cancel: watch::Receiver<bool>,
) -> io::Result<RunStatus> {
    let plan = ctx.plan.clone();
    let started = Instant::now();
    let event = if start.resumed {
        Event::RunResumed {
            pid: std::process::id(),
        }
    } else {
        Event::RunStarted {
            run_id: ctx.run.id.clone(),
            pid: std::process::id(),
        }
    };
    ctx.journal.append(event)?;
    ctx.reporter
        .run_started(&ctx.run.id, &plan.name, selected.len(), start.resumed);

    let mut slots = vec![Slot::NotSelected; plan.stages.len()];
    for &id in selected {
        if let Some(reason) = start.skip_when.get(&id) {
            slots[id] = Slot::SkippedWhen;
            ctx.reporter
                .stage_skipped(&plan.stages[id].name, &format!("(when): {reason}"));
            ctx.record(Event::StageSkipped {
                stage: plan.stages[id].name.clone(),
                reason: reason.clone(),
                when: true,
            });
            continue;
        }
        slots[id] = Slot::Pending;
    }
    let mut tasks: JoinSet<StageEnd> = JoinSet::new();
    let mut task_stage: HashMap<tokio::task::Id, StageId> = HashMap::new();
    let mut running = 0usize;
    let mut stopped_by: Option<String> = None;
    let mut interrupted = false;
    // The stages worth checking for readiness: at first every one, then those whose need
    // just ended. Scanning every stage after each end made a chain of n stages cost n².
    let mut dependents: Vec<Vec<StageId>> = vec![Vec::new(); slots.len()];
    for (id, stage) in plan.stages.iter().enumerate() {
        for &need in &stage.needs {
            dependents[need].push(id);
        }
    }
    // Ordered by `first`, then as the pipeline lists them.
    let key = |id: StageId| (!start.first.contains(&id), id);
    let mut candidates: std::collections::BTreeSet<(bool, StageId)> = (0..slots.len())
        .filter(|&id| slots[id] == Slot::Pending)
        .map(key)
        .collect();
    // Whether a stage failed or was skipped since its dependents were last skipped for it.
    let mut unsettled = true;

    loop {
        if std::mem::take(&mut unsettled) {
            skip_dependents_of_failures(&ctx, &mut slots);
        }
        if stopped_by.is_none() && !interrupted {
            let mut from = (false, 0);
            while running < options.jobs.max(1) {
                let Some(&(later, id)) = candidates.range(from..).next() else {
                    break;
                };
                from = (later, id + 1);
                if slots[id] != Slot::Pending {
                    candidates.remove(&(later, id));
                    continue;
                }
                let mut upstream = BTreeMap::new();
                let stage = &plan.stages[id];
                let ready = stage.needs.iter().all(|&n| match &slots[n] {
                    Slot::Succeeded { output_digest, .. } => {
                        upstream.insert(plan.stages[n].name.clone(), output_digest.clone());
                        true
                    }
                    Slot::SkippedWhen if stage.needs_optional.contains(&n) => {
                        upstream.insert(plan.stages[n].name.clone(), SKIPPED_DIGEST.into());
                        true
                    }
                    _ => false,
                });
                // Not ready: it is checked again when one of its needs ends.
                candidates.remove(&(later, id));
                if ready {
                    slots[id] = Slot::Running;
                    running += 1;
                    let task = stage::Task {
                        ctx: ctx.clone(),
                        id,
                        upstream,
                        mode: modes.get(id).copied().unwrap_or(Mode::Normal),
                        discard: start.discard.contains(&id),
                        before: start.done.get(&id).cloned(),
                        cancel: cancel.clone(),
                        likely_runs: start.first.contains(&id),
                        chain: if stage.archive.is_some() || !stage.publish.is_empty() {
                            chain(&plan, id, &slots)
                        } else {
                            Vec::new()
                        },
                    };
                    // Boxed: the task moves a pointer, not the stage's large future, on
                    // each of its steps.
                    let handle = tasks.spawn(Box::pin(task.run()));
                    task_stage.insert(handle.id(), id);
                }
            }
        }
        if running == 0 {
            break;
        }
        tokio::select! {
            Some(joined) = tasks.join_next_with_id() => {
                running -= 1;
                let (task, end) = match joined {
                    Ok(done) => done,
                    Err(err) => {
                        // A panic in a stage task is murphy's bug; the stage counts as failed,
                        // and the journal must say so, or it would show it running forever.
                        tracing::error!("a stage task failed: {err}");
                        if let Some(&id) = task_stage.get(&err.id()) {
                            ctx.record(Event::StageFinished {
                                stage: plan.stages[id].name.clone(),
                                attempt: 1,
                                outcome: Outcome::Failed,
                                exit_code: None,
                                signal: None,
                                duration_ms: 0,
                                message: Some(format!("murphy failed internally: {err}")),
                                fingerprint: None,
                                output_digest: None,
                            });
                        }
                        (err.id(), StageEnd { outcome: Outcome::Failed, output_digest: None, cached: false, stale: false })
                    }
                };
                let Some(id) = task_stage.remove(&task) else { continue };
                slots[id] = match (end.outcome, end.output_digest) {
                    (Outcome::Succeeded, Some(output_digest)) => Slot::Succeeded { output_digest, cached: end.cached, stale: end.stale },
                    (Outcome::Succeeded, None) => Slot::Failed(Outcome::Failed),
                    (outcome, _) => Slot::Failed(outcome),
                };
                if matches!(slots[id], Slot::Failed(_)) && !options.keep_going && stopped_by.is_none() {
                    stopped_by = Some(plan.stages[id].name.clone());
                }
                unsettled |= !matches!(slots[id], Slot::Succeeded { .. });
                candidates.extend(dependents[id].iter().copied().filter(|&d| slots[d] == Slot::Pending).map(key));
            }
            () = process::cancelled(&mut cancel), if !interrupted => {
                interrupted = true;
            }
        }
        if ctx.journal_failed.load(Ordering::SeqCst) && stopped_by.is_none() {
            stopped_by = Some("the journal could not be written".into());
        }
    }

    // Stages left pending with nothing failed and no stop would mean the plan's graph was not
    // a DAG: the planner rules that out, and this makes sure it can never pass for success.
    let stuck = stopped_by.is_none() && !interrupted && slots.contains(&Slot::Pending);
    if stuck {
        tracing::error!("stages were left waiting on each other; this is a bug in murphy");
        stopped_by = Some("murphy (a stage waited on itself)".into());
    }
    // A stage task may see the cancel before this loop does; the signal still decides.
    interrupted |= *cancel.borrow() || slots.contains(&Slot::Failed(Outcome::Interrupted));

    // Whatever never started is recorded as skipped, with the reason.
    for id in 0..slots.len() {
        if slots[id] == Slot::Pending {
            let reason = if interrupted {
                "because the run was interrupted".to_owned()
            } else {
                let by = stopped_by.as_deref().unwrap_or("a stage");
                format!(
                    "because the run stopped after `{by}` failed (--keep-going runs independent stages)"
                )
            };
            skip(&ctx, &mut slots, id, reason);
        }
    }
    let rehashed = ctx.stat_cache.rehashed();
    if rehashed.count > 0 {
        tracing::debug!(
            "read {} files the stat cache could not vouch for, among them {}",
            rehashed.count,
            rehashed
                .examples
                .iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // The run's checkpoints, written without fsyncs, made durable together before its end
    // is recorded (and synced), and before the stat cache that vouches for their objects'
    // bytes is saved: a power cut can then leave it vouching only for synced objects.
    if let Err(err) = ctx.store.sync() {
        tracing::warn!("cannot sync the checkpoint store: {err}");
    }
    if let Err(err) = ctx.stat_cache.save() {
        tracing::warn!("cannot save the stat cache: {err}");
    }

    let count = |want: &dyn Fn(&Slot) -> bool| slots.iter().filter(|s| want(s)).count();
    let succeeded = count(&|s| matches!(s, Slot::Succeeded { .. }));
    let cached = count(&|s| matches!(s, Slot::Succeeded { cached: true, .. }));
    let failed = count(&|s| matches!(s, Slot::Failed(o) if *o != Outcome::Interrupted));
    let skipped = count(&|s| matches!(s, Slot::Skipped | Slot::SkippedWhen));
    let status = if interrupted {
        RunStatus::Interrupted
    } else if failed > 0 || stuck || ctx.journal_failed.load(Ordering::SeqCst) {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    ctx.journal.append(Event::RunFinished {
        status,
        rehashed: Some(rehashed.count),
    })?;
    ctx.journal.sync()?;
    if ctx.journal_failed.load(Ordering::SeqCst) {
        return Err(io::Error::other(format!(
            "cannot write the journal {}",
            ctx.journal.path().display()
        )));
    }
    let word = match status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Interrupted => "was interrupted",
    };
    ctx.reporter.run_finished(&format!(
        "run {} {word} in {}: {succeeded} succeeded ({cached} cached), {failed} failed, {skipped} skipped",
        ctx.run.id,
        format_duration(started.elapsed()),
    ), status == RunStatus::Succeeded);
    Ok(status)
}

/// The stages that led to `id` (its needs, transitively, then itself) with how they ended:
/// an archive's QA status and provenance.
fn chain(plan: &Plan, id: StageId, slots: &[Slot]) -> Vec<archive::ChainStage> {
    let name = plan.stages[id].name.clone();
    plan.select(std::slice::from_ref(&name))
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            let stage = &plan.stages[i];
            let state = match &slots[i] {
                _ if i == id => "succeeded",
                Slot::Succeeded { stale: true, .. } => "restored from an older checkpoint",
                Slot::Succeeded { cached: true, .. } => "cached",
                Slot::Succeeded { .. } => "succeeded",
                Slot::SkippedWhen => "skipped (when)",
                Slot::Skipped => "skipped",
                Slot::Failed(_) => "failed",
                Slot::Pending | Slot::Running | Slot::NotSelected => "not run",
            };
            archive::ChainStage {
                name: stage.name.clone(),
                state: state.to_owned(),
                needs: stage
                    .needs
                    .iter()
                    .map(|&n| plan.stages[n].name.clone())
                    .collect(),
                inputs: stage.inputs.clone(),
            }
        })
        .collect()
}

/// Marks pending stages whose needs failed or were skipped, until nothing changes.
fn skip_dependents_of_failures(ctx: &Context, slots: &mut [Slot]) {
    loop {
        let next = (0..slots.len()).find_map(|id| {
            if slots[id] != Slot::Pending {
                return None;
            }
            let stage = &ctx.plan.stages[id];
            stage.needs.iter().find_map(|&n| {
                let need = &ctx.plan.stages[n].name;
                match slots[n] {
                    Slot::SkippedWhen if !stage.needs_optional.contains(&n) => Some((
                        id,
                        format!("because `{need}` was skipped by its `when` (list it in `needs_optional` to run without it)"),
                    )),
                    Slot::Failed(Outcome::Interrupted) => {
                        Some((id, format!("because `{need}` was interrupted")))
                    }
                    Slot::Failed(_) => Some((id, format!("because `{need}` failed"))),
                    Slot::Skipped => Some((id, format!("because `{need}` was skipped"))),
                    _ => None,
                }
            })
        });
        match next {
            Some((id, reason)) => skip(ctx, slots, id, reason),
            None => return,
        }
    }
}

fn skip(ctx: &Context, slots: &mut [Slot], id: StageId, reason: String) {
    slots[id] = Slot::Skipped;
    let name = &ctx.plan.stages[id].name;
    ctx.reporter.stage_skipped(name, &reason);
    ctx.record(Event::StageSkipped {
        stage: name.clone(),
        reason,
        when: false,
    });
}
