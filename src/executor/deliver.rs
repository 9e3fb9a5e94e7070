//! What a stage that succeeded hands on: its archive build, then its publications, each file
//! exactly once (what the journal confirms is skipped; each confirmation is journalled and
//! synced the moment the server gives it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use super::stage::Task;
use crate::archive;
use crate::change::Change;
use crate::journal::{self, Event};
use crate::plan::Target;
use crate::process::{self, Ended, Output};
use crate::publish;
use crate::remote::lease::{Lease, Taken, dead_here};
use crate::remote::{self, RemoteError, archive::SharedArchive, releases};

/// How long a claim on publishing a file holds without its holder: an upload longer than
/// this may be doubled by a machine that took the claim for dead.
const CLAIM: Duration = Duration::from_secs(15 * 60);

impl Task {
    /// Makes the stage's archive build, then lets retention prune the archive. A failed
    /// prune is a warning: the build itself is safe. With a shared store, the build takes the
    /// number the store gives it and is uploaded (a failed upload fails the stage, as a failed
    /// checkpoint push does), and the shared archive is pruned.
    pub(super) async fn archive(&self, started_at: Timestamp) -> Result<(), String> {
        let stage = self.stage();
        let Some(spec) = stage.archive.clone() else {
            return Ok(());
        };
        let shared = self
            .ctx
            .remote
            .clone()
            .map(|remote| SharedArchive::new(remote, remote::archive::name(&spec.root)));
        let retention = archive::retention::Policy {
            keep_last: spec.keep_last,
            keep_days: spec.keep_days,
        };
        // The claim is made from the blocking task, under the local archive's lock, on this
        // runtime (whose thread keeps driving it meanwhile).
        let handle = tokio::runtime::Handle::current();
        let claimer = shared.clone();
        let ctx = self.ctx.clone();
        let id = self.id;
        let chain = self
            .chain
            .iter()
            .map(|c| archive::ChainStage {
                name: c.name.clone(),
                state: c.state.clone(),
                needs: c.needs.clone(),
                inputs: c.inputs.clone(),
            })
            .collect();
        let made = tokio::task::spawn_blocking(move || -> Result<(u64, PathBuf), String> {
            let stage = &ctx.plan.stages[id];
            let root = ctx.plan.root.join(&spec.root);
            let store = archive::Archive::new(root.clone());
            let change = ctx.change.clone().unwrap_or_else(Change::local);
            let request = archive::Request {
                project_root: &ctx.plan.root,
                state_dir: &ctx.state_dir,
                pipeline: &ctx.plan.name,
                pipeline_file: &ctx.plan.file.to_string_lossy(),
                stage: &stage.name,
                run_id: &ctx.run.id,
                started_at,
                change: &change,
                name_template: &spec.name,
                files: spec.files.clone(),
                chain,
                retention,
                number: None,
            };
            let (run_id, stage_name) = (&ctx.run.id, &stage.name);
            let claim = claimer.as_ref().map(|shared| {
                let handle = &handle;
                move |floor: u64| -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
                    let claimed = handle.block_on(shared.claim(floor, run_id, stage_name));
                    claimed.map_err(Into::into)
                }
            });
            let request = archive::Request {
                number: claim.as_ref().map(|c| c as &archive::NumberSource),
                ..request
            };
            let archive::Created { build, pruned } = store
                .create(&request)
                .map_err(|e| crate::causes::line(&e))?;
            match pruned {
                Ok(pruned) if !pruned.is_empty() => tracing::info!(
                    "retention removed {} build(s) from {}",
                    pruned.len(),
                    root.display()
                ),
                Ok(_) => {}
                Err(err) => tracing::warn!(
                    "build {build} is archived, but pruning {} failed: {}",
                    root.display(),
                    crate::causes::line(&err)
                ),
            }
            Ok((build, store.build_dir(build)))
        })
        .await
        .map_err(|e| format!("archiving failed: {e}"))??;
        let (build, dir) = made;
        self.ctx.record(Event::Archived {
            stage: stage.name.clone(),
            build,
            path: dir.to_string_lossy().into_owned(),
        });
        self.ctx.reporter.note(&format!(
            "{} archived build {build} in {}",
            stage.name,
            dir.display()
        ));
        if let Some(shared) = shared {
            self.share_build(&shared, build, &dir, retention).await?;
        }
        Ok(())
    }

    /// Uploads build `build` to the shared archive, then prunes it over every machine's
    /// builds. A failed prune is a warning: the next archive or prune tries again.
    async fn share_build(
        &self,
        shared: &SharedArchive,
        build: u64,
        dir: &Path,
        retention: archive::retention::Policy,
    ) -> Result<(), String> {
        shared.upload(build, dir).await.map_err(|err| {
            format!(
                "build {build} is archived here, but cannot be shared with the shared store: {}",
                crate::causes::line(&err)
            )
        })?;
        self.ctx.reporter.note(&format!(
            "{} shared build {build} in {}",
            self.stage().name,
            shared.location()
        ));
        match shared.prune(retention, Timestamp::now(), false).await {
            Ok(pruned) if !pruned.expired.is_empty() || !pruned.swept.is_empty() => {
                tracing::info!(
                    "retention removed {} build(s) and {} incomplete one(s) from {}",
                    pruned.expired.len(),
                    pruned.swept.len(),
                    shared.location()
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(
                "build {build} is shared, but pruning {} failed: {}",
                shared.location(),
                crate::causes::line(&err)
            ),
        }
        Ok(())
    }

    /// Publishes to every target of the stage, each file once: what the journal confirms is
    /// skipped, each confirmation is journalled and synced the moment the server gives it.
    pub(super) async fn publish(&self) -> Result<(), String> {
        let stage = self.stage();
        if stage.publish.is_empty() {
            return Ok(());
        }
        // Gates: every required stage succeeded (or was restored) for this commit.
        for &required in &stage.requires {
            let name = &self.ctx.plan.stages[required].name;
            let state = self
                .chain
                .iter()
                .find(|c| &c.name == name)
                .map_or("not run", |c| c.state.as_str());
            if state != "succeeded" && state != "cached" {
                return Err(format!(
                    "publishing refused: `{name}` must succeed for this commit first, and it was {state}"
                ));
            }
        }
        let archived = self.archived_digests();
        let version = self
            .ctx
            .change
            .as_ref()
            .and_then(|c| c.version.as_ref())
            .map(|v| v.text.clone());
        let release = publish::Release {
            root: &self.ctx.plan.root,
            state_dir: &self.ctx.state_dir,
            name: &self.ctx.plan.name,
            version: version.as_deref(),
            secrets: &self.ctx.secrets,
            client: self.ctx.client()?,
        };
        let attempts = if stage.retry.attempts > 1 {
            stage.retry.attempts
        } else {
            5
        };
        let base = if stage.retry.delay.is_zero() {
            Duration::from_millis(500)
        } else {
            stage.retry.delay
        };
        let ids = publish::target_ids(&stage.publish);
        for (target, id) in stage.publish.iter().zip(&ids) {
            let items = publish::items(target, &self.ctx.plan.root, &self.ctx.state_dir)?;
            if let Target::Http { url, .. } = target {
                let mut seen = BTreeMap::new();
                for item in &items {
                    let to = publish::fill(url, release.name, release.version, item);
                    if let Some(first) = seen.insert(to.clone(), item.name.clone()) {
                        return Err(format!(
                            "{id}: `{first}` and `{}` would both go to {to}; use `{{path}}` in the url",
                            item.name
                        ));
                    }
                }
            }
            for item in &items {
                if let Some(sha) = archived.get(&item.name)
                    && *sha != item.digest
                {
                    return Err(format!(
                        "`{}` changed since this run archived it; publishing only the archived bytes",
                        item.name
                    ));
                }
                let key = (
                    stage.name.clone(),
                    id.clone(),
                    item.name.clone(),
                    item.digest.clone(),
                );
                if self.ctx.confirmed.contains(&key) {
                    self.ctx.reporter.note(&format!(
                        "{} {id}: `{}` was published before the run was resumed",
                        stage.name, item.name
                    ));
                    // A kill between the journal and the shared store left it unconfirmed there.
                    self.confirm_release(id, item, version.as_deref(), false)
                        .await?;
                    continue;
                }
                if *self.cancel.borrow() {
                    return Err("interrupted before publishing".into());
                }
                // One machine at a time uploads a file of a version; the others wait for its
                // confirmation.
                let claim = self.claim_release(id, item, version.as_deref()).await?;
                // The claim of a machine that died mid-publication: the file may be out. A
                // target that can check says so on upload; a command without `check` cannot.
                if let (Some(claim), Target::Command { check: None, .. }) = (&claim, target)
                    && claim.took_over()
                    && self
                        .released_elsewhere(id, item, version.as_deref())
                        .await?
                        .is_none()
                {
                    return Err(format!(
                        "{id}: `{}`: a machine that claimed publishing it died before confirming it, so it may be out already; check by hand, then write its confirmation by publishing with a `check:` that finds it, or delete the claim `{}` to publish it again",
                        item.name,
                        claim.key()
                    ));
                }
                let mut uploaded = false;
                let published = self
                    .publish_claimed(
                        target,
                        id,
                        item,
                        version.as_deref(),
                        &release,
                        (attempts, base),
                        &mut uploaded,
                    )
                    .await;
                // Kept when the file went out but its confirmation did not: the next machine
                // would take it for unpublished. A claim kept expires by itself.
                if let Some(claim) = claim.filter(|_| published.is_ok() || !uploaded)
                    && let Err(err) = claim.release().await
                {
                    tracing::warn!(
                        "cannot give up the claim on publishing `{}`: {}; it expires by itself",
                        item.name,
                        crate::causes::line(&err)
                    );
                }
                published?;
            }
        }
        Ok(())
    }

    /// Publishes one file unless the shared store says another run did, then journals and
    /// confirms it. `uploaded` is set once the target took the file: from then on, a failure
    /// leaves it published but unconfirmed.
    #[allow(clippy::too_many_arguments)]
    async fn publish_claimed(
        &self,
        target: &Target,
        id: &str,
        item: &publish::Item,
        version: Option<&str>,
        release: &publish::Release<'_>,
        (attempts, base): (u32, Duration),
        uploaded: &mut bool,
    ) -> Result<(), String> {
        let stage = self.stage();
        if let Some(run) = self.released_elsewhere(id, item, version).await? {
            self.ctx.record(Event::Published {
                stage: stage.name.clone(),
                target: id.to_owned(),
                file: item.name.clone(),
                digest: item.digest.clone(),
                outcome: publish::Confirmed::AlreadyPresent,
            });
            if let Err(err) = self.ctx.journal.sync() {
                return Err(format!("cannot sync the journal after publishing: {err}"));
            }
            self.ctx.reporter.note(&format!(
                "{} {id}: `{}` was published by run {run} (confirmed on the shared store); skipped",
                stage.name, item.name
            ));
            return Ok(());
        }
        let outcome = match target {
            Target::Command { run, check, .. } => {
                self.publish_command(run, check.as_deref(), item).await?
            }
            _ => {
                let mut cancel = self.cancel.clone();
                let upload = publish::with_retries(attempts, base, |_| {
                    publish::publish(target, item, release)
                });
                tokio::select! {
                    done = upload => {
                        done.map_err(|message| format!("{id}: `{}`: {message}", item.name))?
                    }
                    () = process::cancelled(&mut cancel) => {
                        return Err(format!(
                            "{id}: `{}`: interrupted; `murphy resume` finishes the release",
                            item.name
                        ));
                    }
                }
            }
        };
        *uploaded = true;
        self.ctx.record(Event::Published {
            stage: stage.name.clone(),
            target: id.to_owned(),
            file: item.name.clone(),
            digest: item.digest.clone(),
            outcome,
        });
        // A confirmation must outlive a power cut, or a resume would publish again.
        if let Err(err) = self.ctx.journal.sync() {
            return Err(format!("cannot sync the journal after publishing: {err}"));
        }
        crate::crash::at("published", &item.name);
        self.confirm_release(id, item, version, true).await?;
        let word = match outcome {
            publish::Confirmed::Uploaded => "published",
            publish::Confirmed::AlreadyPresent => "already there (same bytes)",
        };
        self.ctx
            .reporter
            .note(&format!("{} {id}: `{}` {word}", stage.name, item.name));
        Ok(())
    }

    /// Where the shared store keeps what is known of publishing `item` of `version` to `id`.
    fn slot<'a>(
        &'a self,
        id: &'a str,
        item: &'a publish::Item,
        version: &'a str,
    ) -> releases::Slot<'a> {
        releases::Slot {
            pipeline: &self.ctx.plan.name,
            target: id,
            version,
            file: &item.name,
        }
    }

    /// For a versioned release on a shared store, the claim on publishing `item`: a lease only
    /// one machine holds. One that finds it held waits until the holder's confirmation appears
    /// (then `None`: the caller finds it and skips) or the lease ends (a holder that died).
    async fn claim_release(
        &self,
        id: &str,
        item: &publish::Item,
        version: Option<&str>,
    ) -> Result<Option<Lease>, String> {
        let (Some(remote), Some(version)) = (&self.ctx.remote, version) else {
            return Ok(None);
        };
        let slot = self.slot(id, item, version);
        let key = remote.own(&slot.claim_key());
        let holder = crate::remote::holder(&self.ctx.run.id);
        let mut said = false;
        loop {
            // A claim whose holder was a process of this machine that is gone is not waited for.
            let taken = Lease::take_unless(remote, key.clone(), &holder, CLAIM, dead_here)
                .await
                .map_err(|err| {
                    format!(
                        "{id}: `{}`: cannot claim its publication on the shared store: {}",
                        item.name,
                        crate::causes::line(&err)
                    )
                })?;
            match taken {
                Taken::Yes(lease) => return Ok(Some(lease)),
                Taken::Held(held) => {
                    if !said {
                        self.ctx.reporter.note(&format!(
                            "{} {id}: `{}` is being published by {}; waiting for it",
                            self.stage().name,
                            item.name,
                            held.holder
                        ));
                        said = true;
                    }
                }
            }
            let mut cancel = self.cancel.clone();
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = process::cancelled(&mut cancel) => {
                    return Err("interrupted while waiting to publish".into());
                }
            }
            if self
                .released_elsewhere(id, item, Some(version))
                .await?
                .is_some()
            {
                return Ok(None);
            }
        }
    }

    /// For a versioned release on a shared store: the run that already published `item` to
    /// target `id`, if one did with the same bytes. Other bytes are an error: a version once
    /// published is never published over, from any machine.
    async fn released_elsewhere(
        &self,
        id: &str,
        item: &publish::Item,
        version: Option<&str>,
    ) -> Result<Option<String>, String> {
        let (Some(remote), Some(version)) = (&self.ctx.remote, version) else {
            return Ok(None);
        };
        let slot = self.slot(id, item, version);
        let found = releases::find(remote, slot)
            .await
            .map_err(|err| match err {
                RemoteError::Damaged { .. } => format!(
                    "{id}: `{}`: {}; if this version of it was never published, remove that object",
                    item.name,
                    crate::causes::line(&err)
                ),
                _ => format!(
                    "{id}: `{}`: cannot read its release confirmation from the shared store: {}",
                    item.name,
                    crate::causes::line(&err)
                ),
            })?;
        match found {
            None => Ok(None),
            Some(earlier) if earlier.digest == item.digest => Ok(Some(earlier.run_id)),
            Some(earlier) => Err(format!(
                "{id}: `{}` {version} was already published with other bytes (digest {}, these are {}) by run {} of stage `{}`, as `{}` on the shared store says; a released version is never published over",
                item.name,
                earlier.digest,
                item.digest,
                earlier.run_id,
                earlier.stage,
                remote.shared(&slot.key()),
            )),
        }
    }

    /// Writes the shared store's confirmation that this run published `item` (with a version,
    /// on a shared store). If another machine's came first, that is a warning: the file is
    /// published either way. `just_now`: this run published it a moment ago, rather than
    /// before it was resumed (when a confirmation for the same bytes is no news).
    async fn confirm_release(
        &self,
        id: &str,
        item: &publish::Item,
        version: Option<&str>,
        just_now: bool,
    ) -> Result<(), String> {
        let (Some(remote), Some(version)) = (&self.ctx.remote, version) else {
            return Ok(());
        };
        let slot = self.slot(id, item, version);
        let ours =
            releases::Confirmation::new(slot, &item.digest, &self.ctx.run.id, &self.stage().name);
        match releases::confirm(remote, &ours).await {
            Ok(None) => Ok(()),
            Ok(Some(theirs)) if theirs.run_id == ours.run_id => Ok(()),
            Ok(Some(theirs)) if theirs.digest == ours.digest && !just_now => Ok(()),
            Ok(Some(theirs)) => {
                let bytes = if theirs.digest == ours.digest {
                    "the same bytes"
                } else {
                    "other bytes"
                };
                tracing::warn!(
                    "{id}: `{}` {version}: run {} confirmed it on the shared store first, with {bytes}, while this run published it",
                    item.name,
                    theirs.run_id
                );
                Ok(())
            }
            // What holds the slot is unreadable; the file is published, which is what counts.
            Err(err @ RemoteError::Damaged { .. }) => {
                tracing::warn!("{}", crate::causes::line(&err));
                Ok(())
            }
            Err(err) => Err(format!(
                "{id}: `{}` is published, but its confirmation could not be written to the shared store: {}; `murphy resume` writes it",
                item.name,
                crate::causes::line(&err)
            )),
        }
    }

    /// The SHA-256 of each file this run archived: publishing sends those very bytes.
    fn archived_digests(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Ok(records) = journal::read(&self.ctx.run.journal_path()) else {
            return out;
        };
        for record in records {
            if let Event::Archived { path, .. } = record.event
                && let Ok(bytes) = std::fs::read(Path::new(&path).join("manifest.json"))
                && let Ok(manifest) =
                    serde_json::from_slice::<archive::manifest::BuildManifest>(&bytes)
            {
                out.extend(manifest.files.into_iter().map(|f| (f.path, f.sha256)));
            }
        }
        out
    }

    /// A `command` target: `check` (if any) says whether it is published already; then the
    /// command runs in the project with the stage's environment, its output in the log.
    async fn publish_command(
        &self,
        run: &str,
        check: Option<&str>,
        item: &publish::Item,
    ) -> Result<publish::Confirmed, String> {
        let fill = |template: &str| template.replace("{file}", &shell_quote(&item.name));
        let env = self.stage_env().await?;
        let log_path = self.ctx.run.log_path(&self.stage().name);
        let output = Arc::new(Output::new(log_path, None));
        // A publish is logged even when it prints nothing: what ran is the record of it.
        output.keep();
        let cancel = self.cancel.clone();
        let run_one = |command: String, mut cancel: watch::Receiver<bool>| {
            let output = output.clone();
            let env = env.clone();
            async move {
                output.line(format!("$ {command}\n").as_bytes());
                let invocation = self.stage().shell.command(&command, &self.ctx.run.path)?;
                let root = &self.ctx.plan.root;
                process::run(&invocation, root, &env, output, None, &mut cancel).await
            }
        };
        if let Some(check) = check {
            match run_one(fill(check), cancel.clone()).await {
                Ok(Ended::Exited(status)) if status.success() => {
                    return Ok(publish::Confirmed::AlreadyPresent);
                }
                Ok(Ended::Exited(_)) => {}
                Ok(_) => return Err("command: interrupted while checking".into()),
                Err(err) => return Err(format!("command: cannot run `{check}`: {err}")),
            }
        }
        match run_one(fill(run), cancel.clone()).await {
            Ok(Ended::Exited(status)) if status.success() => Ok(publish::Confirmed::Uploaded),
            Ok(Ended::Exited(status)) => Err(format!(
                "command: `{run}` failed ({status}); see `murphy logs`"
            )),
            Ok(_) => Err("command: interrupted".into()),
            Err(err) => Err(format!("command: cannot run `{run}`: {err}")),
        }
    }
}

/// `'a b'`: one shell word, whatever the path holds.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}
