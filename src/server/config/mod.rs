//! Server settings: etcd's flag names, from flags, `RAFTKV_*` environment
//! variables or a TOML file (in that order of precedence), validated into the
//! [`Settings`] the server runs with. Every error names the setting.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::auth::AuthSettings;
use super::auth::tokens::TokenKind;
use super::compactor::{AutoCompaction, parse_duration};
use crate::tls::{Dialer, TlsInfo};
use tls::Side;

/// Settings as given: every field optional, so that flags, environment and
/// file can be layered.
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerArgs {
    /// Human-readable name of this member; must appear in --initial-cluster.
    #[arg(long, env = "RAFTKV_NAME")]
    pub name: Option<String>,
    /// Where this member keeps its data (created if missing).
    #[arg(long, env = "RAFTKV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated URLs to serve clients (gRPC and HTTP) on.
    #[arg(long, env = "RAFTKV_LISTEN_CLIENT_URLS")]
    pub listen_client_urls: Option<String>,
    /// Comma-separated URLs to serve only `/metrics` and `/health` on (etcd's
    /// flag), for a monitoring network apart from the clients'.
    #[arg(long, env = "RAFTKV_LISTEN_METRICS_URLS")]
    pub listen_metrics_urls: Option<String>,
    /// Comma-separated client URLs this member tells others about.
    #[arg(long, env = "RAFTKV_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,
    /// Comma-separated URLs to serve peers on.
    #[arg(long, env = "RAFTKV_LISTEN_PEER_URLS")]
    pub listen_peer_urls: Option<String>,
    /// Comma-separated peer URLs of this member, as the others reach it.
    #[arg(long, env = "RAFTKV_INITIAL_ADVERTISE_PEER_URLS")]
    pub initial_advertise_peer_urls: Option<String>,
    /// Every initial member as name=peer-url, comma-separated.
    #[arg(long, env = "RAFTKV_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// "new": this member bootstraps a new cluster with --initial-cluster.
    /// "existing": this member was added to a running cluster (`member add`)
    /// and joins it, finding it through --initial-cluster's peer URLs.
    #[arg(long, env = "RAFTKV_INITIAL_CLUSTER_STATE")]
    pub initial_cluster_state: Option<String>,
    /// A token unique to this cluster; it seeds the cluster and member ids.
    #[arg(long, env = "RAFTKV_INITIAL_CLUSTER_TOKEN")]
    pub initial_cluster_token: Option<String>,
    /// Milliseconds between heartbeats (one Raft tick).
    #[arg(long, env = "RAFTKV_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<u64>,
    /// Milliseconds without a leader before a member campaigns.
    #[arg(long, env = "RAFTKV_ELECTION_TIMEOUT")]
    pub election_timeout: Option<u64>,
    /// Largest client request accepted, in bytes.
    #[arg(long, env = "RAFTKV_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Take a snapshot of the key-value map every this many applied entries
    /// (default 10000), then compact the log behind it. A map of more than 4×
    /// this many keys waits for a quarter as many entries as it has keys, so
    /// snapshots write at most 4 keys per applied entry.
    #[arg(long, env = "RAFTKV_SNAPSHOT_ENTRIES")]
    pub snapshot_entries: Option<u64>,
    /// Entries kept in the log behind the newest snapshot (default 5000), so
    /// a follower a little behind catches up from the log, not a snapshot.
    #[arg(long, env = "RAFTKV_SNAPSHOT_CATCHUP_ENTRIES")]
    pub snapshot_catchup_entries: Option<u64>,
    /// `periodic` (keep --auto-compaction-retention worth of time) or
    /// `revision` (keep that many revisions), as etcd. Default periodic.
    #[arg(long, env = "RAFTKV_AUTO_COMPACTION_MODE")]
    pub auto_compaction_mode: Option<String>,
    /// History to keep: a duration such as 30m or 1h (a bare number is
    /// hours) in periodic mode, a number of revisions in revision mode. 0,
    /// the default as in etcd, keeps every revision until a Compact.
    #[arg(long, env = "RAFTKV_AUTO_COMPACTION_RETENTION")]
    pub auto_compaction_retention: Option<String>,
    /// How often a quiet watcher that asked for progress notifications gets
    /// one (a duration such as 10m or 5s; default 10m, as etcd).
    #[arg(long, env = "RAFTKV_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL")]
    pub experimental_watch_progress_notify_interval: Option<String>,
    /// Join a running cluster through any of these client URLs (comma-
    /// separated): this member adds itself as a learner, catches up, and
    /// promotes itself once in sync. Running the same command again after a
    /// crash resumes; it never adds a second member. --initial-cluster is
    /// not needed (and not used).
    #[arg(long, env = "RAFTKV_JOIN")]
    pub join: Option<String>,
    /// Most learners the cluster may have at once (default 1, as etcd).
    #[arg(long, env = "RAFTKV_MAX_LEARNERS")]
    pub max_learners: Option<usize>,
    /// Restart this surviving member as a one-member cluster holding all it
    /// had committed, when a quorum is lost for good; grow it back with
    /// `member add`, and start without this flag from then on.
    #[arg(long, env = "RAFTKV_FORCE_NEW_CLUSTER")]
    pub force_new_cluster: bool,
    /// Raise the NOSPACE alarm, refusing writes that add data until it is
    /// disarmed, when a write would take the stored records past this many
    /// bytes. 0 (the default) means etcd's default of 2 GiB; a negative
    /// value means no quota.
    #[arg(long, env = "RAFTKV_QUOTA_BACKEND_BYTES", allow_hyphen_values = true)]
    pub quota_backend_bytes: Option<i64>,
    /// How often the leader records the remaining TTL of leases longer than
    /// this in the log, so a new leader neither expires a lease early nor
    /// gives it a fresh TTL (a duration such as 5s; default 5s). After a
    /// leader change, a lease nobody renews expires at most TTL + this
    /// interval + an election timeout after its last renewal.
    #[arg(long, env = "RAFTKV_LEASE_CHECKPOINT_INTERVAL")]
    pub lease_checkpoint_interval: Option<String>,
    /// The client port's TLS certificate (PEM), for `https://` client URLs.
    /// Re-read when the file changes.
    #[arg(long, env = "RAFTKV_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// The key of --cert-file (PEM).
    #[arg(long, env = "RAFTKV_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// The CA (PEM bundle) client certificates must be signed by.
    #[arg(long, env = "RAFTKV_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by --trusted-ca-file.
    #[arg(long, env = "RAFTKV_CLIENT_CERT_AUTH")]
    pub client_cert_auth: bool,
    /// Serve `https://` client URLs with a self-signed certificate made in
    /// the data directory (clients cannot verify it).
    #[arg(long, env = "RAFTKV_AUTO_TLS")]
    pub auto_tls: bool,
    /// The peer port's TLS certificate (PEM), for `https://` peer URLs; also
    /// what this member presents to its peers.
    #[arg(long, env = "RAFTKV_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// The key of --peer-cert-file (PEM).
    #[arg(long, env = "RAFTKV_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// The CA (PEM bundle) peers' certificates must be signed by.
    #[arg(long, env = "RAFTKV_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Refuse peers without a certificate signed by --peer-trusted-ca-file.
    #[arg(long, env = "RAFTKV_PEER_CLIENT_CERT_AUTH")]
    pub peer_client_cert_auth: bool,
    /// Serve `https://` peer URLs with a self-signed certificate made in the
    /// data directory; peers do not verify each other's.
    #[arg(long, env = "RAFTKV_PEER_AUTO_TLS")]
    pub peer_auto_tls: bool,
    /// Accept only peer certificates with this common name.
    #[arg(long, env = "RAFTKV_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// Auth tokens: `simple` (the default; valid on the member that issued
    /// them) or `jwt,pub-key=F,priv-key=F,sign-method=RS256[,ttl=5m]`.
    #[arg(long, env = "RAFTKV_AUTH_TOKEN")]
    pub auth_token: Option<String>,
    /// Seconds a simple token lives after its last use (default 300).
    #[arg(long, env = "RAFTKV_AUTH_TOKEN_TTL")]
    pub auth_token_ttl: Option<u64>,
    /// bcrypt's cost for the password hashes of new users (4 to 31;
    /// default 10, as etcd's).
    #[arg(long, env = "RAFTKV_BCRYPT_COST")]
    pub bcrypt_cost: Option<u32>,
}

