//! A member's place in its cluster beyond the log: finding a running cluster
//! to join (`--initial-cluster-state existing`), adding itself first when
//! started with `--join` and promoting itself once in sync, and publishing
//! its name and client URLs once it runs, so `MemberList` shows them
//! everywhere (a member added but never started has neither, as in etcd).

use std::sync::Arc;
use std::time::Duration;

use super::config::Settings;
use super::membership;
use super::shared::Shared;
use super::{Joined, ServerError};
use crate::proto::MemberRecord;
use crate::proto::raftkvpb::{Command, MemberChange, command, member_change};
use crate::proto::raftpeer::MembersRequest;
use crate::proto::raftpeer::raft_peer_client::RaftPeerClient;

/// How long a joining member keeps asking --initial-cluster's members.
const FIND_FOR: Duration = Duration::from_secs(30);
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// `--join`, before the first start: adds this member as a learner through
/// the Cluster API of any `--join` URL, unless a member with its peer URLs
/// already exists (an earlier attempt that crashed after adding it), and
/// makes --initial-cluster the cluster's members, as `member add` prints it.
pub async fn add_self(settings: &mut Settings) -> Result<(), ServerError> {
    let mine = settings.advertise_peer_urls.clone();
    let mut client = crate::client::Client::connect(&settings.join)
        .await
        .map_err(|e| ServerError::Join(format!("--join {}: {e}", settings.join.join(","))))?;
    let failed = |e: crate::client::ClientError| ServerError::Join(e.to_string());
    let list = client.member_list().await.map_err(failed)?;
    let members = match list.members.iter().find(|m| m.peer_ur_ls.iter().any(|u| mine.contains(u))) {
        Some(m) => {
            tracing::info!(member = format!("{:x}", m.id), "already added to the cluster: resuming the join");
            list.members
        }
        None => {
            let (added, list) = client.member_add(mine.clone(), true).await.map_err(failed)?;
            tracing::info!(member = format!("{:x}", added.id), "added this member to the cluster as a learner");
            list.members
        }
    };
    settings.members = members
        .iter()
        .filter_map(|m| {
            let peer_url = m.peer_ur_ls.first()?.clone();
            let name =
                if m.peer_ur_ls.iter().any(|u| mine.contains(u)) { settings.name.clone() } else { m.name.clone() };
            Some(super::config::Member { id: m.id, name, peer_url })
        })
        .collect();
    Ok(())
}

