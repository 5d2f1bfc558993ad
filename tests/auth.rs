//! etcd's auth on real `raftkv server` processes: users, roles and
//! permissions set up with Debian's etcdctl 3.4 and compared with a real
//! etcd 3.4 answer for answer; a limited user refused outside its prefix;
//! the auth state surviving a snapshot install and SIGKILL of every member;
//! simple tokens bound to their member and JWTs valid on every member;
//! failed logins logged without the password and limited per address.
//! (TLS with auth, a certificate's common name as the user, and the
//! etcd-client crate are in `tests/tls.rs`, which owns the certificates.)

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support::cluster::Cluster;
use support::etcd::Etcd;
use support::etcdctl::{APP_USER_SETUP, error_line, etcdctl};

const LIMIT: Duration = Duration::from_secs(20);

/// Hashing at etcd's cost 10 takes ~60 ms a login on this machine; the
/// tests log in hundreds of times.
const FAST_HASHES: [&str; 2] = ["--bcrypt-cost", "4"];

/// What an etcdctl run shows a user: whether it worked, its output, and
/// the error line (etcdctl's retry warnings before it are left out).
fn run(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let (ok, out, err) = etcdctl(endpoint, args);
    (ok, out, error_line(&err))
}

/// The setup of the README's example and what a limited user then meets,
/// as etcdctl commands (user flag first, `-` for none).
const SCRIPT: &[(&str, &[&str])] = &[
    ("-", &["user", "add", "root:rootpw"]),
    ("-", &["user", "add", "app:apppw"]),
    ("-", &["role", "add", "app-rw"]),
    ("-", &["role", "grant-permission", "app-rw", "--prefix=true", "readwrite", "app/"]),
    ("-", &["role", "grant-permission", "app-rw", "read", "shared"]),
    ("-", &["user", "grant-role", "app", "app-rw"]),
    ("-", &["auth", "enable"]),
    ("-", &["put", "x", "1"]),
    ("app:apppw", &["put", "app/a", "1"]),
    ("app:apppw", &["put", "other", "1"]),
    ("app:apppw", &["get", "other"]),
    ("app:apppw", &["get", "app/", "--prefix"]),
    ("app:apppw", &["get", "", "--from-key"]),
    ("app:apppw", &["put", "shared", "1"]),
    ("app:apppw", &["get", "shared"]),
    ("app:apppw", &["txn"]),
    ("app:wrong", &["get", "app/a"]),
    ("nobody:x", &["get", "app/a"]),
    ("app:apppw", &["user", "list"]),
    ("app:apppw", &["del", "app/a"]),
    ("root:rootpw", &["put", "other", "1"]),
    ("root:rootpw", &["user", "get", "app"]),
    ("root:rootpw", &["role", "get", "app-rw"]),
    ("root:rootpw", &["user", "list"]),
    ("root:rootpw", &["role", "list"]),
    ("root:rootpw", &["user", "add", "app:again"]),
    ("root:rootpw", &["role", "add", "app-rw"]),
    ("root:rootpw", &["user", "delete", "root"]),
    ("root:rootpw", &["user", "revoke-role", "root", "root"]),
    ("root:rootpw", &["role", "revoke-permission", "app-rw", "shared"]),
    ("root:rootpw", &["role", "revoke-permission", "app-rw", "nothing"]),
    ("root:rootpw", &["user", "grant-role", "app", "nope"]),
    ("root:rootpw", &["user", "revoke-role", "app", "app-rw"]),
    ("app:apppw", &["put", "app/b", "1"]),
    ("root:rootpw", &["user", "delete", "app"]),
    ("app:apppw", &["get", "app/a"]),
    ("root:rootpw", &["auth", "disable"]),
    ("-", &["put", "x", "2"]),
    ("-", &["get", "x"]),
];

