//! The classic Raft scenarios, each on a seeded simulated cluster with the
//! safety checker running every simulated millisecond. A failure names its
//! seed; the same seed replays the same run.

mod support;

use std::collections::BTreeSet;

use raftkv::proto::ConfState;
use raftkv::raft::{RaftError, Role};
use rand::Rng;
use support::sim::{ELECTION_MS, NetConfig, Sim, TICK_MS};

const SEED: u64 = 42;

fn leader_term(sim: &Sim, id: u64) -> u64 {
    sim.nodes[&id].raft().term()
}

#[test]
fn initial_election() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    let leader = sim.wait_leader(10 * ELECTION_MS);
    let term = leader_term(&sim, leader);
    for node in sim.nodes.values() {
        assert_eq!(node.raft().term(), term, "all members agree on the term");
    }
    // With no failures, nobody campaigns again.
    sim.run_for(20 * ELECTION_MS);
    assert_eq!(sim.stable_leader(), Some(leader));
    assert_eq!(leader_term(&sim, leader), term);
}

#[test]
fn reelection_after_leader_cut_off_and_its_rejoin_does_not_disrupt() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    let old = sim.wait_leader(10 * ELECTION_MS);
    sim.disconnect(old);
    sim.run_until(10 * ELECTION_MS, "new leader", |s| s.stable_leader().is_some_and(|l| l != old));
    let new = sim.stable_leader().unwrap();
    let term = leader_term(&sim, new);
    // Check-quorum: the cut-off leader steps down by itself.
    sim.run_until(3 * ELECTION_MS, "old leader steps down", |s| s.nodes[&old].raft().role() != Role::Leader);

    // Its return does not depose the new leader (pre-vote keeps its term low).
    sim.connect(old);
    sim.run_for(10 * ELECTION_MS);
    assert_eq!(sim.stable_leader(), Some(new));
    assert_eq!(leader_term(&sim, new), term, "rejoin bumped the term");
    assert_eq!(sim.nodes[&old].raft().leader(), Some(new));

    // Without a quorum, nobody leads; with it back, someone does.
    let other = sim.ids().into_iter().find(|&id| id != new && id != old).unwrap();
    sim.disconnect(new);
    sim.disconnect(other);
    sim.run_for(10 * ELECTION_MS);
    assert_eq!(sim.stable_leader(), None);
    sim.connect(other);
    sim.wait_leader(10 * ELECTION_MS);
}

#[test]
fn no_leader_without_a_quorum() {
    let mut sim = Sim::new(5, SEED, NetConfig::reliable());
    sim.wait_leader(10 * ELECTION_MS);
    sim.partition(&[vec![1, 2], vec![3], vec![4], vec![5]]);
    sim.run_for(5 * ELECTION_MS);
    for _ in 0..20 {
        sim.run_for(ELECTION_MS);
        assert!(sim.leaders().is_empty(), "a leader without a quorum: {:?}", sim.leaders());
    }
}

#[test]
fn many_elections_seven_nodes() {
    let mut sim = Sim::new(7, SEED, NetConfig::reliable());
    sim.wait_leader(10 * ELECTION_MS);
    for round in 0..10 {
        let mut ids = sim.ids();
        let mut cut = Vec::new();
        for _ in 0..3 {
            let i = sim.rng.random_range(0..ids.len());
            cut.push(ids.remove(i));
        }
        for &id in &cut {
            sim.disconnect(id);
        }
        sim.run_until(20 * ELECTION_MS, "leader among the connected four", |s| {
            s.stable_leader().is_some_and(|l| !cut.contains(&l))
        });
        // A leader of an older term that was just reconnected may not have
        // heard of the new one yet; within a few heartbeats it has.
        sim.run_for(ELECTION_MS / 2);
        let connected_leaders: Vec<_> = sim.leaders().into_iter().filter(|(id, _)| !cut.contains(id)).collect();
        assert_eq!(connected_leaders.len(), 1, "round {round}: leaders among the connected: {connected_leaders:?}");
        for id in cut {
            sim.connect(id);
        }
    }
    sim.wait_leader(10 * ELECTION_MS);
}

