//! etcd's concurrency recipes served by the server: `v3lockpb.Lock` and
//! `v3electionpb.Election`, built exactly as etcd's `concurrency` package
//! builds them on leases and revisions, so a client of either API sees the
//! same keys and the same order as with etcd.
//!
//! - Each contender owns the key `<name>/<lease id in hex>`, created under
//!   its lease by a transaction that only creates it if absent. Its create
//!   revision is its place in line; the owner (holder, leader) is the live
//!   key with the lowest create revision.
//! - A contender's turn comes when no key under the prefix created before
//!   its own remains. That fact, once true, stays true (a key created
//!   earlier can never be created again at an earlier revision), so it may
//!   be read from any member's applied state once that state holds the
//!   contender's own key: waiting costs no round through the leader.
//! - A contender that stops waiting (its client went away) deletes its key
//!   so the line moves on, as etcd does.

pub mod election;
pub mod lock;

use std::sync::Arc;

use bytes::Bytes;
use tonic::Status;

use super::auth::Caller;
use super::shared::Shared;
use crate::kv::{self, KeyRange, KvStore};
use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest, TxnResponse,
    response_op,
};
use crate::proto::mvccpb::KeyValue;

/// The prefix of a lock's or an election's keys: its name and a slash.
fn prefix_of(name: &[u8]) -> Bytes {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix.into()
}

/// A contender's key under `prefix`: the lease id in lowercase hex.
fn key_of(prefix: &[u8], lease: i64) -> Bytes {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key.into()
}

fn keys_under(prefix: &Bytes) -> KeyRange {
    KeyRange::Between(prefix.clone(), kv::prefix_end(prefix).into())
}

/// The owner of `prefix` in `kv`: its first-created live key.
fn owner(kv: &KvStore, prefix: &Bytes) -> Option<KeyValue> {
    kv.scan(&keys_under(prefix)).min_by_key(|kv| kv.create_revision).cloned()
}

/// The owner of `prefix` as of a linearizable read (etcd's `Get` with
/// `WithFirstCreate`), with the read's revision.
async fn owner_now(shared: &Shared, caller: &Caller, prefix: &Bytes) -> Result<(Option<KeyValue>, i64), Status> {
    let req = RangeRequest {
        key: prefix.clone(),
        range_end: kv::prefix_end(prefix).into(),
        sort_target: SortTarget::Create as i32,
        sort_order: SortOrder::Ascend as i32,
        limit: 1,
        ..Default::default()
    };
    let (resp, revision) = shared.range_as(caller, req).await?;
    Ok((resp.kvs.into_iter().next(), revision))
}

/// A transaction comparing `key`'s create revision with `rev`.
fn if_created_at(key: &Bytes, rev: i64, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    let compare = Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        ..Default::default()
    };
    TxnRequest { compare: vec![compare], success, failure }
}

fn put_op(key: &Bytes, value: Bytes, lease: i64) -> RequestOp {
    RequestOp { request: Some(Op::RequestPut(PutRequest { key: key.clone(), value, lease, ..Default::default() })) }
}

fn get_op(key: &Bytes) -> RequestOp {
    RequestOp { request: Some(Op::RequestRange(RangeRequest { key: key.clone(), ..Default::default() })) }
}

fn delete_op(key: &Bytes) -> RequestOp {
    RequestOp { request: Some(Op::RequestDeleteRange(DeleteRangeRequest { key: key.clone(), ..Default::default() })) }
}

/// Runs `caller`'s transaction through the leader: its response, revision and term.
async fn txn(shared: &Shared, caller: &Caller, req: TxnRequest) -> Result<(TxnResponse, i64, u64), Status> {
    let (op, revision, term) = shared.write_as(caller, kv::txn_command(req)).await?;
    match op.response {
        Some(response_op::Response::ResponseTxn(resp)) => Ok((resp, revision, term)),
        _ => Err(Status::internal("the state machine answered a transaction with another kind of response")),
    }
}

/// Joins the line for `prefix` with `key` under `lease` (created with
/// `value` unless it exists): the key's create revision, and whether it was
/// there already, with its value.
async fn join_line(
    shared: &Shared,
    caller: &Caller,
    key: &Bytes,
    lease: i64,
    value: Bytes,
) -> Result<(i64, Option<KeyValue>, i64), Status> {
    let req = if_created_at(key, 0, vec![put_op(key, value, lease)], vec![get_op(key)]);
    let (resp, revision, _) = txn(shared, caller, req).await?;
    if resp.succeeded {
        return Ok((revision, None, revision));
    }
    let existing = match resp.responses.into_iter().next().and_then(|r| r.response) {
        Some(response_op::Response::ResponseRange(r)) => r.kvs.into_iter().next(),
        _ => None,
    };
    let existing = existing.ok_or_else(|| Status::internal("the contender's key vanished inside its transaction"))?;
    Ok((existing.create_revision, Some(existing), revision))
}

/// Waits until `key` (created at `rev`, applied by revision `seen`) is the
/// first-created key under `prefix`: the applied state where it is. The
/// caller must be allowed to read the line.
async fn wait_turn(
    shared: &Shared,
    caller: &Caller,
    prefix: &Bytes,
    key: &Bytes,
    rev: i64,
    seen: i64,
) -> Result<KvStore, Status> {
    shared.check_read(caller, prefix, &kv::prefix_end(prefix)).map_err(|e| e.status())?;
    let mut applied = shared.applied.clone();
    let range = keys_under(prefix);
    loop {
        {
            let kv = applied.borrow_and_update();
            if kv.revision() >= seen {
                let mine = kv.scan(&KeyRange::One(key.clone())).next().is_some_and(|k| k.create_revision == rev);
                if !mine {
                    // Its lease expired or someone deleted it: not held.
                    return Err(Status::unknown("session expired"));
                }
                if !kv.scan(&range).any(|k| k.create_revision < rev) {
                    return Ok(kv.clone());
                }
            }
        }
        applied.changed().await.map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
    }
}

/// Deletes a contender's key if it is dropped before [`Release::disarm`]:
/// a contender whose client stopped waiting leaves the line. The delete is
/// the caller's, so it needs the caller's permission.
struct Release {
    shared: Arc<Shared>,
    caller: Caller,
    key: Option<Bytes>,
}

impl Release {
    fn new(shared: &Arc<Shared>, caller: &Caller, key: &Bytes) -> Release {
        Release { shared: shared.clone(), caller: caller.clone(), key: Some(key.clone()) }
    }

    fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let (shared, caller) = (self.shared.clone(), self.caller.clone());
            tokio::spawn(async move {
                let req = DeleteRangeRequest { key, ..Default::default() };
                if let Err(e) = shared.write_as(&caller, kv::delete_command(req)).await {
                    tracing::warn!("could not delete an abandoned lock or election key: {}", e.message());
                }
            });
        }
    }
}

/// The header of a recipe's answer at `revision`.
fn header(shared: &Shared, revision: i64) -> Option<ResponseHeader> {
    Some(shared.header(revision, shared.status.borrow().term))
}
