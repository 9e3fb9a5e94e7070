//! Expands `inputs` and `outputs` patterns into the sorted files they name.
//!
//! A pattern is walked from its literal prefix (`src/**/*.rs` walks `src/` only); a pattern
//! that starts with a glob (`**/*.rs`) walks the whole project, `target/` included, so
//! prefer rooted patterns. The state directory, `.git` and murphy's temp files are never
//! matched.

use std::collections::BTreeSet;
use std::io;
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobMatcher};

/// Characters that make a path component a pattern rather than a name.
const GLOB_CHARS: &[char] = &['*', '?', '[', '{'];

/// Compiles a pattern the way murphy reads them: `*` stays within one directory, `**` spans
/// any number. Used by the planner to report bad globs before anything runs.
pub fn compile(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    GlobBuilder::new(clean(pattern))
        .literal_separator(true)
        .build()
        .map(|g: Glob| g.compile_matcher())
}

/// `./src//a` is `src/a`.
pub fn clean(pattern: &str) -> &str {
    let mut p = pattern;
    while let Some(rest) = p.strip_prefix("./") {
        p = rest.trim_start_matches('/');
    }
    p.trim_end_matches('/')
}

pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(GLOB_CHARS)
}

/// The files (and symlinks) below `root` that `patterns` name, relative to `root`, sorted and
/// without duplicates. A plain path names a file, or every file below a directory. Paths
/// inside `skip` (the state directory) and `.git` directories are never inputs.
pub fn expand(root: &Path, patterns: &[String], skip: &Path) -> io::Result<Vec<PathBuf>> {
    // Compared as absolute paths: `root` is often the relative `.`, `skip` an absolute path.
    let root = std::path::absolute(root)?;
    let skip = std::path::absolute(skip)?;
    let mut files = BTreeSet::new();
    for pattern in patterns {
        let pattern = clean(pattern);
        let matcher = if is_glob(pattern) {
            Some(compile(pattern).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?)
        } else {
            None
        };
        let start = root.join(literal_prefix(pattern));
        if std::fs::symlink_metadata(&start).is_err() {
            continue;
        }
        let walker = walkdir::WalkDir::new(&start)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                let dir = e.file_type().is_dir();
                !(dir && (e.file_name() == ".git" || e.path() == skip))
                    && !crate::atomic_file::is_temp(e.file_name())
            });
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                // Another stage may delete files while this one is fingerprinted: a file
                // that is gone is not an input.
                Err(e)
                    if e.io_error()
                        .is_some_and(|io| io.kind() == io::ErrorKind::NotFound) =>
                {
                    continue;
                }
                Err(e) => return Err(io::Error::other(e)),
            };
            if entry.file_type().is_dir() {
                continue;
            }
            let Ok(relative) = entry.path().strip_prefix(&root) else {
                continue;
            };
            if matcher.as_ref().is_none_or(|m| m.is_match(relative)) {
                files.insert(relative.to_path_buf());
            }
        }
    }
    Ok(files.into_iter().collect())
}

/// The leading components of a pattern that hold no glob characters.
fn literal_prefix(pattern: &str) -> PathBuf {
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

    #[test]
    fn a_plain_directory_names_everything_below_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("docs/a")).unwrap();
        std::fs::write(dir.path().join("docs/a/i.html"), "x").unwrap();
        let files = expand(dir.path(), &["docs".to_owned()], Path::new("/nonexistent")).unwrap();
        assert_eq!(files, [PathBuf::from("docs/a/i.html")]);
    }
}