#[test]
fn basic_agreement() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    sim.wait_leader(10 * ELECTION_MS);
    let mut last = 0;
    for v in 1..=10 {
        let index = sim.one(v, 3, 10 * ELECTION_MS);
        assert!(index > last, "indexes increase");
        last = index;
    }
    sim.assert_state_machines_agree();
}

#[test]
fn follower_failure() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    let leader = sim.wait_leader(10 * ELECTION_MS);
    sim.one(1, 3, 10 * ELECTION_MS);
    let followers: Vec<u64> = sim.ids().into_iter().filter(|&id| id != leader).collect();
    sim.disconnect(followers[0]);
    sim.one(2, 2, 10 * ELECTION_MS);
    sim.one(3, 2, 10 * ELECTION_MS);

    // Without the second follower the leader cannot commit.
    sim.disconnect(followers[1]);
    let index = sim.propose(leader, 4).expect("still leader");
    sim.run_for(ELECTION_MS / 2);
    assert_eq!(sim.applied_count(4), 0, "committed {index} without a majority");

    // Both back: everyone has everything.
    sim.connect(followers[0]);
    sim.connect(followers[1]);
    sim.one(5, 3, 20 * ELECTION_MS);
    for v in [1, 2, 3, 5] {
        assert_eq!(sim.applied_count(v), 3, "value {v}");
    }
    sim.assert_state_machines_agree();
}

#[test]
fn leader_failure() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    let first = sim.wait_leader(10 * ELECTION_MS);
    sim.one(1, 3, 10 * ELECTION_MS);
    sim.disconnect(first);
    sim.one(2, 2, 20 * ELECTION_MS);
    let second = sim.stable_leader().unwrap();
    assert_ne!(first, second);
    sim.disconnect(second);
    // One node of three left connected: nothing commits.
    let index = sim.propose(second, 3).unwrap_or(0);
    sim.run_for(20 * ELECTION_MS);
    assert_eq!(sim.applied_count(3), 0, "committed {index} on a minority");
    sim.connect(first);
    sim.connect(second);
    sim.one(4, 3, 20 * ELECTION_MS);
    sim.assert_state_machines_agree();
}

#[test]
fn no_commit_without_majority() {
    let mut sim = Sim::new(5, SEED, NetConfig::reliable());
    sim.wait_leader(10 * ELECTION_MS);
    sim.one(10, 5, 10 * ELECTION_MS);
    let leader = sim.stable_leader().unwrap();
    let followers: Vec<u64> = sim.ids().into_iter().filter(|&id| id != leader).collect();
    for &f in &followers[..3] {
        sim.disconnect(f);
    }
    let index = sim.propose(leader, 20).expect("leader accepts");
    sim.run_for(5 * ELECTION_MS);
    assert_eq!(sim.applied_count(20), 0, "index {index} committed with 2 of 5");
    assert!(sim.nodes[&leader].raft().commit_index() < index);
    for &f in &followers[..3] {
        sim.connect(f);
    }
    // The uncommitted entry may or may not survive; new ones do commit.
    sim.one(30, 5, 20 * ELECTION_MS);
    sim.assert_state_machines_agree();
}

#[test]
fn concurrent_proposals() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    let leader = sim.wait_leader(10 * ELECTION_MS);
    let mut indexes = BTreeSet::new();
    for v in 1..=50 {
        indexes.insert(sim.propose(leader, v).expect("leader accepts"));
    }
    assert_eq!(indexes.len(), 50, "each proposal got its own index");
    sim.run_until(10 * ELECTION_MS, "all 50 applied everywhere", |s| (1..=50).all(|v| s.applied_count(v) == 3));
    sim.assert_state_machines_agree();
}

