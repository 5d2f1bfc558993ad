//! Writes waiting for their log entry to be applied, by index.
//!
//! The rule that keeps every answer true: a waiting write is told it failed
//! only when that is certain, which is when an entry of another term is
//! applied at its index (Log Matching: its own entry can then never commit).
//! Everything else that ends the wait without that proof (a snapshot that
//! covers the index, the member stopping) is "outcome unknown".
//!
//! Several writes may wait at one index: a member that lost leadership and
//! won it back appends at indexes where its earlier proposals were truncated
//! from its log, but not necessarily from the others', so a later leader may
//! still commit them. Each keeps waiting until the entry at its index is
//! applied, and the one whose term matches gets the result.

use std::collections::HashMap;

use tokio::sync::oneshot;

use super::{Applied, NodeError};

pub type Reply = oneshot::Sender<Result<Applied, NodeError>>;

struct Waiting {
    term: u64,
    reply: Reply,
}

#[derive(Default)]
pub struct Proposals {
    by_index: HashMap<u64, Vec<Waiting>>,
}

impl Proposals {
    /// A write appended at `index` in `term`.
    pub fn add(&mut self, index: u64, term: u64, reply: Reply) {
        self.by_index.entry(index).or_default().push(Waiting { term, reply });
    }

    /// The entry `(index, term)` was applied with `outcome`: the write that
    /// proposed it (one at most: an index and term name one entry) gets the
    /// outcome, any other waiting there certainly failed.
    pub fn applied(&mut self, index: u64, term: u64, outcome: Result<Applied, NodeError>) {
        let Some(waiting) = self.by_index.remove(&index) else { return };
        let mut outcome = Some(outcome);
        for w in waiting {
            let answer = match outcome.take_if(|_| w.term == term) {
                Some(outcome) => outcome,
                // Another term's entry committed here: this write never will.
                None => Err(NodeError::LeaderChanged),
            };
            let _ = w.reply.send(answer);
        }
    }

    /// A snapshot from the leader replaced the log up to `index`: writes
    /// waiting there may or may not be in it.
    pub fn covered_by_snapshot(&mut self, index: u64) {
        let covered: Vec<u64> = self.by_index.keys().copied().filter(|&i| i <= index).collect();
        for i in covered {
            for w in self.by_index.remove(&i).unwrap_or_default() {
                let _ = w.reply.send(Err(NodeError::OutcomeUnknown));
            }
        }
    }

    /// Forgets writes whose client stopped waiting (it was told "request
    /// timed out"), so a member cut off for long holds no dead senders.
    pub fn forget_abandoned(&mut self) {
        self.by_index.retain(|_, waiting| {
            waiting.retain(|w| !w.reply.is_closed());
            !waiting.is_empty()
        });
    }

    /// Log entries proposed here whose outcome someone still waits for.
    pub fn pending_entries(&self) -> usize {
        self.by_index.len()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_index.values().map(Vec::len).sum()
    }
}
