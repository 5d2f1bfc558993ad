//! The `Raft` state machine: its state, its inputs and its `Ready` output.
//!
//! Inputs are `tick`, `step`, `propose`, `read_index`, `transfer_leader` and
//! the membership calls; each only changes memory and queues output, which the
//! driver collects with `ready` and confirms with `advance`. Given the same
//! seed and the same inputs, a node behaves identically: that is what lets the
//! simulation replay any failure from its seed.
//!
//! Invariants kept here: `term` never decreases; `vote` changes only to grant
//! a vote in the current term (or back to none on a new term); a message that
//! promises durability leaves only after the Ready that made it durable.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::proto::{ConfState, Entry, HardState, SnapshotMeta};

use super::log::RaftLog;
use super::progress::Progress;
use super::read_index::PendingRead;
use super::{Body, Config, Message, NONE, NodeId, RaftError, ReadState, Ready};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// What a node recovers from its store at start-up.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    pub hard_state: HardState,
    /// The log's compaction point: index and term of the entry before the
    /// first one held (0/0 for a log that was never compacted).
    pub offset_index: u64,
    pub offset_term: u64,
    /// The entries after the compaction point, contiguous.
    pub entries: Vec<Entry>,
    /// The configuration in force at the compaction point (for a new cluster,
    /// its initial members).
    pub conf: ConfState,
}

pub struct Raft {
    pub(super) cfg: Config,
    pub(super) id: NodeId,
    pub(super) term: u64,
    pub(super) vote: NodeId,
    pub(super) leader: NodeId,
    pub(super) role: Role,
    pub(super) log: RaftLog,
    pub(super) conf: ConfState,
    /// Leader only: every other member's progress.
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// Candidate only: the answers so far.
    pub(super) votes: BTreeMap<NodeId, bool>,
    pub(super) election_elapsed: u32,
    pub(super) heartbeat_elapsed: u32,
    pub(super) randomized_election_timeout: u32,
    rng: SmallRng,
    /// Leader only: the member leadership is being handed to.
    pub(super) transferee: Option<NodeId>,
    /// Follower: a TimeoutNow arrived while committed configuration changes
    /// were unapplied; campaign once they are.
    pub(super) transfer_deferred: bool,
    /// Index of the newest configuration change that may not be applied yet.
    pub(super) pending_conf_index: u64,
    /// The newest durable snapshot, sent to followers behind the log's start.
    pub(super) snapshot: Option<SnapshotMeta>,
    /// A snapshot received from the leader, to be installed by the driver.
    pub(super) pending_snapshot: Option<SnapshotMeta>,
    // ReadIndex (see read_index.rs).
    pub(super) read_seq: u64,
    pub(super) read_acks: BTreeMap<NodeId, u64>,
    pub(super) pending_reads: VecDeque<PendingRead>,
    pub(super) reads_awaiting_commit: Vec<(NodeId, Bytes)>,
    pub(super) read_states: Vec<ReadState>,
    // Output queues.
    pub(super) msgs: Vec<Message>,
    pub(super) msgs_after_persist: Vec<Message>,
    /// Leader: new entries or a new commit index to replicate at the next Ready.
    pub(super) broadcast_pending: bool,
    /// Leader: reads waiting for a heartbeat round.
    pub(super) read_heartbeat_pending: bool,
    /// The hard state last handed out to persist.
    persisted_hard_state: HardState,
    /// The last entry handed out by the Ready in flight (index, term).
    in_flight: Option<(u64, u64)>,
}

impl Raft {
    /// Builds a member from its recovered state. `applied` is how far the
    /// application's state machine already is (its snapshot's index); the
    /// committed entries after it are handed out again to be applied.
    pub fn new(cfg: Config, state: InitialState, applied: u64) -> Result<Raft, RaftError> {
        cfg.validate()?;
        let InitialState { hard_state, offset_index, offset_term, entries, conf } = state;
        for (i, e) in entries.iter().enumerate() {
            if e.index != offset_index + 1 + i as u64 {
                return Err(RaftError::InitialState(format!(
                    "log is not contiguous: entry {} found where {} was expected",
                    e.index,
                    offset_index + 1 + i as u64
                )));
            }
        }
        let last = offset_index + entries.len() as u64;
        let commit = hard_state.commit.max(offset_index);
        if commit > last {
            return Err(RaftError::InitialState(format!("commit index {commit} is past the last log index {last}")));
        }
        if applied < offset_index || applied > commit {
            return Err(RaftError::InitialState(format!(
                "applied index {applied} is outside [{offset_index}, {commit}]"
            )));
        }
        let log = RaftLog::new(offset_index, offset_term, entries, commit, applied);
        if log.last_term() > hard_state.term {
            return Err(RaftError::InitialState(format!(
                "last log term {} is past the current term {}",
                log.last_term(),
                hard_state.term
            )));
        }
        let rng = SmallRng::seed_from_u64(cfg.seed);
        let mut raft = Raft {
            id: cfg.id,
            cfg,
            term: hard_state.term,
            vote: hard_state.vote,
            leader: NONE,
            role: Role::Follower,
            log,
            conf,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            rng,
            transferee: None,
            transfer_deferred: false,
            pending_conf_index: 0,
            snapshot: None,
            pending_snapshot: None,
            read_seq: 0,
            read_acks: BTreeMap::new(),
            pending_reads: VecDeque::new(),
            reads_awaiting_commit: Vec::new(),
            read_states: Vec::new(),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            broadcast_pending: false,
            read_heartbeat_pending: false,
            persisted_hard_state: HardState { term: hard_state.term, vote: hard_state.vote, commit },
            in_flight: None,
        };
        raft.reset_election_timer();
        Ok(raft)
    }

