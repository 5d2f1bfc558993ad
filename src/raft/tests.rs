//! Unit tests of single rules of the core, driven message by message. The
//! cluster-level behaviour is tested by the simulation in `tests/`.

use bytes::Bytes;

use super::election::Campaign;
use super::*;
use crate::proto::{ConfState, Entry, HardState, SnapshotMeta};

fn entry(index: u64, term: u64) -> Entry {
    Entry::normal(index, term, Bytes::from_static(b"x"))
}

/// Member `id` of voters 1..=3 with the given durable log and term.
fn node(id: NodeId, term: u64, entries: Vec<Entry>) -> Raft {
    let mut cfg = Config::new(id);
    cfg.pre_vote = false;
    let state = InitialState {
        hard_state: HardState { term, vote: NONE, commit: 0 },
        entries,
        conf: ConfState::with_voters([1, 2, 3]),
        ..InitialState::default()
    };
    Raft::new(cfg, state, 0).unwrap()
}

fn msg(from: NodeId, to: NodeId, term: u64, body: Body) -> Message {
    Message { from, to, term, body }
}

/// Makes node 1 leader of term `term + 1` and persists its no-op.
fn elect(r: &mut Raft) {
    r.campaign(Campaign::Election);
    r.ready();
    r.advance();
    let term = r.term();
    r.step(msg(2, 1, term, Body::VoteResponse { pre: false, granted: true }));
    assert!(r.is_leader());
    r.ready();
    r.advance();
}

/// Raft §5.4.2 / Figure 8: replicas of an entry from an earlier term do not
/// commit it; only an entry of the leader's term commits, and with it the
/// ones before.
#[test]
fn previous_term_entries_are_not_committed_by_counting_replicas() {
    let mut r = node(1, 2, vec![entry(1, 1), entry(2, 2)]);
    elect(&mut r);
    let term = r.term();
    assert_eq!(r.last_index(), 3, "the new leader appended its no-op");
    // Follower 2 now holds entries 1..=2 (of terms 1 and 2): a majority with
    // the leader, but not of the leader's term.
    r.step(msg(2, 1, term, Body::AppendResponse { reject: false, index: 2, hint: None }));
    assert_eq!(r.commit_index(), 0, "committed a previous-term entry by counting replicas");
    r.step(msg(2, 1, term, Body::AppendResponse { reject: false, index: 3, hint: None }));
    assert_eq!(r.commit_index(), 3);
}

#[test]
fn leader_counts_itself_only_once_its_entries_are_durable() {
    let mut r = node(1, 1, vec![]);
    elect(&mut r);
    let term = r.term();
    r.step(msg(2, 1, term, Body::AppendResponse { reject: false, index: 1, hint: None }));
    assert_eq!(r.commit_index(), 1);
    let index = r.propose(Bytes::from_static(b"cmd")).unwrap();
    let rd = r.ready();
    // The append goes out before the leader's own write (thesis §10.2.1) ...
    assert!(
        rd.messages
            .iter()
            .any(|m| matches!(&m.body, Body::Append { entries, .. } if entries.iter().any(|e| e.index == index)))
    );
    assert!(rd.sync);
    // ... but with no follower acknowledgement and its own write not done, nothing commits.
    assert_eq!(r.commit_index(), 1);
    r.advance();
    assert_eq!(r.commit_index(), 1, "one durable copy of three is not a majority");
    r.step(msg(3, 1, term, Body::AppendResponse { reject: false, index, hint: None }));
    assert_eq!(r.commit_index(), index);
}

#[test]
fn append_is_acknowledged_only_after_it_is_durable() {
    let mut r = node(2, 1, vec![]);
    r.step(msg(1, 2, 1, Body::Append { prev_index: 0, prev_term: 0, entries: vec![entry(1, 1)], commit: 0 }));
    let rd = r.ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.sync);
    assert!(!rd.messages.iter().any(|m| matches!(m.body, Body::AppendResponse { .. })));
    assert!(
        rd.persisted_messages.iter().any(|m| matches!(m.body, Body::AppendResponse { reject: false, index: 1, .. }))
    );
}

#[test]
fn vote_is_durable_before_it_is_sent_and_given_once_per_term() {
    let mut r = node(2, 1, vec![]);
    r.step(msg(3, 2, 2, Body::Vote { pre: false, force: false, last_index: 0, last_term: 0 }));
    let rd = r.ready();
    assert_eq!(rd.hard_state.map(|hs| (hs.term, hs.vote)), Some((2, 3)));
    assert!(rd.sync);
    assert!(rd.messages.is_empty());
    assert_eq!(rd.persisted_messages[0].body, Body::VoteResponse { pre: false, granted: true });
    r.advance();
    // Another candidate in the same term is refused.
    r.step(msg(1, 2, 2, Body::Vote { pre: false, force: false, last_index: 5, last_term: 1 }));
    let rd = r.ready();
    assert_eq!(rd.persisted_messages[0].body, Body::VoteResponse { pre: false, granted: false });
}

