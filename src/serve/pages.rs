//! The dashboard's pages: plain HTML made here, a little JS and CSS served from the binary.
//!
//! `/` the changes (each commit with its pull requests, tags and every trigger it went
//! through), `/runs/{id}` one run (stages, logs, build, publications), `/archive` the builds.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::App;
use super::ansi::{escape, to_html};
use super::api::{blocking, load_run};
use crate::archive::sizes;
use crate::index::{EventRow, RunRow};
use crate::records::RunState;

const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// The most of a stage's log a page shows (its end); the whole log is a link away.
const LOG_TAIL: u64 = 256 * 1024;

/// The triggers a change goes through, in order.
const TRIGGERS: [&str; 4] = ["pr", "push", "nightly", "tag"];

pub(super) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

pub(super) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

pub(super) fn duration(ms: Option<u64>) -> String {
    ms.map(|ms| crate::report::format_duration(std::time::Duration::from_millis(ms)))
        .unwrap_or_else(|| "-".into())
}

fn page(title: &str, body_attrs: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{} · murphy</title>\
         <link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
         <body{body_attrs}><nav><a href=\"/\">changes</a> <a href=\"/archive\">archive</a></nav>\
         {body}<script src=\"/assets/app.js\"></script></body></html>\n",
        escape(title)
    ))
}

fn link(url: Option<&str>, text: &str) -> String {
    match url {
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
            format!("<a href=\"{}\">{}</a>", escape(url), escape(text))
        }
        _ => escape(text),
    }
}

fn state(word: &str) -> String {
    format!(
        "<span class=\"state s-{}\">{}</span>",
        escape(word),
        escape(word)
    )
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn error_page(status: StatusCode, message: &str) -> Response {
    (
        status,
        page("error", "", &format!("<p>{}</p>", escape(message))),
    )
        .into_response()
}

/// `/`: every recent change and where it stands in each trigger.
pub(super) async fn changes(State(app): State<App>) -> Response {
    let read = blocking(move || {
        app.refresh_index();
        let index = app.index.lock().unwrap_or_else(|e| e.into_inner());
        let mut changes = Vec::new();
        for sha in index.recent_commits(100)? {
            let history = index.commit(&sha)?;
            changes.push((sha, history));
        }
        let runs = index.recent_runs(50)?;
        Ok::<_, crate::index::IndexError>((changes, runs))
    })
    .await;
    let (changes, runs) = match read {
        Ok(Ok(found)) => found,
        Ok(Err(err)) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                &crate::causes::line(&err),
            );
        }
        Err(response) => return response,
    };
    let mut body = String::from("<h1>Changes</h1>");
    if changes.is_empty() {
        body.push_str("<p>No change recorded yet.</p>");
    }
    for (sha, history) in &changes {
        body.push_str(&change(sha, &history.runs, &history.events));
    }
    body.push_str("<h2>Latest runs</h2><table class=\"runs\"><tr><th>run</th><th>status</th><th>trigger</th><th>started</th><th>took</th><th>description</th></tr>");
    for run in &runs {
        let _ = write!(
            body,
            "<tr><td><a href=\"/runs/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            state(&run.status),
            escape(run.trigger.as_deref().unwrap_or("-")),
            escape(&run.started_at),
            duration(run.duration_ms.map(|d| d as u64)),
            escape(first_line(
                run.description.as_deref().or(run.subject.as_deref())
            )),
            id = escape(&run.run_id),
        );
    }
    body.push_str("</table>");
    page("changes", "", &body).into_response()
}

fn first_line(text: Option<&str>) -> &str {
    text.and_then(|t| t.lines().next()).unwrap_or_default()
}

