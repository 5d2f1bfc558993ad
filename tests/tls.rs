//! TLS on both ports of real `raftkv server` processes, with certificates
//! made in the test: mutual TLS for clients and peers; who is refused during
//! the handshake (no certificate, one from another CA, one with a common
//! name other than --peer-cert-allowed-cn, plain text on a TLS port);
//! certificates re-read when their files change; and --auto-tls.
//! raftkv's own client and Debian's etcdctl 3.4 connect alike.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use raftkv::client::Client;
use raftkv::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv::proto::etcdserverpb::{RangeRequest, StatusRequest};
use raftkv::proto::raftpeer::MembersRequest;
use raftkv::proto::raftpeer::raft_peer_client::RaftPeerClient;
use raftkv::tls::generate::{Authority, Issued};
use raftkv::tls::{Dialer, Target, TlsInfo};
use support::cluster::Cluster;
use support::etcdctl::{APP_USER_SETUP, error_line, etcdctl};

const LIMIT: Duration = Duration::from_secs(20);

/// The certificates every test of this binary uses: raftkv's client library
/// takes one TLS setting per process, as etcdctl takes one per run.
struct Pki {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    ca: Authority,
    /// The members' certificate (CN `member`), for both ports.
    member: Issued,
    /// A client's (CN `root`), signed by the same CA.
    client: Issued,
    /// A certificate for the same names from a CA nobody trusts.
    stranger: Issued,
}

static PKI: LazyLock<Pki> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let ca = Authority::create(&path, "ca").unwrap();
    let member = ca.issue(&path, "member", "member", &["127.0.0.1", "localhost"]).unwrap();
    let client = ca.issue(&path, "client", "root", &["127.0.0.1", "localhost"]).unwrap();
    let other = Authority::create(&path, "other-ca").unwrap();
    let stranger = other.issue(&path, "stranger", "member", &["127.0.0.1", "localhost"]).unwrap();
    let pki = Pki { _dir: dir, dir: path, ca, member, client, stranger };
    raftkv::client::use_tls(dialer(Some(&pki.client), &pki.ca.cert_file));
    pki
});

