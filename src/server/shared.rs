//! What every request handler shares: the node's request queue and status,
//! the settings, and the peers (clients, and forwarders of writes to the leader).
//!
//! Retries: a write is retried only when it certainly did not take effect:
//! it was never appended (no leader yet, this member is not the leader), or
//! an entry of another term was applied at its index. A write whose outcome
//! is unknown (timed out after it was appended, its answer lost with the
//! connection to the leader, its index overtaken by a snapshot) is never
//! retried, and is answered with etcd's "request timed out" family.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;

use super::alarms;
use super::config::Settings;
use super::forward::{ForwardError, Forwarder};
use super::membership;
use super::node::{Applied, NodeError, NodeStatus, Request};
use crate::kv::{KvError, KvStore};
use crate::proto::etcdserverpb::{AlarmMember, AlarmType, RangeRequest, RangeResponse, ResponseHeader, ResponseOp};
use crate::proto::raftkvpb::{AuthStamp, Command};
use crate::proto::raftpeer::raft_peer_client::RaftPeerClient;
use crate::proto::{ConfState, Membership};
use crate::raft::NodeId;
use crate::snapshot::SnapshotDir;
use crate::storage::Defragmenter;

/// How long a request may wait for the cluster (an election included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A write slower than this is logged (etcd's `warn-apply-duration`).
pub const SLOW_REQUEST: Duration = Duration::from_millis(100);

pub struct Shared {
    pub settings: Settings,
    /// Where received snapshots are written.
    pub snapshot_dir: Arc<SnapshotDir>,
    pub node: mpsc::Sender<Request>,
    pub status: watch::Receiver<NodeStatus>,
    /// The applied key-value state, as the node publishes it.
    pub applied: watch::Receiver<KvStore>,
    /// Watch streams and watchers open on this member.
    pub watches: super::watch::Gauges,
    /// Compacts the member's RocksDB store (etcd's Defragment).
    pub defragmenter: Defragmenter,
    /// A connection and a forwarding stream per leader this member
    /// forwarded to, with the peer URL they were made for (a member that
    /// moved gets new ones).
    forwarders: Mutex<HashMap<NodeId, PeerLink>>,
    /// Ids for leases granted here without one.
    pub lease_ids: super::lease::IdGenerator,
    pub metrics: Arc<super::metrics::Metrics>,
    /// What the cluster page shows beyond the metrics.
    pub ui: super::ui::Observed,
    /// This member's auth tokens and its limit on failed authentications.
    pub authenticator: super::auth::Authenticator,
}

struct PeerLink {
    url: String,
    channel: tonic::transport::Channel,
    forwarder: Forwarder,
}

/// A write's outcome: the response, the revision after it, the term.
pub type WriteResult = (ResponseOp, i64, u64);

impl Shared {
    pub fn new(
        settings: Settings,
        snapshot_dir: Arc<SnapshotDir>,
        node: mpsc::Sender<Request>,
        status: watch::Receiver<NodeStatus>,
        applied: watch::Receiver<KvStore>,
        defragmenter: Defragmenter,
        metrics: Arc<super::metrics::Metrics>,
    ) -> Shared {
        Shared {
            snapshot_dir,
            node,
            status,
            applied,
            watches: Default::default(),
            lease_ids: super::lease::IdGenerator::new(settings.member_id),
            authenticator: super::auth::Authenticator::new(&settings.auth, settings.client_cert_auth),
            settings,
            defragmenter,
            forwarders: Mutex::default(),
            metrics,
            ui: Default::default(),
        }
    }

    /// The member table and the configuration in force, as applied here.
    pub fn membership(&self) -> (Arc<Membership>, ConfState) {
        let table = self.applied.borrow().membership().clone();
        (table, self.status.borrow().conf.clone())
    }

