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

/// After the faults stop: a leader must be elected and a client's retries
/// must get through within `limit_ms`, and every acknowledged value must then
/// be applied on every node.
pub fn settle(sim: &mut Sim, acked: &BTreeSet<u64>, limit_ms: u64) {
    let n = sim.nodes.len();
    let start = sim.now;
    sim.wait_leader(limit_ms);
    let marker = u64::MAX - 1;
    sim.one(marker, n, limit_ms.saturating_sub(sim.now - start).max(ELECTION_MS));
    sim.run_until(limit_ms, "every node applied every acknowledged value", |s| {
        s.nodes.values().all(|node| {
            let values = node.applied_values();
            acked.iter().all(|v| values.contains(v))
        })
    });
    sim.assert_state_machines_agree();
}