#[test]
fn partitioned_leader_uncommitted_entries_are_overwritten_on_rejoin() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    sim.one(1, 3, 20 * ELECTION_MS);
    let old = sim.stable_leader().unwrap();
    sim.disconnect(old);
    for v in 100..105 {
        sim.propose(old, v).expect("old leader still thinks it leads");
    }
    sim.one(2, 2, 20 * ELECTION_MS);
    let new = sim.stable_leader().unwrap();
    // The new leader is cut off too; the old one comes back.
    sim.disconnect(new);
    sim.connect(old);
    sim.one(3, 2, 20 * ELECTION_MS);
    sim.connect(new);
    sim.one(4, 3, 20 * ELECTION_MS);
    for v in 100..105 {
        assert_eq!(sim.applied_count(v), 0, "uncommitted value {v} of the old leader survived");
    }
    sim.assert_state_machines_agree();
}

#[test]
fn fast_backup_over_divergent_logs() {
    let mut sim = Sim::new(5, SEED, NetConfig::reliable());
    sim.one(1, 5, 20 * ELECTION_MS);
    let leader1 = sim.stable_leader().unwrap();
    let ids = sim.ids();
    let others: Vec<u64> = ids.iter().copied().filter(|&id| id != leader1).collect();
    // Leader and one follower apart: 50 proposals that never commit.
    sim.partition(&[vec![leader1, others[0]], others[1..].to_vec()]);
    for v in 1000..1050 {
        sim.propose(leader1, v).unwrap();
    }
    sim.run_for(ELECTION_MS / 2);
    // The other three commit 50 of their own.
    let mut v = 2000;
    sim.run_until(20 * ELECTION_MS, "majority leader", |s| s.stable_leader().is_some_and(|l| others[1..].contains(&l)));
    let leader2 = sim.stable_leader().unwrap();
    for _ in 0..50 {
        sim.propose(leader2, v).unwrap();
        v += 1;
    }
    sim.run_until(20 * ELECTION_MS, "50 commits on three", |s| s.applied_count(2049) == 3);
    // Now one of the three goes with the first pair, and the old side gets
    // another 50 entries that cannot commit.
    let third = *others[1..].iter().find(|&&id| id != leader2).unwrap();
    sim.disconnect(third);
    for _ in 0..50 {
        let _ = sim.propose(leader2, v);
        v += 1;
    }
    sim.run_for(ELECTION_MS / 2);
    // The original pair and `third` form a majority; they must catch up by
    // backing over dozens of divergent entries in a few round trips.
    sim.partition(&[vec![leader1, others[0], third], others[1..].iter().copied().filter(|&id| id != third).collect()]);
    sim.net.rejections = 0;
    sim.one(9000, 3, 30 * ELECTION_MS);
    sim.heal();
    sim.one(9001, 5, 30 * ELECTION_MS);
    for v in 1000..1050 {
        assert_eq!(sim.applied_count(v), 0, "uncommitted value {v} survived");
    }
    assert_eq!(sim.applied_count(2049), 5);
    sim.assert_state_machines_agree();
    // Dozens of divergent entries per follower, but each backs up a whole
    // term per round trip: a handful of rejections, not one per entry.
    assert!(sim.net.rejections <= 12, "{} rejections to back up over 50+ divergent entries", sim.net.rejections);
}

#[test]
fn message_counts_for_an_election_and_idle_heartbeats() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    sim.net.sent = 0;
    sim.wait_leader(10 * ELECTION_MS);
    // Pre-votes, votes, the no-op append and their answers: about 16.
    assert!(sim.net.sent <= 30, "election took {} messages", sim.net.sent);
    sim.run_for(ELECTION_MS);
    let leader = sim.stable_leader().unwrap();
    let term = leader_term(&sim, leader);
    sim.net.sent = 0;
    let idle_ms = 100 * ELECTION_MS; // 10 s of simulated idleness
    sim.run_for(idle_ms);
    // A heartbeat and its reply per follower every 2 ticks.
    let heartbeats = idle_ms / (2 * support::sim::TICK_MS) * 2 * 2;
    assert!(sim.net.sent <= heartbeats + 10, "{} messages while idle, expected about {heartbeats}", sim.net.sent);
    assert_eq!(leader_term(&sim, leader), term);
}

