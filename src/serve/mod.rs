//! `murphy serve`: the records as web pages and a JSON API, runs in progress updated live,
//! and webhooks from other systems taken into the event log.
//!
//! Pages and the API answer only to loopback, unless `MURPHY_SERVE_TOKEN` is given (and
//! then always ask for it); webhooks are checked by their own secrets instead.

mod ansi;
mod api;
pub mod hooks;
mod pages;
mod sse;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::archive::Archive;
use crate::archive::manifest::BuildManifest;
use crate::archive::retention::Policy;
use crate::events::{Entry, EventLog};
use crate::index::Index;
use crate::records::StateDir;
use crate::remote::Remote;

pub use hooks::HookSecrets;

/// The largest webhook body taken; a larger one is answered 413. GitHub caps its payloads at
/// 25 MB, but the events murphy reads are far smaller.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// How long a request may take before it is answered 408 (a live stream is not cut by it:
/// its answer starts at once).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The variable that holds the token pages and the API ask for.
pub const TOKEN_VARIABLE: &str = "MURPHY_SERVE_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to serve on `{0}` without a token: set `{TOKEN_VARIABLE}` (pages and the API will ask for it), or bind to a loopback address"
    )]
    NoToken(SocketAddr),
    #[error("cannot listen on `{addr}`")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the server stopped")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Events(#[from] crate::events::EventsError),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
}

/// What the server shows and takes.
pub struct Options {
    pub bind: SocketAddr,
    pub token: Option<String>,
    pub state: StateDir,
    /// The archive the pipeline keeps, and its retention.
    pub archive: Option<(Archive, Policy)>,
    pub hooks: HookSecrets,
    /// The shared store runs are pulled from, as the views pull them.
    pub remote: Option<Remote>,
}

/// What every handler shares.
pub(crate) struct Inner {
    state: StateDir,
    archive: Option<(Archive, Policy)>,
    token: Option<String>,
    hooks: HookSecrets,
    events: Mutex<EventLog>,
    index: Mutex<Index>,
}

pub(crate) type App = Arc<Inner>;

impl Inner {
    /// Adds an event to the index; the log has it already, so a failure only slows a page.
    fn index_event(&self, entry: &Entry) {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = index.put_event(entry) {
            tracing::warn!("{}", crate::causes::line(&err));
        }
    }

    /// Brings the index up to date with runs recorded since.
    fn refresh_index(&self) {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = index.refresh(&self.state) {
            tracing::warn!("{}", crate::causes::line(&err));
        }
    }

    /// The archive's builds with readable manifests, oldest first.
    fn builds(&self) -> Vec<BuildManifest> {
        let Some((archive, _)) = &self.archive else {
            return Vec::new();
        };
        match archive.builds() {
            Ok(builds) => builds.into_iter().filter_map(|b| b.manifest.ok()).collect(),
            Err(err) => {
                tracing::warn!("{}", crate::causes::line(&err));
                Vec::new()
            }
        }
    }
}

/// Whether pages need a token on this address: always off loopback.
pub fn check_bind(bind: SocketAddr, token: Option<&str>) -> Result<(), ServeError> {
    if !bind.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(ServeError::NoToken(bind));
    }
    Ok(())
}

/// Serves until the process is stopped. `ready` hears the address once it listens.
pub async fn serve(options: Options, ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    check_bind(options.bind, options.token.as_deref())?;
    let events = EventLog::open(options.state.root())?;
    let mut index = Index::open(options.state.root())?;
    let builds = match &options.archive {
        Some((archive, _)) => archive
            .builds()
            .map(|b| b.into_iter().filter_map(|b| b.manifest.ok()).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let state = options.state.clone();
    let rebuilt = tokio::task::block_in_place(|| index.rebuild(&state, &builds))?;
    tracing::info!(
        "indexed {} runs, {} builds, {} events",
        rebuilt.0,
        rebuilt.1,
        rebuilt.2
    );
    let app: App = Arc::new(Inner {
        state: options.state,
        archive: options.archive,
        token: options.token.filter(|t| !t.is_empty()),
        hooks: options.hooks,
        events: Mutex::new(events),
        index: Mutex::new(index),
    });
    if let Some(remote) = options.remote {
        tokio::spawn(pull_runs(app.clone(), remote));
    }
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: options.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    ready(addr);
    let server = axum::serve(listener, router(app)).with_graceful_shutdown(stop_asked());
    // A browser's live stream would hold a graceful stop forever: it gets a few seconds.
    tokio::select! {
        served = server => served.map_err(ServeError::Serve),
        () = async {
            stop_asked().await;
            tokio::time::sleep(STOP_GRACE).await;
        } => Ok(()),
    }
}

/// How long open requests get to finish once the server is asked to stop.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Ctrl-C or SIGTERM.
async fn stop_asked() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn router(app: App) -> Router {
    let pages = Router::new()
        .route("/", get(pages::changes))
        .route("/runs/{id}", get(pages::run))
        .route("/runs/{id}/stream", get(sse::stream))
        .route("/runs/{id}/logs/{stage}", get(pages::log))
        .route("/archive", get(pages::archive))
        .route("/archive/{build}/manifest.json", get(pages::manifest))
        .route("/archive/{build}/files/{*path}", get(pages::file))
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{id}", get(api::run))
        .route("/api/builds", get(api::builds))
        .route("/api/events", get(api::events))
        .route("/api/history", get(api::history))
        .route("/assets/app.js", get(pages::script))
        .route("/assets/style.css", get(pages::style))
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize));
    let hooks = Router::new()
        .route("/hooks/github", post(hooks::github))
        .route("/hooks/gitlab", post(hooks::gitlab))
        .route("/hooks/azure-devops", post(hooks::azure_devops));
    pages
        .merge(hooks)
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(app)
}

const COOKIE: &str = "murphy_token";

/// With a token set, a page or API call must carry it: `Authorization: Bearer TOKEN` or the
/// `murphy_token` cookie, which `?token=TOKEN` sets once for a browser.
async fn authorize(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        return next.run(request).await;
    };
    let same = |given: &str| hooks::same_text(given, token);
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("murphy_token="))
        .next();
    if bearer.is_some_and(same) || cookie.is_some_and(same) {
        return next.run(request).await;
    }
    let query = request.uri().query().unwrap_or_default();
    if let Some(given) = query.split('&').find_map(|p| p.strip_prefix("token="))
        && same(given)
    {
        let path = request.uri().path().to_owned();
        let mut response = Redirect::to(&path).into_response();
        if let Ok(value) = format!("{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/").parse() {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this murphy serve asks for its token: `Authorization: Bearer TOKEN`, or open a page with `?token=TOKEN` once\n",
    )
        .into_response()
}

/// Pulls runs from the shared store now and then, as `murphy runs` does before it shows them.
async fn pull_runs(app: App, remote: Remote) {
    loop {
        let pulled = async {
            remote.probe().await?;
            crate::remote::runs::pull(&remote, &app.state, None).await
        }
        .await;
        if let Err(err) = pulled {
            tracing::warn!("showing local runs only: {}", crate::causes::line(&err));
        }
        let refresh = app.clone();
        let _ = tokio::task::spawn_blocking(move || refresh.refresh_index()).await;
        tokio::time::sleep(Duration::from_secs(15)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_address_than_loopback_needs_a_token() {
        let open: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(matches!(
            check_bind(open, None),
            Err(ServeError::NoToken(_))
        ));
        assert!(check_bind(open, Some("")).is_err());
        assert!(check_bind(open, Some("a-token")).is_ok());
        assert!(check_bind(local, None).is_ok());
    }
}
