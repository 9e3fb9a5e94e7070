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

use ignore::gitignore::{Gitignore, GitignoreBuilder, gitconfig_excludes_path};

use crate::stat_cache::{Seen, Trail, now_ns};

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
    /// Where each rule came from, and where one was looked for, goes on `trail`.
    pub fn above(start: &Path, mut trail: Option<&mut Trail>) -> Rules {
        let mut levels = Vec::new();
        let mut look = |path: &Path| look_at(trail.as_deref_mut(), path);
        if look(&start.join(".git")) != Seen::Absent || look(&start.join(".jj")) != Seen::Absent {
            return Rules { levels };
        }
        for dir in start.ancestors().skip(1) {
            let level = Level::read(dir, Found::MAYBE, &mut look);
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
    pub fn enter<'a>(
        &mut self,
        dir: &Path,
        names: impl Iterator<Item = &'a OsStr>,
        mut trail: Option<&mut Trail>,
    ) {
        let mut found = Found::default();
        for name in names {
            match name.as_encoded_bytes() {
                b".gitignore" => found.gitignore = true,
                b".git" => found.git = true,
                b".jj" => found.jj = true,
                _ => {}
            }
        }
        let mut look = |path: &Path| look_at(trail.as_deref_mut(), path);
        self.levels.push(Level::read(dir, found, &mut look));
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
            (true, true) => global().rules.matched(path, is_dir),
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
    /// The rules of `dir`, looking (with `look`) only for the files `found` says may be
    /// there.
    fn read(dir: &Path, found: Found, look: &mut impl FnMut(&Path) -> Seen) -> Level {
        let dot_git = dir.join(".git");
        let git = match found.git {
            true => look(&dot_git),
            false => Seen::Absent,
        };
        let top = git != Seen::Absent || (found.jj && look(&dir.join(".jj")) != Seen::Absent);
        let exclude = match git {
            Seen::Folder => rules(dir, &dot_git.join("info/exclude"), look),
            Seen::File(_) => match common_dir(dir, &dot_git, look) {
                Some(common) => rules(dir, &common.join("info/exclude"), look),
                None => Gitignore::empty(),
            },
            Seen::Absent => Gitignore::empty(),
        };
        let gitignore = match found.gitignore {
            true => rules(dir, &dir.join(".gitignore"), look),
            false => Gitignore::empty(),
        };
        Level {
            gitignore,
            exclude,
            top,
        }
    }
}

/// What is at `path`, noted on `trail` if there is one: looked at before it is read.
fn look_at(trail: Option<&mut Trail>, path: &Path) -> Seen {
    match trail {
        Some(trail) => trail.look(path),
        None => Seen::at(path),
    }
}

/// The rules in `file`, for paths below `dir`. A file that is not there or cannot be read
/// has none, as for git; a line that is no valid pattern is skipped with a warning.
fn rules(dir: &Path, file: &Path, look: &mut impl FnMut(&Path) -> Seen) -> Gitignore {
    match look(file) {
        Seen::File(_) => read_rules(GitignoreBuilder::new(dir), file),
        Seen::Absent | Seen::Folder => Gitignore::empty(),
    }
}

fn read_rules(mut builder: GitignoreBuilder, file: &Path) -> Gitignore {
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
fn common_dir(dir: &Path, dot_git: &Path, look: &mut impl FnMut(&Path) -> Seen) -> Option<PathBuf> {
    let text = std::fs::read_to_string(dot_git).ok()?;
    let git_dir = dir.join(text.lines().next()?.strip_prefix("gitdir: ")?.trim_end());
    let commondir = git_dir.join("commondir");
    if look(&commondir) == Seen::Absent {
        return Some(git_dir);
    }
    match std::fs::read_to_string(&commondir) {
        Ok(common) => Some(git_dir.join(common.lines().next()?.trim_end())),
        Err(_) => Some(git_dir),
    }
}

/// The user's global excludes file (`core.excludesFile`, or `~/.config/git/ignore`), read
/// once a process, as `Gitignore::global` reads it; with where it is and what was there.
struct Global {
    rules: Gitignore,
    file: Option<(PathBuf, Seen, i128)>,
}

fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let (Some(file), Ok(cwd)) = (gitconfig_excludes_path(), std::env::current_dir()) else {
            return Global {
                rules: Gitignore::empty(),
                file: None,
            };
        };
        let at = now_ns();
        let seen = Seen::at(&file);
        let rules = match seen {
            Seen::File(_) => read_rules(GitignoreBuilder::new(cwd), &file),
            Seen::Absent | Seen::Folder => Gitignore::empty(),
        };
        Global {
            rules,
            file: Some((file, seen, at)),
        }
    })
}

/// Where the global excludes file is: a walk kept under one is not the walk under another.
pub fn global_file() -> Option<&'static Path> {
    global().file.as_ref().map(|(path, ..)| path.as_path())
}

/// Notes the global excludes file, as this process read it, on `trail`.
pub fn note_global(trail: &mut Trail) {
    if let Some((path, seen, at)) = &global().file {
        trail.saw(path, *seen, *at);
    }
}
