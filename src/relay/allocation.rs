//! One allocation: its relay sockets, permissions and channel bindings, and their timers.
//!
//! Permissions and channels live in small vectors: quotas keep them short (tens at
//! most), and a linear scan over a few cache lines beats hashing on the relay path.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::{FiveTuple, quota::QuotaSlot, ratelimit::TokenBucket};
use crate::proto::{Family, TransactionId};

/// A relay socket of an allocation, with the address it announces.
#[derive(Debug)]
pub struct Relay<S> {
    pub socket: S,
    /// The local address the socket is bound to.
    pub bound: SocketAddr,
    /// The address put into XOR-RELAYED-ADDRESS (external address, same port).
    pub announced: SocketAddr,
}

/// A permission for one peer IP (ports do not matter, RFC 8656 9).
#[derive(Clone, Copy, Debug)]
pub struct Permission {
    pub ip: IpAddr,
    pub expires: Instant,
}

/// A channel binding.
#[derive(Clone, Copy, Debug)]
pub struct Channel {
    pub number: u16,
    pub peer: SocketAddr,
    pub expires: Instant,
}

/// State of one allocation.
#[derive(Debug)]
pub struct Allocation<S, C> {
    pub generation: u32,
    pub five_tuple: FiveTuple,
    pub client: C,
    /// The quota slot; it also remembers the username (never logged) for 441 checks.
    pub slot: QuotaSlot,
    /// Relay sockets by family: index 0 IPv4, 1 IPv6.
    pub relays: [Option<Relay<S>>; 2],
    pub created: Instant,
    pub expires: Instant,
    /// Transaction of the Allocate that created it (retransmissions get the same answer).
    pub allocate_tid: TransactionId,
    pub permissions: Vec<Permission>,
    pub channels: Vec<Channel>,
    /// Relayed bytes budget (both directions).
    pub bandwidth: TokenBucket,
}

/// Index of a family in [`Allocation::relays`].
pub fn family_index(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl<S, C> Allocation<S, C> {
    /// The relay for a peer's family, if the allocation has one.
    #[inline]
    pub fn relay_for(&self, peer: &SocketAddr) -> Option<&Relay<S>> {
        self.relays[family_index(Family::of(peer))].as_ref()
    }

    /// Whether a live permission covers `ip`.
    #[inline]
    pub fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|p| p.ip == ip && p.expires > now)
    }

    /// The live channel bound to `peer`.
    #[inline]
    pub fn channel_to(&self, peer: &SocketAddr, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.peer == *peer && c.expires > now)
    }

    /// The live channel with `number`.
    #[inline]
    pub fn channel_numbered(&self, number: u16, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.number == number && c.expires > now)
    }

    /// Installs or refreshes a permission; returns true when it is new.
    pub fn permit(&mut self, ip: IpAddr, expires: Instant) -> bool {
        if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == ip) {
            p.expires = p.expires.max(expires);
            false
        } else {
            self.permissions.push(Permission { ip, expires });
            true
        }
    }

    /// Drops expired permissions and channels; returns how many of each went.
    pub fn purge(&mut self, now: Instant) -> (usize, usize) {
        let (p, c) = (self.permissions.len(), self.channels.len());
        self.permissions.retain(|p| p.expires > now);
        self.channels.retain(|c| c.expires > now);
        (p - self.permissions.len(), c - self.channels.len())
    }

    /// Families this allocation relays on.
    pub fn families(&self) -> impl Iterator<Item = Family> + '_ {
        [Family::V4, Family::V6]
            .into_iter()
            .filter(|f| self.relays[family_index(*f)].is_some())
    }
}
