//! Views of the records for people: `runs`, `status` and `logs`.

use std::io::Write;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::io_error;
use crate::error::{Error, exit};
use crate::records::{RunView, StageState, StateDir};
use crate::report::format_duration;

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
    let path = dir.log_path(stage);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&bytes);
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
        "STARTED".to_owned(),
        "DURATION".to_owned(),
        "STAGES".to_owned(),
        "PIPELINE".to_owned(),
    ]];
    for run in runs {
        let ok = run
            .stages
            .iter()
            .filter(|s| s.state == StageState::Succeeded)
            .count();
        rows.push([
            run.run_id.clone(),
            format!("{:?}", run.status).to_lowercase(),
            local_time(run.started_at, "%Y-%m-%d %H:%M:%S"),
            millis(run.duration_ms),
            format!("{ok}/{} ok", run.stages.len()),
            run.pipeline.clone(),
        ]);
    }
    print_table(&rows);
}

pub(super) fn print_status(view: &RunView) {
    println!(
        "run {} of `{}`: {}, started {}{}",
        view.run_id,
        view.pipeline,
        format!("{:?}", view.status).to_lowercase(),
        local_time(view.started_at, "%Y-%m-%d %H:%M:%S"),
        view.duration_ms
            .map(|ms| format!(", took {}", millis(Some(ms))))
            .unwrap_or_default()
    );
    let mut rows = vec![[
        "STAGE".to_owned(),
        "STATE".to_owned(),
        "ATTEMPTS".to_owned(),
        "STARTED".to_owned(),
        "DURATION".to_owned(),
        "EXIT".to_owned(),
        "NOTE".to_owned(),
    ]];
    for stage in &view.stages {
        rows.push([
            stage.name.clone(),
            stage.state.word().to_owned(),
            stage.attempts.to_string(),
            stage
                .started_at
                .map(|t| local_time(t, "%H:%M:%S%.3f"))
                .unwrap_or_else(|| "-".into()),
            millis(stage.duration_ms),
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
        ]);
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
pub(super) fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}
