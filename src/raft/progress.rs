//! What the leader knows of each follower's log, and how it replicates to it.
//!
//! A follower is in one of three states (as in etcd's raft):
//! - `Probe`: where its log matches is unknown; one append at a time, then
//!   wait for the answer (or a heartbeat reply) before the next;
//! - `Replicate`: its log matches up to `matched`; appends are pipelined,
//!   at most `max_inflight` unanswered at once;
//! - `Snapshot`: it needs the snapshot at `pending`; nothing is appended until
//!   it reports the install done (or failed).
//!
//! Invariant: `matched < next`.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot { pending: u64 },
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub matched: u64,
    pub next: u64,
    pub state: ProgressState,
    /// In Probe: an append is out and unanswered.
    pub probe_sent: bool,
    /// In Replicate: last index of each unanswered append, oldest first.
    pub inflight: VecDeque<u64>,
    /// Heard from within the current election timeout (for check-quorum).
    pub recent_active: bool,
}

impl Progress {
    pub fn new(next: u64) -> Progress {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
        }
    }

    /// Whether the leader must hold further appends back.
    pub fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= max_inflight,
            ProgressState::Snapshot { .. } => true,
        }
    }

    fn reset(&mut self, state: ProgressState, next: u64) {
        self.state = state;
        self.next = next;
        self.probe_sent = false;
        self.inflight.clear();
    }

    pub fn become_probe(&mut self) {
        // Coming back from a snapshot, the follower has at least the snapshot.
        let next = match self.state {
            ProgressState::Snapshot { pending } => (self.matched + 1).max(pending + 1),
            _ => self.matched + 1,
        };
        self.reset(ProgressState::Probe, next);
    }

    pub fn become_replicate(&mut self) {
        self.reset(ProgressState::Replicate, self.matched + 1);
    }

    pub fn become_snapshot(&mut self, pending: u64) {
        self.reset(ProgressState::Snapshot { pending }, pending + 1);
    }

    /// The snapshot transfer finished: probe from just after it.
    pub fn snapshot_sent(&mut self) {
        if let ProgressState::Snapshot { .. } = self.state {
            self.become_probe();
        }
    }

    /// The snapshot transfer failed: probe from the match index, after the
    /// next heartbeat reply shows the follower is reachable.
    pub fn snapshot_failed(&mut self) {
        if let ProgressState::Snapshot { .. } = self.state {
            self.reset(ProgressState::Probe, self.matched + 1);
            self.probe_sent = true;
        }
    }

    /// Records that an append ending at `last` was sent.
    pub fn sent(&mut self, last: u64) {
        match self.state {
            ProgressState::Replicate => {
                if last >= self.next {
                    self.next = last + 1;
                    self.inflight.push_back(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// The follower acknowledged everything up to `index`. Returns whether
    /// that was news.
    pub fn acknowledged(&mut self, index: u64) -> bool {
        let news = index > self.matched;
        if news {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        news
    }

    /// The follower's log ends at `last`, before what it acknowledged: its
    /// disk lost writes it had synced. Forget the match and probe from there.
    pub fn lost_entries(&mut self, last: u64) {
        self.matched = last;
        self.reset(ProgressState::Probe, last + 1);
    }

    /// The follower rejected an append after `rejected`; try `next` instead.
    /// Returns false if the rejection is stale (answers an older append).
    pub fn rejected(&mut self, rejected: u64, next: u64) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.matched {
                    return false;
                }
                self.become_probe();
                self.next = next.clamp(self.matched + 1, rejected.max(self.matched + 1));
                true
            }
            ProgressState::Probe => {
                if rejected != self.next - 1 {
                    return false;
                }
                self.next = next.clamp(self.matched + 1, rejected.max(self.matched + 1));
                self.probe_sent = false;
                true
            }
            ProgressState::Snapshot { .. } => false,
        }
    }
}