#[test]
fn persistence_after_crashing_all_nodes() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    for v in 1..=5 {
        sim.one(v, 3, 20 * ELECTION_MS);
    }
    for id in sim.ids() {
        sim.crash(id);
    }
    sim.run_for(ELECTION_MS);
    for id in sim.ids() {
        sim.restart(id);
    }
    sim.one(6, 3, 20 * ELECTION_MS);
    for v in 1..=6 {
        assert_eq!(sim.applied_count(v), 3, "value {v} after a full restart");
    }
    sim.assert_state_machines_agree();
}

#[test]
fn persistence_after_crashing_the_leader() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    sim.one(1, 3, 20 * ELECTION_MS);
    for v in 2..=4 {
        let leader = sim.stable_leader().unwrap();
        sim.crash(leader);
        sim.one(v, 2, 20 * ELECTION_MS);
        sim.restart(leader);
    }
    sim.one(5, 3, 20 * ELECTION_MS);
    for v in 1..=5 {
        assert_eq!(sim.applied_count(v), 3, "value {v}");
    }
}

#[test]
fn persistence_after_crashing_a_follower() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    sim.one(1, 3, 20 * ELECTION_MS);
    let leader = sim.stable_leader().unwrap();
    let follower = sim.ids().into_iter().find(|&id| id != leader).unwrap();
    sim.crash(follower);
    sim.one(2, 2, 20 * ELECTION_MS);
    sim.restart(follower);
    sim.one(3, 3, 20 * ELECTION_MS);
    assert_eq!(sim.applied_count(2), 3, "the restarted follower caught up");
}

#[test]
fn agreement_on_an_unreliable_network() {
    let mut sim = Sim::new(5, SEED, NetConfig::unreliable());
    for v in 1..=50 {
        sim.one(v, 5, 100 * ELECTION_MS);
    }
    sim.assert_state_machines_agree();
}

/// One round of the Figure 8 tests: proposals to whoever leads, then a short
/// random wait, mostly under a heartbeat, so the next fault lands while
/// entries are only partly replicated.
fn figure_8_round(sim: &mut Sim, value: &mut u64) {
    if let Some(leader) = sim.leader() {
        for _ in 0..sim.rng.random_range(1..4) {
            let _ = sim.propose(leader, *value);
            *value += 1;
        }
    }
    let pause =
        if sim.rng.random_bool(0.1) { sim.rng.random_range(0..ELECTION_MS / 2) } else { sim.rng.random_range(0..13) };
    sim.run_for(pause);
}

/// Figure 8 of the Raft paper: leaders crash at random moments, so entries
/// of older terms are present on a majority without being committed. Only
/// entries of the leader's own term may be committed by counting.
#[test]
fn figure_8() {
    let mut sim = Sim::new(5, SEED, NetConfig::reliable());
    sim.one(0, 5, 20 * ELECTION_MS);
    let mut value = 1;
    for _ in 0..1000 {
        figure_8_round(&mut sim, &mut value);
        if let Some(leader) = sim.leader() {
            sim.crash(leader);
        }
        if sim.up().len() < 3 {
            let down: Vec<u64> = sim.ids().into_iter().filter(|id| !sim.nodes[id].is_up()).collect();
            let pick = down[sim.rng.random_range(0..down.len())];
            sim.restart(pick);
        }
    }
    sim.heal();
    sim.one(u64::MAX, 5, 100 * ELECTION_MS);
    sim.assert_state_machines_agree();
}

