//! The raftkv server: one member of a cluster.
//!
//! [`serve`] opens (or bootstraps) the member's data directory, starts the
//! peer listener (Raft traffic, write forwarding) and the client listener
//! (etcd's gRPC API and the HTTP/JSON surface on the same address, as etcd
//! does), and runs the [`node`] driver until told to stop.

pub mod alarms;
pub mod auth;
pub mod authority;
pub mod compactor;
pub mod concurrency;
pub mod config;
pub mod encoded_range;
pub mod forward;
pub mod gateway;
pub mod grpc;
pub mod grpc_metrics;
pub mod http;
pub mod join;
pub mod lease;
pub mod maintenance;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod probes;
pub mod recovery;
pub mod shared;
pub mod snapshots;
pub mod transport;
pub mod ui;
pub mod watch;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::Instrument as _;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::sync::watch as signal;
use tonic::transport::server::TcpIncoming;

use crate::kv::KvStore;
use crate::proto::etcdserverpb::auth_server::AuthServer;
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::lease_server::LeaseServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::etcdserverpb::watch_server::WatchServer;
use crate::proto::raftpeer::raft_peer_server::RaftPeerServer;
use crate::proto::v3electionpb::election_server::ElectionServer;
use crate::proto::v3lockpb::lock_server::LockServer;
use crate::proto::{ConfState, Membership};
use crate::raft::{Config, Raft, RaftError};
use crate::snapshot::{SnapshotDir, SnapshotError, Snapshotter};
use crate::storage::{LogStore, RocksStore, StorageError};
pub use config::{ClusterState, ServerArgs, Settings};
use encoded_range::KvRoutes;

/// The etcd version whose API raftkv serves, as `Maintenance.Status` and
/// `/version` report it to etcd clients and tools.
pub const ETCD_API_VERSION: &str = "3.4.0";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot listen on {what} address {addr}: {source}")]
    Listen { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(
        "data directory {path} belongs to cluster {found_cluster:x} member {found_member:x}, not to cluster {cluster:x} member {member:x} (wrong --data-dir, --name or --initial-cluster-token?)"
    )]
    WrongIdentity { path: PathBuf, found_cluster: u64, found_member: u64, cluster: u64, member: u64 },
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the core installs snapshot index {index} term {term}, but no such snapshot was received")]
    SnapshotMissing { index: u64, term: u64 },
    #[error("raft: {0}")]
    Raft(#[from] RaftError),
    #[error("cannot run the Raft loop's thread: {0}")]
    Thread(String),
    #[error(
        "member {member:x} was removed from the cluster: this data directory cannot be used again (to rejoin, add a new member and start it with an empty --data-dir)"
    )]
    Removed { member: u64 },
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error("cannot restore: {0}")]
    Restore(String),
    #[error("{what} server failed: {source}")]
    Serve { what: &'static str, source: std::io::Error },
}

/// What a member's data directory holds, ready to run.
struct Opened {
    raft: Raft,
    store: RocksStore,
    kv: KvStore,
    snapshot_dir: Arc<SnapshotDir>,
    snapshotter: Snapshotter,
}

/// What a member joining a running cluster learned from it.
pub struct Joined {
    pub cluster_id: u64,
    pub member_id: u64,
    pub table: Membership,
}

/// Whose data directory this is: (cluster id, member id) once bootstrapped
/// or joined. Refuses a directory whose member was removed. Blocking.
fn identity(settings: &Settings) -> Result<Option<(u64, u64)>, ServerError> {
    let raft_dir = settings.data_dir.join("raft");
    std::fs::create_dir_all(&raft_dir).map_err(|source| ServerError::DataDir { path: raft_dir.clone(), source })?;
    let store = RocksStore::open(&raft_dir)?;
    let identity = store.identity()?;
    if store.is_removed()? {
        return Err(ServerError::Removed { member: identity.map_or(0, |(_, m)| m) });
    }
    Ok(identity)
}

