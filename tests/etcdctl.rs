//! Debian's etcdctl 3.4 and plain HTTP against a real raftkv cluster, as a
//! new user would type them. Each case here once failed against raftkv while
//! it worked against etcd 3.4 on the same machine.
//!
//! Needs `etcdctl` on the PATH (`scripts/install-deps` installs Debian's
//! `etcd-client`).

mod support;

use std::process::Command;
use std::time::Duration;

use support::cluster::Cluster;
use support::lines::Lines;

/// Runs etcdctl (API v3) and returns its stdout, failing with its stderr.
fn etcdctl(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("etcdctl")
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl is on the PATH (scripts/install-deps installs Debian's etcd-client)");
    child.stdin.take().unwrap().write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "etcdctl {args:?} failed:\n{stdout}{stderr}");
    stdout.into_owned()
}

/// Runs etcdctl (API v3), expecting it to fail, and returns its stderr.
fn etcdctl_fails(args: &[&str]) -> String {
    let out = Command::new("etcdctl").args(args).env("ETCDCTL_API", "3").output().expect("etcdctl is on the PATH");
    assert!(!out.status.success(), "etcdctl {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `etcdctl put KEY VALUE` through `endpoints`; the revision it made.
fn put_revision(endpoints: &str, key: &str, value: &str) -> i64 {
    let put = etcdctl(&["--endpoints", endpoints, "put", key, value, "-w", "json"], None);
    serde_json::from_str::<serde_json::Value>(&put).unwrap()["header"]["revision"].as_i64().unwrap()
}

/// `program args` (etcdctl or raftkv) running, with its output lines read as they come.
fn watching(program: &str, args: &[&str]) -> (std::process::Child, Lines) {
    let mut child = Command::new(program)
        .args(args)
        .env("ETCDCTL_API", "3")
        .env("RAFTKV_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = Lines::of(&mut child);
    (child, lines)
}

async fn cluster() -> Cluster {
    let cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(15)).await;
    cluster
}

/// grpc-go sends an endpoint written as a URL as the `:authority` itself.
#[tokio::test(flavor = "multi_thread")]
async fn endpoint_status_takes_endpoints_written_as_urls_and_cluster() {
    let cluster = cluster().await;
    let urls = cluster.endpoints();
    let out = tokio::task::spawn_blocking(move || {
        let one = etcdctl(&["--endpoints", &urls[0], "endpoint", "status"], None);
        let all = etcdctl(&["--endpoints", &urls.join(","), "endpoint", "status", "-w", "json"], None);
        let cluster = etcdctl(&["--endpoints", &urls[1], "endpoint", "status", "--cluster"], None);
        let put = etcdctl(&["--endpoints", &urls.join(","), "put", "url-key", "v"], None);
        (one, all, cluster, put)
    })
    .await
    .unwrap();
    let (one, all, cluster_wide, put) = out;
    assert!(one.contains(&cluster.endpoints()[0]), "{one}");
    // The etcd API version that etcd tools expect, not raftkv's own.
    assert!(one.contains(", 3.4.0,"), "endpoint status reports etcd's API version: {one}");
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    assert_eq!(cluster_wide.lines().count(), 3, "--cluster lists every member:\n{cluster_wide}");
    for url in cluster.endpoints() {
        assert!(cluster_wide.contains(&url), "{url} missing from\n{cluster_wide}");
    }
    assert_eq!(put.trim(), "OK");
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_json_gives_each_nested_response_a_header() {
    let cluster = cluster().await;
    let endpoints = cluster.endpoints().join(",");
    let out = tokio::task::spawn_blocking(move || {
        etcdctl(&["--endpoints", &endpoints, "put", "a", "1"], None);
        let script = "value(\"a\") = \"1\"\n\nput b 2\nget a\ndel c\n\nput x y\n\n";
        etcdctl(&["--endpoints", &endpoints, "txn", "-w", "json"], Some(script))
    })
    .await
    .unwrap();
    let txn: serde_json::Value = serde_json::from_str(&out).unwrap();
    let revision = &txn["header"]["revision"];
    assert!(revision.as_i64().unwrap() > 1, "{txn}");
    let responses = txn["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 3, "{txn}");
    for r in responses {
        let inner = r["Response"].as_object().unwrap().values().next().unwrap();
        assert_eq!(&inner["header"]["revision"], revision, "as etcd: every nested response has the revision: {txn}");
    }
}

fn http(method: &str, url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let response = match method {
        "PUT" => agent.put(url).send("v"),
        "DELETE" => agent.delete(url).call(),
        _ => agent.get(url).call(),
    };
    let mut response = response.unwrap();
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_and_empty_keys_get_plain_http_errors() {
    let cluster = cluster().await;
    let base = cluster.endpoints()[0].clone();
    let answers = tokio::task::spawn_blocking(move || {
        let mut answers = Vec::new();
        for (method, path) in [("GET", "/nope"), ("GET", "/v2/keys/x"), ("GET", "/v1/kvx")] {
            answers.push((method, path, http(method, &format!("{base}{path}"))));
        }
        for method in ["GET", "PUT", "DELETE"] {
            answers.push((method, "/v1/kv/", http(method, &format!("{base}/v1/kv/"))));
        }
        answers.push(("GET", "/version", http("GET", &format!("{base}/version"))));
        answers
    })
    .await
    .unwrap();
    for (method, path, (status, body)) in answers {
        match path {
            "/v1/kv/" => {
                assert_eq!(status, 400, "{method} {path}: {body}");
                assert!(body.contains("etcdserver: key is not provided"), "{method} {path}: {body}");
            }
            "/version" => {
                assert_eq!(status, 200);
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["etcdserver"], "3.4.0", "{body}");
                assert_eq!(v["etcdcluster"], "3.4.0", "{body}");
                assert_eq!(v["raftkv"], env!("CARGO_PKG_VERSION"), "{body}");
            }
            _ => assert_eq!(status, 404, "{method} {path}: {body}"),
        }
    }
}

/// History as etcdctl reads it: `get --rev` on every member, `compaction`
/// (plain and `--physical`), and etcd's errors below the compaction point
/// and past the current revision.
#[tokio::test(flavor = "multi_thread")]
async fn get_at_past_revisions_and_compaction() {
    let cluster = cluster().await;
    let urls = cluster.endpoints();
    tokio::task::spawn_blocking(move || {
        let all = urls.join(",");
        let revision = |out: &str| -> i64 {
            let v: serde_json::Value = serde_json::from_str(out).unwrap();
            v["header"]["revision"].as_i64().unwrap()
        };
        let first = revision(&etcdctl(&["--endpoints", &all, "put", "hist", "v1", "-w", "json"], None));
        let second = revision(&etcdctl(&["--endpoints", &all, "put", "hist", "v2", "-w", "json"], None));
        etcdctl(&["--endpoints", &all, "del", "hist"], None);
        let first_arg = format!("--rev={first}");
        for url in &urls {
            // Linearizable, then from each member's own state.
            let old = etcdctl(&["--endpoints", url, "get", "hist", &first_arg, "--print-value-only"], None);
            assert_eq!(old.trim(), "v1", "{url}");
            let local = etcdctl(
                &["--endpoints", url, "get", "hist", &first_arg, "--print-value-only", "--consistency=s"],
                None,
            );
            assert_eq!(local.trim(), "v1", "{url}, serializable");
            assert_eq!(etcdctl(&["--endpoints", url, "get", "hist"], None).trim(), "", "deleted now");
        }
        let future = etcdctl_fails(&["--endpoints", &all, "get", "hist", "--rev=99999"]);
        assert!(future.contains("required revision is a future revision"), "{future}");

        let out = etcdctl(&["--endpoints", &all, "compaction", &second.to_string()], None);
        assert!(out.contains(&format!("compacted revision {second}")), "{out}");
        for url in &urls {
            let gone = etcdctl_fails(&["--endpoints", url, "get", "hist", &first_arg]);
            assert!(gone.contains("required revision has been compacted"), "{url}: {gone}");
            let kept =
                etcdctl(&["--endpoints", url, "get", "hist", &format!("--rev={second}"), "--print-value-only"], None);
            assert_eq!(kept.trim(), "v2", "{url}: the compaction point itself is still readable");
        }
        let again = etcdctl_fails(&["--endpoints", &all, "compaction", "--physical", &second.to_string()]);
        assert!(again.contains("required revision has been compacted"), "{again}");
        let third = revision(&etcdctl(&["--endpoints", &all, "put", "hist", "v3", "-w", "json"], None));
        let out = etcdctl(&["--endpoints", &all, "compaction", "--physical", &third.to_string()], None);
        assert!(out.contains(&format!("compacted revision {third}")), "{out}");
    })
    .await
    .unwrap();
}

/// `etcdctl watch` prints the history from `--rev` on and live changes, in
/// etcd's format, from any member.
#[tokio::test(flavor = "multi_thread")]
async fn watch_prints_history_and_live_changes() {
    let cluster = cluster().await;
    let urls = cluster.endpoints();
    tokio::task::spawn_blocking(move || {
        let all = urls.join(",");
        let first = put_revision(&all, "wk", "one");
        etcdctl(&["--endpoints", &all, "del", "wk"], None);
        let rev = format!("--rev={first}");
        let (mut child, mut lines) = watching("etcdctl", &["--endpoints", &urls[2], "watch", "wk", "--prev-kv", &rev]);
        // History: the put, then the delete with its previous value.
        lines.until(8, Duration::from_secs(10));
        etcdctl(&["--endpoints", &urls[0], "put", "wk", "two"], None);
        let lines = lines.until(11, Duration::from_secs(10));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(lines, ["PUT", "wk", "one", "DELETE", "wk", "one", "wk", "", "PUT", "wk", "two"], "{lines:?}");
    })
    .await
    .unwrap();
}

/// `etcdctl make-mirror` with raftkv as the source copies what is there,
/// then mirrors live puts (it reads, then watches from the read's revision).
#[tokio::test(flavor = "multi_thread")]
async fn make_mirror_copies_then_follows_live_puts() {
    let source = cluster().await;
    let destination = Cluster::start(1);
    destination.wait_leader(Duration::from_secs(15)).await;
    let (from, to) = (source.endpoints(), destination.endpoints()[0].clone());
    tokio::task::spawn_blocking(move || {
        etcdctl(&["--endpoints", &from[0], "put", "mirror/a", "1"], None);
        let mut mirror = Command::new("etcdctl")
            .args(["--endpoints", &from.join(","), "make-mirror", &to])
            .env("ETCDCTL_API", "3")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let copied = |want: &str| {
            for _ in 0..100 {
                let got = etcdctl(&["--endpoints", &to, "get", "mirror/", "--prefix", "--print-value-only"], None);
                if got == want {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        };
        let first = copied("1\n");
        etcdctl(&["--endpoints", &from[1], "put", "mirror/b", "2"], None);
        let live = copied("1\n2\n");
        let still_running = mirror.try_wait().unwrap().is_none();
        let _ = mirror.kill();
        let _ = mirror.wait();
        assert!(first, "the existing key was copied");
        assert!(live, "a later put was mirrored");
        assert!(still_running, "make-mirror keeps following, as against etcd");
    })
    .await
    .unwrap();
}

/// `raftkv watch` prints what `etcdctl watch` prints, in both formats, for
/// the same history on the same member: a prefix from a past revision with
/// previous values, and a single key.
#[tokio::test(flavor = "multi_thread")]
async fn raftkv_watch_prints_what_etcdctl_watch_prints() {
    let cluster = cluster().await;
    let urls = cluster.endpoints();
    tokio::task::spawn_blocking(move || {
        let all = urls.join(",");
        let first = put_revision(&all, "jw/a", "1");
        etcdctl(&["--endpoints", &all, "put", "jw/b", "2"], None);
        etcdctl(&["--endpoints", &all, "put", "jw/a", "3"], None);
        etcdctl(&["--endpoints", &all, "del", "jw/b"], None);
        let rev = format!("--rev={first}");
        // The same arguments to both tools, and the lines each prints for the history.
        let cases: [(&[&str], usize); 3] = [
            (&["watch", "jw/", "--prefix", &rev, "--prev-kv", "-w", "json"], 1),
            (&["watch", "jw/", "--prefix", &rev, "--prev-kv"], 16),
            (&["watch", "jw/a", &rev], 6),
        ];
        for (args, lines) in cases {
            let run = |program: &str, args: &[&str]| {
                let args: Vec<&str> = args.iter().copied().chain(["--endpoints", urls[1].as_str()]).collect();
                let (mut child, mut output) = watching(program, &args);
                let seen = output.until(lines, Duration::from_secs(10));
                let _ = child.kill();
                let _ = child.wait();
                seen
            };
            let theirs = run("etcdctl", args);
            let ours = run(env!("CARGO_BIN_EXE_raftkv"), args);
            assert_eq!(theirs.len(), lines, "etcdctl {args:?}: {theirs:?}");
            assert_eq!(ours, theirs, "raftkv {args:?}");
        }
    })
    .await
    .unwrap();
}
