//! The driver's side of leases: the leader's clock ([`Lessor`]) started
//! and stopped with leadership, renewals and time-to-live questions answered
//! from it, and the proposals it makes (revocations of expired leases,
//! checkpoints of remaining TTLs, and the resets renewals wait for).
//!
//! The clock starts only once this leader has applied an entry of its own
//! term, so every grant, revocation and checkpoint of earlier terms is in
//! the table it starts from; it stops the moment this member stops leading.

use std::time::Instant;

use prost::Message as _;
use tokio::sync::oneshot;

use super::{Node, NodeError};
use crate::proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest, LeaseTimeToLiveResponse,
};
use crate::proto::raftkvpb::{Command, command};
use crate::server::lease::lessor::{CHECKPOINTS_PER_ENTRY, Lessor};

/// Most revocations one turn proposes (etcd revokes at most 1,000 leases
/// a second): a mass expiry does not make one huge batch.
const REVOKES_PER_TURN: usize = 500;

/// A renewal waiting for its lease's recorded remaining TTL to be reset.
pub(super) struct WaitingRenewal {
    id: i64,
    ttl: i64,
    reply: oneshot::Sender<Result<i64, NodeError>>,
}

/// Where the lease clock reads the time: the real clock, or a test's.
pub(super) type Clock = std::sync::Arc<dyn Fn() -> Instant + Send + Sync>;

pub(super) fn real_clock() -> Clock {
    std::sync::Arc::new(Instant::now)
}

impl Node {
    fn now(&self) -> Instant {
        (self.clock)()
    }

    /// Renews a lease on the leader: the TTL it now has (0: the lease does
    /// not exist, or expired and is being revoked).
    pub(super) fn renew_lease(&mut self, id: i64, reply: oneshot::Sender<Result<i64, NodeError>>) {
        if !self.raft.is_leader() {
            let _ = reply.send(Err(NodeError::NotLeader { leader: self.raft.leader() }));
            return;
        }
        let now = self.now();
        // A new leader's clock is not running yet: asked again shortly.
        let Some(lessor) = self.lessor.as_mut() else {
            let _ = reply.send(Err(NodeError::NoLeader));
            return;
        };
        let Some(lease) = self.kv.leases().get(id) else {
            let _ = reply.send(Ok(0));
            return;
        };
        if !lessor.renew(id, lease.ttl, now) {
            let _ = reply.send(Ok(0));
            return;
        }
        if lease.remaining > 0 {
            self.waiting_renewals.push(WaitingRenewal { id, ttl: lease.ttl, reply });
        } else {
            let _ = reply.send(Ok(lease.ttl));
        }
    }

    /// etcd's LeaseTimeToLive, on the leader (TTL -1: no such lease).
    pub(super) fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse, NodeError> {
        if !self.raft.is_leader() {
            return Err(NodeError::NotLeader { leader: self.raft.leader() });
        }
        let lessor = self.lessor.as_ref().ok_or(NodeError::NoLeader)?;
        let Some(lease) = self.kv.leases().get(id) else {
            return Ok(LeaseTimeToLiveResponse { id, ttl: -1, ..Default::default() });
        };
        let left = lessor.remaining(id, self.now()).unwrap_or_default();
        Ok(LeaseTimeToLiveResponse {
            header: None,
            id,
            // Whole seconds left, as etcd truncates them.
            ttl: left.as_secs() as i64,
            granted_ttl: lease.ttl,
            keys: if keys { lease.keys.iter().cloned().collect() } else { Vec::new() },
        })
    }

    /// A lease command was applied: the leader's clock follows it.
    pub(super) fn lease_applied(&mut self, command: &Command) {
        // Every applied command comes through here: the clock is read only
        // for a grant.
        let now = || (self.clock)();
        let Some(lessor) = self.lessor.as_mut() else { return };
        match &command.request {
            Some(command::Request::LeaseGrant(req)) => lessor.granted(req.id, req.ttl, now()),
            Some(command::Request::LeaseRevoke(req)) => lessor.revoked(req.id),
            // Checkpoints (this leader's own, or resets it asked for) record
            // what its clock already knows.
            _ => {}
        }
    }

    /// Each turn: starts or stops the clock with leadership, and proposes
    /// what it calls for.
    pub(super) fn tend_leases(&mut self) {
        if !self.raft.is_leader() {
            if self.lessor.take().is_some() {
                tracing::info!(term = self.raft.term(), "no longer leading: lease deadlines are the new leader's");
            }
            for w in self.waiting_renewals.drain(..) {
                let _ = w.reply.send(Err(NodeError::NotLeader { leader: self.raft.leader() }));
            }
            return;
        }
        let now = self.now();
        if self.lessor.is_none() {
            if self.raft.log_term(self.raft.applied_index()) != Some(self.raft.term()) {
                return;
            }
            let lessor = Lessor::promoted(self.kv.leases(), self.lease_checkpoint_interval, now);
            if !lessor.is_empty() {
                tracing::info!(leases = lessor.len(), term = self.raft.term(), "counting lease deadlines as leader");
            }
            self.lessor = Some(lessor);
        }
        let lessor = self.lessor.as_mut().expect("started above");
        let expired = lessor.expired(now, REVOKES_PER_TURN);
        let checkpoints = lessor.checkpoints(self.kv.leases(), now);
        for id in expired {
            tracing::debug!(lease = format!("{id:x}"), "lease expired: proposing its revocation");
            let revoke = Command::new(command::Request::LeaseRevoke(LeaseRevokeRequest { id }));
            self.propose_internal(&revoke);
        }
        for batch in checkpoints.chunks(CHECKPOINTS_PER_ENTRY) {
            self.propose_internal(&checkpoint_command(batch.to_vec()));
        }
        self.reset_for_renewals();
    }

    /// Proposes one reset of the recorded remaining TTL for every renewal
    /// waiting this turn, and answers them once it is applied.
    fn reset_for_renewals(&mut self) {
        if self.waiting_renewals.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.waiting_renewals);
        let resets = waiting.iter().map(|w| LeaseCheckpoint { id: w.id, remaining_ttl: 0 }).collect();
        let (applied, outcome) = oneshot::channel();
        match self.raft.propose(checkpoint_command(resets).encode_to_vec().into()) {
            Ok(index) => self.proposals.add(index, self.raft.term(), applied),
            Err(e) => {
                let _ = applied.send(Err(super::proposal_error(e)));
            }
        }
        self.runtime.spawn(async move {
            let outcome = outcome.await;
            for w in waiting {
                let answer = match &outcome {
                    Ok(Ok(_)) => Ok(w.ttl),
                    Ok(Err(e)) => Err(e.clone()),
                    Err(_) => Err(NodeError::Stopped),
                };
                let _ = w.reply.send(answer);
            }
        });
    }

    /// Proposes a command no client waits for. Lost with a leadership
    /// change, it is the next leader's to make again.
    fn propose_internal(&mut self, command: &Command) {
        if let Err(e) = self.raft.propose(command.encode_to_vec().into()) {
            tracing::debug!("lease proposal not made: {e}");
        }
    }
}

fn checkpoint_command(checkpoints: Vec<LeaseCheckpoint>) -> Command {
    Command::new(command::Request::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints }))
}
