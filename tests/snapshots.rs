//! Snapshots on real `raftkv server` processes: a follower far behind
//! catches up through InstallSnapshot (also when killed mid-install), every
//! member killed after compaction rebuilds its map from snapshot plus log
//! tail, and a corrupt snapshot or log entry is detected and named.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftkv::client::Client;
use raftkv::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv::proto::etcdserverpb::{HashKvRequest, RangeRequest};
use support::cluster::Cluster;
use support::load::{Writers, assert_all_acked_present};

const LIMIT: Duration = Duration::from_secs(20);
/// Small enough that a few hundred writes take several snapshots.
const SNAPSHOT_ARGS: [&str; 4] = ["--snapshot-entries", "100", "--snapshot-catchup-entries", "50"];

async fn put_keys(endpoint: &str, range: std::ops::Range<usize>) {
    let mut client = Client::connect(&[endpoint.to_string()]).await.unwrap();
    for i in range {
        client.put(format!("key-{i:05}"), format!("value-{i}")).await.unwrap();
    }
}

/// Every `key-` on a member, read locally (serializable).
async fn local_keys(endpoint: &str) -> BTreeMap<String, String> {
    let Ok(mut client) = Client::connect(&[endpoint.to_string()]).await else { return BTreeMap::new() };
    let req = RangeRequest { key: "key-".into(), range_end: "key.".into(), serializable: true, ..Default::default() };
    let Ok(resp) = client.range(req).await else { return BTreeMap::new() };
    resp.kvs
        .into_iter()
        .map(|kv| (String::from_utf8(kv.key.to_vec()).unwrap(), String::from_utf8(kv.value.to_vec()).unwrap()))
        .collect()
}

