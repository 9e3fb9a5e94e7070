//! Expands `inputs` and `outputs` patterns into the sorted files they name.
//!
//! A pattern is walked from its literal prefix (`src/**/*.rs` walks `src/` only); a pattern
//! that starts with a glob (`**/*.rs`) walks the whole project, so prefer rooted patterns.
//! Inputs skip what git ignores (`.gitignore` at every level, `.git/info/exclude`, the global
//! excludes file); outputs do not, since build products are usually ignored. The state
//! directory, `.git` and murphy's temp files are never matched.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobMatcher};

use crate::gitignore::{self, Rules};
use crate::stat_cache::{Trail, Walks};

/// Characters that make a path component a pattern rather than a name.
const GLOB_CHARS: &[char] = &['*', '?', '[', '{'];

/// What a stage's `inputs` patterns name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Relative to the project root, sorted by their bytes (as the manifest keys them),
    /// without duplicates.
    pub files: Vec<PathBuf>,
    /// The patterns (as written) that named no file: a typo, or everything they match is
    /// ignored by git.
    pub unmatched: Vec<String>,
}

/// Whether a walk skips what git ignores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ignores {
    Honour,
    Disregard,
}

/// Reads a pattern the way murphy reads them: `*` stays within one directory, `**` spans
/// any number. The planner reports bad globs with this, before anything runs; only a walk
/// compiles one ([`compile`]), which a glob that parses cannot fail.
pub fn parse(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(clean(pattern))
        .literal_separator(true)
        .build()
}

/// [`parse`], compiled for matching: a regex built per pattern, a tenth of a millisecond.
pub fn compile(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    parse(pattern).map(|g| g.compile_matcher())
}

/// `./src//a` is `src/a`.
pub fn clean(pattern: &str) -> &str {
    let mut p = pattern;
    while let Some(rest) = p.strip_prefix("./") {
        p = rest.trim_start_matches('/');
    }
    p.trim_end_matches('/')
}

/// Why a path or pattern does not name a place inside the directory it is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Escape {
    #[error("it is an absolute path")]
    Absolute,
    #[error("its `..` parts lead out of the pipeline's directory")]
    Above,
    #[error("a `..` follows a glob part, which may stand for any depth")]
    ParentAfterGlob,
}

/// `path` with `.` parts and doubled slashes dropped and each `..` taking away the part before
/// it, by the text alone (a symlink on the way is not followed): one spelling of one place.
/// `""` is the directory itself.
pub fn lexical(path: &Path) -> Result<PathBuf, Escape> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(Escape::Above);
                }
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::Prefix(_) => return Err(Escape::Absolute),
        }
    }
    Ok(out)
}

/// A pattern made [`lexical`], so that what it names is known before anything is walked:
/// `out2/../../x` leaves the project, `./a/../b` is `b`. A `..` after a glob part is refused,
/// since `**` may stand for no part at all.
pub fn normalize(pattern: &str) -> Result<String, Escape> {
    let mut glob_seen = false;
    for part in Path::new(pattern).components() {
        match part {
            Component::Normal(name) if is_glob(&name.to_string_lossy()) => glob_seen = true,
            Component::ParentDir if glob_seen => return Err(Escape::ParentAfterGlob),
            _ => {}
        }
    }
    lexical(Path::new(pattern)).map(|p| p.to_string_lossy().into_owned())
}

pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(GLOB_CHARS)
}

/// The files a stage's `inputs` name, skipping what git ignores. A pattern that names a file
/// literally counts even if git ignores it; a directory named literally is walked with the
/// ignore rules that apply below it. With `walks`, a walk whose folders and rules have not
/// moved since one kept there is not walked again.
pub fn expand_inputs(
    root: &Path,
    patterns: &[String],
    skip: &Path,
    walks: Option<&Walks>,
) -> io::Result<Inputs> {
    if patterns.is_empty() {
        return Ok(Inputs::default());
    }
    let mut files = Vec::new();
    let mut unmatched = Vec::new();
    let root = std::path::absolute(root)?;
    let skip = std::path::absolute(skip)?;
    // Ignore files mean nothing outside a git repository (as for git), and looking for them
    // costs four lookups a directory: decided once, not in every directory.
    let ignores = if root.ancestors().any(|dir| dir.join(".git").exists()) {
        Ignores::Honour
    } else {
        Ignores::Disregard
    };
    let walks = walks.filter(|_| ignores == Ignores::Honour);
    for pattern in patterns {
        if walk(&root, pattern, &skip, ignores, walks, &mut files)? == 0 {
            unmatched.push(pattern.clone());
        }
    }
    // By bytes, not `Path`'s component by component: cheaper, and the order the manifest's
    // keys have anyway.
    files.sort_unstable_by(|a: &PathBuf, b: &PathBuf| {
        a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes())
    });
    files.dedup_by(|a, b| a.as_os_str() == b.as_os_str());
    Ok(Inputs { files, unmatched })
}

