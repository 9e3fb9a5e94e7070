//! `murphy lock`: pin the git includes in `pipeline.lock`, and move pins forward on request.

use super::{Cli, pipeline_file, state_dir};
use crate::cli::error::{Error, exit};
use crate::diagnostic::did_you_mean;
use crate::include::fetch::Cache;
use crate::include::lockfile::{self, Lockfile};
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
    // A lock is only worth writing for a pipeline that plans.
    Plan::new(&pipeline)?;
    let new = Lockfile::new(pipeline.pins.clone());
    let old_pins = old
        .as_ref()
        .map(|l| l.includes.as_slice())
        .unwrap_or_default();
    let mut changed = 0;
    let mut moved = false;
    for pin in &new.includes {
        match old_pins.iter().find(|o| o.same_include(pin)) {
            None => {
                changed += 1;
                println!("pinned {} at {}", pin.describe(), short(&pin.commit));
            }
            Some(before) if before.commit != pin.commit || before.digest != pin.digest => {
                changed += 1;
                moved = true;
                println!(
                    "moved {} from {} to {}",
                    pin.describe(),
                    short(&before.commit),
                    short(&pin.commit)
                );
            }
            Some(_) => {}
        }
    }
    if moved {
        // The whole pipeline before and after: a moved pin may change files it includes.
        match include::load(&file, &cache, Pins::Locked(old.as_ref())) {
            Ok(before) => {
                for line in include::diff::pipelines(&before, &pipeline) {
                    println!("  {line}");
                }
            }
            Err(e) => println!(
                "  (the stages cannot be compared: the old pins do not load: {})",
                e.to_string().lines().next().unwrap_or_default()
            ),
        }
    }
    for before in old_pins {
        if !new.includes.iter().any(|p| p.same_include(before)) {
            changed += 1;
            println!(
                "dropped {}: no file includes it any more",
                before.describe()
            );
        }
    }
    if changed == 0 && (old.is_some() || new.includes.is_empty()) {
        match new.includes.len() {
            0 if old.is_none() => println!("no git includes: nothing to lock"),
            n => println!("{} is up to date ({n} pinned)", lock_path.display()),
        }
        return Ok(exit::SUCCESS);
    }
    new.write(&lock_path).map_err(include::IncludeError::from)?;
    println!(
        "wrote {} ({} pinned); commit it with the project",
        lock_path.display(),
        new.includes.len()
    );
    Ok(exit::SUCCESS)
}
