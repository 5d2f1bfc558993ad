//! Raft's safety properties, checked after every simulated millisecond.
//!
//! - Election Safety: at most one leader per term.
//! - Log Matching: every (index, term) ever written by anyone names one
//!   command and one predecessor term; by induction, logs that share an
//!   entry share everything before it.
//! - Leader Completeness: a new leader holds every entry committed before it.
//! - State Machine Safety: every node applies the same entry at each index,
//!   in index order.
//! - Monotonicity: term and commit never go back within a node's life, and
//!   its durable term, vote-in-term and commit never go back across crashes.
//! - Campaigns under the configuration in force: no member campaigns while
//!   its log holds committed configuration changes it has not applied.

use std::collections::{BTreeMap, HashMap};

use raftkv::proto::{Entry, HardState};
use raftkv::raft::{NodeId, Raft, Role};

/// What identifies an entry's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryId {
    pub term: u64,
    pub hash: u64,
}

pub fn entry_id(e: &Entry) -> EntryId {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    e.entry_type.hash(&mut h);
    e.data.hash(&mut h);
    EntryId { term: e.term, hash: h.finish() }
}

#[derive(Default)]
struct NodeHistory {
    /// Within the current life.
    term: u64,
    commit: u64,
    /// Checked up to here for the global committed registry.
    commit_recorded: u64,
    last_applied: u64,
    durable: HardState,
    /// Durable vote by term, across lives.
    votes: BTreeMap<u64, NodeId>,
}

#[derive(Default)]
pub struct Checker {
    leaders: HashMap<u64, NodeId>,
    /// (index, term) → (content, predecessor's term).
    written: HashMap<(u64, u64), (u64, Option<u64>)>,
    committed: BTreeMap<u64, EntryId>,
    applied: BTreeMap<u64, EntryId>,
    nodes: BTreeMap<NodeId, NodeHistory>,
    pub violations: Vec<String>,
}