/// etcd's default space quota (`DefaultQuotaBytes`).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{field}`: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { field, reason: reason.into() }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_url: String,
}

/// An address to listen on, and whether its URL was `https://`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    pub tls: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster of --initial-cluster's members.
    New,
    /// Join a running cluster this member was added to.
    Existing,
}

/// What the server runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub name: String,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    /// This member's peer URLs, as the others reach it.
    pub advertise_peer_urls: Vec<String>,
    pub max_learners: usize,
    pub force_new_cluster: bool,
    /// `--join`: client URLs of the cluster to join (empty: none).
    pub join: Vec<String>,
    pub data_dir: PathBuf,
    pub client_addrs: Vec<Listen>,
    /// Where `/metrics` and `/health` are also served (`--listen-metrics-urls`).
    pub metrics_addrs: Vec<Listen>,
    pub advertise_client_urls: Vec<String>,
    pub peer_addrs: Vec<Listen>,
    /// What `https://` client and metrics URLs are served with.
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// What `https://` peer URLs are served with.
    pub peer_tls: Option<Arc<rustls::ServerConfig>>,
    /// How this member connects to its peers' `https://` URLs.
    pub peer_dialer: Dialer,
    /// How this member connects to other members' `https://` client URLs
    /// (its cluster page, `--join`): as a client of the client port.
    pub client_dialer: Dialer,
    /// --initial-cluster's members: a new cluster's first table, or (joining)
    /// where to find the cluster.
    pub members: Vec<Member>,
    /// This member's and its cluster's ids. A joining member learns them
    /// from the cluster; until then they are derived from the settings.
    pub member_id: u64,
    pub cluster_id: u64,
    pub heartbeat: Duration,
    pub election_ticks: u32,
    pub max_request_bytes: usize,
    pub snapshot_entries: u64,
    pub snapshot_catchup_entries: u64,
    pub auto_compaction: AutoCompaction,
    pub watch_progress_notify_interval: Duration,
    /// The data size past which writes raise NOSPACE (None: no quota).
    pub quota_bytes: Option<u64>,
    pub lease_checkpoint_interval: Duration,
    /// Whether clients must present a certificate (its common name is then
    /// a user, when a request has no token).
    pub client_cert_auth: bool,
    pub auth: AuthSettings,
}

