//! The gRPC services: etcd's `KV` on the client port, and `RaftPeer` on the
//! peer port (`Cluster` is in [`super::membership`], `Maintenance` in
//! [`super::maintenance`]).

use std::sync::Arc;

use prost::Message as _;
use tonic::{Request, Response, Status, Streaming};

use super::auth::Caller;
use super::node::{NodeError, Request as NodeRequest};
use super::shared::{Shared, node_status};
use super::wire::from_wire;
use crate::kv;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse, response_op,
};
use crate::proto::etcdserverpb::{LeaseKeepAliveResponse, LeaseTimeToLiveResponse};
use crate::proto::raftpeer::raft_peer_server::RaftPeer;
use crate::proto::raftpeer::{
    ForwardRequest, ForwardResponse, HelloRequest, HelloResponse, InstallSnapshotResponse, LeaseRenewRequest,
    LeaseTimeToLiveForward, MembersRequest, MembersResponse, PeerMessage, ProbeRequest, ProbeResponse, SnapshotPart,
    StreamSummary, peer_message,
};

pub struct KvService(pub Arc<Shared>);

pub(super) fn require_key(key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument("etcdserver: key is not provided"));
    }
    Ok(())
}

fn unexpected() -> Status {
    Status::internal("the state machine answered with a response of another kind")
}

#[tonic::async_trait]
impl Kv for KvService {
    /// The client port serves `Range` through `KvRoutes`, which encodes
    /// large answers off the workers; this is the same answer, unencoded.
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let caller = self.0.caller(&request)?;
        Ok(Response::new(range(&self.0, &caller, request.into_inner()).await?))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let req = request.into_inner();
        self.0.check_size(req.encoded_len())?;
        require_key(&req.key)?;
        let (op, revision, term) = self.0.write_as(&caller, kv::put_command(req)).await?;
        let Some(response_op::Response::ResponsePut(mut resp)) = op.response else { return Err(unexpected()) };
        resp.header = Some(self.0.header(revision, term));
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let req = request.into_inner();
        self.0.check_size(req.encoded_len())?;
        require_key(&req.key)?;
        let (op, revision, term) = self.0.write_as(&caller, kv::delete_command(req)).await?;
        let Some(response_op::Response::ResponseDeleteRange(mut resp)) = op.response else { return Err(unexpected()) };
        resp.header = Some(self.0.header(revision, term));
        Ok(Response::new(resp))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let req = request.into_inner();
        self.0.check_size(req.encoded_len())?;
        let (op, revision, term) = self.0.write_as(&caller, kv::txn_command(req)).await?;
        let Some(response_op::Response::ResponseTxn(mut resp)) = op.response else { return Err(unexpected()) };
        nested_headers(&mut resp, revision);
        resp.header = Some(self.0.header(revision, term));
        Ok(Response::new(resp))
    }

    /// Compacts through the log, so every member compacts at the same
    /// revision. Applying it drops the history at once, so the answer is
    /// the same with or without `physical`.
    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let req = request.into_inner();
        let (_, revision, term) = self.0.write_as(&caller, kv::compaction_command(req)).await?;
        Ok(Response::new(CompactionResponse { header: Some(self.0.header(revision, term)) }))
    }
}

/// Answers `caller`'s `Range`, header included.
pub(super) async fn range(shared: &Shared, caller: &Caller, req: RangeRequest) -> Result<RangeResponse, Status> {
    shared.check_size(req.encoded_len())?;
    require_key(&req.key)?;
    let (mut resp, revision) = shared.range_as(caller, req).await?;
    resp.header = Some(shared.header(revision, shared.status.borrow().term));
    Ok(resp)
}

/// etcd gives every response inside a transaction a header holding the
/// transaction's revision (and nothing else), nested transactions included.
fn nested_headers(txn: &mut TxnResponse, revision: i64) {
    let header = || Some(ResponseHeader { revision, ..Default::default() });
    for op in &mut txn.responses {
        match &mut op.response {
            Some(response_op::Response::ResponseRange(r)) => r.header = header(),
            Some(response_op::Response::ResponsePut(r)) => r.header = header(),
            Some(response_op::Response::ResponseDeleteRange(r)) => r.header = header(),
            Some(response_op::Response::ResponseTxn(r)) => {
                nested_headers(r, revision);
                r.header = header();
            }
            None => {}
        }
    }
}