#[test]
fn candidate_with_a_stale_log_gets_no_vote() {
    let mut r = node(2, 3, vec![entry(1, 1), entry(2, 3)]);
    // Higher term, but its last entry is of term 2 < 3.
    r.step(msg(3, 2, 4, Body::Vote { pre: false, force: false, last_index: 9, last_term: 2 }));
    let rd = r.ready();
    assert_eq!(rd.persisted_messages[0].body, Body::VoteResponse { pre: false, granted: false });
    assert_eq!(r.term(), 4, "the higher term is still adopted");
}

#[test]
fn candidate_asks_for_votes_only_after_its_own_vote_is_durable() {
    let mut r = node(1, 1, vec![]);
    r.campaign(Campaign::Election);
    let rd = r.ready();
    assert_eq!(rd.hard_state.map(|hs| (hs.term, hs.vote)), Some((2, 1)));
    assert!(rd.messages.is_empty());
    assert_eq!(rd.persisted_messages.len(), 2);
}

#[test]
fn committed_entries_are_applied_only_once_durable_locally() {
    let mut r = node(2, 1, vec![]);
    r.step(msg(1, 2, 1, Body::Append { prev_index: 0, prev_term: 0, entries: vec![entry(1, 1)], commit: 1 }));
    let rd = r.ready();
    assert_eq!(r.commit_index(), 1);
    assert!(rd.committed_entries.is_empty(), "applied before its own write was durable");
    r.advance();
    assert_eq!(r.ready().committed_entries.len(), 1);
}

#[test]
fn bad_input_is_refused_without_changing_state() {
    let mut r = node(2, 1, vec![]);
    assert_eq!(r.propose(Bytes::new()), Err(RaftError::EmptyProposal));
    assert_eq!(r.propose(Bytes::from_static(b"x")), Err(RaftError::NotLeader { leader: None }));
    assert!(!r.has_ready());
    // Inconsistent recovered state is refused up front.
    let state = InitialState {
        hard_state: HardState { term: 1, vote: 0, commit: 5 },
        entries: vec![entry(1, 1)],
        conf: ConfState::with_voters([1]),
        ..InitialState::default()
    };
    assert!(matches!(Raft::new(Config::new(1), state, 0), Err(RaftError::InitialState(_))));
    let mut cfg = Config::new(1);
    cfg.election_tick = cfg.heartbeat_tick;
    assert!(matches!(Raft::new(cfg, InitialState::default(), 0), Err(RaftError::Config(_))));
}

#[test]
fn follower_installs_a_snapshot_past_its_log_and_acks_once_durable() {
    let mut r = node(2, 1, vec![entry(1, 1)]);
    let meta = SnapshotMeta { index: 10, term: 3, conf: Some(ConfState::with_voters([1, 2, 3])) };
    r.step(msg(1, 2, 3, Body::Snapshot { meta: meta.clone() }));
    let rd = r.ready();
    assert_eq!(rd.snapshot, Some(meta));
    assert!(rd.sync);
    assert_eq!((r.first_index(), r.last_index(), r.commit_index()), (11, 10, 10), "log reset to the snapshot");
    assert!(rd.messages.iter().all(|m| !matches!(m.body, Body::AppendResponse { .. })));
    assert_eq!(rd.persisted_messages[0].body, Body::AppendResponse { reject: false, index: 10, hint: None });
    r.advance();
    // Appends continue right after the snapshot.
    r.step(msg(1, 2, 3, Body::Append { prev_index: 10, prev_term: 3, entries: vec![entry(11, 3)], commit: 11 }));
    assert_eq!(r.ready().persisted_messages[0].body, Body::AppendResponse { reject: false, index: 11, hint: None });
}

#[test]
fn leader_sends_the_snapshot_to_a_follower_behind_the_compacted_log() {
    let mut r = node(1, 1, vec![]);
    elect(&mut r); // no-op at index 1; follower 3 has not answered yet
    let term = r.term();
    for _ in 0..3 {
        r.propose(Bytes::from_static(b"cmd")).unwrap();
    }
    r.ready();
    r.advance();
    r.step(msg(2, 1, term, Body::AppendResponse { reject: false, index: 4, hint: None }));
    assert_eq!(r.commit_index(), 4);
    r.ready();
    r.advance();
    let meta = SnapshotMeta { index: 4, term, conf: Some(ConfState::with_voters([1, 2, 3])) };
    assert!(!r.compact(4), "no compaction without a snapshot covering it");
    r.snapshot_available(meta.clone());
    assert!(r.compact(4));
    assert_eq!(r.first_index(), 5);
    // Follower 3 answers a heartbeat: its next entries are gone, so it gets the snapshot.
    r.step(msg(3, 1, term, Body::HeartbeatResponse { read_seq: 0 }));
    let rd = r.ready();
    assert!(rd.messages.iter().any(|m| m.to == 3 && m.body == Body::Snapshot { meta: meta.clone() }));
    r.advance();
    // Nothing more goes to it until the transfer is reported.
    r.step(msg(3, 1, term, Body::HeartbeatResponse { read_seq: 0 }));
    assert!(
        r.ready()
            .messages
            .iter()
            .all(|m| !(m.to == 3 && matches!(m.body, Body::Append { .. } | Body::Snapshot { .. })))
    );
    r.advance();
    r.report_snapshot(3, true);
    r.step(msg(3, 1, term, Body::AppendResponse { reject: false, index: 4, hint: None }));
    assert_eq!(r.match_index(3), Some(4));
}

