//! A limit on failed authentications per client address: each address has
//! a bucket of [`BURST`] tries, refilled one per [`REFILL`]; a failure takes
//! one, and an address with none left is refused before its password is
//! even hashed. So guessing passwords is slow, and so is burning the
//! server's CPU on bcrypt.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures an address may have in a burst.
pub const BURST: f64 = 10.0;
/// One more try comes back this often.
pub const REFILL: Duration = Duration::from_secs(1);
/// Addresses remembered at most (full buckets are forgotten first).
const MAX_ADDRESSES: usize = 10_000;

#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl Limiter {
    fn level(tries: f64, since: Instant, now: Instant) -> f64 {
        (tries + now.duration_since(since).as_secs_f64() / REFILL.as_secs_f64()).min(BURST)
    }

    /// Whether `addr` may try now.
    pub fn allows(&self, addr: IpAddr, now: Instant) -> bool {
        let buckets = self.buckets.lock().expect("limiter lock");
        buckets.get(&addr).is_none_or(|&(tries, since)| Limiter::level(tries, since, now) >= 1.0)
    }

    /// Takes a try from `addr`'s bucket after a failure.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock().expect("limiter lock");
        if buckets.len() >= MAX_ADDRESSES {
            buckets.retain(|_, &mut (tries, since)| Limiter::level(tries, since, now) < BURST);
        }
        let (tries, since) = buckets.get(&addr).copied().unwrap_or((BURST, now));
        buckets.insert(addr, ((Limiter::level(tries, since, now) - 1.0).max(0.0), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_a_burst_of_failures_then_one_try_per_refill() {
        let limiter = Limiter::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..BURST as usize {
            assert!(limiter.allows(a, t0));
            limiter.failed(a, t0);
        }
        assert!(!limiter.allows(a, t0));
        assert!(limiter.allows(b, t0), "another address is not held back");
        assert!(!limiter.allows(a, t0 + REFILL / 2));
        assert!(limiter.allows(a, t0 + REFILL));
        limiter.failed(a, t0 + REFILL);
        assert!(!limiter.allows(a, t0 + REFILL));
    }
}
