//! `Range` over gRPC with its response encoded off the async workers.
//!
//! Encoding a full-range response (300 MB for a million 256-byte values)
//! cannot yield, so on a client worker it holds up every other request on
//! that worker, writes included. Here the response is encoded on a blocking
//! thread into an [`EncodedRange`]: the header as a message, everything else
//! as the bytes prost would write for it. Its encoding is byte for byte
//! that of the `RangeResponse` it came from, so clients see no difference.
//!
//! [`KvRoutes`] is etcd's `KV` service with `Range` answered this way and
//! every other method passed to the generated server.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut};
use prost::Message;
use prost::encoding::{DecodeContext, WireType};
use tonic::codegen::http;
use tonic::codegen::{Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use super::grpc::KvService;
use super::shared::Shared;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};

/// Responses with more keys than this are encoded on a blocking thread;
/// smaller ones are cheaper to encode than to hand over.
const ENCODE_INLINE_MAX_KVS: usize = 64;

const RANGE_PATH: &str = "/etcdserverpb.KV/Range";

/// A `RangeResponse` whose fields other than the header are already encoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedRange {
    pub header: Option<ResponseHeader>,
    /// `kvs`, `more` and `count`, encoded as prost encodes them.
    body: Vec<u8>,
}

impl EncodedRange {
    /// Encodes `resp` (all but its header) here.
    pub fn new(mut resp: RangeResponse) -> EncodedRange {
        let header = resp.header.take();
        EncodedRange { header, body: resp.encode_to_vec() }
    }

    /// Encodes `resp`, on a blocking thread when it is large.
    pub async fn encode(resp: RangeResponse) -> Result<EncodedRange, Status> {
        if resp.kvs.len() <= ENCODE_INLINE_MAX_KVS {
            return Ok(EncodedRange::new(resp));
        }
        tokio::task::spawn_blocking(move || EncodedRange::new(resp))
            .await
            .map_err(|e| Status::internal(format!("encoding the range response failed: {e}")))
    }
}

impl Message for EncodedRange {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(header) = &self.header {
            prost::encoding::message::encode(1, header, buf);
        }
        buf.put_slice(&self.body);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag == 1 {
            return prost::encoding::message::merge(wire_type, self.header.get_or_insert_default(), buf, ctx);
        }
        // Decoded as a RangeResponse field (so it is checked), kept encoded.
        let mut field = RangeResponse::default();
        field.merge_field(tag, wire_type, buf, ctx)?;
        field.encode_raw(&mut self.body);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.header.as_ref().map_or(0, |h| prost::encoding::message::encoded_len(1, h)) + self.body.len()
    }

    fn clear(&mut self) {
        self.header = None;
        self.body.clear();
    }
}

/// Etcd's `KV` service: `Range` answered with an [`EncodedRange`], every
/// other method by the generated server.
#[derive(Clone)]
pub struct KvRoutes {
    shared: Arc<Shared>,
    inner: KvServer<KvService>,
    max_decoding_message_size: usize,
}

impl KvRoutes {
    pub fn new(shared: Arc<Shared>, max_decoding_message_size: usize) -> KvRoutes {
        let inner = KvServer::new(KvService(shared.clone())).max_decoding_message_size(max_decoding_message_size);
        KvRoutes { shared, inner, max_decoding_message_size }
    }
}

impl NamedService for KvRoutes {
    const NAME: &'static str = "etcdserverpb.KV";
}

impl<B> Service<http::Request<B>> for KvRoutes
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        <KvServer<KvService> as Service<http::Request<B>>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != RANGE_PATH {
            return self.inner.call(req);
        }
        let method = RangeMethod(self.shared.clone());
        let max_decoding = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<EncodedRange, RangeRequest>::default())
                .apply_max_message_size_config(Some(max_decoding), None);
            Ok(grpc.unary(method, req).await)
        })
    }
}

struct RangeMethod(Arc<Shared>);

impl UnaryService<RangeRequest> for RangeMethod {
    type Response = EncodedRange;
    type Future = BoxFuture<Response<EncodedRange>, Status>;

    fn call(&mut self, request: Request<RangeRequest>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let caller = shared.caller(&request)?;
            let resp = super::grpc::range(&shared, &caller, request.into_inner()).await?;
            Ok(Response::new(EncodedRange::encode(resp).await?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn response(n: usize) -> RangeResponse {
        let kvs = (0..n)
            .map(|i| KeyValue {
                key: format!("key-{i}").into(),
                value: vec![b'v'; i % 300].into(),
                create_revision: 2,
                mod_revision: 3 + i as i64,
                version: 1,
                lease: 0,
            })
            .collect();
        RangeResponse {
            header: Some(ResponseHeader { cluster_id: 7, member_id: 9, revision: 40, raft_term: 2 }),
            kvs,
            more: true,
            count: 1000,
        }
    }

    #[test]
    fn encodes_byte_for_byte_as_the_range_response() {
        for n in [0, 1, ENCODE_INLINE_MAX_KVS + 1, 500] {
            let resp = response(n);
            let encoded = EncodedRange::new(resp.clone());
            assert_eq!(encoded.encode_to_vec(), resp.encode_to_vec(), "{n} kvs");
            assert_eq!(encoded.encoded_len(), resp.encoded_len());
        }
    }

    #[test]
    fn decodes_what_a_range_response_encodes_and_encodes_it_back() {
        let resp = response(100);
        let decoded = EncodedRange::decode(resp.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.header, resp.header);
        assert_eq!(RangeResponse::decode(decoded.encode_to_vec().as_slice()).unwrap(), resp);
    }

    #[test]
    fn refuses_a_malformed_field() {
        // Field 2 (kvs) as a varint: the wrong wire type for a message.
        let bad = [0x10, 0x01];
        assert!(EncodedRange::decode(bad.as_slice()).is_err());
    }

    #[tokio::test]
    async fn large_responses_are_encoded_the_same_off_the_worker() {
        let resp = response(ENCODE_INLINE_MAX_KVS * 4);
        let encoded = EncodedRange::encode(resp.clone()).await.unwrap();
        assert_eq!(encoded.encode_to_vec(), resp.encode_to_vec());
    }
}
