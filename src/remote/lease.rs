//! Locks on the shared store: lease objects taken by a conditional create, renewed and given
//! up with `If-Match` on their version, and free once expired, so a machine that died blocks
//! the next one for at most the lease's length.

use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::{Remote, RemoteError};

/// The most a lease object may hold: a bigger one is not murphy's.
const MAX_BODY: u64 = 64 * 1024;

/// What a lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    /// Who holds it: host, process and run, for the message another machine shows.
    pub holder: String,
    pub expires: Timestamp,
    /// Random per taking: what tells two holders apart, since host names and pids repeat
    /// (containers, a pid reused after a reboot).
    #[serde(default)]
    pub nonce: String,
    /// The boot and pid namespace of the holder's process: only on the same one does its pid
    /// mean the same process.
    #[serde(default)]
    pub machine: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    /// Given up on purpose, not left behind by a holder that died.
    #[serde(default)]
    pub released: bool,
}

/// A lease this process holds.
#[derive(Debug)]
pub struct Lease {
    remote: Remote,
    key: Key,
    holder: String,
    nonce: String,
    ttl: Duration,
    version: UpdateVersion,
    took_over: bool,
}

/// Whether the lease was taken.
#[derive(Debug)]
pub enum Taken {
    Yes(Lease),
    /// Someone else holds it, until `expires` unless renewed.
    Held(Holder),
}

/// What a renewal found.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewed {
    Yes,
    /// Someone else took the lease (named), or it is gone.
    LostTo(String),
}

/// The lease object as read: its holder (`None` if it does not parse) and version.
struct Current {
    held: Option<Holder>,
    version: UpdateVersion,
}

impl Lease {
    /// Takes the lease at `key` for `ttl`: created if absent, taken over if expired.
    pub async fn take(
        remote: &Remote,
        key: Key,
        holder: &str,
        ttl: Duration,
    ) -> Result<Taken, RemoteError> {
        Lease::take_unless(remote, key, holder, ttl, |_| false).await
    }

    /// Like [`Lease::take`], and a lease held by someone `gone` says is gone (a process of
    /// this machine that died) is taken over at once.
    pub async fn take_unless(
        remote: &Remote,
        key: Key,
        holder: &str,
        ttl: Duration,
        gone: impl Fn(&Holder) -> bool,
    ) -> Result<Taken, RemoteError> {
        let nonce = nonce();
        let lease = |version, took_over| Lease {
            remote: remote.clone(),
            key: key.clone(),
            holder: holder.to_owned(),
            nonce: nonce.clone(),
            ttl,
            version,
            took_over,
        };
        // Three rounds: a lost race for an expired lease is looked at once more.
        for _ in 0..3 {
            let body = body_of(holder, &nonce, ttl, false);
            let created = remote
                .store
                .put_opts(
                    &key,
                    PutPayload::from(body.clone()),
                    PutOptions {
                        mode: PutMode::Create,
                        ..PutOptions::default()
                    },
                )
                .await;
            match created {
                Ok(put) => {
                    let version = UpdateVersion {
                        e_tag: put.e_tag,
                        version: put.version,
                    };
                    return Ok(Taken::Yes(lease(version, false)));
                }
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => {}
                Err(e) => return Err(remote.request_err("create", &key)(e)),
            }
            // Released between the two requests: try again.
            let Some(current) = read(remote, &key).await? else {
                continue;
            };
            let took_over = match &current.held {
                Some(held) if held.expires > Timestamp::now() && !gone(held) => {
                    return Ok(Taken::Held(held.clone()));
                }
                Some(held) => !held.released,
                None => true,
            };
            // Expired, gone or unreadable: taken over only if nobody took it meanwhile.
            let seen = current.held.as_ref().map(|h| h.nonce.clone());
            let still = |now: Option<&Holder>| now.map(|h| h.nonce.clone()) == seen;
            if let Some(version) = update(remote, &key, body, current.version, still).await? {
                return Ok(Taken::Yes(lease(version, took_over)));
            }
        }
        Err(RemoteError::Damaged {
            what: format!("the lease `{key}`"),
            problem: "it changed hands three times while being taken".into(),
        })
    }

    /// Extends the lease by its length, unless someone else took it meanwhile. A renewal
    /// whose answer was lost (a timeout) may have been written: the lease then carries our
    /// nonce under a version we have not seen, and is still ours.
    pub async fn renew(&mut self) -> Result<Renewed, RemoteError> {
        let body = body_of(&self.holder, &self.nonce, self.ttl, false);
        for _ in 0..2 {
            let nonce = self.nonce.clone();
            let mine = |now: Option<&Holder>| now.is_some_and(|h| h.nonce == nonce);
            let version = self.version.clone();
            if let Some(version) =
                update(&self.remote, &self.key, body.clone(), version, mine).await?
            {
                self.version = version;
                return Ok(Renewed::Yes);
            }
            match read(&self.remote, &self.key).await? {
                Some(Current {
                    held: Some(held),
                    version,
                }) if held.nonce == self.nonce => self.version = version,
                Some(Current {
                    held: Some(held), ..
                }) => return Ok(Renewed::LostTo(held.holder)),
                Some(Current { held: None, .. }) => {
                    return Ok(Renewed::LostTo("an unreadable lease".into()));
                }
                None => return Ok(Renewed::LostTo("no one (the lease was removed)".into())),
            }
        }
        Err(RemoteError::Damaged {
            what: format!("the lease `{}`", self.key),
            problem: "it changed version twice while being renewed".into(),
        })
    }

