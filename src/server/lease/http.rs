//! Leases over HTTP/JSON, for curl (ids are hexadecimal, as etcdctl and
//! `raftkv lease` print them):
//!
//! - `POST /v1/leases` with `{"ttl": 60}` (and optionally `"id": "hex"`):
//!   grants a lease (201, with its id and the TTL granted);
//! - `GET /v1/leases`: every lease's id;
//! - `GET /v1/leases/{id}` (`?keys=true`): TTL granted, seconds left, and
//!   the keys attached (404 once the lease is gone);
//! - `POST /v1/leases/{id}/keepalive`: renews it (404 once it is gone);
//! - `DELETE /v1/leases/{id}`: revokes it, deleting its keys;
//! - `PUT /v1/kv/{key}?lease={id}` attaches a key (see [`crate::server::http`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::service::{grant_command, leases, revoke_command};
use crate::proto::etcdserverpb::{LeaseGrantRequest, LeaseTimeToLiveRequest};
use crate::server::http::{HttpCaller, HttpError, flag, json_body, text};
use crate::server::shared::Shared;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/leases", get(list).post(grant))
        .route("/v1/leases/{id}", get(time_to_live).delete(revoke))
        .route("/v1/leases/{id}/keepalive", post(keep_alive))
}

#[derive(Deserialize)]
struct GrantBody {
    ttl: i64,
    #[serde(default)]
    id: Option<String>,
}

pub(crate) fn parse_id(id: &str) -> Result<i64, HttpError> {
    i64::from_str_radix(id, 16)
        .map_err(|_| HttpError(StatusCode::BAD_REQUEST, format!("`{id}` is not a lease id (hexadecimal)")))
}

fn gone(id: i64) -> HttpError {
    HttpError(StatusCode::NOT_FOUND, format!("lease {id:016x}: etcdserver: requested lease not found"))
}

async fn grant(
    State(shared): State<Arc<Shared>>,
    HttpCaller(caller): HttpCaller,
    bytes: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    let GrantBody { ttl, id } = json_body(&bytes)?;
    let id = id.as_deref().map(parse_id).transpose()?.unwrap_or(0);
    let (command, id, ttl) = grant_command(&shared, &LeaseGrantRequest { ttl, id })?;
    let (_, revision, _) = shared.write_as(&caller, command).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": format!("{id:016x}"), "ttl": ttl, "revision": revision }))))
}

async fn list(State(shared): State<Arc<Shared>>, HttpCaller(caller): HttpCaller) -> Result<Json<Value>, HttpError> {
    shared.check_authenticated(&caller)?;
    let ids: Vec<String> = leases(&shared).await?.into_iter().map(|id| format!("{id:016x}")).collect();
    Ok(Json(json!({ "leases": ids })))
}

async fn time_to_live(
    State(shared): State<Arc<Shared>>,
    HttpCaller(caller): HttpCaller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, HttpError> {
    shared.check_authenticated(&caller)?;
    let id = parse_id(&id)?;
    let resp = super::time_to_live(&shared, LeaseTimeToLiveRequest { id, keys: flag(&q, "keys") }).await?;
    if resp.ttl == -1 {
        return Err(gone(id));
    }
    let keys: Vec<String> = resp.keys.iter().map(|k| text(k)).collect();
    Ok(Json(json!({ "id": format!("{id:016x}"), "ttl": resp.ttl, "granted_ttl": resp.granted_ttl, "keys": keys })))
}

async fn keep_alive(
    State(shared): State<Arc<Shared>>,
    HttpCaller(caller): HttpCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    shared.check_authenticated(&caller)?;
    let id = parse_id(&id)?;
    match super::renew(&shared, id).await? {
        0 => Err(gone(id)),
        ttl => Ok(Json(json!({ "id": format!("{id:016x}"), "ttl": ttl }))),
    }
}

async fn revoke(
    State(shared): State<Arc<Shared>>,
    HttpCaller(caller): HttpCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let id = parse_id(&id)?;
    let (_, revision, _) = shared.write_as(&caller, revoke_command(id)).await?;
    Ok(Json(json!({ "revision": revision })))
}
