//! etcd compatibility: a real raftkv cluster driven by the `etcd-client`
//! crate, an etcd client library that knows nothing of raftkv.

mod support;

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, LockOptions,
    ProclaimOptions, PutOptions, ResignOptions, Txn, TxnOp,
};
use support::cluster::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn etcd_client_library_works_unmodified() {
    let cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(15)).await;
    let mut client = Client::connect(cluster.endpoints(), None).await.unwrap();

    // put / get, with etcd's revision meaning.
    let put = client.put("foo", "bar", None).await.unwrap();
    let revision = put.header().unwrap().revision();
    let got = client.get("foo", None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), "bar");
    assert_eq!(got.kvs()[0].create_revision(), revision);
    assert_eq!(got.kvs()[0].version(), 1);

    // A prefix range with a limit.
    for i in 0..5 {
        client.put(format!("dir/{i}"), format!("v{i}"), None).await.unwrap();
    }
    let page = client.get("dir/", Some(GetOptions::new().with_prefix().with_limit(2))).await.unwrap();
    assert_eq!(page.kvs().len(), 2);
    assert!(page.more());
    assert_eq!(page.count(), 5);
    assert_eq!(page.kvs()[0].key_str().unwrap(), "dir/0");

    // delete, single and by prefix.
    assert_eq!(client.delete("foo", None).await.unwrap().deleted(), 1);
    assert!(client.get("foo", None).await.unwrap().kvs().is_empty());
    let deleted = client.delete("dir/", Some(DeleteOptions::new().with_prefix())).await.unwrap();
    assert_eq!(deleted.deleted(), 5);

    // Compare-and-swap through a transaction: the first wins, the second sees why it lost.
    client.put("lock", "free", None).await.unwrap();
    let cas = |expect: &str, new: &str| {
        Txn::new()
            .when(vec![Compare::value("lock", CompareOp::Equal, expect)])
            .and_then(vec![TxnOp::put("lock", new, None)])
            .or_else(vec![TxnOp::get("lock", None)])
    };
    assert!(client.txn(cas("free", "held-by-a")).await.unwrap().succeeded());
    let lost = client.txn(cas("free", "held-by-b")).await.unwrap();
    assert!(!lost.succeeded());
    assert_eq!(client.get("lock", None).await.unwrap().kvs()[0].value_str().unwrap(), "held-by-a");

    // Member list and status.
    let members = client.member_list().await.unwrap();
    assert_eq!(members.members().len(), 3);
    let mut names: Vec<&str> = members.members().iter().map(|m| m.name()).collect();
    names.sort();
    assert_eq!(names, ["m1", "m2", "m3"]);
    assert!(members.members().iter().all(|m| m.client_urls().len() == 1 && m.peer_urls().len() == 1));
    let status = client.status().await.unwrap();
    assert_ne!(status.leader(), 0);
    assert!(status.raft_term() >= 1);
    assert!(members.members().iter().any(|m| m.id() == status.leader()));

    // Bad input gets etcd's errors.
    let empty = client.put("", "v", None).await.unwrap_err();
    assert!(empty.to_string().contains("key is not provided"), "{empty}");
}

/// Leases, locks and elections through the crate's own helpers, each
/// served by a follower as well as the leader.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_client_leases_locks_and_elections_work_unmodified() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(15)).await;
    let follower = cluster.members[(leader + 1) % 3].client_url.clone();
    let mut client = Client::connect([follower], None).await.unwrap();

    // grant, put with the lease, time-to-live with its keys, the list.
    let lease = client.lease_grant(30, None).await.unwrap();
    assert_eq!(lease.ttl(), 30);
    client.put("svc/a", "1", Some(PutOptions::new().with_lease(lease.id()))).await.unwrap();
    let ttl = client.lease_time_to_live(lease.id(), Some(LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
    assert_eq!((ttl.id(), ttl.granted_ttl()), (lease.id(), 30));
    assert!((28..=30).contains(&ttl.ttl()), "{}", ttl.ttl());
    assert_eq!(ttl.keys(), [b"svc/a".to_vec()]);
    let listed: Vec<i64> = client.leases().await.unwrap().leases().iter().map(|l| l.id()).collect();
    assert_eq!(listed, [lease.id()]);

    // The keep-alive stream renews it, answering with the full TTL.
    let (mut keeper, mut answers) = client.lease_keep_alive(lease.id()).await.unwrap();
    for _ in 0..3 {
        keeper.keep_alive().await.unwrap();
        let answer = answers.message().await.unwrap().expect("an answer per keep-alive");
        assert_eq!((answer.id(), answer.ttl()), (lease.id(), 30));
    }

    // A missing lease, and a chosen id in use, are refused with etcd's texts.
    let err = client.put("x", "y", Some(PutOptions::new().with_lease(0x1234))).await.unwrap_err();
    assert!(err.to_string().contains("requested lease not found"), "{err}");
    let taken = Some(LeaseGrantOptions::new().with_id(lease.id()));
    let err = client.lease_grant(99, taken).await.unwrap_err();
    assert!(err.to_string().contains("etcdserver: lease already exists"), "{err}");
    let chosen = client.lease_grant(10, Some(LeaseGrantOptions::new().with_id(0x7e57))).await.unwrap();
    assert_eq!((chosen.id(), chosen.ttl()), (0x7e57, 10));
    client.lease_revoke(0x7e57).await.unwrap();

    // lock / unlock: a second locker waits until the first unlocks.
    let first = client.lock("job", Some(LockOptions::new().with_lease(lease.id()))).await.unwrap();
    let held = first.key().to_vec();
    assert!(held.starts_with(b"job/"), "{:?}", String::from_utf8_lossy(&held));
    let other = client.lease_grant(30, None).await.unwrap();
    let mut second_client = client.clone();
    let second = tokio::spawn(async move {
        second_client.lock("job", Some(LockOptions::new().with_lease(other.id()))).await.unwrap().key().to_vec()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the lock was taken while held");
    client.unlock(held).await.unwrap();
    let taken = tokio::time::timeout(Duration::from_secs(5), second).await.expect("passed on unlock").unwrap();
    client.unlock(taken).await.unwrap();

    // campaign / proclaim / leader / observe / resign.
    let won = client.campaign("pick", "v1", lease.id()).await.unwrap();
    let key = won.leader().unwrap().clone();
    let mut observe = client.observe("pick").await.unwrap();
    let seen = observe.message().await.unwrap().unwrap();
    assert_eq!(seen.kv().unwrap().value(), b"v1");
    client.proclaim("v2", Some(ProclaimOptions::new().with_leader(key.clone()))).await.unwrap();
    let seen = observe.message().await.unwrap().unwrap();
    assert_eq!(seen.kv().unwrap().value(), b"v2");
    assert_eq!(client.leader("pick").await.unwrap().kv().unwrap().value(), b"v2");
    client.resign(Some(ResignOptions::new().with_leader(key))).await.unwrap();
    let err = client.leader("pick").await.unwrap_err();
    assert!(err.to_string().contains("election: no leader"), "{err}");

    // Revoking deletes the attached key.
    client.lease_revoke(lease.id()).await.unwrap();
    assert!(client.get("svc/a", None).await.unwrap().kvs().is_empty());
    let gone = client.lease_time_to_live(lease.id(), None).await.unwrap();
    assert_eq!(gone.ttl(), -1);
}
