//! `/metrics`, `/health`, `/readyz` and `/livez` on a real cluster, read as
//! Prometheus (a real text parser) and a load balancer would read them;
//! etcdctl's `check datascale` (which reads `process_resident_memory_bytes`
//! from `/metrics`); and the JSON log, one line per event.

mod support;

use std::time::{Duration, Instant};

use raftkv::client::Client;
use support::cluster::Cluster;
use support::etcdctl::etcdctl;

const LIMIT: Duration = Duration::from_secs(15);

fn get(url: &str) -> (u16, String) {
    match ureq::get(url).call() {
        Ok(resp) => (resp.status().as_u16(), resp.into_body().read_to_string().unwrap()),
        Err(ureq::Error::StatusCode(code)) => (code, String::new()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Status and body, whatever the status.
fn get_body(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent.get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
}

/// A sample: its name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

/// The samples of a page (name, labels, value), read with a Prometheus
/// text parser: a page it cannot parse fails the test.
fn samples(page: &str) -> Vec<Sample> {
    let scrape = prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_string()))).expect("a Prometheus page");
    scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let labels = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            Some((s.metric, labels, value))
        })
        .collect()
}

fn has_labels(have: &[(String, String)], want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
}

/// The value of the sample `name` whose labels include `labels`.
fn sample_with(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(page).into_iter().find(|(n, l, _)| n == name && has_labels(l, labels)).map(|(_, _, v)| v)
}

fn sample(page: &str, name: &str) -> Option<f64> {
    sample_with(page, name, &[])
}

/// The sum of every sample `name` with `labels` (over the other labels).
fn total(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(page).into_iter().filter(|(n, l, _)| n == name && has_labels(l, labels)).map(|(_, _, v)| v).sum()
}

