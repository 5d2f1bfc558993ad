//! Snapshots in the simulation, modelled on the server's: a snapshot is the
//! state machine at an applied index, durable the moment it is taken (the
//! server fsyncs and renames before it tells the core); the log is then
//! compacted to the older of (newest − catch-up) and the previous snapshot.
//! A transfer is out of band, like the server's InstallSnapshot call: it
//! takes a few ms, reads the sender's file, fails if either end is down or
//! the link is cut, and always reports back to the sender's core.

use bytes::Bytes;
use raftkv::proto::SnapshotMeta;
use raftkv::raft::{Body, InitialState, Message, NodeId};
use raftkv::storage::LogStore;
use rand::Rng;

use super::{Node, Sim};

#[derive(Clone, Debug)]
pub struct SimSnapshot {
    pub meta: SnapshotMeta,
    /// The state machine at `meta.index`: every command applied, in order.
    pub applied: Vec<(u64, Bytes)>,
}

impl Node {
    /// Picks the newest snapshot this node's log continues, as the server's
    /// `snapshot::recover` does, and resets the state machine to it.
    pub(super) fn restore(&mut self, state: &mut InitialState, seed: u64) -> Option<SimSnapshot> {
        let offset = state.offset_index;
        let term_at = |index: u64| match index.checked_sub(offset + 1) {
            None if index == offset => Some(state.offset_term),
            None => None,
            Some(i) => state.entries.get(i as usize).map(|e| e.term),
        };
        let found = self.snapshots.iter().rev().find(|s| term_at(s.meta.index) == Some(s.meta.term)).cloned();
        self.incoming.clear();
        match &found {
            Some(s) => {
                state.conf = s.meta.conf.clone().expect("snapshots carry their configuration");
                state.hard_state.commit = state.hard_state.commit.max(s.meta.index);
                self.applied = s.applied.clone();
                self.restored_from = s.meta.index;
                self.snap_newest = s.meta.index;
                self.snap_previous =
                    self.snapshots.iter().rev().map(|p| p.meta.index).find(|&i| i < s.meta.index).unwrap_or(0);
            }
            None => {
                assert_eq!(offset, 0, "seed {seed}: node {} has a compacted log and no usable snapshot", self.id);
                self.applied.clear();
                self.restored_from = 0;
                self.snap_newest = 0;
                self.snap_previous = 0;
            }
        }
        found
    }

    /// A snapshot became the newest: older ones than the previous go.
    fn record_snapshot(&mut self, index: u64) -> bool {
        if index <= self.snap_newest {
            return false;
        }
        self.snap_previous = self.snap_newest;
        self.snap_newest = index;
        let keep_from = if self.snap_previous > 0 { self.snap_previous } else { self.snap_newest };
        self.snapshots.retain(|s| s.meta.index >= keep_from);
        true
    }
}

impl Sim {
    /// Sends a message: snapshot announcements become transfers.
    pub(super) fn send(&mut self, msg: Message) {
        if matches!(msg.body, Body::Snapshot { .. }) {
            let done_at = self.now + self.rng.random_range(5..=20);
            self.transfers.push((done_at, msg));
        } else {
            self.net.send(self.now, msg, &mut self.rng);
        }
    }

    pub(super) fn finish_transfers(&mut self) {
        let now = self.now;
        let (due, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.transfers).into_iter().partition(|t| t.0 <= now);
        self.transfers = waiting;
        for (_, msg) in due {
            self.finish_transfer(msg);
        }
    }

    fn finish_transfer(&mut self, msg: Message) {
        let Body::Snapshot { meta } = &msg.body else { unreachable!("only snapshots are transferred") };
        let (from, to) = (msg.from, msg.to);
        let file = self.nodes[&from].snapshots.iter().find(|s| s.meta == *meta).cloned();
        let delivered = match file {
            Some(file) if self.nodes[&from].is_up() && self.nodes[&to].is_up() && !self.net.is_cut(from, to) => {
                let node = self.nodes.get_mut(&to).unwrap();
                // Durable and verified before the core hears of it.
                if !node.snapshots.iter().any(|s| s.meta == file.meta) {
                    node.snapshots.push(file.clone());
                    node.snapshots.sort_by_key(|s| s.meta.index);
                }
                // Several may arrive before the core's Ready: keep each.
                node.incoming.push(file);
                node.raft_mut().step(msg);
                true
            }
            _ => false,
        };
        if let Some(raft) = self.nodes.get_mut(&from).and_then(|n| n.raft.as_mut()) {
            raft.report_snapshot(to, delivered);
        }
    }

    /// The core installs the snapshot it was given: the state machine is
    /// replaced (the store's log is reset by the Ready's write).
    pub(super) fn install_snapshot(&mut self, id: NodeId, meta: &SnapshotMeta) {
        let node = self.nodes.get_mut(&id).unwrap();
        let at = node.incoming.iter().position(|s| s.meta == *meta);
        let at = at.unwrap_or_else(|| panic!("seed {}: node {id} installs a snapshot it never received", self.seed));
        let file = node.incoming.swap_remove(at);
        node.incoming.retain(|s| s.meta.index > meta.index);
        self.checker.on_snapshot(self.now, id, meta.index, &file.applied);
        node.applied = file.applied;
        node.installs += 1;
        node.record_snapshot(meta.index);
    }

    /// Takes a snapshot if `snapshot_every` entries were applied since the
    /// newest, then compacts the log behind it.
    pub(super) fn maybe_snapshot(&mut self, id: NodeId) {
        let Some(every) = self.snapshot_every else { return };
        let catchup = self.snapshot_catchup;
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = node.raft.as_mut() else { return };
        let applied = raft.applied_index();
        if applied < node.snap_newest + every {
            return;
        }
        let term = raft.log_term(applied).expect("the applied entry is in the log");
        let meta = SnapshotMeta { index: applied, term, conf: Some(raft.conf().clone()) };
        raft.snapshot_available(meta.clone());
        node.snapshots.push(SimSnapshot { meta: meta.clone(), applied: node.applied.clone() });
        node.snapshots_taken += 1;
        node.record_snapshot(applied);
        let by_margin = applied.saturating_sub(catchup);
        let to = if node.snap_previous > 0 { by_margin.min(node.snap_previous) } else { by_margin };
        if to >= node.store.first_index() {
            let term = node.store.term(to).expect("compaction point is in the store");
            let point = SnapshotMeta { index: to, term, conf: meta.conf };
            node.store.compact(&point).expect("memory store compacts");
            assert!(node.raft_mut().compact(to), "seed {}: node {id} cannot compact to {to}", self.seed);
        }
    }
}
