//! Elections: timeouts, pre-vote, votes, and becoming leader.
//!
//! A follower that hears nothing for its randomized timeout first asks for
//! pre-votes (no one changes term for them), and only with a quorum of those
//! starts a real election. Votes go to candidates whose log is at least as up
//! to date (Raft §5.4.1), once per term; a vote leaves only once durable.
//!
//! Two rules keep elections within the configuration in force, as etcd's
//! raft does: a member with committed configuration changes it has not yet
//! applied does not campaign (it would count votes under a configuration
//! the cluster has left, and could win beside a leader of the new one), and
//! a candidate counts only the votes of voters of its configuration.

use super::node::Role;
use super::{Body, Message, NONE, NodeId, Raft};
use crate::proto::Entry;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Campaign {
    PreVote,
    Election,
    /// An election started by TimeoutNow: receivers ignore their leader lease.
    Transfer,
}

impl Raft {
    pub(super) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_election_timeout && self.is_voter(self.id) {
            self.election_elapsed = 0;
            let kind = if self.cfg.pre_vote { Campaign::PreVote } else { Campaign::Election };
            self.campaign(kind);
        }
    }

    /// Starts an election now, as etcd's `Campaign` (MsgHup) does: with a
    /// pre-vote first when configured. Leaders and learners do nothing.
    pub fn campaign_now(&mut self) {
        if self.role != Role::Leader && self.is_voter(self.id) {
            self.campaign(if self.cfg.pre_vote { Campaign::PreVote } else { Campaign::Election });
        }
    }

    pub(super) fn campaign(&mut self, kind: Campaign) {
        if self.has_unapplied_conf_changes() {
            tracing::info!(
                id = self.id,
                term = self.term,
                "not campaigning: committed configuration changes are not applied yet"
            );
            return;
        }
        let term = match kind {
            Campaign::PreVote => {
                // Keep term and vote: a pre-vote changes nothing durable.
                let term = self.term;
                self.reset(term);
                self.role = Role::PreCandidate;
                term + 1
            }
            Campaign::Election | Campaign::Transfer => {
                self.reset(self.term + 1);
                self.role = Role::Candidate;
                self.vote = self.id;
                self.term
            }
        };
        let pre = kind == Campaign::PreVote;
        self.votes.insert(self.id, true);
        if self.tally() {
            self.won(pre);
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let force = kind == Campaign::Transfer;
        for id in self.conf.voters.clone() {
            if id != self.id {
                let body = Body::Vote { pre, force, last_index, last_term };
                self.send_with_term(id, term, body);
            }
        }
    }

    /// Whether a committed entry not yet handed out to be applied changes
    /// the configuration (etcd's `hasUnappliedConfChanges`).
    pub(super) fn has_unapplied_conf_changes(&self) -> bool {
        self.log.slice(self.log.applied + 1, self.log.committed).any(Entry::is_conf_change)
    }

    /// Whether a quorum of voters granted; a quorum of refusals makes this a
    /// follower. Answers from members that are not voters do not count.
    fn tally(&mut self) -> bool {
        let voters = &self.conf.voters;
        let counted = self.votes.iter().filter(|(id, _)| voters.contains(id));
        let (granted, refused) = counted.fold((0, 0), |(g, r), (_, &yes)| if yes { (g + 1, r) } else { (g, r + 1) });
        if granted >= self.quorum() {
            return true;
        }
        if refused > self.conf.voters.len() - self.quorum() {
            let term = self.term;
            self.become_follower(term, NONE);
        }
        false
    }

    fn won(&mut self, pre: bool) {
        if pre {
            self.campaign(Campaign::Election);
        } else {
            self.become_leader();
        }
    }

    pub(super) fn handle_vote(&mut self, m: Message) {
        let Body::Vote { pre, last_index, last_term, .. } = m.body else { return };
        let can_vote = self.vote == m.from || (self.vote == NONE && self.leader == NONE) || (pre && m.term > self.term);
        if can_vote && self.log.is_up_to_date(last_index, last_term) {
            if !pre {
                self.election_elapsed = 0;
                self.vote = m.from;
            }
            // Answer in the candidate's term, so it counts the grant.
            self.send_with_term(m.from, m.term, Body::VoteResponse { pre, granted: true });
        } else {
            self.send(m.from, Body::VoteResponse { pre, granted: false });
        }
    }

    pub(super) fn step_candidate(&mut self, m: Message) {
        match m.body {
            Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                // A leader exists in our term.
                let term = self.term;
                self.become_follower(term, m.from);
                self.step_follower(m);
            }
            Body::VoteResponse { pre, granted } => {
                if pre != (self.role == Role::PreCandidate) {
                    return;
                }
                self.votes.entry(m.from).or_insert(granted);
                if self.tally() {
                    self.won(pre);
                }
            }
            _ => {}
        }
    }

    pub(super) fn become_leader(&mut self) {
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = self.id;
        let next = self.log.last_index() + 1;
        for id in self.peers() {
            let mut pr = super::progress::Progress::new(next);
            // Give every follower a full timeout before check-quorum counts it out.
            pr.recent_active = true;
            self.progress.insert(id, pr);
        }
        // Entries of earlier terms commit only through one of ours (Raft
        // §5.4.2); the no-op commits them without waiting for a client. Any
        // configuration change in the log may still be unapplied.
        self.pending_conf_index = self.log.last_index();
        self.append_entry(Entry::normal(next, term, bytes::Bytes::new()));
        tracing::debug!(id = self.id, term, "became leader");
    }

    pub(super) fn step_follower(&mut self, m: Message) {
        match m.body {
            Body::Append { prev_index, prev_term, entries, commit } => {
                self.heard_from_leader(m.from);
                self.handle_append(m.from, prev_index, prev_term, entries, commit);
            }
            Body::Heartbeat { commit, read_seq } => {
                self.heard_from_leader(m.from);
                self.log.commit_to(commit);
                self.send(m.from, Body::HeartbeatResponse { read_seq });
            }
            Body::Snapshot { meta } => {
                self.heard_from_leader(m.from);
                self.handle_snapshot(m.from, meta);
            }
            Body::TimeoutNow if self.is_voter(self.id) => {
                if self.has_unapplied_conf_changes() {
                    // The leader may hand over just after committing a
                    // change (its own removal): campaign once it is applied.
                    self.transfer_deferred = true;
                } else {
                    self.campaign(Campaign::Transfer);
                }
            }
            Body::ReadIndexResponse { ctx, index } => {
                self.read_states.push(super::ReadState { ctx, index });
            }
            _ => {}
        }
    }

    /// After a Ready was applied: the campaign a TimeoutNow asked for while
    /// configuration changes were unapplied, if they are applied now.
    pub(super) fn maybe_deferred_transfer(&mut self) {
        if self.transfer_deferred && !self.has_unapplied_conf_changes() {
            self.transfer_deferred = false;
            if self.role == Role::Follower && self.is_voter(self.id) {
                self.campaign(Campaign::Transfer);
            }
        }
    }

    fn heard_from_leader(&mut self, leader: NodeId) {
        self.election_elapsed = 0;
        self.leader = leader;
    }
}