async fn metrics_of(cluster: &Cluster, i: usize) -> String {
    let url = format!("{}/metrics", cluster.members[i].client_url);
    tokio::task::spawn_blocking(move || get(&url)).await.unwrap().1
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_carry_etcds_names_and_health_answers_as_etcd() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_leader(LIMIT).await;
    let mut client = Client::connect(&cluster.endpoints()).await.unwrap();
    let committed_before =
        sample(&metrics_of(&cluster, leader).await, "etcd_server_proposals_committed_total").unwrap();
    for i in 0..10 {
        client.put(format!("m/{i}"), "v").await.unwrap();
    }
    let status = Client::status_of(&cluster.members[leader].client_url).await.unwrap();
    let leader_id = status.header.unwrap().member_id;

    let deadline = Instant::now() + LIMIT;
    let mut leaders = 0;
    let (mut puts_handled, mut puts_started, mut puts_timed) = (0.0, 0.0, 0.0);
    for i in 0..3 {
        let page = loop {
            let page = metrics_of(&cluster, i).await;
            // Each link times a probe as soon as it connects.
            let probed = samples(&page)
                .iter()
                .filter(|(n, _, v)| n == "etcd_network_peer_round_trip_time_seconds_count" && *v > 0.0)
                .count();
            if sample(&page, "etcd_debugging_mvcc_keys_total") == Some(10.0) && probed == 2 {
                break page;
            }
            assert!(Instant::now() < deadline, "member {i} never showed 10 keys and 2 peers' round trips:\n{page}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(sample(&page, "etcd_server_has_leader"), Some(1.0), "{page}");
        leaders += sample(&page, "etcd_server_is_leader").unwrap() as usize;
        assert!(sample(&page, "etcd_server_leader_changes_seen_total").unwrap() >= 1.0);
        assert!(sample(&page, "etcd_disk_wal_fsync_duration_seconds_count").unwrap() > 0.0, "no synced write timed");
        assert!(sample(&page, "etcd_server_proposals_applied_total").unwrap() > 0.0);
        assert!(sample(&page, "etcd_mvcc_db_total_size_in_bytes").unwrap() > 0.0);
        assert!(sample(&page, "process_resident_memory_bytes").unwrap() > 0.0);
        if i == leader {
            let id = format!("{leader_id:x}");
            assert_eq!(sample_with(&page, "etcd_server_id", &[("server_id", &id)]), Some(1.0), "{page}");
            assert!(sample(&page, "etcd_server_proposals_committed_total").unwrap() >= committed_before + 10.0);
        }
        for name in [
            "etcd_server_proposals_pending",
            "etcd_server_slow_apply_total",
            "etcd_disk_backend_commit_duration_seconds_count",
            "raftkv_log_entries",
            "raftkv_snapshots_sent_total",
            "raftkv_snapshots_received_total",
            "raftkv_forwarded_writes_total",
            "raftkv_read_index_batch_size_count",
            "raftkv_snapshot_duration_seconds_count",
            "etcd_server_quota_backend_bytes",
        ] {
            assert!(sample(&page, name).is_some(), "member {i} has no {name}:\n{page}");
        }
        puts_handled += total(&page, "grpc_server_handled_total", &[("grpc_method", "Put"), ("grpc_code", "OK")]);
        puts_started += total(&page, "grpc_server_started_total", &[("grpc_method", "Put"), ("grpc_type", "unary")]);
        puts_timed += total(&page, "grpc_server_handling_seconds_count", &[("grpc_method", "Put")]);
        let url = format!("{}/health", cluster.members[i].client_url);
        let health = tokio::task::spawn_blocking(move || get(&url)).await.unwrap();
        assert_eq!(health, (200, r#"{"health":"true"}"#.to_string()));
    }
    assert_eq!(leaders, 1, "exactly one member says it leads");
    // Every put was a gRPC call counted where it came in, and answered OK.
    assert_eq!((puts_started, puts_handled, puts_timed), (10.0, 10.0, 10.0));
    let url = format!("{}/readyz", cluster.members[leader].client_url);
    assert_eq!(tokio::task::spawn_blocking(move || get(&url)).await.unwrap(), (200, "ok".to_string()));

    // A leader change is counted by the members that see it.
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let mut changes_before = Vec::new();
    for &i in &survivors {
        changes_before.push(sample(&metrics_of(&cluster, i).await, "etcd_server_leader_changes_seen_total").unwrap());
    }
    cluster.kill(leader);
    let next = cluster.wait_leader(LIMIT).await;
    for (&i, before) in survivors.iter().zip(changes_before) {
        let page = metrics_of(&cluster, i).await;
        assert!(sample(&page, "etcd_server_leader_changes_seen_total").unwrap() > before, "member {i}:\n{page}");
    }

    // A member left alone has no quorum: no leader on /metrics, /health
    // false (503), /readyz not ready and saying why, /livez still alive;
    // the links to the dead peers count their failures.
    let alone = survivors.into_iter().find(|&i| i != next).unwrap();
    cluster.kill(next);
    let url = format!("{}/health", cluster.members[alone].client_url);
    let deadline = Instant::now() + LIMIT;
    loop {
        let url = url.clone();
        let (code, _) = tokio::task::spawn_blocking(move || get(&url)).await.unwrap();
        let page = metrics_of(&cluster, alone).await;
        if code == 503 && sample(&page, "etcd_server_has_leader") == Some(0.0) {
            assert!(total(&page, "etcd_network_peer_sent_failures_total", &[]) > 0.0, "{page}");
            break;
        }
        assert!(Instant::now() < deadline, "/health stayed {code} without a quorum:\n{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = cluster.members[alone].client_url.clone();
    let (code, body) = tokio::task::spawn_blocking(move || get_body(&format!("{base}/readyz"))).await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("[-]leader failed: no leader") && body.ends_with("readyz check failed\n"), "{body}");
    let base = cluster.members[alone].client_url.clone();
    let (code, body) = tokio::task::spawn_blocking(move || get_body(&format!("{base}/livez?verbose"))).await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("[+]raft_loop ok"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_metrics_urls_serve_metrics_and_health_only() {
    let url = format!("http://127.0.0.1:{}", support::cluster::free_port());
    let cluster = Cluster::start_with(1, &["--listen-metrics-urls", &url]);
    cluster.wait_leader(LIMIT).await;
    let (page, health, kv) = tokio::task::spawn_blocking(move || {
        (get(&format!("{url}/metrics")), get(&format!("{url}/health")), get_body(&format!("{url}/v1/kv/a")))
    })
    .await
    .unwrap();
    assert_eq!(page.0, 200);
    assert_eq!(sample(&page.1, "etcd_server_has_leader"), Some(1.0), "{}", page.1);
    assert_eq!(health, (200, r#"{"health":"true"}"#.to_string()));
    assert_eq!(kv.0, 404, "the metrics address serves no keys");
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_check_datascale_passes() {
    let cluster = Cluster::start(3);
    cluster.wait_leader(LIMIT).await;
    let endpoints = cluster.endpoints().join(",");
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || etcdctl(&endpoints, &["check", "datascale", "--load", "s"])).await.unwrap();
    assert!(ok && out.contains("PASS"), "check datascale failed:\n{out}\n{err}");
    println!("{}", out.lines().filter(|l| l.contains("PASS") || l.contains("FAIL")).collect::<Vec<_>>().join("\n"));
}

/// The JSON lines of member `i`'s log (every line must be one).
fn json_log(cluster: &Cluster, i: usize) -> Vec<serde_json::Value> {
    let log = cluster.log_of(i);
    log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect()
}

/// Lines with `message`, at info level, each naming the member and a term.
fn events(lines: &[serde_json::Value], message: &str, member: &str) -> usize {
    let found: Vec<_> = lines.iter().filter(|l| l["message"] == message).collect();
    for line in &found {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["span"]["member"], member, "{line}");
        assert!(line["term"].is_u64(), "no term: {line}");
    }
    found.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_log_has_one_line_per_leader_change_and_snapshot() {
    let mut cluster = Cluster::start_with(3, &["--log-format", "json", "--snapshot-entries", "50"]);
    let leader = cluster.wait_leader(LIMIT).await;
    let mut client = Client::connect(&cluster.endpoints()).await.unwrap();
    for i in 0..120 {
        client.put(format!("l/{i}"), "v").await.unwrap();
    }
    drop(client);
    cluster.kill(leader);
    cluster.wait_leader(LIMIT).await;
    for i in (0..3).filter(|&i| i != leader) {
        let name = cluster.members[i].name.clone();
        // The counters and the log are written by different tasks: wait
        // (bounded) until they agree, as they must once both are written.
        let deadline = Instant::now() + LIMIT;
        loop {
            let page = metrics_of(&cluster, i).await;
            let changes = sample(&page, "etcd_server_leader_changes_seen_total").unwrap() as usize;
            let snapshots = sample(&page, "raftkv_snapshot_duration_seconds_count").unwrap() as usize;
            let lines = json_log(&cluster, i);
            let logged = (events(&lines, "leader elected", &name), events(&lines, "snapshot written", &name));
            if logged == (changes, snapshots) {
                assert!(changes >= 2 && snapshots >= 2, "{changes} leader changes, {snapshots} snapshots");
                break;
            }
            assert!(Instant::now() < deadline, "member {i} logged {logged:?}, counted {:?}", (changes, snapshots));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