/// Opens (or bootstraps, or sets up for joining) the data directory and
/// rebuilds the member's state from its newest snapshot and log tail.
/// Blocking: file and RocksDB reads.
fn open(settings: &Settings, joined: Option<Joined>) -> Result<Opened, ServerError> {
    let raft_dir = settings.data_dir.join("raft");
    let mut store = RocksStore::open(&raft_dir)?;
    match (store.identity()?, joined) {
        (Some((cluster, member)), _) if (cluster, member) != (settings.cluster_id, settings.member_id) => {
            return Err(ServerError::WrongIdentity {
                path: settings.data_dir.clone(),
                found_cluster: cluster,
                found_member: member,
                cluster: settings.cluster_id,
                member: settings.member_id,
            });
        }
        (Some(_), _) => {
            tracing::info!(dir = %settings.data_dir.display(), "restarting from existing data");
            if settings.force_new_cluster {
                recovery::force_new_cluster(&mut store, settings.member_id)?;
            }
        }
        (None, _) if settings.force_new_cluster => {
            return Err(ServerError::Restore(format!(
                "--force-new-cluster restarts a surviving member from its data, but {} holds none",
                settings.data_dir.display()
            )));
        }
        (None, Some(joined)) => {
            // No configuration yet: the log (or a snapshot) from the leader
            // brings it, so this member cannot campaign before it knows it.
            store.bootstrap(&ConfState::default())?;
            store.set_base_members(&joined.table)?;
            store.set_identity(joined.cluster_id, joined.member_id)?;
            tracing::info!(dir = %settings.data_dir.display(), "set up to join the cluster");
        }
        (None, None) => {
            let conf = ConfState::with_voters(settings.members.iter().map(|m| m.id));
            store.bootstrap(&conf)?;
            store.set_base_members(&membership::initial(&settings.members))?;
            store.set_identity(settings.cluster_id, settings.member_id)?;
            tracing::info!(dir = %settings.data_dir.display(), members = settings.members.len(), "bootstrapped a new member");
        }
    }
    let snapshot_dir = Arc::new(SnapshotDir::open(settings.data_dir.join("snap"))?);
    let mut state = store.initial_state()?;
    // The newest intact snapshot the log continues, then the log after it.
    let (kv, newest, previous) = match crate::snapshot::recover(&snapshot_dir, &state)? {
        Some(r) => {
            tracing::info!(index = r.meta.index, keys = r.kv.len(), file = %r.path.display(), "loaded a snapshot");
            if let Some(conf) = &r.meta.conf {
                state.conf = conf.clone();
            }
            // A snapshot holds only committed state, even if the commit
            // index written before a crash was older.
            state.hard_state.commit = state.hard_state.commit.max(r.meta.index);
            (r.kv, Some(r.meta), r.previous)
        }
        None => (KvStore::new(), None, 0),
    };
    let mut kv = kv;
    if kv.membership().members.is_empty() {
        // No snapshot, or one written before the table was kept: the table
        // this directory started from, replayed forward by the log.
        let base = store.base_members()?.unwrap_or_else(|| membership::initial(&settings.members));
        kv.set_membership(base);
    }
    let applied = newest.as_ref().map_or(state.offset_index, |m| m.index);
    let mut cfg = Config::new(settings.member_id);
    cfg.election_tick = settings.election_ticks;
    cfg.heartbeat_tick = 1;
    cfg.seed = settings.member_id
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut raft = Raft::new(cfg, state, applied)?;
    let snapshotter = Snapshotter::new(
        snapshot_dir.clone(),
        settings.snapshot_entries,
        settings.snapshot_catchup_entries,
        newest.as_ref().map_or(0, |m| m.index),
        previous,
    );
    if let Some(meta) = newest {
        raft.snapshot_available(meta);
    }
    Ok(Opened { raft, store, kv, snapshot_dir, snapshotter })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f)).await.map_err(|e| ServerError::Thread(e.to_string()))?
}

/// Runs a member until `stop` turns true (or its storage fails). Its log
/// lines carry its name (the `member` span), also from the Raft loop's
/// thread, the peer links and the background tasks it starts.
pub async fn serve(settings: Settings, stop: signal::Receiver<bool>) -> Result<(), ServerError> {
    let span = tracing::info_span!("member", member = %settings.name);
    serve_member(settings, stop).instrument(span).await
}

