//! The log an operator reads: `--log-level` (etcd's levels) and
//! `--log-format text|json`, on stderr.
//!
//! - The default level is `info` for the server and `warn` for the client
//!   commands; at `info` a member logs its events (leader changes,
//!   membership changes, snapshots taken, sent and installed, compactions,
//!   peer connections lost and restored, slow synced writes), each with
//!   the member's name and the term, and nothing while nothing happens.
//! - JSON lines carry stable top-level fields: `timestamp`, `level`,
//!   `message`, `target`, the event's own fields (`term`, `leader`, ...),
//!   and `span` (`{"name": "member", "member": NAME}`) for a member's lines.
//! - `RAFTKV_LOG`, when set, is a full `tracing` filter (e.g.
//!   `raftkv=debug,raftkv::raft=trace`) and wins over `--log-level`.

use clap::ValueEnum;

/// etcd's `--log-level` values; `dpanic`, `panic` and `fatal` log errors
/// only, as the nearest level this log has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Dpanic,
    Panic,
    Fatal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error | LogLevel::Dpanic | LogLevel::Panic | LogLevel::Fatal => "error",
        }
    }
}

/// Installs the process's log: `level` unless `RAFTKV_LOG` says otherwise.
pub fn init(level: LogLevel, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFTKV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.directive()));
    let log = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => log.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
        // Colours only for a person at a terminal, not in log files.
        LogFormat::Text => log.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
}
