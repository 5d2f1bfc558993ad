//! etcd compatibility: a real raftkv cluster driven by the `etcd-client`
//! crate, an etcd client library that knows nothing of raftkv.

mod support;

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};
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