async fn serve_member(mut settings: Settings, stop: signal::Receiver<bool>) -> Result<(), ServerError> {
    // --join and the cluster page reach other members' client URLs.
    crate::client::use_tls(settings.client_dialer.clone());
    let checking = settings.clone();
    let joined = match blocking(move || identity(&checking)).await? {
        // A member that joined has ids the cluster gave it.
        Some((cluster, member)) if settings.initial_cluster_state == ClusterState::Existing => {
            (settings.cluster_id, settings.member_id) = (cluster, member);
            None
        }
        Some(_) => None,
        None if settings.initial_cluster_state == ClusterState::Existing => {
            if !settings.join.is_empty() {
                join::add_self(&mut settings).await?;
            }
            let joined = join::find_cluster(&settings).await?;
            (settings.cluster_id, settings.member_id) = (joined.cluster_id, joined.member_id);
            Some(joined)
        }
        None => None,
    };
    let opening = settings.clone();
    let Opened { raft, store, kv, snapshot_dir, snapshotter } = blocking(move || open(&opening, joined)).await?;

    let (node_tx, node_rx) = mpsc::channel(64 * 1024);
    let metrics = Arc::new(metrics::Metrics::new(settings.member_id));
    let snapshots = snapshots::SnapshotSender::new(
        settings.cluster_id,
        snapshot_dir.clone(),
        node_tx.downgrade(),
        metrics.clone(),
        settings.peer_dialer.clone(),
    );
    let peer_runtime = PeerRuntime::start()?;
    let transport = {
        let _on_peer_runtime = peer_runtime.handle().enter();
        let table = kv.membership().clone();
        let (cluster, me) = (settings.cluster_id, settings.member_id);
        let dialer = settings.peer_dialer.clone();
        transport::Transport::start(cluster, me, &table, snapshots, node_tx.downgrade(), metrics.clone(), dialer)
    };
    let (status_tx, status_rx) = signal::channel(node::NodeStatus::default());
    let requests = node_tx.downgrade();
    let (applied_tx, applied_rx) = signal::channel(kv.clone());
    let defragmenter = store.defragmenter();
    let shared = Arc::new(shared::Shared::new(
        settings.clone(),
        snapshot_dir,
        node_tx,
        status_rx,
        applied_rx,
        defragmenter,
        metrics.clone(),
    ));

    let mut servers = tokio::task::JoinSet::new();
    let max_message = (2 * settings.max_request_bytes).max(4 << 20);
    for &config::Listen { addr, tls } in &settings.peer_addrs {
        let listen = move |source| ServerError::Listen { what: "peer", addr, source };
        let tls = settings.peer_tls.clone().filter(|_| tls);
        // Bound here, registered with the peer runtime's reactor there.
        let listener = std::net::TcpListener::bind(addr).map_err(listen)?;
        listener.set_nonblocking(true).map_err(listen)?;
        let peer = RaftPeerServer::new(grpc::PeerService(shared.clone())).max_decoding_message_size(max_message);
        let mut stop = stop.clone();
        let peer_server = async move {
            let listener = TcpListener::from_std(listener).map_err(listen)?;
            let server = tonic::transport::Server::builder().tcp_nodelay(true).add_service(peer);
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            // Raft traffic is small messages: never wait for Nagle.
            let served = match tls {
                Some(config) => {
                    let incoming = crate::tls::TlsIncoming::new(listener, config, "peer").map_err(listen)?;
                    server.serve_with_incoming_shutdown(incoming.into_stream(), stopped).await
                }
                None => {
                    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                    server.serve_with_incoming_shutdown(incoming, stopped).await
                }
            };
            served.map_err(|e| ServerError::Serve { what: "peer", source: std::io::Error::other(e) })
        };
        servers.spawn_on(peer_server.instrument(tracing::Span::current()), peer_runtime.handle());
    }
    for &config::Listen { addr, tls } in &settings.client_addrs {
        let tls = settings.client_tls.clone().filter(|_| tls);
        let listener =
            TcpListener::bind(addr).await.map_err(|source| ServerError::Listen { what: "client", addr, source })?;
        let grpc = tonic::service::Routes::new(KvRoutes::new(shared.clone(), max_message))
            .add_service(ClusterServer::new(membership::service::ClusterService(shared.clone())))
            .add_service(MaintenanceServer::new(maintenance::MaintenanceService(shared.clone())))
            .add_service(LeaseServer::new(lease::service::LeaseService(shared.clone())))
            .add_service(LockServer::new(concurrency::lock::LockService(shared.clone())))
            .add_service(ElectionServer::new(concurrency::election::ElectionService(shared.clone())))
            .add_service(AuthServer::new(auth::service::AuthService(shared.clone())))
            .add_service(
                WatchServer::new(watch::grpc::WatchService(shared.clone())).max_decoding_message_size(max_message),
            )
            .into_axum_router()
            .layer(axum::middleware::from_fn_with_state(metrics.clone(), grpc_metrics::count));
        // Unknown paths: gRPC's "unimplemented" for gRPC requests, a plain
        // 404 for everyone else (a health probe must not see success).
        let app = grpc.merge(http::router(shared.clone())).fallback(http::not_found);
        let mut stop = stop.clone();
        let starting = shared.clone();
        servers.spawn(
            async move {
                // As etcd: clients are served once this member is known to the
                // cluster (its client URLs published), so every member list a
                // client can get names them. Connections wait in the backlog.
                join::wait_published(&starting).await;
                drop(starting);
                let listener = authority::ClientListener::new(listener, tls, "client")
                    .map_err(|source| ServerError::Serve { what: "client", source })?;
                // Handlers learn the connection's address and certificate.
                let app = app.into_make_service_with_connect_info::<authority::ClientPeer>();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
                    .map_err(|source| ServerError::Serve { what: "client", source })
            }
            .instrument(tracing::Span::current()),
        );
    }
    for &config::Listen { addr, tls } in &settings.metrics_addrs {
        let tls = settings.client_tls.clone().filter(|_| tls);
        let listener =
            TcpListener::bind(addr).await.map_err(|source| ServerError::Listen { what: "metrics", addr, source })?;
        let app = http::metrics_router(shared.clone()).fallback(http::not_found);
        let mut stop = stop.clone();
        servers.spawn(
            async move {
                let listener = authority::ClientListener::new(listener, tls, "metrics")
                    .map_err(|source| ServerError::Serve { what: "metrics", source })?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
                    .map_err(|source| ServerError::Serve { what: "metrics", source })
            }
            .instrument(tracing::Span::current()),
        );
    }
    let compacting = compactor::run(shared.clone(), settings.auto_compaction.clone(), stop.clone());
    let compactor = tokio::spawn(compacting.instrument(tracing::Span::current()));
    let publisher = tokio::spawn(join::publish(shared.clone()).instrument(tracing::Span::current()));
    let leader_changes = tokio::spawn(metrics::record_leader_changes(shared.clone()));
    let promoter = (!settings.join.is_empty()).then(|| tokio::spawn(join::promote_self(shared.clone())));
    tracing::info!(
        name = settings.name,
        member = format!("{:x}", settings.member_id),
        cluster = format!("{:x}", settings.cluster_id),
        client = ?settings.client_addrs,
        peer = ?settings.peer_addrs,
        "serving"
    );

    let node = node::Node::new(node::NodeParts {
        raft,
        store,
        kv,
        outbox: Box::new(transport),
        snapshotter,
        requests,
        status: status_tx,
        applied: applied_tx,
        runtime: tokio::runtime::Handle::current(),
        read_round_ticks: u64::from(settings.election_ticks),
        election_ticks: u64::from(settings.election_ticks),
        max_learners: settings.max_learners,
        lease_checkpoint_interval: settings.lease_checkpoint_interval,
        metrics,
    });
    let result = run_node_thread(node, node_rx, settings.heartbeat, stop.clone()).await;
    compactor.abort();
    publisher.abort();
    leader_changes.abort();
    if let Some(promoter) = promoter {
        promoter.abort();
    }
    drop(shared);
    // The node is done (stopped or failed): the listeners go too.
    servers.abort_all();
    while servers.join_next().await.is_some() {}
    drop(peer_runtime);
    result
}

