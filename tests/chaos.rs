//! Faults on real `raftkv server` processes under a checked workload, the
//! way Jepsen and etcd's robustness tests do it: process faults (SIGKILL of
//! the leader, a follower, a majority, everyone; SIGSTOP of the leader),
//! network faults through per-direction TCP proxies (isolated leader,
//! majority/minority split, bridge, flapping links with delays and resets,
//! connections that silently stop delivering)
//! and disk faults (a flipped byte in a snapshot and in a log entry, a torn
//! WAL tail). Each run ends with the faults healed, every member converged
//! to one applied index and state hash, and the whole history checked for
//! linearizability. A last test holds a minority apart and checks that it
//! refuses writes and linearizable reads and serves only serializable ones.
//!
//! One round per test by default, with a fresh seed that is printed;
//! `RAFTKV_CHAOS_ROUNDS=N` runs N rounds, `RAFTKV_CHAOS_SEED=S` one chosen
//! seed (it fixes the schedule of faults and operations; the processes'
//! timing is the machine's).

mod support;

use std::time::{Duration, Instant};

use raftkv::client::Client;
use raftkv::proto::etcdserverpb::RangeRequest;
use raftkv::proto::etcdserverpb::kv_client::KvClient;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use support::chaos::{Workload, assert_linearizable, seeds, wait_converged};
use support::cluster::Cluster;
use support::load::put_via;
use support::proxy::{Mode, Network};

const LIMIT: Duration = Duration::from_secs(30);
const CLIENTS: usize = 6;
/// Small, so the disk-fault runs take snapshots and compact the log.
const SNAPSHOT_ARGS: [&str; 4] = ["--snapshot-entries", "200", "--snapshot-catchup-entries", "100"];

struct Run {
    seed: u64,
    rng: SmallRng,
    cluster: Cluster,
    network: Option<Network>,
    load: Workload,
}

impl Run {
    async fn start(seed: u64, n: usize, proxied: bool, extra_args: &[&str]) -> Run {
        println!("chaos seed {seed} ({n} members{})", if proxied { ", proxied" } else { "" });
        let (cluster, network) = if proxied {
            let (c, net) = Cluster::start_proxied(n, extra_args).await;
            (c, Some(net))
        } else {
            (Cluster::start_with(n, extra_args), None)
        };
        cluster.wait_leader(LIMIT).await;
        let load = Workload::start(CLIENTS, cluster.endpoints(), seed);
        Run { seed, rng: SmallRng::seed_from_u64(seed), cluster, network, load }
    }

    fn net(&self) -> &Network {
        self.network.as_ref().expect("a proxied cluster")
    }

