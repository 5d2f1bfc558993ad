//! etcd's `Cluster` service, and the membership operations the HTTP surface
//! shares with it. Every change goes through the leader as one log entry;
//! the answer is given once this member has applied it too, so the member
//! list it carries already shows the change.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use super::{id, record, to_etcd};
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
    ResponseHeader,
};
use crate::proto::raftkvpb::{Command, MemberChange, command, member_change};
use crate::proto::{ConfState, MemberRecord, Membership};
use crate::server::shared::{REQUEST_TIMEOUT, Shared};

/// The members as this member knows them, and a header.
pub fn list(shared: &Shared) -> (ResponseHeader, Vec<Member>) {
    let (table, conf) = shared.membership();
    let status = shared.status.borrow().clone();
    (shared.header(status.revision, status.term), to_etcd(&table, &conf))
}

/// Adds a member (a learner if asked); its id is derived as etcd's is.
pub async fn add(shared: &Shared, peer_urls: Vec<String>, is_learner: bool) -> Result<Member, Status> {
    super::check_urls(&peer_urls).map_err(|e| e.status())?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let id = id::member_id(&peer_urls, &shared.settings.initial_cluster_token, Some(now));
    let record = MemberRecord { id, peer_urls: peer_urls.clone(), ..Default::default() };
    change(shared, member_change::Change::Add(record), is_learner, |t, _| super::record(t, id).is_some()).await?;
    Ok(Member { id, name: String::new(), peer_ur_ls: peer_urls, client_ur_ls: Vec::new(), is_learner })
}

pub async fn remove(shared: &Shared, id: u64) -> Result<(), Status> {
    change(shared, member_change::Change::Remove(id), false, |t, _| record(t, id).is_none()).await
}

pub async fn promote(shared: &Shared, id: u64) -> Result<(), Status> {
    change(shared, member_change::Change::Promote(id), false, |_, c| c.voters.contains(&id)).await
}

pub async fn update(shared: &Shared, id: u64, peer_urls: Vec<String>) -> Result<(), Status> {
    let record = MemberRecord { id, peer_urls: peer_urls.clone(), ..Default::default() };
    let applied = move |t: &Membership, _: &ConfState| super::record(t, id).is_none_or(|m| m.peer_urls == peer_urls);
    change(shared, member_change::Change::UpdatePeerUrls(record), false, applied).await
}

/// Proposes one change through the leader, then waits until this member has
/// applied it (`applied` says when).
async fn change(
    shared: &Shared,
    change: member_change::Change,
    is_learner: bool,
    applied: impl Fn(&Membership, &ConfState) -> bool,
) -> Result<(), Status> {
    let change = MemberChange { change: Some(change), is_learner };
    shared.write(Command::new(command::Request::Member(change))).await?;
    // Applied by the leader, so made; the list in the answer shows it once
    // this member applied it too (if it does not in time, it may not).
    let seen = |shared: &Shared| {
        let (table, conf) = shared.membership();
        applied(&table, &conf)
    };
    shared.wait_applied(REQUEST_TIMEOUT, seen).await;
    Ok(())
}

pub struct ClusterService(pub Arc<Shared>);

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        self.0.require_admin(&request)?;
        let req = request.into_inner();
        let member = add(&self.0, req.peer_ur_ls, req.is_learner).await?;
        let (header, members) = list(&self.0);
        Ok(Response::new(MemberAddResponse { header: Some(header), member: Some(member), members }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.0.require_admin(&request)?;
        remove(&self.0, request.into_inner().id).await?;
        let (header, members) = list(&self.0);
        Ok(Response::new(MemberRemoveResponse { header: Some(header), members }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.0.require_admin(&request)?;
        let req = request.into_inner();
        update(&self.0, req.id, req.peer_ur_ls).await?;
        let (header, members) = list(&self.0);
        Ok(Response::new(MemberUpdateResponse { header: Some(header), members }))
    }

    async fn member_list(&self, _: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        let (header, members) = list(&self.0);
        Ok(Response::new(MemberListResponse { header: Some(header), members }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.0.require_admin(&request)?;
        promote(&self.0, request.into_inner().id).await?;
        let (header, members) = list(&self.0);
        Ok(Response::new(MemberPromoteResponse { header: Some(header), members }))
    }
}
