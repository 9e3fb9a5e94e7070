//! `murphy release --dry-run`: what a tag run would publish, where, and which gates hold, on
//! any machine, touching no network.

use std::path::Path;

use super::{Cli, load_plan, pipeline_file, state_dir};
use crate::change::{self, Change};
use crate::cli::error::{Error, exit};
use crate::environment;
use crate::plan::{self, Target};
use crate::publish;
use crate::records::{RunView, StageState};
use crate::store::Store;
use crate::trigger::Trigger;
use crate::version;

#[derive(Debug, clap::Args)]
pub(super) struct ReleaseArgs {
    /// Show what a tag run would do (a release itself is a tag run: push a tag, or
    /// `murphy run --trigger tag`)
    #[arg(long, required = true)]
    dry_run: bool,
    /// The tag to imagine [default: the release tag at HEAD]
    #[arg(long, value_name = "TAG")]
    tag: Option<String>,
    /// The secrets file to check [default: secrets.yml in the state directory]
    #[arg(long = "secrets", env = "MURPHY_SECRETS_FILE", value_name = "FILE")]
    secrets: Option<std::path::PathBuf>,
}

pub(super) fn release(cli: &Cli, args: &ReleaseArgs) -> Result<i32, Error> {
    let plan = load_plan(cli, &pipeline_file(cli)?)?;
    let state = state_dir(cli)?;
    let env = environment::outer();
    let request = change::Request {
        trigger: Some(Trigger::Tag),
        ..change::Request::default()
    };
    let mut change = match change::collect(&plan, &env, &request, state.root()) {
        Ok(change) => change,
        Err(change::ChangeError::NoTag(pattern)) => {
            if args.tag.is_none() {
                println!(
                    "no release tag (`{pattern}`) at HEAD: showing a tag run with version `dev` (give --tag to imagine one)"
                );
            }
            // The tag is imagined; the commit it would be on is HEAD, as it is.
            let here = change::Request {
                trigger: Some(Trigger::Local),
                ..change::Request::default()
            };
            Change {
                trigger: Trigger::Tag,
                version: None,
                ..change::collect(&plan, &env, &here, state.root())?
            }
        }
        Err(err) => return Err(err.into()),
    };
    if let Some(tag) = &args.tag {
        change.version = Some(
            version::from_tag(tag, plan.release_tags.literal_prefix())
                .map_err(change::ChangeError::from)?,
        );
        change.tag = Some(tag.clone());
    }
    let version = change.version.as_ref().map(|v| v.text.clone());
    println!(
        "a tag run of `{}`{}:",
        plan.name,
        match (&change.tag, &version) {
            (Some(tag), Some(v)) => format!(" for {tag} (version {v})"),
            _ => String::new(),
        }
    );
    let situation = change.situation();
    let store = Store::new(state.root());
    let secrets_file = args
        .secrets
        .clone()
        .unwrap_or_else(|| state.root().join("secrets.yml"));
    let head = change.git.as_ref().and_then(|g| g.sha.clone());
    let runs = state.list().unwrap_or_default();
    // What would stop the release: each is also shown where it belongs above.
    let mut stops = Vec::new();
    // Collected for a tag at HEAD; an imagined tag's change was collected as a local one.
    let dirty = if change.git.as_ref().is_some_and(|g| g.worktree_checked) {
        change::dirty_release(&change)
    } else {
        change::dirty_release_now(&change, &plan.root)
    };
    if let Some(why) = dirty {
        println!("\nthe working tree is not clean: {why}");
        stops.push(format!(
            "{why} (a tag run refuses that without --allow-dirty)"
        ));
    }
    let mut any = false;
    for stage in plan.stages.iter().filter(|s| !s.publish.is_empty()) {
        any = true;
        match stage.when.as_ref().map(|w| w.check(&situation)) {
            Some(Err(why)) => {
                println!("\nstage `{}` would not publish: {why}", stage.name);
                continue;
            }
            _ => println!("\nstage `{}` would publish:", stage.name),
        }
        for &required in &stage.requires {
            let required = &plan.stages[required];
            let name = &required.name;
            let last = head
                .as_deref()
                .and_then(|sha| last_result(&runs, name, sha));
            let holds = match required.when.as_ref().map(|w| w.check(&situation)) {
                Some(Err(why)) => {
                    stops.push(format!(
                        "stage `{}` requires `{name}`, which a tag run skips by its `when`",
                        stage.name
                    ));
                    format!("a tag run skips by its `when` ({why}): the gate cannot hold")
                }
                _ => match last {
                    Some((run, false)) => {
                        stops.push(format!(
                            "stage `{}` requires `{name}`, which failed for this commit in run {run}",
                            stage.name
                        ));
                        format!(
                            "failed for this commit in run {run}: the gate holds only if it passes"
                        )
                    }
                    Some((run, true)) => format!(
                        "succeeded for this commit in run {run} (it holds if its inputs are unchanged)"
                    ),
                    None if store.has_record(name) => {
                        "has a checkpoint (it holds if its inputs are unchanged)".to_owned()
                    }
                    None => "has no checkpoint yet: the run must make it succeed first".to_owned(),
                },
            };
            println!("  gate: requires `{name}`, which {holds}");
        }
        for name in plan.secrets.iter().chain(&stage.secrets) {
            let present = crate::secrets::load(std::slice::from_ref(name), &env, &secrets_file);
            let word = match present {
                Ok(_) => "present".to_owned(),
                Err(err) => {
                    stops.push(format!("secret `{name}` is not usable"));
                    format!("NOT usable: {err}")
                }
            };
            println!("  secret `{name}`: {word}");
        }
        let ids = publish::target_ids(&stage.publish);
        for (target, id) in stage.publish.iter().zip(&ids) {
            println!("  {id} -> {}", destination(target));
            describe_files(target, &plan, version.as_deref(), state.root());
        }
    }
    if !any {
        println!("\nno stage publishes anything (add a `publish:` block to a stage)");
    }
    if stops.is_empty() {
        return Ok(exit::SUCCESS);
    }
    stops.dedup();
    println!("\nthe release would stop:");
    for stop in &stops {
        println!("  - {stop}");
    }
    Ok(exit::FAILED)
}

