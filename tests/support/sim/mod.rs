//! A deterministic simulation of a whole raftkv cluster in one thread.
//!
//! Time advances in 1 ms steps. Each step delivers the messages due, finishes
//! the disk writes due, ticks the nodes whose tick is due, drains every
//! node's Ready, and runs the [`Checker`]. Disk writes take simulated time and
//! are synced only when they finish, so a crash in between loses them (or a
//! prefix of them), as a power cut would. Everything random comes from one
//! seed: a failing seed replays the same run. Snapshots are modelled in
//! [`snapshot`]: taken every `snapshot_every` applied entries, transferred
//! out of band like the server's InstallSnapshot call.

pub mod checker;
pub mod network;
mod snapshot;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raftkv::proto::{ConfState, Entry};
use raftkv::raft::{Config, Message, NodeId, Raft, RaftError, ReadState, Ready};
use raftkv::storage::{LogStore, LogWrite, MemStore};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
pub use snapshot::SimSnapshot;

pub use checker::Checker;
pub use network::{NetConfig, Network};

/// Simulated ms per tick; heartbeat every 2 ticks, elections after 10–20.
pub const TICK_MS: u64 = 10;
pub const ELECTION_MS: u64 = 10 * TICK_MS;

/// A write the disk is working on, and what waits for it.
struct DiskWrite {
    done_at: u64,
    sync: bool,
    after: Vec<Message>,
}

pub struct Node {
    pub id: NodeId,
    /// None while crashed.
    pub raft: Option<Raft>,
    pub store: MemStore,
    disk: Option<DiskWrite>,
    /// The state machine: the commands applied, in order.
    pub applied: Vec<(u64, Bytes)>,
    pub read_states: Vec<ReadState>,
    tick_phase: u64,
    life: u64,
    /// Durable snapshot files, by index (they survive crashes).
    pub snapshots: Vec<SimSnapshot>,
    /// Received snapshots waiting for the core to install one.
    incoming: Vec<SimSnapshot>,
    /// The snapshot this life started from (0: none).
    pub restored_from: u64,
    /// Snapshots installed from a leader, and taken, across lives.
    pub installs: u64,
    pub snapshots_taken: u64,
    /// Index of the newest snapshot and of the one before it (0: none).
    snap_newest: u64,
    snap_previous: u64,
}

impl Node {
    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }
    pub fn raft(&self) -> &Raft {
        self.raft.as_ref().expect("node is up")
    }
    pub fn raft_mut(&mut self) -> &mut Raft {
        self.raft.as_mut().expect("node is up")
    }
    pub fn applied_values(&self) -> BTreeSet<u64> {
        self.applied.iter().map(|(_, d)| decode_value(d)).collect()
    }
}

pub fn encode_value(v: u64) -> Bytes {
    Bytes::copy_from_slice(&v.to_be_bytes())
}

pub fn decode_value(data: &[u8]) -> u64 {
    u64::from_be_bytes(data.try_into().expect("simulation commands are 8 bytes"))
}

pub struct Sim {
    pub seed: u64,
    pub now: u64,
    pub rng: SmallRng,
    pub net: Network,
    pub nodes: BTreeMap<NodeId, Node>,
    pub checker: Checker,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Simulated disk latency range in ms.
    pub disk_latency: (u64, u64),
    /// Nodes whose disk is slower (or faster) than `disk_latency`.
    pub disk_latency_of: BTreeMap<NodeId, (u64, u64)>,
    /// Append payload limit: small, so that catching up takes several
    /// messages and acknowledgements cover part of a backlog.
    pub max_msg_bytes: u64,
    /// Take a snapshot every this many applied entries (`None`: never).
    pub snapshot_every: Option<u64>,
    /// Entries kept in the log behind the newest snapshot.
    pub snapshot_catchup: u64,
    /// Churn runs also change membership: add learners, promote them,
    /// remove voters (the leader included).
    pub membership_changes: bool,
    /// Snapshot transfers under way: (when they finish, the announcement).
    transfers: Vec<(u64, Message)>,
}