fn play(endpoint: &str) -> Vec<String> {
    SCRIPT
        .iter()
        .map(|(user, args)| {
            let mut all: Vec<&str> = Vec::new();
            let flag = format!("--user={user}");
            if *user != "-" {
                all.push(&flag);
            }
            all.extend_from_slice(args);
            // `etcdctl txn` reads its operations from stdin: none here
            // but a compare on a key the user may not read.
            let (ok, out, error) = if args == &["txn"] { txn_outside(endpoint) } else { run(endpoint, &all) };
            format!("{user} {args:?} -> ok={ok}\n{out}{error}")
        })
        .collect()
}

/// `etcdctl txn` whose compare reads a key outside the user's prefix and
/// whose success branch writes inside it.
fn txn_outside(endpoint: &str) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("etcdctl")
        .args(["--endpoints", endpoint, "--user=app:apppw", "txn"])
        .env("ETCDCTL_API", "3")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"value(\"secret\") = \"x\"\n\nput app/t 1\n\n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let error = error_line(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), error)
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_sets_up_users_roles_and_permissions_and_meets_what_it_meets_with_etcd() {
    let etcd = Etcd::start();
    let cluster = Cluster::start_with(1, &FAST_HASHES);
    cluster.wait_leader(LIMIT).await;
    let theirs = play(&etcd.client_url);
    let ours = play(&cluster.endpoints()[0]);
    for (step, (theirs, ours)) in theirs.iter().zip(&ours).enumerate() {
        assert_eq!(ours, theirs, "step {step} differs from etcd 3.4\n{}", cluster.logs());
    }
    // The script does reach what it is about.
    let all = ours.join("\n");
    for expected in [
        "Error: etcdserver: user name is empty",
        "Error: etcdserver: permission denied",
        "Error: etcdserver: authentication failed, invalid user ID or password",
        "Error: etcdserver: user name already exists",
        "Error: etcdserver: role name already exists",
        "Error: etcdserver: invalid auth management",
        "Authentication Enabled",
        "Authentication Disabled",
    ] {
        assert!(all.contains(expected), "the script never met {expected:?}:\n{all}");
    }
}

