//! ReadIndex: linearizable reads without writing to the log (Raft thesis §6.4).
//!
//! The leader records its commit index for the read, then confirms it is
//! still leader by a heartbeat round: each read gets a sequence number, every
//! heartbeat carries the newest one, and a read is safe once a quorum has
//! answered a heartbeat carrying its number or a later one. One round thus
//! confirms every read queued before it. A new leader first waits for an entry
//! of its own term to commit, so its commit index is really the cluster's.

use bytes::Bytes;

use super::{Body, NodeId, Raft, RaftError, ReadState};

#[derive(Debug)]
pub(super) struct PendingRead {
    from: NodeId,
    ctx: Bytes,
    index: u64,
    seq: u64,
}

impl Raft {
    /// Asks for a linearizable read identified by `ctx`. A `ReadState` with
    /// that ctx comes out of a later Ready; reads are dropped (never answered)
    /// if leadership changes meanwhile, so callers need a timeout.
    pub fn read_index(&mut self, ctx: Bytes) -> Result<(), RaftError> {
        if self.is_leader() {
            self.handle_read_request(self.id, ctx);
            return Ok(());
        }
        match self.leader() {
            Some(leader) => {
                self.send(leader, Body::ReadIndex { ctx });
                Ok(())
            }
            None => Err(RaftError::NotLeader { leader: None }),
        }
    }

    pub(super) fn handle_read_request(&mut self, from: NodeId, ctx: Bytes) {
        if self.log.term(self.log.committed) != Some(self.term) {
            self.reads_awaiting_commit.push((from, ctx));
            return;
        }
        let index = self.log.committed;
        if self.conf.voters == [self.id] {
            self.answer_read(from, ctx, index);
            return;
        }
        self.read_seq += 1;
        let seq = self.read_seq;
        self.pending_reads.push_back(PendingRead { from, ctx, index, seq });
        self.read_heartbeat_pending = true;
    }

    pub(super) fn release_reads_awaiting_commit(&mut self) {
        if self.log.term(self.log.committed) == Some(self.term) {
            for (from, ctx) in std::mem::take(&mut self.reads_awaiting_commit) {
                self.handle_read_request(from, ctx);
            }
        }
    }

    pub(super) fn record_read_ack(&mut self, from: NodeId, seq: u64) {
        let acked = self.read_acks.entry(from).or_default();
        *acked = (*acked).max(seq);
        while let Some(read) = self.pending_reads.front() {
            let acks = self
                .conf
                .voters
                .iter()
                .filter(|&&id| id == self.id || self.read_acks.get(&id).is_some_and(|&s| s >= read.seq))
                .count();
            if acks < self.quorum() {
                break;
            }
            let read = self.pending_reads.pop_front().expect("front exists");
            self.answer_read(read.from, read.ctx, read.index);
        }
    }

    fn answer_read(&mut self, from: NodeId, ctx: Bytes, index: u64) {
        if from == self.id {
            self.read_states.push(ReadState { ctx, index });
        } else {
            self.send(from, Body::ReadIndexResponse { ctx, index });
        }
    }
}
