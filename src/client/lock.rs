//! `raftkv lock NAME [-- command …]`: hold a distributed lock while a
//! command runs, as `etcdctl lock` does.
//!
//! - The lock is held under a lease of its own, kept alive by a [`Keeper`]
//!   through any endpoint, so the holder survives the loss of members.
//! - Lock is asked through the server's `v3lockpb.Lock` service. Asking
//!   again with the same lease is safe (the holder's key is found, not made
//!   twice), so a request cut by a failed member is asked elsewhere.
//! - With a command, it runs with etcdctl's `ETCD_LOCK_KEY` and
//!   `ETCD_LOCK_REV` set; the lock is released after it exits, and raftkv
//!   exits with its status. If the lease is lost while the command runs, the
//!   lock may pass to another: the command is killed and raftkv fails.
//!   Without a command, the key is printed and the lock held until Ctrl-C.

use std::time::Duration;

use bytes::Bytes;

use super::leases::Keeper;
use super::{Client, ClientError};
use crate::proto::v3lockpb::lock_client::LockClient;
use crate::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest};

/// The lease TTL a lock is held under (etcdctl's session default).
pub const LOCK_TTL: i64 = 60;

/// Holds lock `name` while `command` runs (or until `stop` fires when
/// there is no command); returns the command's exit code.
pub async fn run(
    endpoints: &[String],
    name: &str,
    command: &[String],
    ttl: i64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<i32, ClientError> {
    let mut client = Client::connect(endpoints).await?;
    let lease = client.lease_grant(ttl).await?;
    let mut keeper = Keeper::start(endpoints, lease.id, lease.ttl);
    let held = tokio::select! {
        held = lock(endpoints, name.as_bytes(), lease.id) => held?,
        _ = keeper.lost.wait_for(|lost| *lost) => return Err(lease_lost()),
        _ = stop.wait_for(|s| *s) => {
            let _ = client.lease_revoke(lease.id).await;
            return Ok(130);
        }
    };
    let key = String::from_utf8_lossy(&held.key).into_owned();
    let revision = held.header.as_ref().map_or(0, |h| h.revision);
    let code = if command.is_empty() {
        println!("{key}");
        tokio::select! {
            _ = stop.wait_for(|s| *s) => 0,
            _ = keeper.lost.wait_for(|lost| *lost) => return Err(lease_lost()),
        }
    } else {
        let mut child = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .env("ETCD_LOCK_KEY", &key)
            .env("ETCD_LOCK_REV", revision.to_string())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ClientError::Io { path: command[0].clone().into(), source: e })?;
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| ClientError::Io { path: command[0].clone().into(), source: e })?;
                status.code().unwrap_or(1)
            }
            _ = keeper.lost.wait_for(|lost| *lost) => {
                let _ = child.kill().await;
                return Err(lease_lost());
            }
        }
    };
    drop(keeper);
    unlock(&mut client, held.key).await?;
    // The key is gone already; ending the lease is tidiness.
    let _ = client.lease_revoke(lease.id).await;
    Ok(code)
}

fn lease_lost() -> ClientError {
    ClientError::Server(tonic::Status::unavailable(
        "the lock's lease expired or could not be renewed: the lock is no longer held",
    ))
}

/// Asks for the lock through each endpoint in turn until one answers.
async fn lock(endpoints: &[String], name: &[u8], lease: i64) -> Result<LockResponse, ClientError> {
    let mut attempt = 0usize;
    loop {
        let url = &endpoints[attempt % endpoints.len()];
        let req = LockRequest { name: Bytes::copy_from_slice(name), lease };
        let answer = match super::watch::channel(url) {
            Ok(channel) => LockClient::new(channel).lock(req).await,
            Err(e) => return Err(e),
        };
        match answer {
            Ok(held) => return Ok(held.into_inner()),
            // The member went away, or it dropped this contender's key as
            // abandoned when the request was cut: asking again is safe.
            Err(s) if s.code() == tonic::Code::Unavailable || s.message() == "session expired" => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => return Err(s.into()),
        }
    }
}

/// Unlock is a delete of the holder's key: deleting it twice is harmless,
/// so it is asked again on another endpoint if one is unavailable.
async fn unlock(client: &mut Client, key: Bytes) -> Result<(), ClientError> {
    client
        .idempotent(|ch| {
            let req = UnlockRequest { key: key.clone() };
            async move { Ok(LockClient::new(ch).unlock(req).await?.into_inner()) }
        })
        .await
        .map(|_| ())
}
