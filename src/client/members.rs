//! Membership calls of the etcd v3 `Cluster` API, and what `raftkv member`
//! prints. A change is a write: it is sent once and never retried, since a
//! retry of an addition that was applied would add a second member.

use crate::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest, MemberUpdateRequest,
};

use super::{Client, ClientError};

/// The cluster's id and its members, as one member knows them.
pub struct Members {
    pub cluster_id: u64,
    pub members: Vec<Member>,
}

impl Members {
    /// A member named by its hexadecimal id or by its name.
    pub fn find(&self, id_or_name: &str) -> Result<&Member, ClientError> {
        let by_id = u64::from_str_radix(id_or_name, 16).ok();
        self.members
            .iter()
            .find(|m| Some(m.id) == by_id)
            .or_else(|| self.members.iter().find(|m| !m.name.is_empty() && m.name == id_or_name))
            .ok_or_else(|| ClientError::BadSettings(format!("no member has the id or name `{id_or_name}`")))
    }
}

impl Client {
    pub async fn member_list(&mut self) -> Result<Members, ClientError> {
        self.idempotent(|ch| async move {
            let resp = ClusterClient::new(ch).member_list(MemberListRequest::default()).await?.into_inner();
            Ok(Members { cluster_id: resp.header.unwrap_or_default().cluster_id, members: resp.members })
        })
        .await
    }

    /// Adds a member; returns it (with the id the cluster gave it) and the list.
    pub async fn member_add(
        &mut self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(Member, Members), ClientError> {
        let req = MemberAddRequest { peer_ur_ls: peer_urls, is_learner };
        let resp = ClusterClient::new(self.channel.clone()).member_add(req).await?.into_inner();
        let members = Members { cluster_id: resp.header.unwrap_or_default().cluster_id, members: resp.members };
        Ok((resp.member.unwrap_or_default(), members))
    }

    pub async fn member_remove(&mut self, id: u64) -> Result<(), ClientError> {
        ClusterClient::new(self.channel.clone()).member_remove(MemberRemoveRequest { id }).await?;
        Ok(())
    }

    pub async fn member_promote(&mut self, id: u64) -> Result<(), ClientError> {
        ClusterClient::new(self.channel.clone()).member_promote(MemberPromoteRequest { id }).await?;
        Ok(())
    }

    pub async fn member_update(&mut self, id: u64, peer_urls: Vec<String>) -> Result<(), ClientError> {
        let req = MemberUpdateRequest { id, peer_ur_ls: peer_urls };
        ClusterClient::new(self.channel.clone()).member_update(req).await?;
        Ok(())
    }
}

/// etcdctl's `member list -w table`, raftkv's columns.
pub fn table(members: &Members) -> String {
    let mut out = format!(
        "{:<16}  {:<9}  {:<12}  {:<28}  {:<28}  {}\n",
        "ID", "STATUS", "NAME", "PEER URLS", "CLIENT URLS", "LEARNER"
    );
    for m in &members.members {
        let status = if m.name.is_empty() { "unstarted" } else { "started" };
        out.push_str(&format!(
            "{:<16x}  {:<9}  {:<12}  {:<28}  {:<28}  {}\n",
            m.id,
            status,
            m.name,
            m.peer_ur_ls.join(","),
            m.client_ur_ls.join(","),
            if m.is_learner { "yes" } else { "no" }
        ));
    }
    out
}

/// How to start a member just added: the `raftkv server` command, and the
/// same settings as `RAFTKV_*` variables (as `etcdctl member add` prints
/// its `ETCD_*` ones). `--initial-cluster` names every member: the running
/// ones by name (or, unstarted, by id) and the new one by `name`.
pub fn start_instructions(name: &str, added: &Member, members: &Members, client_url: Option<&str>) -> String {
    let initial_cluster: Vec<String> = members
        .members
        .iter()
        .flat_map(|m| {
            let who = if m.id == added.id {
                name.to_string()
            } else if m.name.is_empty() {
                format!("{:x}", m.id)
            } else {
                m.name.clone()
            };
            m.peer_ur_ls.iter().map(move |url| format!("{who}={url}"))
        })
        .collect();
    let peer_urls = added.peer_ur_ls.join(",");
    let mut vars = vec![
        ("NAME", name.to_string()),
        ("INITIAL_CLUSTER", initial_cluster.join(",")),
        ("INITIAL_ADVERTISE_PEER_URLS", peer_urls.clone()),
        ("LISTEN_PEER_URLS", peer_urls),
        ("INITIAL_CLUSTER_STATE", "existing".to_string()),
    ];
    if let Some(url) = client_url {
        vars.push(("LISTEN_CLIENT_URLS", url.to_string()));
    }
    let flags: Vec<String> =
        vars.iter().map(|(k, v)| format!("--{} {v}", k.to_lowercase().replace('_', "-"))).collect();
    let mut out = format!(
        "Member {:x} added to cluster {:x}{}\n\nStart it with:\n\n  raftkv server {}\n",
        added.id,
        members.cluster_id,
        if added.is_learner { " as a learner" } else { "" },
        flags.join(" \\\n    ")
    );
    if client_url.is_none() {
        out.push_str("    (add --listen-client-urls http://HOST:PORT if 127.0.0.1:2379 is taken)\n");
    }
    out.push_str("\nor with these variables:\n\n");
    for (k, v) in &vars {
        out.push_str(&format!("RAFTKV_{k}=\"{v}\"\n"));
    }
    if added.is_learner {
        out.push_str(&format!("\nOnce it has caught up: raftkv member promote {:x}\n", added.id));
    }
    out
}
