//! The shared store: murphy's state on an object store (S3, GCS, Azure Blob, or a directory)
//! that every machine of a team reads and writes, with the local state directory as its cache.
//!
//! ```text
//! <url>/checkpoints/objects/ab/ab12...    output files by BLAKE3, uploaded only if absent
//! <url>/checkpoints/records/<fp>.json     the record, uploaded after every object it names
//! <url>/checkpoints/manifests/<fp>.json   what went into the fingerprint
//! <url>/runs/<id>/...                     a run's meta, journal segments, logs and lease
//! <url>/archive/<root>/...                numbered builds (`archive`)
//! <url>/releases/<pipeline>/...           release confirmations and claims (`releases`)
//! <url>/outbox/...                        notifications no receiver took (`outbox`)
//! <url>/pr/<n>/...                        all that a pull request's runs write; push,
//!                                         nightly and tag runs never read below it
//! ```
//!
//! **Invariant:** nothing read from the store is trusted: a record is checked (checksum, or
//! keyed MAC) and every object hashed against its name, by the local store, before use.
//! **Invariant:** every write is a whole object (S3, GCS and Azure never show a partial one);
//! an object is written before anything that names it.

pub mod archive;
pub mod checkpoints;
pub mod lease;
pub mod outbox;
pub mod releases;
pub mod runs;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{
    ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "`{0}` is not a store URL: expected s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX or file:///PATH"
    )]
    BadUrl(String),
    #[error("cannot open the shared store `{url}`: {message}")]
    Open { url: String, message: String },
    #[error("the shared store `{url}` did not answer within {seconds} s; is it reachable?")]
    Unreachable { url: String, seconds: u64 },
    #[error("the shared store `{url}` failed to {what} `{key}`: {problem}")]
    Request {
        url: String,
        what: &'static str,
        key: String,
        problem: String,
    },
    #[error("{what} from the shared store is damaged: {problem}")]
    Damaged { what: String, problem: String },
    #[error("cannot write the local cache of the shared store at `{}`", path.display())]
    Local {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RemoteError {
    /// The error for the local file `path` of a transfer: `.map_err(RemoteError::local(path))`.
    pub fn local(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> RemoteError + use<> {
        let path = path.to_owned();
        move |source| RemoteError::Local { path, source }
    }
}

/// Where the shared store is, as the user wrote it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    pub fn parse(text: &str) -> Result<StoreUrl, RemoteError> {
        let bad = || RemoteError::BadUrl(text.to_owned());
        let (scheme, rest) = text.split_once("://").ok_or_else(bad)?;
        let ok = match scheme {
            "s3" | "gs" | "az" => rest.split('/').next().is_some_and(|b| !b.is_empty()),
            "file" => rest.starts_with('/') && rest.len() > 1,
            _ => false,
        };
        if !ok || text.contains(['?', '#', '@']) {
            return Err(bad());
        }
        Ok(StoreUrl(text.trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The variables that hold a store credential: their values are masked like secrets.
const CREDENTIALS: &[&str] = &[
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_TOKEN",
    "AZURE_STORAGE_MASTER_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
];

/// How long requests are retried (with backoff; 5xx and 503 SlowDown included) before an
/// operation fails: `MURPHY_STORE_RETRY_TIMEOUT`, like `30s` or `2m`.
const DEFAULT_RETRY: Duration = Duration::from_secs(60);

/// How long the first request may take before the store counts as unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One opened shared store.
#[derive(Debug, Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    url: StoreUrl,
    /// What every run reads: the URL's path.
    base: Key,
    /// Where this run writes what others restore: `base`, or `base/pr/<n>` for a pull request.
    writes: Key,
    /// With `MURPHY_STORE_KEY`: what this run writes beside checkpoints (release confirmations,
    /// archive manifests) carries a keyed MAC, and what it reads without a valid one is not
    /// trusted.
    key: Option<[u8; 32]>,
}

impl Remote {
    /// Opens the store at `url`, with credentials and endpoint from each cloud's standard
    /// variables (for S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`), never from the pipeline file.
    pub fn open(url: &StoreUrl, env: &BTreeMap<String, String>) -> Result<Remote, RemoteError> {
        for name in CREDENTIALS {
            if let Some(value) = env.get(*name) {
                crate::secrets::mask(value);
            }
        }
        let retry_timeout = match env.get("MURPHY_STORE_RETRY_TIMEOUT") {
            Some(text) => humantime::parse_duration(text).map_err(|e| RemoteError::Open {
                url: url.to_string(),
                message: format!(
                    "MURPHY_STORE_RETRY_TIMEOUT=`{text}` is not a duration like `30s`: {e}"
                ),
            })?,
            None => DEFAULT_RETRY,
        };
        let retry = RetryConfig {
            retry_timeout,
            ..RetryConfig::default()
        };
        // `AWS_ALLOW_HTTP` is not among the variables the S3 builder reads itself.
        let allow_http = ["AWS_ALLOW_HTTP", "ALLOW_HTTP"]
            .iter()
            .any(|name| env.get(*name).is_some_and(|v| v == "true" || v == "1"));
        // A plain-http endpoint (MinIO or moto beside the runner) needs no TLS roots: loading
        // the system's costs milliseconds on every run.
        let plain = allow_http
            && ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                .iter()
                .any(|name| env.get(*name).is_some_and(|url| url.starts_with("http://")));
        let client = ClientOptions::new()
            .with_no_system_certificates(plain)
            .with_allow_http(allow_http)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(300));
        let open_err = |e: object_store::Error| RemoteError::Open {
            url: url.to_string(),
            message: crate::causes::line(&e),
        };
        let (scheme, rest) = url.0.split_once("://").unwrap_or_default();
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_client_options(client)
                    .build()
                    .map_err(open_err)?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_client_options(client)
                    .build()
                    .map_err(open_err)?,
            ),
            "az" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket)
                    .with_retry(retry)
                    .with_client_options(client)
                    .build()
                    .map_err(open_err)?,
            ),
            "file" => {
                let dir = std::path::Path::new(rest);
                std::fs::create_dir_all(dir).map_err(|e| RemoteError::Open {
                    url: url.to_string(),
                    message: format!("cannot create `{}`: {e}", dir.display()),
                })?;
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(open_err)?,
                )
            }
            _ => return Err(RemoteError::BadUrl(url.to_string())),
        };
        let base = match scheme {
            "file" => Key::default(),
            _ => Key::from(prefix),
        };
        Ok(Remote {
            store,
            url: url.clone(),
            writes: base.clone(),
            base,
            key: None,
        })
    }

    /// The store as a run uses it: an `untrusted` one (a pull request's) writes under its own
    /// prefix (`pr/<number>`, or `pr/<run id>` without one), so an untrusted change never puts
    /// a checkpoint where a trusted run would restore it.
    pub fn for_run(mut self, untrusted: bool, pr: Option<&str>, run_id: &str) -> Remote {
        if untrusted {
            let name = pr
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .unwrap_or(run_id);
            self.writes = self.base.clone().join("pr").join(name);
        }
        self
    }

    /// The store with what murphy writes beside checkpoints sealed by `key`.
    pub fn keyed(mut self, key: Option<&str>) -> Remote {
        self.key =
            key.map(|key| blake3::derive_key("murphy 2026-11 shared store MAC", key.as_bytes()));
        self
    }

    /// Whether what this run writes beside checkpoints is sealed, and what it reads checked.
    pub fn sealing(&self) -> bool {
        self.key.is_some()
    }

    /// The keyed MAC of `body`, in hex, if there is a key.
    pub fn mac(&self, body: &[u8]) -> Option<String> {
        self.key
            .map(|key| blake3::keyed_hash(&key, body).to_hex().to_string())
    }

    /// Whether `body`, read with `mac` beside it, may be trusted: always without a key; with
    /// one, only with the MAC it makes (compared in constant time).
    pub fn check_mac(&self, body: &[u8], mac: Option<&[u8]>) -> Result<(), &'static str> {
        let Some(expected) = self.mac(body) else {
            return Ok(());
        };
        let Some(mac) = mac else {
            return Err("it carries no MAC, and MURPHY_STORE_KEY is set");
        };
        let mac = mac.trim_ascii();
        let same = expected.len() == mac.len()
            && expected
                .bytes()
                .zip(mac)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err("its MAC does not match MURPHY_STORE_KEY")
        }
    }

    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// A short name for where this run writes (the URL and its prefix), for local notes about
    /// what that place holds.
    pub fn tag(&self) -> String {
        let place = format!("{}\n{}", self.url, self.writes);
        blake3::hash(place.as_bytes()).to_hex()[..16].to_owned()
    }

    /// Whether this run writes apart from what trusted runs read.
    pub fn writes_apart(&self) -> bool {
        self.writes != self.base
    }

    /// `key` below what every run reads.
    pub fn shared(&self, key: &str) -> Key {
        join(&self.base, key)
    }

    /// `key` below where this run writes.
    pub fn own(&self, key: &str) -> Key {
        join(&self.writes, key)
    }

    fn request_err(
        &self,
        what: &'static str,
        key: &Key,
    ) -> impl FnOnce(object_store::Error) -> RemoteError {
        let (url, key) = (self.url.to_string(), key.to_string());
        move |source| RemoteError::Request {
            url,
            what,
            key,
            problem: root_cause(&source),
        }
    }

    /// The object at `key`, or `None` if there is none.
    pub async fn get(&self, key: &Key) -> Result<Option<Bytes>, RemoteError> {
        match self.store.get(key).await {
            Ok(result) => result
                .bytes()
                .await
                .map(Some)
                .map_err(self.request_err("read", key)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.request_err("read", key)(e)),
        }
    }

    /// The object at `key` if it is at most `max` bytes; a bigger one is refused unread (what
    /// murphy writes there is small, so a big object is damage or an attack, not a record).
    pub async fn get_limited(&self, key: &Key, max: u64) -> Result<Option<Bytes>, RemoteError> {
        let result = match self.store.get(key).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.request_err("read", key)(e)),
        };
        if result.meta.size > max {
            return Err(RemoteError::Damaged {
                what: format!("`{key}`"),
                problem: format!(
                    "it holds {} bytes, more than the {max} such an object may",
                    result.meta.size
                ),
            });
        }
        result
            .bytes()
            .await
            .map(Some)
            .map_err(self.request_err("read", key))
    }

    /// The object's size and version, or `None` if there is none.
    pub async fn head(&self, key: &Key) -> Result<Option<ObjectMeta>, RemoteError> {
        match self.store.head(key).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.request_err("look up", key)(e)),
        }
    }

    /// Writes `bytes` at `key`, replacing what is there.
    pub async fn put(&self, key: &Key, bytes: Bytes) -> Result<(), RemoteError> {
        self.store
            .put(key, PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(self.request_err("write", key))
    }

    /// Writes `bytes` at `key` only if nothing is there: `false` if something was.
    pub async fn create(&self, key: &Key, bytes: Bytes) -> Result<bool, RemoteError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(key, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            // Some stores answer a lost `If-None-Match` race with 412.
            Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.request_err("create", key)(e)),
        }
    }

    /// Every object below `prefix`, in no particular order.
    pub async fn list(&self, prefix: &Key) -> Result<Vec<ObjectMeta>, RemoteError> {
        self.store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(self.request_err("list", prefix))
    }

    /// Removes `key`; one already gone is fine.
    pub async fn delete(&self, key: &Key) -> Result<(), RemoteError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.request_err("delete", key)(e)),
        }
    }

    /// Copies `file` to `key`, streamed in parts for a large file; the object appears whole
    /// when the upload completes, or not at all.
    pub async fn upload(&self, file: &std::path::Path, key: &Key) -> Result<(), RemoteError> {
        let mut reader = tokio::fs::File::open(file)
            .await
            .map_err(RemoteError::local(file))?;
        let mut writer = object_store::buffered::BufWriter::new(self.store.clone(), key.clone());
        let copied = tokio::io::copy(&mut reader, &mut writer).await;
        let closed = match copied {
            Ok(_) => tokio::io::AsyncWriteExt::shutdown(&mut writer).await,
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        };
        closed.map_err(|e| RemoteError::Request {
            url: self.url.to_string(),
            what: "upload",
            key: key.to_string(),
            problem: root_cause(&e),
        })
    }

    /// Streams the object at `key` into `file` (created, or emptied), returning its BLAKE3 digest,
    /// or `None` if there is no such object.
    pub async fn download(
        &self,
        key: &Key,
        file: &std::path::Path,
    ) -> Result<Option<blake3::Hash>, RemoteError> {
        use tokio::io::AsyncWriteExt;
        let result = match self.store.get(key).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.request_err("read", key)(e)),
        };
        let local = || RemoteError::local(file);
        let mut out = tokio::fs::File::create(file).await.map_err(local())?;
        let mut hasher = blake3::Hasher::new();
        let mut stream = result.into_stream();
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(self.request_err("read", key))?
        {
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(local())?;
        }
        out.flush().await.map_err(local())?;
        Ok(Some(hasher.finalize()))
    }

    /// Answers a first request within [`PROBE_TIMEOUT`], or says the store is unreachable:
    /// a run never starts against a store it cannot use.
    /// A listing, not a lookup: S3 answers a lookup in a bucket that does not exist with the
    /// same 404 as a missing object.
    pub async fn probe(&self) -> Result<(), RemoteError> {
        let listing = self.store.list_with_delimiter(Some(&self.base));
        match tokio::time::timeout(PROBE_TIMEOUT, listing).await {
            Ok(answer) => answer
                .map(drop)
                .map_err(self.request_err("list", &self.base)),
            Err(_) => Err(RemoteError::Unreachable {
                url: self.url.to_string(),
                seconds: PROBE_TIMEOUT.as_secs(),
            }),
        }
    }

    /// `murphy store check`: each operation murphy needs, tried on a scratch object, with
    /// what it answered.
    pub async fn check(&self) -> Vec<(&'static str, Result<(), String>)> {
        let key = self.shared(&format!("murphy-check/{}", std::process::id()));
        let body = Bytes::from_static(b"murphy store check\n");
        let mut results = Vec::new();
        let write = self.put(&key, body.clone()).await;
        let wrote = write.is_ok();
        results.push(("write", write.map_err(|e| crate::causes::line(&e))));
        let read = match self.get(&key).await {
            Ok(Some(read)) if read == body => Ok(()),
            Ok(Some(_)) => Err("read back different bytes".to_owned()),
            Ok(None) if wrote => Err("the object just written is not there".to_owned()),
            Ok(None) => Err("nothing to read (the write failed)".to_owned()),
            Err(e) => Err(crate::causes::line(&e)),
        };
        results.push(("read", read));
        let conditional = match self.create(&key, body.clone()).await {
            Ok(false) => Ok(()),
            Ok(true) if wrote => Err(
                "a conditional create over an existing object succeeded: the store ignores `If-None-Match`, so build numbers and release confirmations are not safe on it".to_owned(),
            ),
            Ok(true) => Ok(()),
            Err(e) => Err(crate::causes::line(&e)),
        };
        results.push(("conditional create", conditional));
        // Leases are renewed and given up with `If-Match`: a store that ignores it lets two
        // machines hold one.
        let update = match self.head(&key).await {
            Ok(Some(meta)) => {
                let stale = object_store::UpdateVersion {
                    e_tag: Some("\"murphy-stale-etag\"".to_owned()),
                    version: None,
                };
                let options = |version| PutOptions {
                    mode: PutMode::Update(version),
                    ..PutOptions::default()
                };
                let current = object_store::UpdateVersion {
                    e_tag: meta.e_tag,
                    version: meta.version,
                };
                let refused = self
                    .store
                    .put_opts(&key, PutPayload::from(body.clone()), options(stale))
                    .await;
                let accepted = self
                    .store
                    .put_opts(&key, PutPayload::from(body.clone()), options(current))
                    .await;
                match (refused, accepted) {
                    (Err(object_store::Error::Precondition { .. }), Ok(_)) => Ok(()),
                    (Err(object_store::Error::NotImplemented { .. }), _) => Err(
                        "the store has no conditional update (`If-Match`): leases fall back to plain writes, safe only for machines that share one disk".to_owned(),
                    ),
                    (Ok(_), _) => Err(
                        "an update with a stale `If-Match` succeeded: the store ignores it, so two machines could both hold a lease".to_owned(),
                    ),
                    (Err(object_store::Error::Precondition { .. }), Err(e)) | (Err(e), _) => {
                        Err(root_cause(&e))
                    }
                }
            }
            Ok(None) => Err("nothing to update (the write failed)".to_owned()),
            Err(e) => Err(crate::causes::line(&e)),
        };
        results.push(("conditional update", update));
        let delete = match self.delete(&key).await {
            Ok(()) if !wrote => Err("nothing to delete (the write failed)".to_owned()),
            Ok(()) => match self.head(&key).await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("the object is still there after delete".to_owned()),
                Err(e) => Err(crate::causes::line(&e)),
            },
            Err(e) => Err(crate::causes::line(&e)),
        };
        results.push(("delete", delete));
        results
    }
}