impl Sim {
    /// A cluster of voters `1..=n`.
    pub fn new(n: u64, seed: u64, net: NetConfig) -> Sim {
        let mut sim = Sim {
            seed,
            now: 0,
            rng: SmallRng::seed_from_u64(seed),
            net: Network::new(net),
            nodes: BTreeMap::new(),
            checker: Checker::default(),
            pre_vote: true,
            check_quorum: true,
            disk_latency: (1, 3),
            disk_latency_of: BTreeMap::new(),
            max_msg_bytes: 8,
            snapshot_every: None,
            snapshot_catchup: 0,
            membership_changes: false,
            transfers: Vec::new(),
        };
        let conf = ConfState::with_voters(1..=n);
        for id in 1..=n {
            sim.add_node(id, &conf);
        }
        sim
    }

    /// Adds a member with an empty store bootstrapped to `conf` (a new
    /// cluster's member, or a node joining as a learner).
    pub fn add_node(&mut self, id: NodeId, conf: &ConfState) {
        let mut store = MemStore::new();
        store.bootstrap(conf).expect("fresh store");
        let tick_phase = self.rng.random_range(0..TICK_MS);
        self.nodes.insert(
            id,
            Node {
                id,
                raft: None,
                store,
                disk: None,
                applied: Vec::new(),
                read_states: Vec::new(),
                tick_phase,
                life: 0,
                snapshots: Vec::new(),
                incoming: Vec::new(),
                restored_from: 0,
                installs: 0,
                snapshots_taken: 0,
                snap_newest: 0,
                snap_previous: 0,
            },
        );
        self.start(id);
    }

    /// The configuration the newest leader works with, if there is a leader.
    pub fn leader_conf(&self) -> Option<ConfState> {
        Some(self.nodes[&self.leader()?].raft().conf().clone())
    }

