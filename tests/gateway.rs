//! etcd's JSON gateway: the curl examples of etcd's gRPC-gateway guide
//! (put, range, a prefix range, a txn, a watch that sees a put, a lease
//! grant), and the errors a client meets, sent to a real etcd 3.4 and to
//! raftkv; the answers must be the same JSON, status and all.
//!
//! Only what differs between any two clusters is masked: the ids in
//! headers, the term, and generated lease ids.

mod support;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::Cluster;
use support::etcd::Etcd;

const LIMIT: Duration = Duration::from_secs(15);

struct Gateway {
    url: String,
    agent: ureq::Agent,
}

impl Gateway {
    fn new(url: &str) -> Gateway {
        let agent =
            ureq::Agent::config_builder().timeout_global(Some(LIMIT)).http_status_as_error(false).build().into();
        Gateway { url: url.to_string(), agent }
    }

    /// POSTs `body` to `path`: the status and the JSON answer, masked.
    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let mut resp = self.agent.post(format!("{}{path}", self.url)).send(body).unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        (resp.status().as_u16(), masked(value))
    }

    /// POSTs `body` to a streaming `path` and gives the first `n` lines,
    /// running `between` after the first.
    fn stream(&self, path: &str, body: &str, n: usize, between: impl FnOnce()) -> Vec<Value> {
        let resp = self.agent.post(format!("{}{path}", self.url)).send(body).unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let mut lines = BufReader::new(resp.into_body().into_reader()).lines();
        let mut read = || masked(serde_json::from_str(&lines.next().expect("stream ended early").unwrap()).unwrap());
        let mut got = vec![read()];
        between();
        got.extend((1..n).map(|_| read()));
        got
    }
}

