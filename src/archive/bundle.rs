//! The zip bundle of a build: the only code that touches the zip crate, whose major version
//! moves often.
//!
//! Bundles are deterministic: entries sorted by path, every timestamp 1980-01-01 00:00:00,
//! permissions 0644 (0755 for executables), one compression level, so the same files in give
//! the same bytes out. Extraction trusts nothing in the zip: every path is checked to stay in
//! the destination (no absolute paths, no `..`, no symlinks), and every file's SHA-256 is
//! checked against the manifest on the way out.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot write the bundle `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{}` is not a readable zip bundle", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error(
        "entry `{0}` would land outside the destination (absolute path, `..` or a symlink); refusing it"
    )]
    Unsafe(String),
    #[error("entry `{name}` does not match the manifest: sha256 {actual}, expected {expected}")]
    Mismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error(
        "refusing to archive `{0}` under that name: an entry must be a relative path that stays inside the project (no leading `/`, no `..`)"
    )]
    OutsideProject(String),
    #[error(
        "`{}` is a symlink; refusing to extract through it (remove it, or extract elsewhere)",
        .0.display()
    )]
    SymlinkInDestination(PathBuf),
    #[error("the bundle has no entry `{0}`, which the manifest lists")]
    NoSuchEntry(String),
    #[error("cannot extract `{}`", path.display())]
    Extract {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One file going into a bundle: its path inside the zip and where to read it.
pub struct Entry {
    pub name: String,
    pub source: PathBuf,
}

/// Writes `entries` (sorted here) as a deterministic zip at `path`, durably.
pub fn write(path: &Path, mut entries: Vec<Entry>) -> Result<(), BundleError> {
    let fail = |source: io::Error| BundleError::Write {
        path: path.to_owned(),
        source,
    };
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    // The planner refuses such files too; this is the last word, since an entry named
    // `../x` lands outside the folder of whoever unzips the bundle.
    for entry in &entries {
        check_name(&entry.name)?;
    }
    let file = File::create(path).map_err(fail)?;
    let mut zip = ZipWriter::new(file);
    let mut buf = vec![0u8; 1 << 20];
    for entry in &entries {
        let executable = std::fs::metadata(&entry.source)
            .map_err(fail)?
            .permissions()
            .mode()
            & 0o111
            != 0;
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(6))
            .last_modified_time(DateTime::default())
            .unix_permissions(if executable { 0o755 } else { 0o644 })
            .large_file(true);
        zip.start_file(entry.name.as_str(), options)
            .map_err(|e| fail(io::Error::other(e)))?;
        let mut source = File::open(&entry.source).map_err(fail)?;
        loop {
            let n = source.read(&mut buf).map_err(fail)?;
            if n == 0 {
                break;
            }
            zip.write_all(&buf[..n]).map_err(fail)?;
        }
    }
    let file = zip.finish().map_err(|e| fail(io::Error::other(e)))?;
    file.sync_all().map_err(fail)
}

/// Refuses an entry name that could land outside wherever the bundle is extracted; names
/// murphy writes are plain relative paths, so a name that [`safe_relative`] would rewrite
/// (`a/./b`) is refused too.
pub fn check_name(name: &str) -> Result<(), BundleError> {
    match safe_relative(name) {
        Some(path) if path.as_os_str() == name => Ok(()),
        _ => Err(BundleError::OutsideProject(name.to_owned())),
    }
}

/// The names of entries that could land outside wherever the bundle is extracted (absolute,
/// climbing out with `..`, or symlinks), read from the zip's directory; for `audit`.
pub fn unsafe_entries(path: &Path) -> Result<Vec<String>, BundleError> {
    let mut zip = open(path)?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let file = zip
            .by_index_raw(i)
            .map_err(|source| BundleError::Unreadable {
                path: path.to_owned(),
                source,
            })?;
        let name = entry_name(&file)?;
        if file.is_symlink() || safe_relative(&name).is_none() || file.enclosed_name().is_none() {
            out.push(name);
        }
    }
    Ok(out)
}

