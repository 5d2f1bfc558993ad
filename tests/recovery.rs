//! Disaster recovery on real processes: a backup saved with `raftkv
//! snapshot save` and with Debian's `etcdctl snapshot save` restores into a
//! new cluster holding every key (and its history); `--force-new-cluster`
//! turns the survivor of a cluster that lost two of three members into a
//! one-member cluster holding everything, which then grows back.

mod support;

use std::process::Command;
use std::time::Duration;

use raftkv::client::Client;
use support::cluster::Cluster;
use support::load::{Writers, assert_all_acked_present, get};

const LIMIT: Duration = Duration::from_secs(30);

fn run(program: &str, args: &[String]) -> String {
    let out = Command::new(program).args(args).env("ETCDCTL_API", "3").env("RAFTKV_LOG", "error").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?} failed:\n{stdout}{stderr}");
    stdout.into_owned()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Writes under load, then stops the writers and waits until every member
/// has applied the same: what each one holds is then everything acknowledged.
async fn loaded(cluster: &Cluster) -> std::collections::BTreeMap<String, u64> {
    let writers = Writers::start(4, cluster.endpoints(), 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acked = writers.finish().await;
    assert!(!acked.is_empty(), "no write was acknowledged\n{}", cluster.logs());
    support::chaos::wait_converged(cluster, LIMIT).await;
    acked
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_saved_by_raftkv_and_etcdctl_restore_into_a_new_cluster_with_every_key() {
    let old = Cluster::start(3);
    old.wait_leader(LIMIT).await;
    let acked = loaded(&old).await;
    let endpoint = old.endpoints()[0].clone();
    let revision = Client::status_of(&endpoint).await.unwrap().header.unwrap().revision;
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("raftkv.snap").to_str().unwrap().to_string();
    let theirs = dir.path().join("etcdctl.snap").to_str().unwrap().to_string();
    let saved = run(env!("CARGO_BIN_EXE_raftkv"), &strings(&["snapshot", "save", &ours, "--endpoints", &endpoint]));
    assert!(saved.starts_with(&format!("Snapshot saved at {ours}")), "{saved}");
    let saved = run("etcdctl", &strings(&["--endpoints", &endpoint, "snapshot", "save", &theirs]));
    assert_eq!(saved.trim(), format!("Snapshot saved at {theirs}"));
    // Nothing was written in between: the same state, the same bytes.
    assert_eq!(std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap());
    drop(old); // the old cluster is gone for good

    let mut new = Cluster::unstarted(3);
    // A cut-short backup is refused and leaves no data directory behind; a
    // restore killed halfway left its staging directory, which is replaced.
    let staging = |i: usize| {
        let mut p = new.members[i].data_dir.clone().into_os_string();
        p.push(".restoring");
        std::path::PathBuf::from(p)
    };
    let cut = dir.path().join("cut.snap");
    let bytes = std::fs::read(&theirs).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut args = strings(&["snapshot", "restore", cut.to_str().unwrap()]);
    args.extend(new.identity_flags(1));
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv")).args(&args).output().unwrap();
    assert!(!out.status.success(), "a cut-short backup was restored");
    assert!(!new.members[1].data_dir.exists() && !staging(1).exists());
    std::fs::create_dir_all(staging(0).join("raft")).unwrap();
    std::fs::write(staging(0).join("raft").join("CURRENT"), "half-written").unwrap();
    for i in 0..3 {
        let mut args = strings(&["snapshot", "restore", &theirs]);
        args.extend(new.identity_flags(i));
        let restored = run(env!("CARGO_BIN_EXE_raftkv"), &args);
        assert!(restored.starts_with(&format!("Restored {} keys (revision {revision}", acked.len())), "{restored}");
    }
    assert!((0..3).all(|i| !staging(i).exists()), "a staging directory was left behind");
    for i in 0..3 {
        new.start_member(i);
    }
    new.wait_leader(LIMIT).await;
    assert_all_acked_present(&new, &acked).await;
    // The history came along, and writes go on after it.
    let status = Client::status_of(&new.endpoints()[0]).await.unwrap();
    assert_eq!(status.header.unwrap().revision, revision);
    let mut client = Client::connect(&new.endpoints()).await.unwrap();
    let first = raftkv::proto::etcdserverpb::RangeRequest { key: "writer-0".into(), revision: 2, ..Default::default() };
    client.range(first).await.unwrap();
    assert_eq!(client.put("after-restore", "yes").await.unwrap().header.unwrap().revision, revision + 1);
    let members = client.member_list().await.unwrap().members;
    assert_eq!(members.len(), 3);
    // A restore refuses a data directory that holds anything.
    let mut again = strings(&["snapshot", "restore", &theirs]);
    again.extend(new.identity_flags(0));
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv")).args(&again).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is not empty"));
}

#[tokio::test(flavor = "multi_thread")]
async fn force_new_cluster_makes_the_survivor_of_two_lost_members_a_cluster_that_grows_back() {
    let mut cluster = Cluster::start_partial(5, 3, &[]);
    cluster.wait_leader(LIMIT).await;
    let acked = loaded(&cluster).await;
    cluster.kill(1);
    cluster.kill(2);
    cluster.kill(0);
    cluster.start_member_with(0, &["--force-new-cluster"]);
    cluster.wait_leader(LIMIT).await;
    assert_all_acked_present(&cluster, &acked).await;
    let mut client = Client::connect(&cluster.endpoints()[..1]).await.unwrap();
    assert_eq!(client.member_list().await.unwrap().members.len(), 1);
    client.put("after-force", "yes").await.unwrap();
    // A lost member coming back is refused: it was removed.
    cluster.start_member(1);
    let status = cluster.wait_exit(1, LIMIT);
    assert!(!status.success() && cluster.log_of(1).contains("was removed from the cluster"), "{}", cluster.log_of(1));
    // Grow back to three with new members.
    for i in [3, 4] {
        cluster.add_member(i, false).await;
        cluster.start_member(i);
        cluster.wait_leader(LIMIT).await;
    }
    support::chaos::wait_converged(&cluster, LIMIT).await;
    assert_eq!(get(&cluster.endpoints()[4], "after-force", false).await.as_deref(), Some("yes"));
    assert_all_acked_present(&cluster, &acked).await;
}