/// Figure 8 with leaders cut off instead of crashed, on a network that loses,
/// duplicates and holds messages back for up to two seconds.
#[test]
fn figure_8_on_an_unreliable_network_with_long_reordering() {
    let mut sim = Sim::new(5, SEED, NetConfig::unreliable_long_reordering());
    sim.one(0, 1, 100 * ELECTION_MS);
    let mut value = 1;
    let mut cut: Vec<u64> = Vec::new();
    for _ in 0..1000 {
        figure_8_round(&mut sim, &mut value);
        if let Some(leader) = sim.leader()
            && sim.rng.random_bool(0.5)
            && !cut.contains(&leader)
        {
            sim.disconnect(leader);
            cut.push(leader);
        }
        if cut.len() > 2 || (!cut.is_empty() && sim.rng.random_bool(0.1)) {
            let back = cut.swap_remove(sim.rng.random_range(0..cut.len()));
            sim.connect(back);
            // Reconnecting restores links to the still-cut nodes too: cut them again.
            for &id in &cut {
                sim.disconnect(id);
            }
        }
    }
    sim.heal();
    sim.one(u64::MAX, 5, 200 * ELECTION_MS);
    sim.assert_state_machines_agree();
}

/// Random crashes, restarts and partitions while clients propose; every
/// acknowledged value survives and, after healing, is applied everywhere.
fn churn(net: NetConfig, seed: u64) {
    let mut sim = Sim::new(5, seed, net);
    let acked = support::sim::workload::run_churn(&mut sim, 200 * ELECTION_MS);
    sim.heal();
    support::sim::workload::settle(&mut sim, &acked, 200 * ELECTION_MS);
}

#[test]
fn churn_reliable() {
    churn(NetConfig::reliable(), SEED);
}

#[test]
fn churn_unreliable() {
    churn(NetConfig::unreliable(), SEED);
}

#[test]
fn leadership_transfer() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    sim.one(1, 3, 20 * ELECTION_MS);
    let leader = sim.stable_leader().unwrap();
    let target = sim.ids().into_iter().find(|&id| id != leader).unwrap();
    sim.nodes.get_mut(&leader).unwrap().raft_mut().transfer_leader(target).unwrap();
    assert!(matches!(sim.propose(leader, 2), Err(RaftError::TransferInProgress(t)) if t == target));
    sim.run_until(ELECTION_MS, "transfer", |s| s.stable_leader() == Some(target));
    sim.one(3, 3, 20 * ELECTION_MS);
    // Transfers to a non-member are refused.
    let err = sim.nodes.get_mut(&target).unwrap().raft_mut().transfer_leader(99);
    assert!(err.is_err());
}

#[test]
fn read_index_on_leader_and_follower_sees_every_committed_write() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    let index = sim.one(1, 3, 20 * ELECTION_MS);
    let leader = sim.stable_leader().unwrap();
    let follower = sim.ids().into_iter().find(|&id| id != leader).unwrap();
    for (id, ctx) in [(leader, "on-leader"), (follower, "on-follower")] {
        sim.nodes.get_mut(&id).unwrap().raft_mut().read_index(ctx.into()).unwrap();
        sim.run_until(ELECTION_MS, "read state", |s| s.nodes[&id].read_states.iter().any(|r| r.ctx == ctx));
        let read = sim.nodes[&id].read_states.iter().find(|r| r.ctx == ctx).unwrap().clone();
        assert!(read.index >= index, "{ctx}: read index {} misses committed {index}", read.index);
    }
}

#[test]
fn read_index_is_not_served_by_a_deposed_leader() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    sim.one(1, 3, 20 * ELECTION_MS);
    let old = sim.stable_leader().unwrap();
    sim.disconnect(old);
    sim.nodes.get_mut(&old).unwrap().raft_mut().read_index("stale".into()).unwrap();
    sim.one(2, 2, 20 * ELECTION_MS);
    sim.run_for(10 * ELECTION_MS);
    assert!(sim.nodes[&old].read_states.is_empty(), "a cut-off leader confirmed a read");
}

