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
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;

/// What a masked value is replaced by.
pub const MASK: &str = "***";

/// Values shorter than this are not masked: masking `1` or `on` would mangle every log, so
/// such a value is refused as a secret instead.
const SHORTEST: usize = 4;

/// The masked values, and the matcher built from them (`None` while there are none).
struct Masked {
    values: Vec<String>,
    matcher: Option<Arc<Matcher>>,
}

/// One automaton for every masked value, so masking costs one pass over the text however
/// many secrets there are.
struct Matcher {
    automaton: AhoCorasick,
    /// The longest value's length in bytes: how much of a stream must be held back so that
    /// a value cut between two pieces is still seen whole.
    longest: usize,
}

static MASKED: RwLock<Masked> = RwLock::new(Masked {
    values: Vec::new(),
    matcher: None,
});

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

/// A secret that may be absent (`MURPHY_STORE_KEY`), read and masked like any other.
pub fn optional(
    name: &str,
    env: &BTreeMap<String, String>,
    file: &Path,
) -> Result<Option<String>, SecretError> {
    match load(&[name.to_owned()], env, file) {
        Ok(mut values) => Ok(values.remove(name)),
        Err(SecretError::Missing { .. }) => Ok(None),
        Err(err) => Err(err),
    }
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
    if masked.values.iter().any(|m| m == value) {
        return;
    }
    masked.values.push(value.to_owned());
    // Leftmost-longest: of two values starting at the same place (one containing the
    // other), the longer is masked whole.
    match AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&masked.values)
    {
        Ok(automaton) => {
            let longest = masked.values.iter().map(String::len).max().unwrap_or(0);
            masked.matcher = Some(Arc::new(Matcher { automaton, longest }));
        }
        // Only a size limit can fail, far beyond any set of secrets; the value stays out
        // of the mask rather than taking murphy down.
        Err(err) => {
            masked.values.pop();
            tracing::warn!("cannot add a value to the secrets mask: {err}");
        }
    }
}

/// Masks the `Authorization: Basic` value murphy sends for `user` and `password`: the
/// password is masked already, but a server that echoes the header shows only its base64.
pub fn mask_basic_auth(user: &str, password: &str) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    // Unpadded too: a server may quote it without its trailing `=`.
    mask(encoded.trim_end_matches('='));
    mask(&encoded);
}

/// Masks the `Authorization: Bearer` value murphy sends with `token`, whatever the token
/// came from, so the header cannot be echoed back unmasked.
pub fn mask_bearer(token: &str) {
    mask(token);
}

impl Matcher {
    /// Masks into `out` the part of `buf` that no later byte can change, and says where it
    /// ends. A value starting before `safe` ends inside `buf`, so it is found now; one
    /// starting at `safe` or later may go on past the end of `buf`.
    fn mask_prefix(&self, buf: &[u8], out: &mut Vec<u8>) -> usize {
        let safe = buf.len().saturating_sub(self.longest.saturating_sub(1));
        let mut cursor = 0;
        for found in self.automaton.find_iter(buf) {
            if found.start() >= safe {
                break;
            }
            out.extend_from_slice(&buf[cursor..found.start()]);
            out.extend_from_slice(MASK.as_bytes());
            cursor = found.end();
        }
        // Not in the middle of a character (the echo shows each piece as text), which is at
        // most 3 bytes back; output that is not UTF-8 is cut wherever.
        let mut cut = safe.max(cursor);
        let floor = cut.saturating_sub(3).max(cursor);
        while cut > floor && cut < buf.len() && buf[cut] & 0xC0 == 0x80 {
            cut -= 1;
        }
        out.extend_from_slice(&buf[cursor..cut]);
        cut
    }
}

/// The matcher of the values masked so far.
fn matcher() -> Option<Arc<Matcher>> {
    let masked = MASKED.read().unwrap_or_else(|e| e.into_inner());
    masked.matcher.clone()
}

/// `text` with every secret value replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    match redact_bytes(text.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        // A value is whole UTF-8 text, so a match starts and ends on character boundaries
        // and the result is still UTF-8; the lossy conversion never changes anything.
        Cow::Owned(bytes) => Cow::Owned(
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        ),
    }
}

