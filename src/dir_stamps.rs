//! Whether a stage's commands may have created, removed or renamed one of its inputs: the
//! times of the directories its inputs were looked for in, taken before the commands ran and
//! compared after.
//!
//! A stage that writes into its own inputs (`__pycache__` beside its tests) never hits its
//! checkpoint, so after a run murphy looks for such writes, to warn about them. An entry
//! created, removed or renamed in a directory moves that directory's mtime and ctime, so the
//! inputs need walking again only where one moved; writes into files that were inputs show in
//! their own times, which the stat cache compares. inotify watches told the same, but closing
//! them waits for an RCU grace period: 10-25 ms in half the runs on this project's 2-core
//! machine, which a run that changed one input paid after its stage had ended.

use std::path::{Path, PathBuf};

use crate::inputs::Places;
use crate::stat_cache::{self, Stamp};

/// The times of a stage's input directories before its commands ran.
#[derive(Debug)]
pub struct DirStamps {
    /// The directories walked, relative to the project root; `None` for one that did not
    /// exist (or could not be read).
    dirs: Vec<(PathBuf, Option<Stamp>)>,
    /// The paths named literally, and whether each existed. One that was an input is
    /// compared as a file; one that was not becomes an input by appearing.
    named: Vec<(PathBuf, bool)>,
    /// When they were taken, as file times are kept.
    taken_ns: i128,
}

impl DirStamps {
    /// Stamps the directories walked for a stage's inputs, and notes which of the paths its
    /// patterns name literally exist.
    pub fn take(root: &Path, places: &Places) -> DirStamps {
        let taken_ns = stat_cache::now_ns();
        let dirs = places
            .dirs
            .iter()
            .map(|dir| (dir.clone(), stamp(&root.join(dir))))
            .collect();
        let named = places
            .named
            .iter()
            .map(|path| (path.clone(), exists(&root.join(path))))
            .collect();
        DirStamps {
            dirs,
            named,
            taken_ns,
        }
    }

    /// Whether an input may have been created, removed or renamed since the stamps were
    /// taken: a directory's times or inode moved, it appeared or went, or it had changed too
    /// shortly before to tell a later change in the same timestamp granule; or a path named
    /// literally appeared or went.
    pub fn moved(&self, root: &Path) -> bool {
        let dir_moved = |(dir, before): &(PathBuf, Option<Stamp>)| {
            let unsettled = before.is_some_and(|b| !stat_cache::settled(b.ctime_ns, self.taken_ns));
            unsettled || stamp(&root.join(dir)) != *before
        };
        self.dirs.iter().any(dir_moved)
            || self
                .named
                .iter()
                .any(|(path, existed)| exists(&root.join(path)) != *existed)
    }
}

/// Whether something is at `path`, a dangling symlink included.
fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// A directory's times, following a symlink to it: what it holds is the target's.
fn stamp(dir: &Path) -> Option<Stamp> {
    std::fs::metadata(dir).ok().map(|meta| Stamp::of(&meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn places(dirs: &[&str], named: &[&str]) -> Places {
        Places {
            dirs: dirs.iter().map(PathBuf::from).collect(),
            named: named.iter().map(PathBuf::from).collect(),
        }
    }

    /// Past the stat cache's window for file systems with fine times (100 ms), so that the
    /// directories made by a test count as settled.
    fn settle() {
        std::thread::sleep(Duration::from_millis(150));
    }

    #[test]
    fn entries_made_removed_or_renamed_move_their_folder_and_reads_and_writes_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src/deep")).unwrap();
        std::fs::write(root.join("src/deep/a.rs"), "a").unwrap();
        std::fs::write(root.join("Cargo.toml"), "x").unwrap();
        let places = places(&["src", "src/deep"], &["Cargo.toml", "local.env"]);
        settle();

        let stamps = DirStamps::take(root, &places);
        // Reading and rewriting a file leave its folder as it was: the file's own times tell
        // those (through the stat cache). So do the named file, and what is made beside it.
        std::fs::read(root.join("src/deep/a.rs")).unwrap();
        std::fs::write(root.join("src/deep/a.rs"), "b").unwrap();
        std::fs::write(root.join("Cargo.toml"), "y").unwrap();
        std::fs::write(root.join("out.txt"), "built").unwrap();
        assert!(!stamps.moved(root));

        for (change, undo) in [
            (
                Box::new(|| std::fs::write(root.join("src/deep/new.rs"), "n").unwrap())
                    as Box<dyn Fn()>,
                Box::new(|| std::fs::remove_file(root.join("src/deep/new.rs")).unwrap())
                    as Box<dyn Fn()>,
            ),
            (
                Box::new(|| std::fs::remove_file(root.join("src/deep/a.rs")).unwrap()),
                Box::new(|| std::fs::write(root.join("src/deep/a.rs"), "b").unwrap()),
            ),
            (
                Box::new(|| {
                    std::fs::rename(root.join("src/deep/a.rs"), root.join("src/deep/b.rs")).unwrap()
                }),
                Box::new(|| {
                    std::fs::rename(root.join("src/deep/b.rs"), root.join("src/deep/a.rs")).unwrap()
                }),
            ),
            (
                Box::new(|| std::fs::create_dir(root.join("src/new")).unwrap()),
                Box::new(|| std::fs::remove_dir(root.join("src/new")).unwrap()),
            ),
            // A file named literally appears, or goes.
            (
                Box::new(|| std::fs::write(root.join("local.env"), "e").unwrap()),
                Box::new(|| std::fs::remove_file(root.join("local.env")).unwrap()),
            ),
            (
                Box::new(|| std::fs::remove_file(root.join("Cargo.toml")).unwrap()),
                Box::new(|| std::fs::write(root.join("Cargo.toml"), "y").unwrap()),
            ),
        ] {
            settle();
            let stamps = DirStamps::take(root, &places);
            change();
            assert!(stamps.moved(root));
            undo();
        }
    }

    /// A folder changed just before it was stamped may change again within the same
    /// timestamp granule and keep its times: it counts as moved.
    #[test]
    fn a_folder_changed_just_before_it_was_stamped_counts_as_moved() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("src")).unwrap();
        std::fs::write(root.join("src/a.rs"), "a").unwrap();
        let mut stamps = DirStamps::take(root, &places(&["src"], &[]));
        // Taken at a set distance from the folder's last change, not whenever the test got
        // to it: 1 ms after it counts as moved, 10 s after it does not.
        let changed = stamps.dirs[0].1.unwrap().ctime_ns;
        stamps.taken_ns = changed + 1_000_000;
        assert!(stamps.moved(root));
        stamps.taken_ns = changed + 10_000_000_000;
        assert!(!stamps.moved(root));
    }
}
