//! etcd's `Lease` service on the client port.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{MAX_TTL, renew, time_to_live};
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use crate::proto::raftkvpb::{Command, command};
use crate::server::shared::Shared;

pub struct LeaseService(pub Arc<Shared>);

/// A grant as it goes into the log: the id chosen when the client gave
/// none, the TTL raised to the minimum (etcd's lessor does both).
pub fn grant_command(shared: &Shared, req: &LeaseGrantRequest) -> Result<(Command, i64, i64), Status> {
    if req.ttl > MAX_TTL {
        return Err(Status::out_of_range("etcdserver: too large lease TTL"));
    }
    let ttl = req.ttl.max(shared.settings.min_lease_ttl());
    let id = if req.id == 0 { shared.lease_ids.next() } else { req.id };
    let grant = LeaseGrantRequest { ttl, id };
    Ok((Command::new(command::Request::LeaseGrant(grant)), id, ttl))
}

pub fn revoke_command(id: i64) -> Command {
    Command::new(command::Request::LeaseRevoke(LeaseRevokeRequest { id }))
}

/// The leases granted, as of a linearizable read.
pub async fn leases(shared: &Shared) -> Result<Vec<i64>, Status> {
    Ok(shared.linearized().await?.leases().iter().map(|(id, _)| id).collect())
}

/// Answers each keep-alive of `incoming` in order, as etcd does, until the
/// client's requests end or it stops reading; a renewal that could not be
/// made (no leader in time) ends the stream with its error, and the client
/// opens a new one. Shared by gRPC and the JSON gateway.
pub fn keep_alive<R>(shared: Arc<Shared>, mut incoming: R) -> ReceiverStream<Result<LeaseKeepAliveResponse, Status>>
where
    R: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + Unpin + 'static,
{
    let (answers, stream) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = incoming.next() => next,
                _ = answers.closed() => return,
            };
            let Some(Ok(req)) = next else { return };
            let answer = renew(&shared, req.id).await.map(|ttl| {
                let revision = shared.status.borrow().revision;
                let term = shared.status.borrow().term;
                LeaseKeepAliveResponse { header: Some(shared.header(revision, term)), id: req.id, ttl }
            });
            let failed = answer.is_err();
            if answers.send(answer).await.is_err() || failed {
                return;
            }
        }
    });
    ReceiverStream::new(stream)
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let (command, id, ttl) = grant_command(&self.0, &request.into_inner())?;
        let (_, revision, term) = self.0.write_as(&caller, command).await?;
        Ok(Response::new(LeaseGrantResponse {
            header: Some(self.0.header(revision, term)),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let (_, revision, term) = self.0.write_as(&caller, revoke_command(request.into_inner().id)).await?;
        Ok(Response::new(LeaseRevokeResponse { header: Some(self.0.header(revision, term)) }))
    }

    type LeaseKeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let caller = self.0.caller(&request)?;
        self.0.check_authenticated(&caller)?;
        Ok(Response::new(Box::pin(keep_alive(self.0.clone(), request.into_inner()))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let caller = self.0.caller(&request)?;
        self.0.check_authenticated(&caller)?;
        let mut resp = time_to_live(&self.0, request.into_inner()).await?;
        let status = self.0.status.borrow().clone();
        resp.header = Some(self.0.header(status.revision, status.term));
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let caller = self.0.caller(&request)?;
        self.0.check_authenticated(&caller)?;
        let leases = leases(&self.0).await?.into_iter().map(|id| LeaseStatus { id }).collect();
        let status = self.0.status.borrow().clone();
        Ok(Response::new(LeaseLeasesResponse { header: Some(self.0.header(status.revision, status.term)), leases }))
    }
}
