//! Locks on the shared store: lease objects taken by a conditional create, renewed with
//! `If-Match` on their version, and free once expired, so a machine that died blocks the next
//! one for at most the lease's length.

use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::{Remote, RemoteError};

/// What a lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    /// Who holds it: host, process and run, for the message another machine shows.
    pub holder: String,
    pub expires: Timestamp,
}

/// A lease this process holds.
#[derive(Debug)]
pub struct Lease {
    remote: Remote,
    key: Key,
    holder: String,
    ttl: Duration,
    version: UpdateVersion,
}

/// Whether the lease was taken.
#[derive(Debug)]
pub enum Taken {
    Yes(Lease),
    /// Someone else holds it, until `expires` unless renewed.
    Held(Holder),
}

impl Lease {
    /// Takes the lease at `key` for `ttl`: created if absent, taken over if expired.
    pub async fn take(
        remote: &Remote,
        key: Key,
        holder: &str,
        ttl: Duration,
    ) -> Result<Taken, RemoteError> {
        // Two rounds: a lost race for an expired lease is looked at once more.
        for _ in 0..3 {
            let body = body_of(holder, ttl);
            let created = remote
                .store
                .put_opts(
                    &key,
                    PutPayload::from(body),
                    PutOptions {
                        mode: PutMode::Create,
                        ..PutOptions::default()
                    },
                )
                .await;
            match created {
                Ok(put) => {
                    return Ok(Taken::Yes(Lease {
                        remote: remote.clone(),
                        key,
                        holder: holder.to_owned(),
                        ttl,
                        version: UpdateVersion {
                            e_tag: put.e_tag,
                            version: put.version,
                        },
                    }));
                }
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => {}
                Err(e) => return Err(remote.request_err("create", &key)(e)),
            }
            let current = match remote.store.get(&key).await {
                Ok(current) => current,
                // Released between the two requests: try again.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(remote.request_err("read", &key)(e)),
            };
            let version = UpdateVersion {
                e_tag: current.meta.e_tag.clone(),
                version: current.meta.version.clone(),
            };
            let bytes = current
                .bytes()
                .await
                .map_err(remote.request_err("read", &key))?;
            let held: Option<Holder> = serde_json::from_slice(&bytes).ok();
            match held {
                Some(held) if held.expires > Timestamp::now() => return Ok(Taken::Held(held)),
                // Expired (or unreadable): taken over only if nobody renewed it meanwhile.
                _ => match update(remote, &key, body_of(holder, ttl), version).await? {
                    Some(version) => {
                        return Ok(Taken::Yes(Lease {
                            remote: remote.clone(),
                            key,
                            holder: holder.to_owned(),
                            ttl,
                            version,
                        }));
                    }
                    None => continue,
                },
            }
        }
        Err(RemoteError::Damaged {
            what: format!("the lease `{key}`"),
            problem: "it changed hands three times while being taken".into(),
        })
    }

    /// Extends the lease by its length; `Ok(false)` if it was lost (expired and taken).
    pub async fn renew(&mut self) -> Result<bool, RemoteError> {
        let body = body_of(&self.holder, self.ttl);
        match update(&self.remote, &self.key, body, self.version.clone()).await? {
            Some(version) => {
                self.version = version;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// How often to renew: a third of the lease, so two renewals may fail in a row.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Gives the lease up, unless it was lost to someone else meanwhile.
    pub async fn release(self) -> Result<(), RemoteError> {
        if let Some(bytes) = self.remote.get(&self.key).await?
            && serde_json::from_slice::<Holder>(&bytes).is_ok_and(|h| h.holder == self.holder)
        {
            self.remote.delete(&self.key).await?;
        }
        Ok(())
    }
}

fn body_of(holder: &str, ttl: Duration) -> Bytes {
    let expires = Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    let held = Holder {
        holder: holder.to_owned(),
        expires,
    };
    Bytes::from(serde_json::to_vec(&held).unwrap_or_default())
}

/// Replaces the lease if it is still at `version`: the new version, or `None` if it moved.
/// A store without conditional updates (a local directory) is overwritten: its machines share
/// a disk, where the run lock already keeps two runs apart.
async fn update(
    remote: &Remote,
    key: &Key,
    body: Bytes,
    version: UpdateVersion,
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
        Err(object_store::Error::NotImplemented { .. }) => remote
            .store
            .put(key, PutPayload::from(body))
            .await
            .map_err(remote.request_err("write", key))?,
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

    #[test]
    fn a_lease_is_held_renewed_released_and_taken_over_once_expired() {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
        let remote = Remote::open(&url, &Default::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let key = remote.shared("locks/run");
            let hour = Duration::from_secs(3600);
            let Taken::Yes(mut a) = Lease::take(&remote, key.clone(), "a", hour).await.unwrap()
            else {
                panic!("a free lease was not taken");
            };
            match Lease::take(&remote, key.clone(), "b", hour).await.unwrap() {
                Taken::Held(held) => assert_eq!(held.holder, "a"),
                Taken::Yes(_) => panic!("a held lease was taken"),
            }
            assert!(a.renew().await.unwrap());
            a.release().await.unwrap();
            let Taken::Yes(b) = Lease::take(&remote, key.clone(), "b", Duration::ZERO)
                .await
                .unwrap()
            else {
                panic!("a released lease was not taken");
            };
            // b's lease expired at once: the next machine takes it over.
            let Taken::Yes(_) = Lease::take(&remote, key.clone(), "c", hour).await.unwrap() else {
                panic!("an expired lease was not taken over");
            };
            // b no longer holds it, so its release leaves c's lease alone.
            b.release().await.unwrap();
            match Lease::take(&remote, key, "d", hour).await.unwrap() {
                Taken::Held(held) => assert_eq!(held.holder, "c"),
                Taken::Yes(_) => panic!("c's lease was released by b"),
            }
        });
    }
}
