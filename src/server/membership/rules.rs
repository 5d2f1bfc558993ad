//! etcd's checks before a membership change is proposed (its
//! `--strict-reconfig-check`, on by default): the leader refuses a change
//! that would leave fewer started, connected voters than a quorum, a peer URL
//! in use, an unknown or removed id, promoting a voter or a learner behind
//! the leader, and more learners than allowed. A refused change is never
//! proposed, so it changes nothing.
//!
//! Like etcd, an addition is also refused while any voter is out of touch
//! ("unhealthy cluster"): a failed member is removed first, then replaced.

use crate::proto::raftkvpb::{MemberChange, member_change};
use crate::proto::{ConfState, Membership};

use super::{MembershipError, check_urls, is_removed, record};

/// A learner counts as in sync once it holds this share of the leader's log
/// (etcd's `readyPercent`).
const READY_SHARE: f64 = 0.9;

/// What the leader knows when it checks a change.
pub struct ClusterView<'a> {
    pub table: &'a Membership,
    pub conf: &'a ConfState,
    /// The leader's own id.
    pub leader: u64,
    /// Whether the leader heard from this member within an election timeout.
    pub connected: &'a dyn Fn(u64) -> bool,
    /// A follower's match index, and the leader's last index.
    pub matched: &'a dyn Fn(u64) -> u64,
    pub last_index: u64,
    pub max_learners: usize,
}

impl ClusterView<'_> {
    /// A voter that has published itself and that the leader hears from
    /// (the leader itself always counts).
    fn started(&self, id: u64) -> bool {
        id == self.leader || ((self.connected)(id) && record(self.table, id).is_some_and(|m| !m.name.is_empty()))
    }

    fn started_voters_except(&self, except: Option<u64>) -> usize {
        self.conf.voters.iter().filter(|&&id| Some(id) != except && self.started(id)).count()
    }

    fn exists(&self, id: u64) -> Result<(), MembershipError> {
        if is_removed(self.table, id) || record(self.table, id).is_none() {
            return Err(MembershipError::NotFound);
        }
        Ok(())
    }

    fn urls_unused(&self, urls: &[String], except: Option<u64>) -> Result<(), MembershipError> {
        check_urls(urls)?;
        let used = self.table.members.iter().filter(|m| Some(m.id) != except).flat_map(|m| &m.peer_urls);
        if used.into_iter().any(|u| urls.contains(u)) {
            return Err(MembershipError::PeerUrlExists);
        }
        Ok(())
    }

    /// A quorum of the voters after the change must be started without it.
    fn quorum_stays(&self, voters_after: usize, started_after: usize) -> Result<(), MembershipError> {
        if started_after < voters_after / 2 + 1 {
            return Err(MembershipError::NotEnoughStarted);
        }
        Ok(())
    }

    pub fn check(&self, change: &MemberChange) -> Result<(), MembershipError> {
        let voters = self.conf.voters.len();
        match change.change.as_ref() {
            Some(member_change::Change::Add(r)) => {
                // The cluster's health first, then the request (etcd's order:
                // its health checks run before the change is proposed).
                check_urls(&r.peer_urls)?;
                // A one-member cluster may always grow (etcd's special case:
                // it is how a restored or force-new cluster grows back).
                if !change.is_learner && voters > 1 {
                    self.quorum_stays(voters + 1, self.started_voters_except(None))?;
                }
                if !self.conf.voters.iter().all(|&id| id == self.leader || (self.connected)(id)) {
                    return Err(MembershipError::Unhealthy);
                }
                if is_removed(self.table, r.id) || record(self.table, r.id).is_some() {
                    return Err(MembershipError::IdExists);
                }
                self.urls_unused(&r.peer_urls, None)?;
                if change.is_learner && self.conf.learners.len() >= self.max_learners {
                    return Err(MembershipError::TooManyLearners);
                }
                Ok(())
            }
            Some(member_change::Change::Remove(id)) => {
                self.exists(*id)?;
                if !self.conf.voters.contains(id) {
                    return Ok(()); // a learner never counts in a quorum
                }
                self.quorum_stays(voters - 1, self.started_voters_except(Some(*id)))
            }
            Some(member_change::Change::Promote(id)) => {
                self.exists(*id)?;
                if !self.conf.learners.contains(id) {
                    return Err(MembershipError::NotLearner);
                }
                let matched = (self.matched)(*id);
                if self.last_index == 0 || (matched as f64) < self.last_index as f64 * READY_SHARE {
                    return Err(MembershipError::LearnerNotReady);
                }
                // The learner is connected and in sync: it counts as started.
                self.quorum_stays(voters + 1, self.started_voters_except(None) + 1)
            }
            Some(member_change::Change::UpdatePeerUrls(r)) => {
                self.exists(r.id)?;
                self.urls_unused(&r.peer_urls, Some(r.id))
            }
            Some(member_change::Change::Publish(r)) => self.exists(r.id),
            None => Err(MembershipError::NotFound),
        }
    }
}
