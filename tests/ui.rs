//! The live cluster page in a real browser: headless Chromium loads `/` of
//! a running cluster, runs its script, and the rendered page must show
//! every member by name, the leader mark on the leader, and a commit index
//! above zero; after the leader is killed, a second load shows the new
//! leader and the dead member as unreachable.
//!
//! Needs Chromium (`scripts/install-deps` installs Debian's `chromium`).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raftkv::client::Client;
use support::cluster::Cluster;

const LIMIT: Duration = Duration::from_secs(15);

fn chromium() -> &'static str {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())
        .expect("Chromium not found: run scripts/install-deps")
}

/// The page at `url` as Chromium renders it once its script has run
/// (a bounded virtual-time budget; the process is killed after 60 s).
fn rendered(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=4000", "--dump-dom", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut dom = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut dom).unwrap();
    dom
}

/// The rendered table row of the member `name`.
fn row<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom.find(&format!(r#"data-member="{name}""#)).unwrap_or_else(|| panic!("no row for {name}:\n{dom}"));
    let end = dom[start..].find("</tr>").expect("a closed row");
    &dom[start..start + end]
}

/// The number in the cell of class `class` in a row.
fn figure(row: &str, class: &str) -> Option<u64> {
    let at = row.find(&format!(r#"class="{class}""#))?;
    let text = &row[at..];
    let open = text.find('>')? + 1;
    let close = text[open..].find('<')?;
    text[open..open + close].trim().parse().ok()
}

/// Loads the page until it shows `leader` leading (the page refreshes
/// every second; a member that just saw an election may lag a refresh).
fn page_with_leader(url: &str, leader: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let dom = rendered(url);
        if dom.contains(r#"data-member=""#) && row(&dom, leader).contains("★ leader") {
            return dom;
        }
        assert!(Instant::now() < deadline, "the page never showed {leader} leading:\n{dom}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_page_shows_members_the_leader_and_a_new_leader_after_a_kill() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_leader(LIMIT).await;
    let mut client = Client::connect(&cluster.endpoints()).await.unwrap();
    for i in 0..5 {
        client.put(format!("ui/{i}"), "v").await.unwrap();
    }
    drop(client);
    let names: Vec<String> = cluster.members.iter().map(|m| m.name.clone()).collect();
    let url = format!("{}/", cluster.members[(leader + 1) % 3].client_url);
    let leader_name = names[leader].clone();
    let dom = tokio::task::spawn_blocking(move || page_with_leader(&url, &leader_name)).await.unwrap();
    for name in &names {
        let row = row(&dom, name);
        assert!(figure(row, "commit").is_some_and(|c| c > 0), "{name} shows no commit index: {row}");
        assert_eq!(row.contains("★ leader"), *name == names[leader], "{row}");
    }

    cluster.kill(leader);
    let next = cluster.wait_leader(LIMIT).await;
    let url = format!("{}/ui", cluster.members[next].client_url);
    let next_name = names[next].clone();
    let dom = tokio::task::spawn_blocking(move || page_with_leader(&url, &next_name)).await.unwrap();
    let dead = row(&dom, &names[leader]);
    assert!(dead.contains("unreachable") && !dead.contains("★ leader"), "{dead}");
}
