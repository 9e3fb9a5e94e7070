//! The top-level error and the exit codes it maps to.

use std::fmt;

use crate::archive::ArchiveError;
use crate::change::ChangeError;
use crate::config::ConfigError;
use crate::hooks::HookError;
use crate::lock::LockError;
use crate::plan::PlanError;
use crate::records::RecordsError;
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
    Secret(#[from] crate::secrets::SecretError),
    #[error(transparent)]
    Init(#[from] crate::init::InitError),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    #[error("the release cannot succeed; nothing was run:\n  {}", .0.join("\n  "))]
    Preflight(Vec<String>),
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
            Error::Records(RecordsError::NoRuns { .. } | RecordsError::UnknownRun { .. }) => {
                exit::USAGE
            }
            Error::Hook(
                HookError::NoRepository(_)
                | HookError::Foreign(_)
                | HookError::AlreadyKept { .. }
                | HookError::NotOurs(_)
                | HookError::PipelineOutside { .. },
            ) => exit::USAGE,
            Error::Archive(ArchiveError::NoSuchBuild { .. }) | Error::Secret(_) => exit::USAGE,
            Error::Include(crate::include::IncludeError::Lockfile(
                crate::include::lockfile::LockfileError::Write { .. },
            )) => exit::FAILED,
            Error::Include(_) => exit::USAGE,
            Error::Preflight(_) => exit::FAILED,
            Error::Init(crate::init::InitError::Exists(_)) => exit::USAGE,
            Error::Init(_) => exit::FAILED,
            Error::Lock(LockError::Busy { .. }) => exit::BUSY,
            Error::Remote(crate::remote::RemoteError::BadUrl(_)) => exit::USAGE,
            Error::Remote(_) => exit::FAILED,
            Error::Records(_)
            | Error::Archive(_)
            | Error::Lock(_)
            | Error::Store(_)
            | Error::Hook(_)
            | Error::Io { .. } => exit::FAILED,
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