#[test]
fn learner_replicates_without_voting_then_is_promoted() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    sim.one(1, 3, 20 * ELECTION_MS);
    let leader = sim.stable_leader().unwrap();
    // Node 4 joins as a learner.
    let with_learner = ConfState { voters: vec![1, 2, 3], learners: vec![4] };
    sim.add_node(4, &with_learner);
    sim.nodes.get_mut(&leader).unwrap().raft_mut().propose_conf_change(with_learner, Default::default()).unwrap();
    sim.one(2, 4, 20 * ELECTION_MS);
    assert_eq!(sim.applied_count(1), 4, "the learner received the log");
    // Changing two members at once is refused; one at a time is fine.
    let leader = sim.stable_leader().unwrap();
    let two_at_once = ConfState { voters: vec![1, 2, 3, 4, 5], learners: vec![] };
    assert!(matches!(
        sim.nodes.get_mut(&leader).unwrap().raft_mut().propose_conf_change(two_at_once, Default::default()),
        Err(RaftError::InvalidConfChange(_))
    ));
    let promoted = ConfState::with_voters([1, 2, 3, 4]);
    sim.nodes.get_mut(&leader).unwrap().raft_mut().propose_conf_change(promoted, Default::default()).unwrap();
    sim.one(3, 4, 20 * ELECTION_MS);
    // Four voters: two of them cut off means no quorum.
    let others: Vec<u64> = sim.ids().into_iter().filter(|&id| id != leader).take(2).collect();
    for &id in &others {
        sim.disconnect(id);
    }
    let index = sim.propose(leader, 4).unwrap();
    sim.run_for(3 * ELECTION_MS);
    assert_eq!(sim.applied_count(4), 0, "index {index} committed by 2 of 4 voters");
    sim.heal();
    sim.one(5, 4, 30 * ELECTION_MS);
}

fn propose_conf(sim: &mut Sim, on: u64, conf: ConfState) {
    sim.nodes.get_mut(&on).unwrap().raft_mut().propose_conf_change(conf, Default::default()).unwrap();
}

#[test]
fn a_leader_that_removes_itself_hands_leadership_over_before_any_election_timeout() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    sim.one(1, 3, 20 * ELECTION_MS);
    let old = sim.stable_leader().unwrap();
    let rest: Vec<u64> = sim.ids().into_iter().filter(|&id| id != old).collect();
    propose_conf(&mut sim, old, ConfState::with_voters(rest.clone()));
    // Followers heard the leader just now, so without a hand-over none would
    // campaign for at least an election timeout.
    sim.run_until(ELECTION_MS / 2, "a remaining voter leads", |s| s.stable_leader().is_some_and(|l| rest.contains(&l)));
    sim.run_for(5 * ELECTION_MS);
    let removed = sim.nodes[&old].raft();
    assert!(!removed.is_leader() && !removed.conf().voters.contains(&old), "the removed leader stepped away");
    // The two remaining voters commit on their own, and the removed member
    // (still running) never disturbs them.
    let term = leader_term(&sim, sim.stable_leader().unwrap());
    sim.one(2, 2, 20 * ELECTION_MS);
    sim.run_for(20 * ELECTION_MS);
    assert_eq!(leader_term(&sim, sim.stable_leader().unwrap()), term, "no election after the hand-over");
    sim.assert_state_machines_agree();
}

#[test]
fn a_member_cut_off_from_the_cluster_can_be_removed_and_never_disturbs_it() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    sim.one(1, 3, 20 * ELECTION_MS);
    let leader = sim.stable_leader().unwrap();
    let cut = sim.ids().into_iter().find(|&id| id != leader).unwrap();
    sim.disconnect(cut);
    let rest: Vec<u64> = sim.ids().into_iter().filter(|&id| id != cut).collect();
    propose_conf(&mut sim, leader, ConfState::with_voters(rest.clone()));
    sim.one(2, 2, 20 * ELECTION_MS);
    // Back on the network, the removed member's campaigns get no votes.
    sim.connect(cut);
    let term = leader_term(&sim, sim.stable_leader().unwrap());
    sim.run_for(30 * ELECTION_MS);
    let leader = sim.stable_leader().expect("a leader");
    assert!(rest.contains(&leader));
    assert_eq!(leader_term(&sim, leader), term, "the removed member deposed no one");
    sim.one(3, 2, 20 * ELECTION_MS);
}

