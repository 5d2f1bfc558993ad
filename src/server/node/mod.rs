//! The driver: one loop that owns the Raft core, its RocksDB store and the
//! key-value state machine, and joins them to the network and the clients.
//!
//! Each turn of the loop takes a tick or a batch of requests, then works off
//! the core's Readies: messages that may leave at once go out (the leader's
//! appends travel while it writes its own log), the Ready's entries and hard
//! state are written as one synced batch (every proposal that arrived during
//! the previous write rides in this one: group commit), the messages that
//! promise durability follow, committed entries are applied and their waiting
//! clients answered, and linearizable reads whose index is applied are served.
//!
//! The loop runs on a thread of its own (see [`super::serve`]), so its
//! synced writes block nothing else, and nothing else (a large response being
//! encoded, a burst of connections) delays its ticks. Work that grows with
//! the map (ranges, hashing) is served from an O(1) clone on blocking threads
//! ([`reads`]); waiting writes are answered by the rules in [`proposals`].
//!
//! Snapshots: once enough entries were applied, an O(1) copy of the map goes
//! to the [`Snapshotter`]'s thread; when the file is durable the core learns
//! it can send it, and the log is compacted behind it. A snapshot received
//! from the leader (already verified and durable) is installed in the same
//! write that resets the log, so a crash leaves the old state or the new one.

mod leases;
mod proposals;
mod reads;
#[cfg(test)]
mod tests;

use std::time::Duration;

use prost::Message as _;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};

use super::ServerError;
use super::membership::{self, MembershipError, rules::ClusterView};
use super::transport::Outbox;
use crate::kv::{KvError, KvStore};
use crate::proto::etcdserverpb::{LeaseTimeToLiveResponse, RangeRequest, RangeResponse, ResponseOp};
use crate::proto::raftkvpb::{Command, MemberChange, command};
use crate::proto::{ConfChange, ConfState, Entry, SnapshotMeta};
use crate::raft::{Body, Message, NodeId, Raft, RaftError, ReadState, Ready};
use crate::snapshot::snapshotter::Taken;
use crate::snapshot::{SnapshotError, Snapshotter};
use crate::storage::{LogStore, LogWrite, RocksStore};
use proposals::Proposals;
use reads::{PendingRead, Reads};

/// Most requests taken in one turn of the loop.
const MAX_BATCH: usize = 4096;

/// A loop turn or synced log write slower than this is logged: it delays
/// every write and heartbeat behind it.
const SLOW_TURN: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("etcdserver: no leader")]
    NoLeader,
    /// Certain: the write was not appended, or another term's entry was
    /// applied at its index; a read's round ended with the leadership.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// A read's ReadIndex round got no answer in time (a message was lost):
    /// nothing happened, and the read can be asked again.
    #[error("etcdserver: request timed out, the leader did not confirm the read")]
    ReadIndexLost,
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The write may or may not have been applied: its entry was overtaken
    /// by a snapshot from a new leader. etcd's text for the same case.
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    OutcomeUnknown,
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// MoveLeader sent to a member that does not lead (etcd's text).
    #[error("etcdserver: not leader")]
    NotLeaderHere,
    #[error("etcdserver: bad leader transferee")]
    BadTransferee,
    /// Certain: not appended, another change is still being applied.
    #[error("etcdserver: a configuration change is still in progress")]
    ConfChangePending,
}

/// The outcome of an applied command.
#[derive(Debug)]
pub struct Applied {
    pub result: Result<ResponseOp, KvError>,
    pub revision: i64,
    pub term: u64,
}