/// The answer with what differs between clusters replaced by `"*"`.
fn masked(mut value: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, field) in map.iter_mut() {
                    if ["cluster_id", "member_id", "raft_term"].contains(&k.as_str()) {
                        *field = json!("*");
                    } else {
                        walk(field);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

fn mask_field(mut value: Value, pointer: &str) -> Value {
    if let Some(field) = value.pointer_mut(pointer) {
        *field = json!("*");
    }
    value
}

fn ask(gw: &Gateway, answers: &mut Vec<(String, u16, Value)>, name: &str, path: &str, body: &str) {
    let (status, value) = gw.post(path, body);
    answers.push((name.to_string(), status, value));
}

/// Runs the guide's examples against one server, giving every answer.
fn session(gw: &Gateway) -> Vec<(String, u16, Value)> {
    let mut answers = Vec::new();
    // foo=bar, foo1=bar1 (keys and values are base64).
    ask(gw, &mut answers, "put", "/v3/kv/put", r#"{"key": "Zm9v", "value": "YmFy"}"#);
    ask(
        gw,
        &mut answers,
        "put with prev_kv",
        "/v3/kv/put",
        r#"{"key": "Zm9vMQ==", "value": "YmFyMQ==", "prev_kv": true}"#,
    );
    ask(gw, &mut answers, "range", "/v3/kv/range", r#"{"key": "Zm9v"}"#);
    ask(gw, &mut answers, "prefix range", "/v3/kv/range", r#"{"key": "Zm9v", "range_end": "Zm9w"}"#);
    ask(
        gw,
        &mut answers,
        "camelCase and keys only",
        "/v3/kv/range",
        r#"{"key": "Zm9v", "rangeEnd": "Zm9w", "keysOnly": true}"#,
    );
    ask(
        gw,
        &mut answers,
        "range at a revision",
        "/v3/kv/range",
        r#"{"key": "Zm9v", "range_end": "Zm9w", "revision": "2"}"#,
    );
    ask(gw, &mut answers, "missing key", "/v3/kv/range", r#"{"key": "bm9uZQ=="}"#);
    ask(
        gw,
        &mut answers,
        "txn that succeeds",
        "/v3/kv/txn",
        r#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],"success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}}]}"#,
    );
    ask(
        gw,
        &mut answers,
        "txn that fails",
        "/v3/kv/txn",
        r#"{"compare":[{"result":"EQUAL","target":"VALUE","key":"Zm9v","value":"bm8="}],"success":[{"request_put":{"key":"Zm9v"}}],"failure":[{"request_range":{"key":"Zm9v"}}]}"#,
    );
    let (status, grant) = gw.post("/v3/lease/grant", r#"{"TTL": 30}"#);
    let lease = grant["ID"].as_str().expect("a lease id").to_string();
    answers.push(("lease grant".into(), status, mask_field(grant, "/ID")));
    let (status, put) =
        gw.post("/v3/kv/put", &format!(r#"{{"key": "bGVhc2Vk", "value": "eA==", "lease": "{lease}"}}"#));
    answers.push(("put with a lease".into(), status, put));
    let (status, ttl) = gw.post("/v3/lease/timetolive", &format!(r#"{{"ID": "{lease}", "keys": true}}"#));
    answers.push(("time to live".into(), status, mask_field(mask_field(ttl, "/ID"), "/TTL")));
    let lines = gw.stream("/v3/lease/keepalive", &format!(r#"{{"ID": "{lease}"}} {{"ID": {lease}}}"#), 2, || {});
    for line in lines {
        answers.push(("keep-alive".into(), 200, mask_field(line, "/result/ID")));
    }
    // A watch sees the put made while it waits.
    let lines = gw.stream("/v3/watch", r#"{"create_request": {"key": "Zm9v"}}"#, 2, || {
        assert_eq!(gw.post("/v3/kv/put", r#"{"key": "Zm9v", "value": "YmF6"}"#).0, 200);
    });
    for line in lines {
        answers.push(("watch".into(), 200, line));
    }
    let lines = gw.stream(
        "/v3/watch",
        r#"{"create_request": {"key": "Zm9v", "range_end": "Zm9w", "start_revision": 2}}"#,
        2,
        || {},
    );
    for line in lines {
        answers.push(("watch from a revision".into(), 200, line));
    }
    ask(gw, &mut answers, "delete with prev_kv", "/v3/kv/deleterange", r#"{"key": "Zm9vMQ==", "prev_kv": true}"#);
    // Errors: etcd's status, code and text.
    ask(gw, &mut answers, "revoke an unknown lease", "/v3/lease/revoke", r#"{"ID": 1}"#);
    ask(gw, &mut answers, "compact a future revision", "/v3/kv/compaction", r#"{"revision": "100"}"#);
    ask(gw, &mut answers, "put without a key", "/v3/kv/put", r#"{"value": "YmFy"}"#);
    ask(gw, &mut answers, "empty body", "/v3/kv/range", "");
    ask(gw, &mut answers, "unknown fields are ignored", "/v3/kv/range", r#"{"key": "Zm9v", "bogus": 1}"#);
    ask(gw, &mut answers, "compact to revision 3", "/v3/kv/compaction", r#"{"revision": 3}"#);
    ask(gw, &mut answers, "a compacted revision", "/v3/kv/range", r#"{"key": "Zm9v", "revision": 2}"#);
    let (status, bad) = gw.post("/v3/kv/range", r#"{"key": 5}"#);
    answers.push(("bad JSON".into(), status, json!({ "code": bad["code"], "has error": bad["error"].is_string() })));
    answers
}

#[test]
fn the_gateway_answers_etcds_guide_examples_as_etcd_does() {
    let etcd = Etcd::start();
    let cluster = Cluster::start(1);
    tokio::runtime::Runtime::new().unwrap().block_on(cluster.wait_leader(LIMIT));
    let expected = session(&Gateway::new(&etcd.client_url));
    let got = session(&Gateway::new(&cluster.members[0].client_url));
    assert_eq!(expected.len(), got.len());
    // The session saw real answers: stored keys, a txn, and watch events.
    let saw = |name: &str, pointer: &str| expected.iter().any(|(n, _, v)| n == name && v.pointer(pointer).is_some());
    assert!(saw("prefix range", "/kvs/1/key") && saw("txn that fails", "/responses/0/response_range"));
    assert!(saw("watch", "/result/events/0/kv/value") && saw("revoke an unknown lease", "/error"));
    for ((name, etcd_status, etcd_answer), (_, status, answer)) in expected.iter().zip(&got) {
        assert_eq!(
            (status, answer),
            (etcd_status, etcd_answer),
            "{name}: raftkv answered\n{answer}\netcd answered\n{etcd_answer}"
        );
    }
}

#[test]
fn the_gateway_is_also_served_under_v3beta_and_answers_browsers_preflight() {
    let cluster = Cluster::start(1);
    tokio::runtime::Runtime::new().unwrap().block_on(cluster.wait_leader(LIMIT));
    let gw = Gateway::new(&cluster.members[0].client_url);
    let (status, put) = gw.post("/v3beta/kv/put", r#"{"key": "Zm9v", "value": "YmFy"}"#);
    assert_eq!((status, &put["header"]["revision"]), (200, &json!("2")));
    let resp = gw.agent.options(format!("{}/v3/kv/range", gw.url)).call().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    // A member list, as Patroni reads it to find the cluster's members.
    let (status, list) = gw.post("/v3/cluster/member/list", "{}");
    assert_eq!(status, 200);
    assert_eq!(list["members"][0]["clientURLs"][0], json!(cluster.members[0].client_url));
}
