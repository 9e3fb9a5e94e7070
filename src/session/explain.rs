//! `murphy run --dry-run` (`--explain`): what a run would do with each stage, and why, made
//! by the same checks the executor makes, without running, restoring or recording anything.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{
    NewRun, SessionError, Setup, io_error, modes, run_variables, skip_when, store, store_key,
};
use crate::change;
use crate::environment;
use crate::executor::{Mode, SKIPPED_DIGEST};
use crate::fingerprint::{Manifest, summarize};
use crate::plan::StageId;
use crate::stat_cache::StatCache;
use crate::store::StageRecord;

/// What a run would do with a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Its checkpoint matches and its outputs are in place: nothing to do.
    Cached,
    /// Its checkpoint matches; some outputs are missing or differ and would be put back.
    Restore,
    /// It would run.
    Run,
    /// It runs only if a stage before it changes its outputs, which only running it tells.
    Depends,
    /// Its `when:` does not hold, or a need of it is skipped.
    Skip,
    /// The run would fail at it before running anything (`--needs-from-store`, no checkpoint).
    Fail,
}

/// One stage's line of the explanation.
#[derive(Debug, Serialize)]
pub struct Explained {
    pub stage: String,
    pub action: Action,
    pub reason: String,
    /// The fingerprint it would run or be restored with, where it can be known before running.
    pub fingerprint: Option<String>,
}

/// Explains a new run of the selected stages, in an order that runs.
pub fn explain(setup: &Setup, new: &NewRun) -> Result<Vec<Explained>, SessionError> {
    let plan = &new.plan;
    let state = &setup.state;
    let env = environment::outer();
    let change = change::collect(plan, &env, &new.change, state.root())?;
    let key = store_key(&env, &setup.secrets_file)?;
    let store = store(state, key.as_deref());
    let modes = modes(plan, &new.selected, &new.reruns, &store)?;
    let skip = skip_when(plan, &new.selected, &change);
    let (_, release_env) = run_variables(&change);
    let stat_cache = StatCache::load(&state.root().join("stat-cache"));
    let shared = setup.store.is_some();
    let outer = environment::Outer::new(env);

    let mut chosen = vec![false; plan.stages.len()];
    for &id in &new.selected {
        chosen[id] = true;
    }
    // What each stage hands on to the stages that need it, as the executor's slots would.
    let mut handed: HashMap<StageId, Handed> = HashMap::new();
    let mut explained = Vec::new();
    for id in plan
        .topological_order()
        .into_iter()
        .filter(|&id| chosen[id])
    {
        let stage = &plan.stages[id];
        let mut upstream = BTreeMap::new();
        let mut waits_for = Vec::new();
        let mut skipped_need = None;
        for &need in &stage.needs {
            let name = &plan.stages[need].name;
            match handed.get(&need) {
                Some(Handed::Outputs(digest)) => {
                    upstream.insert(name.clone(), digest.clone());
                }
                Some(Handed::SkippedWhen) if stage.needs_optional.contains(&need) => {
                    upstream.insert(name.clone(), SKIPPED_DIGEST.to_owned());
                }
                Some(Handed::SkippedWhen | Handed::Skipped) => {
                    skipped_need.get_or_insert_with(|| format!("because `{name}` is skipped"));
                }
                Some(Handed::Unknown) | None => waits_for.push(format!("`{name}`")),
            }
        }
        let mut line = Explained {
            stage: stage.name.clone(),
            action: Action::Skip,
            reason: String::new(),
            fingerprint: None,
        };
        if let Some(reason) = skip.get(&id) {
            line.reason = format!("(when): {reason}");
            handed.insert(id, Handed::SkippedWhen);
        } else if let Some(reason) = skipped_need {
            line.reason = reason;
            handed.insert(id, Handed::Skipped);
        } else if !waits_for.is_empty() {
            (line.action, line.reason) = if let Mode::FromStore { needed_by } = modes[id] {
                from_store(stage, shared, &plan.stages[needed_by].name)
            } else if modes[id] == Mode::Checkpoint {
                // `--from`: the newest checkpoint is taken whatever the needs made.
                match store.latest(&stage.name, &stat_cache) {
                    Some(record) => restore_or_keep(&record, plan, &stat_cache, Mode::Checkpoint),
                    None => (Action::Fail, NO_CHECKPOINT_FROM.to_owned()),
                }
            } else if modes[id] == Mode::Force {
                (Action::Run, "forced".to_owned())
            } else if !stage.cacheable {
                (Action::Run, never_cached(stage))
            } else if !store.has_record(&stage.name) {
                (Action::Run, "no checkpoint yet".to_owned())
            } else {
                (
                    Action::Depends,
                    format!(
                        "runs unless {} makes the very outputs it made before",
                        waits_for.join(" and ")
                    ),
                )
            };
            handed.insert(id, Handed::Unknown);
        } else {
            let stage_env = environment::resolve(plan, stage, &outer, &release_env);
            let (manifest, ..) = Manifest::build(
                stage,
                &stage_env,
                &plan.root,
                state.root(),
                upstream,
                &stat_cache,
            )
            .map_err(|e| io_error(&format!("cannot read the inputs of `{}`", stage.name), e))?;
            let fingerprint = manifest.fingerprint();
            let record = match modes[id] {
                Mode::Force => None,
                Mode::Checkpoint => store
                    .lookup(&stage.name, &fingerprint, &stat_cache)
                    .or_else(|| store.latest(&stage.name, &stat_cache)),
                Mode::Normal if stage.cacheable => {
                    store.lookup(&stage.name, &fingerprint, &stat_cache)
                }
                Mode::FromStore { .. } => store.lookup(&stage.name, &fingerprint, &stat_cache),
                Mode::Normal => None,
            };
            match record {
                Some(record) => {
                    (line.action, line.reason) =
                        restore_or_keep(&record, plan, &stat_cache, modes[id]);
                    handed.insert(id, Handed::Outputs(record.output_digest));
                }
                None => {
                    line.action = Action::Run;
                    line.reason = match modes[id] {
                        Mode::Force => "forced".to_owned(),
                        Mode::Checkpoint => {
                            line.action = Action::Fail;
                            NO_CHECKPOINT_FROM.to_owned()
                        }
                        Mode::FromStore { needed_by } => {
                            let (action, reason) =
                                from_store(stage, shared, &plan.stages[needed_by].name);
                            line.action = action;
                            reason
                        }
                        Mode::Normal if !stage.cacheable => never_cached(stage),
                        Mode::Normal => {
                            let why = match store.latest_manifest(&stage.name) {
                                None => "no checkpoint yet".to_owned(),
                                Some(before) => match manifest.changes_since(&before) {
                                    changes if changes.is_empty() => {
                                        "its checkpoint is missing or damaged".to_owned()
                                    }
                                    changes => summarize(&changes, 3),
                                },
                            };
                            match shared {
                                true => {
                                    format!("{why}; unless the shared store has its checkpoint")
                                }
                                false => why,
                            }
                        }
                    };
                    handed.insert(id, Handed::Unknown);
                }
            }
            line.fingerprint = Some(fingerprint);
        }
        explained.push(line);
    }
    Ok(explained)
}

