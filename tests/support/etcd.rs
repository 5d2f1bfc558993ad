//! A real etcd 3.4 server on loopback, to run the same requests against
//! etcd and raftkv and compare the answers.
//!
//! The binary is `$RAFTKV_ETCD`, else `etcd` on the PATH, else the one
//! `scripts/install-deps` unpacks under `~/.cache/raftkv-deps` (Debian's
//! `etcd-server`, unpacked rather than installed so no system service
//! starts). The server is SIGKILLed and reaped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::free_port;

pub struct Etcd {
    pub client_url: String,
    _dir: tempfile::TempDir,
    child: Child,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RAFTKV_ETCD") {
        return path.into();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file());
    let unpacked =
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/raftkv-deps/etcd-server/usr/bin/etcd"));
    on_path
        .or(unpacked.filter(|p| p.is_file()))
        .expect("etcd 3.4 not found: run scripts/install-deps (or set RAFTKV_ETCD)")
}

impl Etcd {
    /// Starts a one-member etcd and waits (at most 20 s) until it answers.
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(binary())
            .args(["--name", "default", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .arg("--initial-cluster")
            .arg(format!("default={peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let etcd = Etcd { client_url: client, _dir: dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        let health = format!("{}/health", etcd.client_url);
        while ureq::get(&health).call().map(|r| r.status() != 200).unwrap_or(true) {
            assert!(Instant::now() < deadline, "etcd did not become healthy within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