pub enum Request {
    Propose {
        command: Command,
        reply: oneshot::Sender<Result<Applied, NodeError>>,
    },
    Range {
        req: RangeRequest,
        /// Whose read it is (None: the server's own, unchecked).
        reader: Option<crate::proto::raftkvpb::AuthStamp>,
        linearizable: bool,
        reply: oneshot::Sender<Result<(RangeResponse, i64), NodeError>>,
    },
    Hash {
        revision: i64,
        reply: oneshot::Sender<Result<(u32, i64, i64), KvError>>,
    },
    /// The applied state and the point it is at, for a snapshot to save.
    SnapshotPoint {
        reply: oneshot::Sender<(KvStore, SnapshotMeta)>,
    },
    /// Hand leadership to `to` (this member must lead); answered once the
    /// transfer started.
    TransferLeader {
        to: NodeId,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Peer(Message),
    /// A verified, durable snapshot from the leader; `reply` gets the term.
    InstallSnapshot {
        msg: Message,
        kv: KvStore,
        reply: oneshot::Sender<u64>,
    },
    /// A snapshot transfer to `to` ended.
    SnapshotReport {
        to: NodeId,
        ok: bool,
    },
    /// The background snapshot job ended.
    SnapshotTaken(Result<Taken, SnapshotError>),
    /// A peer refused this member as removed from the cluster.
    Removed {
        by: NodeId,
    },
    /// A lease keep-alive (leader only): the TTL the lease now has, 0 if
    /// it does not exist.
    LeaseRenew {
        id: i64,
        reply: oneshot::Sender<Result<i64, NodeError>>,
    },
    /// etcd's LeaseTimeToLive (leader only).
    LeaseTimeToLive {
        id: i64,
        keys: bool,
        reply: oneshot::Sender<Result<LeaseTimeToLiveResponse, NodeError>>,
    },
}

/// What the node publishes after every turn, for status and health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub revision: i64,
    /// The oldest revision reads may ask for.
    pub compact_revision: i64,
    pub is_learner: bool,
    /// The configuration in force.
    pub conf: ConfState,
}

pub struct Node {
    raft: Raft,
    store: RocksStore,
    kv: KvStore,
    outbox: Box<dyn Outbox>,
    proposals: Proposals,
    reads: Reads,
    /// Ticks since start: the clock of read rounds' deadlines.
    ticks: u64,
    snapshotter: Snapshotter,
    /// Snapshots received this turn, waiting for the core to install one
    /// (several may arrive in one batch of requests).
    incoming_snapshots: Vec<(SnapshotMeta, KvStore)>,
    /// This node's own queue, for its snapshot thread to report on.
    requests: mpsc::WeakSender<Request>,
    status: watch::Sender<NodeStatus>,
    /// The applied key-value state, for watchers: an O(1) copy per change.
    applied: watch::Sender<KvStore>,
    /// The tick each peer was last heard from: who counts as connected.
    last_heard: std::collections::HashMap<NodeId, u64>,
    election_ticks: u64,
    max_learners: usize,
    /// The tick this member learned it was removed from the cluster.
    removed_at: Option<u64>,
    /// A peer refused this member as removed: the others applied the removal.
    removal_confirmed: bool,
    /// When leases expire: only on a leader whose clock has started.
    lessor: Option<super::lease::Lessor>,
    lease_checkpoint_interval: Duration,
    /// Renewals answered once this turn's reset of their leases' recorded
    /// remaining TTL is applied.
    waiting_renewals: Vec<leases::WaitingRenewal>,
    /// What the lease clock reads (a test sets its own).
    clock: leases::Clock,
    runtime: Handle,
    metrics: std::sync::Arc<super::metrics::Metrics>,
    /// On a leader: each follower's lag gauge, labelled once.
    lag_gauges: std::collections::HashMap<NodeId, prometheus::IntGauge>,
}