impl Checker {
    fn fail(&mut self, now: u64, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(format!("t={now}ms: {what}"));
        }
    }

    /// Entries a node hands to its store, with the term of the entry before
    /// each (if its log still knows it).
    pub fn on_write(&mut self, now: u64, node: NodeId, entries: &[Entry], prev_term: impl Fn(u64) -> Option<u64>) {
        for e in entries {
            let content = entry_id(e).hash;
            let prev = prev_term(e.index - 1);
            match self.written.get(&(e.index, e.term)).copied() {
                None => {
                    self.written.insert((e.index, e.term), (content, prev));
                }
                Some((c, p)) => {
                    if c != content {
                        self.fail(
                            now,
                            format!(
                                "Log Matching: node {node} wrote a different command at index {} term {}",
                                e.index, e.term
                            ),
                        );
                    }
                    match (p, prev) {
                        (Some(p), Some(q)) if p != q => self.fail(
                            now,
                            format!("Log Matching: node {node} has entry {} term {} after term {q}, another node after term {p}", e.index, e.term),
                        ),
                        (None, Some(q)) => {
                            self.written.insert((e.index, e.term), (c, Some(q)));
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// An entry a node applied.
    pub fn on_apply(&mut self, now: u64, node: NodeId, e: &Entry) {
        let id = entry_id(e);
        let history = self.nodes.entry(node).or_default();
        let expected = history.last_applied + 1;
        history.last_applied = e.index;
        if e.index != expected {
            self.fail(now, format!("node {node} applied index {} after {}", e.index, expected - 1));
        }
        match self.applied.get(&e.index) {
            None => {
                self.applied.insert(e.index, id);
            }
            Some(&other) if other != id => {
                self.fail(
                    now,
                    format!(
                        "State Machine Safety: node {node} applied {id:?} at index {}, another node {other:?}",
                        e.index
                    ),
                );
            }
            _ => {}
        }
    }

    /// A node installed a snapshot of every command up to `index`: each must
    /// be what was applied there everywhere else.
    pub fn on_snapshot(&mut self, now: u64, node: NodeId, index: u64, applied: &[(u64, bytes::Bytes)]) {
        self.nodes.entry(node).or_default().last_applied = index;
        for (i, data) in applied {
            let hash = entry_id(&Entry::normal(*i, 0, data.clone())).hash;
            if let Some(id) = self.applied.get(i)
                && id.hash != hash
            {
                let msg = format!("State Machine Safety: node {node} installed a snapshot that differs at index {i}");
                self.fail(now, msg);
            }
        }
    }

    /// A node restarted: its life-bound history begins again from its store.
    pub fn on_restart(&mut self, now: u64, node: NodeId, raft: &Raft, durable: HardState, applied: u64) {
        self.on_durable(now, node, durable);
        let history = self.nodes.entry(node).or_default();
        history.term = raft.term();
        history.commit = raft.commit_index();
        history.commit_recorded = raft.commit_index().min(history.commit_recorded);
        history.last_applied = applied;
    }

    /// A node's durable hard state after a sync or a crash.
    pub fn on_durable(&mut self, now: u64, node: NodeId, hs: HardState) {
        let history = self.nodes.entry(node).or_default();
        let before = history.durable;
        history.durable = hs;
        let mut failures = Vec::new();
        if hs.term < before.term {
            failures.push(format!("node {node}: durable term went back from {} to {}", before.term, hs.term));
        }
        if hs.commit < before.commit {
            failures.push(format!("node {node}: durable commit went back from {} to {}", before.commit, hs.commit));
        }
        if hs.vote != 0 {
            match history.votes.get(&hs.term) {
                Some(&v) if v != hs.vote => {
                    failures.push(format!("node {node}: voted for {v} and then {} in term {}", hs.vote, hs.term))
                }
                _ => {
                    history.votes.insert(hs.term, hs.vote);
                }
            }
        }
        for f in failures {
            self.fail(now, f);
        }
    }

    /// Checks a live node's state; called every step.
    pub fn check_node(&mut self, now: u64, raft: &Raft) {
        let node = raft.id();
        let history = self.nodes.entry(node).or_default();
        let (term, commit) = (raft.term(), raft.commit_index());
        let mut failures = Vec::new();
        if term < history.term {
            failures.push(format!("node {node}: term went back from {} to {term}", history.term));
        }
        if commit < history.commit {
            failures.push(format!("node {node}: commit went back from {} to {commit}", history.commit));
        }
        history.term = term;
        history.commit = commit;
        let from = history.commit_recorded + 1;
        history.commit_recorded = commit.max(history.commit_recorded);
        for f in failures {
            self.fail(now, f);
        }
        for e in raft.log_entries(from, commit) {
            let id = entry_id(e);
            match self.committed.get(&e.index) {
                None => {
                    self.committed.insert(e.index, id);
                }
                Some(&other) if other != id => {
                    let msg =
                        format!("node {node} commits {id:?} at index {}, another node committed {other:?}", e.index);
                    self.fail(now, msg);
                }
                _ => {}
            }
        }
        // etcd's `hup()` guard: a member whose log holds committed
        // configuration changes it has not applied would count votes under
        // a configuration the cluster has left (etcd-io/raft#469).
        if matches!(raft.role(), Role::PreCandidate | Role::Candidate)
            && raft.log_entries(raft.applied_index() + 1, commit).any(Entry::is_conf_change)
        {
            let msg = format!("node {node} campaigns in term {term} with committed configuration changes unapplied");
            self.fail(now, msg);
        }
        if raft.is_leader() {
            match self.leaders.get(&term).copied() {
                Some(other) if other != node => {
                    self.fail(now, format!("Election Safety: nodes {other} and {node} both lead term {term}"));
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, node);
                    self.check_leader_completeness(now, raft);
                }
            }
        }
    }

    fn check_leader_completeness(&mut self, now: u64, raft: &Raft) {
        let first = raft.first_index();
        let missing = self
            .committed
            .range(first..)
            .find(|(index, id)| raft.log_term(**index) != Some(id.term))
            .map(|(index, id)| (*index, *id));
        if let Some((index, id)) = missing {
            let msg = format!(
                "Leader Completeness: node {} leads term {} without committed entry {index} of term {}",
                raft.id(),
                raft.term(),
                id.term
            );
            self.fail(now, msg);
        }
    }
}