/// What a stage hands on to the stages that need it.
enum Handed {
    /// The digest of outputs it restores or keeps.
    Outputs(String),
    /// It runs: what it makes is known only then.
    Unknown,
    /// Skipped by its own `when:` (a need listed in `needs_optional` may be).
    SkippedWhen,
    /// Skipped because a need of its was.
    Skipped,
}

const NO_CHECKPOINT_FROM: &str = "has no checkpoint to start from (--from)";

/// A need of a CI job's stage (`--needs-from-store`) that is not here: the shared store
/// must have it, or the run fails.
fn from_store(stage: &crate::plan::Stage, shared: bool, needed_by: &str) -> (Action, String) {
    if !stage.cacheable {
        return (
            Action::Fail,
            format!(
                "`{needed_by}` needs it, but it is never cached, so no job can hand it on ({})",
                never_cached(stage)
            ),
        );
    }
    match shared {
        true => (
            Action::Restore,
            format!(
                "from the shared store for `{needed_by}`, if its job made it (else the run fails)"
            ),
        ),
        false => (
            Action::Fail,
            format!(
                "`{needed_by}` needs its checkpoint and there is no shared store to take it from"
            ),
        ),
    }
}

/// Why a stage runs every time.
fn never_cached(stage: &crate::plan::Stage) -> String {
    if stage.archive.is_some() {
        "archives a build on every run it is in".to_owned()
    } else if !stage.publish.is_empty() {
        "publishes on every run it is in (what is already there is skipped)".to_owned()
    } else if stage.inputs.is_empty() && stage.outputs.is_empty() {
        "declares no inputs or outputs, so nothing tells it unchanged".to_owned()
    } else {
        "never cached (`cache: false`)".to_owned()
    }
}

/// A stage whose checkpoint applies: kept as it is, or its outputs put back.
fn restore_or_keep(
    record: &StageRecord,
    plan: &crate::plan::Plan,
    stat_cache: &StatCache,
    mode: Mode,
) -> (Action, String) {
    let missing = crate::store::outputs_to_restore(&plan.root, record, stat_cache);
    let from = match mode {
        Mode::Checkpoint => "from its checkpoint (--from)",
        _ => "unchanged",
    };
    match missing {
        0 => (
            Action::Cached,
            format!("{from}, outputs in place (run {})", record.run_id),
        ),
        n => (
            Action::Restore,
            format!(
                "{from}; {n} output{} to put back from run {}'s checkpoint",
                if n == 1 { "" } else { "s" },
                record.run_id
            ),
        ),
    }
}
