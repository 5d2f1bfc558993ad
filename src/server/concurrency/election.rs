//! etcd's `v3electionpb.Election` service: one leader per name, whose
//! proclaimed value followers observe.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{Caller, Shared, wait_turn};
use super::{Release, delete_op, header, if_created_at, join_line, key_of, owner, owner_now, prefix_of, put_op, txn};
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ProclaimResponse,
    ResignRequest, ResignResponse,
};

pub struct ElectionService(pub Arc<Shared>);

fn not_leader() -> Status {
    Status::unknown("election: not leader")
}

fn missing_leader() -> Status {
    Status::invalid_argument("\"leader\" field must be provided")
}

/// Puts `value` under the leader's key if it still leads (etcd's
/// `Election.Proclaim`).
async fn proclaim(shared: &Shared, caller: &Caller, leader: &LeaderKey, value: Bytes) -> Result<i64, Status> {
    let key: Bytes = leader.key.clone();
    let req = if_created_at(&key, leader.rev, vec![put_op(&key, value, leader.lease)], vec![]);
    let (resp, revision, _) = txn(shared, caller, req).await?;
    if !resp.succeeded {
        return Err(not_leader());
    }
    Ok(revision)
}

#[tonic::async_trait]
impl Election for ElectionService {
    /// Waits until the campaigner leads (etcd's `Election.Campaign`): a
    /// campaigner already in line with another value proclaims it first.
    async fn campaign(&self, request: Request<CampaignRequest>) -> Result<Response<CampaignResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let req = request.into_inner();
        let prefix = prefix_of(&req.name);
        let key = key_of(&prefix, req.lease);
        let release = Release::new(&self.0, &caller, &key);
        let (rev, existing, mut seen) = join_line(&self.0, &caller, &key, req.lease, req.value.clone()).await?;
        let leader = LeaderKey { name: req.name, key: key.clone(), rev, lease: req.lease };
        if existing.is_some_and(|kv| kv.value != req.value) {
            seen = proclaim(&self.0, &caller, &leader, req.value).await?;
        }
        let kv = wait_turn(&self.0, &caller, &prefix, &key, rev, seen).await?;
        release.disarm();
        Ok(Response::new(CampaignResponse { header: header(&self.0, kv.revision()), leader: Some(leader) }))
    }

    async fn proclaim(&self, request: Request<ProclaimRequest>) -> Result<Response<ProclaimResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let req = request.into_inner();
        let leader = req.leader.ok_or_else(missing_leader)?;
        let revision = proclaim(&self.0, &caller, &leader, req.value).await?;
        Ok(Response::new(ProclaimResponse { header: header(&self.0, revision) }))
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let prefix = prefix_of(&request.into_inner().name);
        let (owner, revision) = owner_now(&self.0, &caller, &prefix).await?;
        let kv = owner.ok_or_else(|| Status::unknown("election: no leader"))?;
        Ok(Response::new(LeaderResponse { header: header(&self.0, revision), kv: Some(kv) }))
    }

    type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

    /// The leader's key and value now (if there is a leader), then each
    /// time the leader or its value changes.
    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<Self::ObserveStream>, Status> {
        let caller = self.0.caller(&request)?;
        let prefix = prefix_of(&request.into_inner().name);
        // Start from a state at least as new as a linearizable read.
        let (_, from) = owner_now(&self.0, &caller, &prefix).await?;
        let (answers, stream) = tokio::sync::mpsc::channel(16);
        let shared = self.0.clone();
        tokio::spawn(async move {
            let mut applied = shared.applied.clone();
            let mut last: Option<(Bytes, i64)> = None;
            loop {
                let change = {
                    let kv = applied.borrow_and_update();
                    let leader = (kv.revision() >= from).then(|| owner(&kv, &prefix)).flatten();
                    let revision = kv.revision();
                    leader.filter(|l| last.as_ref() != Some(&(l.key.clone(), l.mod_revision))).map(|l| (l, revision))
                };
                if let Some((kv, revision)) = change {
                    last = Some((kv.key.clone(), kv.mod_revision));
                    let resp = LeaderResponse { header: header(&shared, revision), kv: Some(kv) };
                    if answers.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
                    _ = answers.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(stream))))
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let caller = self.0.caller(&request)?;
        let leader = request.into_inner().leader.ok_or_else(missing_leader)?;
        let key: Bytes = leader.key.clone();
        let resign = if_created_at(&key, leader.rev, vec![delete_op(&key)], vec![]);
        let (_, revision, _) = txn(&self.0, &caller, resign).await?;
        Ok(Response::new(ResignResponse { header: header(&self.0, revision) }))
    }
}
