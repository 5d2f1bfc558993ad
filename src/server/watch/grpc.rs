//! etcd's Watch service (`etcdserverpb.Watch`): one bidirectional gRPC
//! stream per client, served by the engine in [`super`].

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{WatchRequest, WatchResponse};
use crate::server::shared::Shared;

pub struct WatchService(pub Arc<Shared>);

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.0.caller(&request)?;
        Ok(Response::new(ReceiverStream::new(super::serve(self.0.clone(), caller, request.into_inner()))))
    }
}
