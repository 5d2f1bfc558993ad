//! Client load against a real cluster: single requests pinned to a member,
//! and writers that record every acknowledged write so faults can be judged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftkv::client::Client;
use raftkv::proto::etcdserverpb::kv_client::KvClient;
use raftkv::proto::etcdserverpb::{PutRequest, RangeRequest};

use super::cluster::Cluster;

/// A put through exactly this member, with the generated etcd client (no
/// leader routing): on a follower it exercises forwarding.
pub async fn put_via(endpoint: &str, key: &str, value: &str) -> Result<(), String> {
    let mut kv = KvClient::connect(endpoint.to_string()).await.map_err(|e| e.to_string())?;
    let req = PutRequest { key: key.to_string().into(), value: value.to_string().into(), ..Default::default() };
    kv.put(req).await.map(drop).map_err(|e| e.to_string())
}

pub async fn get(endpoint: &str, key: &str, serializable: bool) -> Option<String> {
    let mut client = Client::connect(&[endpoint.to_string()]).await.unwrap();
    let req = RangeRequest { key: key.to_string().into(), serializable, ..Default::default() };
    let resp = client.range(req).await.unwrap();
    resp.kvs.first().map(|kv| String::from_utf8(kv.value.to_vec()).unwrap())
}

/// Writers, each owning a key and writing increasing numbers, record what was
/// acknowledged. After faults, each key must hold at least its last
/// acknowledged number (a later, unacknowledged write may also have landed).
pub struct Writers {
    acked: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// Numbers start after `base`, so they keep growing across runs.
    pub fn start(n: usize, endpoints: Vec<String>, base: u64) -> Writers {
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = (0..n)
            .map(|w| {
                let (acked, stopped, endpoints) = (acked.clone(), stopped.clone(), endpoints.clone());
                tokio::spawn(async move {
                    let key = format!("writer-{w}");
                    let mut n = base;
                    // Each writer starts on a different member.
                    let mut order = endpoints.clone();
                    order.rotate_left(w % endpoints.len());
                    // Writes go to one member (followers forward them) until it
                    // fails, then to the next.
                    let mut at = 0;
                    while !*stopped.borrow() {
                        n += 1;
                        if put_via(&order[at], &key, &n.to_string()).await.is_ok() {
                            acked.lock().unwrap().insert(key.clone(), n);
                        } else {
                            at = (at + 1) % order.len();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                })
            })
            .collect();
        Writers { acked, stop, tasks }
    }

    pub fn acked(&self) -> BTreeMap<String, u64> {
        self.acked.lock().unwrap().clone()
    }

    pub async fn finish(self) -> BTreeMap<String, u64> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

pub async fn assert_all_acked_present(cluster: &Cluster, acked: &BTreeMap<String, u64>) {
    for (i, endpoint) in cluster.endpoints().iter().enumerate() {
        if !cluster.is_running(i) {
            continue;
        }
        for (key, &last) in acked {
            let value: u64 = get(endpoint, key, false).await.unwrap_or_else(|| panic!("{key} lost")).parse().unwrap();
            assert!(value >= last, "{key} holds {value} via {endpoint}, but {last} was acknowledged");
        }
    }
}
