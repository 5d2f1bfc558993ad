//! Clients and faults for churn runs: clients propose unique values to
//! whoever leads while nodes crash, restart and get partitioned at random.
//! A value is acknowledged when the leader it was proposed to applies it at
//! the index it was given, which is when a real server answers its client.

use std::collections::{BTreeMap, BTreeSet};

use raftkv::raft::NodeId;
use rand::Rng;

use super::{ELECTION_MS, Sim, encode_value};

struct Pending {
    node: NodeId,
    index: u64,
}

/// Runs clients and random faults for `duration_ms`. Returns the values
/// acknowledged to clients.
pub fn run_churn(sim: &mut Sim, duration_ms: u64) -> BTreeSet<u64> {
    let end = sim.now + duration_ms;
    let mut next_value = 1u64;
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut acked = BTreeSet::new();
    while sim.now < end {
        if sim.rng.random_bool(0.2)
            && let Some(leader) = sim.leader()
        {
            let value = next_value;
            next_value += 1;
            if let Ok(index) = sim.propose(leader, value) {
                pending.insert(value, Pending { node: leader, index });
            }
        }
        if sim.rng.random_bool(0.01) {
            inject_fault(sim);
        }
        if sim.membership_changes && sim.rng.random_bool(0.005) {
            change_membership(sim);
        }
        sim.step();
        pending.retain(|&value, p| {
            let node = &sim.nodes[&p.node];
            if !node.is_up() {
                return false; // the client never hears back: ambiguous
            }
            match node.applied.iter().rev().find(|(i, _)| *i == p.index) {
                Some((_, data)) if *data == encode_value(value) => {
                    acked.insert(value);
                    false
                }
                Some(_) => false, // another entry won that index: dropped
                None => node.raft().applied_index() < p.index,
            }
        });
    }
    acked
}

fn inject_fault(sim: &mut Sim) {
    let ids = sim.ids();
    match sim.rng.random_range(0..5) {
        0 => {
            let up = sim.up();
            if !up.is_empty() {
                let id = up[sim.rng.random_range(0..up.len())];
                sim.crash(id);
            }
        }
        1 | 2 => {
            let down: Vec<NodeId> = ids.iter().copied().filter(|id| !sim.nodes[id].is_up()).collect();
            if !down.is_empty() {
                let id = down[sim.rng.random_range(0..down.len())];
                sim.restart(id);
            }
        }
        3 => {
            let mut a = Vec::new();
            let mut b = Vec::new();
            for id in ids {
                if sim.rng.random_bool(0.5) { a.push(id) } else { b.push(id) }
            }
            sim.partition(&[a, b]);
        }
        _ => sim.net.heal(),
    }
}

/// One membership change through the leader, as an operator would make it:
/// add a learner (a new node), promote a learner, or remove a voter (the
/// leader included) while more than three remain. The core refuses a second
/// change while one is pending; a change lost with its leader is simply lost.
fn change_membership(sim: &mut Sim) {
    let Some(leader) = sim.leader() else { return };
    let conf = sim.nodes[&leader].raft().conf().clone();
    let mut next = conf.clone();
    match sim.rng.random_range(0..3) {
        0 if conf.learners.is_empty() && conf.voters.len() < 5 => {
            let id = sim.nodes.keys().max().copied().unwrap_or(0) + 1;
            next.learners.push(id);
            // The node exists before the change commits, as a member started
            // right after `member add`; if the change is lost it is never
            // a member and never votes (a learner does not campaign).
            sim.add_node(id, &next);
        }
        1 if !conf.learners.is_empty() => {
            let id = conf.learners[0];
            next.learners.retain(|&l| l != id);
            next.voters.push(id);
        }
        2 if conf.voters.len() > 3 => {
            let id = conf.voters[sim.rng.random_range(0..conf.voters.len())];
            next.voters.retain(|&v| v != id);
        }
        _ => return,
    }
    next.voters.sort_unstable();
    let _ = sim.nodes.get_mut(&leader).unwrap().raft_mut().propose_conf_change(next, Default::default());
}

/// After the faults stop: a leader must be elected and a client's retries
/// must get through within `limit_ms`, and every acknowledged value must then
/// be applied on every member of the configuration in force (a removed node
/// stops receiving the log).
pub fn settle(sim: &mut Sim, acked: &BTreeSet<u64>, limit_ms: u64) {
    let start = sim.now;
    sim.wait_leader(limit_ms);
    let marker = u64::MAX - 1;
    // Committed once anywhere; then on every member of the configuration in
    // force, which a change still pending from the churn may yet alter.
    sim.one(marker, 1, limit_ms.saturating_sub(sim.now - start).max(ELECTION_MS));
    sim.run_until(limit_ms, "every member applied the marker and every acknowledged value", |s| {
        let Some(conf) = s.leader_conf() else { return false };
        Sim::members_of(&conf).iter().all(|id| {
            let values = s.nodes[id].applied_values();
            values.contains(&marker) && acked.iter().all(|v| values.contains(v))
        })
    });
    sim.assert_state_machines_agree();
}
