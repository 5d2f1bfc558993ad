//! etcd's `Maintenance` service: status, HashKV at a revision, leadership
//! transfer (`etcdctl move-leader`) and Defragment.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::shared::Shared;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    DefragmentRequest, DefragmentResponse, HashKvRequest, HashKvResponse, MoveLeaderRequest, MoveLeaderResponse,
    StatusRequest, StatusResponse,
};

pub struct MaintenanceService(pub Arc<Shared>);

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let shared = &self.0;
        let status = shared.status.borrow().clone();
        // A walk of the data directory: file system calls, off the workers.
        let dir = shared.settings.data_dir.clone();
        let db_size = tokio::task::spawn_blocking(move || dir_size(&dir)).await.unwrap_or(0) as i64;
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
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: status.is_learner,
        }))
    }

    /// The hash of the history up to the revision asked for (0: now), so
    /// members can be compared at one revision while writes go on.
    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let (hash, revision, compact_revision) = self.0.hash(request.into_inner().revision).await?;
        let term = self.0.status.borrow().term;
        Ok(Response::new(HashKvResponse { header: Some(self.0.header(revision, term)), hash, compact_revision }))
    }

    /// Sent to the leader, as etcd requires (`etcdctl move-leader` finds it).
    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        self.0.move_leader(request.into_inner().target_id).await?;
        let status = self.0.status.borrow().clone();
        Ok(Response::new(MoveLeaderResponse { header: Some(self.0.header(status.revision, status.term)) }))
    }

    /// Compacts this member's RocksDB column families on a blocking thread;
    /// the key-value state is in memory, so there is nothing else to
    /// rewrite. The Raft loop keeps running meanwhile.
    async fn defragment(&self, _: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
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