fn dialer(cert: Option<&Issued>, ca: &Path) -> Dialer {
    Dialer::new(&TlsInfo {
        cert_file: cert.map(|c| c.cert_file.clone()),
        key_file: cert.map(|c| c.key_file.clone()),
        trusted_ca_file: Some(ca.to_path_buf()),
        ..TlsInfo::default()
    })
    .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Mutual TLS on both ports, with the members' certificate at `member`.
fn mutual_tls_flags(member: &Issued) -> Vec<String> {
    let ca = s(&PKI.ca.cert_file);
    let (cert, key) = (s(&member.cert_file), s(&member.key_file));
    [
        "--cert-file",
        cert,
        "--key-file",
        key,
        "--trusted-ca-file",
        ca,
        "--client-cert-auth",
        "--peer-cert-file",
        cert,
        "--peer-key-file",
        key,
        "--peer-trusted-ca-file",
        ca,
        "--peer-client-cert-auth",
        "--peer-cert-allowed-cn",
        "member",
    ]
    .map(String::from)
    .to_vec()
}

fn start(n: usize, flags: &[String]) -> Cluster {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Cluster::start_tls(n, &flags)
}

/// Whether a `Status` call through `dialer` to `url` is answered.
async fn status_answered(dialer: &Dialer, url: &str) -> bool {
    let target = Target::new(url).unwrap().with(|e| e.connect_timeout(Duration::from_secs(2)));
    let Ok(channel) = dialer.connect(&target).await else { return false };
    let mut client = MaintenanceClient::new(channel);
    let call = client.status(StatusRequest {});
    matches!(tokio::time::timeout(Duration::from_secs(5), call).await, Ok(Ok(_)))
}

/// Whether a peer-service call through `dialer` to `url` is answered.
async fn peer_answered(dialer: &Dialer, url: &str) -> bool {
    let target = Target::new(url).unwrap().with(|e| e.connect_timeout(Duration::from_secs(2)));
    let Ok(channel) = dialer.connect(&target).await else { return false };
    let mut client = RaftPeerClient::new(channel);
    let call = client.members(MembersRequest {});
    matches!(tokio::time::timeout(Duration::from_secs(5), call).await, Ok(Ok(_)))
}

fn etcdctl_tls(endpoint: &str, cert: Option<&Issued>, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--cacert", s(&PKI.ca.cert_file), "--command-timeout", "5s", "--dial-timeout", "3s"];
    if let Some(c) = cert {
        all.extend(["--cert", s(&c.cert_file), "--key", s(&c.key_file)]);
    }
    all.extend(args);
    etcdctl(endpoint, &all)
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_on_both_ports_refuses_whoever_lacks_a_trusted_certificate() {
    let pki = &*PKI;
    let mut cluster = start(3, &mutual_tls_flags(&pki.member));
    cluster.wait_leader(LIMIT).await;
    let endpoints = cluster.endpoints();
    assert!(endpoints.iter().all(|e| e.starts_with("https://")));

    // raftkv's client (CA and client certificate) writes and reads.
    let mut client = Client::connect(&endpoints).await.unwrap();
    client.put("tls/a", "1").await.unwrap();
    let got = client.range(RangeRequest { key: "tls/a".into(), ..Default::default() }).await.unwrap();
    assert_eq!(&got.kvs[0].value[..], b"1");

    // etcdctl with --cacert --cert --key, against every member.
    for url in &endpoints {
        let (ok, out, err) = etcdctl_tls(url, Some(&pki.client), &["put", "tls/b", "2"]);
        assert!(ok, "etcdctl put through {url}: {out}{err}");
    }
    let (ok, out, err) = etcdctl_tls(&endpoints[0], Some(&pki.client), &["get", "tls/b", "--print-value-only"]);
    assert!(ok && out.trim() == "2", "{out}{err}");

    let url = &endpoints[0];
    // No client certificate: refused in the handshake, by raftkv's client and etcdctl.
    assert!(!status_answered(&dialer(None, &pki.ca.cert_file), url).await);
    let (ok, out, err) = etcdctl_tls(url, None, &["put", "tls/c", "3"]);
    assert!(!ok, "etcdctl without a certificate wrote: {out}");
    assert!(!err.is_empty());
    // A client certificate from another CA: refused.
    assert!(!status_answered(&dialer(Some(&pki.stranger), &pki.ca.cert_file), url).await);
    let (ok, out, _) = etcdctl_tls(url, Some(&pki.stranger), &["put", "tls/c", "3"]);
    assert!(!ok, "etcdctl with a stranger's certificate wrote: {out}");
    // Plain text on the TLS port: gRPC and HTTP alike get nothing.
    let plain = url.replace("https://", "http://");
    assert!(!status_answered(&Dialer::default(), &plain).await);
    let health = ureq::get(&format!("{plain}/health")).call();
    assert!(health.is_err(), "plain HTTP answered on a TLS port");
    // The client port's HTTP side speaks TLS too (the same listener).
    let (ok, out, err) = etcdctl_tls(url, Some(&pki.client), &["endpoint", "health"]);
    assert!(ok && format!("{out}{err}").contains("is healthy"), "{out}{err}");

    // The peer port: the members' certificate is let in; a certificate of the
    // same CA with another common name, one from another CA, and none at all
    // are refused, so none of them can talk Raft to a member.
    let peer = &cluster.members[0].peer_url;
    assert!(peer_answered(&dialer(Some(&pki.member), &pki.ca.cert_file), peer).await);
    assert!(!peer_answered(&dialer(Some(&pki.client), &pki.ca.cert_file), peer).await);
    assert!(!peer_answered(&dialer(Some(&pki.stranger), &pki.ca.cert_file), peer).await);
    assert!(!peer_answered(&dialer(None, &pki.ca.cert_file), peer).await);
    assert!(!peer_answered(&Dialer::default(), &peer.replace("https://", "http://")).await);

    // Nothing refused changed anything.
    let (ok, out, err) = etcdctl_tls(url, Some(&pki.client), &["get", "tls/c"]);
    assert!(ok && out.is_empty(), "{out}{err}");
    cluster.kill(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_with_a_certificate_from_another_ca_cannot_join_or_disturb() {
    let pki = &*PKI;
    let mut cluster = Cluster::start_tls_partial(3, 2, &mutual_tls_flags(&pki.member));
    cluster.wait_leader(LIMIT).await;
    // The third member of --initial-cluster starts with a certificate from
    // a CA the others do not trust (and trusting only that CA): each side
    // refuses the other's connections in the handshake, so no Raft message
    // passes either way. It never hears of the leader, and the two go on.
    let flags: Vec<String> = mutual_tls_flags(&pki.stranger)
        .into_iter()
        .map(|f| if f == s(&pki.ca.cert_file) { s(&pki.dir.join("other-ca.pem")).to_string() } else { f })
        .collect();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    cluster.start_member_only_with(2, &flags);
    cluster.wait_log(2, "rejected peer connection", LIMIT).await;
    for i in 0..2 {
        cluster.wait_log(i, "rejected peer connection", LIMIT).await;
    }
    let mut client = Client::connect(&cluster.running_endpoints()[..2]).await.unwrap();
    for i in 0..20 {
        client.put(format!("k{i}"), "v").await.unwrap();
    }
    assert!(!cluster.log_of(2).contains("leader elected"), "the stranger heard from a leader:\n{}", cluster.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_are_reread_when_their_files_change() {
    let pki = &*PKI;
    // The member's own copy of its certificate, which the test then replaces.
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("member.pem");
    let key = dir.path().join("member-key.pem");
    std::fs::copy(&pki.member.cert_file, &cert).unwrap();
    std::fs::copy(&pki.member.key_file, &key).unwrap();
    let own = Issued { cert_file: cert.clone(), key_file: key.clone() };
    let mut cluster = start(1, &mutual_tls_flags(&own));
    cluster.wait_leader(LIMIT).await;
    let url = cluster.members[0].client_url.clone();
    let first = served_certificate(&url).await;
    assert_eq!(first, pem_der(&cert));

    // A new certificate for the same names from the same CA, written over
    // the old files (key first, as a rotation script would).
    let fresh = pki.ca.issue(dir.path(), "fresh", "member", &["127.0.0.1", "localhost"]).unwrap();
    std::fs::copy(&fresh.key_file, &key).unwrap();
    std::fs::copy(&fresh.cert_file, &cert).unwrap();
    let served = served_certificate(&url).await;
    assert_ne!(served, first, "the old certificate is still served");
    assert_eq!(served, pem_der(&cert));
    // And clients are still let in with it, through raftkv and etcdctl.
    let mut client = Client::connect(std::slice::from_ref(&url)).await.unwrap();
    client.put("rotated", "yes").await.unwrap();
    let (ok, out, err) = etcdctl_tls(&url, Some(&pki.client), &["get", "rotated", "--print-value-only"]);
    assert!(ok && out.trim() == "yes", "{out}{err}");
    cluster.kill(0);
}

/// The DER of the first certificate in a PEM file.
fn pem_der(path: &Path) -> Vec<u8> {
    raftkv::tls::load_certs(path).unwrap()[0].to_vec()
}

/// The certificate a TLS handshake with `url` is served.
async fn served_certificate(url: &str) -> Vec<u8> {
    let info = TlsInfo {
        cert_file: Some(PKI.client.cert_file.clone()),
        key_file: Some(PKI.client.key_file.clone()),
        trusted_ca_file: Some(PKI.ca.cert_file.clone()),
        ..TlsInfo::default()
    };
    let config: Arc<rustls::ClientConfig> = info.client_config().unwrap();
    let addr = url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// etcdctl 3.4 skips verification only when told to use TLS as well
/// (`--insecure-transport=false`), as etcd's auto-TLS documentation says.
const SKIP_VERIFY: &str = "--insecure-skip-tls-verify";
const INSECURE: &str = "--insecure-transport=false";

#[tokio::test(flavor = "multi_thread")]
async fn auto_tls_serves_self_signed_certificates_that_clients_do_not_verify() {
    let flags = ["--auto-tls", "--peer-auto-tls"].map(String::from);
    let mut cluster = start(3, &flags);
    let url = cluster.members[0].client_url.clone();
    let deadline = Instant::now() + LIMIT;
    loop {
        let (ok, out, err) = etcdctl(&url, &[SKIP_VERIFY, INSECURE, "--command-timeout", "3s", "put", "auto", "1"]);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "no write through auto TLS: {out}{err}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for m in &cluster.members {
        assert!(m.data_dir.join("fixtures/client/cert.pem").exists());
        assert!(m.data_dir.join("fixtures/peer/cert.pem").exists());
        let (ok, out, err) = etcdctl(&m.client_url, &[SKIP_VERIFY, INSECURE, "get", "auto", "--print-value-only"]);
        assert!(ok && out.trim() == "1", "{out}{err}");
    }
    // Verifying against a CA fails: the certificate is self-signed.
    let (ok, _, _) = etcdctl_tls(&url, None, &["get", "auto"]);
    assert!(!ok);
    cluster.kill(0);
}

/// Python's etcd3 (grpcio, which requires ALPN `h2`) over mutual TLS.
#[tokio::test(flavor = "multi_thread")]
async fn python_etcd3_connects_over_mutual_tls() {
    let pki = &*PKI;
    let mut cluster = start(1, &mutual_tls_flags(&pki.member));
    cluster.wait_leader(LIMIT).await;
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python");
    let hostport = cluster.members[0].client_url.trim_start_matches("https://").to_string();
    let out = std::process::Command::new(clients.join(".venv/bin/python"))
        .arg(clients.join("tls.py"))
        .args([&hostport, s(&pki.ca.cert_file), s(&pki.client.cert_file), s(&pki.client.key_file)])
        .output()
        .expect("the Python client (scripts/install-deps)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.ends_with("all passed\n"), "{stdout}\n{stderr}\n{}", cluster.logs());
    cluster.kill(0);
}

/// With --client-cert-auth and auth enabled, a client certificate's common
/// name is its user when it sends no token (etcd's rule); etcdctl takes
/// --user over TLS too; and the etcd-client crate logs in over mutual TLS
/// and is refused a write outside its user's prefix.
#[tokio::test(flavor = "multi_thread")]
async fn over_mutual_tls_a_certificate_names_its_user_and_the_etcd_client_crate_logs_in() {
    let pki = &*PKI;
    let app = pki.ca.issue(&pki.dir, "app-client", "app", &["127.0.0.1", "localhost"]).unwrap();
    let mut flags = mutual_tls_flags(&pki.member);
    flags.extend(["--bcrypt-cost".to_string(), "4".to_string()]);
    let mut cluster = start(1, &flags);
    cluster.wait_leader(LIMIT).await;
    let endpoint = cluster.members[0].client_url.clone();
    let ctl = |cert: &Issued, args: &[&str]| {
        let (ok, out, err) = etcdctl_tls(&endpoint, Some(cert), args);
        (ok, out, error_line(&err))
    };
    for args in APP_USER_SETUP {
        let (ok, out, error) = ctl(&pki.client, args);
        assert!(ok, "etcdctl {args:?}: {out}{error}");
    }
    // The client certificate's CN is `root`: it administers without a password.
    let (ok, out, error) = ctl(&pki.client, &["user", "list"]);
    assert!(ok && out == "app\nroot\n", "{out}{error}");
    // CN `app`: its prefix only.
    let (ok, out, error) = ctl(&app, &["put", "app/by-cert", "1"]);
    assert!(ok, "{out}{error}");
    let (ok, _, error) = ctl(&app, &["put", "outside", "1"]);
    assert!(!ok && error == "Error: etcdserver: permission denied", "{error}");
    let (ok, _, error) = ctl(&app, &["user", "list"]);
    assert!(!ok && error == "Error: etcdserver: permission denied", "{error}");
    // A token wins over the certificate: app's certificate, root's password.
    let (ok, out, error) = ctl(&app, &["--user=root:rootpw", "put", "outside", "1"]);
    assert!(ok, "{out}{error}");
    let (ok, _, error) = ctl(&app, &["--user=app:wrong", "put", "app/x", "1"]);
    assert!(!ok && error.contains("authentication failed, invalid user ID or password"), "{error}");

    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(&pki.ca.cert_file).unwrap()))
        .identity(etcd_client::Identity::from_pem(
            std::fs::read(&app.cert_file).unwrap(),
            std::fs::read(&app.key_file).unwrap(),
        ));
    let options = etcd_client::ConnectOptions::new().with_tls(tls).with_user("app", "apppw");
    let mut client = etcd_client::Client::connect([endpoint.as_str()], Some(options)).await.unwrap();
    client.put("app/by-crate", "1", None).await.unwrap();
    let got = client.get("app/by-crate", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"1");
    let refused = client.put("outside", "2", None).await.unwrap_err().to_string();
    assert!(refused.contains("etcdserver: permission denied"), "{refused}");
    let mut wrong = etcd_client::ConnectOptions::new().with_user("app", "wrong");
    wrong = wrong.with_tls(
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(&pki.ca.cert_file).unwrap()))
            .identity(etcd_client::Identity::from_pem(
                std::fs::read(&app.cert_file).unwrap(),
                std::fs::read(&app.key_file).unwrap(),
            )),
    );
    let failed = etcd_client::Client::connect([endpoint.as_str()], Some(wrong)).await.err().map(|e| e.to_string());
    assert!(
        failed.as_deref().unwrap_or_default().contains("authentication failed, invalid user ID or password"),
        "{failed:?}"
    );
    // Off again, by root over TLS: the app certificate may write anywhere.
    let (ok, out, error) = ctl(&app, &["--user=root:rootpw", "auth", "disable"]);
    assert!(ok && out == "Authentication Disabled\n", "{out}{error}");
    let (ok, out, error) = ctl(&app, &["put", "outside", "3"]);
    assert!(ok, "{out}{error}");
    cluster.kill(0);
}
