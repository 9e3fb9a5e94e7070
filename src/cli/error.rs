//! The top-level error and the exit codes it maps to.

use std::fmt;

use crate::archive::ArchiveError;
use crate::change::ChangeError;
use crate::config::ConfigError;
use crate::hooks::HookError;
use crate::lock::LockError;
use crate::plan::PlanError;
use crate::records::RecordsError;
use crate::session::SessionError;
use crate::store::StoreError;

/// Exit codes, as documented in `murphy --help` and the README.
pub mod exit {
    pub const SUCCESS: i32 = 0;
    /// A stage failed, or murphy could not run or record the pipeline.
    pub const FAILED: i32 = 1;
    /// Bad command line or bad pipeline file: nothing was run.
    pub const USAGE: i32 = 2;
    /// Another murphy holds the state directory: try again later (`EX_TEMPFAIL`).
    pub const BUSY: i32 = 75;
    /// Stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Include(#[from] crate::include::IncludeError),
    #[error(transparent)]
    Records(#[from] RecordsError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Init(#[from] crate::init::InitError),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Workflow(#[from] crate::workflow::WorkflowError),
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
    #[error(transparent)]
    Events(#[from] crate::events::EventsError),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    #[error("{0}")]
    Usage(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Plan(_) | Error::Usage(_) | Error::Change(_) => exit::USAGE,
            Error::Records(err) => records_exit_code(err),
            Error::Hook(
                HookError::NoRepository(_)
                | HookError::Foreign(_)
                | HookError::AlreadyKept { .. }
                | HookError::NotOurs(_)
                | HookError::PipelineOutside { .. },
            ) => exit::USAGE,
            Error::Archive(ArchiveError::NoSuchBuild { .. }) => exit::USAGE,
            Error::Include(crate::include::IncludeError::Lockfile(
                crate::include::lockfile::LockfileError::Write { .. },
            )) => exit::FAILED,
            Error::Include(_) => exit::USAGE,
            Error::Init(crate::init::InitError::Exists(_)) => exit::USAGE,
            Error::Init(_) => exit::FAILED,
            Error::Lock(err) => lock_exit_code(err),
            Error::Session(err) => session_exit_code(err),
            Error::Remote(err) => remote_exit_code(err),
            Error::Workflow(
                crate::workflow::WorkflowError::Read { .. }
                | crate::workflow::WorkflowError::Write { .. },
            ) => exit::FAILED,
            Error::Workflow(_) => exit::USAGE,
            Error::Serve(crate::serve::ServeError::NoToken(_)) | Error::Secret(_) => exit::USAGE,
            Error::Serve(crate::serve::ServeError::Events(crate::events::EventsError::Busy {
                ..
            }))
            | Error::Events(crate::events::EventsError::Busy { .. }) => exit::BUSY,
            Error::Archive(_)
            | Error::Store(_)
            | Error::Hook(_)
            | Error::Io { .. }
            | Error::Serve(_)
            | Error::Events(_)
            | Error::Index(_) => exit::FAILED,
        }
    }
}

/// A run that names no run there is, or none at all, asked for something that cannot be.
fn records_exit_code(err: &RecordsError) -> i32 {
    match err {
        RecordsError::NoRuns { .. } | RecordsError::UnknownRun { .. } => exit::USAGE,
        _ => exit::FAILED,
    }
}

fn lock_exit_code(err: &LockError) -> i32 {
    match err {
        LockError::Busy { .. } => exit::BUSY,
        _ => exit::FAILED,
    }
}

/// A store URL that is not one is a usage error; a store that fails is a failure.
fn remote_exit_code(err: &crate::remote::RemoteError) -> i32 {
    match err {
        crate::remote::RemoteError::BadUrl(_) => exit::USAGE,
        _ => exit::FAILED,
    }
}

fn session_exit_code(err: &SessionError) -> i32 {
    match err {
        SessionError::Records(err) => records_exit_code(err),
        SessionError::Lock(err) => lock_exit_code(err),
        SessionError::Plan(_)
        | SessionError::Secret(_)
        | SessionError::Change(_)
        | SessionError::DirtyRelease(_)
        | SessionError::NoCheckpoint { .. }
        | SessionError::NotInRun { .. }
        | SessionError::WeakStoreKey
        | SessionError::NothingToResume(_)
        | SessionError::OtherCommit { .. }
        | SessionError::BadLease(_)
        | SessionError::StageGone { .. } => exit::USAGE,
        SessionError::Leased(_) => exit::BUSY,
        SessionError::Remote(err) => remote_exit_code(err),
        SessionError::Preflight(_) | SessionError::Io { .. } | SessionError::LostLease { .. } => {
            exit::FAILED
        }
    }
}

impl From<crate::plan::LoadError> for Error {
    fn from(err: crate::plan::LoadError) -> Error {
        match err {
            crate::plan::LoadError::Include(err) => Error::Include(err),
            crate::plan::LoadError::Plan(err) => Error::Plan(err),
        }
    }
}

/// `error: message` followed by one `caused by:` line per source, for stderr.
pub struct Report<'a>(pub &'a Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.0)?;
        let mut source = std::error::Error::source(self.0);
        while let Some(cause) = source {
            write!(f, "\ncaused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
