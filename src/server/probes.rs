//! `/livez` and `/readyz`: the probes orchestrators and load balancers ask,
//! in the Kubernetes form etcd 3.5 adopted. Each runs named checks:
//!
//! - `/livez`: should this process be restarted? Only if it cannot serve
//!   at all: its Raft loop stopped (a store error ends it) or its own state
//!   cannot be read. A member cut off from the others is alive: restarting
//!   it would not help, so no check here depends on the leader.
//! - `/readyz`: should clients be sent here? Not without a leader, with an
//!   alarm raised, while a linearizable read does not complete within 1 s,
//!   or while this member's applied state is far behind what is committed.
//!
//! A passing probe answers 200 `ok`; a failing one 503 with one line per
//! check (`[+]name ok` / `[-]name failed: reason`) and `<probe> check
//! failed`. `?verbose` lists the checks on success too; `?exclude=name`
//! skips one, as in etcd and Kubernetes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::shared::Shared;
use crate::proto::etcdserverpb::RangeRequest;

/// Applied entries behind the commit index beyond which a member is not
/// ready: it would answer serializable reads with state this stale.
pub const MAX_APPLY_LAG: u64 = 5_000;

/// How long a linearizable read may take before the member is not ready.
const READ_LIMIT: Duration = Duration::from_secs(1);

pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/livez", get(livez)).route("/readyz", get(readyz))
}

type Check = (&'static str, Result<(), String>);

async fn livez(State(shared): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let checks = vec![("raft_loop", raft_loop(&shared)), ("serializable_read", serializable_read(&shared))];
    answer("livez", checks, &q)
}

async fn readyz(State(shared): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut checks = vec![
        ("raft_loop", raft_loop(&shared)),
        ("serializable_read", serializable_read(&shared)),
        ("leader", leader(&shared)),
        ("alarms", alarms(&shared)),
        ("caught_up", caught_up(&shared)),
    ];
    let skip = excluded(&q);
    // The read round is the one costly check: only when it can matter.
    if checks.iter().all(|(_, r)| r.is_ok()) && !skip.contains(&"linearizable_read") {
        checks.push(("linearizable_read", linearizable_read(&shared).await));
    }
    answer("readyz", checks, &q)
}

fn raft_loop(shared: &Shared) -> Result<(), String> {
    if shared.node.is_closed() {
        Err("the Raft loop has stopped (see the log for the store error)".into())
    } else {
        Ok(())
    }
}

fn serializable_read(shared: &Shared) -> Result<(), String> {
    // The applied state is in memory; reading it fails only once the node
    // that publishes it is gone.
    if shared.applied.has_changed().is_err() { Err("the applied state is no longer published".into()) } else { Ok(()) }
}

fn leader(shared: &Shared) -> Result<(), String> {
    shared.status.borrow().leader.map(|_| ()).ok_or_else(|| "no leader".to_string())
}

fn alarms(shared: &Shared) -> Result<(), String> {
    let raised = shared.applied.borrow().alarms().to_vec();
    if raised.is_empty() {
        Ok(())
    } else {
        Err(format!("alarm raised: {}", raised.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")))
    }
}

fn caught_up(shared: &Shared) -> Result<(), String> {
    let status = shared.status.borrow();
    let lag = status.commit.saturating_sub(status.applied);
    if lag > MAX_APPLY_LAG {
        Err(format!("{lag} committed entries not yet applied (more than {MAX_APPLY_LAG})"))
    } else {
        Ok(())
    }
}

async fn linearizable_read(shared: &Shared) -> Result<(), String> {
    let barrier = RangeRequest { key: vec![0].into(), count_only: true, ..Default::default() };
    match tokio::time::timeout(READ_LIMIT, shared.range(barrier)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.message().to_string()),
        Err(_) => Err(format!("a linearizable read took over {} s", READ_LIMIT.as_secs())),
    }
}

fn excluded(q: &HashMap<String, String>) -> Vec<&str> {
    q.get("exclude").map(|v| v.split(',').collect()).unwrap_or_default()
}

fn answer(probe: &str, checks: Vec<Check>, q: &HashMap<String, String>) -> Response {
    let skip = excluded(q);
    let checks: Vec<Check> = checks.into_iter().filter(|(name, _)| !skip.contains(name)).collect();
    let failed = checks.iter().any(|(_, r)| r.is_err());
    if !failed && !q.contains_key("verbose") {
        return (StatusCode::OK, "ok").into_response();
    }
    let mut body = String::new();
    for (name, result) in &checks {
        match result {
            Ok(()) => body.push_str(&format!("[+]{name} ok\n")),
            Err(reason) => body.push_str(&format!("[-]{name} failed: {reason}\n")),
        }
    }
    if failed {
        tracing::debug!(probe, reasons = body.trim_end(), "probe failing");
        body.push_str(&format!("{probe} check failed\n"));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    } else {
        body.push_str(&format!("{probe} check passed\n"));
        (StatusCode::OK, body).into_response()
    }
}
