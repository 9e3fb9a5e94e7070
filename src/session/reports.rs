//! What a run leaves for CI at its end: its table in `GITHUB_STEP_SUMMARY` and its JUnit
//! report (`--junit`), with the stages' own reports that are this run's.

use std::collections::BTreeMap;
use std::path::Path;

use super::Setup;
use crate::executor::Context;
use crate::records::RunView;

/// The run's end for CI: the Markdown appended to `GITHUB_STEP_SUMMARY`, and the JUnit
/// report `--junit` asked for. Neither changes how the run went: a problem is a warning.
pub(super) fn write(setup: &Setup, ctx: &Context, env: &BTreeMap<String, String>) {
    let summary = env.get("GITHUB_STEP_SUMMARY").filter(|v| !v.is_empty());
    if summary.is_none() && setup.junit.is_none() {
        return;
    }
    let view = match RunView::load(&setup.state, &ctx.run) {
        Ok(view) => view,
        Err(err) => {
            ctx.reporter.note(&format!(
                "warning: cannot read the run's records for its reports: {err}"
            ));
            return;
        }
    };
    if let Some(path) = summary {
        let text = crate::step_summary::render(&view);
        if let Err(err) = crate::step_summary::append(Path::new(path), &text) {
            ctx.reporter.note(&format!(
                "warning: cannot append to GITHUB_STEP_SUMMARY `{path}`: {err}"
            ));
        }
    }
    if let Some(path) = &setup.junit {
        use crate::records::StageState;
        // A stage that did not run this time may have left an old report behind, and one that
        // failed before writing its report would show the last run's: a report counts only if
        // it was written since the stage started, or, for a restored stage, is one of the
        // outputs its checkpoint put back.
        let reports: Vec<crate::junit::StageReport> = (view.stages.iter())
            .filter_map(|s| {
                let id = ctx.plan.stage_id(&s.name)?;
                let stage = &ctx.plan.stages[id];
                let path = stage.junit.clone()?;
                let fresh = match s.state {
                    StageState::Succeeded | StageState::Failed | StageState::TimedOut => {
                        written_since(&ctx.plan.root.join(&path), s.started_at)
                    }
                    StageState::Cached => stage
                        .outputs
                        .iter()
                        .any(|o| path.starts_with(crate::inputs::clean(o))),
                    _ => false,
                };
                if !fresh {
                    if s.state != StageState::Cached {
                        ctx.reporter.note(&format!(
                            "warning: stage `{}` wrote no JUnit report `{}` this time; the old one is left out",
                            s.name,
                            path.display()
                        ));
                    }
                    return None;
                }
                Some(crate::junit::StageReport {
                    stage: s.name.clone(),
                    path,
                })
            })
            .collect();
        let mut warnings = Vec::new();
        let xml = crate::junit::render(&view, &ctx.run, &ctx.plan.root, &reports, &mut warnings);
        for warning in warnings {
            ctx.reporter.note(&format!("warning: {warning}"));
        }
        if let Err(err) = crate::atomic_file::write_shared(path, xml.as_bytes()) {
            // Asked for by name, so said even under `--quiet`; the run's result stands.
            eprintln!(
                "error: cannot write the JUnit report `{}`: {err}",
                path.display()
            );
        }
    }
}

/// Whether the file at `path` is not older than `since`. A missing file passes: reading it
/// then says it is missing.
fn written_since(path: &Path, since: Option<jiff::Timestamp>) -> bool {
    let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) else {
        return true;
    };
    // File times come from the kernel's coarse clock, up to a tick (10 ms at most) behind.
    let modified = jiff::Timestamp::try_from(modified + std::time::Duration::from_millis(10)).ok();
    matches!((modified, since), (Some(m), Some(since)) if m >= since)
}
