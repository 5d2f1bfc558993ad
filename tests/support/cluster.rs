//! Real `raftkv server` processes on loopback, for integration tests.
//!
//! Ports are picked free by binding port 0; every wait is bounded in count
//! and time; children are SIGKILLed and reaped when the cluster is dropped,
//! so a failing test leaves nothing running.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftkv::client::Client;

use super::proxy::Network;

pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    /// Each member's `--initial-cluster`: the same for all, unless peer
    /// links go through proxies, when member i reaches j through its own.
    initial_clusters: Vec<String>,
    /// Flags every member is started with, after the cluster's own.
    extra_args: Vec<String>,
    /// Each member's `--initial-cluster-state`: `existing` once added to a
    /// running cluster.
    states: Vec<&'static str>,
    /// Each member's `--join`, once it joins that way.
    join_urls: Vec<Option<String>>,
}

/// A port that is free now, taken below the kernel's ephemeral range
/// (32768 and up), where proxies and outgoing connections get theirs, and
/// never handed out twice by this process: between picking a port and the
/// member binding it, nothing else in the test run takes it.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = u64::from(std::process::id()) * 7919;
    for _ in 0..10_000 {
        let port = 12_000 + ((start + NEXT.fetch_add(1, Ordering::Relaxed) * 104_729) % 20_000) as u16;
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port found below 32000");
}

impl Cluster {
    /// Starts `n` members.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Starts `n` members, each also given `extra_args`.
    pub fn start_with(n: usize, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::new(n, extra_args);
        for i in 0..n {
            cluster.start_member(i);
        }
        cluster
    }

    /// Sets up `total` members and starts the first `running` as a cluster;
    /// the others wait to be added ([`Cluster::add_member`]).
    pub fn start_partial(total: usize, running: usize, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::new(total, extra_args);
        let initial = cluster.members[..running]
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        cluster.initial_clusters = vec![initial; total];
        for i in 0..running {
            cluster.start_member(i);
        }
        cluster
    }

    /// The client URLs of the members that run.
    pub fn running_endpoints(&self) -> Vec<String> {
        (0..self.members.len()).filter(|&j| self.is_running(j)).map(|j| self.members[j].client_url.clone()).collect()
    }

    /// Adds member `i` to the running cluster (`MemberAdd` through a running
    /// member), so that starting it joins. Returns its id.
    pub async fn add_member(&mut self, i: usize, learner: bool) -> u64 {
        let running = self.running_endpoints();
        let mut client = Client::connect(&running).await.unwrap();
        let (added, list) = client
            .member_add(vec![self.members[i].peer_url.clone()], learner)
            .await
            .unwrap_or_else(|e| panic!("adding {} failed: {e}\n{}", self.members[i].name, self.logs()));
        let name_of = |url: &str| self.members.iter().find(|m| m.peer_url == url).map(|m| m.name.clone());
        self.initial_clusters[i] = list
            .members
            .iter()
            .filter_map(|m| {
                let url = m.peer_ur_ls.first()?;
                Some(format!("{}={url}", name_of(url)?))
            })
            .collect::<Vec<_>>()
            .join(",");
        self.states[i] = "existing";
        added.id
    }

    /// Gives member `i` a new peer URL (a free port) for its next start,
    /// as after `member update`; returns it.
    pub fn move_peer_url(&mut self, i: usize) -> String {
        let url = format!("http://127.0.0.1:{}", free_port());
        let old = std::mem::replace(&mut self.members[i].peer_url, url.clone());
        let name = &self.members[i].name;
        for list in &mut self.initial_clusters {
            *list = list.replace(&format!("{name}={old}"), &format!("{name}={url}"));
        }
        url
    }

    /// Starts member `i` with `--join` through the running members' client
    /// URLs (it adds itself, catches up and promotes itself).
    pub fn start_joining(&mut self, i: usize) {
        let running = self.running_endpoints();
        self.states[i] = "existing";
        self.join_urls[i] = Some(running.join(","));
        self.start_member(i);
    }

    /// Member `i`'s id, from the member list of a running member.
    pub async fn member_id(&self, i: usize) -> u64 {
        let running = self.running_endpoints();
        let list = Client::connect(&running).await.unwrap().member_list().await.unwrap();
        let url = &self.members[i].peer_url;
        list.members.iter().find(|m| m.peer_ur_ls.contains(url)).unwrap_or_else(|| panic!("{url} is no member")).id
    }

    /// Starts `n` members whose peer links all cross fault-injecting
    /// proxies, one per direction.
    pub async fn start_proxied(n: usize, extra_args: &[&str]) -> (Cluster, Network) {
        let mut cluster = Cluster::new(n, extra_args);
        let peers: Vec<SocketAddr> =
            cluster.members.iter().map(|m| m.peer_url.trim_start_matches("http://").parse().unwrap()).collect();
        let network = Network::start(&peers).await;
        for i in 0..n {
            cluster.initial_clusters[i] = (0..n)
                .map(|j| {
                    let url = if i == j {
                        cluster.members[j].peer_url.clone()
                    } else {
                        format!("http://{}", network.addr(i, j))
                    };
                    format!("{}={url}", cluster.members[j].name)
                })
                .collect::<Vec<_>>()
                .join(",");
        }
        for i in 0..n {
            cluster.start_member(i);
        }
        (cluster, network)
    }

    /// Starts `n` members serving `https://` client and peer URLs, each
    /// given `extra_args` (the TLS flags).
    pub fn start_tls(n: usize, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::with_scheme(n, extra_args, "https");
        for i in 0..n {
            cluster.start_member(i);
        }
        cluster
    }