/// What a node starts from.
pub struct NodeParts {
    pub raft: Raft,
    pub store: RocksStore,
    /// The key-value map at the core's applied index.
    pub kv: KvStore,
    pub outbox: Box<dyn Outbox>,
    pub snapshotter: Snapshotter,
    pub requests: mpsc::WeakSender<Request>,
    pub status: watch::Sender<NodeStatus>,
    /// Where the applied key-value state is published, for watchers.
    pub applied: watch::Sender<KvStore>,
    /// The server's runtime, whose blocking threads serve large reads.
    pub runtime: Handle,
    /// Ticks a ReadIndex round may take before its reads are retried.
    pub read_round_ticks: u64,
    /// Ticks of an election timeout: a peer heard from within one counts as
    /// connected for the membership rules.
    pub election_ticks: u64,
    pub max_learners: usize,
    pub lease_checkpoint_interval: Duration,
    pub metrics: std::sync::Arc<super::metrics::Metrics>,
}

impl Node {
    pub fn new(parts: NodeParts) -> Node {
        let NodeParts {
            raft,
            store,
            kv,
            outbox,
            snapshotter,
            requests,
            status,
            applied,
            runtime,
            read_round_ticks,
            election_ticks,
            max_learners,
            lease_checkpoint_interval,
            metrics,
        } = parts;
        // Unique per process, so no answer to an earlier process's read round
        // can match one of ours (etcd's request ids mix in the start time too).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let nonce = now ^ (u64::from(std::process::id()) << 32);
        Node {
            raft,
            store,
            kv,
            outbox,
            proposals: Proposals::default(),
            reads: Reads::new(nonce, read_round_ticks, runtime.clone()),
            ticks: 0,
            snapshotter,
            incoming_snapshots: Vec::new(),
            requests,
            status,
            applied,
            last_heard: Default::default(),
            election_ticks,
            max_learners,
            removed_at: None,
            removal_confirmed: false,
            lessor: None,
            lease_checkpoint_interval,
            waiting_renewals: Vec::new(),
            clock: leases::real_clock(),
            runtime,
            metrics,
            lag_gauges: std::collections::HashMap::new(),
        }
    }

