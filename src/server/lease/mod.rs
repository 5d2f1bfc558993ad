//! Leases with etcd 3.4's semantics: keys that live only while their owner
//! keeps a lease alive.
//!
//! - What every member must agree on (which leases exist, their TTLs, the
//!   keys attached) is replicated state in the key-value store
//!   (`kv::Leases`), changed only by grants, revocations and checkpoints
//!   through the log.
//! - When a lease expires is the leader's alone ([`Lessor`], run by the
//!   node on a leader): it ends an expired lease by proposing its
//!   revocation, so every member deletes the same keys at the same revision.
//! - Keep-alives and time-to-live questions need that clock: any member
//!   takes them and passes them to the leader over the peer port
//!   ([`on_leader`]). Both are reads or idempotent renewals, so asking again
//!   after a lost answer is always safe.
//! - A grant's id (when the client gives none) and its TTL (raised to the
//!   minimum, as etcd does) are settled where the request comes in, so the
//!   command every member applies is already final.

pub mod http;
pub mod lessor;
pub mod service;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;
use tonic::Status;
use tonic::transport::Channel;

use super::node::{NodeError, Request};
use super::shared::{REQUEST_TIMEOUT, Shared, node_status, pause_before_retry, timed_out};
use crate::proto::etcdserverpb::{LeaseTimeToLiveRequest, LeaseTimeToLiveResponse};
use crate::proto::raftpeer::raft_peer_client::RaftPeerClient;
use crate::proto::raftpeer::{LeaseRenewRequest, LeaseTimeToLiveForward};
pub use lessor::Lessor;

/// The longest TTL a lease may have (etcd's `MaxLeaseTTL`, in seconds).
pub const MAX_TTL: i64 = 9_000_000_000;

/// Lease ids as etcd makes them: the member id's low 16 bits, then a
/// counter started from the clock, so members never collide and a restarted
/// member does not repeat its earlier ids. Always positive.
pub struct IdGenerator {
    prefix: u64,
    next: AtomicU64,
}

impl IdGenerator {
    pub fn new(member_id: u64) -> IdGenerator {
        let millis =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        IdGenerator { prefix: (member_id & 0x7fff) << 48, next: AtomicU64::new(millis << 8) }
    }

    pub fn next(&self) -> i64 {
        let suffix = self.next.fetch_add(1, Ordering::Relaxed) & ((1 << 48) - 1);
        // Never 0 (no lease): the counter would have to wrap to exactly 0
        // with a member id whose low bits are 0.
        ((self.prefix | suffix) as i64).max(1)
    }
}

/// Renews lease `id` on the leader: the TTL it now has, 0 if it is gone.
pub async fn renew(shared: &Shared, id: i64) -> Result<i64, Status> {
    let me = shared.settings.member_id;
    on_leader(
        shared,
        |reply| Request::LeaseRenew { id, reply },
        |mut peer| async move {
            let req = LeaseRenewRequest { cluster_id: shared.settings.cluster_id, from: me, id };
            Ok(peer.lease_renew(req).await?.into_inner().ttl)
        },
    )
    .await
}

/// etcd's LeaseTimeToLive, answered by the leader (TTL -1: no such lease).
pub async fn time_to_live(shared: &Shared, req: LeaseTimeToLiveRequest) -> Result<LeaseTimeToLiveResponse, Status> {
    let (id, keys) = (req.id, req.keys);
    on_leader(
        shared,
        |reply| Request::LeaseTimeToLive { id, keys, reply },
        |mut peer| {
            let req = LeaseTimeToLiveForward {
                cluster_id: shared.settings.cluster_id,
                from: shared.settings.member_id,
                request: Some(req),
            };
            async move { Ok(peer.lease_time_to_live(req).await?.into_inner()) }
        },
    )
    .await
}

/// Asks this member's node, and the leader's over the peer port when
/// another member leads, until one answers or [`REQUEST_TIMEOUT`] passes.
async fn on_leader<T, F>(
    shared: &Shared,
    local: impl Fn(oneshot::Sender<Result<T, NodeError>>) -> Request,
    remote: impl Fn(RaftPeerClient<Channel>) -> F,
) -> Result<T, Status>
where
    F: Future<Output = Result<T, Status>>,
{
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        let asked = tokio::time::timeout_at(deadline, shared.ask(&local)).await.map_err(|_| timed_out())?;
        match asked.and_then(|answer| answer) {
            Ok(answer) => return Ok(answer),
            Err(NodeError::NotLeader { leader: Some(leader) }) if leader != shared.settings.member_id => {
                if let Some(peer) = shared.peer_client(leader) {
                    match tokio::time::timeout_at(deadline, remote(peer)).await.map_err(|_| timed_out())? {
                        Ok(answer) => return Ok(answer),
                        // Not (or no longer) the leader, or unreachable:
                        // asking again is harmless.
                        Err(s) if matches!(s.code(), tonic::Code::FailedPrecondition | tonic::Code::Unavailable) => {}
                        Err(s) => return Err(s),
                    }
                }
            }
            Err(
                NodeError::NotLeader { .. }
                | NodeError::NoLeader
                | NodeError::LeaderChanged
                | NodeError::OutcomeUnknown,
            ) => {}
            Err(e) => return Err(node_status(e)),
        }
        pause_before_retry(deadline).await?;
    }
}

/// The peer side: a keep-alive or time-to-live question another member
/// passed on. Answered only by the leader; anyone else says so, and the
/// sender asks again.
pub async fn on_this_leader<T>(
    shared: &Shared,
    local: impl FnOnce(oneshot::Sender<Result<T, NodeError>>) -> Request,
) -> Result<T, Status> {
    match shared.ask(local).await.and_then(|answer| answer) {
        Ok(answer) => Ok(answer),
        Err(e @ (NodeError::NotLeader { .. } | NodeError::NoLeader | NodeError::LeaderChanged)) => {
            Err(Status::failed_precondition(e.to_string()))
        }
        Err(e) => Err(node_status(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_positive_distinct_and_carry_the_member() {
        let ids = IdGenerator::new(0xabcd_1234_5678_9abc);
        let a = ids.next();
        let b = ids.next();
        assert!(a > 0 && b > 0);
        assert_ne!(a, b);
        assert_eq!((a as u64) >> 48, 0x1abc);
        let other = IdGenerator::new(0x1111);
        assert_ne!((other.next() as u64) >> 48, (a as u64) >> 48);
    }
}
