//! Allocation quotas shared by every shard: in total and per REST username.
//!
//! Only Allocate and the end of an allocation touch this (never the relay path), so a
//! plain mutex is enough. The per-user map holds only usernames that already passed
//! authentication and own a live allocation, so its size is bounded by the total quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::stats::QuotaKind;

/// Shared allocation counters.
#[derive(Debug)]
pub struct Quotas {
    max_total: u32,
    per_user: u32,
    state: Mutex<QuotaState>,
}

#[derive(Debug, Default)]
struct QuotaState {
    total: u32,
    users: HashMap<Box<str>, u32>,
}

impl Quotas {
    /// New counters with the given limits.
    pub fn new(max_total: u32, per_user: u32) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            per_user,
            state: Mutex::new(QuotaState::default()),
        })
    }

    /// Takes one allocation slot for `username`, or says which quota is full.
    pub fn acquire(self: &Arc<Self>, username: &str) -> Result<QuotaSlot, QuotaKind> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.total >= self.max_total {
            return Err(QuotaKind::Total);
        }
        let held = state.users.get(username).copied().unwrap_or(0);
        if held >= self.per_user {
            return Err(QuotaKind::PerUser);
        }
        state.total += 1;
        state.users.insert(username.into(), held + 1);
        Ok(QuotaSlot {
            quotas: Arc::clone(self),
            username: username.into(),
        })
    }

    /// Allocations currently held in total.
    pub fn total(&self) -> u32 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    fn release(&self, username: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.total = state.total.saturating_sub(1);
        if let Some(held) = state.users.get_mut(username) {
            *held -= 1;
            if *held == 0 {
                state.users.remove(username);
            }
        }
    }
}

/// One held allocation slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct QuotaSlot {
    quotas: Arc<Quotas>,
    username: Box<str>,
}

impl QuotaSlot {
    /// The username that holds this slot.
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl Drop for QuotaSlot {
    fn drop(&mut self) {
        self.quotas.release(&self.username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_total_limits_and_release() {
        let q = Quotas::new(3, 2);
        let a1 = q.acquire("a").unwrap();
        let _a2 = q.acquire("a").unwrap();
        assert_eq!(q.acquire("a").unwrap_err(), QuotaKind::PerUser);
        let _b1 = q.acquire("b").unwrap();
        assert_eq!(q.acquire("c").unwrap_err(), QuotaKind::Total);
        drop(a1);
        assert_eq!(q.total(), 2);
        let _c = q.acquire("c").unwrap();
    }
}
