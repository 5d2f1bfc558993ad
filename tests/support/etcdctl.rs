//! Debian's etcdctl 3.4 (API v3), run against one endpoint or a list.
//! `scripts/install-deps` installs it (Debian's `etcd-client`).

use std::process::Command;

/// etcdctl (API v3): (success, stdout, stderr).
pub fn etcdctl(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("etcdctl")
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl is on the PATH (scripts/install-deps installs Debian's etcd-client)");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

pub fn ok(endpoint: &str, args: &[&str]) -> String {
    let (success, out, err) = etcdctl(endpoint, args);
    assert!(success, "etcdctl {args:?} failed:\n{out}{err}");
    out
}

/// The last line of etcdctl's stderr: `Error: <the server's text>`.
pub fn fails(endpoint: &str, args: &[&str]) -> String {
    let (success, out, err) = etcdctl(endpoint, args);
    assert!(!success, "etcdctl {args:?} succeeded:\n{out}");
    err.lines().last().unwrap_or_default().to_string()
}

/// etcdctl's commands that make `root` (password `rootpw`) and `app`
/// (password `apppw`, who may read and write `app/` and nothing else), then
/// enable auth.
pub const APP_USER_SETUP: &[&[&str]] = &[
    &["user", "add", "root:rootpw"],
    &["user", "add", "app:apppw"],
    &["role", "add", "app-rw"],
    &["role", "grant-permission", "app-rw", "--prefix=true", "readwrite", "app/"],
    &["user", "grant-role", "app", "app-rw"],
    &["auth", "enable"],
];

/// etcdctl's error line (its retry warnings before it left out).
pub fn error_line(stderr: &str) -> String {
    stderr.lines().filter(|l| l.starts_with("Error:")).collect::<Vec<_>>().join("\n")
}
