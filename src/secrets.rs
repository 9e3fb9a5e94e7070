//! Secrets: read from the environment or a private file, given only to the stages that list
//! them, and masked as `***` wherever murphy writes.
//!
//! **Invariant:** every sink murphy writes text to (stage logs and their echo, the journal,
//! the terminal, murphy's own diagnostics, `meta.json`, the outbox) passes it through
//! [`redact`]. The mask is process-wide on purpose: a sink cannot forget to ask for it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// What a masked value is replaced by.
pub const MASK: &str = "***";

/// Values shorter than this are not masked: masking `1` or `on` would mangle every log, so
/// such a value is refused as a secret instead.
const SHORTEST: usize = 4;

static MASKED: RwLock<Vec<String>> = RwLock::new(Vec::new());

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secret `{name}` is not set: export it, or put it in `{}` (mode 600)",
        file.display()
    )]
    Missing { name: String, file: PathBuf },
    #[error(
        "refusing the secrets file `{}`: it is readable by others (mode {mode:o}); run `chmod 600` on it",
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("refusing the secrets file `{}`: it is {what}, not a regular file", path.display())]
    NotAFile { path: PathBuf, what: &'static str },
    #[error(
        "refusing the secrets file `{}`: it belongs to uid {owner}, not to you (uid {me})",
        path.display()
    )]
    NotYours { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "refusing the secrets file `{}`: its folder `{}` is writable by others (mode {mode:o}), who could swap it",
        path.display(),
        dir.display()
    )]
    OpenFolder {
        path: PathBuf,
        dir: PathBuf,
        mode: u32,
    },
    #[error("cannot inspect the secrets file `{}`", path.display())]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret `{0}` is shorter than {SHORTEST} characters, too short to mask safely in logs")]
    TooShort(String),
    #[error(transparent)]
    File(#[from] crate::config::ConfigError),
}

/// The values of the named secrets: from `env` first, then from the secrets file at `file`
/// (which must not be readable by group or others). Every value is masked from then on.
pub fn load(
    names: &[String],
    env: &BTreeMap<String, String>,
    file: &Path,
) -> Result<BTreeMap<String, String>, SecretError> {
    let mut values = BTreeMap::new();
    let mut from_file: Option<BTreeMap<String, String>> = None;
    for name in names {
        if values.contains_key(name) {
            continue;
        }
        let value = match env.get(name).filter(|v| !v.is_empty()) {
            Some(v) => v.clone(),
            None => {
                if from_file.is_none() {
                    from_file = Some(read_file(file)?);
                }
                from_file
                    .as_ref()
                    .and_then(|f| f.get(name))
                    .cloned()
                    .ok_or_else(|| SecretError::Missing {
                        name: name.clone(),
                        file: file.to_owned(),
                    })?
            }
        };
        if value.chars().count() < SHORTEST {
            return Err(SecretError::TooShort(name.clone()));
        }
        mask(&value);
        values.insert(name.clone(), value);
    }
    Ok(values)
}

/// An absent file holds no secrets; a present one must be private: a regular file (not a
/// symlink, nor a FIFO that would hang the read), the user's own, mode 600, in a folder nobody
/// else can write (who could swap the file between this check and the read).
fn read_file(path: &Path) -> Result<BTreeMap<String, String>, SecretError> {
    let inspect = |source| SecretError::Inspect {
        path: path.to_owned(),
        source,
    };
    // `symlink_metadata` looks without opening, so neither a symlink nor a FIFO is followed.
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(inspect(e)),
    };
    let kind = meta.file_type();
    let what = if kind.is_symlink() {
        Some("a symlink")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_dir() {
        Some("a folder")
    } else if !kind.is_file() {
        Some("a device or socket")
    } else {
        None
    };
    if let Some(what) = what {
        return Err(SecretError::NotAFile {
            path: path.to_owned(),
            what,
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(SecretError::NotYours {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir_mode = std::fs::metadata(dir)
        .map_err(inspect)?
        .permissions()
        .mode()
        & 0o7777;
    if dir_mode & 0o022 != 0 {
        return Err(SecretError::OpenFolder {
            path: path.to_owned(),
            dir: dir.to_owned(),
            mode: dir_mode,
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let entries = crate::config::load_secrets(path)?;
    for (_, value) in &entries {
        mask(value);
    }
    Ok(entries.into_iter().collect())
}

/// Adds a value to the mask; each line of a multi-line value (a key file) too, since logs
/// are written line by line.
pub fn mask(value: &str) {
    if value.contains('\n') {
        for line in value
            .lines()
            .map(str::trim)
            .filter(|l| l.chars().count() >= SHORTEST)
        {
            mask(line);
        }
    }
    if value.chars().count() < SHORTEST {
        return;
    }
    let mut masked = MASKED.write().unwrap_or_else(|e| e.into_inner());
    if !masked.iter().any(|m| m == value) {
        masked.push(value.to_owned());
        // Longest first, so a secret that contains another is masked whole.
        masked.sort_by_key(|m| std::cmp::Reverse(m.len()));
    }
}

/// `text` with every secret value replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let masked = MASKED.read().unwrap_or_else(|e| e.into_inner());
    if masked.is_empty() || !masked.iter().any(|m| text.contains(m.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_owned();
    for value in masked.iter() {
        out = out.replace(value.as_str(), MASK);
    }
    Cow::Owned(out)
}

/// [`redact`] for bytes that may not be UTF-8 (stage output).
pub fn redact_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    match std::str::from_utf8(bytes) {
        Ok(text) => match redact(text) {
            Cow::Borrowed(_) => Cow::Borrowed(bytes),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        },
        Err(_) => {
            let masked = MASKED.read().unwrap_or_else(|e| e.into_inner());
            if masked.is_empty() {
                return Cow::Borrowed(bytes);
            }
            drop(masked);
            let text = String::from_utf8_lossy(bytes).into_owned();
            Cow::Owned(redact(&text).into_owned().into_bytes())
        }
    }
}

/// A writer for murphy's own diagnostics that masks secrets in what passes through.
pub struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write_all(&redact_bytes(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_masked_longest_first() {
        mask("pypi-AgEIcHlwaS5vcmc");
        mask("pypi-AgEIcHlwaS5vcmc-longer");
        assert_eq!(
            redact("token=pypi-AgEIcHlwaS5vcmc-longer and pypi-AgEIcHlwaS5vcmc"),
            "token=*** and ***"
        );
        assert_eq!(redact("nothing here"), "nothing here");
    }

    #[test]
    fn an_exposed_file_is_refused_and_a_private_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.yml");
        std::fs::write(&file, "DEPLOY_KEY: k3y-from-file-0001\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let names = vec!["DEPLOY_KEY".to_owned()];
        assert!(matches!(
            load(&names, &BTreeMap::new(), &file),
            Err(SecretError::Exposed { .. })
        ));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let values = load(&names, &BTreeMap::new(), &file).unwrap();
        assert_eq!(values["DEPLOY_KEY"], "k3y-from-file-0001");
        assert_eq!(redact("key k3y-from-file-0001"), "key ***");
        let missing = load(&["NOPE".to_owned()], &BTreeMap::new(), &file);
        assert!(matches!(missing, Err(SecretError::Missing { .. })));
    }
}
