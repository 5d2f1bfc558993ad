//! `/metrics` and `/health` on a real cluster, read as Prometheus and a
//! load balancer would read them, and etcdctl's `check datascale` (which
//! reads `process_resident_memory_bytes` from `/metrics`).

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

/// The value of the sample `name` (with its labels, if any) on a page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (metric, value) = l.rsplit_once(' ')?;
        (metric == name).then(|| value.parse().ok()).flatten()
    })
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
    for i in 0..10 {
        client.put(format!("m/{i}"), "v").await.unwrap();
    }
    let status = Client::status_of(&cluster.members[leader].client_url).await.unwrap();
    let leader_id = status.header.unwrap().member_id;

    let deadline = Instant::now() + LIMIT;
    let mut leaders = 0;
    for i in 0..3 {
        let page = loop {
            let page = metrics_of(&cluster, i).await;
            if sample(&page, "etcd_debugging_mvcc_keys_total") == Some(10.0) {
                break page;
            }
            assert!(Instant::now() < deadline, "member {i} never showed 10 keys:\n{page}");
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
            let id = format!("etcd_server_id{{server_id=\"{leader_id:x}\"}}");
            assert_eq!(sample(&page, &id), Some(1.0), "{page}");
        }
        let url = format!("{}/health", cluster.members[i].client_url);
        let health = tokio::task::spawn_blocking(move || get(&url)).await.unwrap();
        assert_eq!(health, (200, r#"{"health":"true"}"#.to_string()));
    }
    assert_eq!(leaders, 1, "exactly one member says it leads");

    // A member left alone has no quorum: /health turns false (503).
    let alone = (leader + 1) % 3;
    for i in (0..3).filter(|&i| i != alone) {
        cluster.kill(i);
    }
    let url = format!("{}/health", cluster.members[alone].client_url);
    let deadline = Instant::now() + LIMIT;
    loop {
        let url = url.clone();
        let (code, _) = tokio::task::spawn_blocking(move || get(&url)).await.unwrap();
        if code == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/health stayed {code} without a quorum");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