    async fn sleep(&mut self, range_ms: std::ops::Range<u64>) {
        let ms = self.rng.random_range(range_ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn leader(&self) -> usize {
        self.cluster.wait_self_leader(LIMIT).await
    }

    /// `k` members in random order.
    fn pick(&mut self, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..self.cluster.members.len()).collect();
        all.shuffle(&mut self.rng);
        all.truncate(k);
        all
    }

    /// Heals the network, starts every member that is down but those in
    /// `left_down`, lets the clients run against the healed cluster, then
    /// checks convergence and the history.
    async fn finish(mut self, left_down: &[usize]) {
        if let Some(net) = &self.network {
            net.heal();
        }
        for i in 0..self.cluster.members.len() {
            if !self.cluster.is_running(i) && !left_down.contains(&i) {
                self.cluster.start_member(i);
            }
        }
        self.cluster.wait_self_leader(LIMIT).await;
        // Writes work again after healing: more are acknowledged within a bound.
        let before = self.load.history().counts().0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.load.history().counts().0 < before + 10 {
            assert!(
                Instant::now() < deadline,
                "seed {}: no write acknowledged after healing\n{}",
                self.seed,
                self.cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.sleep(500..1000).await;
        let history = self.load.finish(&self.cluster).await;
        wait_converged(&self.cluster, LIMIT).await;
        let (acked, ambiguous, reads) = history.counts();
        println!("seed {}: {acked} acknowledged writes, {ambiguous} ambiguous, {reads} reads", self.seed);
        println!("seed {}: write errors {:?}", self.seed, history.errors());
        assert!(acked > 50 && reads > 50, "seed {}: too little load to judge", self.seed);
        assert_linearizable(&history, self.seed, &self.cluster);
    }
}

/// One round per seed: a fresh cluster under load, `faults`, then healing
/// and the end-of-run checks.
async fn rounds(members: usize, proxied: bool, faults: impl AsyncFn(&mut Run)) {
    for seed in seeds() {
        let mut run = Run::start(seed, members, proxied, &[]).await;
        faults(&mut run).await;
        run.finish(&[]).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_the_leader_then_a_follower() {
    rounds(3, false, async |run| {
        for _ in 0..2 {
            run.sleep(500..1000).await;
            let leader = run.leader().await;
            run.cluster.kill(leader);
            run.sleep(1000..2000).await;
            run.cluster.start_member(leader);
            run.sleep(500..1000).await;
            let leader = run.leader().await;
            let follower = (leader + run.rng.random_range(1..3)) % 3;
            run.cluster.kill(follower);
            run.sleep(500..1500).await;
            run.cluster.start_member(follower);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_a_majority_then_everyone_of_five() {
    rounds(5, false, async |run| {
        run.sleep(500..1000).await;
        let majority = run.pick(3);
        for &m in &majority {
            run.cluster.kill(m);
        }
        // No quorum: writes can only be ambiguous, reads fail.
        run.sleep(1000..2000).await;
        for &m in &majority {
            run.cluster.start_member(m);
        }
        run.sleep(1500..2500).await;
        for m in 0..5 {
            run.cluster.kill(m);
        }
        run.sleep(200..800).await;
        for m in 0..5 {
            run.cluster.start_member(m);
        }
        run.sleep(1000..2000).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_the_leader_longer_than_the_election_timeout() {
    rounds(3, false, async |run| {
        for _ in 0..2 {
            run.sleep(500..1000).await;
            let leader = run.leader().await;
            run.cluster.pause(leader);
            // The election timeout is 500 ms: the others elect a new leader
            // while the old one still believes it leads.
            run.sleep(1500..2500).await;
            run.cluster.resume(leader);
        }
        run.sleep(1000..1500).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn isolate_the_leader() {
    rounds(3, true, async |run| {
        for _ in 0..2 {
            run.sleep(500..1000).await;
            let leader = run.leader().await;
            run.net().isolate(leader);
            // The fault took effect: the other two elect a leader.
            let rest: Vec<usize> = (0..3).filter(|&m| m != leader).collect();
            wait_leader_among(&run.cluster, &rest).await;
            run.sleep(1000..2000).await;
            run.net().heal();
        }
    })
    .await;
}

/// Leadership moves again and again among five members while clients
/// compare-and-swap: a write proposed under one leader may be truncated from
/// its log and still committed by the next. No compare-and-swap may be
/// answered "failed" (or any write "no leader") when its value is read later,
/// and none may apply twice (the history check).
#[tokio::test(flavor = "multi_thread")]
async fn compare_and_swap_through_leader_churn_on_five() {
    rounds(5, true, async |run| {
        for _ in 0..5 {
            run.sleep(300..800).await;
            let leader = run.leader().await;
            // The old leader alone, or with one follower: either way a
            // minority that may hold uncommitted entries of its term.
            let mut minority = vec![leader];
            if run.rng.random_bool(0.5) {
                minority.push((leader + run.rng.random_range(1..5)) % 5);
            }
            let rest: Vec<usize> = (0..5).filter(|m| !minority.contains(m)).collect();
            run.net().partition(&[&minority, &rest]);
            wait_leader_among(&run.cluster, &rest).await;
            run.sleep(300..1000).await;
            run.net().heal();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn split_five_into_majority_and_minority() {
    rounds(5, true, async |run| {
        for _ in 0..2 {
            run.sleep(500..1000).await;
            let order = run.pick(5);
            run.net().partition(&[&order[..2], &order[2..]]);
            wait_leader_among(&run.cluster, &order[2..]).await;
            run.sleep(1000..2000).await;
            run.net().heal();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bridge_member_sees_both_sides() {
    rounds(5, true, async |run| {
        run.sleep(500..1000).await;
        // Two pairs that cannot see each other, and one member that sees all:
        // each side plus the bridge is a majority.
        let order = run.pick(5);
        run.net().partition(&[&order[..2], &order[3..]]);
        run.sleep(3000..4000).await;
        run.net().heal();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flapping_links_with_delays_and_resets() {
    rounds(3, true, async |run| {
        for _ in 0..25 {
            match run.rng.random_range(0..6) {
                0 => {
                    let m = run.rng.random_range(0..3);
                    run.net().isolate(m);
                }
                1 => {
                    // One direction only: a member that can send but not hear.
                    let (from, to) = (run.rng.random_range(0..3), run.rng.random_range(1..3));
                    run.net().set(from, (from + to) % 3, Mode::Blackhole);
                }
                2 => {
                    let d = Duration::from_millis(run.rng.random_range(5..60));
                    run.net().delay_all(d);
                }
                3 => run.net().drop_connections(),
                _ => run.net().heal(),
            }
            run.sleep(100..500).await;
        }
    })
    .await;
}

/// Every open peer connection stops delivering and is never closed (a NAT
/// that forgot it, a peer host gone without a reset); new connections work.
/// Only the members' keepalive pings can notice: they must replace the links
/// and serve writes again (the end-of-run check waits at most 10 s).
#[tokio::test(flavor = "multi_thread")]
async fn links_that_silently_stop_delivering_are_replaced() {
    rounds(3, true, async |run| {
        for _ in 0..2 {
            run.sleep(500..1000).await;
            run.net().stall_open_connections();
            run.sleep(2000..3000).await;
        }
    })
    .await;
}

/// The newest RocksDB write-ahead log of a member.
fn newest_wal(cluster: &Cluster, i: usize) -> Option<std::path::PathBuf> {
    let dir = cluster.members[i].data_dir.join("raft");
    let mut wals: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    wals.sort();
    wals.pop()
}

fn newest_snapshot(cluster: &Cluster, i: usize) -> Option<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(cluster.members[i].data_dir.join("snap"))
        .ok()?
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    files.sort();
    files.pop()
}

/// Flips one bit in the newest entry of a stopped member's log; returns its index.
fn flip_last_log_entry(cluster: &Cluster, i: usize) -> u64 {
    let path = cluster.members[i].data_dir.join("raft");
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, ["raft_state", "raft_log", "meta"]).unwrap();
    let cf = db.cf_handle("raft_log").unwrap();
    let (key, value) = db.iterator_cf(cf, rocksdb::IteratorMode::End).next().unwrap().unwrap();
    let mut value = value.to_vec();
    let at = value.len() / 2;
    value[at] ^= 0x10;
    db.put_cf(cf, &key, value).unwrap();
    db.flush_wal(true).unwrap();
    u64::from_be_bytes(key.as_ref().try_into().unwrap())
}

/// Waits a little for a restarted member: `Some(status)` if it refused to
/// start, `None` if it still runs.
async fn refused(cluster: &mut Cluster, i: usize) -> Option<std::process::ExitStatus> {
    for _ in 0..30 {
        if let Some(status) = cluster.exited(i) {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_faults_are_detected_and_never_served() {
    for seed in seeds() {
        let mut run = Run::start(seed, 3, false, &SNAPSHOT_ARGS).await;
        run.sleep(2000..3000).await;

        // A flipped byte in the newest snapshot: the member names the file
        // and starts from an older snapshot plus its log, or, if none is
        // usable, refuses to start. Either way it serves nothing wrong.
        let leader = run.leader().await;
        let follower = (leader + 1) % 3;
        run.cluster.kill(follower);
        let mut snapshot_refused = false;
        if let Some(file) = newest_snapshot(&run.cluster, follower) {
            let mut bytes = std::fs::read(&file).unwrap();
            let at = run.rng.random_range(0..bytes.len());
            bytes[at] ^= 0x01;
            std::fs::write(&file, bytes).unwrap();
            run.cluster.start_member(follower);
            let named = format!("corrupt snapshot {}", file.display());
            match refused(&mut run.cluster, follower).await {
                Some(status) => {
                    assert!(!status.success());
                    snapshot_refused = true;
                }
                None => run.cluster.wait_log(follower, &named, LIMIT).await,
            }
            assert!(run.cluster.log_of(follower).contains(&named), "{}", run.cluster.logs());
        } else {
            panic!("seed {seed}: no snapshot was taken\n{}", run.cluster.logs());
        }
        if snapshot_refused {
            println!("seed {seed}: the member with a corrupt snapshot had no older one and refused to start");
            // The operator's remedy: put back a copy from a healthy member.
            run.finish(&[follower]).await;
            continue;
        }
        run.sleep(1000..2000).await;

        // A torn tail of the write-ahead log: RocksDB recovers to the last
        // whole record, the member lost its newest synced writes and catches
        // up from the leader.
        let leader = run.leader().await;
        let follower = (leader + 1) % 3;
        run.cluster.kill(follower);
        let wal = newest_wal(&run.cluster, follower).expect("a write-ahead log");
        let len = std::fs::metadata(&wal).unwrap().len();
        let cut = run.rng.random_range(1..=len.clamp(1, 300));
        std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(len - cut.min(len)).unwrap();
        run.cluster.start_member(follower);
        assert!(
            refused(&mut run.cluster, follower).await.is_none(),
            "a torn WAL tail stopped the member\n{}",
            run.cluster.logs()
        );
        run.sleep(1000..2000).await;
        let noticed = (0..3).any(|m| run.cluster.log_of(m).contains("follower lost entries it had acknowledged"));
        println!("seed {seed}: cut {cut} of {len} WAL bytes; the leader saw acknowledged entries lost: {noticed}");

        // A flipped byte in a stored log entry: the member refuses to start,
        // naming the entry, and the cluster goes on with the other two.
        let leader = run.leader().await;
        let follower = (leader + 2) % 3;
        run.cluster.kill(follower);
        let index = flip_last_log_entry(&run.cluster, follower);
        run.cluster.start_member(follower);
        let status = run.cluster.wait_exit(follower, LIMIT);
        assert!(!status.success());
        let log = run.cluster.log_of(follower);
        assert!(log.contains(&format!("corrupt record in column family `raft_log` at index {index}")), "{log}");
        run.sleep(1000..2000).await;
        run.finish(&[follower]).await;
    }
}

/// Waits until a member of `group` leads (by its own and the others' word).
async fn wait_leader_among(cluster: &Cluster, group: &[usize]) -> usize {
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut leader = None;
        for &m in group {
            if let Ok(status) = Client::status_of(&cluster.members[m].client_url).await {
                let me = status.header.unwrap_or_default().member_id;
                if status.leader == me {
                    leader = Some(m);
                }
            }
        }
        if let Some(m) = leader {
            return m;
        }
        assert!(Instant::now() < deadline, "no leader among {group:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn range(endpoint: &str, key: &str, serializable: bool) -> Result<Option<String>, tonic::Status> {
    let mut kv =
        KvClient::connect(endpoint.to_string()).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let req = RangeRequest { key: key.to_string().into(), serializable, ..Default::default() };
    let resp = kv.range(req).await?.into_inner();
    Ok(resp.kvs.first().map(|kv| String::from_utf8(kv.value.to_vec()).unwrap()))
}

fn http_get(url: &str) -> (u16, Option<String>, String) {
    let resp = ureq::get(url).config().http_status_as_error(false).build().call().unwrap();
    let status = resp.status().as_u16();
    let consistency = resp.headers().get("x-raftkv-consistency").map(|v| v.to_str().unwrap().to_string());
    (status, consistency, resp.into_body().read_to_string().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_minority_serves_only_serializable_reads_and_says_so() {
    let (cluster, net) = Cluster::start_proxied(5, &[]).await;
    let leader = cluster.wait_leader(LIMIT).await;
    let endpoints = cluster.endpoints();
    put_via(&endpoints[leader], "before", "1").await.unwrap();
    for endpoint in &endpoints {
        // Every member has applied it (a linearizable read waits for that).
        assert_eq!(range(endpoint, "before", false).await.unwrap().as_deref(), Some("1"));
    }
    // The old leader and one follower on the minority side.
    let minority = [leader, (leader + 1) % 5];
    let majority: Vec<usize> = (0..5).filter(|m| !minority.contains(m)).collect();
    net.partition(&[&minority, &majority]);

    let new_leader = wait_leader_among(&cluster, &majority).await;
    put_via(&endpoints[new_leader], "after", "2").await.unwrap();
    for &m in &majority {
        put_via(&endpoints[m], "through", &m.to_string()).await.unwrap();
    }

    for &m in &minority {
        let started = Instant::now();
        let write = put_via(&endpoints[m], "minority", "x").await.unwrap_err();
        assert!(write.contains("no leader") || write.contains("timed out"), "member {m}: {write}");
        let read = range(&endpoints[m], "after", false).await.unwrap_err();
        assert_eq!(read.code(), tonic::Code::Unavailable, "member {m}: {read:?}");
        // Bounded by the server's request timeout, not hanging.
        assert!(started.elapsed() < Duration::from_secs(12), "member {m} took {:?}", started.elapsed());
        // Serializable reads are served, from the member's own stale copy.
        assert_eq!(range(&endpoints[m], "before", true).await.unwrap().as_deref(), Some("1"));
        assert_eq!(range(&endpoints[m], "after", true).await.unwrap(), None);
        // Over HTTP, the refusal and the local read both say what they are.
        let url = format!("{}/v1/kv/before", endpoints[m]);
        let (status, _, body) = tokio::task::block_in_place(|| http_get(&url));
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("serializable=true"), "{body}");
        let (status, consistency, body) = tokio::task::block_in_place(|| http_get(&format!("{url}?serializable=true")));
        assert_eq!((status, consistency.as_deref(), body.as_str()), (200, Some("serializable"), "1"));
        let list = format!("{}/v1/kv?prefix=bef&serializable=true", endpoints[m]);
        let (status, consistency, body) = tokio::task::block_in_place(|| http_get(&list));
        assert_eq!((status, consistency.as_deref()), (200, Some("serializable")), "{body}");
        assert!(body.contains("\"count\":1"), "{body}");
        // And so does the command line.
        let cli = |extra: &[&str]| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"));
            cmd.args(["get", "before", "--endpoints", &endpoints[m]]).args(extra).env("RAFTKV_LOG", "error");
            tokio::task::block_in_place(|| cmd.output().unwrap())
        };
        let refused = cli(&[]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && stderr.contains("raftkv get --serializable"), "{stderr}");
        let local = cli(&["--serializable"]);
        assert_eq!(String::from_utf8_lossy(&local.stdout), "before\n1\n");
    }
    // Nothing the minority was asked to write was written anywhere.
    assert_eq!(range(&endpoints[new_leader], "minority", false).await.unwrap(), None);

    net.heal();
    for &m in &minority {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Ok(Some(v)) = range(&endpoints[m], "after", false).await {
                assert_eq!(v, "2");
                break;
            }
            assert!(Instant::now() < deadline, "member {m} did not catch up\n{}", cluster.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(range(&endpoints[leader], "minority", false).await.unwrap(), None);
}
