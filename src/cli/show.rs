//! Views of the records for people: `runs`, `status` and `logs`.

use std::io::Write;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::{Cli, io_error};
use crate::cli::error::{Error, exit};
use crate::glance::glance;
use crate::records::{RunView, StageState, StateDir};
use crate::report::format_duration;
use crate::store::Store;

/// Brings runs from the shared store, when one is configured, into `state` before a view of
/// the records: run `run`, or every run (the latest may be another machine's). A store that
/// does not answer is a warning; the local records are still shown.
pub(super) fn pull(cli: &Cli, state: &StateDir, run: Option<&str>) -> Result<(), Error> {
    // `runs` works without a pipeline file, and with a broken one: the store is then said
    // to be unknown, and the local records shown.
    let url = match super::store::configured(cli) {
        Ok(url) => url,
        Err(err) => {
            tracing::warn!(
                "cannot tell the shared store: {}",
                super::error::Report(&err)
            );
            None
        }
    };
    let env = crate::environment::outer();
    let Some(remote) = super::store::open(cli, url.as_ref(), &env)? else {
        return Ok(());
    };
    let remote = crate::remote::runs::read_here(remote, &env);
    // The probe answers within seconds, so a store that is away does not hold a view up.
    let pulled = crate::session::runtime()?.block_on(async {
        remote.probe().await?;
        crate::remote::runs::pull(&remote, state, run).await
    });
    if let Err(err) = pulled {
        tracing::warn!("showing local runs only: {}", crate::causes::line(&err));
    }
    Ok(())
}

pub(super) fn logs(state: &StateDir, run: Option<&str>, stage: &str) -> Result<i32, Error> {
    let dir = state.find_run(run)?;
    let view = RunView::load(state, &dir)?;
    let Some(entry) = view.stages.iter().find(|s| s.name == stage) else {
        let names = view.stages.iter().map(|s| s.name.as_str());
        let hint = crate::diagnostic::did_you_mean(stage, names)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(Error::Usage(format!(
            "run {} has no stage `{stage}`{hint}",
            view.run_id
        )));
    };
    let mut path = dir.log_path(stage);
    // A restored stage did not run in this run: its log is that of the run that made the
    // checkpoint, if that run is still recorded.
    let maker = entry
        .fingerprint
        .as_deref()
        .filter(|_| entry.state == StageState::Cached)
        .and_then(|fp| Store::new(state.root()).made_by(fp))
        .filter(|id| *id != view.run_id);
    if let Some(maker) = maker {
        let Ok(made) = state.find_run(Some(&maker)) else {
            return Err(Error::Usage(format!(
                "stage `{stage}` was restored from its checkpoint in run {}; run {maker}, which made that checkpoint, is no longer recorded",
                view.run_id
            )));
        };
        eprintln!(
            "note: stage `{stage}` was restored from its checkpoint in run {}; this is the log of run {maker}, which made it",
            view.run_id
        );
        path = made.log_path(stage);
    }
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&bytes);
            Ok(exit::SUCCESS)
        }
        // A stage that succeeded without printing anything has no log file (see
        // `process::Output`).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && entry.state.is_success() => {
            eprintln!("note: stage `{stage}` printed nothing");
            Ok(exit::SUCCESS)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Usage(format!(
            "stage `{stage}` has no log in run {}: it was {}",
            view.run_id,
            entry.state.word()
        ))),
        Err(e) => Err(io_error(&format!("cannot read `{}`", path.display()), e)),
    }
}

pub(super) fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| io_error("cannot render JSON", std::io::Error::other(e)))?;
    println!("{text}");
    Ok(())
}

pub(super) fn print_runs(runs: &[RunView]) {
    let mut rows = vec![[
        "RUN".to_owned(),
        "STATUS".to_owned(),
        "TRIGGER".to_owned(),
        "STARTED".to_owned(),
        "DURATION".to_owned(),
        "STAGES".to_owned(),
        "DESCRIPTION".to_owned(),
    ]];
    for run in runs {
        let ok = run.stages.iter().filter(|s| s.state.is_success()).count();
        rows.push([
            run.run_id.clone(),
            run.status.word().to_owned(),
            run.trigger
                .map(|t| t.name().to_owned())
                .unwrap_or_else(|| "-".into()),
            local_time(run.started_at, "%Y-%m-%d %H:%M:%S"),
            millis(run.duration_ms),
            format!("{ok}/{} ok", run.stages.len()),
            run.description
                .as_deref()
                .map(first_line)
                .unwrap_or_default(),
        ]);
    }
    print_table(&rows);
}

/// The first line of a description, cut to fit a table.
fn first_line(text: &str) -> String {
    const WIDTH: usize = 60;
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > WIDTH {
        format!("{}...", line.chars().take(WIDTH - 3).collect::<String>())
    } else {
        line.to_owned()
    }
}

