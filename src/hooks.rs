//! `murphy hooks install|uninstall`: the git pre-push hook that runs the pipeline before a push.
//!
//! The hook is a small shell script that git runs with the push's refs on stdin. It hands the
//! commit being pushed and the one it goes over to murphy as `MURPHY_PUSH_HEAD` and
//! `MURPHY_PUSH_BASE` (for `MURPHY_CHANGED_FILES`) and runs `murphy run --trigger pre-push` on
//! the pipeline file it was installed for; a failing stage refuses the push. A hook murphy did
//! not write is never replaced silently: with `--force` it is kept beside murphy's and run
//! first, with the same arguments and stdin.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The line that marks a hook as murphy's.
const MARKER: &str = "# installed by `murphy hooks install`";

/// Where a replaced hook is kept, beside the hook.
const CHAINED_SUFFIX: &str = ".before-murphy";

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("`{}` is not in a git repository", .0.display())]
    NoRepository(PathBuf),
    #[error(
        "`{}` exists and was not written by murphy; `murphy hooks install --force` keeps it and runs it before murphy",
        .0.display()
    )]
    Foreign(PathBuf),
    #[error(
        "`{}` was not written by murphy, and `{}` already keeps an earlier hook; move one of them away first",
        hook.display(),
        kept.display()
    )]
    AlreadyKept { hook: PathBuf, kept: PathBuf },
    #[error("`{}` was not written by murphy; leaving it alone", .0.display())]
    NotOurs(PathBuf),
    #[error(
        "`{}` is outside the repository at `{}`: the hook can only run a pipeline inside it",
        pipeline.display(),
        root.display()
    )]
    PipelineOutside { pipeline: PathBuf, root: PathBuf },
    #[error("cannot write the hook `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What `install` or `uninstall` did, for the message to the user.
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    Installed {
        hook: PathBuf,
        chained: Option<PathBuf>,
    },
    Updated {
        hook: PathBuf,
    },
    Removed {
        hook: PathBuf,
        restored: bool,
    },
    NothingToRemove {
        hook: PathBuf,
    },
}

/// The pre-push hook's path, honouring `core.hooksPath`.
pub fn hook_path(dir: &Path) -> Result<PathBuf, HookError> {
    let repo =
        git2::Repository::discover(dir).map_err(|_| HookError::NoRepository(dir.to_owned()))?;
    let hooks_dir = match repo
        .config()
        .ok()
        .and_then(|c| c.get_path("core.hooksPath").ok())
    {
        // A relative hooksPath is relative to the worktree root, as git reads it.
        Some(p) if p.is_relative() => repo.workdir().unwrap_or(repo.path()).join(p),
        Some(p) => p,
        None => repo.commondir().join("hooks"),
    };
    Ok(hooks_dir.join("pre-push"))
}

/// The script; `murphy` is the binary that installed it (or `murphy` on PATH if it moved),
/// `pipeline` the pipeline file relative to the worktree root, where git runs hooks.
fn script(murphy: &Path, pipeline: &Path) -> String {
    let quote = |p: &Path| p.to_string_lossy().replace('\'', "'\\''");
    let murphy = quote(murphy);
    let pipeline = quote(pipeline);
    format!(
        r#"#!/bin/sh
{MARKER}; `murphy hooks uninstall` removes it.
# Runs the pipeline's pre-push stages; a failure refuses the push.
murphy='{murphy}'
[ -x "$murphy" ] || murphy=murphy
input=$(cat)
chained="$0{CHAINED_SUFFIX}"
if [ -x "$chained" ]; then
    printf '%s\n' "$input" | "$chained" "$@" || exit $?
fi
# The first ref pushed: its new commit, and the remote's old one (what its changes are against).
first=$(printf '%s\n' "$input" | awk 'NF == 4 {{ print $2, $4; exit }}')
MURPHY_PUSH_HEAD=${{first%% *}}
MURPHY_PUSH_BASE=${{first#* }}
export MURPHY_PUSH_HEAD MURPHY_PUSH_BASE
exec "$murphy" --file '{pipeline}' run --trigger pre-push
"#
    )
}

fn is_ours(path: &Path) -> bool {
    fs::read_to_string(path).is_ok_and(|text| text.contains(MARKER))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> HookError + '_ {
    move |source| HookError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Installs the hook for the pipeline file `pipeline` (found from `dir`).
pub fn install(dir: &Path, murphy: &Path, pipeline: &Path, force: bool) -> Result<Done, HookError> {
    let hook = hook_path(dir)?;
    let repo = crate::git::open(dir).ok_or_else(|| HookError::NoRepository(dir.to_owned()))?;
    let root = repo.workdir().unwrap_or(repo.path()).to_path_buf();
    let absolute = std::path::absolute(pipeline).map_err(io_err(pipeline))?;
    let relative = absolute
        .strip_prefix(fs::canonicalize(&root).unwrap_or(root.clone()))
        .or_else(|_| absolute.strip_prefix(&root))
        .map_err(|_| HookError::PipelineOutside {
            pipeline: absolute.clone(),
            root: root.clone(),
        })?
        .to_path_buf();
    let exists = fs::symlink_metadata(&hook).is_ok();
    let mut chained = None;
    if exists && !is_ours(&hook) {
        if !force {
            return Err(HookError::Foreign(hook));
        }
        let keep = chained_path(&hook);
        if fs::symlink_metadata(&keep).is_ok() {
            // Renaming would overwrite the hook kept by an earlier install.
            return Err(HookError::AlreadyKept { hook, kept: keep });
        }
        fs::rename(&hook, &keep).map_err(io_err(&keep))?;
        chained = Some(keep);
    }
    let dir = hook.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    crate::atomic_file::write(&hook, script(murphy, &relative).as_bytes())
        .map_err(io_err(&hook))?;
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).map_err(io_err(&hook))?;
    Ok(if exists && chained.is_none() {
        Done::Updated { hook }
    } else {
        Done::Installed { hook, chained }
    })
}

pub fn uninstall(dir: &Path) -> Result<Done, HookError> {
    let hook = hook_path(dir)?;
    if fs::symlink_metadata(&hook).is_err() {
        return Ok(Done::NothingToRemove { hook });
    }
    if !is_ours(&hook) {
        return Err(HookError::NotOurs(hook));
    }
    let keep = chained_path(&hook);
    let restored = fs::symlink_metadata(&keep).is_ok();
    if restored {
        fs::rename(&keep, &hook).map_err(io_err(&hook))?;
    } else {
        fs::remove_file(&hook).map_err(io_err(&hook))?;
    }
    Ok(Done::Removed { hook, restored })
}

fn chained_path(hook: &Path) -> PathBuf {
    let mut name = hook.file_name().unwrap_or_default().to_os_string();
    name.push(CHAINED_SUFFIX);
    hook.with_file_name(name)
}