/// Each entry's SHA-256 and size, read from the bundle; for `audit`.
pub fn digests(path: &Path) -> Result<BTreeMap<String, (String, u64)>, BundleError> {
    let mut zip = open(path)?;
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).map_err(|source| BundleError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let name = entry_name(&file)?;
        if file.is_dir() {
            continue;
        }
        let (digest, size) = sha256_reader(&mut file).map_err(|e| BundleError::Unreadable {
            path: path.to_owned(),
            source: zip::result::ZipError::Io(e),
        })?;
        out.insert(name, (digest, size));
    }
    Ok(out)
}

/// One file of the bundle, read whole and checked against its `sha256` (for `murphy serve`'s
/// downloads, which hand out nothing the manifest does not vouch for).
pub fn read_entry(path: &Path, name: &str, sha256: &str) -> Result<Vec<u8>, BundleError> {
    let mut zip = open(path)?;
    let unreadable = |source| BundleError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let mut file = zip.by_name(name).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| unreadable(zip::result::ZipError::Io(e)))?;
    let (digest, _) = sha256_reader(&mut bytes.as_slice())
        .map_err(|e| unreadable(zip::result::ZipError::Io(e)))?;
    if digest != sha256 {
        return Err(BundleError::Mismatch {
            name: name.to_owned(),
            actual: digest,
            expected: sha256.to_owned(),
        });
    }
    Ok(bytes)
}

/// Extracts the entries named in `wanted` (all when empty) into `dest`, refusing any entry
/// that could land outside it and any whose bytes do not match `expected` (name to sha256).
/// Each file is written to a temp name and renamed only once its digest checked out.
pub fn extract(
    path: &Path,
    dest: &Path,
    wanted: &[String],
    expected: &BTreeMap<String, String>,
) -> Result<Vec<PathBuf>, BundleError> {
    let mut zip = open(path)?;
    let mut written = Vec::new();
    let mut found = vec![false; wanted.len()];
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).map_err(|source| BundleError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let name = entry_name(&file)?;
        if let Some(at) = wanted.iter().position(|w| *w == name) {
            found[at] = true;
        } else if !wanted.is_empty() {
            continue;
        }
        if file.is_symlink() {
            return Err(BundleError::Unsafe(name));
        }
        let relative = safe_relative(&name).ok_or_else(|| BundleError::Unsafe(name.clone()))?;
        // `enclosed_name` is the zip crate's own check; both must agree the entry is safe.
        if file.enclosed_name().is_none() {
            return Err(BundleError::Unsafe(name));
        }
        let target = dest.join(&relative);
        let fail = |source| BundleError::Extract {
            path: target.clone(),
            source,
        };
        if file.is_dir() {
            make_dirs(dest, &relative)?;
            continue;
        }
        if let Some(parent) = relative.parent() {
            make_dirs(dest, parent)?;
        }
        let tmp = target.with_file_name(crate::atomic_file::temp_name(
            &target.file_name().unwrap_or_default().to_string_lossy(),
        ));
        let result = (|| {
            let mut out = File::create(&tmp).map_err(fail)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).map_err(fail)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(fail)?;
            }
            let actual = crate::fingerprint::hex(&hasher.finalize());
            match expected.get(&name) {
                Some(want) if *want == actual => {}
                Some(want) => {
                    return Err(BundleError::Mismatch {
                        name: name.clone(),
                        expected: want.clone(),
                        actual,
                    });
                }
                None => {
                    return Err(BundleError::Mismatch {
                        name: name.clone(),
                        expected: "(not in the manifest)".into(),
                        actual,
                    });
                }
            }
            let mode = file.unix_mode().map_or(0o644, |m| m & 0o755);
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
            std::fs::rename(&tmp, &target).map_err(fail)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        written.push(target);
    }
    if let Some(at) = found.iter().position(|f| !f) {
        return Err(BundleError::NoSuchEntry(wanted[at].clone()));
    }
    if wanted.is_empty() {
        let extracted: Vec<String> = written
            .iter()
            .filter_map(|p| p.strip_prefix(dest).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if let Some(missing) = expected.keys().find(|k| !extracted.contains(k)) {
            return Err(BundleError::NoSuchEntry(missing.clone()));
        }
    }
    Ok(written)
}