/// The first of `files` (paths below `root` that [`expand`] matched) that really leads out of
/// the project, with where it leads: a symlink to `/etc/passwd` or `../../secret`. Archive and
/// publish read what they match, so such a path would carry bytes from outside the project;
/// they refuse it. A path that leads nowhere is not reported: its read fails on its own.
pub fn leading_outside<'a>(
    root: &Path,
    files: impl IntoIterator<Item = &'a PathBuf>,
) -> Option<(PathBuf, PathBuf)> {
    let project = std::fs::canonicalize(root).ok()?;
    files.into_iter().find_map(|relative| {
        let real = std::fs::canonicalize(root.join(relative)).ok()?;
        (!real.starts_with(&project)).then(|| (relative.clone(), real))
    })
}

/// The files (and symlinks) below `root` that `patterns` name, relative to `root`, sorted and
/// without duplicates, ignored files included: for outputs, archives and publishing. A plain
/// path names a file, or every file below a directory. Paths inside `skip` (the state
/// directory) and `.git` directories are never matched.
pub fn expand(root: &Path, patterns: &[String], skip: &Path) -> io::Result<Vec<PathBuf>> {
    // Compared as absolute paths: `root` is often the relative `.`, `skip` an absolute path.
    let root = std::path::absolute(root)?;
    let skip = std::path::absolute(skip)?;
    let mut files = Vec::new();
    for pattern in patterns {
        walk(&root, pattern, &skip, Ignores::Disregard, None, &mut files)?;
    }
    files.sort_unstable();
    files.dedup();
    Ok(files)
}

