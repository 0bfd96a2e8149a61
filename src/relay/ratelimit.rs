//! Rate limits that cost bounded memory whatever the attacker sends.
//!
//! [`SourceLimiter`] answers "may this source prefix get another unauthenticated
//! answer now?" from a fixed table of token buckets indexed by a keyed hash of the
//! prefix (IPv4 /32, IPv6 /64). Sources that collide share a bucket: that can only make
//! the limit stricter for them, never let anyone past it, and the table never grows
//! with attacker-chosen keys. [`TokenBucket`] is the per-allocation and per-shard
//! bandwidth limit on the relay path: a few arithmetic operations, no allocation.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

/// A classic token bucket over a monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
        }
    }

    /// Takes `cost` tokens if there are enough after refilling at `rate` per second up
    /// to `burst`; a `rate` of 0 means unlimited.
    #[inline]
    pub fn take(&mut self, cost: f64, rate: f64, burst: f64, now: Instant) -> bool {
        if rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// Number of buckets in a [`SourceLimiter`] (fixed: memory does not depend on traffic).
pub const SOURCE_BUCKETS: usize = 4096;

/// Per-source-prefix limits on unauthenticated answers, in fixed memory.
#[derive(Debug)]
pub struct SourceLimiter {
    buckets: Box<[TokenBucket]>,
    hasher: std::collections::hash_map::RandomState,
}

/// The prefix a source is limited (and counted) under: an IPv4 address, or an IPv6 /64.
pub fn source_prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl SourceLimiter {
    /// A table of full buckets; the hash key is random per process.
    pub fn new(burst: f64, now: Instant) -> Self {
        Self {
            buckets: vec![TokenBucket::new(burst, now); SOURCE_BUCKETS].into_boxed_slice(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Whether `ip` may get one more answer now (`rate` per second, `burst` at most).
    pub fn allow(&mut self, ip: IpAddr, rate: f64, burst: f64, now: Instant) -> bool {
        if rate <= 0.0 {
            return true;
        }
        let slot = (self.hasher.hash_one(source_prefix(ip)) as usize) % SOURCE_BUCKETS;
        self.buckets[slot].take(1.0, rate, burst, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, t0);
        assert!(b.take(10.0, 5.0, 10.0, t0));
        assert!(!b.take(1.0, 5.0, 10.0, t0));
        assert!(b.take(5.0, 5.0, 10.0, t0 + Duration::from_secs(1)));
        assert!(
            !b.take(11.0, 5.0, 10.0, t0 + Duration::from_secs(100)),
            "never above burst"
        );
        assert!(b.take(1e12, 0.0, 0.0, t0), "rate 0 is unlimited");
    }

    #[test]
    fn sources_are_limited_per_prefix_in_fixed_memory() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(3.0, t0);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let a2: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        assert!(l.allow(a, 1.0, 3.0, t0));
        assert!(l.allow(a2, 1.0, 3.0, t0), "same /64 shares the bucket");
        assert!(l.allow(a, 1.0, 3.0, t0));
        assert!(!l.allow(a2, 1.0, 3.0, t0));
        // A flood from a million sources leaves the table as it was in size.
        for i in 0..1_000_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            let _ = l.allow(ip, 1.0, 3.0, t0);
        }
        assert_eq!(l.buckets.len(), SOURCE_BUCKETS);
    }
}