pub(super) fn show(view: &RunView, json: bool) -> Result<(), Error> {
    let glance = glance(view);
    if json {
        return print_json(&glance);
    }
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        for (i, line) in value.lines().enumerate() {
            let label = if i == 0 { name } else { "" };
            out.push_str(&format!("{label:<12} {line}\n"));
        }
    };
    field(
        "run",
        &format!(
            "{} of `{}`: {}{}",
            glance.run_id,
            glance.pipeline,
            glance.status.word(),
            glance
                .duration_ms
                .map(|ms| format!(" in {}", millis(Some(ms))))
                .unwrap_or_default()
        ),
    );
    field(
        "description",
        glance
            .description
            .unwrap_or("(none: see `murphy run --description`)"),
    );
    if let Some(trigger) = glance.trigger {
        let by = glance
            .ci
            .map(|ci| {
                let event = ci
                    .event
                    .as_deref()
                    .map(|e| format!(", {e}"))
                    .unwrap_or_default();
                format!(" ({}{event})", ci.provider.name())
            })
            .unwrap_or_default();
        field("trigger", &format!("{trigger}{by}"));
    }
    if let Some(version) = glance.version {
        let pre = if glance.prerelease == Some(true) {
            " (pre-release)"
        } else {
            ""
        };
        field("version", &format!("{version}{pre}"));
    }
    if let Some(commit) = &glance.commit {
        let sha = commit
            .sha
            .map(|s| s.get(..12).unwrap_or(s))
            .unwrap_or("(no commit yet)");
        let on = commit
            .branch
            .map(|b| format!(" on `{b}`"))
            .unwrap_or_else(|| " (detached)".into());
        let dirty = if commit.dirty == Some(true) {
            ", with uncommitted changes"
        } else {
            ""
        };
        let by = commit
            .author
            .map(|a| format!("\nby {a}"))
            .unwrap_or_default();
        let at = commit
            .committed_at
            .map(|t| format!(", {}", local_time(t, "%Y-%m-%d %H:%M")))
            .unwrap_or_default();
        let subject = commit.subject.map(|s| format!("\n{s}")).unwrap_or_default();
        field("commit", &format!("{sha}{on}{dirty}{by}{at}{subject}"));
    }
    let links = &glance.links;
    let mut lines = Vec::new();
    for (name, link) in [
        ("commit", &links.commit),
        ("diff", &links.diff),
        ("pr", &links.pr),
        ("ci run", &links.ci_run),
    ] {
        if let Some(link) = link {
            lines.push(format!("{name:<7} {link}"));
        }
    }
    if !lines.is_empty() {
        field("links", &lines.join("\n"));
    }
    let width = glance
        .stages
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    let stages: Vec<String> = glance
        .stages
        .iter()
        .map(|s| {
            let exit = match s.exit_code {
                Some(code) if code != 0 => format!("  exit {code}"),
                _ => String::new(),
            };
            format!(
                "{:<width$}  {:<14} {:>7}{exit}",
                s.name,
                s.state.word(),
                millis(s.duration_ms)
            )
        })
        .collect();
    field("stages", &stages.join("\n"));
    print!("{out}");
    Ok(())
}

pub(super) fn print_status(view: &RunView) {
    println!(
        "run {} of `{}`: {}, started {}{}",
        view.run_id,
        view.pipeline,
        view.status.word(),
        local_time(view.started_at, "%Y-%m-%d %H:%M:%S"),
        view.duration_ms
            .map(|ms| format!(", took {}", millis(Some(ms))))
            .unwrap_or_default()
    );
    let origins = view.stages.iter().any(|s| s.from.is_some());
    let mut rows = vec![vec![
        "STAGE".to_owned(),
        "STATE".to_owned(),
        "ATTEMPTS".to_owned(),
        "STARTED".to_owned(),
        "ACTIVE".to_owned(),
        "WALL".to_owned(),
        "EXIT".to_owned(),
        "NOTE".to_owned(),
    ]];
    if origins {
        rows[0].insert(1, "FROM".to_owned());
    }
    for stage in &view.stages {
        let mut row = vec![
            stage.name.clone(),
            stage.state.word().to_owned(),
            stage.attempts.to_string(),
            stage
                .started_at
                .map(|t| local_time(t, "%H:%M:%S%.3f"))
                .unwrap_or_else(|| "-".into()),
            millis(stage.active_ms),
            millis(stage.wall_ms),
            match (stage.exit_code, stage.signal) {
                (Some(code), _) => code.to_string(),
                (None, Some(signal)) => format!("signal {signal}"),
                _ => "-".into(),
            },
            match (&stage.reason, &stage.why) {
                (Some(reason), _) => reason.clone(),
                (None, Some(why)) => format!("ran because {why}"),
                (None, None) => String::new(),
            },
        ];
        if origins {
            row.insert(1, stage.from.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    print_table(&rows);
}

fn millis(ms: Option<u64>) -> String {
    ms.map(|ms| format_duration(std::time::Duration::from_millis(ms)))
        .unwrap_or_else(|| "-".into())
}

fn local_time(at: Timestamp, format: &str) -> String {
    at.to_zoned(TimeZone::system()).strftime(format).to_string()
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub(super) fn print_table<R: AsRef<[String]>>(rows: &[R]) {
    let columns = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.as_ref()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.as_ref().iter().enumerate() {
            line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}
