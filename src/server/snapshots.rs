//! Snapshot transfer between members over the client-streaming
//! `InstallSnapshot` call.
//!
//! Leader side ([`SnapshotSender`]): when the core asks for a snapshot to go
//! to a follower, the file is streamed on its own connection in chunks of at
//! most 1 MiB, at most one transfer per follower at a time, so replication to
//! the others never waits for it. The outcome always goes back to the core
//! (`report_snapshot`), which resumes probing the follower.
//!
//! Follower side ([`receive`]): the offer is checked (cluster, sender,
//! addressee), the chunks are written to a temporary file, which is fsynced
//! and verified completely before it gets its final name. Only then is the
//! node asked to install it; an interrupted or bad transfer leaves nothing
//! behind, and the leader simply starts it again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::config::Member;
use super::metrics::Metrics;
use super::node::Request;
use super::shared::Shared;
use crate::kv::KvStore;
use crate::proto::raftpeer::raft_peer_client::RaftPeerClient;
use crate::proto::raftpeer::{SnapshotOffer, SnapshotPart, snapshot_part};
use crate::raft::{Body, Message, NodeId};
use crate::snapshot::SnapshotDir;

/// Largest piece of a snapshot file in one message.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Starts snapshot transfers to followers, one per follower at a time.
pub struct SnapshotSender {
    cluster_id: u64,
    dir: Arc<SnapshotDir>,
    peers: HashMap<NodeId, Member>,
    /// Where outcomes are reported (the node's own request queue).
    report: mpsc::WeakSender<Request>,
    active: Arc<Mutex<HashMap<NodeId, u64>>>,
    /// The server's runtime: `send` is called from the node's own thread.
    runtime: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    dialer: crate::tls::Dialer,
}

impl SnapshotSender {
    pub fn new(
        cluster_id: u64,
        dir: Arc<SnapshotDir>,
        report: mpsc::WeakSender<Request>,
        metrics: Arc<Metrics>,
        dialer: crate::tls::Dialer,
    ) -> SnapshotSender {
        let runtime = tokio::runtime::Handle::current();
        let peers = HashMap::new();
        SnapshotSender { cluster_id, dir, peers, report, active: Arc::default(), runtime, metrics, dialer }
    }

    /// Where each member is reached, as the member table says.
    pub fn set_peers(&mut self, members: &[Member]) {
        self.peers = members.iter().map(|m| (m.id, m.clone())).collect();
    }

    /// Sends the snapshot a `Body::Snapshot` message announces. A transfer
    /// already running to that follower reports for this one too.
    pub fn send(&self, m: Message) {
        let Body::Snapshot { meta } = m.body else { return };
        let to = m.to;
        let Some(peer) = self.peers.get(&to).cloned() else { return };
        if self.active.lock().expect("not poisoned").insert(to, meta.index).is_some() {
            tracing::debug!(to, "a snapshot transfer is already running to this follower");
            return;
        }
        let offer_term = m.term;
        let offer =
            SnapshotOffer { cluster_id: self.cluster_id, from: m.from, to, term: m.term, meta: Some(meta), size: 0 };
        let (dir, report, active) = (self.dir.clone(), self.report.clone(), self.active.clone());
        let (metrics, dialer) = (self.metrics.clone(), self.dialer.clone());
        let sending = async move {
            let started = Instant::now();
            let meta = offer.meta.clone().unwrap_or_default();
            let path = dir.file_path(meta.index, meta.term);
            let ok = match transfer(&peer, offer, &path, &dialer).await {
                Ok(bytes) => {
                    metrics.snapshots_sent.inc();
                    tracing::info!(
                        to = format!("{:x}", peer.id),
                        index = meta.index,
                        term = offer_term,
                        bytes,
                        took_ms = started.elapsed().as_millis() as u64,
                        "sent a snapshot"
                    );
                    true
                }
                Err(e) => {
                    tracing::warn!(to = format!("{:x}", peer.id), index = meta.index, "snapshot transfer failed: {e}");
                    false
                }
            };
            active.lock().expect("not poisoned").remove(&to);
            if let Some(report) = report.upgrade() {
                let _ = report.send(Request::SnapshotReport { to, ok }).await;
            }
        };
        // The member's log span (its name) follows the transfer.
        self.runtime.spawn(tracing::Instrument::instrument(sending, tracing::Span::current()));
    }
}