/// The newest run on commit `sha` in which `stage` succeeded or failed, and whether it
/// succeeded.
fn last_result(runs: &[RunView], stage: &str, sha: &str) -> Option<(String, bool)> {
    let on_commit = |run: &&RunView| {
        run.change
            .as_ref()
            .and_then(|c| c.git.as_ref())
            .and_then(|g| g.sha.as_deref())
            == Some(sha)
    };
    // `runs` is newest first.
    runs.iter().filter(on_commit).find_map(|run| {
        let s = run.stages.iter().find(|s| s.name == stage)?;
        (s.state.is_success() || s.state == StageState::Failed)
            .then(|| (run.run_id.clone(), s.state.is_success()))
    })
}

fn destination(target: &Target) -> String {
    match target {
        Target::Pypi {
            repository_url,
            username,
            password_secret,
            ..
        } => {
            format!("{repository_url} as `{username}` with secret `{password_secret}`")
        }
        Target::Http {
            url, token_secret, ..
        } => match token_secret {
            Some(secret) => format!("PUT {url} with a bearer token from `{secret}`"),
            None => format!("PUT {url}"),
        },
        Target::GitPages {
            remote,
            branch,
            dir,
        } => format!("`{dir}` committed onto `{branch}` of {remote}"),
        Target::Command { run, check, .. } => match check {
            Some(check) => format!("`{run}` (skipped where `{check}` succeeds)"),
            None => format!("`{run}`"),
        },
    }
}

fn describe_files(target: &Target, plan: &plan::Plan, version: Option<&str>, state_dir: &Path) {
    let root = &plan.root;
    match publish::items(target, root, state_dir) {
        Ok(items) => {
            for item in items {
                let where_ = match target {
                    Target::Http { url, .. } => {
                        format!(" -> {}", publish::fill(url, &plan.name, version, &item))
                    }
                    _ => String::new(),
                };
                println!(
                    "    {} (sha256 {}){where_}",
                    item.name,
                    item.digest.get(..16).unwrap_or(&item.digest)
                );
            }
        }
        Err(why) => println!("    no files yet ({why}): the run makes them"),
    }
}
