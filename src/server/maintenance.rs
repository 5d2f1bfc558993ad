//! etcd's `Maintenance` service: status, HashKV at a revision, leadership
//! transfer (`etcdctl move-leader`), Defragment, and Snapshot (what
//! `etcdctl snapshot save` and `raftkv snapshot save` write: a raftkv
//! snapshot file of the applied state, history included), and Alarm (the
//! `alarms` module owns what alarms mean).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::alarms;
use super::shared::Shared;
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use crate::proto::raftkvpb::{Command, command};

/// Bytes of the snapshot file per response message.
const SNAPSHOT_CHUNK: usize = 1 << 20;

pub struct MaintenanceService(pub Arc<Shared>);

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let shared = &self.0;
        let status = shared.status.borrow().clone();
        // A walk of the data directory: file system calls, off the workers.
        let dir = shared.settings.data_dir.clone();
        let db_size = tokio::task::spawn_blocking(move || dir_size(&dir)).await.unwrap_or(0) as i64;
        let (errors, in_use) = {
            let kv = shared.applied.borrow();
            (kv.alarms().iter().map(alarms::describe).collect(), kv.data_bytes() as i64)
        };
        Ok(Response::new(StatusResponse {
            header: Some(shared.header(status.revision, status.term)),
            // Clients and tools read this as the etcd version they talk to;
            // raftkv's own version is in /version beside it.
            version: super::ETCD_API_VERSION.to_string(),
            db_size,
            leader: status.leader.unwrap_or(0),
            raft_index: status.commit,
            raft_term: status.term,
            raft_applied_index: status.applied,
            errors,
            // The records held, as a snapshot writes them.
            db_size_in_use: in_use,
            is_learner: status.is_learner,
        }))
    }

    /// The hash of the history up to the revision asked for (0: now), so
    /// members can be compared at one revision while writes go on.
    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        self.0.require_admin(&request)?;
        let (hash, revision, compact_revision) = self.0.hash(request.into_inner().revision).await?;
        let term = self.0.status.borrow().term;
        Ok(Response::new(HashKvResponse { header: Some(self.0.header(revision, term)), hash, compact_revision }))
    }

    type SnapshotStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    /// Writes a snapshot file of the applied state beside this member's own
    /// snapshots (never in their place), streams it, then removes it.
    async fn snapshot(&self, request: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        self.0.require_admin(&request)?;
        let shared = &self.0;
        let (kv, meta) = shared.snapshot_point().await?;
        let status = shared.status.borrow().clone();
        let header = Some(shared.header(kv.revision(), status.term));
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = shared.settings.data_dir.join("snap").join(format!("save-{nanos}.tmp"));
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let sent = stream_file(&path, &kv, meta, header, &tx);
            let _ = std::fs::remove_file(&path);
            if let Err(e) = sent {
                let _ = tx.blocking_send(Err(Status::internal(format!("snapshot {}: {e}", path.display()))));
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    /// Sent to the leader, as etcd requires (`etcdctl move-leader` finds it).
    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        self.0.require_admin(&request)?;
        self.0.move_leader(request.into_inner().target_id).await?;
        let status = self.0.status.borrow().clone();
        Ok(Response::new(MoveLeaderResponse { header: Some(self.0.header(status.revision, status.term)) }))
    }

    /// GET lists the alarms raised (linearizably); ACTIVATE and DEACTIVATE
    /// go through the log and answer the alarm raised or lowered. Clients
    /// raise only NOSPACE: raftkv has no corruption check to back CORRUPT.
    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let req = request.into_inner();
        let alarms = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => self.0.alarms(req.alarm).await?,
            Ok(AlarmAction::Activate) if req.alarm != AlarmType::Nospace as i32 => {
                return Err(Status::invalid_argument("raftkv raises only NOSPACE alarms"));
            }
            Ok(AlarmAction::Activate | AlarmAction::Deactivate) => {
                self.0.check_admin(&caller)?;
                let member = AlarmMember { member_id: req.member_id, alarm: req.alarm };
                let command = Command::new(command::Request::Alarm(req));
                let (op, _, _) = self.0.write(command).await?;
                if alarms::changed(&op) { vec![member] } else { Vec::new() }
            }
            Err(_) => return Err(Status::invalid_argument(format!("unknown alarm action {}", req.action))),
        };
        let status = self.0.status.borrow().clone();
        Ok(Response::new(AlarmResponse { header: Some(self.0.header(status.revision, status.term)), alarms }))
    }

    /// Compacts this member's RocksDB column families on a blocking thread;
    /// the key-value state is in memory, so there is nothing else to
    /// rewrite. The Raft loop keeps running meanwhile.
    async fn defragment(&self, request: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        self.0.require_admin(&request)?;
        let defragmenter = self.0.defragmenter.clone();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || defragmenter.run())
            .await
            .map_err(|e| Status::internal(format!("defragment: {e}")))?
            .map_err(|e| Status::internal(format!("defragment: {e}")))?;
        tracing::info!(took_ms = started.elapsed().as_millis() as u64, "defragmented the store");
        let status = self.0.status.borrow().clone();
        Ok(Response::new(DefragmentResponse { header: Some(self.0.header(status.revision, status.term)) }))
    }
}

/// Writes the snapshot to `path`, then sends it in chunks, with etcd's
/// trailer after it: zeros to a multiple of 512, then the SHA-256 of all
/// that (etcdctl checks it). Blocking.
fn stream_file(
    path: &std::path::Path,
    kv: &crate::kv::KvStore,
    meta: crate::proto::SnapshotMeta,
    header: Option<crate::proto::etcdserverpb::ResponseHeader>,
    tx: &tokio::sync::mpsc::Sender<Result<SnapshotResponse, Status>>,
) -> std::io::Result<()> {
    use sha2::Digest as _;
    use std::io::Read;
    let size = crate::snapshot::file::write(std::fs::File::create(path)?, &kv.snapshot_header(meta), kv.records())?;
    let padding = crate::snapshot::file::backup_padding(size);
    let mut file = std::fs::File::open(path)?;
    let mut remaining = size + padding as u64 + 32;
    let mut digest = sha2::Sha256::new();
    let send = |blob: Vec<u8>, remaining: u64| {
        let part = SnapshotResponse { header, remaining_bytes: remaining, blob: blob.into() };
        tx.blocking_send(Ok(part)).is_ok()
    };
    let mut buf = vec![0; SNAPSHOT_CHUNK];
    let mut left = size;
    while left > 0 {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shorter than written"));
        }
        left -= n as u64;
        remaining -= n as u64;
        digest.update(&buf[..n]);
        if !send(buf[..n].to_vec(), remaining) {
            return Ok(()); // the client went away
        }
    }
    let mut tail = vec![0; padding];
    digest.update(&tail);
    tail.extend_from_slice(&digest.finalize());
    send(tail, 0);
    Ok(())
}

/// Bytes of the files directly in `dir` and its subdirectories.
pub fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