    /// Waits (at most `limit`) until `done` holds for the state applied
    /// here. Returns false if the member is stopping, true otherwise (done,
    /// or out of time: the caller looks again).
    pub async fn wait_applied(&self, limit: Duration, done: impl Fn(&Shared) -> bool) -> bool {
        let mut applied = self.applied.clone();
        let waiting = async {
            while !done(self) {
                if applied.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(limit, waiting).await.unwrap_or(true)
    }

    /// What `pick` takes from the connection and forwarding stream to `id`,
    /// at its peer URL in the member table (only that is cloned: the
    /// forwarding path runs for every write a follower takes).
    fn peer_link<T>(&self, id: NodeId, pick: impl FnOnce(&PeerLink) -> T) -> Option<T> {
        let (table, _) = self.membership();
        let url = membership::record(&table, id)?.peer_urls.first()?.clone();
        let mut forwarders = self.forwarders.lock().expect("not poisoned");
        if let Some(link) = forwarders.get(&id)
            && link.url == url
        {
            return Some(pick(link));
        }
        let channel = self.settings.peer_dialer.connect_lazy(&super::transport::peer_endpoint(&url).ok()?);
        let forwarder = Forwarder::start(self.settings.cluster_id, self.settings.member_id, channel.clone());
        let link = PeerLink { url, channel, forwarder };
        let picked = pick(&link);
        forwarders.insert(id, link);
        Some(picked)
    }

    /// A client of member `id`'s peer service.
    pub fn peer_client(&self, id: NodeId) -> Option<RaftPeerClient<tonic::transport::Channel>> {
        self.peer_link(id, |link| RaftPeerClient::new(link.channel.clone()))
    }

    pub fn header(&self, revision: i64, raft_term: u64) -> ResponseHeader {
        ResponseHeader { cluster_id: self.settings.cluster_id, member_id: self.settings.member_id, revision, raft_term }
    }

    /// Refuses peer requests from another cluster or a removed member (with
    /// etcd's text, which tells that member it was removed). Others are
    /// heard: a member replaying old changes may not know its peers yet.
    pub fn check_peer(&self, cluster_id: u64, from: NodeId) -> Result<(), Status> {
        if cluster_id != self.settings.cluster_id {
            return Err(Status::permission_denied(format!(
                "request for cluster {cluster_id:x}, this member belongs to cluster {:x}",
                self.settings.cluster_id
            )));
        }
        if self.is_removed(from) {
            return Err(Status::permission_denied(super::transport::REMOVED));
        }
        Ok(())
    }

    pub fn is_removed(&self, id: NodeId) -> bool {
        membership::is_removed(self.applied.borrow().membership(), id)
    }

    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.node.send(make(tx)).await.map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Proposes on this member; fails with NotLeader if it does not lead.
    pub async fn propose_here(&self, command: Command) -> Result<Applied, NodeError> {
        self.ask(|reply| Request::Propose { command, reply }).await?
    }

    /// Applies a write through whichever member leads, and says in the log
    /// when that took longer than [`SLOW_REQUEST`] (as etcd warns "apply
    /// request took too long").
    pub async fn write(&self, command: Command) -> Result<WriteResult, Status> {
        self.check_quota(&command).await?;
        let started = std::time::Instant::now();
        let result = self.write_through_leader(command).await;
        if result.as_ref().is_err_and(|s| s.code() == tonic::Code::Unavailable) {
            self.metrics.proposals_failed.inc();
        }
        let took = started.elapsed();
        if took > SLOW_REQUEST {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                expected_ms = SLOW_REQUEST.as_millis() as u64,
                "write request took too long"
            );
        }
        result
    }

    /// etcd's quota check, where a write enters: one that would take the
    /// data past the quota raises NOSPACE for this member (unless it is
    /// raised already) and is refused without being proposed.
    async fn check_quota(&self, command: &Command) -> Result<(), Status> {
        let me = self.settings.member_id;
        let (fits, raised) = {
            let kv = self.applied.borrow();
            let raised = kv.alarms().iter().any(|a| a.member_id == me && a.alarm == AlarmType::Nospace as i32);
            (alarms::fits(self.settings.quota_bytes, &kv, command), raised)
        };
        if fits {
            return Ok(());
        }
        if !raised {
            tracing::warn!(
                quota_bytes = self.settings.quota_bytes,
                "the data reached the space quota: raising NOSPACE"
            );
            if let Err(e) = self.write_through_leader(alarms::raise_nospace(me)).await {
                tracing::warn!("could not raise the NOSPACE alarm: {}", e.message());
            }
        }
        Err(kv_status(KvError::NoSpace))
    }

    /// The alarms raised (of type `alarm`; NONE: all), as of a linearizable
    /// read: one raised through another member is seen here at once.
    pub async fn alarms(&self, alarm: i32) -> Result<Vec<AlarmMember>, Status> {
        Ok(alarms::list(self.linearized().await?.alarms(), alarm))
    }

    /// The applied state as of a linearizable read: everything committed
    /// before this call, through any member, is in it.
    pub async fn linearized(&self) -> Result<KvStore, Status> {
        let barrier = RangeRequest { key: vec![0].into(), count_only: true, ..Default::default() };
        self.range(barrier).await?;
        Ok(self.snapshot_point().await?.0)
    }

    async fn write_through_leader(&self, command: Command) -> Result<WriteResult, Status> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let attempt = tokio::time::timeout_at(deadline, self.propose_here(command.clone())).await;
            let outcome = match attempt {
                Err(_) => return Err(timed_out()),
                Ok(outcome) => outcome,
            };
            match outcome {
                Ok(Applied { result, revision, term }) => return Ok((result.map_err(kv_status)?, revision, term)),
                Err(NodeError::NotLeader { leader: Some(leader) }) => {
                    match self.forward(leader, &command, deadline).await {
                        Err(ForwardError::NotAppended) => {}
                        Err(ForwardError::Failed(status)) => return Err(status),
                        Ok(answer) => return Ok(answer),
                    }
                }
                Err(
                    NodeError::NotLeader { leader: None }
                    | NodeError::NoLeader
                    | NodeError::LeaderChanged
                    | NodeError::ConfChangePending,
                ) => {}
                Err(e) => return Err(node_status(e)),
            }
            pause_before_retry(deadline).await?;
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        command: &Command,
        deadline: tokio::time::Instant,
    ) -> Result<WriteResult, ForwardError> {
        let forwarder = self.peer_link(leader, |link| link.forwarder.clone()).ok_or(ForwardError::NotAppended)?;
        self.metrics.forwarded_writes.inc();
        let answer = tokio::time::timeout_at(deadline, forwarder.forward(command.clone()));
        answer.await.map_err(|_| ForwardError::Failed(timed_out()))?
    }