    /// How often to renew: a third of the lease, so two renewals may fail in a row.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Where the lease lives in the store.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Whether the lease was taken from a holder that let it expire (or died), rather than
    /// created fresh or taken after a release: what that holder was doing may be half done.
    pub fn took_over(&self) -> bool {
        self.took_over
    }

    /// Gives the lease up, unless it was lost to someone else meanwhile: replaced, at our
    /// version only, by an already expired body marked released. Never deleted: a delete
    /// cannot be conditional, and would remove a lease someone else took meanwhile.
    pub async fn release(mut self) -> Result<(), RemoteError> {
        let body = body_of(&self.holder, &self.nonce, Duration::ZERO, true);
        for _ in 0..2 {
            let nonce = self.nonce.clone();
            let mine = |now: Option<&Holder>| now.is_some_and(|h| h.nonce == nonce);
            let version = self.version.clone();
            if update(&self.remote, &self.key, body.clone(), version, mine)
                .await?
                .is_some()
            {
                return Ok(());
            }
            match read(&self.remote, &self.key).await? {
                Some(Current {
                    held: Some(held),
                    version,
                }) if held.nonce == self.nonce => self.version = version,
                _ => return Ok(()),
            }
        }
        Ok(())
    }
}

/// Whether `held` is a process of this machine that is gone: killed here, its lease need not
/// be waited out here. Only a holder on the same boot and pid namespace as this process
/// counts: elsewhere its pid means another process, or none.
pub fn dead_here(held: &Holder) -> bool {
    let (Some(theirs), Some(ours), Some(pid)) = (&held.machine, machine(), held.pid) else {
        return false;
    };
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if *theirs != ours || pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only asks whether the process exists.
    let refused = unsafe { libc::kill(pid, 0) } != 0;
    refused && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// This process's boot and pid namespace: `/proc/sys/kernel/random/boot_id` and the inode of
/// `/proc/self/ns/pid`. `None` where either cannot be read.
fn machine() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let namespace = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
    Some(format!("{}/{namespace}", boot.trim()))
}

/// 16 random bytes in hex: what tells this taking of a lease from any other.
fn nonce() -> String {
    crate::fingerprint::hex(&crate::random::bytes::<16>())
}

fn body_of(holder: &str, nonce: &str, ttl: Duration, released: bool) -> Bytes {
    let expires = Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    let held = Holder {
        holder: holder.to_owned(),
        expires,
        nonce: nonce.to_owned(),
        machine: machine(),
        pid: Some(std::process::id()),
        released,
    };
    Bytes::from(serde_json::to_vec(&held).unwrap_or_default())
}

/// The lease object at `key` and its version, or `None` if there is none.
async fn read(remote: &Remote, key: &Key) -> Result<Option<Current>, RemoteError> {
    let current = match remote.store.get(key).await {
        Ok(current) => current,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(remote.request_err("read", key)(e)),
    };
    let version = UpdateVersion {
        e_tag: current.meta.e_tag.clone(),
        version: current.meta.version.clone(),
    };
    // Too big to be a lease: unreadable, so taken over like a damaged one.
    if current.meta.size > MAX_BODY {
        return Ok(Some(Current {
            held: None,
            version,
        }));
    }
    let bytes = current
        .bytes()
        .await
        .map_err(remote.request_err("read", key))?;
    Ok(Some(Current {
        held: serde_json::from_slice(&bytes).ok(),
        version,
    }))
}

