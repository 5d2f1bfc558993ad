//! Membership: the configuration (voters and learners) travels in the log as
//! `ConfChange` entries carrying the whole new configuration, and takes effect
//! when the driver applies it (as in etcd). Only one change may be pending at
//! a time, and each adds, removes, promotes or demotes a single member, so
//! every two consecutive configurations have overlapping quorums.

use prost::Message as _;

use crate::proto::{ConfState, Entry, EntryType};

use super::progress::Progress;
use super::{NONE, NodeId, Raft, RaftError};

impl Raft {
    /// Leader: proposes `conf` as the next configuration. Returns its index.
    pub fn propose_conf_change(&mut self, conf: ConfState) -> Result<u64, RaftError> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.applied {
            return Err(RaftError::ConfChangePending(self.pending_conf_index));
        }
        validate_change(&self.conf, &conf)?;
        let index = self.log.last_index() + 1;
        let data = conf.encode_to_vec().into();
        self.append_entry(Entry { index, term: self.term, entry_type: EntryType::EntryConfChange as i32, data });
        self.pending_conf_index = index;
        Ok(index)
    }

    /// Makes a committed configuration change take effect. The driver calls
    /// this when it applies a `ConfChange` entry.
    pub fn apply_conf_change(&mut self, conf: ConfState) {
        self.conf = conf;
        if !self.is_leader() {
            return;
        }
        if !self.is_voter(self.id) {
            tracing::info!(id = self.id, "stepping down: no longer a voter");
            let term = self.term;
            self.become_follower(term, NONE);
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