/// A follower whose disk lost synced writes (a torn write-ahead log) rejects
/// appends at its old match point. Those rejections are not stale: the
/// leader replicates again from where the follower's log ends instead of
/// ignoring it forever.
#[test]
fn a_follower_that_lost_acknowledged_entries_is_replicated_again() {
    let mut r = node(1, 1, vec![]);
    elect(&mut r); // no-op at index 1
    let term = r.term();
    for _ in 0..4 {
        r.propose(Bytes::from_static(b"cmd")).unwrap();
    }
    r.ready();
    r.advance();
    r.step(msg(2, 1, term, Body::AppendResponse { reject: false, index: 5, hint: None }));
    assert_eq!(r.match_index(2), Some(5));
    // A rejection that does not say where the follower's log ends is stale.
    r.step(msg(2, 1, term, Body::AppendResponse { reject: true, index: 3, hint: None }));
    r.step(msg(2, 1, term, Body::AppendResponse { reject: true, index: 0, hint: None }));
    assert_eq!(r.match_index(2), Some(5));
    // Follower 2 restarts with a log ending at 2 and rejects an append after 5.
    let hint = Some(ConflictHint { term: 0, index: 3 });
    r.step(msg(2, 1, term, Body::AppendResponse { reject: true, index: 5, hint }));
    assert_eq!(r.match_index(2), Some(2));
    let rd = r.ready();
    let resent = |m: &Message| matches!(&m.body, Body::Append { prev_index: 2, entries, .. } if entries.len() == 3);
    assert!(rd.messages.iter().any(|m| m.to == 2 && resent(m)), "{:?}", rd.messages);
    r.advance();
    // The commit index never goes back.
    assert_eq!(r.commit_index(), 5);
}

fn conf_entry(index: u64, term: u64, conf: &ConfState) -> Entry {
    Entry::conf_change(index, term, &crate::proto::ConfChange { conf: Some(conf.clone()), context: Default::default() })
}

/// etcd's `hup` rule (etcd-io/etcd#7625): a member that knows two
/// configuration changes are committed but has not applied them would count
/// votes under the old configuration, and could win it while a leader of
/// the new one commits elsewhere. It waits until they are applied.
#[test]
fn a_member_with_committed_but_unapplied_configuration_changes_does_not_campaign() {
    let mut r = node(2, 1, vec![]);
    let four = ConfState::with_voters([1, 2, 3, 4]);
    let five = ConfState::with_voters([1, 2, 3, 4, 5]);
    let entries = vec![conf_entry(1, 1, &four), conf_entry(2, 1, &five)];
    r.step(msg(1, 2, 1, Body::Append { prev_index: 0, prev_term: 0, entries, commit: 2 }));
    assert_eq!(r.commit_index(), 2);
    // Both are committed, neither is durable here yet, so neither is applied.
    r.campaign_now();
    assert_eq!(r.term(), 1, "campaigned with committed configuration changes unapplied");
    let rd = r.ready();
    assert!(!rd.messages.iter().any(|m| matches!(m.body, Body::Vote { .. })), "asked for votes");
    r.advance();
    // Once durable they are applied; then the member campaigns, among the
    // voters of the configuration now in force.
    let rd = r.ready();
    assert_eq!(rd.committed_entries.len(), 2);
    r.advance();
    r.apply_conf_change(four);
    r.apply_conf_change(five);
    r.campaign_now();
    assert_eq!(r.term(), 2);
    // The requests leave once the vote is durable.
    let rd = r.ready();
    let mut asked: Vec<NodeId> =
        rd.persisted_messages.iter().filter(|m| matches!(m.body, Body::Vote { .. })).map(|m| m.to).collect();
    asked.sort_unstable();
    assert_eq!(asked, vec![1, 3, 4, 5]);
}

/// raft-rs's rule: a vote from a member that is not a voter of the
/// configuration in force (a learner, a removed member, a stranger) counts
/// for nothing.
#[test]
fn a_candidate_counts_only_the_votes_of_voters() {
    let mut r = node(1, 1, vec![]);
    r.campaign(Campaign::Election);
    r.ready();
    r.advance();
    let term = r.term();
    r.step(msg(4, 1, term, Body::VoteResponse { pre: false, granted: true }));
    r.step(msg(9, 1, term, Body::VoteResponse { pre: false, granted: true }));
    assert!(!r.is_leader(), "won with the votes of non-voters");
    r.step(msg(2, 1, term, Body::VoteResponse { pre: false, granted: true }));
    assert!(r.is_leader());
}
