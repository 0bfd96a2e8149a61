//! Caps on TCP/TLS connections: in total and per source (an IPv4 address or an IPv6
//! /64, so one host cannot dodge the cap by cycling addresses in its own prefix).
//! Shared by every shard; touched once per accepted and once per closed connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Connection counters.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: AtomicU32,
    per_source: AtomicU32,
    state: Mutex<(u32, HashMap<IpAddr, u32>)>,
}

/// The key a source address is counted under (shared with the allocation quotas).
pub use crate::relay::ratelimit::source_prefix as source_key;

impl ConnectionLimits {
    /// New counters.
    pub fn new(max_total: u32, per_source: u32) -> Arc<Self> {
        Arc::new(Self {
            max_total: AtomicU32::new(max_total),
            per_source: AtomicU32::new(per_source),
            state: Mutex::new((0, HashMap::new())),
        })
    }

    /// Changes the caps (reload); connections above a lowered cap stay open.
    pub fn set_limits(&self, max_total: u32, per_source: u32) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.per_source.store(per_source, Ordering::Relaxed);
    }

    /// Admits one more connection from `ip`, or refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let key = source_key(ip);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (total, sources) = &mut *state;
        if *total >= self.max_total.load(Ordering::Relaxed) {
            return None;
        }
        let held = sources.entry(key).or_insert(0);
        if *held >= self.per_source.load(Ordering::Relaxed) {
            return None;
        }
        *held += 1;
        *total += 1;
        Some(ConnectionSlot {
            limits: Arc::clone(self),
            key,
        })
    }

    fn release(&self, key: IpAddr) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (total, sources) = &mut *state;
        *total = total.saturating_sub(1);
        if let Some(held) = sources.get_mut(&key) {
            *held -= 1;
            if *held == 0 {
                sources.remove(&key);
            }
        }
    }
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    key: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_source_and_total() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b2: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        let s1 = limits.admit(a).unwrap();
        let _s2 = limits.admit(a).unwrap();
        assert!(limits.admit(a).is_none());
        let _s3 = limits.admit(b).unwrap();
        assert!(limits.admit(b2).is_none(), "total cap");
        drop(s1);
        assert!(
            limits.admit(b2).is_some(),
            "same /64 as b, one slot left for it"
        );
    }
}
