//! `/api/...`: the records as JSON, in the shapes `--json` prints (`runs --json`, `show
//! --json`, `archive list --json`, `events list --json`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::App;
use crate::records::RunView;

fn failed(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Runs a blocking read of the records off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|_| {
        failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the read failed".to_owned(),
        )
    })
}

/// `murphy runs --json`: every run, newest first.
pub(super) async fn runs(State(app): State<App>) -> Response {
    match blocking(move || app.state.list()).await {
        Ok(Ok(runs)) => Json(runs).into_response(),
        Ok(Err(err)) => failed(StatusCode::INTERNAL_SERVER_ERROR, crate::causes::line(&err)),
        Err(response) => response,
    }
}

/// One run's view, loaded off the async threads; 404 for an unknown id.
pub(super) async fn load_run(app: &App, id: String) -> Result<RunView, Response> {
    let app = app.clone();
    blocking(move || {
        let dir = app
            .state
            .recorded_run(&id)
            .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no run `{id}` is recorded")))?;
        RunView::load(&app.state, &dir)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, crate::causes::line(&e)))
    })
    .await?
    .map_err(|(status, message)| failed(status, message))
}

/// `murphy show --json RUN`.
pub(super) async fn run(State(app): State<App>, Path(id): Path<String>) -> Response {
    match load_run(&app, id).await {
        Ok(view) => Json(crate::glance::glance(&view)).into_response(),
        Err(response) => response,
    }
}

/// `murphy archive list --json`: every readable manifest, oldest first.
pub(super) async fn builds(State(app): State<App>) -> Response {
    match blocking(move || app.builds()).await {
        Ok(builds) => Json(builds).into_response(),
        Err(response) => response,
    }
}

/// `murphy events list --json`: the event log, oldest first.
pub(super) async fn events(State(app): State<App>) -> Response {
    let path = crate::events::path(app.state.root());
    match blocking(move || crate::events::read(&path)).await {
        Ok(Ok(entries)) => Json(entries).into_response(),
        Ok(Err(err)) => failed(StatusCode::INTERNAL_SERVER_ERROR, crate::causes::line(&err)),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
pub(super) struct HistoryQuery {
    commit: Option<String>,
    pr: Option<String>,
    version: Option<String>,
    stage: Option<String>,
}

/// The index's answers: `?commit=SHA`, `?pr=N`, `?version=V` (runs and events), `?stage=NAME`
/// (its durations over the last 100 runs).
pub(super) async fn history(State(app): State<App>, Query(q): Query<HistoryQuery>) -> Response {
    let answer = blocking(move || {
        app.refresh_index();
        let index = app.index.lock().unwrap_or_else(|e| e.into_inner());
        let value = match (&q.commit, &q.pr, &q.version, &q.stage) {
            (Some(sha), ..) => index.commit(sha).map(|h| json!(h)),
            (_, Some(pr), ..) => index.pull_request(pr).map(|h| json!(h)),
            (_, _, Some(v), _) => index.version(v).map(|h| json!(h)),
            (_, _, _, Some(stage)) => index.durations(stage, 100).map(|d| json!(d)),
            _ => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "give `commit`, `pr`, `version` or `stage`".into(),
                ));
            }
        };
        value.map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, crate::causes::line(&e)))
    })
    .await;
    match answer {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err((status, message))) => failed(status, message),
        Err(response) => response,
    }
}