/// [`redact`] for bytes that may not be UTF-8 (stage output); other bytes are left as they
/// are.
pub fn redact_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let Some(matcher) = matcher() else {
        return Cow::Borrowed(bytes);
    };
    let mut matches = matcher.automaton.find_iter(bytes).peekable();
    if matches.peek().is_none() {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut cursor = 0;
    for found in matches {
        out.extend_from_slice(&bytes[cursor..found.start()]);
        out.extend_from_slice(MASK.as_bytes());
        cursor = found.end();
    }
    out.extend_from_slice(&bytes[cursor..]);
    Cow::Owned(out)
}

/// Masks a stream that arrives in pieces exactly as if it were masked whole: a value cut
/// between two pieces (a 64 KiB cut in a long line) is still found. It holds back the end
/// of what it was given that could be the start of a value: at most the longest value's
/// length minus one byte, plus the rest of a UTF-8 character.
#[derive(Default)]
pub struct StreamMask {
    /// What was given but not yet masked and passed on.
    held: Vec<u8>,
}

impl StreamMask {
    /// Masks `bytes`, after what was held back, into `out`, holding back a new end.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let Some(matcher) = matcher() else {
            out.append(&mut self.held);
            out.extend_from_slice(bytes);
            return;
        };
        if self.held.is_empty() {
            let cut = matcher.mask_prefix(bytes, out);
            self.held.extend_from_slice(&bytes[cut..]);
        } else {
            self.held.extend_from_slice(bytes);
            let cut = matcher.mask_prefix(&self.held, out);
            self.held.drain(..cut);
        }
    }

    /// Masks what was held back and `last` into `out`: the stream (or a line) ended.
    pub fn finish(&mut self, last: &[u8], out: &mut Vec<u8>) {
        if self.held.is_empty() {
            out.extend_from_slice(&redact_bytes(last));
        } else {
            self.held.extend_from_slice(last);
            out.extend_from_slice(&redact_bytes(&self.held));
            self.held.clear();
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

    /// Pieces masked one after the other give exactly what masking the whole text gives,
    /// wherever the text is cut, and no piece ends inside a character.
    #[test]
    fn a_stream_masks_values_cut_between_pieces() {
        mask("stream-s3cret-0123456789");
        mask("stream-s3cret-0123456789-and-more");
        let text =
            "é stream-s3cret-0123456789-and-more ü stream-s3cret-0123456789stream-s3cret-01 ß";
        let bytes = text.as_bytes();
        let whole = redact_bytes(bytes).into_owned();
        assert_eq!(
            String::from_utf8(whole.clone()).unwrap(),
            "é *** ü ***stream-s3cret-01 ß"
        );
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let (mut stream, mut out) = (StreamMask::default(), Vec::new());
                stream.push(&bytes[..i], &mut out);
                assert!(std::str::from_utf8(&out).is_ok(), "cut at {i}");
                stream.push(&bytes[i..j], &mut out);
                assert!(std::str::from_utf8(&out).is_ok(), "cut at {i} and {j}");
                stream.finish(&bytes[j..], &mut out);
                assert_eq!(out, whole, "cut at {i} and {j}");
            }
        }
    }

    /// Output that is not UTF-8 keeps its bytes, and is held back no more than any other.
    #[test]
    fn bytes_that_are_not_text_pass_unchanged_but_masked() {
        mask("binary-s3cret");
        let mut bytes = vec![0x80; 10_000];
        bytes.extend_from_slice(b"binary-s3cret\xff");
        let (mut stream, mut out) = (StreamMask::default(), Vec::new());
        stream.push(&bytes, &mut out);
        assert!(
            stream.held.len() < 64,
            "held back {} bytes",
            stream.held.len()
        );
        stream.finish(&[], &mut out);
        assert_eq!(out.len(), 10_000 + 4);
        assert!(out.starts_with(&[0x80; 10_000]) && out.ends_with(b"***\xff"));
    }

    #[test]
    fn the_basic_authorization_value_is_masked() {
        mask_basic_auth("alice", "s3cret-token-basic");
        mask_basic_auth("alice", "s3cret-token1");
        assert_eq!(
            redact(
                "Basic YWxpY2U6czNjcmV0LXRva2VuLWJhc2lj, Basic YWxpY2U6czNjcmV0LXRva2VuMQ== or YWxpY2U6czNjcmV0LXRva2VuMQ"
            ),
            "Basic ***, Basic *** or ***"
        );
    }
}
