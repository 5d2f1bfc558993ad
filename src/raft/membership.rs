//! Membership: the configuration (voters and learners) travels in the log as
//! `ConfChange` entries carrying the whole new configuration, and takes effect
//! when the driver applies it (as in etcd). Only one change may be pending at
//! a time, and each adds, removes, promotes or demotes a single member, so
//! every two consecutive configurations have overlapping quorums.

use bytes::Bytes;

use crate::proto::{ConfChange, ConfState, Entry};

use super::progress::Progress;
use super::{NONE, NodeId, Raft, RaftError};

impl Raft {
    /// Leader: proposes `conf` as the next configuration, with the driver's
    /// `context` beside it in the entry. Returns its index.
    pub fn propose_conf_change(&mut self, conf: ConfState, context: Bytes) -> Result<u64, RaftError> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.applied {
            return Err(RaftError::ConfChangePending(self.pending_conf_index));
        }
        validate_change(&self.conf, &conf)?;
        let index = self.log.last_index() + 1;
        self.append_entry(Entry::conf_change(index, self.term, &ConfChange { conf: Some(conf), context }));
        self.pending_conf_index = index;
        Ok(index)
    }

    /// Whether a configuration change is proposed and not yet applied.
    pub fn has_pending_conf_change(&self) -> bool {
        self.pending_conf_index > self.log.applied
    }

    /// Makes a committed configuration change take effect. The driver calls
    /// this when it applies a `ConfChange` entry.
    pub fn apply_conf_change(&mut self, conf: ConfState) {
        self.conf = conf;
        if !self.is_leader() {
            return;
        }
        let members: Vec<NodeId> = self.peers();
        self.progress.retain(|id, _| members.contains(id));
        let next = self.log.last_index() + 1;
        for id in members {
            self.progress.entry(id).or_insert_with(|| {
                let mut pr = Progress::new(next);
                pr.recent_active = true;
                pr
            });
        }
        if self.transferee.is_some_and(|t| !self.is_voter(t)) {
            self.transferee = None;
        }
        // The quorum changed, so something may commit now; new members
        // need the log either way.
        self.maybe_commit();
        self.broadcast_pending = true;
        if !self.is_voter(self.id) {
            self.hand_over_leadership();
        }
    }

    /// A leader that is no longer a voter hands leadership to the voter with
    /// the most of its log, so clients see no election timeout; it keeps
    /// leading (refusing proposals) until that voter takes over, and steps
    /// down after an election timeout if none does.
    fn hand_over_leadership(&mut self) {
        let best = self
            .progress
            .iter()
            .filter(|(id, _)| self.conf.voters.contains(id))
            .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
            .map(|(&id, _)| id);
        let Some(to) = best else {
            tracing::info!(id = self.id, "stepping down: no longer a voter");
            let term = self.term;
            self.become_follower(term, NONE);
            return;
        };
        tracing::info!(id = self.id, to, "no longer a voter: handing leadership over");
        self.transferee = None;
        let _ = self.transfer_leader(to);
    }
}

/// A change is valid if it moves exactly one member, and leaves a voter.
fn validate_change(old: &ConfState, new: &ConfState) -> Result<(), RaftError> {
    let invalid = |why: String| Err(RaftError::InvalidConfChange(why));
    if new.voters.is_empty() {
        return invalid("a configuration needs at least one voter".into());
    }
    if new.voters.contains(&NONE) || new.learners.contains(&NONE) {
        return invalid("member id 0 is reserved".into());
    }
    if let Some(id) = new.voters.iter().find(|id| new.learners.contains(id)) {
        return invalid(format!("member {id} cannot be both voter and learner"));
    }
    let role = |c: &ConfState, id: &NodeId| (c.voters.contains(id), c.learners.contains(id));
    let mut ids: Vec<NodeId> =
        old.voters.iter().chain(&old.learners).chain(&new.voters).chain(&new.learners).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    let changed = ids.iter().filter(|id| role(old, id) != role(new, id)).count();
    if changed != 1 {
        return invalid(format!("a change must move exactly one member, this moves {changed}"));
    }
    Ok(())
}