/// Waits until a member holds exactly keys `0..n` with their values.
async fn wait_keys(cluster: &Cluster, i: usize, n: usize) {
    let endpoint = &cluster.endpoints()[i];
    let deadline = Instant::now() + LIMIT;
    loop {
        let keys = local_keys(endpoint).await;
        if keys.len() == n
            && keys.iter().enumerate().all(|(j, (k, v))| *k == format!("key-{j:05}") && *v == format!("value-{j}"))
        {
            return;
        }
        assert!(Instant::now() < deadline, "member {i} holds {} of {n} keys\n{}", keys.len(), cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn hash_of(endpoint: &str) -> (u32, i64) {
    let mut m = MaintenanceClient::connect(endpoint.to_string()).await.unwrap();
    let resp = m.hash_kv(HashKvRequest::default()).await.unwrap().into_inner();
    (resp.hash, resp.header.unwrap().revision)
}

fn snapshot_files(cluster: &Cluster, i: usize) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(cluster.members[i].data_dir.join("snap"))
        .map(|d| d.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "snap")).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_far_behind_catches_up_through_a_snapshot_even_if_killed_while_installing() {
    let mut cluster = Cluster::start_with(3, &SNAPSHOT_ARGS);
    let leader = cluster.wait_leader(LIMIT).await;
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    let endpoints = cluster.endpoints();
    // Far more than the catch-up margin: the log no longer holds what it lacks.
    put_keys(&endpoints[leader], 0..600).await;
    assert!(cluster.log_of(leader).contains("log compacted"), "{}", cluster.logs());

    // First attempt: killed as soon as the snapshot arrived.
    cluster.start_member(follower);
    cluster.wait_log(follower, "received a snapshot", LIMIT).await;
    cluster.kill(follower);
    // Second attempt completes.
    cluster.start_member(follower);
    wait_keys(&cluster, follower, 600).await;
    // The state came from the leader's snapshot: installed by this attempt,
    // or installed by the first one (the kill may land after the install's
    // write but before its log line) and loaded at this start.
    let log = cluster.log_of(follower);
    assert!(
        log.contains("installed the leader's snapshot") || log.contains("loaded a snapshot index="),
        "{}",
        cluster.logs()
    );

    // It keeps following from the log afterwards, and every member agrees.
    put_keys(&endpoints[leader], 600..650).await;
    for i in 0..3 {
        wait_keys(&cluster, i, 650).await;
    }
    let deadline = Instant::now() + LIMIT;
    loop {
        let hashes = [hash_of(&endpoints[0]).await, hash_of(&endpoints[1]).await, hash_of(&endpoints[2]).await];
        if hashes.iter().all(|h| *h == hashes[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "members disagree: {hashes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_member_killed_after_compaction_rebuilds_its_map_from_snapshot_and_log_tail() {
    let mut cluster = Cluster::start_with(3, &SNAPSHOT_ARGS);
    cluster.wait_leader(LIMIT).await;
    let mut acked_total = BTreeMap::new();
    for cycle in 0..3u64 {
        // Snapshots are taken every 100 entries under this load, so the kills
        // land before, during and after snapshot writes.
        let writers = Writers::start(8, cluster.endpoints(), cycle * 1_000_000);
        tokio::time::sleep(Duration::from_millis(700)).await;
        for i in 0..3 {
            cluster.kill(i);
        }
        acked_total.extend(writers.finish().await);
        for i in 0..3 {
            cluster.start_member(i);
        }
        cluster.wait_leader(LIMIT).await;
        assert_all_acked_present(&cluster, &acked_total).await;
    }
    for i in 0..3 {
        let log = cluster.log_of(i);
        assert!(log.contains("loaded a snapshot") && log.contains("replayed_entries"), "{}", cluster.logs());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_snapshot_or_log_entry_is_detected_and_named() {
    let mut cluster = Cluster::start_with(3, &SNAPSHOT_ARGS);
    let leader = cluster.wait_leader(LIMIT).await;
    let endpoints = cluster.endpoints();
    put_keys(&endpoints[leader], 0..450).await;
    let follower = (leader + 1) % 3;
    wait_keys(&cluster, follower, 450).await;
    cluster.terminate(follower);

    // A flipped byte in the newest snapshot: reported with file and offset,
    // and the member starts from the older one plus the log.
    let files = snapshot_files(&cluster, follower);
    assert!(files.len() >= 2, "expected two snapshots, found {files:?}");
    let newest = files.last().unwrap().clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&newest, bytes).unwrap();
    cluster.start_member(follower);
    let named = format!("corrupt snapshot {}", newest.display());
    cluster.wait_log(follower, &named, LIMIT).await;
    wait_keys(&cluster, follower, 450).await;
    cluster.terminate(follower);

    // A flipped byte in a stored log entry: the member refuses to start,
    // naming the column family and index, and the others keep serving.
    let index = {
        let path = cluster.members[follower].data_dir.join("raft");
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, ["raft_state", "raft_log", "meta"]).unwrap();
        let cf = db.cf_handle("raft_log").unwrap();
        let (key, value) = db.iterator_cf(cf, rocksdb::IteratorMode::End).next().unwrap().unwrap();
        let mut value = value.to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x01;
        db.put_cf(cf, &key, value).unwrap();
        u64::from_be_bytes(key.as_ref().try_into().unwrap())
    };
    cluster.start_member(follower);
    let status = cluster.wait_exit(follower, LIMIT);
    assert!(!status.success());
    let log = cluster.log_of(follower);
    assert!(log.contains(&format!("corrupt record in column family `raft_log` at index {index}")), "{log}");
    put_keys(&endpoints[leader], 450..460).await;
    wait_keys(&cluster, (leader + 2) % 3, 460).await;
}

/// The `h-` keys at each of `revisions`, read from one member's own state:
/// `None` until that member has applied them all.
async fn history_of(endpoint: &str, revisions: &[i64]) -> Option<Vec<Vec<(String, String)>>> {
    let mut client = Client::connect(&[endpoint.to_string()]).await.ok()?;
    let mut states = Vec::new();
    for &revision in revisions {
        let req = RangeRequest {
            key: "h-".into(),
            range_end: "h.".into(),
            serializable: true,
            revision,
            ..Default::default()
        };
        let resp = client.range(req).await.ok()?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        states.push(resp.kvs.iter().map(|kv| (text(&kv.key), text(&kv.value))).collect());
    }
    Some(states)
}

/// Waits until member `i` answers every revision as `want`.
async fn wait_history(cluster: &Cluster, i: usize, revisions: &[i64], want: &[Vec<(String, String)>]) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = history_of(&cluster.endpoints()[i], revisions).await;
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "member {i} answers the history otherwise: {got:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn history_travels_in_snapshots_and_survives_sigkill_of_every_member() {
    let mut cluster = Cluster::start_with(3, &SNAPSHOT_ARGS);
    let leader = cluster.wait_leader(LIMIT).await;
    let lagging = (leader + 1) % 3;
    cluster.kill(lagging);
    // 300 writes over 30 keys, a third of them deletions: several
    // snapshots, each holding history, while one member is down.
    let mut client = Client::connect(&[cluster.endpoints()[leader].clone()]).await.unwrap();
    for i in 0..300 {
        // Every third write deletes the key the write before it put.
        let key = format!("h-{:02}", if i % 3 == 2 { (i - 1) % 30 } else { i % 30 });
        if i % 3 == 2 {
            let req = raftkv::proto::etcdserverpb::DeleteRangeRequest { key: key.into(), ..Default::default() };
            client.delete(req).await.unwrap();
        } else {
            client.put(key, format!("v{i}")).await.unwrap();
        }
    }
    assert!(cluster.log_of(leader).contains("log compacted"), "{}", cluster.logs());
    let revisions: Vec<i64> = (1..=301).step_by(7).chain([301]).collect();
    let want = history_of(&cluster.endpoints()[leader], &revisions).await.expect("the leader answers");
    assert!(want.iter().any(|s| !s.is_empty()) && want[0].is_empty(), "{want:?}");

    // The lagging member gets the history through InstallSnapshot.
    cluster.start_member(lagging);
    wait_history(&cluster, lagging, &revisions, &want).await;
    assert!(cluster.log_of(lagging).contains("installed the leader's snapshot"), "{}", cluster.logs());

    // Every member killed at once rebuilds it from snapshot plus log tail.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.start_member(i);
    }
    cluster.wait_leader(LIMIT).await;
    for i in 0..3 {
        wait_history(&cluster, i, &revisions, &want).await;
    }
}
