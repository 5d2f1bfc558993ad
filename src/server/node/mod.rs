//! The driver: one task that owns the Raft core, its RocksDB store and the
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
//! Linearizable reads are batched: all reads that arrive while a ReadIndex
//! round is being set up share one round.
//!
//! Snapshots: once enough entries were applied, an O(1) copy of the map goes
//! to the [`Snapshotter`]'s thread; when the file is durable the core learns
//! it can send it, and the log is compacted behind it. A snapshot received
//! from the leader (already verified and durable) is installed in the same
//! write that resets the log, so a crash leaves the old state or the new one.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot, watch};

use super::ServerError;
use super::transport::Transport;
use crate::kv::{KvError, KvStore};
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseOp};
use crate::proto::raftkvpb::Command;
use crate::proto::{ConfState, Entry, SnapshotMeta};
use crate::raft::{Body, Message, NodeId, Raft, RaftError, ReadState, Ready};
use crate::snapshot::snapshotter::Taken;
use crate::snapshot::{SnapshotError, Snapshotter};
use crate::storage::{LogStore, LogWrite, RocksStore};

/// Most requests taken in one turn of the loop.
const MAX_BATCH: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The write may or may not have been applied: its entry was overtaken
    /// by a snapshot from a new leader.
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    OutcomeUnknown,
    #[error(transparent)]
    Kv(#[from] KvError),
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
        linearizable: bool,
        reply: oneshot::Sender<Result<(RangeResponse, i64), NodeError>>,
    },
    Hash {
        reply: oneshot::Sender<(u32, i64)>,
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
}

/// What the node publishes after every turn, for status and health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub revision: i64,
    pub is_learner: bool,
}

struct PendingRead {
    req: RangeRequest,
    reply: oneshot::Sender<Result<(RangeResponse, i64), NodeError>>,
}

pub struct Node {
    raft: Raft,
    store: RocksStore,
    kv: KvStore,
    transport: Transport,
    /// Proposals by log index, with the term they were proposed in.
    proposals: HashMap<u64, (u64, oneshot::Sender<Result<Applied, NodeError>>)>,
    /// Reads waiting for the next ReadIndex round.
    reads_unsent: Vec<PendingRead>,
    /// Reads in a ReadIndex round, by its ctx.
    reads_in_round: HashMap<u64, Vec<PendingRead>>,
    /// Reads whose round returned, waiting for their index to be applied.
    reads_ready: Vec<(u64, PendingRead)>,
    next_read_ctx: u64,
    snapshotter: Snapshotter,
    /// Snapshots received this turn, waiting for the core to install one
    /// (several may arrive in one batch of requests).
    incoming_snapshots: Vec<(SnapshotMeta, KvStore)>,
    /// This node's own queue, for its snapshot thread to report on.
    requests: mpsc::WeakSender<Request>,
    status: watch::Sender<NodeStatus>,
}

/// What a node starts from.
pub struct NodeParts {
    pub raft: Raft,
    pub store: RocksStore,
    /// The key-value map at the core's applied index.
    pub kv: KvStore,
    pub transport: Transport,
    pub snapshotter: Snapshotter,
    pub requests: mpsc::WeakSender<Request>,
    pub status: watch::Sender<NodeStatus>,
}

impl Node {
    pub fn new(parts: NodeParts) -> Node {
        let NodeParts { raft, store, kv, transport, snapshotter, requests, status } = parts;
        Node {
            raft,
            store,
            kv,
            transport,
            proposals: HashMap::new(),
            reads_unsent: Vec::new(),
            reads_in_round: HashMap::new(),
            reads_ready: Vec::new(),
            next_read_ctx: 0,
            snapshotter,
            incoming_snapshots: Vec::new(),
            requests,
            status,
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
                _ = ticker.tick() => self.raft.tick(),
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
            self.start_read_round();
            self.drain_readies()?;
            // The core took what it installs in this turn's Readies.
            self.incoming_snapshots.clear();
            self.publish_status();
        }
        tracing::info!("node stopped");
        Ok(())
    }

    fn handle(&mut self, request: Request) -> Result<(), ServerError> {
        match request {
            Request::Peer(m) => self.raft.step(m),
            Request::InstallSnapshot { msg, kv, reply } => {
                if let Body::Snapshot { meta } = &msg.body {
                    self.incoming_snapshots.push((meta.clone(), kv));
                }
                self.raft.step(msg);
                let _ = reply.send(self.raft.term());
            }
            Request::SnapshotReport { to, ok } => self.raft.report_snapshot(to, ok),
            Request::SnapshotTaken(result) => self.snapshot_taken(result)?,
            Request::Propose { command, reply } => match self.raft.propose(command.encode_to_vec().into()) {
                Ok(index) => {
                    // An index reused after losing and regaining leadership:
                    // the earlier proposal there was replaced, never applied.
                    if let Some((_, replaced)) = self.proposals.insert(index, (self.raft.term(), reply)) {
                        let _ = replaced.send(Err(NodeError::LeaderChanged));
                    }
                }
                Err(RaftError::NotLeader { leader }) => {
                    let _ = reply.send(Err(NodeError::NotLeader { leader }));
                }
                Err(_) => {
                    let _ = reply.send(Err(NodeError::NoLeader));
                }
            },
            Request::Range { req, linearizable: false, reply } => {
                let _ = reply.send(self.serve_range(&req));
            }
            Request::Range { req, linearizable: true, reply } => self.reads_unsent.push(PendingRead { req, reply }),
            Request::Hash { reply } => {
                let _ = reply.send((self.kv.hash(), self.kv.revision()));
            }
        }
        Ok(())
    }

