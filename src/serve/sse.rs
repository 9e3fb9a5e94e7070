//! A run in progress, live: `/runs/{id}/stream` sends the run's stages as server-sent events
//! whenever one changes, and ends once the run has.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde_json::json;

use super::App;
use super::api::load_run;
use crate::records::{RunState, RunView};

/// How often the journal is read again while a run goes on.
const POLL: Duration = Duration::from_millis(300);

/// What the page needs to redraw a run: its state and each stage's.
pub(super) fn snapshot(view: &RunView) -> serde_json::Value {
    json!({
        "run_id": view.run_id,
        "status": view.status.word(),
        "duration": super::pages::duration(view.duration_ms),
        "stages": view.stages.iter().map(|s| json!({
            "name": s.name,
            "state": s.state.word(),
            "duration": super::pages::duration(s.duration_ms),
        })).collect::<Vec<_>>(),
    })
}

pub(super) async fn stream(State(app): State<App>, Path(id): Path<String>) -> Response {
    if let Err(response) = load_run(&app, id.clone()).await {
        return response;
    }
    Sse::new(updates(app, id))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// One event per change of the run's snapshot; the stream ends after the run's last one.
fn updates(app: App, id: String) -> impl Stream<Item = Result<Event, Infallible>> {
    // (last snapshot sent, finished)
    stream::unfold(
        (app, id, String::new(), false),
        |(app, id, last, done)| async move {
            if done {
                return None;
            }
            loop {
                let Ok(view) = load_run(&app, id.clone()).await else {
                    return None;
                };
                let finished = view.status != RunState::Running;
                let data = snapshot(&view).to_string();
                if data != last {
                    let event = Event::default().event("run").data(data.clone());
                    return Some((Ok(event), (app, id, data, finished)));
                }
                if finished {
                    return None;
                }
                tokio::time::sleep(POLL).await;
            }
        },
    )
}
