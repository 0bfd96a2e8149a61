//! Allocation quotas shared by every shard: in total, per REST username, and per
//! client address (an IPv4 address or an IPv6 /64).
//!
//! Only Allocate and the end of an allocation touch this (never the relay path), so a
//! plain mutex is enough. The maps hold only usernames and addresses that passed
//! authentication and own a live allocation, so they are bounded by the total quota.
//! A spoofed source cannot take another user's slots: authentication needs the nonce
//! from a 401 sent to the real source address, so only a client that receives there
//! can allocate under it. The limits can be changed at run time (reload).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::ratelimit::source_prefix;

use crate::stats::QuotaKind;

/// Shared allocation counters.
#[derive(Debug)]
pub struct Quotas {
    max_total: AtomicU32,
    per_user: AtomicU32,
    per_address: AtomicU32,
    state: Mutex<QuotaState>,
}

#[derive(Debug, Default)]
struct QuotaState {
    total: u32,
    users: HashMap<Box<str>, u32>,
    addresses: HashMap<IpAddr, u32>,
}

impl Quotas {
    /// New counters with the given limits.
    pub fn new(max_total: u32, per_user: u32, per_address: u32) -> Arc<Self> {
        Arc::new(Self {
            max_total: AtomicU32::new(max_total),
            per_user: AtomicU32::new(per_user),
            per_address: AtomicU32::new(per_address),
            state: Mutex::new(QuotaState::default()),
        })
    }

    /// Changes the limits; allocations above a lowered limit keep running.
    pub fn set_limits(&self, max_total: u32, per_user: u32, per_address: u32) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.per_user.store(per_user, Ordering::Relaxed);
        self.per_address.store(per_address, Ordering::Relaxed);
    }

    /// Shrinks the per-user and per-address maps once most of their entries are
    /// gone (see `Core::compact`); true when one shrank.
    pub fn compact(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let QuotaState {
            users, addresses, ..
        } = &mut *state;
        shrink_sparse(users) | shrink_sparse(addresses)
    }

    /// Takes one allocation slot for `username` from `client`, or says which quota is full.
    pub fn acquire(
        self: &Arc<Self>,
        username: &str,
        client: IpAddr,
    ) -> Result<QuotaSlot, QuotaKind> {
        let address = source_prefix(client);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.total >= self.max_total.load(Ordering::Relaxed) {
            return Err(QuotaKind::Total);
        }
        let held = state.users.get(username).copied().unwrap_or(0);
        if held >= self.per_user.load(Ordering::Relaxed) {
            return Err(QuotaKind::PerUser);
        }
        let from_address = state.addresses.get(&address).copied().unwrap_or(0);
        if from_address >= self.per_address.load(Ordering::Relaxed) {
            return Err(QuotaKind::PerAddress);
        }
        state.total += 1;
        state.users.insert(username.into(), held + 1);
        state.addresses.insert(address, from_address + 1);
        Ok(QuotaSlot {
            quotas: Arc::clone(self),
            username: username.into(),
            address,
        })
    }

    /// Allocations currently held in total.
    pub fn total(&self) -> u32 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    fn release(&self, username: &str, address: IpAddr) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.total = state.total.saturating_sub(1);
        if let Some(held) = state.users.get_mut(username) {
            *held -= 1;
            if *held == 0 {
                state.users.remove(username);
            }
        }
        if let Some(held) = state.addresses.get_mut(&address) {
            *held -= 1;
            if *held == 0 {
                state.addresses.remove(&address);
            }
        }
    }
}

/// One held allocation slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct QuotaSlot {
    quotas: Arc<Quotas>,
    username: Box<str>,
    address: IpAddr,
}

impl QuotaSlot {
    /// The username that holds this slot.
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl Drop for QuotaSlot {
    fn drop(&mut self) {
        self.quotas.release(&self.username, self.address);
    }
}

/// Maps with fewer entries than this keep their capacity.
const COMPACT_MIN: usize = 256;

fn shrink_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) -> bool {
    if map.capacity() >= COMPACT_MIN && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_total_limits_and_release() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let q = Quotas::new(3, 2, 100);
        let a1 = q.acquire("a", ip).unwrap();
        let _a2 = q.acquire("a", ip).unwrap();
        assert_eq!(q.acquire("a", ip).unwrap_err(), QuotaKind::PerUser);
        let _b1 = q.acquire("b", ip).unwrap();
        assert_eq!(q.acquire("c", ip).unwrap_err(), QuotaKind::Total);
        drop(a1);
        assert_eq!(q.total(), 2);
        let _c = q.acquire("c", ip).unwrap();
        q.set_limits(10, 10, 10);
        let _d = q.acquire("d", ip).unwrap();
    }

    #[test]
    fn per_address_counts_an_ipv6_64_as_one_source() {
        let q = Quotas::new(100, 100, 2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let s1 = q.acquire("u1", a).unwrap();
        let _s2 = q.acquire("u2", b).unwrap();
        assert_eq!(q.acquire("u3", a).unwrap_err(), QuotaKind::PerAddress);
        let _s3 = q.acquire("u3", other).unwrap();
        drop(s1);
        let _s4 = q.acquire("u4", b).unwrap();
    }
}
