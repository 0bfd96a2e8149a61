//! Caps on TCP/TLS connections: in total and per source (an IPv4 address or an IPv6
//! /64, so one host cannot dodge the cap by cycling addresses in its own prefix).
//! Shared by every shard; touched once per accepted and once per closed connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connection counters.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: u32,
    per_source: u32,
    state: Mutex<(u32, HashMap<IpAddr, u32>)>,
}

/// The key a source address is counted under.
pub fn source_key(ip: IpAddr) -> IpAddr {
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

impl ConnectionLimits {
    /// New counters.
    pub fn new(max_total: u32, per_source: u32) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            per_source,
            state: Mutex::new((0, HashMap::new())),
        })
    }

    /// Admits one more connection from `ip`, or refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let key = source_key(ip);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (total, sources) = &mut *state;
        if *total >= self.max_total {
            return None;
        }
        let held = sources.entry(key).or_insert(0);
        if *held >= self.per_source {
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
