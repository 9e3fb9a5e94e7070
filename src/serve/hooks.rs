//! Webhooks from GitHub, GitLab and Azure DevOps: each checked by its own secret (in constant
//! time), reduced to an event-log [`Fact`] that links it to a commit, and appended once per
//! delivery id.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::App;
use crate::events::Fact;

/// The secret values each provider's webhook is checked with (loaded and masked already).
#[derive(Debug, Default, Clone)]
pub struct HookSecrets {
    pub github: Option<String>,
    pub gitlab: Option<String>,
    pub azure_devops: Option<(String, String)>,
}

/// Why a delivery was refused, as the provider sees it.
fn refuse(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(json!({ "error": why }))).into_response()
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Equal in time that does not depend on where they differ (nor on their lengths: the
/// digests compared are of one size).
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let given = Sha256::digest(given);
    let expected = Sha256::digest(expected);
    given.ct_eq(&expected).into()
}

/// [`same_secret`] for text (the dashboard's token).
pub(super) fn same_text(given: &str, expected: &str) -> bool {
    same_secret(given.as_bytes(), expected.as_bytes())
}

/// `X-Hub-Signature-256: sha256=HEX`, the HMAC-SHA256 of the body under the secret.
pub fn github_signature_ok(secret: &str, body: &[u8], signature: Option<&str>) -> bool {
    let Some(hex) = signature.and_then(|s| s.strip_prefix("sha256=")) else {
        return false;
    };
    let Some(given) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(super) async fn github(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &app.hooks.github else {
        return refuse(StatusCode::NOT_FOUND, "no GitHub webhook is configured");
    };
    if !github_signature_ok(secret, &body, header(&headers, "x-hub-signature-256")) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "bad or missing X-Hub-Signature-256",
        );
    }
    let Some(delivery) = header(&headers, "x-github-delivery") else {
        return refuse(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery");
    };
    let event = header(&headers, "x-github-event").unwrap_or("unknown");
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "the body is not JSON"),
    };
    if event == "ping" {
        return (StatusCode::OK, axum::Json(json!({ "stored": false }))).into_response();
    }
    let fact = github_fact(event, delivery, &payload);
    store(&app, fact).await
}

pub(super) async fn gitlab(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = &app.hooks.gitlab else {
        return refuse(StatusCode::NOT_FOUND, "no GitLab webhook is configured");
    };
    let given = header(&headers, "x-gitlab-token").unwrap_or_default();
    if given.is_empty() || !same_secret(given.as_bytes(), token.as_bytes()) {
        return refuse(StatusCode::UNAUTHORIZED, "bad or missing X-Gitlab-Token");
    }
    let Some(delivery) = header(&headers, "x-gitlab-event-uuid") else {
        return refuse(StatusCode::BAD_REQUEST, "missing X-Gitlab-Event-UUID");
    };
    let event = header(&headers, "x-gitlab-event").unwrap_or("unknown");
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "the body is not JSON"),
    };
    let fact = gitlab_fact(event, delivery, &payload);
    store(&app, fact).await
}

pub(super) async fn azure_devops(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((user, password)) = &app.hooks.azure_devops else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no Azure DevOps webhook is configured",
        );
    };
    let expected = format!("{user}:{password}");
    let given = header(&headers, "authorization")
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .unwrap_or_default();
    if given.is_empty() || !same_secret(&given, expected.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"murphy\"")],
            axum::Json(json!({ "error": "bad or missing basic authentication" })),
        )
            .into_response();
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "the body is not JSON"),
    };
    let Some(delivery) = payload.get("id").and_then(Value::as_str) else {
        return refuse(StatusCode::BAD_REQUEST, "the event has no `id`");
    };
    let fact = azure_fact(delivery, &payload);
    store(&app, fact).await
}

/// Appends the fact once; a redelivery is taken (2xx) and not written again.
async fn store(app: &App, fact: Fact) -> Response {
    let app = app.clone();
    let written = tokio::task::spawn_blocking(move || {
        let mut log = app.events.lock().unwrap_or_else(|e| e.into_inner());
        let entry = log.append(fact)?;
        if let Some(entry) = &entry {
            app.index_event(entry);
        }
        Ok::<_, crate::events::EventsError>(entry)
    })
    .await;
    match written {
        Ok(Ok(Some(entry))) => {
            tracing::info!(
                "took {} event {} ({}) as entry {}",
                entry.fact.provider,
                entry.fact.delivery,
                entry.fact.kind,
                entry.seq
            );
            (
                StatusCode::OK,
                axum::Json(json!({ "stored": true, "seq": entry.seq })),
            )
                .into_response()
        }
        Ok(Ok(None)) => (
            StatusCode::OK,
            axum::Json(json!({ "stored": false, "duplicate": true })),
        )
            .into_response(),
        Ok(Err(err)) => {
            tracing::error!("{}", crate::causes::line(&err));
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the event")
        }
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the event"),
    }
}

