//! The randomized safety run: many seeds of churn (crashes, restarts,
//! partitions, lossy and reordering networks, frequent snapshots, and in a
//! share of the seeds membership changes) with every Raft safety property
//! checked every simulated millisecond, then liveness once faults stop.
//!
//! `RAFTKV_SIM_SEEDS=N` runs N seeds (default 1000); `RAFTKV_SIM_SEED=S`
//! replays seed S alone. A failure names its seed.
//!
//! A plain binary (`harness = false`) so its summary line shows in
//! `cargo test` output, where CI logs it.

mod support;

use std::time::Instant;

use support::sim::{ELECTION_MS, NetConfig, Sim, workload};

/// Runs one seed; returns whether the cluster ended in another configuration
/// than it started with (so the summary shows membership really changed).
fn run_seed(seed: u64) -> bool {
    let nodes = if seed.is_multiple_of(2) { 3 } else { 5 };
    let net = match seed % 3 {
        0 => NetConfig::reliable(),
        1 => NetConfig::unreliable(),
        _ => NetConfig::unreliable_long_reordering(),
    };
    let mut sim = Sim::new(nodes, seed, net);
    // One command per append (acknowledgements cover part of a backlog),
    // or everything in one.
    sim.max_msg_bytes = if seed % 5 == 4 { 1 << 20 } else { 8 };
    // Half the seeds snapshot often and compact hard, so crashed and
    // partitioned nodes keep falling behind the log's start.
    if seed % 4 >= 2 {
        sim.snapshot_every = Some(5 + seed % 23);
        sim.snapshot_catchup = seed % 7;
    }
    // Three seeds in seven also change membership under the faults.
    sim.membership_changes = seed % 7 < 3;
    let acked = workload::run_churn(&mut sim, 30 * ELECTION_MS);
    sim.heal();
    // Liveness: bounded time to a leader and to every retry getting through.
    workload::settle(&mut sim, &acked, 100 * ELECTION_MS);
    sim.leader_conf().is_some_and(|conf| conf != raftkv::proto::ConfState::with_voters(1..=nodes))
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.parse().unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

fn main() {
    if let Some(seed) = env_u64("RAFTKV_SIM_SEED") {
        run_seed(seed);
        println!("simulation seed {seed} passed");
        return;
    }
    let seeds = env_u64("RAFTKV_SIM_SEEDS").unwrap_or(1000);
    let start = Instant::now();
    let mut changed = 0;
    for seed in 0..seeds {
        match std::panic::catch_unwind(|| run_seed(seed)) {
            Ok(moved) => changed += usize::from(moved),
            Err(_) => {
                eprintln!("simulation seed {seed} failed; replay with RAFTKV_SIM_SEED={seed}");
                std::process::exit(1);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "simulation sweep: {seeds} seeds passed in {secs:.1} s ({:.0} seeds/min); {changed} ended with another membership",
        seeds as f64 * 60.0 / secs
    );
}