#[test]
fn only_one_configuration_change_is_pending_at_a_time_and_a_crash_mid_change_keeps_it() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    sim.one(1, 3, 20 * ELECTION_MS);
    let leader = sim.stable_leader().unwrap();
    let with_learner = ConfState { voters: vec![1, 2, 3], learners: vec![4] };
    sim.add_node(4, &with_learner);
    propose_conf(&mut sim, leader, with_learner.clone());
    let promoted = ConfState::with_voters([1, 2, 3, 4]);
    assert!(matches!(
        sim.nodes.get_mut(&leader).unwrap().raft_mut().propose_conf_change(promoted.clone(), Default::default()),
        Err(RaftError::ConfChangePending(_))
    ));
    // Every member crashes while the change may be anywhere between proposed
    // and applied; after restarts the cluster agrees on one configuration.
    sim.run_for(TICK_MS);
    for id in sim.ids() {
        sim.crash(id);
    }
    for id in sim.ids() {
        sim.restart(id);
    }
    sim.one(2, 3, 30 * ELECTION_MS);
    sim.run_for(5 * ELECTION_MS);
    let confs: Vec<ConfState> = [1, 2, 3].iter().map(|id| sim.nodes[id].raft().conf().clone()).collect();
    assert!(confs.windows(2).all(|w| w[0] == w[1]), "members disagree on the configuration: {confs:?}");
    assert!(confs[0] == with_learner || confs[0] == ConfState::with_voters([1, 2, 3]), "{:?}", confs[0]);
}

/// Committed configuration changes in a node's log that it has not applied.
fn unapplied_conf_changes(sim: &Sim, id: u64) -> usize {
    let raft = sim.nodes[&id].raft();
    raft.log_entries(raft.applied_index() + 1, raft.commit_index()).filter(|e| e.is_conf_change()).count()
}

/// etcd-io/raft#469 (etcd#7625): {1,2,3} grows by 4, then by 5, while one
/// member's disk is too slow to apply either change. It learns both are
/// committed; cut off with one other voter of {1,2,3}, a campaign under that
/// configuration would need just the two of them, while the leader rules
/// {1,..,5} with the other three. The checker fails any member that
/// campaigns with committed changes unapplied.
#[test]
fn a_member_lagging_two_committed_configuration_changes_waits_to_apply_them_before_campaigning() {
    let mut sim = Sim::new(3, SEED, NetConfig::reliable());
    sim.one(1, 3, 20 * ELECTION_MS);
    let leader = sim.stable_leader().unwrap();
    let mut followers = sim.ids().into_iter().filter(|&id| id != leader);
    let (slow, other) = (followers.next().unwrap(), followers.next().unwrap());
    sim.disk_latency_of.insert(slow, (30 * ELECTION_MS, 30 * ELECTION_MS));
    for voters in [vec![1, 2, 3, 4], vec![1, 2, 3, 4, 5]] {
        let conf = ConfState::with_voters(voters);
        sim.add_node(*conf.voters.last().unwrap(), &conf);
        propose_conf(&mut sim, leader, conf.clone());
        sim.run_until(20 * ELECTION_MS, "the leader applies the change", |s| s.nodes[&leader].raft().conf() == &conf);
    }
    // One more entry carries the commit index of both changes to the slow member.
    sim.propose(leader, 2).unwrap();
    sim.run_until(20 * ELECTION_MS, "the slow member learns both changes committed", |s| {
        unapplied_conf_changes(s, slow) == 2
    });
    let term = leader_term(&sim, slow);
    sim.partition(&[vec![slow, other], vec![leader, 4, 5]]);
    sim.run_for(10 * ELECTION_MS);
    assert_eq!(unapplied_conf_changes(&sim, slow), 2, "the slow member's disk caught up too early for the scenario");
    assert_eq!(leader_term(&sim, slow), term, "the slow member campaigned");
    // Once its disk catches up it applies both and rejoins the five.
    sim.disk_latency_of.clear();
    sim.heal();
    sim.one(3, 5, 60 * ELECTION_MS);
    sim.assert_state_machines_agree();
}