/// Raft traffic's own runtime: the peer links and the peer listener run on a
/// worker thread that client work never occupies, so a client request that
/// keeps the client workers busy (encoding a range of a million keys) cannot
/// hold back a heartbeat or an append and depose a healthy leader.
struct PeerRuntime(Option<tokio::runtime::Runtime>);

impl PeerRuntime {
    fn start() -> Result<PeerRuntime, ServerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("raft-peer")
            .enable_all()
            .build()
            .map_err(|e| ServerError::Thread(format!("the peer runtime: {e}")))?;
        Ok(PeerRuntime(Some(runtime)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for PeerRuntime {
    fn drop(&mut self) {
        // Inside async code a runtime may only be dropped this way.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs the node's loop on a thread of its own, with a single-threaded
/// runtime for its timer and queues: its synced writes block no async
/// worker, and no busy worker (a large response being encoded) delays a
/// tick, a heartbeat or an append.
async fn run_node_thread(
    node: node::Node,
    requests: mpsc::Receiver<node::Request>,
    tick: std::time::Duration,
    stop: signal::Receiver<bool>,
) -> Result<(), ServerError> {
    let (done, result) = tokio::sync::oneshot::channel();
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("raft-loop".into())
        .spawn(move || {
            let _member = span.enter();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build();
            let outcome = match runtime {
                Ok(runtime) => runtime.block_on(node.run(requests, tick, stop)),
                Err(e) => Err(ServerError::Thread(e.to_string())),
            };
            let _ = done.send(outcome);
        })
        .map_err(|e| ServerError::Thread(e.to_string()))?;
    result.await.map_err(|_| ServerError::Thread("the Raft loop's thread panicked".into()))?
}
