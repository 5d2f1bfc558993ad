//! The `raftkv` command: run a member (`server`), a local cluster (`dev`),
//! or talk to a cluster (`put`, `get`, `del`, `status`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use raftkv::bench::watch::WatchArgs;
use raftkv::bench::{BenchArgs, Workload};
use raftkv::client::DEV_ENDPOINTS;
use raftkv::client::{Client, ClientError, ResumingWatch, output};
use raftkv::kv::prefix_end;
use raftkv::logging::{LogFormat, LogLevel};
use raftkv::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchResponse};
use raftkv::server::{self, ServerArgs};
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "raftkv", version)]
#[command(about = "A replicated, strongly consistent key-value store with an etcd v3 compatible API")]
#[command(long_about = "A replicated, strongly consistent key-value store with an etcd v3 compatible API.\n\n\
Start a local 3-member cluster with `raftkv dev`, then try `raftkv put greeting hello` and\n\
`raftkv get greeting`. etcdctl and etcd client libraries work against the same endpoints.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// What to log (etcd's levels): debug, info, warn, error. Default: info
    /// for `server` and `dev`, warn for the client commands. RAFTKV_LOG, a
    /// full tracing filter, wins when set.
    #[arg(long, global = true, env = "RAFTKV_LOG_LEVEL", value_enum)]
    log_level: Option<LogLevel>,
    /// text (for people) or json (one object per line, for log pipelines).
    #[arg(long, global = true, env = "RAFTKV_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    tls: ClientTls,
    /// Log in as this user (NAME or NAME:PASSWORD; without one, the password
    /// is --password or read from stdin), as etcdctl's --user.
    #[arg(id = "login_user", long = "user", global = true, env = "RAFTKV_USER")]
    user: Option<String>,
    /// The password of --user.
    #[arg(id = "login_password", long = "password", global = true, env = "RAFTKV_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