/// A JSON gateway call: its HTTP status and body.
fn gateway(endpoint: &str, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = ureq::post(&format!("{endpoint}/v3/{path}")).config().http_status_as_error(false).build();
    if let Some(token) = token {
        req = req.header("Authorization", token);
    }
    let mut resp = req.header("Content-Type", "application/json").send(body.to_string()).unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn login(endpoint: &str, name: &str, password: &str) -> String {
    let (status, body) = gateway(endpoint, "auth/authenticate", None, json!({"name": name, "password": password}));
    assert_eq!(status, 200, "login as {name} at {endpoint}: {body}");
    body["token"].as_str().unwrap().to_string()
}

fn put(endpoint: &str, token: &str, key: &str) -> (u16, Value) {
    gateway(endpoint, "kv/put", Some(token), json!({"key": b64(key), "value": b64("v")}))
}

/// root, and `app` who may read and write `app/`, set up through `endpoint`.
fn set_up_app_user(endpoint: &str) {
    for args in APP_USER_SETUP {
        let (ok, out, error) = run(endpoint, args);
        assert!(ok, "etcdctl {args:?}: {out}{error}");
    }
}

/// What `app` may and may not do at `endpoint`, asked there.
fn assert_app_is_limited(endpoint: &str) {
    let (ok, _, error) = run(endpoint, &["put", "anonymous", "1"]);
    assert!(!ok && error.contains("user name is empty"), "{endpoint}: {error}");
    let (ok, out, error) = run(endpoint, &["--user=app:apppw", "put", "app/after", "1"]);
    assert!(ok, "{endpoint}: {out}{error}");
    let (ok, _, error) = run(endpoint, &["--user=app:apppw", "put", "outside", "1"]);
    assert!(!ok && error.contains("permission denied"), "{endpoint}: {error}");
    let (ok, _, error) = run(endpoint, &["--user=app:apppw", "get", "outside"]);
    assert!(!ok && error.contains("permission denied"), "{endpoint}: {error}");
    let (ok, out, error) = run(endpoint, &["--user=root:rootpw", "get", "app/0099"]);
    assert!(ok && out == "app/0099\nv\n", "{endpoint}: {out}{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_auth_state_survives_a_snapshot_install_and_sigkill_of_every_member() {
    let args = ["--bcrypt-cost", "4", "--snapshot-entries", "20", "--snapshot-catchup-entries", "5"];
    let mut cluster = Cluster::start_with(3, &args);
    let leader = cluster.wait_leader(LIMIT).await;
    let endpoints = cluster.endpoints();
    set_up_app_user(&endpoints[leader]);
    let behind = (leader + 1) % 3;
    cluster.kill(behind);
    // Far past the catch-up margin: the member left behind gets a snapshot.
    let token = login(&endpoints[leader], "app", "apppw");
    for i in 0..100 {
        let (status, body) = put(&endpoints[leader], &token, &format!("app/{i:04}"));
        assert_eq!(status, 200, "{body}");
    }
    assert!(cluster.log_of(leader).contains("log compacted"), "{}", cluster.logs());
    cluster.start_member(behind);
    let deadline = Instant::now() + LIMIT;
    while !cluster.log_of(behind).contains("installed the leader's snapshot") {
        assert!(Instant::now() < deadline, "no snapshot installed:\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Asked there, with serializable reads out of the way: its users,
    // roles and permissions came with the snapshot.
    assert_app_is_limited(&endpoints[behind]);

    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.start_member(i);
    }
    cluster.wait_leader(LIMIT).await;
    for endpoint in &endpoints {
        assert_app_is_limited(endpoint);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_simple_token_is_valid_only_where_it_was_issued() {
    let cluster = Cluster::start_with(3, &FAST_HASHES);
    let leader = cluster.wait_leader(LIMIT).await;
    let endpoints = cluster.endpoints();
    set_up_app_user(&endpoints[leader]);
    let token = login(&endpoints[leader], "app", "apppw");
    assert_eq!(put(&endpoints[leader], &token, "app/here").0, 200);
    let elsewhere = &endpoints[(leader + 1) % 3];
    let (status, body) = put(elsewhere, &token, "app/there");
    assert_eq!((status, body["error"].as_str()), (401, Some("etcdserver: invalid auth token")), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwt_is_valid_on_every_member_and_a_forged_one_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (private, public) = (dir.path().join("jwt.key"), dir.path().join("jwt.pub"));
    std::fs::write(&private, key.serialize_pem()).unwrap();
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let spec = format!("jwt,pub-key={},priv-key={},sign-method=ES256,ttl=10m", public.display(), private.display());
    let cluster = Cluster::start_with(3, &["--bcrypt-cost", "4", "--auth-token", &spec]);
    let leader = cluster.wait_leader(LIMIT).await;
    let endpoints = cluster.endpoints();
    set_up_app_user(&endpoints[leader]);
    let token = login(&endpoints[leader], "app", "apppw");
    for (i, endpoint) in endpoints.iter().enumerate() {
        let (status, body) = put(endpoint, &token, &format!("app/{i}"));
        assert_eq!(status, 200, "{endpoint}: {body}");
        let (status, body) = put(endpoint, &token, "outside");
        assert_eq!((status, body["error"].as_str()), (403, Some("etcdserver: permission denied")), "{body}");
    }
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let (status, body) = put(&endpoints[leader], &forged, "app/forged");
    assert_eq!((status, body["error"].as_str()), (401, Some("etcdserver: invalid auth token")), "{body}");
    // Any change of the auth store outdates the JWTs issued before it, as
    // in etcd: their holders log in again.
    let (ok, out, error) = run(&endpoints[leader], &["--user=root:rootpw", "role", "add", "other"]);
    assert!(ok, "{out}{error}");
    let (status, body) = put(&endpoints[leader], &token, "app/stale");
    assert_eq!(body["error"].as_str(), Some("etcdserver: revision of auth store is old"), "{status} {body}");
    let fresh = login(&endpoints[leader], "app", "apppw");
    assert_eq!(put(&endpoints[leader], &fresh, "app/fresh").0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_are_logged_without_the_password_and_limited_per_address() {
    let cluster = Cluster::start_with(1, &FAST_HASHES);
    cluster.wait_leader(LIMIT).await;
    let endpoint = &cluster.endpoints()[0];
    set_up_app_user(endpoint);
    let wrong = json!({"name": "app", "password": "guess-3f9a"});
    let mut refused = Vec::new();
    for _ in 0..12 {
        let (_, body) = gateway(endpoint, "auth/authenticate", None, wrong.clone());
        refused.push(body["error"].as_str().unwrap_or_default().to_string());
    }
    let failed = "etcdserver: authentication failed, invalid user ID or password";
    assert!(refused[..10].iter().all(|e| e == failed), "{refused:?}");
    assert!(refused[10..].iter().all(|e| e == "etcdserver: too many requests"), "{refused:?}");
    // While limited, even the right password waits: guessing gains nothing.
    let (_, body) = gateway(endpoint, "auth/authenticate", None, json!({"name": "app", "password": "apppw"}));
    assert_eq!(body["error"].as_str(), Some("etcdserver: too many requests"), "{body}");
    let log = cluster.log_of(0);
    assert!(log.contains("authentication failed") && log.contains("127.0.0.1") && log.contains("app"), "{log}");
    assert!(!log.contains("guess-3f9a") && !log.contains("apppw"), "a password reached the log:\n{log}");
}

/// `raftkv user|role|auth` take etcdctl's arguments and print its lines:
/// the same steps, one tool per cluster, compared line for line.
#[tokio::test(flavor = "multi_thread")]
async fn raftkv_user_role_and_auth_commands_print_what_etcdctl_prints() {
    const STEPS: &[(&str, &[&str])] = &[
        ("-", &["user", "add", "root:rootpw"]),
        ("-", &["user", "add", "app:apppw"]),
        ("-", &["role", "add", "app-rw"]),
        ("-", &["role", "grant-permission", "app-rw", "readwrite", "app/", "--prefix"]),
        ("-", &["role", "grant-permission", "app-rw", "read", "a", "c"]),
        ("-", &["role", "grant-permission", "app-rw", "write", "logs", "--from-key"]),
        ("-", &["user", "grant-role", "app", "app-rw"]),
        ("-", &["auth", "enable"]),
        ("root:rootpw", &["user", "get", "app"]),
        ("root:rootpw", &["role", "get", "app-rw"]),
        ("root:rootpw", &["user", "list"]),
        ("root:rootpw", &["role", "list"]),
        ("root:rootpw", &["user", "add", "app:again"]),
        ("root:rootpw", &["role", "revoke-permission", "app-rw", "a", "c"]),
        ("root:rootpw", &["role", "revoke-permission", "app-rw", "app/", "--prefix"]),
        ("root:rootpw", &["user", "revoke-role", "app", "app-rw"]),
        ("app:apppw", &["user", "list"]),
        ("root:rootpw", &["role", "delete", "app-rw"]),
        ("root:rootpw", &["user", "delete", "app"]),
        ("root:rootpw", &["auth", "disable"]),
    ];
    let theirs_cluster = Cluster::start_with(1, &FAST_HASHES);
    let ours_cluster = Cluster::start_with(1, &FAST_HASHES);
    theirs_cluster.wait_leader(LIMIT).await;
    ours_cluster.wait_leader(LIMIT).await;
    let (theirs, ours) = (&theirs_cluster.endpoints()[0], &ours_cluster.endpoints()[0]);
    for (user, args) in STEPS {
        let login = format!("--user={user}");
        let mut all: Vec<&str> = if *user == "-" { vec![] } else { vec![&login] };
        all.extend_from_slice(args);
        let (their_ok, their_out, their_error) = run(theirs, &all);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"))
            .args(&all)
            .args(["--endpoints", ours])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let our_error = String::from_utf8_lossy(&out.stderr).trim().replacen("error: ", "Error: ", 1);
        let our_out = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            (out.status.success(), our_out.as_str(), our_error.as_str()),
            (their_ok, their_out.as_str(), their_error.as_str()),
            "raftkv {all:?} differs from etcdctl"
        );
    }
}
