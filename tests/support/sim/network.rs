//! The simulated network: seeded delay, loss, duplication, long reordering,
//! and partitions as a set of cut directed links.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use raftkv::raft::{Message, NodeId};
use rand::Rng;
use rand::rngs::SmallRng;

#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Probability a message is lost.
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Delivery delay range in simulated ms.
    pub min_delay: u64,
    pub max_delay: u64,
    /// Probability a message is held back a long time (200..2000 ms), so it
    /// arrives after many later ones.
    pub long_delay: f64,
    /// Keep each link's messages in order, as a TCP stream does.
    pub fifo: bool,
}

impl NetConfig {
    pub fn reliable() -> NetConfig {
        NetConfig { drop: 0.0, duplicate: 0.0, min_delay: 1, max_delay: 3, long_delay: 0.0, fifo: true }
    }

    pub fn unreliable() -> NetConfig {
        NetConfig { drop: 0.1, duplicate: 0.05, min_delay: 1, max_delay: 27, long_delay: 0.0, fifo: false }
    }

    pub fn unreliable_long_reordering() -> NetConfig {
        NetConfig { long_delay: 0.1, ..NetConfig::unreliable() }
    }
}

struct InFlight {
    at: u64,
    seq: u64,
    msg: Message,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub struct Network {
    pub config: NetConfig,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Per link, the latest delivery time scheduled (for FIFO links).
    last_delivery: BTreeMap<(NodeId, NodeId), u64>,
    /// Messages handed to the network, by everyone, since the counter was reset.
    pub sent: u64,
    /// Append rejections among them.
    pub rejections: u64,
}

impl Network {
    pub fn new(config: NetConfig) -> Network {
        Network {
            config,
            queue: BinaryHeap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            last_delivery: BTreeMap::new(),
            sent: 0,
            rejections: 0,
        }
    }

    pub fn send(&mut self, now: u64, msg: Message, rng: &mut SmallRng) {
        self.sent += 1;
        if let raftkv::raft::Body::AppendResponse { reject: true, .. } = msg.body {
            self.rejections += 1;
        }
        if self.is_cut(msg.from, msg.to) || rng.random_bool(self.config.drop) {
            return;
        }
        let copies = if rng.random_bool(self.config.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let mut delay = rng.random_range(self.config.min_delay..=self.config.max_delay);
            if rng.random_bool(self.config.long_delay) {
                delay += rng.random_range(200..2000);
            }
            let mut at = now + delay;
            if self.config.fifo {
                let last = self.last_delivery.entry((msg.from, msg.to)).or_default();
                at = at.max(*last);
                *last = at;
            }
            self.seq += 1;
            self.queue.push(Reverse(InFlight { at, seq: self.seq, msg: msg.clone() }));
        }
    }

    /// Messages due by `now`, in delivery order. A link cut while a message
    /// was in flight loses it.
    pub fn due(&mut self, now: u64) -> Vec<Message> {
        let mut out = Vec::new();
        while self.queue.peek().is_some_and(|Reverse(m)| m.at <= now) {
            let Reverse(m) = self.queue.pop().expect("peeked");
            if !self.is_cut(m.msg.from, m.msg.to) {
                out.push(m.msg);
            }
        }
        out
    }

    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Cuts every link between `node` and `others`, both directions.
    pub fn isolate(&mut self, node: NodeId, others: impl IntoIterator<Item = NodeId>) {
        for other in others {
            if other != node {
                self.cut.insert((node, other));
                self.cut.insert((other, node));
            }
        }
    }

    /// Restores every link between `node` and `others`.
    pub fn reconnect(&mut self, node: NodeId, others: impl IntoIterator<Item = NodeId>) {
        for other in others {
            self.cut.remove(&(node, other));
            self.cut.remove(&(other, node));
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }
}
