//! The live cluster page: `GET /` (and `/ui`) on the client port, and the
//! JSON it refreshes from, `GET /v1/cluster`.
//!
//! The page is one static file built into the binary (`index.html`: its
//! styles and script inline, nothing fetched from elsewhere, so it works
//! offline). Every second its script asks this member for `/v1/cluster`,
//! which asks every member for its status (etcd's `Maintenance.Status`,
//! at most 1 s each, all at once) and adds what this member observed: the
//! leader changes it saw, and its counters for the charts (entries applied,
//! reads served, synced-write latency). A member that does not answer is
//! shown as unreachable with the error, never with stale figures.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::shared::Shared;
use crate::raft::NodeId;

const PAGE: &str = include_str!("index.html");

/// How long the page waits for one member's status.
const STATUS_LIMIT: Duration = Duration::from_secs(1);

/// Leader changes kept for the page.
const RECENT_CHANGES: usize = 20;

/// What this member observed for the page, beyond what it publishes.
#[derive(Default)]
pub struct Observed {
    leader_changes: Mutex<VecDeque<(Instant, NodeId, u64)>>,
    last_answer: Mutex<HashMap<NodeId, Instant>>,
}

impl Observed {
    /// A new leader, seen in `term`.
    pub fn leader_changed(&self, leader: NodeId, term: u64) {
        let mut changes = self.leader_changes.lock().expect("not poisoned");
        if changes.len() == RECENT_CHANGES {
            changes.pop_front();
        }
        changes.push_back((Instant::now(), leader, term));
    }
}

pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/", get(page)).route("/ui", get(page)).route("/v1/cluster", get(cluster))
}

async fn page() -> Response {
    Html(PAGE).into_response()
}

async fn cluster(State(shared): State<Arc<Shared>>) -> Response {
    let (table, conf) = shared.membership();
    let me = shared.settings.member_id;
    let asks = table.members.iter().map(|m| {
        let (id, url) = (m.id, m.client_urls.first().cloned());
        let own = id == me;
        async move {
            if own {
                return (id, Ok(None));
            }
            let Some(url) = url else { return (id, Err("not started yet (no client URL)".to_string())) };
            match tokio::time::timeout(STATUS_LIMIT, crate::client::Client::status_of(&url)).await {
                Ok(Ok(status)) => (id, Ok(Some(status))),
                Ok(Err(e)) => (id, Err(e.to_string())),
                Err(_) => (id, Err(format!("no answer within {} s", STATUS_LIMIT.as_secs()))),
            }
        }
    });
    let answers: HashMap<NodeId, Result<_, String>> = join_all(asks).await.into_iter().collect();
    let now = Instant::now();
    let own = shared.status.borrow().clone();
    let mut rows = Vec::new();
    {
        let mut last = shared.ui.last_answer.lock().expect("not poisoned");
        for m in &table.members {
            let learner = conf.learners.contains(&m.id);
            let answer = answers.get(&m.id).cloned().unwrap_or(Err("not asked".into()));
            let figures = match answer {
                Ok(None) => {
                    Ok((own.term, own.commit, own.applied, own.leader, shared.applied.borrow().data_bytes() as i64))
                }
                Ok(Some(s)) => {
                    let leader = (s.leader != 0).then_some(s.leader);
                    Ok((s.raft_term, s.raft_index, s.raft_applied_index, leader, s.db_size))
                }
                Err(e) => Err(e),
            };
            if figures.is_ok() {
                last.insert(m.id, now);
            }
            let ago = last.get(&m.id).map(|t| now.duration_since(*t).as_millis() as u64);
            rows.push(match figures {
                Ok((term, commit, applied, leader, db_size)) => json!({
                    "id": format!("{:x}", m.id), "name": m.name, "client_url": m.client_urls.first(),
                    "role": if leader == Some(m.id) { "leader" } else if learner { "learner" } else { "follower" },
                    "term": term, "commit": commit, "applied": applied, "leader": leader.map(|l| format!("{l:x}")),
                    "db_size": db_size, "healthy": leader.is_some(), "last_answer_ms_ago": ago, "error": null,
                }),
                Err(error) => json!({
                    "id": format!("{:x}", m.id), "name": m.name, "client_url": m.client_urls.first(),
                    "role": "unreachable", "healthy": false, "last_answer_ms_ago": ago, "error": error,
                }),
            });
        }
    }
    // Lag: how far each member's applied index is behind the highest commit.
    let top = rows.iter().filter_map(|r| r["commit"].as_u64()).max().unwrap_or(0);
    for row in &mut rows {
        if let Some(applied) = row["applied"].as_u64() {
            row["lag"] = json!(top.saturating_sub(applied));
        }
    }
    let changes: Vec<Value> = shared
        .ui
        .leader_changes
        .lock()
        .expect("not poisoned")
        .iter()
        .rev()
        .map(|(at, leader, term)| {
            json!({ "ms_ago": now.duration_since(*at).as_millis() as u64, "leader": format!("{leader:x}"), "term": term })
        })
        .collect();
    let metrics = &shared.metrics;
    let kv = shared.applied.borrow().clone();
    Json(json!({
        "member": shared.settings.name,
        "member_id": format!("{me:x}"),
        "leader": own.leader.map(|l| format!("{l:x}")),
        "members": rows,
        "leader_changes": changes,
        "counters": {
            "applied": own.applied,
            "reads": metrics.reads.get(),
            "fsync_seconds_sum": metrics.wal_fsync.get_sample_sum(),
            "fsync_count": metrics.wal_fsync.get_sample_count(),
        },
        "storage": {
            "log_entries": metrics.log_entries.get(),
            "snapshots_written": metrics.snapshot_duration.get_sample_count(),
            "snapshot_bytes": metrics.snapshot_size.get(),
            "snapshots_sent": metrics.snapshots_sent.get(),
            "snapshots_received": metrics.snapshots_received.get(),
            "revision": kv.revision(),
            "compact_revision": kv.compact_revision(),
            "keys": kv.len(),
        },
    }))
    .into_response()
}

/// Runs the futures at once and gives their outputs.
async fn join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    let mut out = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Ok(output) = done {
            out.push(output);
        }
    }
    out
}
