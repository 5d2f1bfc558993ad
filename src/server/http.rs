//! The HTTP/JSON surface for curl, served on the client port beside gRPC:
//!
//! - `GET /v1/kv/{key}`: the raw value (404 if absent); `?serializable=true`
//!   reads this member's state without a ReadIndex round, and says so in
//!   the `x-raftkv-consistency` header;
//! - `PUT /v1/kv/{key}` with the raw value as body (`?lease=ID` attaches
//!   the key to a lease); `DELETE /v1/kv/{key}`;
//! - `GET /v1/kv?prefix=p`: every key with that prefix, as JSON (also
//!   `&serializable=true`);
//! - both reads take `rev=N`: the state at revision N, while the history
//!   still holds it (400 with etcd's "compacted" or "future revision" text
//!   otherwise);
//! - `GET /v1/watch/{key}`: changes as newline-delimited JSON, one line per
//!   event, until the client hangs up (`?prefix=true`, `&rev=N`,
//!   `&prev_kv=true`; see [`super::watch::http`]);
//! - `/v1/members`: list, add, update, promote and remove members (see
//!   [`super::membership::http`]);
//! - `/v1/leases`: grant, list, inspect, renew and revoke leases (see
//!   [`super::lease::http`]);
//! - `GET /v1/status`: this member's Raft and store status, as JSON;
//! - `GET /healthz`: 200 when this member knows a leader, else 503;
//! - `GET /health`: etcd 3.4's answer, `{"health":"true"}` (200) or
//!   `{"health":"false"}` (503): false while an alarm is raised, with no
//!   leader, or when a linearizable read does not complete within 1 s;
//! - `GET /livez`, `GET /readyz`: the probes of [`super::probes`];
//! - `GET /` (or `/ui`): the live cluster page, refreshed from
//!   `GET /v1/cluster` ([`super::ui`]);
//! - `GET /metrics`: Prometheus metrics under etcd's names
//!   ([`super::metrics`]);
//! - `GET /version`: the etcd version whose API is served, and raftkv's own;
//! - `POST /v3/...`: etcd's JSON gateway ([`super::gateway`]);
//! - anything else: 404 (gRPC requests get gRPC's "unimplemented").
//!
//! A member that cannot reach a majority answers writes and linearizable
//! reads with 503 and a hint that only serializable reads are served.
//!
//! Keys and values in JSON are UTF-8 (invalid bytes are replaced); use the
//! raw-value endpoints or gRPC for binary data.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::auth::Caller;
use super::shared::Shared;
use crate::kv;
use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, response_op};

pub fn router(shared: Arc<Shared>) -> Router {
    // Bodies up to twice the limit reach our own check, which names the limit.
    let body_limit = DefaultBodyLimit::max(2 * shared.settings.max_request_bytes);
    Router::new()
        .route("/v1/kv/{*key}", get(get_key).put(put_key).delete(delete_key))
        .route("/v1/kv/", get(no_key).put(no_key).delete(no_key))
        .route("/v1/watch/{*key}", get(super::watch::http::watch))
        .route("/v1/watch/", get(no_key))
        .route("/version", get(version))
        .route("/v1/kv", get(list))
        .route("/v1/status", get(status))
        .route("/healthz", get(health))
        .route("/health", get(etcd_health))
        .route("/metrics", get(metrics))
        .merge(super::membership::http::routes())
        .merge(super::lease::http::routes())
        .merge(super::gateway::routes())
        .merge(super::probes::routes())
        .merge(super::ui::routes())
        .layer(body_limit)
        .with_state(shared)
}

/// What `--listen-metrics-urls` serves: `/metrics` and `/health`, as etcd.
pub fn metrics_router(shared: Arc<Shared>) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/health", get(etcd_health)).with_state(shared)
}

pub(crate) struct HttpError(pub StatusCode, pub String);

/// The caller of an HTTP request: its `Authorization` (or `token`) header's
/// token, or its client certificate, as for gRPC.
pub(crate) struct HttpCaller(pub Caller);

impl axum::extract::FromRequestParts<Arc<Shared>> for HttpCaller {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, HttpError> {
        let peer = super::auth::peer_of(&parts.extensions);
        Ok(HttpCaller(shared.caller_from_headers(&parts.headers, peer)?))
    }
}

/// What a member without a leader can still do, for whoever reads the error.
const NO_QUORUM_HINT: &str = "this member may be cut off from a majority of the cluster: it still serves \
     serializable reads (GET /v1/kv/{key}?serializable=true), from its own possibly stale copy";

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let no_quorum = self.0 == StatusCode::SERVICE_UNAVAILABLE && is_no_quorum(&self.1);
        let body =
            if no_quorum { json!({ "error": self.1, "hint": NO_QUORUM_HINT }) } else { json!({ "error": self.1 }) };
        (self.0, Json(body)).into_response()
    }
}

impl From<tonic::Status> for HttpError {
    fn from(s: tonic::Status) -> HttpError {
        let code = match s.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            // The cluster's state refuses the request (a membership rule).
            tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
            tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            // NOSPACE: writes are refused until the alarm is disarmed.
            tonic::Code::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        HttpError(code, s.message().to_string())
    }
}

/// The errors a member gives when no leader answers it.
pub fn is_no_quorum(message: &str) -> bool {
    message.contains("no leader") || message.contains("request timed out")
}

