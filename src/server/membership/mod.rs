//! The cluster's member table: who the members are (id, name, peer and
//! client URLs), beside the Raft configuration that says who votes.
//!
//! Invariants:
//! - The table lists exactly the members of the configuration in force; it
//!   changes only by applying committed entries, so every member holds the
//!   same table at the same index. Additions, removals and promotions are
//!   configuration changes carrying a [`MemberChange`] as their context; peer
//!   URL updates and a started member's published name and client URLs are
//!   ordinary commands, since they leave the voters alone.
//! - An id once removed stays in `removed` for good: a removed member may
//!   never come back and vote (its peers refuse it; its data directory
//!   refuses to start).
//!
//! [`rules`] holds etcd's checks a change must pass before it is proposed.

pub mod http;
pub mod id;
pub mod rules;
pub mod service;

use std::collections::BTreeSet;

use crate::proto::etcdserverpb::Member;
use crate::proto::raftkvpb::{MemberChange, member_change};
use crate::proto::{ConfState, MemberRecord, Membership};

use super::config;

/// etcd's errors for membership requests, with etcd's texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: member not found")]
    NotFound,
    #[error("etcdserver: member ID already exist")]
    IdExists,
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: given member URLs are invalid")]
    BadUrls,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
}

impl MembershipError {
    pub fn status(&self) -> tonic::Status {
        match self {
            MembershipError::NotFound => tonic::Status::not_found(self.to_string()),
            MembershipError::BadUrls => tonic::Status::invalid_argument(self.to_string()),
            MembershipError::Unhealthy => tonic::Status::unavailable(self.to_string()),
            _ => tonic::Status::failed_precondition(self.to_string()),
        }
    }
}

/// The table of a new cluster: `--initial-cluster`'s members, not started.
pub fn initial(members: &[config::Member]) -> Membership {
    let mut members: Vec<MemberRecord> = members
        .iter()
        .map(|m| MemberRecord {
            id: m.id,
            name: m.name.clone(),
            peer_urls: vec![m.peer_url.clone()],
            client_urls: vec![],
        })
        .collect();
    members.sort_by_key(|m| m.id);
    Membership { members, removed: vec![] }
}

pub fn record(table: &Membership, id: u64) -> Option<&MemberRecord> {
    table.members.iter().find(|m| m.id == id)
}

fn record_mut(table: &mut Membership, id: u64) -> Option<&mut MemberRecord> {
    table.members.iter_mut().find(|m| m.id == id)
}

pub fn is_removed(table: &Membership, id: u64) -> bool {
    table.removed.contains(&id)
}

/// The table after a configuration change from `old` to `new` is applied:
/// the members of `new`, each with what the table knew of it (or, for the
/// member being added, what the change says); members of `old` missing
/// from `new` are removed for good.
pub fn apply_conf_change(
    table: &Membership,
    old: &ConfState,
    new: &ConfState,
    change: Option<&MemberChange>,
) -> Membership {
    let added = match change.and_then(|c| c.change.as_ref()) {
        Some(member_change::Change::Add(record)) => Some(record),
        _ => None,
    };
    let mut removed: BTreeSet<u64> = table.removed.iter().copied().collect();
    removed.extend(members_of(old).filter(|id| !members_of(new).any(|n| n == *id)));
    let mut members: Vec<MemberRecord> = members_of(new)
        .map(|id| {
            record(table, id)
                .cloned()
                .or_else(|| added.filter(|r| r.id == id).cloned())
                .unwrap_or(MemberRecord { id, ..Default::default() })
        })
        .collect();
    members.sort_by_key(|m| m.id);
    Membership { members, removed: removed.into_iter().collect() }
}

/// The table after an ordinary member command: new peer URLs, or what a
/// started member published about itself. A command for a member no longer
/// in the table changes nothing.
pub fn apply_command(table: &Membership, change: &MemberChange) -> Membership {
    let mut table = table.clone();
    match &change.change {
        Some(member_change::Change::UpdatePeerUrls(r)) => {
            if let Some(m) = record_mut(&mut table, r.id) {
                m.peer_urls = r.peer_urls.clone();
            }
        }
        Some(member_change::Change::Publish(r)) => {
            if let Some(m) = record_mut(&mut table, r.id) {
                m.name = r.name.clone();
                m.client_urls = r.client_urls.clone();
            }
        }
        _ => {}
    }
    table
}

/// The configuration `change` leads to from `conf`, for the changes that
/// are configuration changes (add, remove, promote).
pub fn next_conf(conf: &ConfState, change: &MemberChange) -> Option<ConfState> {
    let mut next = conf.clone();
    match change.change.as_ref()? {
        member_change::Change::Add(r) if change.is_learner => next.learners.push(r.id),
        member_change::Change::Add(r) => next.voters.push(r.id),
        member_change::Change::Remove(id) => {
            next.voters.retain(|v| v != id);
            next.learners.retain(|l| l != id);
        }
        member_change::Change::Promote(id) => {
            next.learners.retain(|l| l != id);
            next.voters.push(*id);
        }
        _ => return None,
    }
    next.voters.sort_unstable();
    next.learners.sort_unstable();
    Some(next)
}

fn members_of(conf: &ConfState) -> impl Iterator<Item = u64> + '_ {
    conf.voters.iter().chain(&conf.learners).copied()
}

/// The table as etcd's `MemberList` shows it.
pub fn to_etcd(table: &Membership, conf: &ConfState) -> Vec<Member> {
    table
        .members
        .iter()
        .map(|m| Member {
            id: m.id,
            name: m.name.clone(),
            peer_ur_ls: m.peer_urls.clone(),
            client_ur_ls: m.client_urls.clone(),
            is_learner: conf.learners.contains(&m.id),
        })
        .collect()
}

/// Peer URLs as etcd accepts them: `http://host:port`, at least one.
pub fn check_urls(urls: &[String]) -> Result<(), MembershipError> {
    let valid = |url: &String| {
        url.strip_prefix("http://")
            .and_then(|hostport| hostport.rsplit_once(':'))
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    if urls.is_empty() || !urls.iter().all(valid) {
        return Err(MembershipError::BadUrls);
    }
    Ok(())
}

/// The member links and forwarders are made to: its first peer URL.
pub fn link_targets(table: &Membership) -> Vec<config::Member> {
    table
        .members
        .iter()
        .filter_map(|m| {
            let url = m.peer_urls.first()?;
            Some(config::Member { id: m.id, name: m.name.clone(), peer_url: url.clone() })
        })
        .collect()
}

#[cfg(test)]
mod tests;