    /// Runs until `requests` closes or `stop` fires. A storage error stops the
    /// node: it never acknowledges what it could not make durable.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        tick: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), ServerError> {
        let started = std::time::Instant::now();
        let snapshot = self.raft.applied_index();
        let replay = self.raft.commit_index() - snapshot;
        self.drain_readies()?;
        tracing::info!(
            snapshot,
            replayed_entries = replay,
            keys = self.kv.len(),
            revision = self.kv.revision(),
            took_ms = started.elapsed().as_millis() as u64,
            "recovered the key-value state (snapshot plus log tail)"
        );
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick(),
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    self.handle(request)?;
                    for _ in 0..MAX_BATCH {
                        match requests.try_recv() {
                            Ok(request) => self.handle(request)?,
                            Err(_) => break,
                        }
                    }
                }
                _ = stop.changed() => break,
            }
            let working = std::time::Instant::now();
            self.end_turn()?;
            let took = working.elapsed();
            if took > SLOW_TURN {
                tracing::warn!(took_ms = took.as_millis() as u64, "slow Raft loop turn");
            }
            if self.done_after_removal() {
                self.store.mark_removed()?;
                return Err(ServerError::Removed { member: self.raft.id() });
            }
        }
        tracing::info!("node stopped");
        Ok(())
    }

    /// A removed member keeps running only to hand its leadership over: it
    /// stops once another member leads, once its peers refuse it (they
    /// applied the removal, and its hand-over went out before that), or two
    /// election timeouts after it learned of its removal.
    fn done_after_removal(&self) -> bool {
        let Some(at) = self.removed_at else { return false };
        let handed_over = !self.raft.is_leader() && self.raft.leader().is_some_and(|l| l != self.raft.id());
        handed_over || self.removal_confirmed || self.ticks >= at + 2 * self.election_ticks
    }

    fn tick(&mut self) {
        self.raft.tick();
        self.ticks += 1;
        self.reads.expire(self.ticks);
        if self.ticks.is_multiple_of(64) {
            self.proposals.forget_abandoned();
        }
    }

    /// What every turn ends with, whatever its input was.
    fn end_turn(&mut self) -> Result<(), ServerError> {
        if self.reads.unsent() > 0 {
            self.metrics.read_index_batch.observe(self.reads.unsent() as f64);
        }
        self.reads.start_round(&mut self.raft, self.ticks);
        self.tend_leases();
        self.drain_readies()?;
        // The core took what it installs in this turn's Readies.
        self.incoming_snapshots.clear();
        self.publish_status();
        Ok(())
    }

    fn handle(&mut self, request: Request) -> Result<(), ServerError> {
        match request {
            Request::Peer(m) => {
                self.last_heard.insert(m.from, self.ticks);
                self.raft.step(m)
            }
            Request::Removed { by } => {
                if !self.removal_confirmed {
                    tracing::warn!(by = format!("{by:x}"), "a peer says this member was removed from the cluster");
                }
                self.removed_at.get_or_insert(self.ticks);
                self.removal_confirmed = true;
            }
            Request::InstallSnapshot { msg, kv, reply } => {
                if let Body::Snapshot { meta } = &msg.body {
                    self.incoming_snapshots.push((meta.clone(), kv));
                }
                self.raft.step(msg);
                let _ = reply.send(self.raft.term());
            }
            Request::SnapshotReport { to, ok } => self.raft.report_snapshot(to, ok),
            Request::SnapshotTaken(result) => self.snapshot_taken(result)?,
            Request::Propose { command, reply } => {
                let proposed = match &command.request {
                    Some(command::Request::Member(change)) => self.propose_member_change(change, &command),
                    _ => self.raft.propose(command.encode_to_vec().into()).map_err(proposal_error),
                };
                match proposed {
                    Ok(index) => self.proposals.add(index, self.raft.term(), reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::Range { req, reader, linearizable: false, reply } => {
                self.reads.serve(&self.kv, PendingRead { req, reader, reply })
            }
            Request::Range { req, reader, linearizable: true, reply } => {
                self.reads.queue(PendingRead { req, reader, reply })
            }
            Request::Hash { revision, reply } => self.reads.hash(&self.kv, revision, reply),
            Request::SnapshotPoint { reply } => {
                let applied = self.raft.applied_index();
                // The applied index is never below the log's start, whose
                // term the log keeps: the term is always known.
                let term = self.raft.log_term(applied).unwrap_or_default();
                let meta = SnapshotMeta { index: applied, term, conf: Some(self.raft.conf().clone()) };
                let _ = reply.send((self.kv.clone(), meta));
            }
            Request::LeaseRenew { id, reply } => self.renew_lease(id, reply),
            Request::LeaseTimeToLive { id, keys, reply } => {
                let _ = reply.send(self.lease_time_to_live(id, keys));
            }
            Request::TransferLeader { to, reply } => {
                let result = match self.raft.transfer_leader(to) {
                    Ok(()) => Ok(()),
                    Err(RaftError::NotLeader { .. }) => Err(NodeError::NotLeaderHere),
                    Err(_) => Err(NodeError::BadTransferee),
                };
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    fn drain_readies(&mut self) -> Result<(), ServerError> {
        while self.raft.has_ready() {
            let rd = self.raft.ready();
            self.handle_ready(rd)?;
            self.raft.advance();
        }
        Ok(())
    }

    fn handle_ready(&mut self, mut rd: Ready) -> Result<(), ServerError> {
        for m in rd.messages.drain(..) {
            self.outbox.send(m);
        }
        let installing = match &rd.snapshot {
            Some(meta) => {
                let at = self.incoming_snapshots.iter().position(|(m, _)| (m.index, m.term) == (meta.index, meta.term));
                let at = at.ok_or(ServerError::SnapshotMissing { index: meta.index, term: meta.term })?;
                Some(self.incoming_snapshots.swap_remove(at).1)
            }
            None => None,
        };
        if rd.must_persist() {
            // Blocking is right here: this is the loop's own thread.
            let started = std::time::Instant::now();
            self.store.persist(LogWrite::from_ready(&rd))?;
            let took = started.elapsed();
            self.metrics.wal_fsync.observe(took.as_secs_f64());
            self.metrics.backend_commit.observe(took.as_secs_f64());
            if took > SLOW_TURN {
                tracing::warn!(
                    took_ms = took.as_millis() as u64,
                    entries = rd.entries.len(),
                    term = self.raft.term(),
                    "slow synced log write"
                );
            }
        }
        if let (Some(kv), Some(meta)) = (installing, &rd.snapshot) {
            self.kv = kv;
            self.snapshot_installed(meta);
        }
        for m in rd.persisted_messages.drain(..) {
            self.outbox.send(m);
        }
        let committed = std::mem::take(&mut rd.committed_entries);
        if !committed.is_empty() {
            let (applying, entries) = (std::time::Instant::now(), committed.len());
            for entry in committed {
                self.apply(entry);
            }
            let took = applying.elapsed();
            if took > SLOW_TURN {
                self.metrics.slow_apply.inc();
                let took_ms = took.as_millis() as u64;
                tracing::warn!(took_ms, entries, term = self.raft.term(), "slow apply of committed entries");
            }
        }
        for ReadState { ctx, index } in std::mem::take(&mut rd.read_states) {
            self.reads.round_done(&ctx, index);
        }
        self.reads.serve_applied(self.raft.applied_index(), &self.kv);
        self.maybe_snapshot();
        Ok(())
    }

    /// Starts a snapshot if enough was applied since the last one.
    fn maybe_snapshot(&mut self) {
        let applied = self.raft.applied_index();
        if !self.snapshotter.due(applied, self.kv.records_len()) {
            return;
        }
        let Some(term) = self.raft.log_term(applied) else { return };
        let meta = SnapshotMeta { index: applied, term, conf: Some(self.raft.conf().clone()) };
        tracing::debug!(index = applied, keys = self.kv.len(), "taking a snapshot");
        let requests = self.requests.clone();
        self.snapshotter.start(meta, self.kv.clone(), move |result| {
            if let Some(requests) = requests.upgrade() {
                let _ = requests.blocking_send(Request::SnapshotTaken(result));
            }
        });
    }

    /// A snapshot is durable: offer it to followers and compact the log.
    fn snapshot_taken(&mut self, result: Result<Taken, SnapshotError>) -> Result<(), ServerError> {
        let taken = match result {
            Ok(taken) => taken,
            Err(e) => {
                // The log just stays longer; the next one is tried later.
                tracing::error!("snapshot failed: {e}");
                self.snapshotter.finished(None);
                return Ok(());
            }
        };
        self.metrics.snapshot_duration.observe(taken.took.as_secs_f64());
        self.metrics.snapshot_size.set(taken.bytes as i64);
        tracing::info!(
            index = taken.meta.index,
            term = self.raft.term(),
            keys = taken.records,
            bytes = taken.bytes,
            took_ms = taken.took.as_millis() as u64,
            file = %taken.path.display(),
            "snapshot written"
        );
        self.raft.snapshot_available(taken.meta.clone());
        if let Some(to) = self.snapshotter.finished(Some(&taken.meta))
            && to >= self.store.first_index()
        {
            let term = self.store.term(to)?;
            let point = SnapshotMeta { index: to, term, conf: taken.meta.conf.clone() };
            self.store.compact(&point)?;
            self.raft.compact(to);
            tracing::info!(up_to = to, term = self.raft.term(), "log compacted");
        }
        self.snapshotter.prune();
        Ok(())
    }

    /// The leader's snapshot replaced this member's state and log.
    fn snapshot_installed(&mut self, meta: &SnapshotMeta) {
        self.metrics.snapshots_received.inc();
        tracing::info!(
            index = meta.index,
            snapshot_term = meta.term,
            term = self.raft.term(),
            keys = self.kv.len(),
            "installed the leader's snapshot"
        );
        self.snapshotter.installed(meta.index);
        let table = (**self.kv.membership()).clone();
        if !table.members.is_empty() {
            self.outbox.set_members(&table);
        }
        self.snapshotter.prune();
        // Writes waiting at indexes the snapshot covers may or may not be in it.
        self.proposals.covered_by_snapshot(meta.index);
    }

    /// Leader: checks a membership change by etcd's rules and proposes it,
    /// as a configuration change when it changes who votes.
    fn propose_member_change(&mut self, change: &MemberChange, command: &Command) -> Result<u64, NodeError> {
        if !self.raft.is_leader() {
            return Err(NodeError::NotLeader { leader: self.raft.leader() });
        }
        let (ticks, window) = (self.ticks, self.election_ticks);
        let connected = |id: NodeId| self.last_heard.get(&id).is_some_and(|&t| ticks.saturating_sub(t) <= window);
        let matched = |id: NodeId| self.raft.match_index(id).unwrap_or(0);
        let conf = self.raft.conf().clone();
        ClusterView {
            table: self.kv.membership(),
            conf: &conf,
            leader: self.raft.id(),
            connected: &connected,
            matched: &matched,
            last_index: self.raft.last_index(),
            max_learners: self.max_learners,
        }
        .check(change)?;
        match membership::next_conf(&conf, change) {
            Some(next) => {
                if self.raft.has_pending_conf_change() {
                    return Err(NodeError::ConfChangePending);
                }
                self.raft.propose_conf_change(next, change.encode_to_vec().into()).map_err(proposal_error)
            }
            None => self.raft.propose(command.encode_to_vec().into()).map_err(proposal_error),
        }
    }

    /// A committed configuration change: the core's configuration, the
    /// member table and the peer links all move to it.
    fn apply_conf_change(&mut self, change: ConfChange) {
        let Some(conf) = change.conf else { return };
        let old = self.raft.conf().clone();
        let context = (!change.context.is_empty()).then(|| MemberChange::decode(change.context)).transpose();
        let context = context.unwrap_or_else(|e| {
            tracing::error!("undecodable membership context: {e}");
            None
        });
        self.raft.apply_conf_change(conf.clone());
        let table = membership::apply_conf_change(self.kv.membership(), &old, &conf, context.as_ref());
        self.set_membership(table);
        let me = self.raft.id();
        let member = |c: &ConfState| c.voters.contains(&me) || c.learners.contains(&me);
        if member(&old) && !member(&conf) && self.removed_at.is_none() {
            tracing::warn!("this member was removed from the cluster: it stops once it has handed over");
            self.removed_at = Some(self.ticks);
        }
        let hex = |ids: &[u64]| ids.iter().map(|id| format!("{id:x}")).collect::<Vec<_>>().join(",");
        tracing::info!(voters = hex(&conf.voters), learners = hex(&conf.learners), "configuration changed");
    }

    fn set_membership(&mut self, table: crate::proto::Membership) {
        self.outbox.set_members(&table);
        self.kv.set_membership(table);
    }

    /// Applies one committed entry and answers whoever waits at its index:
    /// every kind of entry, so a write whose index went to a leader's no-op
    /// is told at once that it failed.
    fn apply(&mut self, entry: Entry) {
        let (index, term) = (entry.index, entry.term);
        let result = if entry.is_conf_change() {
            match entry.decode_conf_change() {
                Ok(change) => {
                    self.apply_conf_change(change);
                    Some(Ok(ResponseOp::default()))
                }
                Err(e) => {
                    tracing::error!(index, "undecodable configuration change: {e}");
                    None
                }
            }
        } else if entry.data.is_empty() {
            None // a leader's no-op
        } else {
            Some(match Command::decode(entry.data.clone()) {
                Ok(Command { request: Some(command::Request::Member(change)), .. }) => {
                    let table = membership::apply_command(self.kv.membership(), &change);
                    self.set_membership(table);
                    Ok(ResponseOp::default())
                }
                Ok(Command { request: Some(command::Request::Alarm(req)), .. }) => {
                    let (alarms, changed) = super::alarms::apply(self.kv.alarms(), &req);
                    if alarms != **self.kv.alarms() {
                        let raised = alarms.iter().map(super::alarms::describe).collect::<Vec<_>>();
                        tracing::warn!(?raised, "alarms changed");
                    }
                    self.kv.set_alarms(alarms);
                    Ok(super::alarms::answer(&changed))
                }
                Ok(command) => {
                    let result = self.kv.apply(&command);
                    if result.is_ok() {
                        self.lease_applied(&command);
                    }
                    result
                }
                Err(e) => {
                    // Every member decodes the same bytes the same way, so
                    // every member refuses it alike.
                    tracing::error!(index, "undecodable command: {e}");
                    Err(KvError::EmptyCommand)
                }
            })
        };
        let outcome = match result {
            Some(result) => Ok(Applied { result, revision: self.kv.revision(), term: self.raft.term() }),
            // A write is never proposed as a no-op.
            None => Err(NodeError::LeaderChanged),
        };
        self.proposals.applied(index, term, outcome);
    }

    fn publish_status(&mut self) {
        let status = NodeStatus {
            leader: self.raft.leader(),
            term: self.raft.term(),
            commit: self.raft.commit_index(),
            applied: self.raft.applied_index(),
            revision: self.kv.revision(),
            compact_revision: self.kv.compact_revision(),
            is_learner: self.raft.conf().learners.contains(&self.raft.id()),
            conf: self.raft.conf().clone(),
        };
        let previous = self.status.borrow().clone();
        if previous.leader != status.leader {
            match status.leader {
                Some(leader) => {
                    // Counted where it is logged, so the two always agree.
                    self.metrics.leader_changes.inc();
                    tracing::info!(leader = format!("{leader:x}"), term = status.term, "leader elected")
                }
                None => tracing::info!(term = status.term, "no leader"),
            }
        }
        if previous.term != status.term || previous.leader != status.leader {
            self.reads.leader_changed();
        }
        let stale = {
            let kv = self.applied.borrow();
            (kv.revision(), kv.compact_revision()) != (self.kv.revision(), self.kv.compact_revision())
                || !std::sync::Arc::ptr_eq(kv.membership(), self.kv.membership())
                || !std::sync::Arc::ptr_eq(kv.alarms(), self.kv.alarms())
                || !std::sync::Arc::ptr_eq(kv.auth(), self.kv.auth())
        };
        if stale {
            // Watchers read what they need from the copy's history.
            self.applied.send_replace(self.kv.clone());
        }
        if previous != status {
            self.publish_gauges(&previous, &status);
            self.status.send_replace(status);
        }
    }

    /// What `/metrics` reads of the node's own state, set when it changes.
    fn publish_gauges(&mut self, previous: &NodeStatus, status: &NodeStatus) {
        let metrics = &self.metrics;
        metrics.proposals_pending.set(self.proposals.pending_entries() as i64);
        let (first, last) = (self.raft.first_index(), self.raft.last_index());
        metrics.log_entries.set((last + 1).saturating_sub(first) as i64);
        let me = self.raft.id();
        if status.leader == Some(me) {
            for &id in status.conf.voters.iter().chain(&status.conf.learners).filter(|&&id| id != me) {
                let lag = last.saturating_sub(self.raft.match_index(id).unwrap_or(0));
                let gauge = self
                    .lag_gauges
                    .entry(id)
                    .or_insert_with(|| metrics.follower_lag.with_label_values(&[&format!("{id:x}")]));
                gauge.set(lag as i64);
            }
        } else if previous.leader == Some(me) {
            metrics.follower_lag.reset();
            self.lag_gauges.clear();
        }
    }
}

fn proposal_error(e: RaftError) -> NodeError {
    match e {
        RaftError::NotLeader { leader } => NodeError::NotLeader { leader },
        RaftError::ConfChangePending(_) => NodeError::ConfChangePending,
        _ => NodeError::NoLeader,
    }
}
