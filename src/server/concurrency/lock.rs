//! etcd's `v3lockpb.Lock` service: a mutex per name, held under a lease.

use std::sync::Arc;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::{Release, header, join_line, key_of, prefix_of, wait_turn};
use crate::kv;
use crate::proto::etcdserverpb::DeleteRangeRequest;
use crate::proto::v3lockpb::lock_server::Lock;
use crate::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::server::shared::Shared;

pub struct LockService(pub Arc<Shared>);

#[tonic::async_trait]
impl Lock for LockService {
    /// Waits until the lock is held under the request's lease; the answer's
    /// key is the holder's, which Unlock takes (etcd's `Mutex.Lock`).
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let req = request.into_inner();
        let prefix = prefix_of(&req.name);
        let key = key_of(&prefix, req.lease);
        let release = Release::new(&self.0, &caller, &key);
        let (rev, _, seen) = join_line(&self.0, &caller, &key, req.lease, Bytes::new()).await?;
        let kv = wait_turn(&self.0, &caller, &prefix, &key, rev, seen).await?;
        release.disarm();
        Ok(Response::new(LockResponse { header: header(&self.0, kv.revision()), key }))
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let req = DeleteRangeRequest { key: request.into_inner().key, ..Default::default() };
        let (_, revision, term) = self.0.write_as(&caller, kv::delete_command(req)).await?;
        Ok(Response::new(UnlockResponse { header: Some(self.0.header(revision, term)) }))
    }
}
