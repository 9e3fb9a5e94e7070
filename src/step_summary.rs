//! A run as Markdown for GitHub Actions' job summary: appended to the file
//! `GITHUB_STEP_SUMMARY` names, at the end of a run and of a resume.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::records::{RunView, StageState};
use crate::report::format_duration;

/// The summary of `view`: a heading, one table row per stage, the change's links and what
/// was published.
pub fn render(view: &RunView) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### murphy: `{}` run `{}` {}\n",
        cell(&view.pipeline),
        view.run_id,
        view.status.word()
    );
    md.push_str("| stage | state | time | note |\n| --- | --- | --- | --- |\n");
    for stage in &view.stages {
        let mark = match stage.state {
            StageState::Succeeded => "✅",
            StageState::Cached => "♻️",
            StageState::Failed | StageState::TimedOut | StageState::Interrupted => "❌",
            _ => "⏭️",
        };
        let time = stage
            .active_ms
            .or(stage.duration_ms)
            .map(|ms| format_duration(Duration::from_millis(ms)))
            .unwrap_or_default();
        let note = match (stage.state, stage.exit_code, &stage.reason) {
            (StageState::Cached, ..) => "restored from its checkpoint".to_owned(),
            (_, Some(code), _) if code != 0 => format!("exit {code}"),
            (_, _, Some(reason)) => reason.clone(),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "| `{}` | {mark} {} | {time} | {} |",
            cell(&stage.name),
            stage.state.word(),
            cell(&note)
        );
    }
    if let Some(change) = &view.change {
        let links = change.links();
        let sha = change.git.as_ref().and_then(|g| g.sha.as_deref());
        let pr = change.ci.as_ref().and_then(|c| c.pr_number.as_deref());
        let mut parts = Vec::new();
        if let Some(url) = &links.ci_run {
            parts.push(format!("[CI run]({url})"));
        }
        if let Some(url) = &links.commit {
            let short = sha.map_or("commit", |s| s.get(..7).unwrap_or(s));
            parts.push(format!("[commit {short}]({url})"));
        }
        if let Some(url) = &links.pr {
            parts.push(match pr {
                Some(n) => format!("[pull request #{n}]({url})"),
                None => format!("[pull request]({url})"),
            });
        }
        if !parts.is_empty() {
            let _ = writeln!(md, "\n{}", parts.join(" · "));
        }
    }
    if !view.published.is_empty() {
        md.push_str("\n| published | to | by |\n| --- | --- | --- |\n");
        for p in &view.published {
            let how = match p.outcome {
                crate::publish::Confirmed::Uploaded => "uploaded",
                crate::publish::Confirmed::AlreadyPresent => "already there",
            };
            let _ = writeln!(
                md,
                "| `{}` ({how}) | {} | `{}` |",
                cell(&p.file),
                cell(&p.target),
                cell(&p.stage)
            );
        }
    }
    md.push('\n');
    crate::secrets::redact(&md).into_owned()
}

/// Appends `text` to the summary file: other steps of the job write there too.
pub fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// Text for one table cell: a `|` would end it, a line break the table.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn cells_stay_cells() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
