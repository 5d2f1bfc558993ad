//! A Rust client for raftkv (or etcd): the etcd v3 gRPC API over a list of
//! endpoints.
//!
//! It connects to the first endpoint that answers and fails over to the next
//! when one is unreachable. It asks that member who leads (`Status`) and where
//! the leader serves clients (`MemberList`), and sends writes straight there,
//! saving the hop a follower would make to forward them. Any member serves any
//! request, so a stale idea of the leader costs only that hop.
//!
//! Reads are retried on another endpoint when one is unavailable. A write is
//! sent once: if it fails, the caller is told (it may or may not have been
//! applied) and the leader is looked up again before the next write. A
//! watch ([`ResumingWatch`]) resumes after a broken stream from the revision
//! after the last one it delivered.

pub mod alarms;
pub mod auth;
pub mod backup;
pub mod credentials;
pub mod leases;
pub mod lock;
pub mod members;
pub mod output;
pub mod watch;

use std::time::Duration;

use bytes::Bytes;
use tonic::transport::Endpoint;

use crate::tls::Dialer;

use crate::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, MemberListRequest, PutRequest,
    PutResponse, RangeRequest, RangeResponse, StatusRequest, StatusResponse,
};
pub use credentials::{Channel, Credentials, use_credentials};
pub use watch::ResumingWatch;

/// The endpoints of the cluster `raftkv dev` starts.
pub const DEV_ENDPOINTS: &str = "http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:32379";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoint reachable ({endpoints}): {last}")]
    Unreachable { endpoints: String, last: String },
    #[error("invalid endpoint `{0}`: use http://host:port or https://host:port")]
    BadEndpoint(String),
    /// Settings that cannot work together, named.
    #[error("{0}")]
    BadSettings(String),
    /// The server's answer, printed as its message alone (etcdctl's way);
    /// a connection that failed under the call also says why.
    #[error("{}", status_text(.0))]
    Server(tonic::Status),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    /// What a member sent does not verify.
    #[error("{0}")]
    Corrupt(String),
    /// The server ended a watch: etcdctl's wording, etcd's reason.
    #[error("watch was canceled ({reason})")]
    WatchCanceled { reason: String, compact_revision: i64 },
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> ClientError {
        ClientError::Server(status)
    }
}

pub struct Client {
    endpoints: Vec<String>,
    current: usize,
    channel: Channel,
    /// The leader's client URL and a channel to it, once known.
    leader: Option<(String, Channel)>,
    leader_checked: bool,
}