impl ServerArgs {
    /// Reads a TOML file of the same settings (kebab-case keys).
    pub fn from_file(path: &std::path::Path) -> Result<ServerArgs, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| invalid("config", format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| invalid("config", format!("{}: {e}", path.display())))
    }

    /// Each setting given here wins over the one in `file`.
    pub fn over(self, file: ServerArgs) -> ServerArgs {
        ServerArgs {
            name: self.name.or(file.name),
            data_dir: self.data_dir.or(file.data_dir),
            listen_client_urls: self.listen_client_urls.or(file.listen_client_urls),
            listen_metrics_urls: self.listen_metrics_urls.or(file.listen_metrics_urls),
            advertise_client_urls: self.advertise_client_urls.or(file.advertise_client_urls),
            listen_peer_urls: self.listen_peer_urls.or(file.listen_peer_urls),
            initial_advertise_peer_urls: self.initial_advertise_peer_urls.or(file.initial_advertise_peer_urls),
            initial_cluster: self.initial_cluster.or(file.initial_cluster),
            initial_cluster_state: self.initial_cluster_state.or(file.initial_cluster_state),
            initial_cluster_token: self.initial_cluster_token.or(file.initial_cluster_token),
            heartbeat_interval: self.heartbeat_interval.or(file.heartbeat_interval),
            election_timeout: self.election_timeout.or(file.election_timeout),
            max_request_bytes: self.max_request_bytes.or(file.max_request_bytes),
            snapshot_entries: self.snapshot_entries.or(file.snapshot_entries),
            snapshot_catchup_entries: self.snapshot_catchup_entries.or(file.snapshot_catchup_entries),
            auto_compaction_mode: self.auto_compaction_mode.or(file.auto_compaction_mode),
            auto_compaction_retention: self.auto_compaction_retention.or(file.auto_compaction_retention),
            experimental_watch_progress_notify_interval: self
                .experimental_watch_progress_notify_interval
                .or(file.experimental_watch_progress_notify_interval),
            max_learners: self.max_learners.or(file.max_learners),
            join: self.join.or(file.join),
            force_new_cluster: self.force_new_cluster || file.force_new_cluster,
            quota_backend_bytes: self.quota_backend_bytes.or(file.quota_backend_bytes),
            lease_checkpoint_interval: self.lease_checkpoint_interval.or(file.lease_checkpoint_interval),
            cert_file: self.cert_file.or(file.cert_file),
            key_file: self.key_file.or(file.key_file),
            trusted_ca_file: self.trusted_ca_file.or(file.trusted_ca_file),
            client_cert_auth: self.client_cert_auth || file.client_cert_auth,
            auto_tls: self.auto_tls || file.auto_tls,
            peer_cert_file: self.peer_cert_file.or(file.peer_cert_file),
            peer_key_file: self.peer_key_file.or(file.peer_key_file),
            peer_trusted_ca_file: self.peer_trusted_ca_file.or(file.peer_trusted_ca_file),
            peer_client_cert_auth: self.peer_client_cert_auth || file.peer_client_cert_auth,
            peer_auto_tls: self.peer_auto_tls || file.peer_auto_tls,
            peer_cert_allowed_cn: self.peer_cert_allowed_cn.or(file.peer_cert_allowed_cn),
            auth_token: self.auth_token.or(file.auth_token),
            auth_token_ttl: self.auth_token_ttl.or(file.auth_token_ttl),
            bcrypt_cost: self.bcrypt_cost.or(file.bcrypt_cost),
        }
    }

    /// Applies etcd's defaults and checks everything.
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let name = self.name.unwrap_or_else(|| "default".into());
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.raftkv")));
        let client_urls = split(self.listen_client_urls.as_deref().unwrap_or("http://127.0.0.1:2379"));
        let client_addrs = socket_addrs("listen-client-urls", &client_urls)?;
        let metrics_addrs = match self.listen_metrics_urls.as_deref() {
            Some(urls) => socket_addrs("listen-metrics-urls", &split(urls))?,
            None => Vec::new(),
        };
        let advertise_client_urls =
            self.advertise_client_urls.map(|s| split(&s)).unwrap_or_else(|| client_urls.clone());
        let peer_urls = split(self.listen_peer_urls.as_deref().unwrap_or("http://127.0.0.1:2380"));
        let peer_addrs = socket_addrs("listen-peer-urls", &peer_urls)?;
        let advertise_peer = self.initial_advertise_peer_urls.map(|s| split(&s)).unwrap_or_else(|| peer_urls.clone());
        if self.join.is_some() && self.initial_cluster_state.as_deref() == Some("new") {
            return Err(invalid(
                "join",
                "joins a running cluster: it cannot be combined with --initial-cluster-state new",
            ));
        }
        let default_state = if self.join.is_some() { "existing" } else { "new" };
        let initial_cluster_state = match self.initial_cluster_state.as_deref().unwrap_or(default_state) {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => {
                return Err(invalid("initial-cluster-state", format!("`{other}` is neither `new` nor `existing`")));
            }
        };
        let token = self.initial_cluster_token.unwrap_or_else(|| "raftkv-cluster".into());
        // A member joining with --join learns the cluster from it.
        let initial_cluster = match (&self.join, self.initial_cluster) {
            (Some(_), _) | (None, None) => format!("{name}={}", advertise_peer[0]),
            (None, Some(list)) => list,
        };
        let members = parse_initial_cluster(&initial_cluster, &token)?;
        let me = members.iter().find(|m| m.name == name).ok_or_else(|| {
            invalid("initial-cluster", format!("this member's name `{name}` is not in `{initial_cluster}`"))
        })?;
        if !advertise_peer.contains(&me.peer_url) {
            return Err(invalid(
                "initial-advertise-peer-urls",
                format!("{advertise_peer:?} does not contain {}, this member's URL in --initial-cluster", me.peer_url),
            ));
        }
        let heartbeat_ms = self.heartbeat_interval.unwrap_or(100);
        let election_ms = self.election_timeout.unwrap_or(1000);
        if heartbeat_ms == 0 {
            return Err(invalid("heartbeat-interval", "must be at least 1 ms"));
        }
        if election_ms < 5 * heartbeat_ms {
            return Err(invalid(
                "election-timeout",
                format!("{election_ms} ms must be at least 5 heartbeat intervals ({} ms)", 5 * heartbeat_ms),
            ));
        }
        let max_request_bytes = self.max_request_bytes.unwrap_or(1536 * 1024);
        if max_request_bytes == 0 {
            return Err(invalid("max-request-bytes", "must be positive"));
        }
        let snapshot_entries = self.snapshot_entries.unwrap_or(10_000);
        if snapshot_entries == 0 {
            return Err(invalid("snapshot-entries", "must be positive"));
        }
        let auto_compaction = AutoCompaction::parse(
            self.auto_compaction_mode.as_deref().unwrap_or("periodic"),
            self.auto_compaction_retention.as_deref().unwrap_or("0"),
        )
        .map_err(|reason| invalid("auto-compaction", reason))?;
        let progress = self.experimental_watch_progress_notify_interval.unwrap_or_else(|| "10m".into());
        let watch_progress_notify_interval = parse_duration(&progress).filter(|d| !d.is_zero()).ok_or_else(|| {
            invalid(
                "experimental-watch-progress-notify-interval",
                format!("`{progress}` is not a duration such as 10m or 5s"),
            )
        })?;
        let checkpoints = self.lease_checkpoint_interval.unwrap_or_else(|| "5s".into());
        let lease_checkpoint_interval = parse_duration(&checkpoints).filter(|d| !d.is_zero()).ok_or_else(|| {
            invalid("lease-checkpoint-interval", format!("`{checkpoints}` is not a duration such as 5s or 1m"))
        })?;
        let auth = AuthSettings {
            token: TokenKind::parse(self.auth_token.as_deref().unwrap_or("simple"))
                .map_err(|reason| invalid("auth-token", reason))?,
            simple_ttl: match self.auth_token_ttl {
                Some(0) => return Err(invalid("auth-token-ttl", "must be at least 1 second")),
                Some(seconds) => Duration::from_secs(seconds),
                None => AuthSettings::default().simple_ttl,
            },
            bcrypt_cost: match self.bcrypt_cost {
                Some(cost) if !(4..=31).contains(&cost) => {
                    return Err(invalid("bcrypt-cost", format!("{cost} is not between 4 and 31")));
                }
                Some(cost) => cost,
                None => AuthSettings::default().bcrypt_cost,
            },
        };
        let client_cert_auth = self.client_cert_auth;
        let client_side = Side {
            name: "client",
            cert_flag: "cert-file",
            cert_file: self.cert_file,
            key_file: self.key_file,
            trusted_ca_file: self.trusted_ca_file,
            client_cert_auth: self.client_cert_auth,
            auto_tls: self.auto_tls,
            allowed_cn: None,
        };
        let peer_side = Side {
            name: "peer",
            cert_flag: "peer-cert-file",
            cert_file: self.peer_cert_file,
            key_file: self.peer_key_file,
            trusted_ca_file: self.peer_trusted_ca_file,
            client_cert_auth: self.peer_client_cert_auth,
            auto_tls: self.peer_auto_tls,
            allowed_cn: self.peer_cert_allowed_cn,
        };
        let client_listens: Vec<Listen> = client_addrs.iter().chain(&metrics_addrs).copied().collect();
        let (client_tls, client_dialer) = client_side.build(&data_dir, &client_listens, &advertise_client_urls)?;
        let peer_urls_known: Vec<String> =
            advertise_peer.iter().chain(members.iter().map(|m| &m.peer_url)).cloned().collect();
        let (peer_tls, peer_dialer) = peer_side.build(&data_dir, &peer_addrs, &peer_urls_known)?;
        let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        Ok(Settings {
            client_tls,
            peer_tls,
            peer_dialer,
            client_dialer,
            member_id: me.id,
            cluster_id: cluster_id(&token, &ids),
            initial_cluster_state,
            initial_cluster_token: token,
            advertise_peer_urls: advertise_peer,
            max_learners: self.max_learners.unwrap_or(1),
            quota_bytes: match self.quota_backend_bytes.unwrap_or(0) {
                0 => Some(DEFAULT_QUOTA_BYTES),
                n if n < 0 => None,
                n => Some(n as u64),
            },
            force_new_cluster: self.force_new_cluster,
            join: self.join.as_deref().map(split).unwrap_or_default(),
            name,
            data_dir,
            client_addrs,
            metrics_addrs,
            advertise_client_urls,
            peer_addrs,
            members,
            heartbeat: Duration::from_millis(heartbeat_ms),
            election_ticks: (election_ms / heartbeat_ms) as u32,
            max_request_bytes,
            snapshot_entries,
            snapshot_catchup_entries: self.snapshot_catchup_entries.unwrap_or(5_000),
            auto_compaction,
            watch_progress_notify_interval,
            lease_checkpoint_interval,
            client_cert_auth,
            auth,
        })
    }
}

