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

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot, watch};

use super::transport::Transport;
use crate::kv::{KvError, KvStore};
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseOp};
use crate::proto::raftkvpb::Command;
use crate::proto::{ConfState, Entry};
use crate::raft::{Message, NodeId, Raft, RaftError, ReadState, Ready};
use crate::storage::{LogStore, LogWrite, RocksStore, StorageError};

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
    Propose { command: Command, reply: oneshot::Sender<Result<Applied, NodeError>> },
    Range { req: RangeRequest, linearizable: bool, reply: oneshot::Sender<Result<(RangeResponse, i64), NodeError>> },
    Hash { reply: oneshot::Sender<(u32, i64)> },
    Peer(Message),
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
    status: watch::Sender<NodeStatus>,
}

impl Node {
    pub fn new(raft: Raft, store: RocksStore, transport: Transport, status: watch::Sender<NodeStatus>) -> Node {
        Node {
            raft,
            store,
            kv: KvStore::new(),
            transport,
            proposals: HashMap::new(),
            reads_unsent: Vec::new(),
            reads_in_round: HashMap::new(),
            reads_ready: Vec::new(),
            next_read_ctx: 0,
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
    ) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let replay = self.raft.commit_index();
        self.drain_readies()?;
        tracing::info!(
            entries = replay,
            revision = self.kv.revision(),
            took_ms = started.elapsed().as_millis() as u64,
            "recovered the key-value state from the log"
        );
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.raft.tick(),
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    self.handle(request);
                    for _ in 0..MAX_BATCH {
                        match requests.try_recv() {
                            Ok(request) => self.handle(request),
                            Err(_) => break,
                        }
                    }
                }
                _ = stop.changed() => break,
            }
            self.start_read_round();
            self.drain_readies()?;
            self.publish_status();
        }
        tracing::info!("node stopped");
        Ok(())
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Peer(m) => self.raft.step(m),
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

    fn drain_readies(&mut self) -> Result<(), StorageError> {
        while self.raft.has_ready() {
            let rd = self.raft.ready();
            self.handle_ready(rd)?;
            self.raft.advance();
        }
        Ok(())
    }

    fn handle_ready(&mut self, mut rd: Ready) -> Result<(), StorageError> {
        for m in rd.messages.drain(..) {
            self.transport.send(m);
        }
        if rd.must_persist() {
            let write = LogWrite::from_ready(&rd);
            let store = &mut self.store;
            tokio::task::block_in_place(|| store.persist(write))?;
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
        Ok(())
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
