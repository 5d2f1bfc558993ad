//! Watch through the `etcd-client` crate against a real raftkv cluster: a
//! key and a prefix, history replay from a start revision, `prev_kv`,
//! filters, cancel, progress (asked for and periodic), a compacted start
//! revision, and the same events from every member.

mod support;

use std::time::Duration;

use etcd_client::{Client, EventType, WatchFilterType, WatchOptions, WatchResponse, WatchStream};
use support::cluster::Cluster;

const LIMIT: Duration = Duration::from_secs(10);

async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(LIMIT, stream.message())
        .await
        .expect("a watch response within the limit")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

/// The next response that carries events, as (type, key, value) triples.
async fn events(stream: &mut WatchStream) -> Vec<Seen> {
    loop {
        let resp = next(stream).await;
        if resp.events().is_empty() {
            continue;
        }
        return seen(&resp);
    }
}

/// A response's events, as (type, key, value) triples.
fn seen(resp: &WatchResponse) -> Vec<Seen> {
    resp.events()
        .iter()
        .map(|e| {
            let kv = e.kv().unwrap();
            (e.event_type(), kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string())
        })
        .collect()
}

/// An event as the tests compare it: type, key, value.
type Seen = (EventType, String, String);

fn put(key: &str, value: &str) -> Seen {
    (EventType::Put, key.into(), value.into())
}

fn delete(key: &str) -> Seen {
    (EventType::Delete, key.into(), String::new())
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_keys_prefixes_history_filters_cancel_and_progress() {
    let cluster = Cluster::start_with(3, &["--experimental-watch-progress-notify-interval", "1s"]);
    cluster.wait_leader(Duration::from_secs(15)).await;
    let endpoints = cluster.endpoints();
    let mut client = Client::connect(endpoints.clone(), None).await.unwrap();

    // A key, from now on.
    let mut key = client.watch("w/a", None).await.unwrap();
    let created = next(&mut key).await;
    assert!(created.created());
    let first = client.put("w/a", "1", None).await.unwrap().header().unwrap().revision();
    client.put("w/b", "x", None).await.unwrap();
    client.delete("w/a", None).await.unwrap();
    assert_eq!(events(&mut key).await, vec![put("w/a", "1")]);
    assert_eq!(events(&mut key).await, vec![delete("w/a")], "w/b is not watched");

    // A prefix from a past revision, with the value before each change.
    let options = WatchOptions::new().with_prefix().with_start_revision(first).with_prev_key();
    let mut prefix = client.watch("w/", Some(options)).await.unwrap();
    let mut replayed = Vec::new();
    while replayed.len() < 3 {
        let resp = next(&mut prefix).await;
        for e in resp.events() {
            let prev = e.prev_kv().map(|p| p.value_str().unwrap().to_string());
            let kv = e.kv().unwrap();
            replayed.push((e.event_type(), kv.key_str().unwrap().to_string(), kv.mod_revision(), prev));
        }
    }
    assert_eq!(
        replayed,
        vec![
            (EventType::Put, "w/a".into(), first, None),
            (EventType::Put, "w/b".into(), first + 1, None),
            (EventType::Delete, "w/a".into(), first + 2, Some("1".into())),
        ],
        "history replayed in revision order, deletions with their revision and previous value"
    );

    // Filters, on a second watcher of the same stream; then cancel it.
    let no_put = WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoPut]);
    prefix.watch("w/", Some(no_put)).await.unwrap();
    let created = next(&mut prefix).await;
    assert!(created.created());
    let filtered = created.watch_id();
    assert_ne!(filtered, 0, "the stream's first watcher has id 0, as in etcd");
    client.put("w/c", "2", None).await.unwrap();
    client.delete("w/c", None).await.unwrap();
    let mut by_watcher: Vec<(i64, Vec<Seen>)> = Vec::new();
    while by_watcher.iter().map(|(_, e)| e.len()).sum::<usize>() < 3 {
        let resp = next(&mut prefix).await;
        by_watcher.push((resp.watch_id(), seen(&resp)));
    }
    let of = |id: i64| -> Vec<_> { by_watcher.iter().filter(|(w, _)| *w == id).flat_map(|(_, e)| e.clone()).collect() };
    assert_eq!(of(0), vec![put("w/c", "2"), delete("w/c")]);
    assert_eq!(of(filtered), vec![delete("w/c")], "NOPUT drops the put");
    prefix.cancel(filtered).await.unwrap();
    let canceled = next(&mut prefix).await;
    assert!(canceled.canceled() && canceled.watch_id() == filtered, "{canceled:?}");

    // Progress: asked for (watch id -1), and periodic for a quiet watcher
    // that wanted it.
    prefix.request_progress().await.unwrap();
    let progress = next(&mut prefix).await;
    assert!(progress.events().is_empty() && progress.watch_id() == -1, "{progress:?}");
    let mut quiet = client.watch("quiet", Some(WatchOptions::new().with_progress_notify())).await.unwrap();
    assert!(next(&mut quiet).await.created());
    let notify = next(&mut quiet).await;
    assert!(notify.events().is_empty() && !notify.canceled(), "{notify:?}");
    assert!(notify.header().unwrap().revision() >= first + 4);

    // Every member reports the same history.
    for endpoint in &endpoints {
        let mut member = Client::connect([endpoint.clone()], None).await.unwrap();
        let options = WatchOptions::new().with_prefix().with_start_revision(first);
        let mut stream = member.watch("w/", Some(options)).await.unwrap();
        let mut all = Vec::new();
        while all.len() < 5 {
            all.extend(events(&mut stream).await);
        }
        let want = vec![put("w/a", "1"), put("w/b", "x"), delete("w/a"), put("w/c", "2"), delete("w/c")];
        assert_eq!(all, want, "{endpoint}");
    }

    // A start revision below the compaction point: created, then cancelled
    // with the compaction revision.
    let now = client.put("w/d", "3", None).await.unwrap().header().unwrap().revision();
    client.compact(now, None).await.unwrap();
    let mut old = client.watch("w/", Some(WatchOptions::new().with_prefix().with_start_revision(first))).await.unwrap();
    let mut resp = next(&mut old).await;
    if resp.created() && !resp.canceled() {
        resp = next(&mut old).await;
    }
    assert!(resp.canceled(), "{resp:?}");
    assert_eq!(resp.compact_revision(), now);
    assert!(resp.cancel_reason().contains("compacted"), "{resp:?}");
}
