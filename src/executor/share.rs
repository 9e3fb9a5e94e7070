//! What a stage hands the shared store: its checkpoint is pulled before the stage is looked
//! up, and pushed once it was saved or restored, so the next machine need not run it.

use super::stage::Task;
use crate::remote::checkpoints;
use crate::store::StageRecord;

impl Task {
    /// Brings the checkpoint for `fingerprint` from the shared store when the local store has
    /// none. A store that cannot be read costs only a run of the stage, so it is said and the
    /// stage goes on; the push after it (of what ran or was restored) fails the stage if the
    /// store is still away. Returns why the store could not be read, if it could not.
    pub(super) async fn pull_checkpoint(&self, fingerprint: &str) -> Option<String> {
        let Some(remote) = &self.ctx.remote else {
            return None;
        };
        if !self.stage().cacheable || self.ctx.store.record_path(fingerprint).exists() {
            return None;
        }
        match checkpoints::pull(remote, &self.ctx.store, fingerprint).await {
            Ok(true) => tracing::info!(
                "`{}`: checkpoint {fingerprint} taken from the shared store",
                self.stage().name
            ),
            Ok(false) => {}
            Err(err) => {
                let why = crate::causes::line(&err);
                tracing::warn!(
                    "cannot take the checkpoint of `{}` from the shared store: {why}",
                    self.stage().name,
                );
                if matches!(err, crate::remote::RemoteError::Damaged { .. })
                    && let Ok(mut heal) = self.ctx.heal.lock()
                {
                    heal.insert(fingerprint.to_owned());
                }
                return Some(why);
            }
        }
        None
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
        checkpoints::push(remote, &self.ctx.store, record, heal)
            .await
            .map(drop)
            .map_err(|err| {
                format!(
                    "cannot share the checkpoint with the shared store: {}",
                    crate::causes::line(&err)
                )
            })
    }
}
