//! Outgoing peer traffic: one long-lived gRPC stream per peer, fed from a
//! queue bounded in bytes (appends carry up to a MiB each, heartbeats a few
//! bytes: a bound in messages would be either useless or far too tight). A
//! full queue drops the message (Raft retransmits what matters, and read
//! rounds have deadlines), so a slow or dead peer never holds up the node and
//! never holds more than [`QUEUE_BYTES`] of its memory; a broken link is
//! reconnected with exponential backoff and reported in the log, not on every
//! attempt. Snapshots do not share the stream: they go on their own call
//! ([`super::snapshots`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::config::Member;
use super::membership;
use super::metrics::Metrics;
use super::node::Request;
use super::snapshots::SnapshotSender;
use super::wire::to_wire;
use crate::proto::Membership;
use crate::proto::raftpeer::raft_peer_client::RaftPeerClient;
use crate::proto::raftpeer::{PeerMessage, ProbeRequest};
use crate::raft::{Body, Message, NodeId};
use crate::tls::Dialer;

/// Bytes queued per peer before new messages are dropped (one message is
/// always accepted into an empty queue, however large).
pub const QUEUE_BYTES: usize = 64 << 20;
/// Messages handed to the gRPC stream ahead of the one being written.
const STREAM_BUFFER: usize = 256;
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A stream that lived this long was a working link: failures start over.
const STABLE: Duration = Duration::from_secs(1);
/// How often a link times a probe round trip (etcd's prober: 4 s).
const PROBE_INTERVAL: Duration = Duration::from_secs(4);
/// A probe not answered by then counts as lost, not as a round trip.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the node's outgoing Raft messages go: the peer links, or, in the
/// driver's tests, the test's own hands.
pub trait Outbox: Send {
    /// Sends or drops `m`; never blocks.
    fn send(&self, m: Message);
    /// The member table changed: links follow it.
    fn set_members(&mut self, table: &Membership);
}

/// What a peer answers a removed member with (etcd's text), and what tells
/// that member it was removed.
pub const REMOVED: &str = "the member has been permanently removed from the cluster";

pub struct Transport {
    cluster_id: u64,
    me: NodeId,
    /// Where each link goes, and its queue.
    links: HashMap<NodeId, (String, LinkSender)>,
    snapshots: SnapshotSender,
    /// The node's queue, told when a peer refuses this member as removed.
    node: mpsc::WeakSender<Request>,
    /// The peer runtime, where links run (members change on the node's thread).
    runtime: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    dialer: Dialer,
}

/// The sending end of one peer's queue, with the bytes it holds. Each
/// message travels with its size, computed once.
struct LinkSender {
    tx: mpsc::UnboundedSender<(PeerMessage, usize)>,
    queued: Arc<AtomicUsize>,
}

/// The receiving end: counts bytes out as messages leave.
struct LinkQueue {
    rx: mpsc::UnboundedReceiver<(PeerMessage, usize)>,
    queued: Arc<AtomicUsize>,
}

impl LinkQueue {
    async fn recv(&mut self) -> Option<PeerMessage> {
        let (m, size) = self.rx.recv().await?;
        self.queued.fetch_sub(size, Ordering::Relaxed);
        Some(m)
    }

    fn clear(&mut self) {
        while let Ok((_, size)) = self.rx.try_recv() {
            self.queued.fetch_sub(size, Ordering::Relaxed);
        }
    }
}

impl Transport {
    /// Starts a link to every member of `table` but `me`, on the current runtime.
    pub fn start(
        cluster_id: u64,
        me: NodeId,
        table: &Membership,
        snapshots: SnapshotSender,
        node: mpsc::WeakSender<Request>,
        metrics: Arc<Metrics>,
        dialer: Dialer,
    ) -> Transport {
        let runtime = tokio::runtime::Handle::current();
        let links = HashMap::new();
        let mut transport = Transport { cluster_id, me, links, snapshots, node, runtime, metrics, dialer };
        transport.set_members(table);
        transport
    }

    fn start_link(&mut self, member: Member) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let queue = LinkQueue { rx, queued: queued.clone() };
        let label = format!("{:x}", member.id);
        let figures = LinkFigures {
            sent_failures: self.metrics.peer_sent_failures.with_label_values(&[&label]),
            round_trip: self.metrics.peer_round_trip.with_label_values(&[&label]),
        };
        let link = run_link(member.clone(), queue, self.node.clone(), figures, self.dialer.clone());
        // The member's log span (its name) follows the link.
        self.runtime.spawn(tracing::Instrument::instrument(link, tracing::Span::current()));
        self.links.insert(member.id, (member.peer_url, LinkSender { tx, queued }));
    }
}

impl Outbox for Transport {
    /// Links to new members start, links whose member moved restart at the
    /// new URL, links to removed members end (their queue closes). A member
    /// missing from the table but never removed keeps its link: a member
    /// replaying old changes from a table newer than them passes through
    /// such states, and must still answer its leader.
    fn set_members(&mut self, table: &Membership) {
        let targets = membership::link_targets(table);
        self.snapshots.set_peers(&targets);
        self.links.retain(|id, _| !membership::is_removed(table, *id));
        let me = self.me;
        for member in targets.into_iter().filter(|m| m.id != me) {
            match self.links.get(&member.id) {
                Some((url, _)) if *url == member.peer_url => {}
                _ => {
                    if self.links.contains_key(&member.id) {
                        tracing::info!(peer = format!("{:x}", member.id), url = member.peer_url, "peer moved");
                    }
                    self.start_link(member);
                }
            }
        }
    }

