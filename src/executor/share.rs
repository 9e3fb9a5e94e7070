//! What a stage hands the shared store: its checkpoint is pulled before the stage is looked
//! up, and pushed once it was saved or restored, so the next machine need not run it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::stage::Task;
use crate::remote::Remote;
use crate::remote::checkpoints;
use crate::store::StageRecord;

impl Task {
    /// Brings the checkpoint for `fingerprint` from the shared store when the local store has
    /// none. A store that cannot be read costs only a run of the stage, so it is said and the
    /// stage goes on; the push after it (of what ran or was restored) fails the stage if the
    /// store is still away.
    pub(super) async fn pull_checkpoint(&self, fingerprint: &str) {
        let Some(remote) = &self.ctx.remote else {
            return;
        };
        if !self.stage().cacheable || self.ctx.store.record_path(fingerprint).exists() {
            return;
        }
        match checkpoints::pull(remote, &self.ctx.store, fingerprint).await {
            Ok(true) => {
                tracing::info!(
                    "`{}`: checkpoint {fingerprint} taken from the shared store",
                    self.stage().name
                );
                // Where this run writes holds it: no push need ask. A pull request's run may
                // have read it from the shared place, not its own.
                if !remote.writes_apart() {
                    note_shared(&shared_note(&self.ctx.state_dir, remote, fingerprint));
                }
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(
                    "cannot take the checkpoint of `{}` from the shared store: {}",
                    self.stage().name,
                    crate::causes::line(&err)
                );
                if matches!(err, crate::remote::RemoteError::Damaged { .. })
                    && let Ok(mut heal) = self.ctx.heal.lock()
                {
                    heal.insert(fingerprint.to_owned());
                }
            }
        }
    }

    /// Makes the shared store hold `record`. A stage whose checkpoint could not be shared
    /// fails: on a CI runner its work would be lost with the runner's disk. `murphy resume`
    /// pushes it once the store is back, without running the stage again.
    pub(super) async fn push_checkpoint(&self, record: &StageRecord) -> Result<(), String> {
        let Some(remote) = &self.ctx.remote else {
            return Ok(());
        };
        let heal = self
            .ctx
            .heal
            .lock()
            .is_ok_and(|heal| heal.contains(&record.fingerprint));
        let note = shared_note(&self.ctx.state_dir, remote, &record.fingerprint);
        if !heal && fresh(&note) {
            return Ok(());
        }
        checkpoints::push(remote, &self.ctx.store, record, heal)
            .await
            .map_err(|err| {
                format!(
                    "cannot share the checkpoint with the shared store: {}",
                    crate::causes::line(&err)
                )
            })?;
        note_shared(&note);
        Ok(())
    }
}

/// How long this machine trusts its note that the store holds a checkpoint: a cached stage
/// then costs no request, and a store emptied behind murphy's back is filled again within
/// this long.
const NOTE_LIFE: Duration = Duration::from_secs(3600);

/// Where this machine notes that the store (at the place this run writes) holds the
/// checkpoint for `fingerprint`. Written only after a push succeeded.
fn shared_note(state_dir: &Path, remote: &Remote, fingerprint: &str) -> PathBuf {
    state_dir
        .join("store/shared")
        .join(remote.tag())
        .join(fingerprint)
}

fn fresh(note: &Path) -> bool {
    std::fs::metadata(note)
        .and_then(|m| m.modified())
        .is_ok_and(|at| at.elapsed().is_ok_and(|age| age < NOTE_LIFE))
}

/// A lost note costs one request; an unwritable one is not worth a warning.
fn note_shared(note: &Path) {
    if let Some(dir) = note.parent() {
        let _ = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(note, b""));
    }
}