impl Settings {
    pub fn election_timeout(&self) -> Duration {
        self.heartbeat * self.election_ticks
    }

    /// The shortest lease TTL granted, in seconds: etcd's, one and a half
    /// election timeouts rounded up, so a lease outlives a leader change.
    pub fn min_lease_ttl(&self) -> i64 {
        (self.election_timeout().as_millis() as i64 * 3 / 2 + 999) / 1000
    }
}

/// Settings for a cluster of members on loopback, one per (client port,
/// peer port), named `infra1`, `infra2`, … with data under `dir`. With
/// `tls`, both ports of every member serve `https://` with that certificate
/// and require client certificates signed by its CA.
pub fn local_cluster(
    dir: &std::path::Path,
    ports: &[(u16, u16)],
    token: &str,
    tls: Option<&TlsInfo>,
) -> Result<Vec<Settings>, ConfigError> {
    let name = |i: usize| format!("infra{}", i + 1);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let initial_cluster: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, peer))| format!("{}={scheme}://127.0.0.1:{peer}", name(i))).collect();
    let given = tls.cloned().unwrap_or_default();
    ports
        .iter()
        .enumerate()
        .map(|(i, (client, peer))| {
            ServerArgs {
                name: Some(name(i)),
                data_dir: Some(dir.join(name(i))),
                listen_client_urls: Some(format!("{scheme}://127.0.0.1:{client}")),
                listen_peer_urls: Some(format!("{scheme}://127.0.0.1:{peer}")),
                initial_advertise_peer_urls: Some(format!("{scheme}://127.0.0.1:{peer}")),
                initial_cluster: Some(initial_cluster.join(",")),
                initial_cluster_token: Some(token.into()),
                cert_file: given.cert_file.clone(),
                key_file: given.key_file.clone(),
                trusted_ca_file: given.trusted_ca_file.clone(),
                client_cert_auth: tls.is_some(),
                peer_cert_file: given.cert_file.clone(),
                peer_key_file: given.key_file.clone(),
                peer_trusted_ca_file: given.trusted_ca_file.clone(),
                peer_client_cert_auth: tls.is_some(),
                ..ServerArgs::default()
            }
            .resolve()
        })
        .collect()
}

