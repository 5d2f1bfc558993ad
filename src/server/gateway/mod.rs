//! etcd's JSON gateway on the client port: the v3 gRPC services as
//! `POST /v3/<service>/<method>` with JSON bodies, as etcd 3.4's
//! grpc-gateway serves them (also under `/v3beta`), for clients that speak
//! only this (Patroni's etcd3 mode, APISIX, curl).
//!
//! Each route calls the same service implementation gRPC does, so a write
//! here has every guarantee a gRPC write has. The JSON mapping is generated
//! from the protos (`pbjson`, see `build.rs`): base64 bytes, 64-bit
//! integers as strings, enums by name, the proto's own field names; unknown
//! fields are ignored and an empty body is the empty message, as in etcd.
//!
//! Errors are grpc-gateway's: the HTTP status its v1 maps the gRPC code to,
//! and `{"error": M, "message": M, "code": N}`. Streaming methods answer
//! with one `{"result": ...}` line per message (see [`stream`]).
//!
//! A request's `Authorization` header is its auth token, as in etcd's.

mod stream;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Status;

use super::auth::service::AuthService;
use super::concurrency::election::ElectionService;
use super::concurrency::lock::LockService;
use super::grpc::KvService;
use super::lease::service::LeaseService;
use super::maintenance::MaintenanceService;
use super::membership::service::ClusterService;
use super::shared::Shared;
use crate::proto::etcdserverpb::auth_server::Auth as _;
use crate::proto::etcdserverpb::cluster_server::Cluster as _;
use crate::proto::etcdserverpb::kv_server::Kv as _;
use crate::proto::etcdserverpb::lease_server::Lease as _;
use crate::proto::etcdserverpb::maintenance_server::Maintenance as _;
use crate::proto::v3electionpb::election_server::Election as _;
use crate::proto::v3lockpb::lock_server::Lock as _;

/// The prefixes etcd 3.4 serves the gateway under.
const PREFIXES: [&str; 2] = ["/v3", "/v3beta"];

/// A route calling `$service`'s unary `$method` with the decoded body.
macro_rules! unary {
    ($service:ident, $method:ident) => {
        post(|State(shared): State<Arc<Shared>>, headers: HeaderMap, extensions: Extensions, body: Bytes| async move {
            match decode(&body) {
                Ok(req) => reply($service(shared).$method(grpc_request(req, headers, extensions)).await),
                Err(status) => error(&status),
            }
        })
    };
}

/// A route calling `$service`'s server-streaming `$method`.
macro_rules! server_stream {
    ($service:ident, $method:ident) => {
        post(|State(shared): State<Arc<Shared>>, headers: HeaderMap, extensions: Extensions, body: Bytes| async move {
            match decode(&body) {
                Ok(req) => match $service(shared).$method(grpc_request(req, headers, extensions)).await {
                    Ok(responses) => stream::reply(responses.into_inner()),
                    Err(status) => error(&status),
                },
                Err(status) => error(&status),
            }
        })
    };
}

pub fn routes() -> Router<Arc<Shared>> {
    let methods: Vec<(&str, MethodRouter<Arc<Shared>>)> = vec![
        ("/kv/range", unary!(KvService, range)),
        ("/kv/put", unary!(KvService, put)),
        ("/kv/deleterange", unary!(KvService, delete_range)),
        ("/kv/txn", unary!(KvService, txn)),
        ("/kv/compaction", unary!(KvService, compact)),
        ("/watch", post(stream::watch)),
        ("/lease/grant", unary!(LeaseService, lease_grant)),
        ("/lease/revoke", unary!(LeaseService, lease_revoke)),
        ("/kv/lease/revoke", unary!(LeaseService, lease_revoke)),
        ("/lease/keepalive", post(stream::keep_alive)),
        ("/lease/timetolive", unary!(LeaseService, lease_time_to_live)),
        ("/kv/lease/timetolive", unary!(LeaseService, lease_time_to_live)),
        ("/lease/leases", unary!(LeaseService, lease_leases)),
        ("/kv/lease/leases", unary!(LeaseService, lease_leases)),
        ("/cluster/member/add", unary!(ClusterService, member_add)),
        ("/cluster/member/remove", unary!(ClusterService, member_remove)),
        ("/cluster/member/update", unary!(ClusterService, member_update)),
        ("/cluster/member/list", unary!(ClusterService, member_list)),
        ("/cluster/member/promote", unary!(ClusterService, member_promote)),
        ("/maintenance/alarm", unary!(MaintenanceService, alarm)),
        ("/maintenance/status", unary!(MaintenanceService, status)),
        ("/maintenance/defragment", unary!(MaintenanceService, defragment)),
        ("/maintenance/hash", unary!(MaintenanceService, hash_kv)),
        ("/maintenance/transfer-leadership", unary!(MaintenanceService, move_leader)),
        ("/maintenance/snapshot", server_stream!(MaintenanceService, snapshot)),
        ("/lock/lock", unary!(LockService, lock)),
        ("/lock/unlock", unary!(LockService, unlock)),
        ("/election/campaign", unary!(ElectionService, campaign)),
        ("/election/proclaim", unary!(ElectionService, proclaim)),
        ("/election/leader", unary!(ElectionService, leader)),
        ("/election/observe", server_stream!(ElectionService, observe)),
        ("/election/resign", unary!(ElectionService, resign)),
        ("/auth/enable", unary!(AuthService, auth_enable)),
        ("/auth/disable", unary!(AuthService, auth_disable)),
        ("/auth/status", unary!(AuthService, auth_status)),
        ("/auth/authenticate", unary!(AuthService, authenticate)),
        ("/auth/user/add", unary!(AuthService, user_add)),
        ("/auth/user/get", unary!(AuthService, user_get)),
        ("/auth/user/list", unary!(AuthService, user_list)),
        ("/auth/user/delete", unary!(AuthService, user_delete)),
        ("/auth/user/changepw", unary!(AuthService, user_change_password)),
        ("/auth/user/grant", unary!(AuthService, user_grant_role)),
        ("/auth/user/revoke", unary!(AuthService, user_revoke_role)),
        ("/auth/role/add", unary!(AuthService, role_add)),
        ("/auth/role/get", unary!(AuthService, role_get)),
        ("/auth/role/list", unary!(AuthService, role_list)),
        ("/auth/role/delete", unary!(AuthService, role_delete)),
        ("/auth/role/grant", unary!(AuthService, role_grant_permission)),
        ("/auth/role/revoke", unary!(AuthService, role_revoke_permission)),
    ];
    let mut router = Router::new();
    for (path, method) in methods {
        // Browsers ask before a cross-origin POST; etcd allows any origin.
        let method = method.options(|| async { cors(StatusCode::OK.into_response()) });
        for prefix in PREFIXES {
            router = router.route(&format!("{prefix}{path}"), method.clone());
        }
    }
    router
}