pub struct PeerService(pub Arc<Shared>);

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn stream(&self, request: Request<Streaming<PeerMessage>>) -> Result<Response<StreamSummary>, Status> {
        let mut stream = request.into_inner();
        let mut received = 0;
        while let Some(m) = stream.message().await? {
            // A leader that removed itself still hands its leadership over.
            let handing_over = matches!(m.body, Some(peer_message::Body::TimeoutNow(_)));
            if !(handing_over && self.0.is_removed(m.from)) {
                self.0.check_peer(m.cluster_id, m.from)?;
            }
            if m.to != self.0.settings.member_id {
                return Err(Status::invalid_argument(format!(
                    "message for member {:x} sent to {:x}",
                    m.to, self.0.settings.member_id
                )));
            }
            let msg = from_wire(m).map_err(Status::invalid_argument)?;
            self.0.node.send(NodeRequest::Peer(msg)).await.map_err(|_| Status::unavailable("member is stopping"))?;
            received += 1;
        }
        Ok(Response::new(StreamSummary { received }))
    }

    type ForwardStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<ForwardResponse, Status>> + Send>>;

    async fn forward(
        &self,
        request: Request<Streaming<ForwardRequest>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let mut incoming = request.into_inner();
        let (answers, stream) = tokio::sync::mpsc::channel(4096);
        let shared = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = incoming.message().await {
                if let Err(status) = shared.check_peer(req.cluster_id, req.from) {
                    let _ = answers.send(Err(status)).await;
                    return;
                }
                // Each write waits for its own commit; the stream keeps flowing.
                let (shared, answers) = (shared.clone(), answers.clone());
                tokio::spawn(async move {
                    let _ = answers.send(Ok(forwarded_write(&shared, req).await)).await;
                });
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(stream))))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotPart>>,
    ) -> Result<Response<InstallSnapshotResponse>, Status> {
        let term = super::snapshots::receive(&self.0, self.0.snapshot_dir.clone(), request.into_inner()).await?;
        Ok(Response::new(InstallSnapshotResponse { term }))
    }

    async fn members(&self, _: Request<MembersRequest>) -> Result<Response<MembersResponse>, Status> {
        let (table, conf) = self.0.membership();
        Ok(Response::new(MembersResponse {
            cluster_id: self.0.settings.cluster_id,
            membership: Some((*table).clone()),
            learners: conf.learners,
        }))
    }

    async fn lease_renew(
        &self,
        request: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        let req = request.into_inner();
        self.0.check_peer(req.cluster_id, req.from)?;
        let id = req.id;
        let ttl = super::lease::on_this_leader(&self.0, |reply| NodeRequest::LeaseRenew { id, reply }).await?;
        Ok(Response::new(LeaseKeepAliveResponse { header: None, id, ttl }))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveForward>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        self.0.check_peer(req.cluster_id, req.from)?;
        let asked = req.request.unwrap_or_default();
        let (id, keys) = (asked.id, asked.keys);
        let answer =
            super::lease::on_this_leader(&self.0, |reply| NodeRequest::LeaseTimeToLive { id, keys, reply }).await?;
        Ok(Response::new(answer))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse {}))
    }

    async fn hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        let req = request.into_inner();
        self.0.check_peer(req.cluster_id, req.from)?;
        let s = &self.0.settings;
        Ok(Response::new(HelloResponse {
            id: s.member_id,
            name: s.name.clone(),
            client_urls: s.advertise_client_urls.clone(),
        }))
    }
}

/// Proposes a forwarded write here and answers it, errors included.
async fn forwarded_write(shared: &Shared, req: ForwardRequest) -> ForwardResponse {
    let id = req.id;
    let fail = |status: Status| ForwardResponse {
        id,
        error_code: status.code() as i32,
        error_message: status.message().to_string(),
        ..Default::default()
    };
    let Some(command) = req.command else {
        return fail(Status::invalid_argument("forwarded request without a command"));
    };
    let applied = match tokio::time::timeout(super::shared::REQUEST_TIMEOUT, shared.propose_here(command)).await {
        Err(_) => return fail(Status::unavailable("etcdserver: request timed out")),
        // Not appended here: the forwarding member may send it again.
        Ok(Err(
            e @ (NodeError::NotLeader { .. }
            | NodeError::NoLeader
            | NodeError::LeaderChanged
            | NodeError::ConfChangePending),
        )) => {
            return ForwardResponse { not_appended: true, ..fail(Status::failed_precondition(e.to_string())) };
        }
        Ok(Err(e)) => return fail(node_status(e)),
        Ok(Ok(applied)) => applied,
    };
    match applied.result {
        Ok(response) => ForwardResponse {
            id,
            response: Some(response),
            revision: applied.revision,
            raft_term: applied.term,
            ..Default::default()
        },
        Err(e) => fail(super::shared::kv_status(e)),
    }
}
