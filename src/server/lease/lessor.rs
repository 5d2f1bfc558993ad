//! The leader's lease clock: when each lease expires. It exists only on a
//! leader that has applied every entry of earlier terms, and is dropped the
//! moment leadership ends, so no other member can act on a deadline.
//!
//! - A promoted leader gives each lease its checkpointed remaining TTL (or
//!   the full TTL when none was recorded since its grant or renewal), from
//!   the moment it starts counting. A lease is never expired by a clock that
//!   did not see its last renewal from before that checkpoint.
//! - The leader checkpoints the remaining TTL of every lease longer than the
//!   interval, once per interval. A renewal of a lease that has a recorded
//!   remaining TTL is answered only once a reset (remaining 0) is applied,
//!   so the record never understates what the owner was promised.
//! - Hence the bound, after a leader change: a lease nobody renews expires
//!   at most TTL + interval + the time the cluster had no leader (an
//!   election timeout) after its last renewal, plus one commit for the
//!   revocation. Leases up to the interval long are not checkpointed: a
//!   fresh TTL from the new leader keeps them within the same bound.
//! - Time is passed in, never read here, so the rules are tested with any
//!   clock.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::kv::Leases;
use crate::proto::etcdserverpb::LeaseCheckpoint;

/// A revocation proposed this long ago and not yet applied is proposed
/// again (its entry may have been lost with a failed append).
const REVOKE_RETRY: Duration = Duration::from_secs(3);

/// Most checkpoints one log entry carries (etcd's batch size).
pub const CHECKPOINTS_PER_ENTRY: usize = 1000;

pub struct Lessor {
    deadlines: HashMap<i64, Instant>,
    /// The same deadlines in time order, so each turn looks only at the
    /// leases that expired (it runs many times a second, under load too).
    by_deadline: BTreeSet<(Instant, i64)>,
    /// Leases whose revocation was proposed, and when.
    revoking: HashMap<i64, Instant>,
    interval: Duration,
    next_checkpoint: Instant,
}

impl Lessor {
    /// The clock of a leader that starts counting at `now`.
    pub fn promoted(leases: &Leases, interval: Duration, now: Instant) -> Lessor {
        let mut lessor = Lessor {
            deadlines: HashMap::new(),
            by_deadline: BTreeSet::new(),
            revoking: HashMap::new(),
            interval,
            next_checkpoint: now + interval,
        };
        for (id, l) in leases.iter() {
            let left = if l.remaining > 0 { l.remaining } else { l.ttl };
            lessor.set_deadline(id, now + secs(left));
        }
        lessor
    }

    fn set_deadline(&mut self, id: i64, deadline: Instant) {
        if let Some(old) = self.deadlines.insert(id, deadline) {
            self.by_deadline.remove(&(old, id));
        }
        self.by_deadline.insert((deadline, id));
    }

    pub fn len(&self) -> usize {
        self.deadlines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty()
    }

    /// A grant was applied: the lease runs its full TTL from now.
    pub fn granted(&mut self, id: i64, ttl: i64, now: Instant) {
        self.set_deadline(id, now + secs(ttl));
    }

    /// A revocation was applied.
    pub fn revoked(&mut self, id: i64) {
        if let Some(deadline) = self.deadlines.remove(&id) {
            self.by_deadline.remove(&(deadline, id));
        }
        self.revoking.remove(&id);
    }

    /// Renews lease `id` for `ttl` seconds from now; false if it already
    /// expired (its revocation is on its way) or is unknown here.
    pub fn renew(&mut self, id: i64, ttl: i64, now: Instant) -> bool {
        match self.deadlines.get(&id) {
            Some(&deadline) if deadline > now => {
                self.set_deadline(id, now + secs(ttl));
                true
            }
            _ => false,
        }
    }

    /// Time left on lease `id` (zero once expired).
    pub fn remaining(&self, id: i64, now: Instant) -> Option<Duration> {
        self.deadlines.get(&id).map(|d| d.saturating_duration_since(now))
    }

    /// Leases past their deadline whose revocation should be proposed now:
    /// not proposed yet, or proposed too long ago. At most `limit`.
    pub fn expired(&mut self, now: Instant, limit: usize) -> Vec<i64> {
        // Expired leases whose revocation is in flight stay at the front
        // until it applies: there are as many as were proposed recently.
        let due: Vec<i64> = self
            .by_deadline
            .iter()
            .take_while(|&&(deadline, _)| deadline <= now)
            .filter(|(_, id)| self.revoking.get(id).is_none_or(|&at| now.duration_since(at) >= REVOKE_RETRY))
            .map(|&(_, id)| id)
            .take(limit)
            .collect();
        for &id in &due {
            self.revoking.insert(id, now);
        }
        due
    }

