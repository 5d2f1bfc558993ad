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

/// Watchers as `/v1/status` counts them on a member.
fn watch_gauges(endpoint: &str) -> (u64, u64) {
    let body = ureq::get(&format!("{endpoint}/v1/status")).call().unwrap().into_body().read_to_string().unwrap();
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    (status["watch_streams"].as_u64().unwrap(), status["watchers"].as_u64().unwrap())
}

/// Streams and watchers go with their clients; a stopping member ends its
/// streams with an error the client library retries (Unavailable), not a
/// clean end that would look like a cancel.
#[tokio::test(flavor = "multi_thread")]
async fn streams_go_with_their_clients_and_a_stopping_member_ends_them_retryably() {
    let mut cluster = Cluster::start(3);
    cluster.wait_leader(LIMIT).await;
    let endpoint = cluster.endpoints()[1].clone();
    let (streams, per_stream) = (20, 3);
    let mut clients = Vec::new();
    for s in 0..streams {
        let mut client = Client::connect([endpoint.clone()], None).await.unwrap();
        let mut stream = client.watch(format!("h/{s}"), None).await.unwrap();
        assert!(next(&mut stream).await.created());
        for w in 1..per_stream {
            stream.watch(format!("h/{s}/{w}"), None).await.unwrap();
            assert!(next(&mut stream).await.created());
        }
        clients.push((client, stream));
    }
    let gauges = tokio::task::spawn_blocking({
        let endpoint = endpoint.clone();
        move || watch_gauges(&endpoint)
    });
    assert_eq!(gauges.await.unwrap(), (streams, streams * per_stream));

    // Cancelling one watcher counts; dropping the clients takes the rest.
    let (_, first) = &mut clients[0];
    first.cancel(0).await.unwrap();
    assert!(next(first).await.canceled());
    drop(clients);
    let endpoint_for_wait = endpoint.clone();
    let left = tokio::task::spawn_blocking(move || {
        // Bounded: the server notices a closed stream at once; 100 × 50 ms.
        let mut seen = watch_gauges(&endpoint_for_wait);
        for _ in 0..100 {
            if seen == (0, 0) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            seen = watch_gauges(&endpoint_for_wait);
        }
        seen
    });
    assert_eq!(left.await.unwrap(), (0, 0), "streams or watchers outlived their clients");

    // SIGTERM while a watch is open on the member.
    let mut client = Client::connect([endpoint.clone()], None).await.unwrap();
    let mut stream = client.watch("stopping", None).await.unwrap();
    assert!(next(&mut stream).await.created());
    cluster.terminate(1);
    let end = tokio::time::timeout(LIMIT, stream.message()).await.expect("the stream ends within the limit");
    match end {
        Err(etcd_client::Error::GRpcStatus(status)) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}")
        }
        other => panic!("a stopping member must end the stream with Unavailable, not {other:?}"),
    }
}
