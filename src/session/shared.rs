//! A run's side of the shared store: opening it before anything is recorded, the run's
//! lease and the pushing of its records, and what a run from another machine must match.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio::runtime::Runtime;

use super::SessionError;
use crate::change::Change;
use crate::records::{RunDir, RunView, StateDir};
use crate::remote::{Remote, StoreUrl, runs};
use crate::trigger::Trigger;

/// Opens the shared store, if there is one, and makes sure it answers before anything is
/// recorded: a run never starts against a store it cannot use. Probed on `runtime`, the one
/// the run goes on with, so its connection serves the run (a client's pooled connections
/// belong to the runtime that made them).
pub(super) fn open_store(
    url: Option<&StoreUrl>,
    env: &BTreeMap<String, String>,
    runtime: &Runtime,
) -> Result<Option<Remote>, SessionError> {
    let Some(url) = url else {
        return Ok(None);
    };
    let remote = Remote::open(url, env)?;
    runtime.block_on(remote.probe())?;
    Ok(Some(remote))
}

/// Brings runs from the shared store before a resume (run `run`, or every run when the latest
/// is asked for): the run may have been started, or failed, on another machine. A store that
/// fails here fails the resume: the local journal may be behind what another machine did
/// with the run.
pub(super) fn pull_runs(
    remote: &Remote,
    env: &BTreeMap<String, String>,
    state: &StateDir,
    run: Option<&str>,
    runtime: &Runtime,
) -> Result<(), SessionError> {
    // A pull request's runner also looks where its runs write.
    let remote = runs::read_here(remote.clone(), env);
    match runtime.block_on(runs::pull(&remote, state, run)) {
        Ok(0) => {}
        Ok(pulled) => tracing::info!("brought {pulled} run(s) from the shared store"),
        Err(err) => return Err(err.into()),
    }
    Ok(())
}

/// Pushes what the shared store lacks of a finished run (its end, when the store was away as
/// the run ended), where the run writes (a pull request's under its own prefix).
pub(super) fn push_run(
    remote: &Remote,
    env: &BTreeMap<String, String>,
    run: &RunDir,
    change: &Change,
    runtime: &Runtime,
) -> Result<(), SessionError> {
    let remote = for_run(remote.clone(), change, env, &run.id);
    let mut replicator = runs::Replicator::new(remote, run.clone());
    if let Err(err) = runtime.block_on(replicator.flush()) {
        tracing::warn!(
            "cannot push run {} to the shared store: {}",
            run.id,
            crate::causes::line(&err)
        );
    }
    Ok(())
}

/// How long this machine's hold on a run lasts unless renewed: `MURPHY_STORE_LEASE`, or
/// [`runs::LEASE_TTL`]; at least [`runs::MIN_LEASE`], so a renewal has time to answer.
pub(super) fn lease_ttl(env: &BTreeMap<String, String>) -> Result<Duration, SessionError> {
    match env.get("MURPHY_STORE_LEASE") {
        Some(text) => humantime::parse_duration(text)
            .ok()
            .filter(|d| *d >= runs::MIN_LEASE)
            .ok_or_else(|| SessionError::BadLease(text.clone())),
        None => Ok(runs::LEASE_TTL),
    }
}

/// Takes the run's lease and starts pushing its records. A resume refuses a run another
/// machine holds, or one whose lease cannot be looked up; a new run (whose id nobody else
/// has) goes on without a lease when the store fails here, as its checkpoints will say. A
/// lease lost later stops the run through `cancel`.
pub(super) async fn share_run(
    remote: &Remote,
    run: &RunDir,
    ttl: Duration,
    resumed: bool,
    cancel: tokio::sync::watch::Sender<bool>,
) -> Result<runs::Replicating, SessionError> {
    let mut replicator = runs::Replicator::new(remote.clone(), run.clone());
    if !resumed {
        // A new run's id is its own: its lease is taken, and its meta pushed, beside its
        // first stages.
        let (remote, id) = (remote.clone(), run.id.clone());
        let lease = async move {
            match runs::take_lease(&remote, &id, ttl).await {
                Ok(Ok(lease)) => Some(lease),
                Ok(Err(held)) => {
                    tracing::warn!("{held}");
                    None
                }
                Err(err) => {
                    tracing::warn!(
                        "cannot take the lease on run {id} in the shared store: {}",
                        crate::causes::line(&err)
                    );
                    None
                }
            }
        };
        return Ok(runs::Replicating::start(replicator, lease, cancel));
    }
    let lease = match runs::take_lease(remote, &run.id, ttl).await? {
        Ok(lease) => lease,
        Err(held) => return Err(held.into()),
    };
    // A resumed run's state on the store is known before any stage goes on.
    if let Err(err) = replicator.flush().await {
        tracing::debug!("cannot push the run yet: {}", crate::causes::line(&err));
    }
    Ok(runs::Replicating::start(
        replicator,
        std::future::ready(Some(lease)),
        cancel,
    ))
}

/// A run another machine started is finished here only from the commit it was about: its
/// record says what it built, and this checkout must be that.
pub(super) fn refuse_other_commit(view: &RunView, root: &Path) -> Result<(), SessionError> {
    let theirs = view
        .change
        .as_ref()
        .and_then(|c| c.git.as_ref())
        .and_then(|g| g.sha.clone());
    let ours = crate::git::open(root).and_then(|repo| {
        let commit = repo.head().ok()?.peel_to_commit().ok()?;
        Some(commit.id().to_string())
    });
    if theirs == ours {
        return Ok(());
    }
    let name = |sha: Option<String>| {
        sha.map_or_else(|| "no commit".to_owned(), |s| s.chars().take(12).collect())
    };
    Err(SessionError::OtherCommit {
        run: view.run_id.clone(),
        theirs: name(theirs),
        ours: name(ours),
    })
}

/// `remote` as the run `run_id` about `change` writes to it: apart, under its pull request's
/// prefix, when its trigger is `pr` or when this machine's CI says it builds a pull request,
/// whatever `--trigger` or a record brought from the store says.
pub(super) fn for_run(
    remote: Remote,
    change: &Change,
    env: &BTreeMap<String, String>,
    run_id: &str,
) -> Remote {
    let here = crate::ci::detect(env).filter(|ci| ci.trigger == Trigger::Pr);
    let untrusted = change.trigger == Trigger::Pr || here.is_some();
    let number = here
        .as_ref()
        .or(change.ci.as_ref())
        .and_then(|ci| ci.pr_number.as_deref());
    remote.for_run(untrusted, number, run_id)
}