    fn send(&self, m: Message) {
        let to = m.to;
        if matches!(m.body, Body::Snapshot { .. }) {
            self.snapshots.send(m);
            return;
        }
        let (Some((_, link)), Some(m)) = (self.links.get(&to), to_wire(self.cluster_id, m)) else { return };
        let size = m.encoded_len();
        let queued = link.queued.load(Ordering::Relaxed);
        if queued > 0 && queued + size > QUEUE_BYTES {
            tracing::trace!(to, queued, "peer queue full: message dropped");
            return;
        }
        link.queued.fetch_add(size, Ordering::Relaxed);
        if link.tx.send((m, size)).is_err() {
            link.queued.fetch_sub(size, Ordering::Relaxed);
        }
    }
}

/// How every peer connection is made. HTTP/2 keepalive pings find a link
/// that silently stopped delivering (a peer host gone without a reset, a
/// blackholed route) within seconds, instead of when TCP gives up minutes
/// later; the connection is then closed and made anew.
pub fn peer_endpoint(url: &str) -> Result<crate::tls::Target, tonic::transport::Error> {
    Ok(crate::tls::Target::new(url)?.with(|e| {
        e.connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true)
    }))
}

/// What a link counts for `/metrics`.
struct LinkFigures {
    sent_failures: prometheus::IntCounter,
    round_trip: prometheus::Histogram,
}

/// Ends a task when the link's connection it belongs to ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Times a probe on `channel` every [`PROBE_INTERVAL`], the first at once.
/// It shares the connection the Raft stream uses, so it measures what that
/// traffic sees (queued behind a large append, too, as etcd's does not).
async fn probe(channel: tonic::transport::Channel, round_trip: prometheus::Histogram) {
    let mut client = RaftPeerClient::new(channel);
    let mut every = tokio::time::interval(PROBE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let sent = tokio::time::Instant::now();
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, client.probe(ProbeRequest {})).await {
            round_trip.observe(sent.elapsed().as_secs_f64());
        }
    }
}

async fn run_link(
    peer: Member,
    mut queue: LinkQueue,
    node: mpsc::WeakSender<Request>,
    figures: LinkFigures,
    dialer: Dialer,
) {
    let LinkFigures { sent_failures, round_trip } = figures;
    let mut backoff = Duration::from_millis(50);
    let mut failures = 0u32;
    let endpoint = match peer_endpoint(&peer.peer_url) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(peer = format!("{:x}", peer.id), url = peer.peer_url, "invalid peer URL: {e}");
            return;
        }
    };
    loop {
        let channel = match dialer.connect(&endpoint).await {
            Ok(channel) => channel,
            Err(e) => {
                sent_failures.inc();
                if failures.is_power_of_two() {
                    tracing::warn!(
                        peer = format!("{:x}", peer.id),
                        url = peer.peer_url,
                        attempts = failures + 1,
                        "peer unreachable, retrying: {e}"
                    );
                }
                failures += 1;
                // What waited for this peer is stale by the time it is back.
                queue.clear();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                if queue.rx.is_closed() {
                    return;
                }
                continue;
            }
        };
        if failures > 0 && failures.is_power_of_two() {
            tracing::info!(peer = format!("{:x}", peer.id), "connected to peer");
        }
        let connected = tokio::time::Instant::now();
        let _prober = AbortOnDrop(tokio::spawn(probe(channel.clone(), round_trip.clone())));
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut client = RaftPeerClient::new(channel);
        let mut call = tokio::spawn(async move { client.stream(ReceiverStream::new(rx)).await });
        let ended = loop {
            tokio::select! {
                m = queue.recv() => match m {
                    Some(m) => if tx.send(m).await.is_err() { break None },
                    None => return,
                },
                result = &mut call => break match result {
                    Ok(Err(status)) => Some(status.message().to_string()),
                    _ => None,
                },
            }
        };
        if ended.as_deref() == Some(REMOVED)
            && let Some(node) = node.upgrade()
        {
            let _ = node.send(Request::Removed { by: peer.id }).await;
        }
        // A stream that ends at once (a peer that accepts and closes, as a
        // proxy in front of a dead member does) counts as a failed attempt:
        // it backs off and is logged at powers of two, like a refused connect.
        sent_failures.inc();
        if connected.elapsed() >= STABLE {
            failures = 0;
            backoff = Duration::from_millis(50);
        }
        if failures.is_power_of_two() || failures == 0 {
            let reason = ended.as_deref().unwrap_or("the stream ended");
            tracing::warn!(
                peer = format!("{:x}", peer.id),
                attempts = failures + 1,
                "stream to peer closed, reconnecting: {reason}"
            );
        }
        failures += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
