//! Watchers under faults, on real processes: watchers on every member
//! (from the first revision, and from "now") while writers put and delete,
//! the leader is SIGKILLed and kept down until the new leader's log is
//! compacted past it (so its restart catches up through a snapshot, history
//! included), and a follower is cut off, then healed. Each watcher is a
//! `ResumingWatch`: after a broken stream it resumes from its last revision
//! + 1, as etcd's client library does.
//!
//! Afterwards every member's history (a watch from revision 1 on that
//! member alone) is the same; every watcher's events are exactly that
//! history from where it started (same revisions, same order, nothing
//! missing, nothing twice); and every acknowledged write is in it at the
//! revision it was acknowledged with, as a Range at that revision also says.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftkv::client::ResumingWatch;
use raftkv::proto::etcdserverpb::kv_client::KvClient;
use raftkv::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, WatchCreateRequest};
use raftkv::proto::mvccpb::event::EventType;
use support::chaos::wait_converged;
use support::cluster::Cluster;

const LIMIT: Duration = Duration::from_secs(30);
const PREFIX: &str = "wf/";
/// Small, so the cut-off follower is sent a snapshot (history included).
const SNAPSHOT_ARGS: [&str; 4] = ["--snapshot-entries", "200", "--snapshot-catchup-entries", "100"];

/// One change as a watcher saw it: revision, kind, key, value.
type Seen = (i64, EventType, String, String);

fn prefix_watch(start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: PREFIX.into(),
        range_end: raftkv::kv::prefix_end(PREFIX.as_bytes()).into(),
        start_revision,
        ..Default::default()
    }
}

/// A watcher on a task of its own, recording what it sees.
struct Recorder {
    /// Where its events start (known once the watch is created).
    start: Arc<AtomicI64>,
    next: Arc<AtomicI64>,
    seen: Arc<Mutex<Vec<Seen>>>,
    resumes: Arc<AtomicI64>,
    failed: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Watches through `endpoints`, the first of which it starts on.
    fn start(endpoints: Vec<String>, start_revision: i64) -> Recorder {
        let (start, next) = (Arc::new(AtomicI64::new(start_revision)), Arc::new(AtomicI64::new(0)));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (resumes, failed) = (Arc::new(AtomicI64::new(0)), Arc::new(Mutex::new(None)));
        let task = {
            let (start, next, seen, resumes, failed) =
                (start.clone(), next.clone(), Arc::clone(&seen), resumes.clone(), Arc::clone(&failed));
            tokio::spawn(async move {
                let mut watch = ResumingWatch::new(&endpoints, prefix_watch(start_revision));
                loop {
                    let response = match watch.next().await {
                        Ok(response) => response,
                        Err(e) => {
                            *failed.lock().unwrap() = Some(e.to_string());
                            return;
                        }
                    };
                    if response.created && start_revision == 0 {
                        start.store(watch.next_revision(), Ordering::SeqCst);
                    }
                    let mut seen = seen.lock().unwrap();
                    for e in &response.events {
                        let kv = e.kv.as_ref().unwrap();
                        let kind =
                            if e.r#type == EventType::Delete as i32 { EventType::Delete } else { EventType::Put };
                        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                        seen.push((kv.mod_revision, kind, text(&kv.key), text(&kv.value)));
                    }
                    next.store(watch.next_revision(), Ordering::SeqCst);
                    resumes.store(watch.resumes() as i64, Ordering::SeqCst);
                }
            })
        };
        Recorder { start, next, seen, resumes, failed, task }
    }

