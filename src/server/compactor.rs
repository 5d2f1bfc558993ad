//! Auto-compaction, with etcd's `--auto-compaction-mode` and
//! `--auto-compaction-retention`: the member that leads proposes `Compact`
//! commands, which reach every member through the log, so all of them
//! forget the same history. Followers only watch.
//!
//! - `revision` mode keeps the newest `retention` revisions: once a
//!   [`REVISION_CHECK`], it compacts to the current revision minus the
//!   retention.
//! - `periodic` mode keeps `retention` worth of time: it notes the revision
//!   every tenth of the retention and compacts to the one noted a whole
//!   retention ago (etcd 3.4's periodic compactor).
//!
//! A compaction that fails (no leader, leader changed) is simply tried at the
//! next check: compacting is idempotent in effect, and a compaction refused
//! as already done changes nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::shared::Shared;
use crate::kv;
use crate::proto::etcdserverpb::CompactionRequest;

/// How often revision mode looks at the revision (etcd checks every five
/// minutes; history here lives in memory, so it is checked more often).
pub const REVISION_CHECK: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    Off,
    /// Keep this many revisions.
    Revision(i64),
    /// Keep this much time's worth of revisions.
    Periodic(Duration),
}

impl AutoCompaction {
    /// From etcd's two flags. A retention of 0 turns compaction off; in
    /// periodic mode a bare number is hours, as in etcd.
    pub fn parse(mode: &str, retention: &str) -> Result<AutoCompaction, String> {
        let retention = retention.trim();
        match mode {
            "revision" => match retention.parse::<i64>() {
                Ok(0) => Ok(AutoCompaction::Off),
                Ok(n) if n > 0 => Ok(AutoCompaction::Revision(n)),
                _ => Err(format!("revision mode wants a number of revisions, not `{retention}`")),
            },
            "periodic" => {
                let period = match retention.parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours * 3600),
                    Err(_) => parse_duration(retention).ok_or_else(|| {
                        format!("periodic mode wants a duration such as 30m or 1h, not `{retention}`")
                    })?,
                };
                Ok(if period.is_zero() { AutoCompaction::Off } else { AutoCompaction::Periodic(period) })
            }
            other => Err(format!("unknown mode `{other}`: use periodic or revision")),
        }
    }
}

/// Go's duration syntax as etcd's flags take it, one or more number+unit
/// pairs: `90s`, `1h30m`, `500ms`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let number: f64 = number.parse().ok()?;
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let seconds = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(number * seconds);
        rest = after;
    }
    Some(total)
}

/// Runs until `stop` fires.
pub async fn run(shared: Arc<Shared>, mode: AutoCompaction, mut stop: watch::Receiver<bool>) {
    let check = match &mode {
        AutoCompaction::Off => return,
        AutoCompaction::Revision(_) => REVISION_CHECK,
        AutoCompaction::Periodic(period) => (*period / 10).max(Duration::from_secs(1)),
    };
    // Periodic mode: the revisions noted at each check, oldest first.
    let mut noted: VecDeque<i64> = VecDeque::new();
    let mut ticker = tokio::time::interval(check);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let status = shared.status.borrow().clone();
        let target = match &mode {
            AutoCompaction::Off => return,
            AutoCompaction::Revision(keep) => status.revision - keep,
            AutoCompaction::Periodic(period) => {
                noted.push_back(status.revision);
                // One note per check: the note a whole retention ago is the
                // front once there are more notes than checks in a retention.
                let span = (period.as_secs_f64() / check.as_secs_f64()).round().max(1.0) as usize;
                if noted.len() <= span {
                    continue;
                }
                noted.pop_front().unwrap_or_default()
            }
        };
        let leads = status.leader == Some(shared.settings.member_id);
        if !leads || target <= status.compact_revision {
            continue;
        }
        match shared.write(kv::compaction_command(CompactionRequest { revision: target, physical: true })).await {
            Ok(_) => tracing::info!(revision = target, "auto-compacted the history"),
            Err(e) => {
                tracing::warn!(revision = target, error = %e.message(), "auto-compaction failed; trying again later")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcds_flags() {
        let parse = AutoCompaction::parse;
        assert_eq!(parse("revision", "1000"), Ok(AutoCompaction::Revision(1000)));
        assert_eq!(parse("revision", "0"), Ok(AutoCompaction::Off));
        assert_eq!(parse("periodic", "1"), Ok(AutoCompaction::Periodic(Duration::from_secs(3600))), "hours");
        assert_eq!(parse("periodic", "30m"), Ok(AutoCompaction::Periodic(Duration::from_secs(1800))));
        assert_eq!(parse("periodic", "1h30m"), Ok(AutoCompaction::Periodic(Duration::from_secs(5400))));
        assert_eq!(parse("periodic", "2s"), Ok(AutoCompaction::Periodic(Duration::from_secs(2))));
        assert_eq!(parse("periodic", "0"), Ok(AutoCompaction::Off));
        assert!(parse("revision", "-3").is_err());
        assert!(parse("revision", "1h").is_err());
        assert!(parse("periodic", "10x").is_err());
        assert!(parse("periodic", "").is_err());
        assert!(parse("hourly", "1").is_err());
    }
}
