//! Debian's etcdctl 3.4's administration commands (`member`, `move-leader`,
//! `defrag`, `endpoint hashkv`, `alarm`) against a real raftkv cluster. The expected
//! outputs and error texts are etcd 3.4's, as etcdctl printed them against
//! `etcd` 3.4 on the same machine.
//!
//! Needs `etcdctl` on the PATH (`scripts/install-deps` installs Debian's
//! `etcd-client`).

mod support;

use std::process::Command;
use std::time::Duration;

use support::cluster::Cluster;
use support::etcdctl::{etcdctl, fails, ok};

const LIMIT: Duration = Duration::from_secs(15);

/// raftkv's own command line against `endpoint`: its stdout (it must succeed).
fn raftkv(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv")).args(args).arg("--endpoints").arg(endpoint).output().unwrap();
    assert!(out.status.success(), "raftkv {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into()
}

/// `member list` rows: (id, status, name, peer URLs, client URLs, is learner).
fn rows(endpoint: &str) -> Vec<Vec<String>> {
    ok(endpoint, &["member", "list"]).lines().map(|l| l.split(", ").map(String::from).collect()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_adds_promotes_updates_and_removes_members_with_etcds_answers() {
    let mut cluster = Cluster::start_partial(4, 3, &[]);
    cluster.wait_leader(LIMIT).await;
    let e = cluster.members[0].client_url.clone();
    let (url4, url1) = (cluster.members[3].peer_url.clone(), cluster.members[0].peer_url.clone());
    // A member just started has not been heard from long: etcd too says
    // "unhealthy cluster" for a while. Wait until additions are accepted.
    let e2 = e.clone();
    let url = url4.clone();
    let added = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            let (success, out, err) = etcdctl(&e2, &["member", "add", "m4", "--peer-urls", &url, "--learner"]);
            if success {
                return out;
            }
            assert!(err.contains("unhealthy cluster"), "{err}");
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("additions were never accepted");
    })
    .await
    .unwrap();
    let e = e.as_str();
    let listed = rows(e);
    let learner = listed.iter().find(|r| r[3] == url4).expect("the learner is listed").clone();
    assert_eq!(&learner[1..], ["unstarted", "", url4.as_str(), "", "true"], "{listed:?}");
    let lines: Vec<&str> = added.lines().collect();
    // etcdctl pads both ids to 16 columns ("%16x").
    assert_eq!(lines[0], format!("Member {:16x} added to cluster {:16x}", hex(&learner[0]), cluster_id(e)));
    let mut initial: Vec<String> = cluster.members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect();
    initial.sort();
    let printed = lines[3].trim_start_matches("ETCD_INITIAL_CLUSTER=\"").trim_end_matches('"');
    let mut printed: Vec<String> = printed.split(',').map(String::from).collect();
    printed.sort();
    assert_eq!(printed, initial);
    assert_eq!(
        &lines[4..],
        [format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{url4}\"").as_str(), "ETCD_INITIAL_CLUSTER_STATE=\"existing\""]
    );

    // etcd 3.4's refusals, each changing nothing.
    let voter = listed.iter().find(|r| r[3] == url1).unwrap()[0].clone();
    let other = cluster.members[1].peer_url.clone();
    let before = rows(e);
    for (args, answer) in [
        (
            vec!["member", "add", "m5", "--peer-urls", "http://127.0.0.1:1", "--learner"],
            "too many learner members in cluster",
        ),
        (vec!["member", "add", "m5", "--peer-urls", &url1], "Peer URLs already exists"),
        (vec!["member", "remove", "1234"], "member not found"),
        (vec!["member", "promote", &voter], "can only promote a learner member"),
        (vec!["member", "promote", &learner[0]], "can only promote a learner member which is in sync with leader"),
        (vec!["member", "update", "1234", "--peer-urls", "http://127.0.0.1:2"], "member not found"),
        (vec!["member", "update", &learner[0], "--peer-urls", &other], "Peer URLs already exists"),
    ] {
        assert_eq!(fails(e, &args), format!("Error: etcdserver: {answer}"), "etcdctl {args:?}");
    }
    assert_eq!(rows(e), before, "a refused change changed nothing");

    // Peer URLs change on every member; the list shows it everywhere.
    let moved = "http://127.0.0.1:3";
    let out = ok(e, &["member", "update", &learner[0], "--peer-urls", moved]);
    assert_eq!(out.trim_end(), format!("Member {:16x} updated in cluster {:16x}", hex(&learner[0]), cluster_id(e)));
    for m in &cluster.members[..3] {
        let r = rows(&m.client_url);
        assert!(r.iter().any(|r| r[0] == learner[0] && r[3] == moved), "{r:?}");
    }
    let out = ok(e, &["member", "remove", &learner[0]]);
    assert_eq!(out.trim_end(), format!("Member {:16x} removed from cluster {:16x}", hex(&learner[0]), cluster_id(e)));
    assert_eq!(rows(e).len(), 3);
    let table = ok(e, &["member", "list", "-w", "table"]);
    assert!(
        table.contains(
            "|        ID        | STATUS  | NAME |       PEER ADDRS       |      CLIENT ADDRS      | IS LEARNER |"
        ),
        "{table}"
    );

    // One of three down: no voter may be added (the quorum of four would
    // need it), and no live member removed (two would need it).
    cluster.kill(2);
    let third = cluster.members[1].peer_url.clone();
    let live = rows(e).iter().find(|r| r[3] == third).unwrap()[0].clone();
    // The leader counts a member out once it has not heard from it for an
    // election timeout. Until then this probe (a URL in use: refused either
    // way, so it changes nothing) says "Peer URLs already exists".
    let probe = ["member", "add", "m5", "--peer-urls", url1.as_str()];
    let mut noticed = false;
    for _ in 0..100 {
        let answer = fails(e, &probe);
        if answer.contains("not enough started members") {
            noticed = true;
            break;
        }
        assert_eq!(answer, "Error: etcdserver: Peer URLs already exists");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(noticed, "the leader never counted the killed member out\n{}", cluster.logs());
    assert_eq!(
        fails(e, &["member", "add", "m5", "--peer-urls", "http://127.0.0.1:4"]),
        "Error: etcdserver: re-configuration failed due to not enough started members"
    );
    assert_eq!(
        fails(e, &["member", "remove", &live]),
        "Error: etcdserver: re-configuration failed due to not enough started members"
    );
}

fn hex(id: &str) -> u64 {
    u64::from_str_radix(id, 16).unwrap()
}

fn cluster_id(endpoint: &str) -> u64 {
    let out = ok(endpoint, &["member", "list", "-w", "json"]);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["header"]["cluster_id"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_moves_the_leader_defragments_and_hashes_at_a_revision() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_leader(LIMIT).await;
    let all = cluster.endpoints().join(",");
    let one = cluster.endpoints()[(leader + 1) % 3].clone();
    let target = (leader + 2) % 3;
    let target_id = cluster.member_id(target).await;
    let leader_id = cluster.member_id(leader).await;
    tokio::task::spawn_blocking(move || {
        let (all, one) = (all.as_str(), one.as_str());
        ok(all, &["put", "a", "1"]);
        ok(all, &["put", "a", "2"]);
        // move-leader needs the leader among the endpoints, and a voter.
        assert_eq!(
            fails(one, &["move-leader", &format!("{target_id:x}")]),
            format!("Error: no leader endpoint given at [{one}]")
        );
        assert_eq!(fails(all, &["move-leader", "1234"]), "Error: etcdserver: bad leader transferee");
        let moved = ok(all, &["move-leader", &format!("{target_id:x}")]);
        assert_eq!(moved.trim(), format!("Leadership transferred from {leader_id:x} to {target_id:x}"));
        let defrag = ok(all, &["defrag"]);
        assert_eq!(defrag.lines().count(), 3, "{defrag}");
        assert!(defrag.lines().all(|l| l.starts_with("Finished defragmenting etcd member[")), "{defrag}");
        // Every member hashes revision 2 alike, and revision 2's hash does
        // not change with later writes.
        let at_two = ok(all, &["endpoint", "hashkv", "--rev", "2"]);
        let hashes: Vec<&str> = at_two.lines().map(|l| l.rsplit(", ").next().unwrap()).collect();
        assert!(hashes.len() == 3 && hashes.windows(2).all(|w| w[0] == w[1]), "{at_two}");
        ok(all, &["put", "a", "3"]);
        assert_eq!(ok(all, &["endpoint", "hashkv", "--rev", "2"]), at_two);
        assert_ne!(ok(all, &["endpoint", "hashkv"]), at_two);
        let err = fails(one, &["endpoint", "hashkv", "--rev", "99"]);
        assert_eq!(err, "Error: etcdserver: mvcc: required revision is a future revision");
    })
    .await
    .unwrap();
    assert_eq!(cluster.wait_leader(LIMIT).await, target);
}

/// A 1 MiB quota on every member: the write that would pass it raises
/// NOSPACE, which every member then enforces and lists (a restarted one
/// too), deletes and compaction still work, and `alarm disarm` lets writes
/// in again. etcd 3.4 answered each step the same way on this machine.
#[tokio::test(flavor = "multi_thread")]
async fn a_space_quota_raises_nospace_which_every_member_enforces_until_etcdctl_disarms_it() {
    let mut cluster = Cluster::start_with(3, &["--quota-backend-bytes=1048576"]);
    cluster.wait_leader(LIMIT).await;
    let raiser = cluster.member_id(0).await;
    let e: Vec<String> = cluster.endpoints();
    let (first, second, third) = (e[0].clone(), e[1].clone(), e[2].clone());
    let alarm = format!("memberID:{raiser} alarm:NOSPACE");
    let (f, s, t, a) = (first.clone(), second.clone(), third.clone(), alarm.clone());
    tokio::task::spawn_blocking(move || {
        let big = "v".repeat(64 * 1024);
        let refused = (0..40).find(|i| !etcdctl(&f, &["put", &format!("k{i}"), &big]).0);
        let refused = refused.expect("a 1 MiB quota refuses some of 40 values of 64 KiB");
        assert!((10..20).contains(&refused), "refused only at put {refused}");
        assert_eq!(
            fails(&f, &["put", &format!("k{refused}"), &big]),
            "Error: etcdserver: mvcc: database space exceeded"
        );
        assert_eq!(ok(&s, &["alarm", "list"]).trim_end(), a);
        assert_eq!(raftkv(&s, &["alarm", "list"]).trim_end(), a, "raftkv prints what etcdctl prints");
        // Every member refuses writes that add data, small ones too.
        assert_eq!(fails(&t, &["put", "small", "x"]), "Error: etcdserver: mvcc: database space exceeded");
        let status = ok(&t, &["endpoint", "status", "-w", "json"]);
        assert!(status.contains(&format!("{a} ")), "{status}");
        // Deletes, reads and compaction go on.
        assert_eq!(ok(&t, &["del", "k", "--prefix"]).trim(), refused.to_string());
        assert_eq!(ok(&s, &["get", "k", "--prefix", "--keys-only"]).trim(), "");
    })
    .await
    .unwrap();
    // A restarted member comes back with the alarm (log and snapshot).
    cluster.kill(2);
    cluster.start_member(2);
    cluster.wait_leader(LIMIT).await;
    tokio::task::spawn_blocking(move || {
        let listed = (0..100).find_map(|_| {
            let (success, out, _) = etcdctl(&third, &["alarm", "list"]);
            if success {
                return Some(out);
            }
            std::thread::sleep(Duration::from_millis(100));
            None
        });
        assert_eq!(listed.expect("the restarted member answers").trim_end(), alarm);
        let revision = serde_json::from_str::<serde_json::Value>(&ok(&first, &["get", "x", "-w", "json"])).unwrap()
            ["header"]["revision"]
            .as_i64()
            .unwrap();
        ok(&first, &["compact", &revision.to_string()]);
        assert_eq!(ok(&second, &["alarm", "disarm"]).trim_end(), alarm);
        assert_eq!(raftkv(&second, &["alarm", "disarm"]), "", "nothing is left to disarm");
        assert_eq!(ok(&second, &["alarm", "list"]), "");
        assert_eq!(ok(&third, &["put", "small", "x"]).trim(), "OK");
        assert_eq!(ok(&first, &["get", "small", "--print-value-only"]).trim(), "x");
    })
    .await
    .unwrap();
}