fn split(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// `http://host:port` or `https://host:port` → an address to listen on.
fn socket_addrs(field: &'static str, urls: &[String]) -> Result<Vec<Listen>, ConfigError> {
    if urls.is_empty() {
        return Err(invalid(field, "no URL given"));
    }
    urls.iter()
        .map(|url| {
            let (hostport, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
                (Some(hostport), _) => (hostport, false),
                (_, Some(hostport)) => (hostport, true),
                _ => return Err(invalid(field, format!("`{url}`: use http://host:port or https://host:port"))),
            };
            let addr = hostport
                .to_socket_addrs()
                .map_err(|e| invalid(field, format!("`{url}`: {e}")))?
                .next()
                .ok_or_else(|| invalid(field, format!("`{url}` resolves to no address")))?;
            Ok(Listen { addr, tls })
        })
        .collect()
}

/// `name=url,name=url` → members, with ids derived from the token and name.
pub fn parse_initial_cluster(list: &str, token: &str) -> Result<Vec<Member>, ConfigError> {
    let mut members: Vec<Member> = Vec::new();
    for item in split(list) {
        let (name, url) =
            item.split_once('=').ok_or_else(|| invalid("initial-cluster", format!("`{item}` is not name=peer-url")))?;
        if name.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid("initial-cluster", format!("`{item}` is not name=http://host:port")));
        }
        if members.iter().any(|m| m.name == name) {
            return Err(invalid("initial-cluster", format!("member `{name}` is listed twice")));
        }
        members.push(Member { id: member_id(token, name), name: name.into(), peer_url: url.into() });
    }
    if members.is_empty() {
        return Err(invalid("initial-cluster", "no members"));
    }
    Ok(members)
}

/// A stable 64-bit id from two crc32s; never 0 (which means "none" to Raft).
fn stable_id(a: &[u8], b: &[u8]) -> u64 {
    let hi = crc32fast::hash(&[a, b"/", b].concat()) as u64;
    let lo = crc32fast::hash(&[b, b"/", a].concat()) as u64;
    ((hi << 32) | lo).max(1)
}

pub fn member_id(token: &str, name: &str) -> u64 {
    stable_id(token.as_bytes(), name.as_bytes())
}

fn cluster_id(token: &str, ids: &[u64]) -> u64 {
    let ids: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    stable_id(token.as_bytes(), &ids)
}

#[cfg(test)]
mod tests;
mod tls;