/// Replaces the lease if it is still at `version`: the new version, or `None` if it moved.
/// A store without conditional updates (a local directory) is overwritten when `still` holds
/// for what it holds now: its machines share a disk, where the run lock already keeps two
/// runs apart.
async fn update(
    remote: &Remote,
    key: &Key,
    body: Bytes,
    version: UpdateVersion,
    still: impl Fn(Option<&Holder>) -> bool,
) -> Result<Option<UpdateVersion>, RemoteError> {
    let options = PutOptions {
        mode: PutMode::Update(version),
        ..PutOptions::default()
    };
    let put = match remote
        .store
        .put_opts(key, PutPayload::from(body.clone()), options)
        .await
    {
        Ok(put) => put,
        Err(object_store::Error::Precondition { .. })
        | Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(object_store::Error::NotImplemented { .. }) => {
            let Some(current) = read(remote, key).await? else {
                return Ok(None);
            };
            if !still(current.held.as_ref()) {
                return Ok(None);
            }
            remote
                .store
                .put(key, PutPayload::from(body))
                .await
                .map_err(remote.request_err("write", key))?
        }
        Err(e) => return Err(remote.request_err("update", key)(e)),
    };
    Ok(Some(UpdateVersion {
        e_tag: put.e_tag,
        version: put.version,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::StoreUrl;

    fn remote(dir: &tempfile::TempDir) -> Remote {
        let url = StoreUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
        Remote::open(&url, &Default::default()).unwrap()
    }

    async fn holder_of(remote: &Remote, key: &Key) -> Holder {
        let bytes = remote.get(key).await.unwrap().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_lease_is_held_renewed_released_and_taken_over_once_expired() {
        let dir = tempfile::tempdir().unwrap();
        let remote = remote(&dir);
        let key = remote.shared("locks/run");
        let hour = Duration::from_secs(3600);
        let Taken::Yes(mut a) = Lease::take(&remote, key.clone(), "a", hour).await.unwrap() else {
            panic!("a free lease was not taken");
        };
        assert!(!a.took_over());
        match Lease::take(&remote, key.clone(), "b", hour).await.unwrap() {
            Taken::Held(held) => assert_eq!(held.holder, "a"),
            Taken::Yes(_) => panic!("a held lease was taken"),
        }
        assert_eq!(a.renew().await.unwrap(), Renewed::Yes);
        a.release().await.unwrap();
        // Released, not deleted: the object says so, and is free.
        assert!(holder_of(&remote, &key).await.released);
        let Taken::Yes(b) = Lease::take(&remote, key.clone(), "b", Duration::ZERO)
            .await
            .unwrap()
        else {
            panic!("a released lease was not taken");
        };
        assert!(!b.took_over(), "a released lease is not taken over");
        // b's lease expired at once: the next machine takes it over.
        let Taken::Yes(mut c) = Lease::take(&remote, key.clone(), "c", hour).await.unwrap() else {
            panic!("an expired lease was not taken over");
        };
        assert!(c.took_over());
        assert_eq!(c.renew().await.unwrap(), Renewed::Yes);
        // b no longer holds it, so its release leaves c's lease alone.
        b.release().await.unwrap();
        match Lease::take(&remote, key, "d", hour).await.unwrap() {
            Taken::Held(held) => assert_eq!(held.holder, "c"),
            Taken::Yes(_) => panic!("c's lease was released by b"),
        }
    }

    #[tokio::test]
    async fn holders_with_the_same_name_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let remote = remote(&dir);
        let key = remote.shared("locks/run");
        let same = "runner (pid 7, build)";
        let Taken::Yes(mut first) = Lease::take(&remote, key.clone(), same, Duration::ZERO)
            .await
            .unwrap()
        else {
            panic!("a free lease was not taken");
        };
        let hour = Duration::from_secs(3600);
        let Taken::Yes(_second) = Lease::take(&remote, key.clone(), same, hour).await.unwrap()
        else {
            panic!("an expired lease was not taken over");
        };
        // The first holder, named like the second, neither renews nor releases its lease.
        assert_eq!(first.renew().await.unwrap(), Renewed::LostTo(same.into()));
        first.release().await.unwrap();
        match Lease::take(&remote, key, "other", hour).await.unwrap() {
            Taken::Held(held) => assert!(!held.released && held.expires > Timestamp::now()),
            Taken::Yes(_) => panic!("the second holder's lease was released by the first"),
        }
    }

    #[tokio::test]
    async fn only_a_dead_process_of_this_machine_is_taken_over_before_its_lease_ends() {
        let dir = tempfile::tempdir().unwrap();
        let remote = remote(&dir);
        let key = remote.shared("locks/run");
        let hour = Duration::from_secs(3600);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let mut held = Holder {
            holder: "gone".into(),
            expires: Timestamp::now() + jiff::SignedDuration::from_hours(1),
            nonce: nonce(),
            machine: machine(),
            pid: Some(dead),
            released: false,
        };
        assert!(dead_here(&held));
        // The same pid on another machine (or in another pid namespace) is another process.
        let elsewhere = Holder {
            machine: Some("another boot/1".into()),
            ..held.clone()
        };
        assert!(!dead_here(&elsewhere));
        assert!(!dead_here(&Holder {
            machine: None,
            ..held.clone()
        }));
        held.pid = Some(std::process::id());
        assert!(!dead_here(&held), "this process is alive");

        for (body, taken) in [(elsewhere, false), (held.clone(), false)] {
            remote
                .put(&key, Bytes::from(serde_json::to_vec(&body).unwrap()))
                .await
                .unwrap();
            let got = Lease::take_unless(&remote, key.clone(), "me", hour, dead_here)
                .await
                .unwrap();
            assert_eq!(matches!(got, Taken::Yes(_)), taken);
        }
        held.pid = Some(dead);
        remote
            .put(&key, Bytes::from(serde_json::to_vec(&held).unwrap()))
            .await
            .unwrap();
        let Taken::Yes(lease) = Lease::take_unless(&remote, key.clone(), "me", hour, dead_here)
            .await
            .unwrap()
        else {
            panic!("a dead process's lease was not taken over");
        };
        assert!(lease.took_over());
        assert_eq!(holder_of(&remote, &key).await.holder, "me");
    }

    #[test]
    fn nonces_are_random_hex() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
