//! The members over HTTP/JSON, for curl (ids are hexadecimal, as etcdctl
//! prints them):
//!
//! - `GET /v1/members`: every member, as `MemberList` shows it;
//! - `POST /v1/members` with `{"peer_urls": [...], "is_learner": false}`:
//!   adds a member (201, with the new member and the list);
//! - `PUT /v1/members/{id}` with `{"peer_urls": [...]}`: new peer URLs;
//! - `POST /v1/members/{id}/promote`: makes a learner a voter;
//! - `DELETE /v1/members/{id}`: removes a member.
//!
//! Errors carry etcd's text: 400 for bad URLs, 404 for an unknown member,
//! 409 for a change the cluster's state refuses.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::service;
use crate::proto::etcdserverpb::Member;
use crate::server::http::{HttpCaller, HttpError, json_body as body};
use crate::server::shared::Shared;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/members", get(list).post(add))
        .route("/v1/members/{id}", put(update).delete(remove))
        .route("/v1/members/{id}/promote", post(promote))
}

#[derive(Deserialize)]
struct AddBody {
    peer_urls: Vec<String>,
    #[serde(default)]
    is_learner: bool,
}

#[derive(Deserialize)]
struct UpdateBody {
    peer_urls: Vec<String>,
}

fn member_json(m: &Member) -> Value {
    json!({
        "id": format!("{:x}", m.id),
        "name": m.name,
        "peer_urls": m.peer_ur_ls,
        "client_urls": m.client_ur_ls,
        "is_learner": m.is_learner,
    })
}

fn members_json(shared: &Shared) -> Value {
    let (header, members) = service::list(shared);
    json!({
        "cluster_id": format!("{:x}", header.cluster_id),
        "member_id": format!("{:x}", header.member_id),
        "members": members.iter().map(member_json).collect::<Vec<_>>(),
    })
}

fn parse_id(id: &str) -> Result<u64, HttpError> {
    u64::from_str_radix(id, 16)
        .map_err(|_| HttpError(StatusCode::BAD_REQUEST, format!("`{id}` is not a member id (hexadecimal)")))
}

async fn list(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(members_json(&shared))
}

async fn add(
    State(shared): State<Arc<Shared>>,
    HttpCaller(caller): HttpCaller,
    bytes: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), HttpError> {
    shared.check_admin(&caller)?;
    let AddBody { peer_urls, is_learner } = body(&bytes)?;
    let member = service::add(&shared, peer_urls, is_learner).await?;
    let mut answer = members_json(&shared);
    answer["member"] = member_json(&member);
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn update(
    State(shared): State<Arc<Shared>>,
    HttpCaller(caller): HttpCaller,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, HttpError> {
    shared.check_admin(&caller)?;
    let id = parse_id(&id)?;
    let UpdateBody { peer_urls } = body(&bytes)?;
    service::update(&shared, id, peer_urls).await?;
    Ok(Json(members_json(&shared)))
}

async fn promote(
    State(shared): State<Arc<Shared>>,
    HttpCaller(caller): HttpCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    shared.check_admin(&caller)?;
    service::promote(&shared, parse_id(&id)?).await?;
    Ok(Json(members_json(&shared)))
}

async fn remove(
    State(shared): State<Arc<Shared>>,
    HttpCaller(caller): HttpCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    shared.check_admin(&caller)?;
    service::remove(&shared, parse_id(&id)?).await?;
    Ok(Json(members_json(&shared)))
}