    // ---- Queries -------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn term(&self) -> u64 {
        self.term
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
    /// The leader this member knows of in its term.
    pub fn leader(&self) -> Option<NodeId> {
        (self.leader != NONE).then_some(self.leader)
    }
    pub fn vote(&self) -> NodeId {
        self.vote
    }
    pub fn commit_index(&self) -> u64 {
        self.log.committed
    }
    pub fn applied_index(&self) -> u64 {
        self.log.applied
    }
    pub fn first_index(&self) -> u64 {
        self.log.first_index()
    }
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }
    pub fn last_term(&self) -> u64 {
        self.log.last_term()
    }
    /// The term of the entry at `index`, if the log still holds it.
    pub fn log_term(&self, index: u64) -> Option<u64> {
        self.log.term(index)
    }
    /// Entries from `lo` to `hi` inclusive that the log still holds.
    pub fn log_entries(&self, lo: u64, hi: u64) -> impl Iterator<Item = &Entry> {
        self.log.slice(lo, hi)
    }
    pub fn conf(&self) -> &ConfState {
        &self.conf
    }
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }
    /// Leader only: a follower's match index.
    pub fn match_index(&self, id: NodeId) -> Option<u64> {
        self.progress.get(&id).map(|p| p.matched)
    }

    pub(super) fn quorum(&self) -> usize {
        self.conf.voters.len() / 2 + 1
    }
    pub(super) fn is_voter(&self, id: NodeId) -> bool {
        self.conf.voters.contains(&id)
    }
    /// Every member but this one: the voters and the learners.
    pub(super) fn peers(&self) -> Vec<NodeId> {
        self.conf.voters.iter().chain(&self.conf.learners).copied().filter(|&id| id != self.id).collect()
    }

    // ---- Inputs --------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, m: Message) {
        if m.to != self.id || m.from == NONE {
            return;
        }
        if m.term > self.term {
            match &m.body {
                Body::Vote { pre, force, .. } => {
                    let in_lease =
                        self.cfg.check_quorum && self.leader != NONE && self.election_elapsed < self.cfg.election_tick;
                    if in_lease && !force {
                        // A leader was heard from recently: this candidate was
                        // cut off, and must not depose a healthy leader.
                        return;
                    }
                    if !pre {
                        self.become_follower(m.term, NONE);
                    }
                }
                Body::VoteResponse { pre: true, granted: true } => {}
                Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                    self.become_follower(m.term, m.from)
                }
                _ => self.become_follower(m.term, NONE),
            }
        } else if m.term < self.term {
            match m.body {
                // A deposed leader that cannot be reached by our votes (they
                // are pre-votes or ignored under its lease) learns our term here.
                Body::Append { .. } | Body::Heartbeat { .. } if self.cfg.check_quorum || self.cfg.pre_vote => {
                    self.send(m.from, Body::AppendResponse { reject: true, index: 0, hint: None });
                }
                Body::Vote { pre: true, .. } => {
                    self.send(m.from, Body::VoteResponse { pre: true, granted: false });
                }
                _ => {}
            }
            return;
        }

        if let Body::Vote { .. } = m.body {
            self.handle_vote(m);
            return;
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower => self.step_follower(m),
        }
    }

    /// Appends a client command. Returns its index in the current term; it is
    /// committed when it comes back in `committed_entries` with that term.
    pub fn propose(&mut self, data: Bytes) -> Result<u64, RaftError> {
        if data.is_empty() {
            return Err(RaftError::EmptyProposal);
        }
        self.check_can_propose()?;
        let index = self.log.last_index() + 1;
        self.append_entry(Entry::normal(index, self.term, data));
        Ok(index)
    }

    pub(super) fn check_can_propose(&self) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader { leader: self.leader() });
        }
        if let Some(to) = self.transferee {
            return Err(RaftError::TransferInProgress(to));
        }
        Ok(())
    }

    /// Leader: appends an entry of the current term and schedules replication.
    pub(super) fn append_entry(&mut self, entry: Entry) {
        self.log.append(entry);
        self.broadcast_pending = true;
    }

    // ---- Output --------------------------------------------------------

    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || self.log.has_unstable()
            || self.hard_state() != self.persisted_hard_state
            || self.log.has_next_committed()
            || !self.read_states.is_empty()
            || self.pending_snapshot.is_some()
            || self.broadcast_pending
            || self.read_heartbeat_pending
    }

    /// Collects the work queued since the last Ready. Call [`Raft::advance`]
    /// once it is done, before the next call.
    pub fn ready(&mut self) -> Ready {
        debug_assert!(self.in_flight.is_none(), "ready() called before advance()");
        if self.broadcast_pending {
            self.broadcast_pending = false;
            self.broadcast_append();
        }
        if self.read_heartbeat_pending {
            self.read_heartbeat_pending = false;
            self.broadcast_heartbeat();
        }
        let hard_state = self.hard_state();
        let before = self.persisted_hard_state;
        let vote_changed = hard_state.term != before.term || hard_state.vote != before.vote;
        let hard_state = (hard_state != before).then(|| {
            self.persisted_hard_state = hard_state;
            hard_state
        });
        let entries = self.log.take_unstable();
        self.in_flight = entries.last().map(|e| (e.index, e.term));
        let snapshot = self.pending_snapshot.take();
        let persisted_messages = std::mem::take(&mut self.msgs_after_persist);
        let sync = vote_changed || snapshot.is_some() || !entries.is_empty() || !persisted_messages.is_empty();
        Ready {
            messages: std::mem::take(&mut self.msgs),
            snapshot,
            entries,
            hard_state,
            persisted_messages,
            committed_entries: self.log.take_committed(),
            read_states: std::mem::take(&mut self.read_states),
            sync,
        }
    }

    /// The last Ready was done: its writes are durable, its messages sent.
    pub fn advance(&mut self) {
        if let Some((index, term)) = self.in_flight.take() {
            self.log.persisted_to(index, term);
            if self.role == Role::Leader && self.maybe_commit() {
                self.broadcast_pending = true;
            }
        }
        self.maybe_deferred_transfer();
    }

    // ---- Role changes --------------------------------------------------

    pub(super) fn reset(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            self.vote = NONE;
        }
        self.leader = NONE;
        self.heartbeat_elapsed = 0;
        self.reset_election_timer();
        self.votes.clear();
        self.progress.clear();
        self.transferee = None;
        self.transfer_deferred = false;
        self.broadcast_pending = false;
        self.read_heartbeat_pending = false;
        // Reads in progress are dropped: their requesters time out and retry.
        self.pending_reads.clear();
        self.reads_awaiting_commit.clear();
        self.read_acks.clear();
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.cfg.election_tick;
        self.randomized_election_timeout = self.rng.random_range(base..2 * base);
    }

    pub(super) fn become_follower(&mut self, term: u64, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    /// Queues a message stamped with the current term.
    pub(super) fn send(&mut self, to: NodeId, body: Body) {
        let term = self.term;
        self.send_with_term(to, term, body);
    }

    pub(super) fn send_with_term(&mut self, to: NodeId, term: u64, body: Body) {
        let msg = Message { from: self.id, to, term, body };
        if msg.body.needs_persist() {
            self.msgs_after_persist.push(msg);
        } else {
            self.msgs.push(msg);
        }
    }

    // ---- Snapshots -----------------------------------------------------

    /// Tells the core a snapshot covering `meta` is durable and can be sent to
    /// followers behind the log's first index.
    pub fn snapshot_available(&mut self, meta: SnapshotMeta) {
        if self.snapshot.as_ref().is_none_or(|s| s.index < meta.index) {
            self.snapshot = Some(meta);
        }
    }

    /// Forgets log entries up to `index`, which a durable snapshot covers.
    /// Returns false (and changes nothing) past what is applied and durable.
    pub fn compact(&mut self, index: u64) -> bool {
        let covered = self.snapshot.as_ref().is_some_and(|s| s.index >= index);
        covered && self.log.compact(index)
    }

    /// Leader: the driver's transfer of a snapshot to `to` finished.
    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        if let Some(pr) = self.progress.get_mut(&to) {
            if ok {
                pr.snapshot_sent();
            } else {
                pr.snapshot_failed();
            }
        }
    }

    /// Follower: install a snapshot the leader announced.
    pub(super) fn handle_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        let committed = self.log.committed;
        if meta.index <= committed {
            self.send(from, Body::AppendResponse { reject: false, index: committed, hint: None });
            return;
        }
        if self.log.match_term(meta.index, meta.term) {
            // We have it all already: just learn that it is committed.
            self.log.commit_to(meta.index);
            let index = self.log.committed;
            self.send(from, Body::AppendResponse { reject: false, index, hint: None });
            return;
        }
        self.log.restore(&meta);
        if let Some(conf) = meta.conf.clone() {
            self.conf = conf;
        }
        self.pending_snapshot = Some(meta.clone());
        self.snapshot_available(meta.clone());
        self.send(from, Body::AppendResponse { reject: false, index: meta.index, hint: None });
    }
}