/// The gRPC request a gateway call makes: its headers as metadata (so
/// `Authorization` carries the token, as through etcd's gateway) and the
/// connection's details.
fn grpc_request<T>(message: T, headers: HeaderMap, extensions: Extensions) -> tonic::Request<T> {
    tonic::Request::from_parts(tonic::metadata::MetadataMap::from_headers(headers), extensions, message)
}

/// The request message of `body`: the empty message when there is none.
fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn reply<T: Serialize>(result: Result<tonic::Response<T>, Status>) -> Response {
    match result {
        Ok(response) => cors(Json(response.into_inner()).into_response()),
        Err(status) => error(&status),
    }
}

/// grpc-gateway v1's error answer.
fn error(status: &Status) -> Response {
    #[derive(Serialize)]
    struct Error<'a> {
        error: &'a str,
        message: &'a str,
        code: i32,
    }
    let body = Error { error: status.message(), message: status.message(), code: status.code() as i32 };
    cors((http_status(status.code()), Json(body)).into_response())
}

/// The HTTP status grpc-gateway v1 (`runtime.HTTPStatusFromCode`) gives a
/// gRPC code.
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// etcd's CORS headers: any origin may call the gateway.
fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"));
    headers
        .insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("accept, content-type, authorization"));
    response
}

/// A streaming answer's body type, for [`stream`].
fn streaming(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    cors(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader, compare};
    use crate::proto::mvccpb::KeyValue;

    #[test]
    fn requests_decode_base64_bytes_string_or_number_integers_and_either_field_name() {
        let req: RangeRequest =
            decode(br#"{"key":"Zm9v","range_end":"Zm9w","limit":"5","revision":3,"keysOnly":true,"x":1}"#).unwrap();
        assert_eq!(&req.key[..], b"foo");
        assert_eq!(&req.range_end[..], b"fop");
        assert_eq!((req.limit, req.revision, req.keys_only), (5, 3, true));
    }

    #[test]
    fn an_empty_body_is_the_empty_message_and_bad_json_is_invalid_argument() {
        assert_eq!(decode::<RangeRequest>(b" \n").unwrap(), RangeRequest::default());
        let bad = decode::<RangeRequest>(br#"{"key": 5}"#).unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        let txn: crate::proto::etcdserverpb::TxnRequest =
            decode(br#"{"compare":[{"result":"EQUAL","target":"VALUE","key":"Zm9v","value":"YmFy"}]}"#).unwrap();
        assert_eq!(txn.compare[0].target, compare::CompareTarget::Value as i32);
    }

    #[test]
    fn responses_use_proto_names_strings_for_64_bit_integers_and_omit_defaults() {
        let resp = RangeResponse {
            header: Some(ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 }),
            kvs: vec![KeyValue {
                key: "foo".into(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                ..Default::default()
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            serde_json::to_string(&resp).unwrap(),
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"3","raft_term":"4"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1"}],"count":"1"}"#
        );
    }

    #[test]
    fn grpc_codes_map_to_grpc_gateway_statuses() {
        assert_eq!(http_status(tonic::Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(tonic::Code::FailedPrecondition), StatusCode::PRECONDITION_FAILED);
        assert_eq!(http_status(tonic::Code::OutOfRange), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(tonic::Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
    }
}