    /// `total` members serving `https://` URLs, all in --initial-cluster,
    /// the first `running` started.
    pub fn start_tls_partial(total: usize, running: usize, extra_args: &[String]) -> Cluster {
        let extra_args: Vec<&str> = extra_args.iter().map(String::as_str).collect();
        let mut cluster = Cluster::with_scheme(total, &extra_args, "https");
        for i in 0..running {
            cluster.start_member(i);
        }
        cluster
    }

    /// Starts member `i` with `args` instead of the flags the others have.
    pub fn start_member_only_with(&mut self, i: usize, args: &[&str]) {
        let shared = std::mem::take(&mut self.extra_args);
        self.start_member_with(i, args);
        self.extra_args = shared;
    }

    /// Members with ports and directories, none started.
    fn new(n: usize, extra_args: &[&str]) -> Cluster {
        Cluster::with_scheme(n, extra_args, "http")
    }

    fn with_scheme(n: usize, extra_args: &[&str], scheme: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut members = Vec::new();
        for i in 1..=n {
            let name = format!("m{i}");
            members.push(Member {
                client_url: format!("{scheme}://127.0.0.1:{}", free_port()),
                peer_url: format!("{scheme}://127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(&name),
                log: dir.path().join(format!("{name}.log")),
                name,
                child: None,
            });
        }
        let initial_cluster =
            members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
        let extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        let (states, join_urls) = (vec!["new"; n], vec![None; n]);
        Cluster { dir, members, initial_clusters: vec![initial_cluster; n], extra_args, states, join_urls }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Members set up (ports, directories, flags) but none started.
    pub fn unstarted(n: usize) -> Cluster {
        Cluster::new(n, &[])
    }

    /// The flags that say who member `i` is in its cluster (what
    /// `raftkv snapshot restore` takes too).
    pub fn identity_flags(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        [
            "--name",
            &m.name,
            "--data-dir",
            m.data_dir.to_str().unwrap(),
            "--initial-advertise-peer-urls",
            &m.peer_url,
            "--initial-cluster",
            &self.initial_clusters[i],
            "--initial-cluster-token",
            "test",
        ]
        .map(String::from)
        .to_vec()
    }

    pub fn start_member(&mut self, i: usize) {
        self.start_member_with(i, &[]);
    }

    /// Starts member `i` with `once` added to its flags for this start only.
    pub fn start_member_with(&mut self, i: usize, once: &[&str]) {
        let identity = self.identity_flags(i);
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "{} already runs", m.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_raftkv"))
            .arg("server")
            .args(&identity)
            .args(["--listen-client-urls", &m.client_url, "--listen-peer-urls", &m.peer_url])
            .args(["--initial-cluster-state", self.states[i]])
            .args(self.join_urls[i].iter().flat_map(|urls| ["--join", urls.as_str()]))
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(&self.extra_args)
            .args(once)
            .env("RAFTKV_LOG", std::env::var("RAFTKV_TEST_SERVER_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn raftkv server");
        m.child = Some(child);
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.members[i].child.as_ref().expect("member runs").id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status().expect("run kill");
        assert!(sent.success(), "kill {signal} {pid} failed");
    }

    /// A member that says it leads (the one with the highest term if two
    /// do, as across a partition), without waiting for the others to agree.
    pub async fn wait_self_leader(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let mut best: Option<(u64, usize)> = None;
            for (i, m) in self.members.iter().enumerate().filter(|(i, _)| self.is_running(*i)) {
                let Ok(Ok(status)) =
                    tokio::time::timeout(Duration::from_millis(500), Client::status_of(&m.client_url)).await
                else {
                    continue;
                };
                let header = status.header.unwrap_or_default();
                if status.leader == header.member_id && best.is_none_or(|(term, _)| header.raft_term > term) {
                    best = Some((header.raft_term, i));
                }
            }
            if let Some((_, i)) = best {
                return i;
            }
            assert!(Instant::now() < deadline, "no member leads within {limit:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits (at most 10 s) for the member to exit by itself.
    pub fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let mut child = self.members[i].child.take().expect("member runs");
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not stop within 10 s of SIGTERM\n{}", self.members[i].name, self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most `limit`) for a member to exit by itself.
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.members[i].child.as_mut().expect("member runs");
            if let Some(status) = child.try_wait().unwrap() {
                self.members[i].child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "{} still runs after {limit:?}\n{}", self.members[i].name, self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The member's exit status if it has exited by itself, without waiting.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let status = self.members[i].child.as_mut()?.try_wait().unwrap()?;
        self.members[i].child = None;
        Some(status)
    }

    /// Waits (at most `limit`) until a member's log contains `text`.
    pub async fn wait_log(&self, i: usize, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log_of(i).contains(text) {
            assert!(Instant::now() < deadline, "`{text}` not logged within {limit:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_of(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// The index of the member that leads, once every running member agrees.
    pub async fn wait_leader(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(leader) = self.agreed_leader().await {
                return leader;
            }
            assert!(Instant::now() < deadline, "no agreed leader within {limit:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn agreed_leader(&self) -> Option<usize> {
        let mut leader_id = None;
        let mut ids = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            if !self.is_running(i) {
                ids.push(None);
                continue;
            }
            let status = Client::status_of(&m.client_url).await.ok()?;
            let me = status.header.unwrap_or_default().member_id;
            ids.push(Some(me));
            if status.leader == 0 || leader_id.is_some_and(|l| l != status.leader) {
                return None;
            }
            leader_id = Some(status.leader);
        }
        ids.iter().position(|id| *id == leader_id)
    }

    pub fn logs(&self) -> String {
        // RAFTKV_TEST_LOG_LINES shows more of each member's log on failure.
        let lines = std::env::var("RAFTKV_TEST_LOG_LINES").ok().and_then(|n| n.parse().ok()).unwrap_or(30);
        self.members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.name, tail(&m.log, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
