//! What git ignores, as a walk down from a folder meets it: each folder's `.gitignore`, the
//! repository's `info/exclude` and the user's global excludes file.
//!
//! The rules are those of the `ignore` crate's walker, which murphy used until its layers per
//! entry came to a seventh of the time spent reading inputs: the nearest `.gitignore` that
//! has a rule for a path decides, up to the top of its repository; then `info/exclude`; then
//! the global file. A folder git ignores is not entered, so nothing below it can be
//! un-ignored.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// The rules in force in the folder a walk is in.
pub struct Rules {
    /// From the top of the repository down to the current folder.
    levels: Vec<Level>,
}

/// One folder's rules.
struct Level {
    /// Its `.gitignore` (empty without one).
    gitignore: Gitignore,
    /// Its repository's `info/exclude`, where the folder is a repository's top.
    exclude: Gitignore,
    /// It holds `.git` (or `.jj`): the rules of the folders above do not reach below it.
    top: bool,
}

impl Rules {
    /// The rules of the folders above `start`, up to the top of its repository. `start`'s
    /// own come with [`Rules::enter`]. None when `start` is itself a repository's top (a
    /// pattern walked from the project's root, most often): no rule above it reaches in.
    pub fn above(start: &Path) -> Rules {
        let mut levels = Vec::new();
        if start.join(".git").metadata().is_ok() || start.join(".jj").exists() {
            return Rules { levels };
        }
        for dir in start.ancestors().skip(1) {
            let level = Level::read(dir, Found::MAYBE);
            let top = level.top;
            levels.push(level);
            if top {
                break;
            }
        }
        levels.reverse();
        Rules { levels }
    }

    /// Steps into `dir`, whose entries' names are `names`.
    pub fn enter<'a>(&mut self, dir: &Path, names: impl Iterator<Item = &'a OsStr>) {
        let mut found = Found::default();
        for name in names {
            match name.as_encoded_bytes() {
                b".gitignore" => found.gitignore = true,
                b".git" => found.git = true,
                b".jj" => found.jj = true,
                _ => {}
            }
        }
        self.levels.push(Level::read(dir, found));
    }

    /// Steps back out of the folder last entered.
    pub fn leave(&mut self) {
        self.levels.pop();
    }

    /// Whether git ignores `path` (in the folder last entered).
    pub fn ignores(&self, path: &Path, is_dir: bool) -> bool {
        let (mut gitignore, mut exclude) = (ignore::Match::None, ignore::Match::None);
        for level in self.levels.iter().rev() {
            if gitignore.is_none() {
                gitignore = level.gitignore.matched(path, is_dir);
            }
            if exclude.is_none() {
                exclude = level.exclude.matched(path, is_dir);
            }
            if level.top {
                break;
            }
        }
        let decided = match (gitignore.is_none(), exclude.is_none()) {
            (false, _) => gitignore,
            (true, false) => exclude,
            (true, true) => global().matched(path, is_dir),
        };
        decided.is_ignore()
    }
}

/// Which of the files that hold rules a folder may have: a listed folder says, one above
/// the walk is looked at.
#[derive(Default)]
struct Found {
    gitignore: bool,
    git: bool,
    jj: bool,
}

impl Found {
    const MAYBE: Found = Found {
        gitignore: true,
        git: true,
        jj: true,
    };
}

impl Level {
    /// The rules of `dir`, looking only for the files `found` says may be there.
    fn read(dir: &Path, found: Found) -> Level {
        let dot_git = dir.join(".git");
        let git = found
            .git
            .then(|| std::fs::metadata(&dot_git).ok())
            .flatten();
        let top = git.is_some() || (found.jj && dir.join(".jj").exists());
        let exclude = match git {
            Some(git) if git.is_dir() => rules(dir, &dot_git.join("info/exclude")),
            Some(_) => match common_dir(dir, &dot_git) {
                Some(common) => rules(dir, &common.join("info/exclude")),
                None => Gitignore::empty(),
            },
            None => Gitignore::empty(),
        };
        let gitignore = match found.gitignore {
            true => rules(dir, &dir.join(".gitignore")),
            false => Gitignore::empty(),
        };
        Level {
            gitignore,
            exclude,
            top,
        }
    }
}

/// The rules in `file`, for paths below `dir`. A file that is not there or cannot be read
/// has none, as for git (opening it is the one look); a line that is no valid pattern is
/// skipped with a warning.
fn rules(dir: &Path, file: &Path) -> Gitignore {
    let mut builder = GitignoreBuilder::new(dir);
    if let Some(err) = builder.add(file)
        && !err.is_io()
    {
        tracing::warn!("{err}");
    }
    builder.build().unwrap_or_else(|err| {
        tracing::warn!("{err}");
        Gitignore::empty()
    })
}

/// Where the repository of a worktree or submodule keeps its shared files: `.git` is then a
/// file that names its git folder, and that folder's `commondir` names the shared one (a
/// submodule's git folder is its own).
fn common_dir(dir: &Path, dot_git: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(dot_git).ok()?;
    let git_dir = dir.join(text.lines().next()?.strip_prefix("gitdir: ")?.trim_end());
    match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(common) => Some(git_dir.join(common.lines().next()?.trim_end())),
        Err(_) => Some(git_dir),
    }
}

/// The user's global excludes file (`core.excludesFile`, or `~/.config/git/ignore`), read
/// once a process.
fn global() -> &'static Gitignore {
    static GLOBAL: OnceLock<Gitignore> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let (rules, err) = Gitignore::global();
        if let Some(err) = err
            && !err.is_io()
        {
            tracing::warn!("{err}");
        }
        rules
    })
}