fn text(value: &Value, path: &[&str]) -> Option<String> {
    let mut at = value;
    for key in path {
        at = match key.parse::<usize>() {
            Ok(i) => at.get(i)?,
            Err(_) => at.get(key)?,
        };
    }
    match at {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn first_line(text: Option<String>) -> Option<String> {
    text.map(|t| t.lines().next().unwrap_or_default().to_owned())
}

/// `refs/heads/main` → `main`, `refs/tags/v1` → `v1`.
fn short_ref(reference: Option<String>) -> Option<String> {
    reference.map(|r| {
        r.strip_prefix("refs/heads/")
            .or_else(|| r.strip_prefix("refs/tags/"))
            .unwrap_or(&r)
            .to_owned()
    })
}

/// A commit id, unless it is the all-zero one a deleted branch's push carries.
fn commit(sha: Option<String>) -> Option<String> {
    sha.filter(|s| s.bytes().any(|b| b != b'0'))
}

fn fact(provider: &str, delivery: &str, event: &str, kind: &str) -> Fact {
    Fact {
        provider: provider.into(),
        delivery: delivery.into(),
        kind: kind.into(),
        event: event.into(),
        commit: None,
        reference: None,
        pr: None,
        status: None,
        title: None,
        url: None,
    }
}

/// GitHub's `push`, `pull_request`, `release`, `workflow_run`, `check_suite`, `check_run` and
/// `status` events; anything else is kept as `other`.
pub fn github_fact(event: &str, delivery: &str, p: &Value) -> Fact {
    let mut f = fact("github", delivery, event, "other");
    match event {
        "push" => {
            f.kind = "push".into();
            f.commit = commit(text(p, &["after"]));
            f.reference = short_ref(text(p, &["ref"]));
            f.title = first_line(text(p, &["head_commit", "message"]));
            f.url = text(p, &["compare"]);
        }
        "pull_request" => {
            let action = text(p, &["action"]).unwrap_or_default();
            let merged = p["pull_request"]["merged"].as_bool() == Some(true);
            f.kind = match action.as_str() {
                "opened" | "reopened" => "pr_opened",
                "closed" if merged => "pr_merged",
                "closed" => "pr_closed",
                _ => "pr_updated",
            }
            .into();
            f.commit = text(p, &["pull_request", "head", "sha"]);
            f.reference = text(p, &["pull_request", "head", "ref"]);
            f.pr = text(p, &["number"]).or_else(|| text(p, &["pull_request", "number"]));
            f.title = text(p, &["pull_request", "title"]);
            f.url = text(p, &["pull_request", "html_url"]);
            f.status = Some(action);
        }
        "release" => {
            f.kind = "release".into();
            f.reference = text(p, &["release", "tag_name"]);
            f.title = text(p, &["release", "name"]);
            f.url = text(p, &["release", "html_url"]);
            f.status = text(p, &["action"]);
        }
        "workflow_run" | "check_suite" | "check_run" => {
            let o = &p[event];
            f.kind = "pipeline".into();
            f.commit = text(o, &["head_sha"]);
            f.reference = text(o, &["head_branch"]);
            f.status = text(o, &["conclusion"]).or_else(|| text(o, &["status"]));
            f.title = text(o, &["name"]).or_else(|| text(p, &["check_suite", "app", "name"]));
            f.url = text(o, &["html_url"]);
        }
        "status" => {
            f.kind = "pipeline".into();
            f.commit = text(p, &["sha"]);
            f.status = text(p, &["state"]);
            f.title = text(p, &["context"]);
            f.url = text(p, &["target_url"]);
        }
        _ => {
            f.commit = commit(text(p, &["after"]));
        }
    }
    f
}

/// GitLab's push, tag push, merge request, pipeline, job and release hooks.
pub fn gitlab_fact(event: &str, delivery: &str, p: &Value) -> Fact {
    let mut f = fact("gitlab", delivery, event, "other");
    let project = text(p, &["project", "web_url"]);
    match event {
        "Push Hook" | "Tag Push Hook" => {
            f.kind = "push".into();
            f.commit = commit(text(p, &["checkout_sha"]).or_else(|| text(p, &["after"])));
            f.reference = short_ref(text(p, &["ref"]));
            let last = p["commits"].as_array().and_then(|c| c.last());
            f.title = first_line(last.and_then(|c| text(c, &["message"])));
            f.url = project;
        }
        "Merge Request Hook" => {
            let o = &p["object_attributes"];
            let action = text(o, &["action"]).unwrap_or_default();
            f.kind = match action.as_str() {
                "open" | "reopen" => "pr_opened",
                "merge" => "pr_merged",
                "close" => "pr_closed",
                _ => "pr_updated",
            }
            .into();
            f.commit = text(o, &["last_commit", "id"]);
            f.reference = text(o, &["source_branch"]);
            f.pr = text(o, &["iid"]);
            f.title = text(o, &["title"]);
            f.url = text(o, &["url"]);
            f.status = Some(action);
        }
        "Pipeline Hook" => {
            let o = &p["object_attributes"];
            f.kind = "pipeline".into();
            f.commit = text(o, &["sha"]);
            f.reference = text(o, &["ref"]);
            f.status = text(o, &["status"]);
            f.title = text(o, &["name"]).or_else(|| Some("GitLab pipeline".into()));
            f.url = text(o, &["url"]).or_else(|| {
                Some(format!(
                    "{}/-/pipelines/{}",
                    project.clone()?,
                    text(o, &["id"])?
                ))
            });
        }
        "Job Hook" => {
            f.kind = "pipeline".into();
            f.commit = text(p, &["sha"]);
            f.reference = text(p, &["ref"]);
            f.status = text(p, &["build_status"]);
            f.title = text(p, &["build_name"]);
        }
        "Release Hook" => {
            f.kind = "release".into();
            f.commit = text(p, &["commit", "id"]);
            f.reference = text(p, &["tag"]);
            f.title = text(p, &["name"]);
            f.url = text(p, &["url"]);
            f.status = text(p, &["action"]);
        }
        _ => {}
    }
    f
}

/// Azure DevOps service hook events: `git.push`, `git.pullrequest.*`, `build.complete`,
/// `ms.vss-release.*`.
pub fn azure_fact(delivery: &str, p: &Value) -> Fact {
    let event = text(p, &["eventType"]).unwrap_or_else(|| "unknown".into());
    let mut f = fact("azure-devops", delivery, &event, "other");
    let r = &p["resource"];
    f.title = first_line(text(p, &["message", "text"]));
    if event == "git.push" {
        f.kind = "push".into();
        f.commit = commit(text(r, &["refUpdates", "0", "newObjectId"]));
        f.reference = short_ref(text(r, &["refUpdates", "0", "name"]));
        f.url = text(r, &["repository", "remoteUrl"]);
    } else if let Some(action) = event.strip_prefix("git.pullrequest.") {
        let status = text(r, &["status"]);
        f.kind = match (action, status.as_deref()) {
            ("created", _) => "pr_opened",
            ("merged", _) | (_, Some("completed")) => "pr_merged",
            (_, Some("abandoned")) => "pr_closed",
            _ => "pr_updated",
        }
        .into();
        f.commit = text(r, &["lastMergeSourceCommit", "commitId"]);
        f.reference = short_ref(text(r, &["sourceRefName"]));
        f.pr = text(r, &["pullRequestId"]);
        f.title = text(r, &["title"]).or(f.title);
        f.url = text(r, &["_links", "web", "href"]).or_else(|| text(r, &["url"]));
        f.status = status;
    } else if event == "build.complete" {
        f.kind = "pipeline".into();
        f.commit = text(r, &["sourceVersion"]);
        f.reference = short_ref(text(r, &["sourceBranch"]));
        f.status = text(r, &["result"]).or_else(|| text(r, &["status"]));
        f.url = text(r, &["_links", "web", "href"]).or_else(|| text(r, &["url"]));
    } else if event.starts_with("ms.vss-release.") {
        f.kind = "release".into();
        f.url = text(r, &["release", "_links", "web", "href"]);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_github_signature_is_checked_against_the_body() {
        let secret = "It's a Secret to Everybody";
        let body = b"Hello, World!";
        // GitHub's documented example value for this secret and payload.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(github_signature_ok(secret, body, Some(sig)));
        assert!(!github_signature_ok(secret, b"Hello, World?", Some(sig)));
        assert!(!github_signature_ok(secret, body, Some("sha256=zz")));
        assert!(!github_signature_ok(secret, body, None));
    }
}