/// Creates `relative`'s folders under `dest` one by one, refusing to go through a symlink
/// already there: `dest/dist -> /etc` would otherwise take the files wherever it points.
/// The last component of a file's path needs no check: the rename replaces a symlink there
/// rather than writing through it.
fn make_dirs(dest: &Path, relative: &Path) -> Result<(), BundleError> {
    let mut at = dest.to_path_buf();
    for part in relative.components() {
        at.push(part);
        let fail = |source| BundleError::Extract {
            path: at.clone(),
            source,
        };
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(BundleError::SymlinkInDestination(at));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(&at) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(fail(e)),
            },
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

fn open(path: &Path) -> Result<ZipArchive<File>, BundleError> {
    let file = File::open(path).map_err(|e| BundleError::Unreadable {
        path: path.to_owned(),
        source: zip::result::ZipError::Io(e),
    })?;
    ZipArchive::new(file).map_err(|source| BundleError::Unreadable {
        path: path.to_owned(),
        source,
    })
}

fn entry_name<R: Read>(file: &zip::read::ZipFile<'_, R>) -> Result<String, BundleError> {
    file.name()
        .map(|n| n.into_owned())
        .map_err(|_| BundleError::Unsafe("(a name that is not UTF-8)".into()))
}

/// The entry's path if it is relative and never climbs out (`a/../b` is refused outright: a
/// bundle murphy wrote never has one).
fn safe_relative(name: &str) -> Option<PathBuf> {
    if name.contains('\\') || name.contains('\0') {
        return None;
    }
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// SHA-256 and length of everything `reader` yields.
pub fn sha256_reader(reader: &mut impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((crate::fingerprint::hex(&hasher.finalize()), size))
}

/// SHA-256 and size of a file.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    sha256_reader(&mut File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<Entry> {
        ["b.txt", "a/c.txt"]
            .iter()
            .map(|n| Entry {
                name: (*n).into(),
                source: dir.join(n),
            })
            .collect()
    }

    #[test]
    fn same_files_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("b.txt"), "bee").unwrap();
        std::fs::write(dir.path().join("a/c.txt"), "sea").unwrap();
        write(&dir.path().join("one.zip"), entries(dir.path())).unwrap();
        // Different mtimes and order in: the same zip out.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(dir.path().join("b.txt"), "bee").unwrap();
        let mut reversed = entries(dir.path());
        reversed.reverse();
        write(&dir.path().join("two.zip"), reversed).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("one.zip")).unwrap(),
            std::fs::read(dir.path().join("two.zip")).unwrap()
        );
        let digests = digests(&dir.path().join("one.zip")).unwrap();
        assert_eq!(digests.keys().collect::<Vec<_>>(), ["a/c.txt", "b.txt"]);
    }

    #[test]
    fn unsafe_names_are_refused() {
        for name in ["/etc/passwd", "../x", "a/../../x", "a\\..\\x", ""] {
            assert_eq!(safe_relative(name), None, "{name}");
        }
        assert_eq!(safe_relative("a/./b"), Some(PathBuf::from("a/b")));
    }

    #[test]
    fn no_entry_is_written_under_a_name_that_climbs_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("outside.txt"), "not the project's").unwrap();
        for name in [
            "../outside.txt",
            "/etc/passwd",
            "a/../../outside.txt",
            "a/./b",
        ] {
            let zip = dir.path().join("bundle.zip");
            let entry = Entry {
                name: name.into(),
                source: dir.path().join("outside.txt"),
            };
            let err = write(&zip, vec![entry]).unwrap_err();
            assert!(
                matches!(&err, BundleError::OutsideProject(n) if n == name),
                "{name}: {err}"
            );
            assert!(!zip.exists(), "{name}");
        }
    }
}