    /// When a checkpoint is due: the remaining TTL (rounded up, so it never
    /// understates) of every live lease longer than the interval.
    pub fn checkpoints(&mut self, leases: &Leases, now: Instant) -> Vec<LeaseCheckpoint> {
        if now < self.next_checkpoint {
            return Vec::new();
        }
        self.next_checkpoint = now + self.interval;
        let interval = self.interval.as_secs_f64();
        let mut checkpoints: Vec<LeaseCheckpoint> = leases
            .iter()
            .filter(|(_, l)| l.ttl as f64 > interval)
            .filter_map(|(id, _)| {
                let left = self.deadlines.get(&id)?.saturating_duration_since(now);
                let remaining = left.as_secs_f64().ceil() as i64;
                (remaining > 0).then_some(LeaseCheckpoint { id, remaining_ttl: remaining })
            })
            .collect();
        checkpoints.sort_unstable_by_key(|c| c.id);
        checkpoints
    }
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(leases: &[(i64, i64, i64)]) -> Leases {
        let records: Vec<crate::proto::LeaseRecord> = leases
            .iter()
            .map(|&(id, ttl, remaining_ttl)| crate::proto::LeaseRecord { id, ttl, remaining_ttl })
            .collect();
        Leases::rebuilt(&records, std::iter::empty())
    }

    #[test]
    fn a_promoted_leader_counts_the_checkpointed_remaining_ttl_or_else_the_full_ttl() {
        let t0 = Instant::now();
        let lessor = Lessor::promoted(&table(&[(1, 60, 20), (2, 60, 0)]), Duration::from_secs(5), t0);
        assert_eq!(lessor.remaining(1, t0), Some(Duration::from_secs(20)));
        assert_eq!(lessor.remaining(2, t0), Some(Duration::from_secs(60)));
        assert_eq!(lessor.remaining(3, t0), None);
    }

    #[test]
    fn a_lease_expires_once_at_its_deadline_and_its_revocation_is_proposed_again_only_after_the_retry_delay() {
        let t0 = Instant::now();
        let mut lessor = Lessor::promoted(&table(&[]), Duration::from_secs(5), t0);
        lessor.granted(7, 10, t0);
        assert!(lessor.expired(t0 + Duration::from_millis(9_999), 10).is_empty());
        assert_eq!(lessor.expired(t0 + Duration::from_secs(10), 10), vec![7]);
        assert!(lessor.expired(t0 + Duration::from_secs(11), 10).is_empty(), "already being revoked");
        assert_eq!(lessor.expired(t0 + Duration::from_secs(13), 10), vec![7], "proposed again");
        lessor.revoked(7);
        assert!(lessor.expired(t0 + Duration::from_secs(60), 10).is_empty());
    }

    #[test]
    fn a_renewal_restarts_the_full_ttl_but_cannot_revive_an_expired_lease() {
        let t0 = Instant::now();
        let mut lessor = Lessor::promoted(&table(&[]), Duration::from_secs(5), t0);
        lessor.granted(7, 10, t0);
        assert!(lessor.renew(7, 10, t0 + Duration::from_secs(8)));
        assert_eq!(lessor.remaining(7, t0 + Duration::from_secs(8)), Some(Duration::from_secs(10)));
        assert!(!lessor.renew(7, 10, t0 + Duration::from_secs(18)), "expired at 18 s");
        assert!(!lessor.renew(8, 10, t0), "unknown");
    }

    #[test]
    fn checkpoints_come_once_per_interval_for_leases_longer_than_it_rounded_up() {
        let t0 = Instant::now();
        let leases = table(&[(1, 60, 0), (2, 5, 0), (3, 6, 0)]);
        let mut lessor = Lessor::promoted(&leases, Duration::from_secs(5), t0);
        assert!(lessor.checkpoints(&leases, t0 + Duration::from_secs(4)).is_empty(), "not due yet");
        let at = t0 + Duration::from_millis(5_500);
        let cps = lessor.checkpoints(&leases, at);
        let got: Vec<(i64, i64)> = cps.iter().map(|c| (c.id, c.remaining_ttl)).collect();
        // Lease 2 is no longer than the interval; 54.5 s left rounds up to 55.
        assert_eq!(got, vec![(1, 55), (3, 1)]);
        assert!(lessor.checkpoints(&leases, at + Duration::from_secs(1)).is_empty(), "one per interval");
    }
}