    /// Waits until the watcher has delivered everything up to `revision`.
    async fn wait_past(&self, revision: i64, what: &str, cluster: &Cluster) {
        let deadline = Instant::now() + LIMIT;
        while self.next.load(Ordering::SeqCst) <= revision {
            if let Some(e) = self.failed.lock().unwrap().clone() {
                panic!("{what}: the watch ended: {e}");
            }
            assert!(
                Instant::now() < deadline,
                "{what}: delivered up to {} of {revision} within {LIMIT:?}\n{}",
                self.next.load(Ordering::SeqCst) - 1,
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writers putting unique values and deleting, each through one member
/// until it fails; what was acknowledged, with its revision.
fn start_writers(n: usize, endpoints: Vec<String>, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<Seen>>> {
    (0..n)
        .map(|w| {
            let (endpoints, stop) = (endpoints.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut at = w % endpoints.len();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let key = format!("{PREFIX}k{}", i % 4 + 4 * w as u64);
                    let value = format!("w{w}-{i}");
                    let delete = i.is_multiple_of(7);
                    let result = async {
                        let mut kv = KvClient::connect(endpoints[at].clone()).await.map_err(|e| e.to_string())?;
                        let op = async {
                            if delete {
                                let req = DeleteRangeRequest { key: key.clone().into(), ..Default::default() };
                                kv.delete_range(req).await.map(|r| (r.get_ref().deleted, r.into_inner().header))
                            } else {
                                let req = PutRequest {
                                    key: key.clone().into(),
                                    value: value.clone().into(),
                                    ..Default::default()
                                };
                                kv.put(req).await.map(|r| (1, r.into_inner().header))
                            }
                        };
                        match tokio::time::timeout(Duration::from_secs(3), op).await {
                            Ok(Ok(answer)) => Ok(answer),
                            Ok(Err(status)) => Err(status.message().to_string()),
                            Err(_) => Err("timed out".to_string()),
                        }
                    };
                    match result.await {
                        Ok((changed, header)) => {
                            // A delete of an absent key makes no revision.
                            if changed > 0 {
                                let revision = header.unwrap().revision;
                                let (kind, value) =
                                    if delete { (EventType::Delete, String::new()) } else { (EventType::Put, value) };
                                acked.push((revision, kind, key, value));
                            }
                        }
                        Err(_) => {
                            at = (at + 1) % endpoints.len();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                acked
            })
        })
        .collect()
}

/// The endpoints, starting at member `i`.
fn from_member(endpoints: &[String], i: usize) -> Vec<String> {
    let mut order = endpoints.to_vec();
    order.rotate_left(i);
    order
}

/// How far member `i` has compacted its log, from its own log lines.
fn compacted_up_to(cluster: &Cluster, i: usize) -> u64 {
    let log = cluster.log_of(i);
    let last = log.lines().rev().find(|l| l.contains("log compacted"));
    last.and_then(|l| l.split("up_to=").nth(1)?.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

/// Waits until the cluster has made `count` more revisions: faults last a
/// number of writes, not a time.
async fn settle(cluster: &Cluster, count: i64) {
    let from = current_revision(cluster).await;
    let deadline = Instant::now() + LIMIT;
    while current_revision(cluster).await < from + count {
        assert!(Instant::now() < deadline, "no progress within {LIMIT:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The revision a member that leads has applied (its own state: a deposed
/// leader's may be behind, which only makes a wait longer).
async fn current_revision(cluster: &Cluster) -> i64 {
    let deadline = Instant::now() + LIMIT;
    loop {
        let leader = cluster.wait_self_leader(LIMIT).await;
        let req = RangeRequest { key: "none".into(), serializable: true, ..Default::default() };
        if let Ok(mut kv) = KvClient::connect(cluster.endpoints()[leader].clone()).await
            && let Ok(response) = kv.range(req).await
        {
            return response.into_inner().header.unwrap().revision;
        }
        assert!(Instant::now() < deadline, "no leader answered within {LIMIT:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watchers_see_the_history_exactly_once_through_kills_partitions_and_snapshots() {
    let (mut cluster, network) = Cluster::start_proxied(3, &SNAPSHOT_ARGS).await;
    cluster.wait_leader(LIMIT).await;
    let endpoints = cluster.endpoints();

    // Two watchers per member: one from the first revision, one from now.
    let mut watchers: Vec<(String, Recorder)> = Vec::new();
    for i in 0..3 {
        watchers.push((format!("m{} from 1", i + 1), Recorder::start(from_member(&endpoints, i), 1)));
        watchers.push((format!("m{} from now", i + 1), Recorder::start(from_member(&endpoints, i), 0)));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(4, endpoints.clone(), stop.clone());
    settle(&cluster, 100).await;

    // SIGKILL the leader while watchers stream from it, and keep it down
    // until the new leader's log is compacted past anything it held: its
    // restart must then catch up through a snapshot (history included).
    let killed = cluster.wait_leader(LIMIT).await;
    let held = raftkv::client::Client::status_of(&endpoints[killed]).await.unwrap().raft_index + 50;
    cluster.kill(killed);
    let leader = cluster.wait_self_leader(LIMIT).await;
    // Bounded by count: each round is 100 more revisions.
    for _ in 0..50 {
        if compacted_up_to(&cluster, leader) > held {
            break;
        }
        settle(&cluster, 100).await;
    }
    assert!(compacted_up_to(&cluster, leader) > held, "the new leader never compacted\n{}", cluster.logs());
    cluster.start_member(killed);
    cluster.wait_leader(LIMIT).await;
    settle(&cluster, 50).await;

    // Cut a follower off while the others go on, then heal.
    let leader = cluster.wait_leader(LIMIT).await;
    let follower = (leader + 1) % 3;
    network.isolate(follower);
    settle(&cluster, 300).await;
    network.heal();
    settle(&cluster, 50).await;

    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    wait_converged(&cluster, LIMIT).await;
    let leader = cluster.wait_leader(LIMIT).await;
    let last = current_revision(&cluster).await;

    // The history on each member, read alone from it.
    let mut histories = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let reader = Recorder::start(vec![endpoint.clone()], 1);
        reader.wait_past(last, &format!("m{}'s history", i + 1), &cluster).await;
        histories.push(reader.seen());
    }
    let history = histories[0].clone();
    for (i, h) in histories.iter().enumerate() {
        assert!(h == &history, "m{}'s history differs from m1's", i + 1);
    }
    let revisions: Vec<i64> = history.iter().map(|s| s.0).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "one change per revision, in order");
    assert!(history.len() >= 900, "too little history to judge: {}", history.len());

    // Every acknowledged write, at its revision, also by Range at it.
    let mut kv = KvClient::connect(endpoints[leader].clone()).await.unwrap();
    for write in &acked {
        let at = history.binary_search_by_key(&write.0, |s| s.0).map(|i| &history[i]);
        assert_eq!(at, Ok(write), "an acknowledged write is not in the history as acknowledged");
        let req = RangeRequest { key: write.2.clone().into(), revision: write.0, ..Default::default() };
        let read = kv.range(req).await.unwrap().into_inner();
        let value = read.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()).unwrap_or_default();
        assert_eq!(value, write.3, "Range at revision {} disagrees with the watch", write.0);
    }

    // Every watcher: exactly the history from where it started.
    let mut resumed = 0;
    for (what, watcher) in &watchers {
        watcher.wait_past(last, what, &cluster).await;
        let start = watcher.start.load(Ordering::SeqCst);
        let want: Vec<Seen> = history.iter().filter(|s| s.0 >= start).cloned().collect();
        let got = watcher.seen();
        if got != want {
            let first_difference = got.iter().zip(&want).position(|(g, w)| g != w).unwrap_or(got.len().min(want.len()));
            panic!(
                "{what} (from revision {start}): {} events, want {}; first difference at #{first_difference}: got {:?}, want {:?}",
                got.len(),
                want.len(),
                got.get(first_difference),
                want.get(first_difference)
            );
        }
        resumed += watcher.resumes.load(Ordering::SeqCst);
    }
    let snapshots = cluster.log_of(killed).matches("installed the leader's snapshot").count();
    println!(
        "{} revisions, {} acknowledged writes, {resumed} watch resumptions, {snapshots} snapshot(s) installed by the restarted leader",
        history.len(),
        acked.len(),
    );
    assert!(resumed >= 2, "the killed leader's watchers resumed elsewhere");
    assert!(snapshots > 0, "the restarted leader caught up through a snapshot\n{}", cluster.logs());
}