    /// Every node that is a member (voter or learner) of `conf`.
    pub fn members_of(conf: &ConfState) -> Vec<NodeId> {
        conf.voters.iter().chain(&conf.learners).copied().collect()
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    fn start(&mut self, id: NodeId) {
        let seed = self.seed;
        let node = self.nodes.get_mut(&id).unwrap();
        node.life += 1;
        let mut cfg = Config::new(id);
        cfg.heartbeat_tick = 2;
        cfg.election_tick = 10;
        cfg.pre_vote = self.pre_vote;
        cfg.check_quorum = self.check_quorum;
        cfg.max_inflight = 16;
        cfg.max_msg_bytes = self.max_msg_bytes;
        cfg.seed = seed.wrapping_mul(1_000_003).wrapping_add(id * 7919 + node.life);
        let mut state = node.store.initial_state().expect("memory store reads");
        let restored = node.restore(&mut state, seed);
        let applied = restored.as_ref().map_or(0, |s| s.meta.index);
        let mut raft = Raft::new(cfg, state, applied).expect("store state is consistent");
        if let Some(snapshot) = restored {
            raft.snapshot_available(snapshot.meta);
        }
        node.read_states.clear();
        self.checker.on_restart(self.now, id, &raft, node.store.durable_hard_state(), applied);
        node.raft = Some(raft);
    }

    /// Power-cuts a node: it loses a random prefix of its unsynced writes and
    /// every message and timer it had.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        if node.raft.is_none() {
            return;
        }
        let survive = self.rng.random_range(0..=node.store.unsynced_writes());
        node.store.crash(survive);
        node.raft = None;
        node.disk = None;
        let hs = node.store.durable_hard_state();
        self.checker.on_durable(self.now, id, hs);
    }

    pub fn restart(&mut self, id: NodeId) {
        if !self.nodes[&id].is_up() {
            self.start(id);
        }
    }

    pub fn up(&self) -> Vec<NodeId> {
        self.nodes.values().filter(|n| n.is_up()).map(|n| n.id).collect()
    }

    /// Cuts `id` off from every other node.
    pub fn disconnect(&mut self, id: NodeId) {
        let ids = self.ids();
        self.net.isolate(id, ids);
    }

    /// Restores every link of `id`, including to nodes that are themselves cut off.
    pub fn connect(&mut self, id: NodeId) {
        let ids = self.ids();
        self.net.reconnect(id, ids);
    }

    /// Splits the cluster: links between the groups are cut.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.net.heal();
        for (i, a) in groups.iter().enumerate() {
            for b in &groups[i + 1..] {
                for &x in a {
                    self.net.isolate(x, b.iter().copied());
                }
            }
        }
    }

    /// Ends every fault: links back, network reliable, crashed nodes restarted.
    pub fn heal(&mut self) {
        self.net.heal();
        self.net.config = NetConfig::reliable();
        for id in self.ids() {
            self.restart(id);
        }
    }

    // ---- Time ----------------------------------------------------------

    pub fn step(&mut self) {
        self.now += 1;
        let now = self.now;
        self.finish_transfers();
        for msg in self.net.due(now) {
            if let Some(raft) = self.nodes.get_mut(&msg.to).and_then(|n| n.raft.as_mut()) {
                raft.step(msg);
            }
        }
        for id in self.ids() {
            let node = self.nodes.get_mut(&id).unwrap();
            if node.disk.as_ref().is_some_and(|d| d.done_at <= now) {
                self.finish_disk_write(id);
            }
            let node = self.nodes.get_mut(&id).unwrap();
            if let Some(raft) = node.raft.as_mut()
                && (now + node.tick_phase).is_multiple_of(TICK_MS)
            {
                raft.tick();
            }
            self.drain_ready(id);
        }
        for node in self.nodes.values() {
            if let Some(raft) = &node.raft {
                self.checker.check_node(now, raft);
            }
        }
        if !self.checker.violations.is_empty() {
            panic!("seed {}: safety violated:\n{}", self.seed, self.checker.violations.join("\n"));
        }
    }

    pub fn run_for(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    /// Steps until `done` holds; fails the test after `limit_ms`.
    pub fn run_until(&mut self, limit_ms: u64, what: &str, mut done: impl FnMut(&Sim) -> bool) {
        let deadline = self.now + limit_ms;
        while !done(self) {
            assert!(self.now < deadline, "seed {}: {what} did not happen within {limit_ms} ms", self.seed);
            self.step();
        }
    }

    fn drain_ready(&mut self, id: NodeId) {
        loop {
            let node = self.nodes.get_mut(&id).unwrap();
            let Some(raft) = node.raft.as_mut() else { return };
            if node.disk.is_some() || !raft.has_ready() {
                return;
            }
            let rd: Ready = raft.ready();
            let raft = node.raft.as_ref().unwrap();
            self.checker.on_write(self.now, id, &rd.entries, |i| {
                rd.entries.iter().find(|e| e.index == i).map(|e| e.term).or_else(|| raft.log_term(i))
            });
            for msg in rd.messages.iter().cloned() {
                self.send(msg);
            }
            if let Some(meta) = &rd.snapshot {
                self.install_snapshot(id, meta);
            }
            // The write is issued now and synced when the disk finishes.
            let must_persist = rd.must_persist();
            let node = self.nodes.get_mut(&id).unwrap();
            if must_persist {
                let write = LogWrite { sync: false, ..LogWrite::from_ready(&rd) };
                node.store.persist(write).expect("memory store accepts the core's writes");
            }
            let Ready { persisted_messages, committed_entries, read_states, sync, .. } = rd;
            self.apply(id, committed_entries);
            self.maybe_snapshot(id);
            self.nodes.get_mut(&id).unwrap().read_states.extend(read_states);
            if !must_persist {
                for msg in persisted_messages {
                    self.send(msg);
                }
                self.nodes.get_mut(&id).unwrap().raft_mut().advance();
                continue;
            }
            let node = self.nodes.get_mut(&id).unwrap();
            let (lo, hi) = self.disk_latency_of.get(&id).copied().unwrap_or(self.disk_latency);
            let latency = self.rng.random_range(lo..=hi);
            node.disk = Some(DiskWrite { done_at: self.now + latency, sync, after: persisted_messages });
        }
    }

    fn finish_disk_write(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        let write = node.disk.take().expect("a write in progress");
        if write.sync {
            node.store.sync();
            let hs = node.store.durable_hard_state();
            self.checker.on_durable(self.now, id, hs);
        }
        let node = self.nodes.get_mut(&id).unwrap();
        if let Some(raft) = node.raft.as_mut() {
            raft.advance();
        }
        for msg in write.after {
            self.send(msg);
        }
    }

    fn apply(&mut self, id: NodeId, entries: Vec<Entry>) {
        for e in entries {
            self.checker.on_apply(self.now, id, &e);
            let node = self.nodes.get_mut(&id).unwrap();
            if e.is_conf_change() {
                let change = e.decode_conf_change().expect("conf change entries decode");
                node.raft_mut().apply_conf_change(change.conf.expect("decoded with a configuration"));
            } else if !e.data.is_empty() {
                node.applied.push((e.index, e.data.clone()));
            }
        }
    }

    // ---- Queries and client operations ---------------------------------

    /// The live nodes that believe they lead, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, u64)> {
        self.nodes
            .values()
            .filter_map(|n| n.raft.as_ref())
            .filter(|r| r.is_leader())
            .map(|r| (r.id(), r.term()))
            .collect()
    }

    /// The leader of the highest term among the live nodes, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.leaders().into_iter().max_by_key(|&(_, t)| t).map(|(id, _)| id)
    }

    /// Waits for a leader that a quorum of the given nodes follows.
    pub fn wait_leader(&mut self, limit_ms: u64) -> NodeId {
        self.run_until(limit_ms, "leader election", |s| s.stable_leader().is_some());
        self.stable_leader().unwrap()
    }

    /// A leader whose term a majority of the cluster shares, knowing it.
    pub fn stable_leader(&self) -> Option<NodeId> {
        let (leader, term) = self.leaders().into_iter().max_by_key(|&(_, t)| t)?;
        let followers = self
            .nodes
            .values()
            .filter_map(|n| n.raft.as_ref())
            .filter(|r| r.term() == term && r.leader() == Some(leader))
            .count();
        let voters = self.nodes[&leader].raft().conf().voters.len();
        (followers > voters / 2).then_some(leader)
    }

    pub fn propose(&mut self, on: NodeId, value: u64) -> Result<u64, RaftError> {
        let result = self.nodes.get_mut(&on).unwrap().raft_mut().propose(encode_value(value));
        self.drain_ready(on);
        result
    }

    /// Proposes on the current leader, waiting for one if needed.
    pub fn propose_on_leader(&mut self, value: u64) -> (NodeId, u64) {
        let leader = self.wait_leader(10_000);
        let index = self.propose(leader, value).expect("leader accepts proposals");
        (leader, index)
    }

    /// How many live nodes applied `value`.
    pub fn applied_count(&self, value: u64) -> usize {
        let data = encode_value(value);
        self.nodes.values().filter(|n| n.is_up() && n.applied.iter().any(|(_, d)| *d == data)).count()
    }

    /// The index at which `value` was applied, checking every node that
    /// applied it agrees.
    pub fn applied_index(&self, value: u64) -> Option<u64> {
        let data = encode_value(value);
        let mut found = None;
        for node in self.nodes.values() {
            if let Some((i, _)) = node.applied.iter().find(|(_, d)| *d == data) {
                assert!(found.is_none_or(|f| f == *i), "value {value} applied at two indexes");
                found = Some(*i);
            }
        }
        found
    }

    /// Proposes `value` and waits until `expected` live nodes applied it.
    /// Re-proposes if leadership changed. Returns the index.
    pub fn one(&mut self, value: u64, expected: usize, limit_ms: u64) -> u64 {
        let deadline = self.now + limit_ms;
        while self.now < deadline {
            if let Some(leader) = self.stable_leader()
                && self.propose(leader, value).is_ok()
            {
                let wait_until = (self.now + 2 * ELECTION_MS).min(deadline);
                while self.now < wait_until {
                    if self.applied_count(value) >= expected {
                        return self.applied_index(value).unwrap();
                    }
                    self.step();
                }
                continue;
            }
            self.step();
        }
        panic!("seed {}: value {value} not applied on {expected} nodes within {limit_ms} ms", self.seed);
    }

    /// Every live node's applied sequence is a prefix of the longest one.
    pub fn assert_state_machines_agree(&self) {
        let longest = self.nodes.values().map(|n| &n.applied).max_by_key(|a| a.len()).unwrap();
        for node in self.nodes.values().filter(|n| n.is_up()) {
            assert_eq!(
                &longest[..node.applied.len()],
                &node.applied[..],
                "seed {}: node {} diverged",
                self.seed,
                node.id
            );
        }
    }
}