/// The innermost cause of a store error: the client nests each layer's message inside the
/// next, so the whole chain repeats itself, and the last link is the one that says why.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    // A refusal without a body (an answer to HEAD) ends in an empty `: `.
    let text = text.trim_end_matches([':', ' ']).to_owned();
    // S3 and GCS answer with an XML error document: its code and message are what matter.
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find('<')?;
        Some(text[start..start + len].to_owned())
    };
    match (text.find(": <?xml"), tag("Code")) {
        (Some(cut), Some(code)) => match tag("Message") {
            Some(message) => format!("{}: {code}: {message}", &text[..cut]),
            None => format!("{}: {code}", &text[..cut]),
        },
        _ => text,
    }
}

/// Who holds a lease: this host, this process, and what it does (a run id, a command).
pub fn holder(doing: &str) -> String {
    let mut name = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let host = if unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) } == 0 {
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        String::from_utf8_lossy(&name[..len]).into_owned()
    } else {
        "unknown host".to_owned()
    };
    format!("{host} (pid {}, {doing})", std::process::id())
}

/// `key`, a `/`-separated path, below `base`.
pub(crate) fn join(base: &Key, key: &str) -> Key {
    key.split('/')
        .filter(|part| !part.is_empty())
        .fold(base.clone(), |path, part| path.join(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        for good in [
            "s3://bucket",
            "s3://bucket/a/b/",
            "gs://b/p",
            "az://c/p",
            "file:///tmp/x",
        ] {
            assert!(StoreUrl::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "bucket",
            "s3://",
            "s3:///prefix",
            "http://host/b",
            "file://relative",
            "s3://key:secret@bucket",
            "s3://b?region=x",
        ] {
            let err = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("s3://BUCKET"), "{err}");
        }
        assert_eq!(StoreUrl::parse("s3://b/p/").unwrap().as_str(), "s3://b/p");
    }

    #[test]
    fn pull_requests_write_apart() {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
        let remote = Remote::open(&url, &BTreeMap::new()).unwrap();
        assert!(!remote.clone().for_run(false, None, "r1").writes_apart());
        let pr = remote.for_run(true, Some("7"), "r1");
        assert!(pr.writes_apart());
        assert_eq!(pr.own("checkpoints/x").as_ref(), "pr/7/checkpoints/x");
        assert_eq!(pr.shared("checkpoints/x").as_ref(), "checkpoints/x");
    }
}