/// The `rev` query parameter: 0 (the current revision) when absent.
pub(crate) fn revision_param(q: &HashMap<String, String>) -> Result<i64, HttpError> {
    match q.get("rev") {
        None => Ok(0),
        Some(v) => v.parse::<i64>().ok().filter(|r| *r >= 0).ok_or_else(|| {
            HttpError(StatusCode::BAD_REQUEST, format!("rev must be a revision (a whole number from 0), not `{v}`"))
        }),
    }
}

/// Whether the query parameter `name` is `true`.
pub(crate) fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "true")
}

/// A request's JSON body, or a 400 saying what is wrong with it.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(bytes).map_err(|e| HttpError(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn get_key(
    State(shared): State<Arc<Shared>>,
    HttpCaller(caller): HttpCaller,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let serializable = flag(&q, "serializable");
    let revision = revision_param(&q)?;
    let req = RangeRequest { key: key.into(), serializable, revision, ..Default::default() };
    let (resp, _) = shared.range_as(&caller, req).await?;
    let consistency = if serializable { "serializable" } else { "linearizable" };
    match resp.kvs.into_iter().next() {
        Some(kv) => Ok(([("x-raftkv-consistency", consistency)], kv.value).into_response()),
        None => Err(HttpError(StatusCode::NOT_FOUND, "key not found".into())),
    }
}

async fn put_key(
    State(shared): State<Arc<Shared>>,
    HttpCaller(caller): HttpCaller,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, HttpError> {
    shared.check_size(key.len() + body.len())?;
    let lease = match q.get("lease") {
        Some(id) => super::lease::http::parse_id(id)?,
        None => 0,
    };
    let req = PutRequest { key: key.into(), value: body, lease, ..Default::default() };
    let (_, revision, _) = shared.write_as(&caller, kv::put_command(req)).await?;
    Ok(Json(json!({ "revision": revision })).into_response())
}

async fn delete_key(
    State(shared): State<Arc<Shared>>,
    HttpCaller(caller): HttpCaller,
    Path(key): Path<String>,
) -> Result<Response, HttpError> {
    let req = DeleteRangeRequest { key: key.into(), ..Default::default() };
    let (op, revision, _) = shared.write_as(&caller, kv::delete_command(req)).await?;
    let deleted = match op.response {
        Some(response_op::Response::ResponseDeleteRange(r)) => r.deleted,
        _ => 0,
    };
    Ok(Json(json!({ "deleted": deleted, "revision": revision })).into_response())
}

async fn list(
    State(shared): State<Arc<Shared>>,
    HttpCaller(caller): HttpCaller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let serializable = flag(&q, "serializable");
    let revision = revision_param(&q)?;
    let (key, range_end) = if prefix.is_empty() {
        (vec![0u8], vec![0u8])
    } else {
        (prefix.clone().into_bytes(), kv::prefix_end(prefix.as_bytes()))
    };
    let req =
        RangeRequest { key: key.into(), range_end: range_end.into(), serializable, revision, ..Default::default() };
    let (resp, revision) = shared.range_as(&caller, req).await?;
    let consistency = if serializable { "serializable" } else { "linearizable" };
    let kvs: Vec<_> = resp
        .kvs
        .iter()
        .map(|kv| {
            json!({
                "key": text(&kv.key), "value": text(&kv.value),
                "create_revision": kv.create_revision, "mod_revision": kv.mod_revision, "version": kv.version,
            })
        })
        .collect();
    Ok((
        [("x-raftkv-consistency", consistency)],
        Json(json!({ "revision": revision, "count": resp.count, "kvs": kvs })),
    )
        .into_response())
}

async fn no_key() -> HttpError {
    HttpError(StatusCode::BAD_REQUEST, "etcdserver: key is not provided".into())
}

async fn version() -> Response {
    Json(json!({
        "etcdserver": super::ETCD_API_VERSION,
        "etcdcluster": super::ETCD_API_VERSION,
        "raftkv": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// The answer to a path nothing serves. gRPC clients get their protocol's
/// "unimplemented" (status 12 in the headers), as tonic would give them.
pub async fn not_found(request: axum::extract::Request) -> Response {
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(format!("unknown method {}", request.uri().path())).into_http();
    }
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let s = shared.status.borrow().clone();
    Json(json!({
        "name": shared.settings.name,
        "member_id": format!("{:x}", shared.settings.member_id),
        "cluster_id": format!("{:x}", shared.settings.cluster_id),
        "leader": s.leader.map(|l| format!("{l:x}")),
        "is_leader": s.leader == Some(shared.settings.member_id),
        "term": s.term, "commit": s.commit, "applied": s.applied, "revision": s.revision,
        "watch_streams": shared.watches.streams(), "watchers": shared.watches.watchers(),
    }))
    .into_response()
}

async fn etcd_health(State(shared): State<Arc<Shared>>) -> Response {
    let unhealthy = if !shared.applied.borrow().alarms().is_empty() {
        Some("an alarm is raised".to_string())
    } else if shared.status.borrow().leader.is_none() {
        Some("no leader".to_string())
    } else {
        let barrier = RangeRequest { key: vec![0].into(), count_only: true, ..Default::default() };
        match tokio::time::timeout(std::time::Duration::from_secs(1), shared.range(barrier)).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.message().to_string()),
            Err(_) => Some("a linearizable read took over 1 s".to_string()),
        }
    };
    let (code, body) = match unhealthy {
        None => (StatusCode::OK, r#"{"health":"true"}"#),
        Some(reason) => {
            tracing::warn!(reason, "serving /health false");
            (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#)
        }
    };
    (code, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let page = shared.metrics.render(&shared);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], page).into_response()
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    match shared.status.borrow().leader {
        Some(_) => (StatusCode::OK, "ok\n").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no leader\n").into_response(),
    }
}
