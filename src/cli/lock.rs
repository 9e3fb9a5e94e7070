//! `murphy lock`: pin the git includes in `pipeline.lock`, and move pins forward on request.

use super::{Cli, pipeline_file, state_dir};
use crate::cli::error::{Error, exit};
use crate::diagnostic::did_you_mean;
use crate::include::fetch::Cache;
use crate::include::lockfile::{self, Lockfile, Pin};
use crate::include::{self, Pins, short};
use crate::plan::Plan;

#[derive(Debug, clap::Args)]
pub(super) struct LockArgs {
    /// Move pins forward to their ref's current commit: every include's, or the NAMEs'
    #[arg(long)]
    update: bool,
    /// Includes to move (by `name:`, default the repository's name); needs --update
    #[arg(value_name = "NAME", requires = "update")]
    names: Vec<String>,
    /// One JSON object: `{lockfile, written, pins, changes: [{kind, name, include, from, to}],
    /// stage_changes}`
    #[arg(long)]
    json: bool,
}

pub(super) fn lock(cli: &Cli, args: &LockArgs) -> Result<i32, Error> {
    let file = pipeline_file(cli)?;
    let state = state_dir(cli)?;
    let lock_path = lockfile::path_for(&file);
    let old = Lockfile::of_pipeline(&file).map_err(include::IncludeError::from)?;
    let cache = Cache::of_state_dir(state.root());
    let update = match (args.update, args.names.is_empty()) {
        (false, _) => Some(&[][..]),
        (true, true) => None,
        (true, false) => Some(args.names.as_slice()),
    };
    let pipeline = include::load(
        &file,
        &cache,
        Pins::Refresh {
            old: old.as_ref(),
            update,
        },
    )?;
    for name in update.unwrap_or_default() {
        if !pipeline.pins.iter().any(|p| &p.name == name) {
            let hint = did_you_mean(name, pipeline.pins.iter().map(|p| p.name.as_str()))
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            return Err(Error::Usage(format!(
                "no git include is named `{name}`{hint}"
            )));
        }
    }
    let new = Lockfile::new(pipeline.pins.clone());
    let old_pins = old
        .as_ref()
        .map(|l| l.includes.as_slice())
        .unwrap_or_default();
    let mut changes: Vec<PinChange> = Vec::new();
    for pin in &new.includes {
        match old_pins.iter().find(|o| o.same_include(pin)) {
            None => changes.push(PinChange::new("pinned", pin, None, Some(pin))),
            Some(before) if before.commit != pin.commit || before.digest != pin.digest => {
                changes.push(PinChange::new("moved", pin, Some(before), Some(pin)))
            }
            Some(_) => {}
        }
    }
    let mut stage_changes = Vec::new();
    if changes.iter().any(|c| c.kind == "moved") {
        // The whole pipeline before and after: a moved pin may change files it includes.
        match include::load(&file, &cache, Pins::Locked(old.as_ref())) {
            Ok(before) => stage_changes = include::diff::pipelines(&before, &pipeline),
            Err(e) => stage_changes.push(format!(
                "(the stages cannot be compared: the old pins do not load: {})",
                e.to_string().lines().next().unwrap_or_default()
            )),
        }
    }
    for before in old_pins {
        if !new.includes.iter().any(|p| p.same_include(before)) {
            changes.push(PinChange::new("dropped", before, Some(before), None));
        }
    }
    // A lock is only worth writing for a pipeline that plans.
    Plan::new(pipeline)?;
    let write = !changes.is_empty() || (old.is_none() && !new.includes.is_empty());
    if write {
        new.write(&lock_path).map_err(include::IncludeError::from)?;
    }
    if args.json {
        super::show::print_json(&serde_json::json!({
            "lockfile": lock_path,
            "written": write,
            "pins": new.includes,
            "changes": changes,
            "stage_changes": stage_changes,
        }))?;
        return Ok(exit::SUCCESS);
    }
    let (dropped, kept): (Vec<&PinChange>, Vec<&PinChange>) =
        changes.iter().partition(|c| c.kind == "dropped");
    for change in kept {
        match change.kind {
            "pinned" => println!("pinned {} at {}", change.include, change.short_to()),
            _ => println!(
                "moved {} from {} to {}",
                change.include,
                change.short_from(),
                change.short_to()
            ),
        }
    }
    for line in &stage_changes {
        println!("  {line}");
    }
    for change in dropped {
        println!("dropped {}: no file includes it any more", change.include);
    }
    if !write {
        match new.includes.len() {
            0 if old.is_none() => println!("no git includes: nothing to lock"),
            n => println!("{} is up to date ({n} pinned)", lock_path.display()),
        }
        return Ok(exit::SUCCESS);
    }
    println!(
        "wrote {} ({} pinned); commit it with the project",
        lock_path.display(),
        new.includes.len()
    );
    Ok(exit::SUCCESS)
}

/// One include whose pin `murphy lock` added, moved or dropped.
#[derive(serde::Serialize)]
struct PinChange {
    /// `pinned`, `moved` or `dropped`.
    kind: &'static str,
    name: String,
    include: String,
    from: Option<String>,
    to: Option<String>,
}

impl PinChange {
    fn new(kind: &'static str, pin: &Pin, from: Option<&Pin>, to: Option<&Pin>) -> PinChange {
        PinChange {
            kind,
            name: pin.name.clone(),
            include: pin.describe(),
            from: from.map(|p| p.commit.clone()),
            to: to.map(|p| p.commit.clone()),
        }
    }

    fn short_from(&self) -> &str {
        short(self.from.as_deref().unwrap_or_default())
    }

    fn short_to(&self) -> &str {
        short(self.to.as_deref().unwrap_or_default())
    }
}