    /// Serves the server's own read (no caller's permissions are checked):
    /// linearizable through ReadIndex, or from local state.
    pub async fn range(&self, req: RangeRequest) -> Result<(RangeResponse, i64), Status> {
        self.range_for(req, None).await
    }

    /// Serves a read for `reader`, whose permissions are checked against the
    /// state it reads.
    pub async fn range_for(
        &self,
        req: RangeRequest,
        reader: Option<AuthStamp>,
    ) -> Result<(RangeResponse, i64), Status> {
        self.metrics.reads.inc();
        let linearizable = !req.serializable;
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let (req, reader) = (req.clone(), reader.clone());
            let ask = self.ask(|reply| Request::Range { req, reader, linearizable, reply });
            let attempt = tokio::time::timeout_at(deadline, ask).await;
            match attempt.map_err(|_| timed_out())? {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(
                    NodeError::NoLeader
                    | NodeError::LeaderChanged
                    | NodeError::NotLeader { .. }
                    | NodeError::ReadIndexLost,
                )) => {}
                Ok(Err(e)) | Err(e) => return Err(node_status(e)),
            }
            pause_before_retry(deadline).await?;
        }
    }

    /// HashKV at `revision`: the hash, the revision, the compaction point.
    pub async fn hash(&self, revision: i64) -> Result<(u32, i64, i64), Status> {
        self.ask(|reply| Request::Hash { revision, reply }).await.map_err(node_status)?.map_err(kv_status)
    }

    /// The applied state and its point (index, term, configuration).
    pub async fn snapshot_point(&self) -> Result<(KvStore, crate::proto::SnapshotMeta), Status> {
        self.ask(|reply| Request::SnapshotPoint { reply }).await.map_err(node_status)
    }

    /// etcd's MoveLeader: this member must lead; answers once `to` leads.
    pub async fn move_leader(&self, to: NodeId) -> Result<(), Status> {
        let me = self.settings.member_id;
        if to == me && self.status.borrow().leader == Some(me) {
            return Ok(());
        }
        self.ask(|reply| Request::TransferLeader { to, reply }).await.map_err(node_status)?.map_err(node_status)?;
        let mut status = self.status.clone();
        let moved = tokio::time::timeout(REQUEST_TIMEOUT, status.wait_for(|s| s.leader == Some(to))).await;
        match moved {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(node_status(NodeError::Stopped)),
            Err(_) => Err(Status::unavailable("etcdserver: request timed out, leader transfer took too long")),
        }
    }

    /// Refuses a request over the size limit, naming the limit.
    pub fn check_size(&self, size: usize) -> Result<(), Status> {
        let limit = self.settings.max_request_bytes;
        if size > limit {
            return Err(Status::invalid_argument(format!(
                "etcdserver: request is too large ({size} bytes; the limit is {limit} bytes, --max-request-bytes)"
            )));
        }
        Ok(())
    }
}

/// How long a request waits before asking the cluster again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Waits before a request is asked again, or gives up with etcd's "no
/// leader" when the pause would reach its `deadline`.
pub async fn pause_before_retry(deadline: tokio::time::Instant) -> Result<(), Status> {
    if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
        return Err(Status::unavailable("etcdserver: no leader"));
    }
    tokio::time::sleep(RETRY_PAUSE).await;
    Ok(())
}

pub fn timed_out() -> Status {
    Status::unavailable("etcdserver: request timed out")
}

pub fn kv_status(e: KvError) -> Status {
    match e {
        KvError::Auth(e) => e.status(),
        KvError::LeaseNotFound => Status::not_found(e.to_string()),
        KvError::LeaseExists => Status::failed_precondition(e.to_string()),
        KvError::NoSpace => Status::resource_exhausted(e.to_string()),
        KvError::FutureRevision | KvError::Compacted => Status::out_of_range(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

pub fn node_status(e: NodeError) -> Status {
    match e {
        NodeError::Kv(e) => kv_status(e),
        NodeError::Membership(e) => e.status(),
        NodeError::NotLeaderHere | NodeError::BadTransferee => Status::failed_precondition(e.to_string()),
        e => Status::unavailable(e.to_string()),
    }
}
