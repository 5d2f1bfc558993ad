//! Runtime membership on real processes, every scenario under client load:
//! the clients' history (puts, linearizable gets, deletes, compare-and-swaps
//! through random members, final reads through every member) must be
//! linearizable, and the members must converge to one state.
//!
//! Members join the way etcd documents it: `member add` (a learner, promoted
//! once in sync, or a voter), then start with `--initial-cluster-state
//! existing`. A removed member stops by itself and its data directory
//! refuses to start again. A member moved with `member update` is reached
//! at its new peer URL, and a SIGKILL in the middle of a change leaves
//! every member with the same member list.

mod support;

use std::time::Duration;

use raftkv::client::Client;
use support::chaos::{self, Workload};
use support::cluster::Cluster;

const LIMIT: Duration = Duration::from_secs(30);
const CLIENTS: usize = 4;

async fn client(cluster: &Cluster) -> Client {
    Client::connect(&cluster.running_endpoints()).await.unwrap()
}

/// Waits until the member list shows member `id` started (it published its
/// name), as an operator would before the next change.
async fn wait_started(cluster: &Cluster, id: u64) {
    for _ in 0..150 {
        let list = client(cluster).await.member_list().await.unwrap();
        if list.members.iter().any(|m| m.id == id && !m.name.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("member {id:x} never started\n{}", cluster.logs());
}

/// etcd's learner flow: add as a learner, start, promote once in sync.
async fn join_as_learner(cluster: &mut Cluster, i: usize) {
    let id = cluster.add_member(i, true).await;
    cluster.start_member(i);
    wait_started(cluster, id).await;
    // Promotion is refused until the learner holds 90% of the leader's log.
    for _ in 0..150 {
        match client(cluster).await.member_promote(id).await {
            Ok(()) => return,
            Err(e) if e.to_string().contains("in sync with leader") => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("promoting {} failed: {e}\n{}", cluster.members[i].name, cluster.logs()),
        }
    }
    panic!("{} never caught up enough to be promoted\n{}", cluster.members[i].name, cluster.logs());
}

/// etcd's voter flow: add as a voter, then start.
async fn join_as_voter(cluster: &mut Cluster, i: usize) {
    let id = cluster.add_member(i, false).await;
    cluster.start_member(i);
    wait_started(cluster, id).await;
}

/// Removes member `i` through another member; it must stop by itself, saying why.
async fn remove(cluster: &mut Cluster, i: usize) {
    let id = cluster.member_id(i).await;
    let others: Vec<String> =
        cluster.running_endpoints().into_iter().filter(|url| *url != cluster.members[i].client_url).collect();
    Client::connect(&others).await.unwrap().member_remove(id).await.unwrap();
    if cluster.is_running(i) {
        let status = cluster.wait_exit(i, LIMIT);
        assert!(!status.success(), "a removed member exits with a failure status");
        assert!(cluster.log_of(i).contains("was removed from the cluster"), "{}", cluster.log_of(i));
    }
}

async fn voters_and_learners(cluster: &Cluster) -> (usize, usize) {
    let list = client(cluster).await.member_list().await.unwrap();
    let learners = list.members.iter().filter(|m| m.is_learner).count();
    (list.members.len() - learners, learners)
}

async fn finish(cluster: &Cluster, load: Workload, seed: u64) {
    let history = load.finish(cluster).await;
    chaos::wait_converged(cluster, LIMIT).await;
    chaos::assert_linearizable(&history, seed, cluster);
    let (acked, ambiguous, reads) = history.counts();
    println!("seed {seed}: {acked} acknowledged writes, {ambiguous} ambiguous, {reads} reads: linearizable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_grows_from_one_member_to_five_and_shrinks_to_three_under_load() {
    let seed = chaos::seeds()[0];
    let mut cluster = Cluster::start_partial(5, 1, &[]);
    cluster.wait_leader(LIMIT).await;
    let load = Workload::start(CLIENTS, cluster.endpoints(), seed);
    join_as_learner(&mut cluster, 1).await;
    join_as_voter(&mut cluster, 2).await;
    join_as_learner(&mut cluster, 3).await;
    join_as_voter(&mut cluster, 4).await;
    assert_eq!(voters_and_learners(&cluster).await, (5, 0));

    // The leader removing itself hands leadership over first.
    let leader = cluster.wait_leader(LIMIT).await;
    remove(&mut cluster, leader).await;
    let log = cluster.log_of(leader);
    assert!(log.contains("handing leadership over"), "{log}");
    assert!(!log.contains("stepping down: no longer a voter"), "the hand-over timed out:\n{log}");
    let other = (0..5).find(|&i| i != leader && i < 2).unwrap();
    remove(&mut cluster, other).await;
    assert_eq!(voters_and_learners(&cluster).await, (3, 0));
    finish(&cluster, load, seed).await;

    // A removed member's data directory never starts again.
    cluster.start_member(leader);
    let status = cluster.wait_exit(leader, LIMIT);
    assert!(!status.success());
    assert!(cluster.log_of(leader).contains("cannot be used again"), "{}", cluster.log_of(leader));
    assert_eq!(voters_and_learners(&cluster).await, (3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_whose_data_directory_was_lost_is_replaced_by_a_new_member() {
    let seed = chaos::seeds()[0];
    let mut cluster = Cluster::start_partial(4, 3, &[]);
    cluster.wait_leader(LIMIT).await;
    let load = Workload::start(CLIENTS, cluster.endpoints(), seed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Its disk died: the process is gone and so is its data directory.
    let leader = cluster.wait_leader(LIMIT).await;
    let lost = (0..3).find(|&i| i != leader).unwrap();
    cluster.kill(lost);
    std::fs::remove_dir_all(&cluster.members[lost].data_dir).unwrap();
    // A member that is down may be removed: it is not part of the quorum.
    remove(&mut cluster, lost).await;
    join_as_voter(&mut cluster, 3).await;
    assert_eq!(voters_and_learners(&cluster).await, (3, 0));
    finish(&cluster, load, seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_original_member_is_replaced_one_by_one_under_load() {
    let seed = chaos::seeds()[0];
    let mut cluster = Cluster::start_partial(6, 3, &[]);
    cluster.wait_leader(LIMIT).await;
    let load = Workload::start(CLIENTS, cluster.endpoints(), seed);
    for original in 0..3 {
        join_as_learner(&mut cluster, 3 + original).await;
        remove(&mut cluster, original).await;
        assert_eq!(voters_and_learners(&cluster).await, (3, 0));
    }
    assert!((0..3).all(|i| !cluster.is_running(i)), "none of the originals is left");
    finish(&cluster, load, seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_joins_with_one_flag_survives_sigkill_during_catch_up_and_promotes_itself() {
    let seed = chaos::seeds()[0];
    // Frequent snapshots and a short log: the joiner must catch up by snapshot.
    let extra = ["--snapshot-entries", "5000", "--snapshot-catchup-entries", "1000"];
    let mut cluster = Cluster::start_partial(4, 3, &extra);
    cluster.wait_leader(LIMIT).await;
    let endpoints = cluster.endpoints()[..3].join(",");
    let loaded = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["bench", "put", "--endpoints", &endpoints, "--clients", "32", "--conns", "4", "--total", "100000"])
        .args(["--sequential-keys", "--key-space-size", "100000", "--key-size", "16", "--val-size", "64", "--quiet"])
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", String::from_utf8_lossy(&loaded.stderr));
    let load = Workload::start(CLIENTS, cluster.endpoints(), seed);
    cluster.start_joining(3);
    // Killed as soon as it has set itself up, while it catches up.
    cluster.wait_log(3, "set up to join the cluster", LIMIT).await;
    cluster.kill(3);
    // Only it promotes itself: killed, it is still the learner it added.
    assert_eq!(voters_and_learners(&cluster).await, (3, 1));
    cluster.start_member(3);
    cluster.wait_log(3, "restarting from existing data", LIMIT).await;
    // It promotes itself once in sync; nobody added a second member.
    for _ in 0..150 {
        if voters_and_learners(&cluster).await == (4, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(voters_and_learners(&cluster).await, (4, 0), "\n{}", cluster.logs());
    let log = cluster.log_of(3);
    assert!(log.contains("added this member to the cluster as a learner"), "{log}");
    assert!(log.contains("installed the leader's snapshot"), "it caught up by snapshot:\n{log}");
    finish(&cluster, load, seed).await;
    let all = raftkv::proto::etcdserverpb::RangeRequest {
        key: vec![0].into(),
        range_end: vec![0].into(),
        count_only: true,
        serializable: true,
        ..Default::default()
    };
    let joined = Client::connect(&cluster.endpoints()[3..]).await.unwrap().range(all).await.unwrap();
    assert!(joined.count >= 100_000, "the joiner holds {} keys", joined.count);
}

/// `member update` moves a member's peer URL: restarted on the new URL
/// only (nothing listens on the old one), it is reached there by members
/// that never restarted, since the leader and it alone must then commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_moved_by_member_update_is_reached_at_its_new_peer_url_without_restarting_the_others() {
    let seed = chaos::seeds()[0];
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_leader(LIMIT).await;
    let (moved, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let load = Workload::start(CLIENTS, cluster.endpoints(), seed);
    let id = cluster.member_id(moved).await;
    cluster.kill(moved);
    let url = cluster.move_peer_url(moved);
    client(&cluster).await.member_update(id, vec![url.clone()]).await.unwrap();
    cluster.start_member(moved);
    let listed = client(&cluster).await.member_list().await.unwrap();
    let record = listed.members.iter().find(|m| m.id == id).unwrap();
    assert_eq!(record.peer_ur_ls, vec![url], "the member list shows the new URL");
    // Without the third member every commit needs the moved one.
    cluster.kill(other);
    let mut kv = Client::connect(&[cluster.members[leader].client_url.clone()]).await.unwrap();
    kv.put("after-the-move", "committed").await.unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let on_moved = support::load::get(&cluster.members[moved].client_url, "after-the-move", true).await;
    assert_eq!(on_moved.as_deref(), Some("committed"));
    cluster.start_member(other);
    finish(&cluster, load, seed).await;
}

/// A SIGKILL of the leader right after it was asked to add a member: the
/// change may or may not have committed, but once the leader is back every
/// member lists the same members, and the cluster finishes the change (or
/// makes it again) and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_killed_in_the_middle_of_a_membership_change_leaves_every_member_agreeing() {
    let seed = chaos::seeds()[0];
    let mut cluster = Cluster::start_partial(4, 3, &[]);
    let load = Workload::start(CLIENTS, cluster.endpoints()[..3].to_vec(), seed);
    for round in 0..3u64 {
        let leader = cluster.wait_leader(LIMIT).await;
        let url = cluster.members[3].peer_url.clone();
        let mut adder = Client::connect(&[cluster.members[leader].client_url.clone()]).await.unwrap();
        let add = tokio::spawn(async move { adder.member_add(vec![url], true).await.map(|(m, _)| m.id) });
        tokio::time::sleep(Duration::from_millis(5 * round)).await;
        cluster.kill(leader);
        let answered = add.await.unwrap();
        cluster.start_member(leader);
        cluster.wait_leader(LIMIT).await;
        let lists = agreed_member_lists(&cluster).await;
        let added = lists.iter().find(|m| m.peer_ur_ls.contains(&cluster.members[3].peer_url)).map(|m| m.id);
        if let Ok(id) = answered {
            assert_eq!(added, Some(id), "an acknowledged addition was lost");
        }
        println!("round {round}: the addition {}", if added.is_some() { "committed" } else { "was lost" });
        if let Some(id) = added {
            client(&cluster).await.member_remove(id).await.unwrap();
        }
        assert_eq!(agreed_member_lists(&cluster).await.len(), 3);
    }
    finish(&cluster, load, seed).await;
}

/// Every running member's member list, once they all show the same one.
async fn agreed_member_lists(cluster: &Cluster) -> Vec<raftkv::proto::etcdserverpb::Member> {
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen.clear();
        for url in cluster.running_endpoints() {
            let mut members = Client::connect(&[url]).await.unwrap().member_list().await.map(|l| l.members);
            if let Ok(list) = &mut members {
                list.sort_by_key(|m| m.id);
            }
            seen.push(members.map_err(|e| e.to_string()));
        }
        if seen.iter().all(|l| l.is_ok() && *l == seen[0]) {
            return seen.remove(0).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("members never agreed on the member list: {seen:?}\n{}", cluster.logs());
}
