//! The `raftkv` binary and the HTTP surface, run for real: the commands
//! people type, and the bad input they must be told about.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::cluster::Cluster;
use support::lines::Lines;

fn raftkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raftkv")).args(args).env("RAFTKV_LOG", "error").output().expect("run raftkv")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn malformed_settings_exit_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data = data.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["server", "--data-dir", data, "--initial-cluster-state", "old"], "initial-cluster-state"),
        (&["server", "--data-dir", data, "--initial-cluster", "x=http://127.0.0.1:1"], "initial-cluster"),
        (&["server", "--data-dir", data, "--listen-client-urls", "127.0.0.1:1"], "listen-client-urls"),
        (&["server", "--data-dir", data, "--election-timeout", "soon"], "--election-timeout"),
        (&["server", "--data-dir", data, "--auto-compaction-retention", "10x"], "auto-compaction"),
        (&["server", "--data-dir", data, "--auto-compaction-mode", "hourly"], "auto-compaction"),
    ];
    for (args, field) in cases {
        let out = raftkv(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(field), "{args:?}: stderr does not name {field}: {}", stderr(&out));
    }
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "heartbeat-interval = \"fast\"\n").unwrap();
    let out = raftkv(&["server", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("heartbeat-interval"), "{}", stderr(&out));
    assert!(!std::path::Path::new(data).exists(), "a refused start created the data dir");
    // Load-generator settings that cannot work together are named too.
    let out = raftkv(&["bench", "watch", "--watchers", "5", "--streams", "10", "--endpoints", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--watchers (5) at least --streams (10)"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_of_another_cluster_is_refused() {
    let mut cluster = Cluster::start(1);
    cluster.wait_leader(Duration::from_secs(15)).await;
    cluster.kill(0);
    let m = &cluster.members[0];
    let out = raftkv(&[
        "server",
        "--name",
        &m.name,
        "--data-dir",
        m.data_dir.to_str().unwrap(),
        "--listen-client-urls",
        &m.client_url,
        "--listen-peer-urls",
        &m.peer_url,
        "--initial-advertise-peer-urls",
        &m.peer_url,
        "--initial-cluster",
        &format!("{}={}", m.name, m.peer_url),
        "--initial-cluster-token",
        "another-cluster",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("belongs to cluster"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_put_get_del_status_and_bad_keys() {
    let cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(15)).await;
    let endpoints = cluster.endpoints().join(",");
    let out = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let mut all: Vec<&str> = args.to_vec();
            all.extend_from_slice(&["--endpoints", endpoints.as_str()]);
            raftkv(&all)
        };
        [
            run(&["put", "app/a", "1"]),
            run(&["put", "app/b", "2"]),
            run(&["get", "app/a"]),
            run(&["get", "app/", "--prefix"]),
            run(&["del", "app/", "--prefix"]),
            run(&["get", "app/a"]),
            run(&["status"]),
            run(&["put", "", "v"]),
        ]
    })
    .await
    .unwrap();
    assert_eq!(stdout(&out[0]).trim(), "OK");
    assert_eq!(stdout(&out[2]), "app/a\n1\n");
    assert_eq!(stdout(&out[3]), "app/a\n1\napp/b\n2\n");
    assert_eq!(stdout(&out[4]).trim(), "2");
    assert_eq!(stdout(&out[5]), "");
    let table = stdout(&out[6]);
    assert_eq!(table.lines().count(), 4, "{table}");
    assert_eq!(table.matches(" yes ").count(), 1, "exactly one leader:\n{table}");
    assert_eq!(out[7].status.code(), Some(1));
    // The interactive shell, fed from a pipe.
    let mut shell = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["shell", "--endpoints", &cluster.endpoints().join(",")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    shell
        .stdin
        .take()
        .unwrap()
        .write_all(b"put s/1 hello world\nget s/1\nscan s/\nbogus\ndel s/1\nget s/1\nexit\n")
        .unwrap();
    let shell_out = tokio::task::spawn_blocking(move || shell.wait_with_output().unwrap()).await.unwrap();
    let text = stdout(&shell_out);
    for expected in ["OK", "hello world", "s/1 = hello world", "unknown command `bogus`", "(not found)"] {
        assert!(text.contains(expected), "shell output lacks {expected:?}:\n{text}");
    }
    assert!(stderr(&out[7]).contains("key is not provided"), "{}", stderr(&out[7]));
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_puts_through_any_member_or_only_the_leader() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(15)).await;
    let endpoints = cluster.endpoints();
    let all = endpoints.join(",");
    let out = tokio::task::spawn_blocking(move || {
        let bench = |extra: &[&str]| {
            let mut args = vec!["bench", "put", "--endpoints", all.as_str(), "--clients", "4", "--conns", "3"];
            args.extend_from_slice(&["--total", "60", "--key-space-size", "10", "--quiet"]);
            args.extend_from_slice(extra);
            raftkv(&args)
        };
        [bench(&[]), bench(&["--target-leader"])]
    })
    .await
    .unwrap();
    for o in &out {
        assert!(o.status.success(), "{}", stderr(o));
        let text = stdout(o);
        assert!(text.contains("Requests:     60\n") && text.contains("Errors:       0\n"), "{text}");
        assert!(text.contains("Requests/sec:") && text.contains("p99.9"), "{text}");
    }
    assert!(stdout(&out[0]).contains(&format!("Endpoints:    {}\n", endpoints.join(","))), "{}", stdout(&out[0]));
    let to_leader = format!("Endpoints:    {}\n", endpoints[leader]);
    assert!(stdout(&out[1]).contains(&to_leader), "not sent to the leader {}:\n{}", endpoints[leader], stdout(&out[1]));
}

#[tokio::test(flavor = "multi_thread")]
async fn http_api_and_request_limits() {
    let cluster = Cluster::start(1);
    cluster.wait_leader(Duration::from_secs(15)).await;
    let base = cluster.endpoints()[0].clone();
    let endpoint = base.clone();
    tokio::task::spawn_blocking(move || {
        let url = |p: &str| format!("{base}{p}");
        assert_eq!(ureq::get(&url("/healthz")).call().unwrap().status(), 200);
        ureq::put(&url("/v1/kv/dir/x")).send("hello").unwrap();
        ureq::put(&url("/v1/kv/dir/y")).send("world").unwrap();
        let body = ureq::get(&url("/v1/kv/dir/x")).call().unwrap().into_body().read_to_string().unwrap();
        assert_eq!(body, "hello");
        let list = ureq::get(&url("/v1/kv?prefix=dir/")).call().unwrap().into_body().read_to_string().unwrap();
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(list["count"], 2);
        assert_eq!(list["kvs"][1]["value"], "world");
        let deleted = ureq::delete(&url("/v1/kv/dir/x")).call().unwrap().into_body().read_to_string().unwrap();
        assert!(deleted.contains("\"deleted\":1"), "{deleted}");
        let missing = ureq::get(&url("/v1/kv/dir/x")).call();
        assert!(matches!(missing, Err(ureq::Error::StatusCode(404))), "{missing:?}");
        let status = ureq::get(&url("/v1/status")).call().unwrap().into_body().read_to_string().unwrap();
        assert!(status.contains("\"is_leader\":true"), "{status}");
        // Over the 1.5 MiB default: refused, naming the limit.
        let big = vec![b'x'; 2 * 1024 * 1024];
        let refused = ureq::put(&url("/v1/kv/big")).send(&big[..]);
        assert!(matches!(refused, Err(ureq::Error::StatusCode(400))), "{refused:?}");
    })
    .await
    .unwrap();
    // The same through gRPC: InvalidArgument naming the limit; nothing written.
    let mut client = raftkv::client::Client::connect(&[endpoint]).await.unwrap();
    let err = client.put("big", vec![b'x'; 2 * 1024 * 1024]).await.unwrap_err();
    assert!(err.to_string().contains("1572864"), "{err}");
    let req = raftkv::proto::etcdserverpb::RangeRequest { key: "big".into(), ..Default::default() };
    assert!(client.range(req).await.unwrap().kvs.is_empty());
}

/// History through the command line and HTTP: reads at a past revision,
/// a compaction, and what is refused after it.
#[tokio::test(flavor = "multi_thread")]
async fn past_revisions_and_compaction_through_cli_and_http() {
    let cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(15)).await;
    let endpoints = cluster.endpoints().join(",");
    let base = cluster.endpoints()[0].clone();
    tokio::task::spawn_blocking(move || {
        let url = |p: &str| format!("{base}{p}");
        let put = |value: &str| -> i64 {
            let body = ureq::put(&url("/v1/kv/h")).send(value).unwrap().into_body().read_to_string().unwrap();
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["revision"].as_i64().unwrap()
        };
        let (first, second) = (put("one"), put("two"));
        let at = |rev: i64| ureq::get(&url(&format!("/v1/kv/h?rev={rev}"))).call();
        assert_eq!(at(first).unwrap().into_body().read_to_string().unwrap(), "one");
        let list = ureq::get(&url(&format!("/v1/kv?prefix=h&rev={first}"))).call().unwrap();
        let list: serde_json::Value = serde_json::from_str(&list.into_body().read_to_string().unwrap()).unwrap();
        assert_eq!(list["kvs"][0]["value"], "one", "{list}");
        assert!(matches!(at(first - 1), Err(ureq::Error::StatusCode(404))), "h did not exist yet");
        assert!(matches!(at(99_999), Err(ureq::Error::StatusCode(400))), "a future revision");
        let bad = ureq::get(&url("/v1/kv/h?rev=yesterday")).call();
        assert!(matches!(bad, Err(ureq::Error::StatusCode(400))), "{bad:?}");

        let get = |rev: i64| raftkv(&["get", "h", "--rev", &rev.to_string(), "--endpoints", &endpoints]);
        assert_eq!(stdout(&get(first)), "h\none\n");
        let compacted = raftkv(&["compact", &second.to_string(), "--endpoints", &endpoints]);
        assert!(compacted.status.success(), "{}", stderr(&compacted));
        assert_eq!(stdout(&compacted).trim(), format!("compacted revision {second}"));
        let refused = get(first);
        assert!(!refused.status.success());
        assert!(stderr(&refused).contains("required revision has been compacted"), "{}", stderr(&refused));
        assert!(matches!(at(first), Err(ureq::Error::StatusCode(400))), "compacted over HTTP too");
        assert_eq!(stdout(&get(second)), "h\ntwo\n", "the compaction point itself stays readable");
        let again = raftkv(&["compact", &second.to_string(), "--endpoints", &endpoints]);
        assert!(stderr(&again).contains("required revision has been compacted"), "{}", stderr(&again));
    })
    .await
    .unwrap();
}

/// `--auto-compaction-mode periodic`: the leader compacts on its own, to the
/// revision of a retention ago, and every member then refuses older reads.
#[tokio::test(flavor = "multi_thread")]
async fn periodic_auto_compaction_compacts_on_every_member() {
    let cluster = Cluster::start_with(3, &["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s"]);
    let leader = cluster.wait_leader(Duration::from_secs(15)).await;
    let mut client = raftkv::client::Client::connect(&[cluster.endpoints()[leader].clone()]).await.unwrap();
    let first = client.put("auto", "1").await.unwrap().header.unwrap().revision;
    client.put("auto", "2").await.unwrap();
    for endpoint in cluster.endpoints() {
        let mut member = raftkv::client::Client::connect(&[endpoint]).await.unwrap();
        let req = raftkv::proto::etcdserverpb::RangeRequest {
            key: "auto".into(),
            revision: first,
            serializable: true,
            ..Default::default()
        };
        // Compaction comes a retention (2 s) after the writes, checked every
        // second: bounded at 30 s, well past that.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match member.range(req.clone()).await {
                Err(e) if e.to_string().contains("required revision has been compacted") => break,
                other => assert!(std::time::Instant::now() < deadline, "{other:?}\n{}", cluster.logs()),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(cluster.log_of(leader).contains("auto-compacted the history"), "{}", cluster.logs());
}

/// `raftkv watch` prints history from `--rev` and then live changes, in
/// etcdctl's format.
#[tokio::test(flavor = "multi_thread")]
async fn cli_watch_prints_history_then_live_changes() {
    let cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(15)).await;
    let endpoints = cluster.endpoints().join(",");
    tokio::task::spawn_blocking(move || {
        let put = |k: &str, v: &str| assert!(raftkv(&["put", k, v, "--endpoints", &endpoints]).status.success());
        put("cw/a", "1");
        let mut child = Command::new(env!("CARGO_BIN_EXE_raftkv"))
            .args(["watch", "cw/", "--prefix", "--rev", "2", "--prev-kv", "--endpoints", &endpoints])
            .env("RAFTKV_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Lines::of(&mut child);
        lines.until(3, Duration::from_secs(10));
        put("cw/a", "2");
        let got = lines.until(8, Duration::from_secs(10));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            got,
            ["PUT", "cw/a", "1", "PUT", "cw/a", "1", "cw/a", "2"],
            "history, then a live put with its previous value"
        );
    })
    .await
    .unwrap();
}

/// `GET /v1/watch/{key}` streams newline-delimited JSON (history from
/// `rev`, then live changes; a compacted start ends the stream with the
/// compaction revision; bad input is a 400), and the shell's `watch` prints
/// changes until Enter.
#[tokio::test(flavor = "multi_thread")]
async fn http_watch_streams_json_lines_and_the_shell_watches_until_enter() {
    let cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(15)).await;
    let urls = cluster.endpoints();
    tokio::task::spawn_blocking(move || {
        let json = |body: String| serde_json::from_str::<serde_json::Value>(&body).unwrap();
        let put = |k: &str, v: &str| {
            let resp = ureq::put(&format!("{}/v1/kv/{k}", urls[0])).send(v).unwrap();
            json(resp.into_body().read_to_string().unwrap())["revision"].as_i64().unwrap()
        };
        let first = put("hw/a", "1");
        put("hw/b", "2");
        ureq::delete(&format!("{}/v1/kv/hw/a", urls[0])).call().unwrap();

        let url = format!("{}/v1/watch/hw/?prefix=true&rev={first}&prev_kv=true", urls[2]);
        let resp = ureq::get(&url).call().unwrap();
        assert_eq!(resp.headers().get("content-type").unwrap(), "application/x-ndjson");
        let (tx, rx) = std::sync::mpsc::channel();
        let mut reader = std::io::BufReader::new(resp.into_body().into_reader());
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if tx.send(json(std::mem::take(&mut line))).is_err() {
                    break;
                }
            }
        });
        let next = || rx.recv_timeout(Duration::from_secs(10)).expect("a watch line within 10 s");
        let created = next();
        assert_eq!(created["created"], true, "{created}");
        let history = [next(), next(), next()];
        assert_eq!(
            history
                .iter()
                .map(|e| (e["type"].clone(), e["key"].clone(), e["mod_revision"].clone()))
                .collect::<Vec<_>>(),
            [("PUT", "hw/a", first), ("PUT", "hw/b", first + 1), ("DELETE", "hw/a", first + 2)].map(|(t, k, r)| (
                t.into(),
                k.into(),
                r.into()
            )),
            "{history:?}"
        );
        assert_eq!(history[0]["value"], "1");
        assert_eq!(history[2]["prev_value"], "1", "the delete carries the value before it");
        let now = put("hw/c", "3");
        let live = next();
        assert_eq!(
            (live["key"].as_str(), live["value"].as_str(), live["mod_revision"].as_i64()),
            (Some("hw/c"), Some("3"), Some(now))
        );

        // A start below the compaction point: the stream says so and ends.
        assert!(raftkv(&["compact", &now.to_string(), "--endpoints", &urls[0]]).status.success());
        let body = ureq::get(&format!("{}/v1/watch/hw/a?rev={first}", urls[1]))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        let last = json(body.lines().last().unwrap().to_string());
        assert_eq!((last["canceled"].as_bool(), last["compact_revision"].as_i64()), (Some(true), Some(now)), "{body}");
        assert!(last["reason"].as_str().unwrap().contains("compacted"), "{body}");
        // A client that hangs up on a quiet key takes its watch with it.
        let gauges = |url: &str| {
            let status =
                json(ureq::get(&format!("{url}/v1/status")).call().unwrap().into_body().read_to_string().unwrap());
            (status["watch_streams"].as_u64().unwrap(), status["watchers"].as_u64().unwrap())
        };
        let quiet = ureq::get(&format!("{}/v1/watch/quiet-key", urls[1])).call().unwrap();
        let mut quiet = std::io::BufReader::new(quiet.into_body().into_reader());
        let mut created = String::new();
        std::io::BufRead::read_line(&mut quiet, &mut created).unwrap();
        assert!(created.contains("created"), "{created}");
        assert_eq!(gauges(&urls[1]), (1, 1));
        drop(quiet);
        // Bounded: 100 × 50 ms.
        let mut left = gauges(&urls[1]);
        for _ in 0..100 {
            if left == (0, 0) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            left = gauges(&urls[1]);
        }
        assert_eq!(left, (0, 0), "the watch outlived its HTTP client");
        for bad in ["/v1/watch/hw/a?rev=soon", "/v1/watch/"] {
            let answer = ureq::get(&format!("{}{bad}", urls[1])).call();
            assert!(matches!(answer, Err(ureq::Error::StatusCode(400))), "{bad}: {answer:?}");
        }

        // The shell: history and a live change, then Enter ends the watch
        // and the prompt goes on.
        let mut shell = Command::new(env!("CARGO_BIN_EXE_raftkv"))
            .args(["shell", "--endpoints", &urls.join(",")])
            .env("RAFTKV_LOG", "error")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        let mut input = shell.stdin.take().unwrap();
        let mut lines = Lines::of(&mut shell);
        writeln!(input, "watch --prefix --rev {now} hw/").unwrap();
        lines.until(5, Duration::from_secs(10));
        put("hw/d", "4");
        assert_eq!(lines.until(8, Duration::from_secs(10)).len(), 8, "the live change was printed");
        writeln!(input).unwrap();
        writeln!(input, "get hw/d\nexit").unwrap();
        drop(input);
        let status = shell.wait().unwrap();
        let seen = lines.until(9, Duration::from_secs(10));
        assert!(status.success());
        assert_eq!(
            seen[1..8],
            ["raftkv> watching; press Enter to stop", "PUT", "hw/c", "3", "PUT", "hw/d", "4"],
            "{seen:?}"
        );
        assert_eq!(seen[8], "raftkv> 4", "after Enter, the prompt reads on: {seen:?}");
    })
    .await
    .unwrap();
}
