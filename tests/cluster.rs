//! Real `raftkv server` processes on loopback: election, reads and writes
//! through any member, and SIGKILL of the leader and of every member under
//! load with every acknowledged write found afterwards.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use raftkv::client::Client;
use support::cluster::Cluster;
use support::load::{Writers, assert_all_acked_present, get, put_via};

const ELECTION_LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread")]
async fn three_members_serve_writes_and_linearizable_reads_through_any_member() {
    let cluster = Cluster::start(3);
    cluster.wait_leader(ELECTION_LIMIT).await;
    let endpoints = cluster.endpoints();
    for (i, writer) in endpoints.iter().enumerate() {
        let key = format!("written-through-{i}");
        // The raw etcd client, pinned to this member: a follower must forward.
        put_via(writer, &key, &format!("v{i}")).await.unwrap();
        // A linearizable read through every member sees the write at once.
        for reader in &endpoints {
            assert_eq!(get(reader, &key, false).await, Some(format!("v{i}")), "read of {key} via {reader}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_the_leader_under_load_then_its_restart_and_catch_up() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_leader(ELECTION_LIMIT).await;
    let writers = Writers::start(8, cluster.endpoints(), 0);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = writers.acked().values().sum::<u64>();
    assert!(before > 0, "no write acknowledged before the kill\n{}", cluster.logs());

    cluster.kill(leader);
    let new_leader = cluster.wait_leader(ELECTION_LIMIT).await;
    assert_ne!(new_leader, leader);
    // The writers carry on against the new leader.
    let deadline = tokio::time::Instant::now() + ELECTION_LIMIT;
    while writers.acked().values().sum::<u64>() < before + 50 {
        assert!(tokio::time::Instant::now() < deadline, "writers stalled after the kill\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.start_member(leader);
    let acked = writers.finish().await;
    cluster.wait_leader(ELECTION_LIMIT).await;
    // The restarted member caught up: a linearizable read through it sees everything.
    let endpoint = cluster.endpoints()[leader].clone();
    for (key, &last) in &acked {
        let value: u64 = get(&endpoint, key, false).await.expect("key present").parse().unwrap();
        assert!(value >= last, "{key}: {value} < acknowledged {last} on the restarted member");
    }
    assert_all_acked_present(&cluster, &acked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_every_member_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    cluster.wait_leader(ELECTION_LIMIT).await;
    let mut acked_total: BTreeMap<String, u64> = BTreeMap::new();
    for cycle in 0..5 {
        let writers = Writers::start(8, cluster.endpoints(), cycle * 1_000_000);
        tokio::time::sleep(Duration::from_millis(400 + 150 * cycle)).await;
        for i in 0..3 {
            cluster.kill(i);
        }
        let acked = writers.finish().await;
        assert!(!acked.is_empty(), "cycle {cycle}: nothing acknowledged\n{}", cluster.logs());
        let writes: u64 = acked.values().map(|v| v - cycle * 1_000_000).sum();
        eprintln!("cycle {cycle}: {writes} writes acknowledged before SIGKILL of all members");
        for i in 0..3 {
            cluster.start_member(i);
        }
        cluster.wait_leader(ELECTION_LIMIT).await;
        for (k, v) in acked {
            acked_total.insert(k, v);
        }
        assert_all_acked_present(&cluster, &acked_total).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_finds_the_leader_and_fails_over_past_a_dead_endpoint() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_leader(ELECTION_LIMIT).await;
    let endpoints = cluster.endpoints();
    let follower = (leader + 1) % 3;
    // Connected through a follower, the client still sends writes to the leader.
    let mut client = Client::connect(std::slice::from_ref(&endpoints[follower])).await.unwrap();
    assert_eq!(client.leader_endpoint().await.as_deref(), Some(endpoints[leader].as_str()));
    client.put("routed", "1").await.unwrap();

    // A dead first endpoint is skipped.
    cluster.kill(follower);
    let order = vec![endpoints[follower].clone(), endpoints[leader].clone()];
    let mut client = Client::connect(&order).await.unwrap();
    assert_eq!(client.endpoint(), endpoints[leader]);
    assert_eq!(get(&endpoints[leader], "routed", false).await.as_deref(), Some("1"));
    client.put("after-failover", "2").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_a_member_cleanly_and_its_data_survives() {
    let mut cluster = Cluster::start(1);
    cluster.wait_leader(ELECTION_LIMIT).await;
    let endpoint = cluster.endpoints()[0].clone();
    Client::connect(std::slice::from_ref(&endpoint)).await.unwrap().put("kept", "yes").await.unwrap();
    let status = cluster.terminate(0);
    assert!(status.success(), "exit status after SIGTERM: {status}\n{}", cluster.logs());
    cluster.start_member(0);
    cluster.wait_leader(ELECTION_LIMIT).await;
    assert_eq!(get(&endpoint, "kept", false).await.as_deref(), Some("yes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_without_its_peers_says_so_and_refuses_writes() {
    let mut cluster = Cluster::start(3);
    cluster.wait_leader(ELECTION_LIMIT).await;
    cluster.kill(1);
    cluster.kill(2);
    let endpoint = cluster.endpoints()[0].clone();
    // Within a few election timeouts the lone member knows it has no leader.
    let deadline = tokio::time::Instant::now() + ELECTION_LIMIT;
    loop {
        let status = Client::status_of(&endpoint).await.unwrap();
        if status.leader == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a minority member kept a leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = Client::connect(std::slice::from_ref(&endpoint)).await.unwrap();
    let started = std::time::Instant::now();
    let err = client.put("k", "v").await.unwrap_err().to_string();
    assert!(err.contains("no leader") || err.contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(12), "the write hung for {:?}", started.elapsed());
    // A serializable read is still served from local state.
    let req = raftkv::proto::etcdserverpb::RangeRequest { key: "k".into(), serializable: true, ..Default::default() };
    assert!(client.range(req).await.unwrap().kvs.is_empty());
    let log = std::fs::read_to_string(&cluster.members[0].log).unwrap();
    assert!(log.contains("peer unreachable, retrying"), "no retry message in the log:\n{}", cluster.logs());
}