impl Client {
    /// Connects to the first reachable endpoint of `endpoints`.
    pub async fn connect(endpoints: &[String]) -> Result<Client, ClientError> {
        let mut client = Client {
            endpoints: endpoints.to_vec(),
            current: 0,
            channel: Channel::new(Endpoint::from_static("http://[::1]:1").connect_lazy()),
            leader: None,
            leader_checked: false,
        };
        client.reconnect(0).await?;
        Ok(client)
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    /// The leader's client URL, if it was found.
    pub async fn leader_endpoint(&mut self) -> Option<String> {
        self.write_channel().await;
        self.leader.as_ref().map(|(url, _)| url.clone())
    }

    /// The channel writes go to: the leader's if it can be found, else ours.
    async fn write_channel(&mut self) -> Channel {
        if !self.leader_checked {
            self.leader_checked = true;
            self.leader = self.find_leader().await;
        }
        match &self.leader {
            Some((_, channel)) => channel.clone(),
            None => self.channel.clone(),
        }
    }

    async fn find_leader(&self) -> Option<(String, Channel)> {
        let status = MaintenanceClient::new(self.channel.clone()).status(StatusRequest {}).await.ok()?.into_inner();
        let members = ClusterClient::new(self.channel.clone()).member_list(MemberListRequest::default()).await.ok()?;
        let member = members.into_inner().members.into_iter().find(|m| m.id == status.leader && status.leader != 0)?;
        let url = member.client_ur_ls.into_iter().next()?;
        let channel = connect(&url).await.ok()?;
        Some((url, channel))
    }

    /// A write failed: look the leader up again before the next one.
    fn forget_leader(&mut self) {
        self.leader = None;
        self.leader_checked = false;
    }

    async fn reconnect(&mut self, start: usize) -> Result<(), ClientError> {
        let mut last = String::from("no endpoints given");
        for i in 0..self.endpoints.len() {
            let index = (start + i) % self.endpoints.len();
            let url = &self.endpoints[index];
            match connect(url).await {
                Ok(channel) => {
                    self.channel = channel;
                    self.current = index;
                    return Ok(());
                }
                Err(ClientError::BadEndpoint(url)) => return Err(ClientError::BadEndpoint(url)),
                Err(e) => last = e.to_string(),
            }
        }
        Err(ClientError::Unreachable { endpoints: self.endpoints.join(","), last })
    }

    /// Runs an idempotent call, moving to the next endpoint if this one is unavailable.
    async fn idempotent<T, F, Fut>(&mut self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        match call(self.channel.clone()).await {
            Err(status) if status.code() == tonic::Code::Unavailable && self.endpoints.len() > 1 => {
                self.reconnect(self.current + 1).await?;
                Ok(call(self.channel.clone()).await?)
            }
            other => Ok(other?),
        }
    }

    pub async fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<PutResponse, ClientError> {
        self.put_request(PutRequest { key: key.into(), value: value.into(), ..Default::default() }).await
    }

    /// A put with every option etcd's API has (a lease, prev_kv, …).
    pub async fn put_request(&mut self, req: PutRequest) -> Result<PutResponse, ClientError> {
        let channel = self.write_channel().await;
        let result = KvClient::new(channel).put(req).await;
        self.after_write(result)
    }

    fn after_write<T>(&mut self, result: Result<tonic::Response<T>, tonic::Status>) -> Result<T, ClientError> {
        match result {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => {
                if status.code() == tonic::Code::Unavailable {
                    self.forget_leader();
                }
                Err(status.into())
            }
        }
    }

    pub async fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, ClientError> {
        self.idempotent(|ch| {
            let req = req.clone();
            async move { Ok(KvClient::new(ch).range(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn delete(&mut self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, ClientError> {
        let channel = self.write_channel().await;
        let result = KvClient::new(channel).delete_range(req).await;
        self.after_write(result)
    }

    /// Compacts the history up to `revision` (a write: never retried, since
    /// a retry of one that applied would answer "compacted").
    pub async fn compact(&mut self, revision: i64) -> Result<CompactionResponse, ClientError> {
        let channel = self.write_channel().await;
        let result = KvClient::new(channel).compact(CompactionRequest { revision, physical: true }).await;
        self.after_write(result)
    }

    /// One member's status, asked at `endpoint` directly.
    pub async fn status_of(endpoint: &str) -> Result<StatusResponse, ClientError> {
        let channel = connect(endpoint).await?;
        Ok(MaintenanceClient::new(channel).status(StatusRequest {}).await?.into_inner())
    }
}

/// How this process connects to `https://` client URLs: set once, by the
/// command line's `--cacert`, `--cert`, `--key` or by a server (its own
/// client-side settings); the system's roots and no client certificate
/// until then. One per process, like etcdctl's flags: a process talks to
/// one cluster.
static DIALER: std::sync::RwLock<Option<Dialer>> = std::sync::RwLock::new(None);

/// Sets how this process connects to `https://` client URLs, unless that
/// was set already (the first setting wins).
pub fn use_tls(dialer: Dialer) {
    let mut set = DIALER.write().unwrap_or_else(|e| e.into_inner());
    if set.is_none() {
        *set = Some(dialer);
    }
}

/// How this process connects to client URLs.
pub fn dialer() -> Dialer {
    DIALER.read().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default()
}

async fn connect(url: &str) -> Result<Channel, ClientError> {
    let endpoint = crate::tls::Target::new(url)
        .map_err(|_| ClientError::BadEndpoint(url.to_string()))?
        .with(|e| e.connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(10)).tcp_nodelay(true));
    let connection = dialer()
        .connect(&endpoint)
        .await
        .map_err(|e| ClientError::Unreachable { endpoints: url.to_string(), last: error_chain(&e) })?;
    Ok(Channel::new(connection))
}

/// A status's message; for one that stands for a broken connection
/// ("transport error"), with what broke it (a refused TLS handshake says
/// which certificate was missing or not trusted).
fn status_text(status: &tonic::Status) -> String {
    match std::error::Error::source(status) {
        Some(cause) => format!("{}: {}", status.message(), error_chain(cause)),
        None => status.message().to_string(),
    }
}

/// An error with its causes: tonic's own message says only "transport
/// error", the cause says which (refused, a certificate not trusted, …).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