/// Adds what one pattern names to `files`; returns how many files it matched (counting those
/// another pattern matched too). A walk kept in `walks` is taken from there if it holds, and
/// one made is kept there.
fn walk(
    root: &Path,
    pattern: &str,
    skip: &Path,
    ignores: Ignores,
    walks: Option<&Walks>,
    files: &mut Vec<PathBuf>,
) -> io::Result<usize> {
    // The planner refuses a pattern that leaves the project; walked as it reads, without
    // the kernel resolving a `..` through a symlink.
    let pattern = normalize(pattern).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{pattern}` is not inside the project: {e}"),
        )
    })?;
    let pattern = pattern.as_str();
    let glob = is_glob(pattern);
    // `dir/**` names every file the walk below `dir` meets: no glob need match each one.
    let cleaned = clean(pattern);
    let everything_below =
        cleaned == "**" || cleaned.strip_suffix("/**").is_some_and(|dir| !is_glob(dir));
    let prefix = literal_prefix(pattern);
    let start = root.join(&prefix);
    // The walk's own root passes every filter, so the state directory and `.git` are
    // refused here when a pattern names them.
    if start.starts_with(skip)
        || prefix.components().any(|c| c.as_os_str() == ".git")
        || std::fs::symlink_metadata(&start).is_err()
    {
        return Ok(0);
    }
    let honour = ignores == Ignores::Honour;
    // Outputs, archives and publishing never look through a symlink: the walker would
    // follow one at its root. A link named literally is itself the match.
    if !honour && let Some(link) = symlink_on_the_way(root, &prefix) {
        if glob || link != prefix {
            return Ok(0);
        }
        files.push(prefix);
        return Ok(1);
    }
    // Where walks are kept: the one kept under this key if it holds, else the key to keep
    // this one under.
    let kept = match walks {
        Some(walks) => {
            let key = walk_key(root, skip, pattern);
            if let Some(matched) = walks.walked(&key, files) {
                return Ok(matched);
            }
            Some((walks, key))
        }
        None => None,
    };
    let trail = kept.as_ref().map(|_| {
        let mut trail = Trail::begin();
        gitignore::note_global(&mut trail);
        trail
    });
    // Compiled only for a walk that is made: a tenth of a millisecond a pattern.
    let matcher = if glob && !everything_below {
        Some(compile(pattern).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?)
    } else {
        None
    };
    let before = files.len();
    let mut walk = Walk {
        root_len: root.as_os_str().len(),
        skip,
        honour,
        rules: None,
        trail,
        matcher: matcher.as_ref(),
        everything_below,
        files,
        matched: 0,
    };
    walk.start(start)?;
    let matched = walk.matched;
    if let (Some((walks, key)), Some(trail)) = (kept, walk.trail) {
        walks.keep(&key, trail, &files[before..]);
    }
    Ok(matched)
}

/// What a walk is kept under: the pattern, and all else it depends on that no stamp shows.
fn walk_key(root: &Path, skip: &Path, pattern: &str) -> Vec<u8> {
    let global = gitignore::global_file().unwrap_or(Path::new(""));
    [
        root.as_os_str().as_bytes(),
        skip.as_os_str().as_bytes(),
        global.as_os_str().as_bytes(),
        pattern.as_bytes(),
    ]
    .join(&0)
}

/// One pattern's walk below its literal prefix.
struct Walk<'a> {
    /// The length of the project root's path, cut off every path found.
    root_len: usize,
    /// The state directory, never entered.
    skip: &'a Path,
    /// Whether what git ignores is skipped (inputs), or kept (outputs).
    honour: bool,
    /// What git ignores where the walk is, once it is in a folder.
    rules: Option<Rules>,
    /// What the walk depends on, when it is to be kept.
    trail: Option<Trail>,
    /// The glob a file must match (`None`: every file below the start).
    matcher: Option<&'a GlobMatcher>,
    /// `dir/**`: a file named `dir` itself is not below it.
    everything_below: bool,
    files: &'a mut Vec<PathBuf>,
    matched: usize,
}

impl Walk<'_> {
    /// Walks from `start`, which passes every filter (the pattern names it). A symlink there
    /// is itself a file the pattern names (its target is part of the result), and is
    /// followed; below it none is.
    fn start(&mut self, start: PathBuf) -> io::Result<()> {
        let link = std::fs::symlink_metadata(&start).is_ok_and(|meta| meta.is_symlink());
        match std::fs::metadata(&start) {
            Ok(meta) if meta.is_dir() => {
                if link {
                    self.file(&start, true);
                }
                if self.honour {
                    self.rules = Some(Rules::above(&start, self.trail.as_mut()));
                }
                self.folder(&mut { start })
            }
            Ok(_) => {
                if let Some(trail) = &mut self.trail {
                    trail.not_keepable();
                }
                self.file(&start, true);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(with_path(e, &start)),
        }
    }

    /// Walks `dir`: its entries in the order listed, each folder as it is met. `dir` is the
    /// walk's one path buffer: each entry is pushed onto it and popped off.
    fn folder(&mut self, dir: &mut PathBuf) -> io::Result<()> {
        // Listed whole first: the folder's own `.gitignore` applies to its entries. A folder
        // deleted meanwhile (by another stage) holds no inputs. Stamped before it is listed,
        // so a change while it is leaves the stamp behind.
        if let Some(trail) = &mut self.trail {
            trail.folder(dir);
        }
        let entries = match list(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(with_path(e, dir)),
        };
        if let Some(rules) = &mut self.rules {
            let names = entries.iter().map(|(name, _)| name.as_os_str());
            rules.enter(dir, names, self.trail.as_mut());
        }
        // Room for every entry at once: grown one doubling at a time, 5,000 paths were
        // copied a dozen times.
        self.files.reserve(entries.len());
        for (name, is_dir) in &entries {
            if (*is_dir && name == ".git") || crate::atomic_file::is_temp(name) {
                continue;
            }
            dir.push(name);
            let skipped = (*is_dir && dir.as_path() == self.skip)
                || self.rules.as_ref().is_some_and(|r| r.ignores(dir, *is_dir));
            let walked = match (skipped, *is_dir) {
                (true, _) => Ok(()),
                (false, true) => self.folder(dir),
                (false, false) => {
                    self.file(dir, false);
                    Ok(())
                }
            };
            dir.pop();
            walked?;
        }
        if let Some(rules) = &mut self.rules {
            rules.leave();
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, at_start: bool) {
        let relative = relative(path, self.root_len);
        let named = match self.matcher {
            Some(matcher) => matcher.is_match(relative),
            // `dir/**` never names `dir` itself, when it is a file.
            None => !(self.everything_below && at_start),
        };
        if named {
            self.matched += 1;
            self.files.push(relative.to_path_buf());
        }
    }
}

/// A folder's entries: each name, and whether it is a folder (a symlink is not).
fn list(dir: &Path) -> io::Result<Vec<(OsString, bool)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // The type comes with the name on most file systems; a file deleted since it was
        // listed is not an entry.
        match entry.file_type() {
            Ok(kind) => entries.push((entry.file_name(), kind.is_dir())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(entries)
}

/// `path` below the project root, cut off as bytes: a `strip_prefix` compares component by
/// component, for each file. The root itself is the empty path.
fn relative(path: &Path, root_len: usize) -> &Path {
    let rest = path
        .as_os_str()
        .as_bytes()
        .get(root_len..)
        .unwrap_or_default();
    Path::new(OsStr::from_bytes(rest.strip_prefix(b"/").unwrap_or(rest)))
}

fn with_path(err: io::Error, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

/// The first component of `relative` (inside `root`), itself included, that is a symlink.
pub fn symlink_on_the_way(root: &Path, relative: &Path) -> Option<PathBuf> {
    let mut path = PathBuf::new();
    for part in relative.components() {
        path.push(part);
        match std::fs::symlink_metadata(root.join(&path)) {
            Ok(meta) if meta.file_type().is_symlink() => return Some(path),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// The warning for an `inputs` pattern that named no file.
pub fn unmatched_warning(stage: &str, pattern: &str) -> String {
    format!(
        "stage `{stage}`: `inputs` pattern `{pattern}` matches no file (files git ignores do not count)"
    )
}

/// How many changed files a warning names before it counts the rest.
const NAMED: usize = 5;

/// The warning for a stage that changed files its own `inputs` name.
pub fn changed_by_run_warning(stage: &str, changed: &[String]) -> String {
    let mut names: Vec<String> = changed
        .iter()
        .take(NAMED)
        .map(|f| format!("`{f}`"))
        .collect();
    if changed.len() > NAMED {
        names.push(format!("and {} more", changed.len() - NAMED));
    }
    format!(
        "stage `{stage}` changed its own inputs when it last ran: {}; its checkpoint cannot match, so it runs again. \
         Add what it writes to `.gitignore` (or `.git/info/exclude`), or narrow its `inputs` so they do not name it",
        names.join(", ")
    )
}

/// The leading components of a pattern that hold no glob characters.
pub fn literal_prefix(pattern: &str) -> PathBuf {
    if !is_glob(pattern) {
        return PathBuf::from(pattern);
    }
    Path::new(pattern)
        .components()
        .take_while(
            |c| matches!(c, Component::Normal(s) if !s.to_string_lossy().contains(GLOB_CHARS)),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_walk_from_their_literal_prefix_and_sort() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "src/b.rs",
            "src/a/c.rs",
            "src/x.txt",
            "README.md",
            ".murphy/s.rs",
            "src/.git/h.rs",
        ] {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, f).unwrap();
        }
        let patterns = vec![
            "src/**/*.rs".to_owned(),
            "./README.md".to_owned(),
            "**/*.rs".to_owned(),
        ];
        let files = expand(root, &patterns, &root.join(".murphy")).unwrap();
        let names: Vec<&str> = files.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(names, ["README.md", "src/a/c.rs", "src/b.rs"]);
        // `*` does not cross directories.
        let top = expand(root, &["src/*.rs".to_owned()], &root.join(".murphy")).unwrap();
        assert_eq!(top, [PathBuf::from("src/b.rs")]);
    }

    /// `dir/**` is walked without a glob: what it names must be what the glob names.
    #[test]
    fn everything_below_a_folder_is_what_its_glob_matches() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in ["d/a", "d/.hidden", "d/e/f/g", "dx/a", "file", ".murphy/s"] {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, f).unwrap();
        }
        let skip = root.join(".murphy");
        let walked = |pattern: &str| expand(root, &[pattern.to_owned()], &skip).unwrap();
        let globbed = |pattern: &str| -> Vec<PathBuf> {
            let glob = compile(pattern).unwrap();
            walked("**/*")
                .into_iter()
                .filter(|p| glob.is_match(p))
                .collect()
        };
        for pattern in ["d/**", "./d/**", "**", "d/e/**", "file/**", "missing/**"] {
            assert_eq!(walked(pattern), globbed(pattern), "{pattern}");
        }
        assert_eq!(walked("d/**").len(), 3);
        assert!(walked("file/**").is_empty());
    }

    /// Writes each `(path, text)` below `root`, with the folders it needs.
    fn write_tree(root: &Path, files: &[(&str, &str)]) {
        for (f, text) in files {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        }
    }

    #[test]
    fn inputs_skip_what_git_ignores_unless_named_and_report_what_matched_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_tree(
            root,
            &[
                (".git/info/exclude", "excluded.txt\n"),
                (".gitignore", "*.log\n/build/\n"),
                ("src/a.rs", ""),
                ("src/x.log", ""),
                ("src/excluded.txt", ""),
                ("src/deep/.gitignore", "*.rs\n"),
                ("src/deep/b.rs", ""),
                ("build/c.rs", ""),
                ("named.log", ""),
            ],
        );
        let patterns: Vec<String> = ["src", "**/*.rs", "named.log", "*.py", "build/**/*.rs"]
            .map(str::to_owned)
            .to_vec();
        let found = expand_inputs(root, &patterns, &root.join(".murphy"), None).unwrap();
        let names: Vec<&str> = found.files.iter().map(|p| p.to_str().unwrap()).collect();
        // `build/` is ignored, but a pattern rooted in it walks it: only its own rules apply.
        assert_eq!(
            names,
            ["build/c.rs", "named.log", "src/a.rs", "src/deep/.gitignore"]
        );
        assert_eq!(found.unmatched, ["*.py"]);
        // Outputs keep what git ignores.
        let outputs = expand(root, &["src".to_owned()], &root.join(".murphy")).unwrap();
        assert_eq!(outputs.len(), 5, "{outputs:?}");
    }

    /// The `ignore` crate's walker, as murphy used it before it walked on its own: what
    /// the walk must still find, file for file.
    fn walked_by_the_ignore_crate(root: &Path, pattern: &str, skip: &Path) -> Vec<PathBuf> {
        let glob = is_glob(pattern);
        let cleaned = clean(pattern);
        let everything_below =
            cleaned == "**" || cleaned.strip_suffix("/**").is_some_and(|dir| !is_glob(dir));
        let matcher = (glob && !everything_below).then(|| compile(pattern).unwrap());
        let start = root.join(literal_prefix(pattern));
        let skip = skip.to_owned();
        let walker = ignore::WalkBuilder::new(&start)
            .standard_filters(false)
            .parents(true)
            .git_ignore(true)
            .git_exclude(true)
            .git_global(true)
            .follow_links(false)
            .filter_entry(move |e| {
                let dir = e.file_type().is_some_and(|t| t.is_dir());
                !(dir && (e.file_name() == ".git" || e.path() == skip))
                    && !crate::atomic_file::is_temp(e.file_name())
            })
            .build();
        let mut found = Vec::new();
        for entry in walker.flatten() {
            let relative = entry.path().strip_prefix(root).unwrap().to_path_buf();
            if entry.file_type().is_none_or(|t| t.is_dir()) {
                continue;
            }
            let named = match &matcher {
                Some(matcher) => matcher.is_match(&relative),
                None => !(everything_below && entry.depth() == 0),
            };
            if named {
                found.push(relative);
            }
        }
        found.sort();
        found
    }

    /// Nested `.gitignore` files with re-included (`!`) and anchored rules, rules for
    /// folders only, `info/exclude`, a repository inside the project (whose files the
    /// project's rules do not reach), symlinks, the state directory and murphy's temp files.
    #[test]
    fn the_walk_finds_what_the_ignore_crates_walker_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_tree(
            root,
            &[
                (".git/info/exclude", "secret*\n"),
                (
                    ".gitignore",
                    "*.log\n!keep.log\n/build/\ndocs/*.tmp\ncache/\n**/gen/**\n*.h\n",
                ),
                ("a.txt", ""),
                ("x.log", ""),
                ("keep.log", ""),
                ("secret.txt", ""),
                ("build/out.bin", ""),
                ("docs/a.tmp", ""),
                ("docs/sub/b.tmp", ""),
                ("cache/c.txt", ""),
                ("gen/a/b.txt", ""),
                ("x/gen/c.txt", ""),
                ("src/.gitignore", "*.o\n!important.o\n/local.txt\n"),
                ("src/m.o", ""),
                ("src/important.o", ""),
                ("src/local.txt", ""),
                ("src/cache", ""),
                ("src/build/z.txt", ""),
                ("src/secret2.txt", ""),
                ("src/a.murphy-tmp-1-2", ""),
                ("src/deep/.gitignore", "!*.log\n"),
                ("src/deep/local.txt", ""),
                ("src/deep/e.log", ""),
                ("src/deep/m.o", ""),
                ("vendor/lib/.git/HEAD", ""),
                ("vendor/lib/.gitignore", "*.c\n"),
                ("vendor/lib/x.h", ""),
                ("vendor/lib/y.c", ""),
                ("vendor/top.h", ""),
                (".murphy/state.txt", ""),
            ],
        );
        std::os::unix::fs::symlink("src", root.join("link")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("src/dangling")).unwrap();
        let skip = root.join(".murphy");
        for pattern in [
            "**",
            "src/**",
            "src",
            "**/*.log",
            "src/deep/**",
            "vendor",
            "docs/**/*.tmp",
            "build/**",
            "link",
            "link/**",
            "keep.log",
            "x.log",
        ] {
            let mut files = Vec::new();
            walk(root, pattern, &skip, Ignores::Honour, None, &mut files).unwrap();
            files.sort();
            let before = walked_by_the_ignore_crate(root, pattern, &skip);
            assert_eq!(files, before, "{pattern}");
        }
        // Spot checks that the oracle saw the rules at all.
        let mut all = Vec::new();
        walk(root, "**", &skip, Ignores::Honour, None, &mut all).unwrap();
        let all: Vec<&str> = all.iter().map(|p| p.to_str().unwrap()).collect();
        for kept in [
            "keep.log",
            "src/important.o",
            "src/deep/e.log",
            "vendor/lib/x.h",
        ] {
            assert!(all.contains(&kept), "{kept}: {all:?}");
        }
        for ignored in [
            "x.log",
            "secret.txt",
            "src/m.o",
            "vendor/lib/y.c",
            "vendor/top.h",
        ] {
            assert!(!all.contains(&ignored), "{ignored}: {all:?}");
        }
    }

    #[test]
    fn patterns_are_resolved_by_their_text_and_must_stay_inside() {
        assert_eq!(normalize("./a//b/./c/../d"), Ok("a/b/d".to_owned()));
        assert_eq!(normalize("src/**/*.rs"), Ok("src/**/*.rs".to_owned()));
        assert_eq!(normalize("a/.."), Ok(String::new()));
        assert_eq!(normalize("out2/../../outside.txt"), Err(Escape::Above));
        assert_eq!(normalize("/etc/passwd"), Err(Escape::Absolute));
        assert_eq!(normalize("src/*/../x"), Err(Escape::ParentAfterGlob));
    }

    #[test]
    fn a_plain_directory_names_everything_below_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("docs/a")).unwrap();
        std::fs::write(dir.path().join("docs/a/i.html"), "x").unwrap();
        let files = expand(dir.path(), &["docs".to_owned()], Path::new("/nonexistent")).unwrap();
        assert_eq!(files, [PathBuf::from("docs/a/i.html")]);
    }
}
