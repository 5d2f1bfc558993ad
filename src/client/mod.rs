//! A Rust client for raftkv (or etcd): the etcd v3 gRPC API over a list of
//! endpoints.
//!
//! It connects to the first endpoint that answers and fails over to the next
//! when one is unreachable. Any member serves any request (followers forward
//! writes to the leader), so no leader discovery is needed for correctness.
//! Reads are retried on another endpoint; a write is retried only if it never
//! reached a server (the connection failed), so it is never applied twice.

use std::time::Duration;

use bytes::Bytes;
use tonic::transport::{Channel, Endpoint};

use crate::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, Member, MemberListRequest, PutRequest, PutResponse, RangeRequest,
    RangeResponse, StatusRequest, StatusResponse,
};

/// The endpoints of the cluster `raftkv dev` starts.
pub const DEV_ENDPOINTS: &str = "http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:32379";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoint reachable ({endpoints}): {last}")]
    Unreachable { endpoints: String, last: String },
    #[error("invalid endpoint `{0}`: use http://host:port")]
    BadEndpoint(String),
    #[error("{}", .0.message())]
    Server(#[from] tonic::Status),
}

pub struct Client {
    endpoints: Vec<String>,
    current: usize,
    channel: Channel,
}

impl Client {
    /// Connects to the first reachable endpoint of `endpoints`.
    pub async fn connect(endpoints: &[String]) -> Result<Client, ClientError> {
        let mut client = Client {
            endpoints: endpoints.to_vec(),
            current: 0,
            channel: Endpoint::from_static("http://[::1]:1").connect_lazy(),
        };
        client.reconnect(0).await?;
        Ok(client)
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    async fn reconnect(&mut self, start: usize) -> Result<(), ClientError> {
        let mut last = String::from("no endpoints given");
        for i in 0..self.endpoints.len() {
            let index = (start + i) % self.endpoints.len();
            let url = &self.endpoints[index];
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|_| ClientError::BadEndpoint(url.clone()))?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .tcp_nodelay(true);
            match endpoint.connect().await {
                Ok(channel) => {
                    self.channel = channel;
                    self.current = index;
                    return Ok(());
                }
                Err(e) => last = format!("{url}: {e}"),
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
        let req = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        Ok(KvClient::new(self.channel.clone()).put(req).await?.into_inner())
    }

    pub async fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, ClientError> {
        self.idempotent(|ch| {
            let req = req.clone();
            async move { Ok(KvClient::new(ch).range(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn delete(&mut self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, ClientError> {
        Ok(KvClient::new(self.channel.clone()).delete_range(req).await?.into_inner())
    }

    pub async fn members(&mut self) -> Result<Vec<Member>, ClientError> {
        self.idempotent(|ch| async move {
            Ok(ClusterClient::new(ch).member_list(MemberListRequest::default()).await?.into_inner().members)
        })
        .await
    }

    /// One member's status, asked at `endpoint` directly.
    pub async fn status_of(endpoint: &str) -> Result<StatusResponse, ClientError> {
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|_| ClientError::BadEndpoint(endpoint.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| ClientError::Unreachable { endpoints: endpoint.to_string(), last: e.to_string() })?;
        Ok(MaintenanceClient::new(channel).status(StatusRequest {}).await?.into_inner())
    }
}
