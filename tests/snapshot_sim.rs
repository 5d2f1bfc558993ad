//! Snapshots in the seeded simulation: the log stays bounded, nodes that fell
//! behind the log's start (cut off, or crashed) catch up through a snapshot
//! on reliable and unreliable networks, a cluster crashed after snapshots
//! restarts from them without its commit index going back, and a node
//! restored from a snapshot takes and restores its next one. The safety
//! checker runs every simulated millisecond, including on installed
//! snapshots' contents.

mod support;

use support::sim::{ELECTION_MS, NetConfig, Sim};

const SEED: u64 = 7;
const LIMIT: u64 = 100 * ELECTION_MS;

/// A cluster that snapshots every 20 applied entries and keeps 10 behind.
fn snapshotting(n: u64, seed: u64, net: NetConfig) -> Sim {
    let mut sim = Sim::new(n, seed, net);
    sim.snapshot_every = Some(20);
    sim.snapshot_catchup = 10;
    sim
}

/// Commits `values` with `expected` nodes applying each.
fn write(sim: &mut Sim, values: std::ops::Range<u64>, expected: usize) {
    for v in values {
        sim.one(v, expected, LIMIT);
    }
}

/// Waits until every node applied every value in `values`, then checks
/// their state machines agree.
fn converge(sim: &mut Sim, values: std::ops::Range<u64>) {
    sim.run_until(LIMIT, "every node applied every value", |s| {
        s.nodes.values().all(|n| {
            let applied = n.applied_values();
            values.clone().all(|v| applied.contains(&v))
        })
    });
    sim.assert_state_machines_agree();
}

fn held_entries(sim: &Sim, id: u64) -> u64 {
    let raft = sim.nodes[&id].raft();
    raft.last_index() + 1 - raft.first_index()
}

#[test]
fn the_log_stays_bounded_while_snapshots_are_taken() {
    let mut sim = snapshotting(3, SEED, NetConfig::reliable());
    sim.wait_leader(LIMIT);
    for chunk in 0..10 {
        write(&mut sim, chunk * 50 + 1..chunk * 50 + 51, 3);
        for id in sim.ids() {
            // every + catch-up + whatever is not yet applied everywhere.
            assert!(held_entries(&sim, id) <= 60, "node {id} holds {} entries", held_entries(&sim, id));
        }
    }
    for node in sim.nodes.values() {
        assert!(node.snapshots_taken >= 20, "node {} took {} snapshots", node.id, node.snapshots_taken);
        assert!(node.snapshots.len() <= 2, "node {} keeps {} snapshots", node.id, node.snapshots.len());
    }
}

fn cut_off_node_catches_up(net: NetConfig, seed: u64, cut_leader: bool) {
    let mut sim = snapshotting(3, seed, net);
    let leader = sim.wait_leader(LIMIT);
    write(&mut sim, 1..6, 3);
    let cut = if cut_leader { leader } else { sim.ids().into_iter().find(|&id| id != leader).unwrap() };
    sim.disconnect(cut);
    write(&mut sim, 6..200, 2);
    sim.connect(cut);
    converge(&mut sim, 1..200);
    assert!(sim.nodes[&cut].installs >= 1, "node {cut} caught up without a snapshot");
    // It follows from the log afterwards.
    write(&mut sim, 200..230, 3);
}

#[test]
fn a_cut_off_follower_catches_up_through_a_snapshot() {
    cut_off_node_catches_up(NetConfig::reliable(), SEED, false);
}

#[test]
fn a_cut_off_leader_catches_up_through_a_snapshot() {
    cut_off_node_catches_up(NetConfig::reliable(), SEED, true);
}

#[test]
fn cut_off_nodes_catch_up_through_snapshots_on_an_unreliable_network() {
    for seed in 0..6 {
        cut_off_node_catches_up(NetConfig::unreliable(), seed, seed % 2 == 0);
    }
}

#[test]
fn a_crashed_node_catches_up_through_a_snapshot_on_restart() {
    for seed in 0..4 {
        let net = if seed % 2 == 0 { NetConfig::reliable() } else { NetConfig::unreliable() };
        let mut sim = snapshotting(3, seed, net);
        let leader = sim.wait_leader(LIMIT);
        write(&mut sim, 1..6, 3);
        let lagging = sim.ids().into_iter().find(|&id| id != leader).unwrap();
        sim.crash(lagging);
        write(&mut sim, 6..200, 2);
        sim.restart(lagging);
        converge(&mut sim, 1..200);
        assert!(sim.nodes[&lagging].installs >= 1, "seed {seed}: node {lagging} caught up without a snapshot");
    }
}

#[test]
fn every_node_crashed_after_snapshots_restarts_from_them_and_commit_never_goes_back() {
    for seed in 0..4 {
        let mut sim = snapshotting(5, seed, NetConfig::unreliable());
        sim.wait_leader(LIMIT);
        write(&mut sim, 1..120, 3);
        // The checker fails the run if any durable commit index goes back.
        let commits: Vec<u64> = sim.ids().iter().map(|id| sim.nodes[id].raft().commit_index()).collect();
        for id in sim.ids() {
            sim.crash(id);
        }
        sim.heal();
        for (id, before) in sim.ids().into_iter().zip(commits) {
            let node = &sim.nodes[&id];
            assert!(node.restored_from > 0, "seed {seed}: node {id} restarted without its snapshot");
            assert!(node.raft().commit_index() >= node.restored_from.min(before));
        }
        write(&mut sim, 120..150, 5);
        converge(&mut sim, 1..150);
    }
}

#[test]
fn a_node_restored_from_a_snapshot_takes_and_restores_its_next_one() {
    let mut sim = snapshotting(3, SEED, NetConfig::reliable());
    let leader = sim.wait_leader(LIMIT);
    let node = sim.ids().into_iter().find(|&id| id != leader).unwrap();
    write(&mut sim, 1..50, 3);
    sim.crash(node);
    sim.restart(node);
    let first = sim.nodes[&node].restored_from;
    assert!(first > 0, "restarted without a snapshot");
    let taken = sim.nodes[&node].snapshots_taken;
    write(&mut sim, 50..120, 3);
    assert!(sim.nodes[&node].snapshots_taken > taken, "no snapshot after the restore");
    sim.crash(node);
    sim.restart(node);
    assert!(sim.nodes[&node].restored_from > first, "the next restart did not use the newer snapshot");
    converge(&mut sim, 1..120);
    write(&mut sim, 120..130, 3);
}