    fn serve_range(&self, req: &RangeRequest) -> Result<(RangeResponse, i64), NodeError> {
        Ok((self.kv.range(req)?, self.kv.revision()))
    }

    /// One ReadIndex round for every read that arrived since the last one.
    fn start_read_round(&mut self) {
        if self.reads_unsent.is_empty() {
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        let reads = std::mem::take(&mut self.reads_unsent);
        match self.raft.read_index(Bytes::copy_from_slice(&ctx.to_be_bytes())) {
            Ok(()) => {
                self.reads_in_round.insert(ctx, reads);
            }
            Err(_) => {
                for read in reads {
                    let _ = read.reply.send(Err(NodeError::NoLeader));
                }
            }
        }
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
            self.transport.send(m);
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
            let write = LogWrite::from_ready(&rd);
            let store = &mut self.store;
            tokio::task::block_in_place(|| store.persist(write))?;
        }
        if let (Some(kv), Some(meta)) = (installing, &rd.snapshot) {
            self.kv = kv;
            self.snapshot_installed(meta);
        }
        for m in rd.persisted_messages.drain(..) {
            self.transport.send(m);
        }
        for entry in std::mem::take(&mut rd.committed_entries) {
            self.apply(entry);
        }
        for ReadState { ctx, index } in std::mem::take(&mut rd.read_states) {
            let ctx = u64::from_be_bytes(ctx.as_ref().try_into().unwrap_or_default());
            for read in self.reads_in_round.remove(&ctx).unwrap_or_default() {
                self.reads_ready.push((index, read));
            }
        }
        self.serve_applied_reads();
        self.maybe_snapshot();
        Ok(())
    }

    /// Starts a snapshot if enough was applied since the last one.
    fn maybe_snapshot(&mut self) {
        let applied = self.raft.applied_index();
        if !self.snapshotter.due(applied, self.kv.len()) {
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
        tracing::info!(
            index = taken.meta.index,
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
            let store = &mut self.store;
            tokio::task::block_in_place(|| store.compact(&point))?;
            self.raft.compact(to);
            tracing::info!(up_to = to, "log compacted");
        }
        self.snapshotter.prune();
        Ok(())
    }

    /// The leader's snapshot replaced this member's state and log.
    fn snapshot_installed(&mut self, meta: &SnapshotMeta) {
        tracing::info!(index = meta.index, term = meta.term, keys = self.kv.len(), "installed the leader's snapshot");
        self.snapshotter.installed(meta.index);
        self.snapshotter.prune();
        // Proposals from a lost leadership whose entries the snapshot covers:
        // they may or may not be in it.
        let covered: Vec<u64> = self.proposals.keys().copied().filter(|&i| i <= meta.index).collect();
        for index in covered {
            if let Some((_, reply)) = self.proposals.remove(&index) {
                let _ = reply.send(Err(NodeError::OutcomeUnknown));
            }
        }
    }

    fn apply(&mut self, entry: Entry) {
        if entry.is_conf_change() {
            match ConfState::decode(entry.data.clone()) {
                Ok(conf) => self.raft.apply_conf_change(conf),
                Err(e) => tracing::error!(index = entry.index, "undecodable configuration change: {e}"),
            }
            return;
        }
        if entry.data.is_empty() {
            return; // a leader's no-op
        }
        let result = match Command::decode(entry.data.clone()) {
            Ok(command) => self.kv.apply(&command),
            Err(e) => {
                // Every member decodes the same bytes the same way, so every
                // member refuses it alike.
                tracing::error!(index = entry.index, "undecodable command: {e}");
                Err(KvError::EmptyCommand)
            }
        };
        if let Some((term, reply)) = self.proposals.remove(&entry.index) {
            let answer = if term == entry.term {
                Ok(Applied { result, revision: self.kv.revision(), term: self.raft.term() })
            } else {
                Err(NodeError::LeaderChanged)
            };
            let _ = reply.send(answer);
        }
    }

    fn serve_applied_reads(&mut self) {
        let applied = self.raft.applied_index();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.reads_ready).into_iter().partition(|(index, _)| *index <= applied);
        self.reads_ready = waiting;
        for (_, read) in ready {
            let _ = read.reply.send(self.serve_range(&read.req));
        }
    }

    fn publish_status(&mut self) {
        let status = NodeStatus {
            leader: self.raft.leader(),
            term: self.raft.term(),
            commit: self.raft.commit_index(),
            applied: self.raft.applied_index(),
            revision: self.kv.revision(),
            is_learner: self.raft.conf().learners.contains(&self.raft.id()),
        };
        let previous = self.status.borrow().clone();
        if previous.leader != status.leader {
            match status.leader {
                Some(leader) => tracing::info!(leader = format!("{leader:x}"), term = status.term, "leader elected"),
                None => tracing::info!(term = status.term, "no leader"),
            }
        }
        if previous.term != status.term || previous.leader != status.leader {
            // The core drops ReadIndex rounds when leadership changes.
            for read in self.reads_in_round.drain().flat_map(|(_, reads)| reads) {
                let _ = read.reply.send(Err(NodeError::LeaderChanged));
            }
        }
        if previous != status {
            self.status.send_replace(status);
        }
    }
}