/// Streams the file at `path` to `peer`; returns the bytes sent.
async fn transfer(
    peer: &Member,
    mut offer: SnapshotOffer,
    path: &Path,
    dialer: &crate::tls::Dialer,
) -> Result<u64, String> {
    // Opened before anything else: a snapshot pruned meanwhile stays readable.
    let mut file = tokio::fs::File::open(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
    let size = file.metadata().await.map_err(|e| format!("{}: {e}", path.display()))?.len();
    offer.size = size;
    let endpoint = super::transport::peer_endpoint(&peer.peer_url).map_err(|e| e.to_string())?;
    let channel = dialer.connect(&endpoint).await.map_err(|e| e.to_string())?;
    let mut client = RaftPeerClient::new(channel).max_encoding_message_size(2 * CHUNK_BYTES);
    let (tx, rx) = mpsc::channel(4);
    let path = path.to_owned();
    let reader = tokio::spawn(async move {
        tx.send(SnapshotPart { part: Some(snapshot_part::Part::Offer(offer)) }).await.map_err(|_| "receiver gone")?;
        loop {
            let mut chunk = vec![0u8; CHUNK_BYTES];
            let mut filled = 0;
            while filled < CHUNK_BYTES {
                match file.read(&mut chunk[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
            }
            if filled == 0 {
                return Ok(());
            }
            chunk.truncate(filled);
            let part = SnapshotPart { part: Some(snapshot_part::Part::Chunk(chunk.into())) };
            tx.send(part).await.map_err(|_| "receiver gone".to_string())?;
        }
    });
    let answer = client.install_snapshot(ReceiverStream::new(rx)).await;
    match reader.await {
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(e.to_string()),
        Ok(Ok(())) => {}
    }
    answer.map_err(|status| format!("{}: {}", status.code(), status.message()))?;
    Ok(size)
}

/// Receives one InstallSnapshot stream and hands the verified snapshot to
/// the node. Returns the member's term.
pub async fn receive(
    shared: &Shared,
    dir: Arc<SnapshotDir>,
    mut parts: Streaming<SnapshotPart>,
) -> Result<u64, Status> {
    let offer = match parts.message().await? {
        Some(SnapshotPart { part: Some(snapshot_part::Part::Offer(offer)) }) => offer,
        _ => return Err(Status::invalid_argument("an InstallSnapshot stream starts with the offer")),
    };
    shared.check_peer(offer.cluster_id, offer.from)?;
    let me = shared.settings.member_id;
    if offer.to != me {
        return Err(Status::invalid_argument(format!("snapshot for member {:x} sent to {me:x}", offer.to)));
    }
    let meta = offer.meta.clone().ok_or_else(|| Status::invalid_argument("snapshot offer without metadata"))?;
    let started = Instant::now();
    let tmp = dir.temp_path(meta.index, meta.term);
    let written = write_parts(&tmp, &mut parts, offer.size).await;
    let received_in = started.elapsed();
    // Verifying the file and building the map take time proportional to
    // the snapshot: on a blocking thread, never on an async worker.
    let accepted = match written {
        Ok(()) => {
            let (dir, tmp, meta) = (dir.clone(), tmp.clone(), meta.clone());
            tokio::task::spawn_blocking(move || {
                let verifying = Instant::now();
                dir.accept(&tmp, &meta).map(|(path, loaded)| {
                    let keys = loaded.records.len();
                    let verified_in = verifying.elapsed();
                    let building = Instant::now();
                    let kv = KvStore::from_snapshot(&loaded.header, loaded.records);
                    (path, keys, kv, verified_in, building.elapsed())
                })
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::data_loss(e.to_string()))
        }
        Err(status) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(status)
        }
    };
    let (path, keys, kv, verified_in, built_in) = accepted.inspect_err(|status| {
        tracing::warn!(from = offer.from, index = meta.index, "snapshot transfer refused: {}", status.message())
    })?;
    tracing::info!(
        from = offer.from,
        index = meta.index,
        term = meta.term,
        keys,
        bytes = offer.size,
        took_ms = started.elapsed().as_millis() as u64,
        transfer_ms = received_in.as_millis() as u64,
        verify_ms = verified_in.as_millis() as u64,
        build_ms = built_in.as_millis() as u64,
        file = %path.display(),
        "received a snapshot"
    );
    let msg = Message { from: offer.from, to: me, term: offer.term, body: Body::Snapshot { meta } };
    let (reply, answer) = oneshot::channel();
    shared
        .node
        .send(Request::InstallSnapshot { msg, kv, reply })
        .await
        .map_err(|_| Status::unavailable("member is stopping"))?;
    answer.await.map_err(|_| Status::unavailable("member is stopping"))
}

/// Writes the chunks of a stream to `tmp` and fsyncs it.
async fn write_parts(tmp: &Path, parts: &mut Streaming<SnapshotPart>, size: u64) -> Result<(), Status> {
    let io = |e: std::io::Error| Status::internal(format!("{}: {e}", tmp.display()));
    let mut file = tokio::fs::File::create(tmp).await.map_err(io)?;
    let mut received = 0u64;
    while let Some(part) = parts.message().await? {
        match part.part {
            Some(snapshot_part::Part::Chunk(chunk)) => {
                received += chunk.len() as u64;
                if received > size {
                    return Err(Status::invalid_argument(format!("snapshot is larger than the {size} bytes offered")));
                }
                file.write_all(&chunk).await.map_err(io)?;
            }
            _ => return Err(Status::invalid_argument("a second offer in one InstallSnapshot stream")),
        }
    }
    if received != size {
        return Err(Status::aborted(format!("transfer ended after {received} of {size} bytes")));
    }
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    Ok(())
}