/// `--join`: once this member is a learner holding 90% of the leader's log
/// (etcd's rule, checked by the leader), promotes it; asks again while the
/// leader says it is behind. Returns once it is a voter.
pub async fn promote_self(shared: Arc<Shared>) {
    let me = shared.settings.member_id;
    loop {
        let conf = shared.status.borrow().conf.clone();
        if conf.voters.contains(&me) {
            return;
        }
        if conf.learners.contains(&me) {
            let change = MemberChange { change: Some(member_change::Change::Promote(me)), is_learner: false };
            match shared.write(Command::new(command::Request::Member(change))).await {
                Ok(_) => {
                    tracing::info!("promoted this member from learner to voter");
                    return;
                }
                Err(e) => tracing::debug!("not promoted yet: {}", e.message()),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks the other members of --initial-cluster for the cluster's member
/// table, and finds this member in it by its peer URLs (as etcd does).
pub async fn find_cluster(settings: &Settings) -> Result<Joined, ServerError> {
    let mine = &settings.advertise_peer_urls;
    let peers: Vec<&str> =
        settings.members.iter().map(|m| m.peer_url.as_str()).filter(|url| !mine.iter().any(|u| u == url)).collect();
    if peers.is_empty() {
        return Err(ServerError::Join(
            "--initial-cluster lists no member but this one; list the running members too (`member add` prints the whole setting)"
                .into(),
        ));
    }
    let deadline = tokio::time::Instant::now() + FIND_FOR;
    let mut last_error = String::new();
    while tokio::time::Instant::now() < deadline {
        for url in &peers {
            match ask(url, &settings.peer_dialer).await {
                Ok(answer) => {
                    let table = answer.membership.unwrap_or_default();
                    let me = table.members.iter().find(|m| m.peer_urls.iter().any(|u| mine.contains(u)));
                    // A member that just added this one may not have
                    // applied the addition yet: ask again until the deadline.
                    let Some(me) = me else {
                        last_error = format!(
                            "cluster {:x} has no member with peer URLs {mine:?}: add it first (`raftkv member add {} --peer-urls {}` or `etcdctl member add`)",
                            answer.cluster_id, settings.name, mine[0]
                        );
                        continue;
                    };
                    tracing::info!(
                        cluster = format!("{:x}", answer.cluster_id),
                        member = format!("{:x}", me.id),
                        from = url,
                        "found the cluster to join"
                    );
                    return Ok(Joined { cluster_id: answer.cluster_id, member_id: me.id, table });
                }
                Err(e) => last_error = format!("{url}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(ServerError::Join(format!(
        "no member of --initial-cluster let this member in within {} s: {last_error}",
        FIND_FOR.as_secs()
    )))
}

async fn ask(url: &str, dialer: &crate::tls::Dialer) -> Result<crate::proto::raftpeer::MembersResponse, String> {
    let endpoint = super::transport::peer_endpoint(url).map_err(|e| e.to_string())?;
    let call = async {
        let channel = dialer.connect(&endpoint).await.map_err(|e| e.to_string())?;
        let answer = RaftPeerClient::new(channel).members(MembersRequest {}).await;
        answer.map(|r| r.into_inner()).map_err(|s| s.message().to_string())
    };
    tokio::time::timeout(ASK_TIMEOUT, call).await.map_err(|_| "no answer".to_string())?
}

/// Publishes this member's name and client URLs through the log until the
/// applied table shows them. Repeating a publication is harmless (it sets
/// the same values), so a failed or unknown attempt is simply made again.
pub async fn publish(shared: Arc<Shared>) {
    let s = &shared.settings;
    let wanted = MemberRecord {
        id: s.member_id,
        name: s.name.clone(),
        peer_urls: Vec::new(),
        client_urls: s.advertise_client_urls.clone(),
    };
    let published = |shared: &Shared| {
        let (table, _) = shared.membership();
        membership::record(&table, wanted.id).map(|m| m.name == wanted.name && m.client_urls == wanted.client_urls)
    };
    loop {
        match published(&shared) {
            Some(true) => return,
            Some(false) if shared.status.borrow().leader.is_some() => {
                let change =
                    MemberChange { change: Some(member_change::Change::Publish(wanted.clone())), is_learner: false };
                match shared.write(Command::new(command::Request::Member(change))).await {
                    Ok(_) => {
                        tracing::info!(name = wanted.name, "published this member's name and client URLs");
                        // Applied by the leader: it reaches this member's
                        // table as the member catches up (a joining member
                        // may first install a snapshot), however long that
                        // takes. Nothing to send again.
                        while shared.wait_applied(Duration::from_secs(60), |s| published(s) == Some(true)).await {
                            if published(&shared) == Some(true) {
                                return;
                            }
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::debug!("publishing this member's attributes failed, retrying: {}", e.message());
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            // Not in the table yet (joining), or no leader: wait for news.
            _ => {
                if !shared.wait_applied(Duration::from_millis(500), |s| published(s) == Some(true)).await {
                    return;
                }
            }
        }
    }
}

/// Returns once this member's client URLs are in its table: at once after a
/// restart, after the first publication on a first start.
pub async fn wait_published(shared: &Shared) {
    let id = shared.settings.member_id;
    let published = |shared: &Shared| {
        let (table, _) = shared.membership();
        membership::record(&table, id).is_some_and(|m| !m.client_urls.is_empty())
    };
    // A timed-out wait (true) looks again; a stopping member (false) ends it.
    while !published(shared) {
        if !shared.wait_applied(Duration::from_secs(60), published).await {
            return;
        }
    }
}
