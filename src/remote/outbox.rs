//! The outbox on the shared store: a notification its runner could not deliver waits there,
//! for any machine's next run or `murphy outbox flush`, instead of dying with the runner's
//! disk. Once uploaded, a message is the shared outbox's alone (the local copy goes), and the
//! shared outbox is delivered by one machine at a time, under a lease. A pull request's run
//! keeps its messages under its own prefix: the trusted outbox never sends what it wrote.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use super::lease::{Lease, Taken};
use super::{Remote, RemoteError};
use crate::outbox::{Delivery, Message, Outbox};

/// Longer than any flush takes (each message is tried a few times, 10 s each), so the lease
/// never ends under a live flusher; a runner killed mid-flush holds up the next one that long.
const LEASE: Duration = Duration::from_secs(600);

/// Far above any message murphy writes; a bigger object in the outbox is not one.
const MAX_MESSAGE: u64 = 1024 * 1024;

/// What a flush of the shared outbox did.
#[derive(Debug, Default)]
pub struct Flushed {
    pub delivered: usize,
    /// Still waiting, with why.
    pub waiting: Vec<(String, String)>,
    /// Who was flushing it when this machine tried, if someone was.
    pub busy: Option<String>,
}

fn key(remote: &Remote, id: &str) -> object_store::path::Path {
    remote.own(&format!("outbox/{id}.json"))
}

/// Hands every message still waiting in `local` to the shared outbox, then delivers the
/// shared outbox unless another machine is doing so.
pub async fn flush(
    remote: &Remote,
    local: &Outbox,
    holder: &str,
    how: &Delivery<'_>,
) -> Result<Flushed, RemoteError> {
    let io = RemoteError::local;
    // Uploaded first, removed here after: a kill in between sends a message twice at worst,
    // never drops it. Under the local outbox's lock, so no local flush sends one meanwhile.
    let held = local.lock().map_err(io(local.dir()))?;
    for item in local.list().map_err(io(local.dir()))? {
        let Ok(message) = item else { continue };
        let file = local.file(&message.id);
        let bytes = std::fs::read(&file).map_err(io(&file))?;
        remote
            .put(&key(remote, &message.id), Bytes::from(bytes))
            .await?;
        std::fs::remove_file(&file).map_err(io(&file))?;
    }
    drop(held);
    let lease = match Lease::take(remote, remote.own("outbox/lease"), holder, LEASE).await? {
        Taken::Yes(lease) => lease,
        Taken::Held(held) => {
            return Ok(Flushed {
                busy: Some(held.holder),
                ..Flushed::default()
            });
        }
    };
    // Shared messages wait there while they are sent: a private folder, never a local
    // message's file (those end in `.json`).
    let scratch = local.dir().join("shared");
    let result = flush_leased(remote, &scratch, how).await;
    lease.release().await?;
    result
}

async fn flush_leased(
    remote: &Remote,
    scratch: &Path,
    how: &Delivery<'_>,
) -> Result<Flushed, RemoteError> {
    let io = RemoteError::local;
    let _ = std::fs::remove_dir_all(scratch);
    crate::atomic_file::private_dir(scratch).map_err(io(scratch))?;
    let shared = Outbox::at(scratch.to_owned());
    let mut ids = Vec::new();
    for object in remote.list(&remote.own("outbox")).await? {
        let Some(id) = object
            .location
            .filename()
            .and_then(|name| name.strip_suffix(".json"))
            .map(str::to_owned)
        else {
            continue;
        };
        let Some(bytes) = remote.get_limited(&object.location, MAX_MESSAGE).await? else {
            continue;
        };
        // Only what reads as a message is sent; anything else stays where it is, for a person.
        match serde_json::from_slice::<Message>(&bytes) {
            Ok(message) if message.id == id => {
                shared.put(&message).map_err(io(scratch))?;
                ids.push(id);
            }
            _ => tracing::warn!(
                "{} in the shared outbox is not a message; left alone",
                object.location
            ),
        }
    }
    let (delivered, waiting) = shared.flush(how).await.map_err(io(scratch))?;
    for id in &ids {
        let file = shared.file(id);
        match std::fs::read(&file) {
            // Still waiting: its attempts and last error go back.
            Ok(bytes) => remote.put(&key(remote, id), Bytes::from(bytes)).await?,
            Err(_) => remote.delete(&key(remote, id)).await?,
        }
    }
    let _ = std::fs::remove_dir_all(scratch);
    Ok(Flushed {
        delivered,
        waiting,
        busy: None,
    })
}

/// Every message waiting in the shared outbox, for `murphy outbox list`.
pub async fn list(remote: &Remote) -> Result<Vec<Message>, RemoteError> {
    let mut messages = Vec::new();
    for object in remote.list(&remote.own("outbox")).await? {
        if !object.location.as_ref().ends_with(".json") {
            continue;
        }
        if let Some(bytes) = remote.get_limited(&object.location, MAX_MESSAGE).await?
            && let Ok(message) = serde_json::from_slice::<Message>(&bytes)
        {
            messages.push(message);
        }
    }
    messages.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(messages)
}