/// One commit: what it is, its pull requests and tags, each trigger's latest run, the events.
fn change(sha: &str, runs: &[RunRow], events: &[EventRow]) -> String {
    let mut out = format!("<section class=\"change\" data-commit=\"{}\">", escape(sha));
    let latest = runs.last();
    let description = runs
        .iter()
        .rev()
        .find_map(|r| r.description.as_deref().or(r.subject.as_deref()))
        .or_else(|| events.iter().find_map(|e| e.title.as_deref()));
    let commit_link = runs.iter().find_map(|r| r.commit_link.as_deref());
    let _ = write!(
        out,
        "<h2>{} {}</h2>",
        link(commit_link, short(sha)),
        escape(first_line(description))
    );
    let mut facts = Vec::new();
    if let Some(branch) = latest.and_then(|r| r.branch.as_deref()) {
        facts.push(format!("branch <code>{}</code>", escape(branch)));
    }
    let mut prs: Vec<(String, Option<&str>)> = runs
        .iter()
        .filter_map(|r| r.pr.clone().map(|p| (p, r.pr_link.as_deref())))
        .chain(events.iter().filter_map(|e| {
            e.pr.clone()
                .map(|p| (p, e.url.as_deref().filter(|_| e.kind.starts_with("pr_"))))
        }))
        .collect();
    prs.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.is_some().cmp(&a.1.is_some())));
    prs.dedup_by(|a, b| a.0 == b.0);
    for (pr, url) in &prs {
        facts.push(format!("PR {}", link(*url, &format!("#{pr}"))));
    }
    let mut tags: Vec<&str> = runs.iter().filter_map(|r| r.tag.as_deref()).collect();
    tags.sort_unstable();
    tags.dedup();
    for tag in tags {
        facts.push(format!("tag <code>{}</code>", escape(tag)));
    }
    if !facts.is_empty() {
        let _ = write!(out, "<p class=\"facts\">{}</p>", facts.join(" · "));
    }
    out.push_str("<ol class=\"triggers\">");
    let others = runs
        .iter()
        .filter_map(|r| r.trigger.as_deref())
        .filter(|t| !TRIGGERS.contains(t));
    let mut triggers: Vec<&str> = TRIGGERS.iter().copied().chain(others).collect();
    triggers.dedup();
    let mut seen = std::collections::BTreeSet::new();
    for trigger in triggers {
        if !seen.insert(trigger) {
            continue;
        }
        let run = runs
            .iter()
            .rev()
            .find(|r| r.trigger.as_deref() == Some(trigger));
        let _ = write!(
            out,
            "<li class=\"trigger\" data-trigger=\"{}\"><b>{}</b> ",
            escape(trigger),
            escape(trigger)
        );
        match run {
            Some(run) => {
                let _ = write!(
                    out,
                    "{} <a href=\"/runs/{id}\">{id}</a><span class=\"chips\">",
                    state(&run.status),
                    id = escape(&run.run_id)
                );
                for stage in &run.stages {
                    let _ = write!(
                        out,
                        "<span class=\"chip s-{}\" title=\"{}: {}\">{}</span>",
                        escape(&stage.state),
                        escape(&stage.name),
                        escape(&stage.state),
                        escape(&stage.name)
                    );
                }
                out.push_str("</span>");
            }
            None => out.push_str("<span class=\"state s-none\">not yet</span>"),
        }
        out.push_str("</li>");
    }
    out.push_str("</ol>");
    if !events.is_empty() {
        out.push_str("<ul class=\"events\">");
        for e in events {
            let what = format!(
                "{} {}{}",
                e.provider,
                e.kind,
                e.status
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            );
            let _ = write!(
                out,
                "<li class=\"event\">{} {} <small>{}</small></li>",
                link(e.url.as_deref(), &what),
                escape(e.title.as_deref().unwrap_or_default()),
                escape(&e.at)
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");
    out
}

/// `/runs/{id}`: one run whole.
pub(super) async fn run(State(app): State<App>, Path(id): Path<String>) -> Response {
    let view = match load_run(&app, id).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    let glance = crate::glance::glance(&view);
    let reader = app.clone();
    let dir = reader.state.recorded_run(&view.run_id);
    let names: Vec<String> = view.stages.iter().map(|s| s.name.clone()).collect();
    let wanted: Vec<u64> = view.stages.iter().filter_map(|s| s.build).collect();
    let (logs, builds) = match blocking(move || {
        let logs: Vec<Option<String>> = names
            .iter()
            .map(|n| dir.as_ref().and_then(|d| read_tail(&d.log_path(n))))
            .collect();
        let builds: Vec<_> = reader
            .builds()
            .into_iter()
            .filter(|b| wanted.contains(&b.build))
            .collect();
        (logs, builds)
    })
    .await
    {
        Ok(found) => found,
        Err(response) => return response,
    };
    let live = view.status == RunState::Running;
    let mut body = format!(
        "<h1>Run <code>{}</code> <span id=\"run-status\">{}</span> <span id=\"run-duration\">{}</span></h1>",
        escape(&view.run_id),
        state(view.status.word()),
        duration(view.duration_ms)
    );
    let _ = write!(
        body,
        "<p class=\"description\">{}</p>",
        escape(glance.description.unwrap_or("(no description)"))
    );
    let mut facts = vec![format!("pipeline <code>{}</code>", escape(glance.pipeline))];
    if let Some(t) = glance.trigger {
        facts.push(format!("trigger <b>{}</b>", escape(t.name())));
    }
    if let Some(v) = glance.version {
        facts.push(format!("version <code>{}</code>", escape(v)));
    }
    if let Some(c) = &glance.commit {
        if let Some(sha) = c.sha {
            facts.push(format!(
                "commit {}",
                link(glance.links.commit.as_deref(), short(sha))
            ));
        }
        if let Some(b) = c.branch {
            facts.push(format!("branch <code>{}</code>", escape(b)));
        }
    }
    for (name, url) in [
        ("diff", &glance.links.diff),
        ("pull request", &glance.links.pr),
        ("CI run", &glance.links.ci_run),
    ] {
        if let Some(url) = url {
            facts.push(link(Some(url), name));
        }
    }
    let _ = write!(body, "<p class=\"facts\">{}</p>", facts.join(" · "));
    body.push_str(
        "<h2>Stages</h2><table class=\"stages\"><tr><th>stage</th><th>state</th><th>took</th><th>exit</th><th>note</th></tr>",
    );
    for stage in &view.stages {
        let _ = write!(
            body,
            "<tr data-stage=\"{name}\"><td><a href=\"#log-{name}\">{name}</a></td><td class=\"stage-state\">{}</td><td class=\"stage-duration\">{}</td><td>{}</td><td>{}</td></tr>",
            state(stage.state.word()),
            duration(stage.duration_ms),
            stage.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            escape(
                stage
                    .reason
                    .as_deref()
                    .or(stage.why.as_deref())
                    .unwrap_or_default()
            ),
            name = escape(&stage.name),
        );
    }
    body.push_str("</table>");
    for build in &builds {
        body.push_str(&build_section(build));
    }
    if !view.published.is_empty() {
        body.push_str("<h2>Published</h2><ul class=\"published\">");
        for p in &view.published {
            let _ = write!(
                body,
                "<li><code>{}</code> to <b>{}</b> (stage {}, sha256 <code>{}</code>)</li>",
                escape(&p.file),
                escape(&p.target),
                escape(&p.stage),
                escape(short(&p.digest))
            );
        }
        body.push_str("</ul>");
    }
    body.push_str("<h2>Logs</h2>");
    for (stage, log) in view.stages.iter().zip(&logs) {
        let name = escape(&stage.name);
        let _ = write!(
            body,
            "<details id=\"log-{name}\" class=\"log\"><summary>{name} <a href=\"/runs/{run}/logs/{name}\">raw</a></summary><pre>{}</pre></details>",
            log.as_deref()
                .map(to_html)
                .unwrap_or_else(|| "(no log)".into()),
            run = escape(&view.run_id),
        );
    }
    let attrs = format!(
        " data-run=\"{}\" data-live=\"{}\"",
        escape(&view.run_id),
        if live { "1" } else { "0" }
    );
    page(&format!("run {}", view.run_id), &attrs, &body).into_response()
}

/// The end of a log file, as text.
fn read_tail(path: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(LOG_TAIL);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Some(if start > 0 {
        format!("(the last {} of the log)\n{text}", sizes::human(LOG_TAIL))
    } else {
        text
    })
}

fn build_section(m: &crate::archive::manifest::BuildManifest) -> String {
    let mut out = format!(
        "<h2>Build {} <code>{}</code></h2><p>{} · stage {} · <a href=\"/archive/{}/manifest.json\">manifest and provenance</a> · bundle sha256 <code>{}</code></p><ul class=\"files\">",
        m.build,
        escape(&m.name),
        escape(&m.created_at.to_string()),
        escape(&m.stage),
        m.build,
        escape(short(&m.bundle_sha256)),
    );
    for f in &m.files {
        let _ = write!(
            out,
            "<li><a href=\"/archive/{}/files/{}\">{}</a> {} <code>{}</code></li>",
            m.build,
            escape(&f.path),
            escape(&f.path),
            sizes::human(f.size),
            escape(short(&f.sha256))
        );
    }
    out.push_str("</ul>");
    out
}

/// `/runs/{id}/logs/{stage}`: the raw log.
pub(super) async fn log(
    State(app): State<App>,
    Path((id, stage)): Path<(String, String)>,
) -> Response {
    let view = match load_run(&app, id).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    if !view.stages.iter().any(|s| s.name == stage) {
        return error_page(StatusCode::NOT_FOUND, &format!("no stage `{stage}`"));
    }
    let Some(dir) = app.state.recorded_run(&view.run_id) else {
        return error_page(StatusCode::NOT_FOUND, "no such run");
    };
    match tokio::fs::read(dir.log_path(&stage)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response(),
        Err(_) => error_page(StatusCode::NOT_FOUND, "the stage has no log"),
    }
}

/// `/archive`: builds, retention, the audit and the sizes over time.
pub(super) async fn archive(State(app): State<App>) -> Response {
    let reader = app.clone();
    let found = blocking(move || {
        let builds = reader.builds();
        let audit = reader.archive.as_ref().map(|(archive, policy)| {
            (
                *policy,
                crate::archive::audit::audit(archive, *policy, jiff::Timestamp::now()),
                archive.root().to_owned(),
            )
        });
        (builds, audit)
    })
    .await;
    let (builds, audit) = match found {
        Ok(found) => found,
        Err(response) => return response,
    };
    let mut body = String::from("<h1>Archive</h1>");
    let Some((policy, audit, root)) = audit else {
        body.push_str("<p>This pipeline keeps no archive.</p>");
        return page("archive", "", &body).into_response();
    };
    let _ = write!(
        body,
        "<p>In <code>{}</code>; retention keeps the newest {} builds and any younger than {} days (release builds are pinned).</p>",
        escape(&root.display().to_string()),
        policy.keep_last,
        policy.keep_days
    );
    match audit {
        Ok(report) if report.findings.is_empty() => {
            let _ = write!(
                body,
                "<p id=\"audit\" class=\"s-succeeded\">audit: {} build(s) match their records</p>",
                report.builds
            );
        }
        Ok(report) => {
            let _ = write!(
                body,
                "<div id=\"audit\" class=\"s-failed\"><p>audit: {} problem(s)</p><ul>",
                report.findings.len()
            );
            for f in &report.findings {
                let _ = write!(
                    body,
                    "<li>{}: {}{}</li>",
                    escape(f.kind),
                    f.build.map(|b| format!("build {b}: ")).unwrap_or_default(),
                    escape(&f.detail)
                );
            }
            body.push_str("</ul></div>");
        }
        Err(err) => {
            let _ = write!(
                body,
                "<p id=\"audit\" class=\"s-failed\">audit: {}</p>",
                escape(&crate::causes::line(&err))
            );
        }
    }
    if !builds.is_empty() {
        body.push_str("<h2>Size over time</h2><div class=\"chart\">");
        body.push_str(&sizes::svg(&sizes::rows(&builds)));
        body.push_str("</div>");
    }
    body.push_str("<h2>Builds</h2><table class=\"builds\"><tr><th>build</th><th>name</th><th>created</th><th>trigger</th><th>version</th><th>commit</th><th>size</th><th>run</th><th>files</th></tr>");
    for m in builds.iter().rev() {
        let files: Vec<String> = m
            .files
            .iter()
            .map(|f| {
                format!(
                    "<a href=\"/archive/{}/files/{}\">{}</a>",
                    m.build,
                    escape(&f.path),
                    escape(&f.path)
                )
            })
            .collect();
        let _ = write!(
            body,
            "<tr data-build=\"{b}\"><td>{b} <a href=\"/archive/{b}/manifest.json\">manifest</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/runs/{run}\">{run}</a></td><td>{}</td></tr>",
            escape(&m.name),
            escape(&m.created_at.to_string()),
            escape(m.trigger.name()),
            escape(m.version.as_deref().unwrap_or("-")),
            escape(m.commit.as_deref().map(short).unwrap_or("-")),
            sizes::human(m.bundle_size),
            files.join(" "),
            b = m.build,
            run = escape(&m.run_id),
        );
    }
    body.push_str("</table>");
    page("archive", "", &body).into_response()
}

/// `/archive/{build}/manifest.json`: the manifest with its provenance statement.
pub(super) async fn manifest(State(app): State<App>, Path(build): Path<u64>) -> Response {
    match blocking(move || app.builds().into_iter().find(|m| m.build == build)).await {
        Ok(Some(m)) => axum::Json(m).into_response(),
        Ok(None) => error_page(StatusCode::NOT_FOUND, &format!("no build {build}")),
        Err(response) => response,
    }
}

/// `/archive/{build}/files/{path}`: one file of a build, checked against its manifest.
pub(super) async fn file(
    State(app): State<App>,
    Path((build, path)): Path<(u64, String)>,
) -> Response {
    let read = blocking(move || {
        let (archive, _) = app.archive.as_ref()?;
        let (dir, m) = archive.build(build).ok()?;
        let entry = m.files.iter().find(|f| f.path == path)?;
        let bytes = crate::archive::bundle::read_entry(&dir.join(&m.bundle), &path, &entry.sha256);
        Some((path, bytes))
    })
    .await;
    match read {
        Ok(Some((path, Ok(bytes)))) => {
            let name = path.rsplit('/').next().unwrap_or("file").replace('"', "");
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{name}\""),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Ok(Some((_, Err(err)))) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &crate::causes::line(&err),
        ),
        Ok(None) => error_page(StatusCode::NOT_FOUND, "no such build or file"),
        Err(response) => response,
    }
}
