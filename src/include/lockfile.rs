//! `pipeline.lock`: the commit and content digest of every git include, committed with the
//! project so every run of one commit of the project reads the same included files.
//!
//! JSON, one pin per include in the order the includes are read, written by `murphy lock`
//! only (temp file, fsync, rename). Format version 1; a newer version is refused, not guessed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lock format this murphy reads and writes.
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    pub version: u32,
    pub includes: Vec<Pin>,
}

/// One git include and what it was pinned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// The include's `name:`, or its repository's name.
    pub name: String,
    /// The URL as the pipeline file writes it.
    pub git: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub file: String,
    /// The full commit id `ref` pointed at when pinned.
    pub commit: String,
    /// BLAKE3 of the file's bytes at `commit`, checked on every read.
    pub digest: String,
}

impl Pin {
    /// Whether both are the same `include:` entry (where it points, not what it was pinned to).
    pub fn same_include(&self, other: &Pin) -> bool {
        self.git == other.git && self.reference == other.reference && self.file == other.file
    }

    /// `pipelines@v3:rust/base.yml (URL)`.
    pub fn describe(&self) -> String {
        format!(
            "`{}@{}:{}` ({})",
            self.name,
            self.reference,
            self.file,
            crate::git::strip_credentials(&self.git)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockfileError {
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}`:{line}:{column}: not a murphy lock file: {message}; write it afresh with `murphy lock`", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("`{}` is lock format {version}; this murphy reads format {VERSION} (upgrade murphy)", path.display())]
    Newer { path: PathBuf, version: u32 },
    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `pipeline.lock` beside `pipeline.yml` (`ci.lock` beside `ci.yml`).
pub fn path_for(pipeline_file: &Path) -> PathBuf {
    pipeline_file.with_extension("lock")
}

impl Lockfile {
    pub fn new(includes: Vec<Pin>) -> Lockfile {
        Lockfile {
            version: VERSION,
            includes,
        }
    }

    /// The lock of the pipeline file `pipeline_file`; `None` when there is none.
    pub fn of_pipeline(pipeline_file: &Path) -> Result<Option<Lockfile>, LockfileError> {
        Lockfile::read(&path_for(pipeline_file))
    }

    /// The lock at `path`; `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<Lockfile>, LockfileError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LockfileError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let invalid = |e: serde_json::Error| LockfileError::Invalid {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        };
        let version: Version = serde_json::from_slice(&bytes).map_err(invalid)?;
        if version.version != VERSION {
            return Err(LockfileError::Newer {
                path: path.to_owned(),
                version: version.version,
            });
        }
        serde_json::from_slice(&bytes).map(Some).map_err(invalid)
    }

    /// Writes the lock whole or not at all.
    pub fn write(&self, path: &Path) -> Result<(), LockfileError> {
        let mut text = serde_json::to_string_pretty(self).map_err(|e| LockfileError::Write {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        text.push('\n');
        crate::atomic_file::write_shared(path, text.as_bytes()).map_err(|source| {
            LockfileError::Write {
                path: path.to_owned(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.lock");
        assert_eq!(Lockfile::read(&path).unwrap(), None);
        let lock = Lockfile::new(vec![Pin {
            name: "pipelines".into(),
            git: "file:///srv/pipelines.git".into(),
            reference: "v3".into(),
            file: "rust/base.yml".into(),
            commit: "a".repeat(40),
            digest: "b".repeat(64),
        }]);
        lock.write(&path).unwrap();
        assert_eq!(Lockfile::read(&path).unwrap(), Some(lock));

        std::fs::write(&path, "{\"version\": 2, \"includes\": []}").unwrap();
        let err = Lockfile::read(&path).unwrap_err().to_string();
        assert!(err.contains("is lock format 2"), "{err}");
        std::fs::write(&path, "{\"version\": 1,\n \"includes\": [{\"name\": 3}]}").unwrap();
        let err = Lockfile::read(&path).unwrap_err().to_string();
        assert!(err.contains("pipeline.lock`:2:"), "{err}");
    }
}
