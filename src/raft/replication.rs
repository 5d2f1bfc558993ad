//! Log replication: the leader's appends and heartbeats, the follower's
//! acceptance, commit, check-quorum and leadership transfer.
//!
//! The leader commits an index once a quorum of voters hold it durably and
//! it is of the leader's own term (Raft §5.4.2); the leader counts itself
//! only for what it has persisted. Appends to a follower are pipelined up to
//! `max_inflight` once its match point is known, one at a time before that.

use super::progress::ProgressState;
use super::{Body, ConflictHint, Message, NodeId, Raft, RaftError};
use crate::proto::Entry;

impl Raft {
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_recently_active() {
                tracing::info!(id = self.id, term = self.term, "stepping down: no quorum heard from");
                let term = self.term;
                self.become_follower(term, super::NONE);
                return;
            }
            // A transfer that did not finish within an election timeout is abandoned.
            self.transferee = None;
            if !self.is_voter(self.id) {
                tracing::info!(id = self.id, term = self.term, "stepping down: no longer a voter");
                let term = self.term;
                self.become_follower(term, super::NONE);
                return;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Whether a quorum of voters (this one included) was heard from since the
    /// last check; starts the next check period.
    fn quorum_recently_active(&mut self) -> bool {
        let mut active = usize::from(self.is_voter(self.id));
        for (id, pr) in self.progress.iter_mut() {
            if pr.recent_active && self.conf.voters.contains(id) {
                active += 1;
            }
            pr.recent_active = false;
        }
        active >= self.quorum()
    }

    pub(super) fn step_leader(&mut self, m: Message) {
        let from = m.from;
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        match m.body {
            Body::AppendResponse { reject: true, index, hint: reported } => {
                let hint = reported.unwrap_or(ConflictHint { term: 0, index });
                // A log that ends before what its owner acknowledged: the
                // follower's disk lost synced writes (a torn or restored
                // write-ahead log). Rejections at or below the match point
                // would otherwise look stale forever and the follower would
                // never catch up; replicating from where its log ends is safe.
                if let Some(ConflictHint { term: 0, index: end }) = reported
                    && end >= 1
                    && end <= pr.matched
                {
                    let last = end - 1;
                    tracing::warn!(
                        id = self.id,
                        follower = from,
                        acknowledged = pr.matched,
                        last,
                        "follower lost entries it had acknowledged; replicating them again"
                    );
                    pr.lost_entries(last);
                    self.send_append(from, false);
                    return;
                }
                let next = self.log.next_after_conflict(index, hint);
                let pr = self.progress.get_mut(&from).expect("checked above");
                if pr.rejected(index, next) {
                    self.send_append(from, false);
                }
            }
            Body::AppendResponse { reject: false, index, .. } => self.handle_append_ack(from, index),
            Body::HeartbeatResponse { read_seq } => {
                pr.probe_sent = false;
                if pr.state == ProgressState::Replicate && pr.inflight.len() >= self.cfg.max_inflight {
                    // An append may have been lost: free a slot to make progress.
                    pr.inflight.pop_front();
                }
                if pr.matched < self.log.last_index() {
                    // Possibly empty: a lost append shows up as a rejection.
                    self.send_append(from, true);
                }
                self.record_read_ack(from, read_seq);
            }
            Body::ReadIndex { ctx } => self.handle_read_request(from, ctx),
            _ => {}
        }
    }

    fn handle_append_ack(&mut self, from: NodeId, index: u64) {
        let first_index = self.log.first_index();
        let pr = self.progress.get_mut(&from).expect("caller checked");
        let was_paused = pr.is_paused(self.cfg.max_inflight);
        let news = pr.acknowledged(index);
        // A probe answered at the known match point also settles where the
        // follower's log matches.
        let probe_settled = pr.state == ProgressState::Probe && pr.matched == index;
        if !news && !probe_settled {
            if was_paused && !pr.is_paused(self.cfg.max_inflight) {
                self.send_append(from, false);
            }
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot { pending } if pr.matched >= pending || pr.matched + 1 >= first_index => {
                pr.become_probe();
                pr.become_replicate();
            }
            _ => {}
        }
        if self.maybe_commit() {
            self.broadcast_append();
        } else {
            while self.send_append(from, false) {}
        }
        if self.transferee == Some(from) && self.progress[&from].matched == self.log.last_index() {
            self.send(from, Body::TimeoutNow);
        }
    }

    /// Advances the commit index to what a quorum of voters holds durably, if
    /// that entry is of the current term. Returns whether it moved.
    pub(super) fn maybe_commit(&mut self) -> bool {
        let mut matched: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|&id| if id == self.id { self.log.persisted } else { self.progress.get(&id).map_or(0, |p| p.matched) })
            .collect();
        if matched.is_empty() {
            return false;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let index = matched[self.quorum() - 1];
        if index > self.log.committed && self.log.term(index) == Some(self.term) {
            self.log.commit_to(index);
            self.release_reads_awaiting_commit();
            return true;
        }
        false
    }

    /// Sends `to` the entries after its `next`, or the snapshot if they were
    /// compacted away. Returns whether a message was sent.
    pub(super) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&to) else { return false };
        if pr.is_paused(self.cfg.max_inflight) {
            return false;
        }
        let prev_index = pr.next - 1;
        debug_assert!(prev_index <= self.log.last_index(), "next index past the log");
        let Some(prev_term) = self.log.term(prev_index) else {
            self.send_snapshot(to);
            return false;
        };
        let entries = if pr.next <= self.log.last_index() {
            self.log.entries_from(pr.next, self.cfg.max_msg_bytes)
        } else {
            Vec::new()
        };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let last = entries.last().map_or(prev_index, |e| e.index);
        let commit = self.log.committed;
        self.progress.get_mut(&to).expect("checked above").sent(last);
        self.send(to, Body::Append { prev_index, prev_term, entries, commit });
        true
    }

    fn send_snapshot(&mut self, to: NodeId) {
        let Some(meta) = self.snapshot.clone() else {
            tracing::warn!(id = self.id, to, "follower needs compacted entries but no snapshot is available");
            return;
        };
        self.progress.get_mut(&to).expect("caller checked").become_snapshot(meta.index);
        self.send(to, Body::Snapshot { meta });
    }

    pub(super) fn broadcast_append(&mut self) {
        for id in self.peers() {
            self.send_append(id, true);
        }
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        for id in self.peers() {
            // Never tell a follower to commit past what it is known to hold.
            let commit = self.progress.get(&id).map_or(0, |p| p.matched).min(self.log.committed);
            let read_seq = self.read_seq;
            self.send(id, Body::Heartbeat { commit, read_seq });
        }
    }

    /// Follower side of AppendEntries.
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    ) {
        if prev_index < self.log.committed {
            // Everything up to our commit index matches any leader's log.
            let index = self.log.committed;
            self.send(from, Body::AppendResponse { reject: false, index, hint: None });
            return;
        }
        match self.log.maybe_append(prev_index, prev_term, entries) {
            Ok(Some(last_new)) => {
                self.log.commit_to(commit.min(last_new));
                self.send(from, Body::AppendResponse { reject: false, index: last_new, hint: None });
            }
            Ok(None) => {
                let hint = Some(self.log.conflict_hint(prev_index));
                self.send(from, Body::AppendResponse { reject: true, index: prev_index, hint });
            }
            Err(reason) => {
                tracing::error!(id = self.id, from, reason, "refusing append: it would rewrite committed entries");
            }
        }
    }

    /// Hands leadership to `to`: once its log is caught up it is told to
    /// campaign at once. Proposals are refused meanwhile.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), RaftError> {
        if !self.is_leader() {
            return Err(RaftError::NotLeader { leader: self.leader() });
        }
        if to == self.id || self.transferee == Some(to) {
            return Ok(());
        }
        if !self.is_voter(to) {
            return Err(RaftError::InvalidConfChange(format!("transfer target {to} is not a voter")));
        }
        self.transferee = Some(to);
        self.election_elapsed = 0;
        if self.progress[&to].matched == self.log.last_index() {
            self.send(to, Body::TimeoutNow);
        } else {
            self.send_append(to, false);
        }
        Ok(())
    }
}
