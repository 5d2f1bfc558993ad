use super::*;

fn three() -> ServerArgs {
    ServerArgs {
        name: Some("b".into()),
        initial_cluster: Some("a=http://127.0.0.1:1,b=http://127.0.0.1:2,c=http://127.0.0.1:3".into()),
        initial_advertise_peer_urls: Some("http://127.0.0.1:2".into()),
        listen_peer_urls: Some("http://127.0.0.1:2".into()),
        ..ServerArgs::default()
    }
}

#[test]
fn defaults_are_etcds() {
    let s = ServerArgs::default().resolve().unwrap();
    assert_eq!(s.name, "default");
    let plain = |addr: &str| vec![Listen { addr: addr.parse().unwrap(), tls: false }];
    assert_eq!(s.client_addrs, plain("127.0.0.1:2379"));
    assert_eq!(s.peer_addrs, plain("127.0.0.1:2380"));
    assert!(s.client_tls.is_none() && s.peer_tls.is_none());
    assert_eq!((s.heartbeat, s.election_ticks, s.max_request_bytes), (Duration::from_millis(100), 10, 1572864));
    assert_eq!(s.members.len(), 1);
}

#[test]
fn https_urls_need_a_certificate_and_its_key() {
    let https_client = ServerArgs { listen_client_urls: Some("https://127.0.0.1:2379".into()), ..three() };
    let e = https_client.clone().resolve().unwrap_err();
    assert_eq!(e.field, "cert-file", "{e}");
    let e =
        ServerArgs { cert_file: Some("/nonexistent/cert.pem".into()), ..https_client.clone() }.resolve().unwrap_err();
    assert!(e.reason.contains("together"), "a certificate without its key: {e}");
    let e = ServerArgs {
        cert_file: Some("/nonexistent/cert.pem".into()),
        key_file: Some("/nonexistent/key.pem".into()),
        ..https_client
    }
    .resolve()
    .unwrap_err();
    assert!(e.field == "cert-file" && e.reason.contains("/nonexistent/cert.pem"), "{e}");
    let https_peer = ServerArgs {
        listen_peer_urls: Some("https://127.0.0.1:2".into()),
        initial_advertise_peer_urls: Some("https://127.0.0.1:2".into()),
        initial_cluster: Some("a=https://127.0.0.1:1,b=https://127.0.0.1:2,c=https://127.0.0.1:3".into()),
        ..three()
    };
    assert_eq!(https_peer.resolve().unwrap_err().field, "peer-cert-file");
    let e = ServerArgs { listen_client_urls: Some("unix:///x".into()), ..three() }.resolve().unwrap_err();
    assert_eq!(e.field, "listen-client-urls");
}

#[test]
fn tls_listeners_serve_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::tls::generate::Authority::create(dir.path(), "ca").unwrap();
    let cert = ca.issue(dir.path(), "m", "m", &["127.0.0.1"]).unwrap();
    let s = ServerArgs {
        listen_client_urls: Some("https://127.0.0.1:2379,http://127.0.0.1:2381".into()),
        cert_file: Some(cert.cert_file.clone()),
        key_file: Some(cert.key_file.clone()),
        trusted_ca_file: Some(ca.cert_file.clone()),
        client_cert_auth: true,
        ..three()
    }
    .resolve()
    .unwrap();
    assert_eq!(s.client_addrs.iter().map(|l| l.tls).collect::<Vec<_>>(), [true, false]);
    assert!(s.client_tls.is_some() && s.peer_tls.is_none());
    // A key that is not the certificate's is refused at start.
    let other = ca.issue(dir.path(), "other", "other", &["127.0.0.1"]).unwrap();
    let e = ServerArgs {
        listen_client_urls: Some("https://127.0.0.1:2379".into()),
        cert_file: Some(cert.cert_file),
        key_file: Some(other.key_file),
        ..three()
    }
    .resolve()
    .unwrap_err();
    assert_eq!(e.field, "cert-file", "{e}");
}

#[test]
fn auto_tls_makes_a_certificate_once_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let args = ServerArgs {
        data_dir: Some(dir.path().join("data")),
        listen_client_urls: Some("https://127.0.0.1:2379".into()),
        auto_tls: true,
        ..three()
    };
    args.clone().resolve().unwrap();
    let cert = dir.path().join("data/fixtures/client/cert.pem");
    let first = std::fs::read(&cert).unwrap();
    args.resolve().unwrap();
    assert_eq!(std::fs::read(&cert).unwrap(), first, "a restart serves the same certificate");
}

#[test]
fn every_member_derives_the_same_ids() {
    let b = three().resolve().unwrap();
    let a = ServerArgs {
        name: Some("a".into()),
        initial_advertise_peer_urls: Some("http://127.0.0.1:1".into()),
        ..three()
    }
    .resolve()
    .unwrap();
    assert_eq!(a.cluster_id, b.cluster_id);
    assert_eq!(a.members, b.members);
    assert_ne!(a.member_id, b.member_id);
    let other = ServerArgs { initial_cluster_token: Some("other".into()), ..three() }.resolve().unwrap();
    assert_ne!(other.cluster_id, b.cluster_id, "the token separates clusters");
}

#[test]
fn bad_settings_name_the_field() {
    let cases = [
        (ServerArgs { name: Some("zz".into()), ..three() }, "initial-cluster"),
        (ServerArgs { initial_cluster: Some("a=ftp://x".into()), ..three() }, "initial-cluster"),
        (ServerArgs { listen_client_urls: Some("127.0.0.1:2379".into()), ..three() }, "listen-client-urls"),
        (ServerArgs { initial_cluster_state: Some("old".into()), ..three() }, "initial-cluster-state"),
        (ServerArgs { election_timeout: Some(100), ..three() }, "election-timeout"),
        (
            ServerArgs { initial_advertise_peer_urls: Some("http://127.0.0.1:9".into()), ..three() },
            "initial-advertise-peer-urls",
        ),
    ];
    for (args, field) in cases {
        let err = args.resolve().unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}

#[test]
fn file_settings_are_overridden_by_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raftkv.toml");
    std::fs::write(&path, "name = \"a\"\nheartbeat-interval = 50\nelection-timeout = 500\n").unwrap();
    let file = ServerArgs::from_file(&path).unwrap();
    let s = ServerArgs { name: Some("b".into()), ..ServerArgs::default() }.over(file).resolve().unwrap();
    assert_eq!((s.name.as_str(), s.heartbeat, s.election_ticks), ("b", Duration::from_millis(50), 10));
    std::fs::write(&path, "nmae = \"typo\"\n").unwrap();
    let err = ServerArgs::from_file(&path).unwrap_err();
    assert!(err.to_string().contains("nmae"), "{err}");
}