/// How the client commands connect to `https://` endpoints (etcdctl's flags).
#[derive(clap::Args)]
struct ClientTls {
    /// The CA (PEM) the servers' certificates must be signed by (default:
    /// the system's roots).
    #[arg(id = "tls_cacert", long = "cacert", global = true, env = "RAFTKV_CACERT")]
    cacert: Option<PathBuf>,
    /// This client's certificate (PEM), for servers with --client-cert-auth.
    #[arg(id = "tls_cert", long = "cert", global = true, env = "RAFTKV_CERT", requires = "tls_key")]
    cert: Option<PathBuf>,
    /// The key of --cert (PEM).
    #[arg(id = "tls_key", long = "key", global = true, env = "RAFTKV_KEY", requires = "tls_cert")]
    key: Option<PathBuf>,
    /// Do not verify the servers' certificates (for --auto-tls servers).
    #[arg(
        id = "tls_insecure",
        long = "insecure-skip-tls-verify",
        global = true,
        env = "RAFTKV_INSECURE_SKIP_TLS_VERIFY"
    )]
    insecure_skip_tls_verify: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run one member of a cluster. Takes etcd's flag names; each flag can also be
    /// set as RAFTKV_<FLAG> (e.g. RAFTKV_DATA_DIR) or in a --config TOML file.
    Server {
        #[command(flatten)]
        args: Box<ServerArgs>,
        /// A TOML file of the same settings, kebab-case keys (e.g. `data-dir = "/var/lib/raftkv"`).
        /// Flags and environment variables win over it.
        #[arg(long, env = "RAFTKV_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Start a local cluster in this process (member i serves clients on port
    /// i2379 and peers on i2380: 2379, 22379, 32379, ...). Ctrl-C stops it; data
    /// stays in --dir.
    Dev {
        /// Where the members keep their data (one subdirectory each).
        #[arg(long, default_value = "raftkv-dev")]
        dir: PathBuf,
        /// How many members: 1, 3 or 5.
        #[arg(long, default_value_t = 3, value_parser = dev_size)]
        members: usize,
        /// Serve both ports over mutual TLS, with a CA and certificates made
        /// in DIR/tls (kept and reused; their paths are printed).
        #[arg(long)]
        tls: bool,
    },
    /// Write a key.
    Put {
        key: String,
        value: String,
        /// Attach the key to this lease (hex id, as `raftkv lease grant` prints it):
        /// it is deleted when the lease ends.
        #[arg(long, value_parser = raftkv::client::leases::parse_id)]
        lease: Option<i64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Leases: grant, revoke, ttl, list, keep-alive. Keys put with --lease live
    /// only as long as their lease.
    Lease {
        #[command(subcommand)]
        op: raftkv::client::leases::LeaseOp,
        #[command(flatten)]
        conn: Conn,
    },
    /// Hold a distributed lock named NAME while a command runs (`raftkv lock NAME
    /// -- command args…`), releasing it after; without a command, print the lock's
    /// key and hold it until Ctrl-C. Exits with the command's status.
    Lock {
        name: String,
        /// The command to run while the lock is held.
        #[arg(last = true)]
        command: Vec<String>,
        /// TTL in seconds of the lease the lock is held under.
        #[arg(long, default_value_t = raftkv::client::lock::LOCK_TTL)]
        ttl: i64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Read a key, or every key with a prefix. Linearizable unless --serializable.
    Get {
        key: String,
        /// Every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Read the contacted member's state without confirming with the leader (may be stale).
        #[arg(long)]
        serializable: bool,
        /// The state at this revision (0: the current one), while history still holds it.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print changes to a key, or every key with a prefix, as they are applied
    /// (etcdctl's format: the event type, the key, the value), until Ctrl-C.
    Watch {
        key: String,
        /// Every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Start at this revision (its history first); default: from now on.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Also print each key's value before the change.
        #[arg(long)]
        prev_kv: bool,
        /// simple: etcdctl's lines; json: each response on one line, as `etcdctl watch -w json`.
        #[arg(short = 'w', long = "write-out", default_value = "simple", value_parser = ["simple", "json"])]
        write_out: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Forget the history before a revision, on every member: reads below it are refused from then on.
    Compact {
        revision: i64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a key, or every key with a prefix; prints how many were deleted.
    Del {
        key: String,
        /// Every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// A table of the members: id, address, leader, learner, term, commit, applied,
    /// how many entries each is behind, revision.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// The members of the cluster: list, add, remove, promote, update.
    Member {
        #[command(subcommand)]
        op: MemberOp,
    },
    /// Users of the cluster's auth: add, delete, get, list, passwd, grant-role, revoke-role.
    User {
        #[command(subcommand)]
        op: raftkv::client::auth::UserOp,
        #[command(flatten)]
        conn: Conn,
    },
    /// Roles and their permissions: add, delete, get, list, grant-permission, revoke-permission.
    Role {
        #[command(subcommand)]
        op: raftkv::client::auth::RoleOp,
        #[command(flatten)]
        conn: Conn,
    },
    /// Turn auth on or off, or see whether it is on.
    Auth {
        #[command(subcommand)]
        op: raftkv::client::auth::AuthOp,
        #[command(flatten)]
        conn: Conn,
    },
    /// The alarms raised in the cluster (NOSPACE, when the data reached
    /// --quota-backend-bytes): list them, or disarm them all.
    Alarm {
        #[command(subcommand)]
        op: AlarmOp,
    },
    /// Back up a member's data, or seed a new cluster's member from a backup.
    Snapshot {
        #[command(subcommand)]
        op: SnapshotOp,
    },
    /// An interactive prompt: put, get, del, scan, status, help, exit.
    Shell {
        #[command(flatten)]
        conn: Conn,
    },
    /// Load-test a cluster (raftkv or etcd: only the etcd v3 API is used) and report
    /// requests/s and latency percentiles.
    Bench {
        #[command(subcommand)]
        workload: BenchWorkload,
    },
}

#[derive(Subcommand)]
enum AlarmOp {
    /// Every alarm raised, one per line, as etcdctl prints them.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Lower every alarm raised (writes are accepted again); prints each.
    Disarm {
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum SnapshotOp {
    /// Save the first reachable endpoint's applied state (history included) to FILE.
    Save {
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Write a new member's --data-dir from FILE, for a new cluster: give every
    /// member of the new cluster the same FILE and the flags it will be started
    /// with (--name, --initial-cluster, --initial-advertise-peer-urls,
    /// --initial-cluster-token, --data-dir), then start each with those flags.
    Restore {
        file: PathBuf,
        #[command(flatten)]
        args: Box<ServerArgs>,
    },
}

#[derive(Subcommand)]
enum MemberOp {
    /// Every member: id, whether it started, name, peer and client URLs, learner.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Add a member (start it afterwards with the command this prints).
    Add {
        /// The new member's name (given to it when it starts).
        name: String,
        /// Comma-separated peer URLs the others reach it at.
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Join as a learner: it receives the log without voting until promoted.
        #[arg(long)]
        learner: bool,
        /// Where the new member will serve clients (only put in the printed command).
        #[arg(long)]
        client_urls: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a member (by hexadecimal id or name). A removed member stops, and never comes back.
    Remove {
        member: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Make a learner that has caught up a voter (by id or name).
    Promote {
        member: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Give a member new peer URLs (by id or name); every member follows without a restart.
    Update {
        member: String,
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum BenchWorkload {
    /// Puts of --val-size bytes to random keys of the key space.
    Put {
        #[command(flatten)]
        args: BenchArgs,
    },
    /// Gets of random keys of the key space (written first).
    Get {
        #[command(flatten)]
        args: BenchArgs,
        /// l: linearizable (confirmed with the leader); s: serializable (the member's own state).
        #[arg(long, default_value = "l", value_parser = ["l", "s"])]
        consistency: String,
    },
    /// --watchers over the whole key space, spread over the endpoints, while the
    /// clients put: events delivered per second and put-to-event latency.
    Watch {
        #[command(flatten)]
        args: WatchArgs,
    },
    /// A lease grant (TTL 60 s) then a put under it, as one request.
    LeasePut {
        #[command(flatten)]
        args: BenchArgs,
    },
    /// Keep-alives (a stream per client) over --leases leases of 60 s granted
    /// first, which stay live for a minute after the run.
    LeaseKeepalive {
        #[command(flatten)]
        args: BenchArgs,
        #[arg(long, default_value_t = 10_000)]
        leases: usize,
    },
}

#[derive(clap::Args)]
struct Conn {
    /// Comma-separated client URLs of the cluster (before or after a
    /// subcommand's arguments, as etcdctl's flag).
    #[arg(long, global = true, env = "RAFTKV_ENDPOINTS", default_value = DEV_ENDPOINTS, value_delimiter = ',')]
    endpoints: Vec<String>,
}

/// A linearizable read refused for want of a leader: say what still works.
fn with_read_hint(e: ClientError, serializable: bool) -> anyhow::Error {
    match &e {
        ClientError::Server(s)
            if s.code() == tonic::Code::Unavailable && server::http::is_no_quorum(s.message()) && !serializable =>
        {
            anyhow::anyhow!(
                "{e}\n  hint: the member may be cut off from a majority of the cluster; \
                 `raftkv get --serializable` reads its own, possibly stale, copy"
            )
        }
        _ => e.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = cli.log_level.unwrap_or(match cli.command {
        Command::Server { .. } | Command::Dev { .. } => LogLevel::Info,
        _ => LogLevel::Warn,
    });
    raftkv::logging::init(level, cli.log_format);
    if !matches!(cli.command, Command::Server { .. } | Command::Dev { .. }) {
        let tls = raftkv::tls::TlsInfo {
            cert_file: cli.tls.cert,
            key_file: cli.tls.key,
            trusted_ca_file: cli.tls.cacert,
            insecure_skip_verify: cli.tls.insecure_skip_tls_verify,
            ..Default::default()
        };
        match raftkv::tls::Dialer::new(&tls) {
            Ok(dialer) => raftkv::client::use_tls(dialer),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
        if let Some(user) = &cli.user {
            let (user, given) = raftkv::client::auth::split_user(user);
            let password = match given.or(cli.password) {
                Some(password) => password,
                None => match raftkv::client::auth::read_password("Password") {
                    Ok(password) => password,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                },
            };
            raftkv::client::use_credentials(raftkv::client::Credentials { user, password });
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Exit(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// A bad flag or setting: exit code 2, like a clap usage error.
    Usage(String),
    /// The command `raftkv lock` ran exited with this code.
    Exit(i32),
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::Runtime(e.into())
    }
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Server { args, config } => {
            let args = *args;
            let args = match config {
                Some(path) => args.over(ServerArgs::from_file(&path).map_err(|e| Failure::Usage(e.to_string()))?),
                None => args,
            };
            let settings = args.resolve().map_err(|e| Failure::Usage(e.to_string()))?;
            let stop = stop_on_signal();
            server::serve(settings, stop).await?;
        }
        Command::Dev { dir, members, tls } => dev(dir, members, tls).await?,
        Command::Put { key, value, lease, conn } => {
            let mut client = Client::connect(&conn.endpoints).await?;
            let req =
                PutRequest { key: key.into(), value: value.into(), lease: lease.unwrap_or(0), ..Default::default() };
            client.put_request(req).await?;
            println!("OK");
        }
        Command::Lease { op, conn } => raftkv::client::leases::run(op, &conn.endpoints).await?,
        Command::User { op, conn } => raftkv::client::auth::run_user(op, &conn.endpoints).await?,
        Command::Role { op, conn } => raftkv::client::auth::run_role(op, &conn.endpoints).await?,
        Command::Auth { op, conn } => raftkv::client::auth::run_auth(op, &conn.endpoints).await?,
        Command::Lock { name, command, ttl, conn } => {
            let code = raftkv::client::lock::run(&conn.endpoints, &name, &command, ttl, stop_on_signal()).await?;
            if code != 0 {
                return Err(Failure::Exit(code));
            }
        }
        Command::Get { key, prefix, serializable, rev, conn } => {
            let mut client = Client::connect(&conn.endpoints).await?;
            let range_end = range_end(&key, prefix);
            let req = RangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                serializable,
                revision: rev,
                ..Default::default()
            };
            let resp = client.range(req).await.map_err(|e| with_read_hint(e, serializable))?;
            for kv in resp.kvs {
                println!("{}\n{}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value));
            }
        }
        Command::Watch { key, prefix, rev, prev_kv, write_out, conn } => {
            let range_end = range_end(&key, prefix);
            let create = WatchCreateRequest {
                key: key.into(),
                range_end: range_end.into(),
                start_revision: rev,
                prev_kv,
                ..Default::default()
            };
            let format = if write_out == "json" { output::json } else { output::simple };
            print_watch(ResumingWatch::new(&conn.endpoints, create), format).await?;
        }
        Command::Compact { revision, conn } => {
            let mut client = Client::connect(&conn.endpoints).await?;
            client.compact(revision).await?;
            println!("compacted revision {revision}");
        }
        Command::Del { key, prefix, conn } => {
            let mut client = Client::connect(&conn.endpoints).await?;
            let range_end = range_end(&key, prefix);
            let req = DeleteRangeRequest { key: key.into(), range_end: range_end.into(), prev_kv: false };
            println!("{}", client.delete(req).await?.deleted);
        }
        Command::Status { conn } => status(&conn.endpoints).await?,
        Command::Member { op } => member(op).await?,
        Command::Alarm { op } => {
            let (AlarmOp::List { conn } | AlarmOp::Disarm { conn }) = &op;
            let mut client = Client::connect(&conn.endpoints).await?;
            let alarms = match op {
                AlarmOp::List { .. } => client.alarm_list().await?,
                AlarmOp::Disarm { .. } => client.alarm_disarm().await?,
            };
            for alarm in alarms {
                println!("{alarm}");
            }
        }
        Command::Snapshot { op: SnapshotOp::Save { file, conn } } => {
            let mut client = Client::connect(&conn.endpoints).await?;
            let saved = client.save_snapshot(&file).await?;
            println!(
                "Snapshot saved at {} ({} bytes, {} keys, revision {})",
                saved.path.display(),
                saved.bytes,
                saved.keys,
                saved.revision
            );
        }
        Command::Snapshot { op: SnapshotOp::Restore { file, args } } => {
            let settings = args.resolve().map_err(|e| Failure::Usage(e.to_string()))?;
            let restored = server::recovery::restore(&file, &settings)?;
            println!(
                "Restored {} keys (revision {}, index {}) into {} as member {:x} of cluster {:x}",
                restored.keys,
                restored.revision,
                restored.index,
                settings.data_dir.display(),
                settings.member_id,
                settings.cluster_id
            );
        }
        Command::Shell { conn } => {
            let input = std::io::BufReader::new(std::io::stdin());
            raftkv::shell::run(&conn.endpoints, input, std::io::stdout()).await?;
        }
        Command::Bench { workload } => match workload {
            BenchWorkload::Put { args } => bench(&args, Workload::Put).await.map_err(bench_failure)?,
            BenchWorkload::Get { args, consistency } => {
                bench(&args, Workload::Get { serializable: consistency == "s" }).await.map_err(bench_failure)?
            }
            BenchWorkload::LeasePut { args } => bench(&args, Workload::LeasePut).await.map_err(bench_failure)?,
            BenchWorkload::LeaseKeepalive { args, leases } => {
                bench(&args, Workload::KeepAlive { leases: leases.max(1) }).await.map_err(bench_failure)?
            }
            BenchWorkload::Watch { args } => {
                let p = &args.puts;
                println!(
                    "bench watch: {} watchers on {} streams; {} puts from {} clients over {} connections, values of {} bytes",
                    args.watchers, args.streams, p.total, p.clients, p.conns, p.val_size
                );
                raftkv::bench::watch::run(&args).await.map_err(bench_failure)?.print();
            }
        },
    }
    Ok(())
}

/// Bench settings that cannot work exit 2, as clap's usage errors do.
fn bench_failure(e: ClientError) -> Failure {
    match e {
        ClientError::BadEndpoint(_) | ClientError::BadSettings(_) => Failure::Usage(e.to_string()),
        e => Failure::Runtime(e.into()),
    }
}

async fn bench(args: &BenchArgs, workload: Workload) -> Result<(), ClientError> {
    println!(
        "bench {workload:?}: {} requests, {} clients over {} connections, keys of {} bytes in a space of {}, values of {} bytes",
        args.total, args.clients, args.conns, args.key_size, args.key_space_size, args.val_size
    );
    raftkv::bench::run(args, workload).await?.print();
    Ok(())
}

async fn member(op: MemberOp) -> Result<(), ClientError> {
    use raftkv::client::members;
    match op {
        MemberOp::List { conn } => {
            let mut client = Client::connect(&conn.endpoints).await?;
            print!("{}", members::table(&client.member_list().await?));
        }
        MemberOp::Add { name, peer_urls, learner, client_urls, conn } => {
            let mut client = Client::connect(&conn.endpoints).await?;
            let (added, list) = client.member_add(peer_urls, learner).await?;
            print!("{}", members::start_instructions(&name, &added, &list, client_urls.as_deref()));
        }
        MemberOp::Remove { member, conn } => {
            let (mut client, id, cluster) = named_member(&conn, &member).await?;
            client.member_remove(id).await?;
            println!("Member {id:x} removed from cluster {cluster:x}");
        }
        MemberOp::Promote { member, conn } => {
            let (mut client, id, cluster) = named_member(&conn, &member).await?;
            client.member_promote(id).await?;
            println!("Member {id:x} promoted in cluster {cluster:x}");
        }
        MemberOp::Update { member, peer_urls, conn } => {
            let (mut client, id, cluster) = named_member(&conn, &member).await?;
            client.member_update(id, peer_urls).await?;
            println!("Member {id:x} updated in cluster {cluster:x}");
        }
    }
    Ok(())
}

/// A client, and the id of the member named by id or name, and the cluster's id.
async fn named_member(conn: &Conn, member: &str) -> Result<(Client, u64, u64), ClientError> {
    let mut client = Client::connect(&conn.endpoints).await?;
    let list = client.member_list().await?;
    let id = list.find(member)?.id;
    Ok((client, id, list.cluster_id))
}

/// A watch that turns true on SIGINT or SIGTERM.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("stopping");
        let _ = tx.send(true);
    });
    rx
}

fn dev_size(s: &str) -> Result<usize, String> {
    match s.parse() {
        Ok(n @ (1 | 3 | 5)) => Ok(n),
        _ => Err(format!("`{s}`: a dev cluster has 1, 3 or 5 members")),
    }
}

async fn dev(dir: PathBuf, size: usize, tls: bool) -> anyhow::Result<()> {
    let ports: Vec<(u16, u16)> = (0..size as u16)
        .map(|i| if i == 0 { (2379, 2380) } else { (i * 10_000 + 12379, i * 10_000 + 12380) })
        .collect();
    let scheme = if tls { "https" } else { "http" };
    let endpoints: Vec<String> = ports.iter().map(|(client, _)| format!("{scheme}://127.0.0.1:{client}")).collect();
    let endpoints = endpoints.join(",");
    let certs = if tls { Some(dev_certificates(&dir.join("tls"))?) } else { None };
    let settings = server::config::local_cluster(&dir, &ports, "raftkv-dev", certs.as_ref().map(|(m, _)| m))?;
    let stop = stop_on_signal();
    let members = settings.into_iter().map(|s| tokio::spawn(server::serve(s, stop.clone())));
    let members: Vec<_> = members.collect();
    let try_it = match &certs {
        None => "  raftkv put greeting hello\n  raftkv get greeting\n  raftkv status\n  raftkv member list\n  \
                 curl -s localhost:2379/v1/kv/greeting"
            .to_string(),
        Some((member, client)) => {
            let path = |p: &Option<PathBuf>| p.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
            let (ca, cert, key) = (path(&member.trusted_ca_file), path(&client.cert_file), path(&client.key_file));
            format!(
                "  export RAFTKV_ENDPOINTS={endpoints}\n  \
                 export RAFTKV_CACERT={ca} RAFTKV_CERT={cert} RAFTKV_KEY={key}\n  \
                 raftkv put greeting hello\n  raftkv get greeting\n  raftkv status\n  \
                 etcdctl --endpoints {endpoints} --cacert {ca} --cert {cert} --key {key} get greeting\n  \
                 curl --cacert {ca} --cert {cert} --key {key} https://127.0.0.1:2379/v1/kv/greeting\n\
                 \nBoth ports speak mutual TLS: a client needs the CA ({ca}) and a certificate it signed\n\
                 (yours: {cert}). The members' own: {}.",
                path(&member.cert_file)
            )
        }
    };
    println!(
        "raftkv dev cluster: {size} member{s}, data in {dir}\n\
         \n  endpoints: {endpoints}\n\
         \nTry, in another terminal:\n\
         \n{try_it}\n\
         \nCtrl-C stops the cluster.",
        dir = dir.display(),
        s = if size == 1 { "" } else { "s" },
    );
    let mut failure = None;
    for member in members {
        if let Err(e) = member.await? {
            failure.get_or_insert(e);
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The CA and certificates of `raftkv dev --tls` in `dir`, made the first
/// time: the members' (for both ports) and a client's.
fn dev_certificates(dir: &std::path::Path) -> anyhow::Result<(raftkv::tls::TlsInfo, raftkv::tls::TlsInfo)> {
    use raftkv::tls::TlsInfo;
    use raftkv::tls::generate::Authority;
    let files = |cert: &str, key: &str| TlsInfo {
        cert_file: Some(dir.join(cert)),
        key_file: Some(dir.join(key)),
        trusted_ca_file: Some(dir.join("ca.pem")),
        ..TlsInfo::default()
    };
    let member = files("member.pem", "member-key.pem");
    let client = files("client.pem", "client-key.pem");
    let all = [&member, &client].into_iter().flat_map(|t| [&t.cert_file, &t.key_file, &t.trusted_ca_file]);
    if !all.flatten().all(|p| p.exists()) {
        let ca = Authority::create(dir, "ca")?;
        ca.issue(dir, "member", "raftkv-dev-member", &["127.0.0.1", "localhost"])?;
        ca.issue(dir, "client", "root", &["127.0.0.1", "localhost"])?;
    }
    Ok((member, client))
}

/// The range end for KEY alone, or for every key with the prefix KEY.
fn range_end(key: &str, prefix: bool) -> Vec<u8> {
    if prefix { prefix_end(key.as_bytes()) } else { Vec::new() }
}

/// Prints a watch's events in `format`, as etcdctl does, until the server
/// cancels the watch. A broken stream is resumed, so nothing is missed.
async fn print_watch(mut watch: ResumingWatch, format: fn(&WatchResponse) -> String) -> anyhow::Result<()> {
    use std::io::Write;
    loop {
        let response = watch.next().await?;
        if response.events.is_empty() {
            continue;
        }
        let mut out = std::io::stdout().lock();
        out.write_all(format(&response).as_bytes())?;
        out.flush()?;
    }
}

async fn status(endpoints: &[String]) -> anyhow::Result<()> {
    println!(
        "{:<28} {:>16} {:>6} {:>7} {:>6} {:>8} {:>8} {:>7} {:>9}",
        "ENDPOINT", "ID", "LEADER", "LEARNER", "TERM", "COMMIT", "APPLIED", "BEHIND", "REVISION"
    );
    let mut answers = Vec::new();
    for endpoint in endpoints {
        answers.push((endpoint, Client::status_of(endpoint).await));
    }
    // How far each member's applied index is behind the furthest commit seen.
    let newest = answers.iter().filter_map(|(_, s)| s.as_ref().ok()).map(|s| s.raft_index).max();
    anyhow::ensure!(newest.is_some(), "no endpoint answered");
    for (endpoint, answer) in answers {
        match answer {
            Ok(s) => {
                let header = s.header.unwrap_or_default();
                let yes_no = |b: bool| if b { "yes" } else { "no" };
                println!(
                    "{:<28} {:>16x} {:>6} {:>7} {:>6} {:>8} {:>8} {:>7} {:>9}",
                    endpoint,
                    header.member_id,
                    yes_no(s.leader == header.member_id),
                    yes_no(s.is_learner),
                    s.raft_term,
                    s.raft_index,
                    s.raft_applied_index,
                    newest.unwrap_or(0).saturating_sub(s.raft_applied_index),
                    header.revision
                );
            }
            Err(e) => println!("{endpoint:<28} unreachable: {e}"),
        }
    }
    Ok(())
}
