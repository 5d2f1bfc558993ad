//! Linearizable reads (ReadIndex) and serving reads off the loop.
//!
//! Reads that arrive while no round is being set up share the next ReadIndex
//! round. Each round's context is this process's nonce (start time and pid) and a sequence
//! number, so an answer meant for an earlier process of this member (same
//! member id, counter restarted) can never release a read of this one. A
//! round has a deadline in ticks: the transport may drop the request or its
//! answer (full queue, broken stream), and then its reads are failed as
//! retryable instead of waiting forever. A read is served once its index is
//! applied, from an O(1) clone of the map, so a range over a large map never
//! holds the Raft loop: only single-key reads, which cost a lookup, are
//! answered on the loop itself.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::NodeError;
use crate::kv::{KvError, KvStore};
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse};
use crate::proto::raftkvpb::AuthStamp;
use crate::raft::Raft;

pub type RangeReply = oneshot::Sender<Result<(RangeResponse, i64), NodeError>>;

pub struct PendingRead {
    pub req: RangeRequest,
    /// Whose read it is, checked against the permissions of the state it
    /// reads (None: the server's own).
    pub reader: Option<AuthStamp>,
    pub reply: RangeReply,
}

struct Round {
    started: u64,
    reads: Vec<PendingRead>,
}

pub struct Reads {
    /// Unique per process: tells this process's rounds from an earlier one's.
    nonce: u64,
    next_seq: u64,
    /// Ticks a round may take before its reads are failed as retryable.
    round_ticks: u64,
    unsent: Vec<PendingRead>,
    in_round: HashMap<u64, Round>,
    /// Reads whose round returned, with the index they wait to see applied.
    ready: Vec<(u64, PendingRead)>,
    runtime: Handle,
}

impl Reads {
    pub fn new(nonce: u64, round_ticks: u64, runtime: Handle) -> Reads {
        Reads {
            nonce,
            next_seq: 0,
            round_ticks: round_ticks.max(1),
            unsent: Vec::new(),
            in_round: HashMap::new(),
            ready: Vec::new(),
            runtime,
        }
    }

    /// Reads queued for the next round.
    pub fn unsent(&self) -> usize {
        self.unsent.len()
    }

    pub fn queue(&mut self, read: PendingRead) {
        self.unsent.push(read);
    }

    fn ctx(&self, seq: u64) -> Bytes {
        let mut ctx = BytesMut::with_capacity(16);
        ctx.put_u64(self.nonce);
        ctx.put_u64(seq);
        ctx.freeze()
    }

    /// The round a context names, if it is one of this process's.
    fn seq_of(&self, ctx: &[u8]) -> Option<u64> {
        let (nonce, seq) = ctx.split_at_checked(8)?;
        let nonce = u64::from_be_bytes(nonce.try_into().ok()?);
        (nonce == self.nonce).then(|| seq.try_into().ok().map(u64::from_be_bytes)).flatten()
    }

    /// One ReadIndex round for every read queued since the last one.
    pub fn start_round(&mut self, raft: &mut Raft, now: u64) {
        if self.unsent.is_empty() {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let reads = std::mem::take(&mut self.unsent);
        match raft.read_index(self.ctx(seq)) {
            Ok(()) => {
                self.in_round.insert(seq, Round { started: now, reads });
            }
            Err(_) => fail(reads, NodeError::NoLeader),
        }
    }

    /// The core confirmed a round at `index`; unknown contexts are ignored.
    pub fn round_done(&mut self, ctx: &[u8], index: u64) {
        let Some(seq) = self.seq_of(ctx) else {
            tracing::debug!("ignored a read index answer for another process or round");
            return;
        };
        if let Some(round) = self.in_round.remove(&seq) {
            self.ready.extend(round.reads.into_iter().map(|r| (index, r)));
        }
    }

    /// Fails the reads of rounds past their deadline: their request or
    /// answer was lost. The caller retries them in a new round.
    pub fn expire(&mut self, now: u64) {
        let deadline = self.round_ticks;
        let lost: Vec<u64> =
            self.in_round.iter().filter(|(_, r)| now.saturating_sub(r.started) >= deadline).map(|(&s, _)| s).collect();
        for seq in lost {
            if let Some(round) = self.in_round.remove(&seq) {
                tracing::debug!(seq, reads = round.reads.len(), "read index round lost");
                fail(round.reads, NodeError::ReadIndexLost);
            }
        }
    }

    /// The core drops its rounds when leadership changes: so do we.
    pub fn leader_changed(&mut self) {
        for (_, round) in self.in_round.drain() {
            fail(round.reads, NodeError::LeaderChanged);
        }
    }

    /// Serves every read whose index is applied, from `kv`.
    pub fn serve_applied(&mut self, applied: u64, kv: &KvStore) {
        if self.ready.is_empty() {
            return;
        }
        let (now, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.ready).into_iter().partition(|(i, _)| *i <= applied);
        self.ready = later;
        for (_, read) in now {
            self.serve(kv, read);
        }
    }

    /// Answers a read from `kv`: a single key here, a range on a blocking
    /// thread from a clone (O(1)) of the map.
    pub fn serve(&self, kv: &KvStore, read: PendingRead) {
        if read.req.range_end.is_empty() {
            let answer = range(kv, &read);
            let _ = read.reply.send(answer);
            return;
        }
        let kv = kv.clone();
        self.runtime.spawn_blocking(move || {
            let answer = range(&kv, &read);
            let _ = read.reply.send(answer);
        });
    }

    /// etcd's HashKV of `kv` at `revision`, on a blocking thread: the hash,
    /// the store's revision and its compaction point.
    pub fn hash(&self, kv: &KvStore, revision: i64, reply: oneshot::Sender<Result<(u32, i64, i64), KvError>>) {
        let kv = kv.clone();
        self.runtime.spawn_blocking(move || {
            let _ = reply.send(kv.hash_kv(revision).map(|(hash, compacted)| (hash, kv.revision(), compacted)));
        });
    }

    /// Reads waiting in some stage: for tests and status.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.unsent.len() + self.in_round.values().map(|r| r.reads.len()).sum::<usize>() + self.ready.len()
    }
}

fn range(kv: &KvStore, read: &PendingRead) -> Result<(RangeResponse, i64), NodeError> {
    if let Some(reader) = &read.reader {
        let user = Some(reader.user.as_str()).filter(|u| !u.is_empty());
        crate::auth::requests::check_range(kv.auth(), user, &read.req).map_err(KvError::Auth)?;
    }
    Ok((kv.range(&read.req)?, kv.revision()))
}

fn fail(reads: Vec<PendingRead>, e: NodeError) {
    for read in reads {
        let _ = read.reply.send(Err(e.clone()));
    }
}
