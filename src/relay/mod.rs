//! The sans-IO TURN server: allocation table, permissions, channels and timers.
//!
//! [`Core`] never touches a socket or reads a clock. The edge (`crate::server`) hands
//! it datagrams and the current time and gets back what to send where, in the style of
//! `quinn-proto`: a test can drive it with bytes and an `Instant` and inspect the
//! decisions. The only effect the core asks of the edge is binding relay sockets,
//! through the [`RelayIo`] trait, because an Allocate must know its relay port before
//! it can answer.
//!
//! Each shard of the daemon owns one `Core`; a client's 5-tuple and the relay sockets
//! of its allocation always belong to the same shard, so no lock is taken per packet.

mod allocation;
pub mod quota;
pub mod ratelimit;
mod requests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::auth::{NonceKey, Secret};
use crate::policy::PeerPolicy;
use crate::proto::{self, Family, Kind};
use crate::stats::{Direction, DropReason, FamilyLabel, Stats, TransportLabel};

use allocation::family_index;
pub use allocation::{Allocation, Channel, Permission, Relay};
pub use quota::Quotas;
use ratelimit::{SourceLimiter, TokenBucket};

/// Room the edge must leave in front of a peer datagram so the core can write a
/// ChannelData or Data indication header in place (20 + 24 + 4 bytes for IPv6).
pub const PEER_HEADROOM: usize = 48;
/// Room the edge must leave after a peer datagram for padding.
pub const PEER_TAILROOM: usize = 4;

/// How often expired state is swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How long a port reserved by EVEN-PORT with the R bit stays reserved (RFC 8656 7.2: about 30 s).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// The time, as the edge read it: a monotonic instant for timers and Unix seconds
/// for REST credential expiry and nonces.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

impl Now {
    /// Reads both clocks.
    pub fn read() -> Self {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            mono: Instant::now(),
            unix,
        }
    }

    /// The same moment `secs` seconds later (for tests).
    pub fn plus(self, secs: u64) -> Self {
        Self {
            mono: self.mono + Duration::from_secs(secs),
            unix: self.unix + secs,
        }
    }
}

/// Transport between client and server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The byte mixed into nonces so a nonce from one transport is not valid on another.
    pub fn tag(self) -> u8 {
        match self {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
        }
    }
    /// Streams pad ChannelData to four bytes (RFC 8656 12.5).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
    fn label(self) -> TransportLabel {
        match self {
            Transport::Udp => TransportLabel::Udp,
            Transport::Tcp => TransportLabel::Tcp,
            Transport::Tls => TransportLabel::Tls,
        }
    }
}

fn family_label(f: Family) -> FamilyLabel {
    match f {
        Family::V4 => FamilyLabel::V4,
        Family::V6 => FamilyLabel::V6,
    }
}

/// The 5-tuple that identifies an allocation (RFC 8656 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Identifies an allocation to the edge's relay socket tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllocKey {
    index: u32,
    generation: u32,
}

/// Which port an Allocate needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortChoice {
    Any,
    Even,
    Exact(u16),
}

/// Why a relay socket could not be bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindError {
    /// This server relays on no address of that family.
    FamilyUnavailable,
    /// No port free in the relay range.
    Exhausted,
}

/// What the core needs from the edge: binding relay sockets and starting their readers.
pub trait RelayIo {
    /// An owned, bound relay socket. Dropping it closes the socket and frees the port.
    type Socket;
    /// Binds a relay socket of `family` on a port from the relay range.
    fn bind(
        &mut self,
        family: Family,
        port: PortChoice,
    ) -> Result<(Self::Socket, SocketAddr), BindError>;
    /// Starts delivering the socket's datagrams to [`Core::handle_peer`] with `key`.
    fn start(&mut self, socket: &mut Self::Socket, key: AllocKey, family: Family);
    /// Binds exactly `port` and holds it until `expires` for a later Allocate that
    /// presents the returned RESERVATION-TOKEN (EVEN-PORT with the R bit). Clients
    /// redeem tokens from another 5-tuple, which may belong to another shard, so
    /// reservations are process-wide and live at the edge.
    fn reserve(
        &mut self,
        family: Family,
        port: u16,
        expires: Instant,
    ) -> Result<[u8; 8], BindError> {
        let _ = (family, port, expires);
        Err(BindError::Exhausted)
    }
    /// Takes the socket reserved under `token`, if it is still reserved.
    fn redeem(&mut self, token: [u8; 8], now: Instant) -> Option<(Self::Socket, SocketAddr)> {
        let _ = (token, now);
        None
    }
}

/// The limits and parameters a core works with (one snapshot of the configuration).
#[derive(Debug)]
pub struct Settings {
    pub realm: String,
    pub software: Option<String>,
    pub secrets: Vec<Secret>,
    pub nonce_lifetime: u64,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub permissions_per_allocation: usize,
    pub channels_per_allocation: usize,
    pub policy: PeerPolicy,
    /// Announced instead of the bound relay IP, per family (NAT'd hosts).
    pub external_v4: Option<IpAddr>,
    pub external_v6: Option<IpAddr>,
    /// Unauthenticated answers per second per source prefix (0: unlimited), and burst.
    pub unauthenticated_rate: f64,
    pub unauthenticated_burst: f64,
    /// Relayed payload bytes per second per allocation, both directions together (0: unlimited).
    pub allocation_bandwidth: f64,
    /// Relayed payload bytes per second for this core's share of the process total (0: unlimited).
    pub shard_bandwidth: f64,
}

impl Settings {
    /// Settings with every limit at a permissive value, for tests and tools.
    pub fn permissive(realm: &str, secrets: Vec<Secret>, policy: PeerPolicy) -> Self {
        Self {
            realm: realm.to_string(),
            software: None,
            secrets,
            nonce_lifetime: 3600,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            permissions_per_allocation: 32,
            channels_per_allocation: 32,
            policy,
            external_v4: None,
            external_v6: None,
            unauthenticated_rate: 0.0,
            unauthenticated_burst: 0.0,
            allocation_bandwidth: 0.0,
            shard_bandwidth: 0.0,
        }
    }
}

/// Burst of a bandwidth bucket: one second of traffic, and never less than one
/// maximal datagram, so a limit cannot make large datagrams impossible.
fn bandwidth_burst(rate: f64) -> f64 {
    rate.max(65_535.0)
}

/// What to do with a datagram that came from a client.
#[derive(Debug)]
pub enum ClientAction<'s, 'd, S> {
    /// Nothing to send.
    None,
    /// Send `out[..len]` back to the client.
    Reply(usize),
    /// Send `payload` from the relay socket to `peer`.
    Relay {
        socket: &'s S,
        peer: SocketAddr,
        payload: &'d [u8],
    },
}

/// What to do with a datagram that arrived on a relay socket.
#[derive(Debug)]
pub enum PeerAction<'s, C> {
    /// Dropped (counted).
    None,
    /// Send `buf[frame]` to the client.
    Forward {
        link: &'s C,
        client: SocketAddr,
        frame: Range<usize>,
    },
}

/// Why an allocation ended (for the log line).
#[derive(Clone, Copy, Debug)]
enum EndReason {
    Expired,
    Deleted,
    ClientGone,
}

/// Containers smaller than this are never shrunk: not worth the reallocation.
const COMPACT_MIN: usize = 256;

/// The sans-IO server of one shard. `S` is the edge's relay socket type, `C` how the
/// edge reaches a client (a UDP listener socket, a stream's queue).
#[derive(Debug)]
pub struct Core<S, C> {
    settings: Arc<Settings>,
    nonce_key: Arc<NonceKey>,
    quotas: Arc<Quotas>,
    stats: Arc<Stats>,
    allocations: Slab<Allocation<S, C>>,
    /// Looked up for every client packet. foldhash with a per-process random seed:
    /// half of SipHash's cost per lookup, and the keys are inserted only after
    /// authentication (bounded by quotas), so flooding attacks have no lever here.
    by_five_tuple: HashMap<FiveTuple, usize, foldhash::fast::RandomState>,
    next_generation: u32,
    next_sweep: Option<Instant>,
    rng: u64,
    /// Unauthenticated answers per source prefix.
    unauthenticated: SourceLimiter,
    /// This core's share of the process-wide relay bandwidth.
    bandwidth: TokenBucket,
    /// Set when the daemon drains: new allocations are refused.
    draining: Arc<AtomicBool>,
}

impl<S, C: Clone> Core<S, C> {
    /// A core with no allocations.
    pub fn new(
        settings: Arc<Settings>,
        nonce_key: Arc<NonceKey>,
        quotas: Arc<Quotas>,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            settings,
            nonce_key,
            quotas,
            stats,
            allocations: Slab::new(),
            by_five_tuple: HashMap::default(),
            next_generation: 0,
            next_sweep: None,
            rng: rand::random::<u64>() | 1,
            unauthenticated: SourceLimiter::new(f64::MAX, Instant::now()),
            bandwidth: TokenBucket::new(f64::MAX, Instant::now()),
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Shares the process's drain flag with this core.
    pub fn set_drain_flag(&mut self, draining: Arc<AtomicBool>) {
        self.draining = draining;
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether `bytes` of payload between `alloc` and a peer at `peer_ip` may pass: a
    /// live permission for that IP, then bandwidth left in the allocation's bucket and
    /// in this core's share (charged only when the permission holds). The same gate for
    /// both directions and both framings.
    #[inline]
    fn admit(
        bandwidth: &mut TokenBucket,
        alloc: &mut Allocation<S, C>,
        settings: &Settings,
        peer_ip: IpAddr,
        bytes: usize,
        now: Instant,
    ) -> Result<(), DropReason> {
        if !alloc.permits(peer_ip, now) {
            return Err(DropReason::NoPermission);
        }
        let cost = bytes as f64;
        let a = settings.allocation_bandwidth;
        let s = settings.shard_bandwidth;
        if alloc.bandwidth.take(cost, a, bandwidth_burst(a), now)
            && bandwidth.take(cost, s, bandwidth_burst(s), now)
        {
            Ok(())
        } else {
            Err(DropReason::Bandwidth)
        }
    }

    /// Replaces the settings (reload). Allocations keep running; permissions and
    /// channels whose peers the new policy refuses are removed at once.
    pub fn set_settings(&mut self, settings: Arc<Settings>) {
        let policy = &settings.policy;
        let (mut perms, mut chans) = (0i64, 0i64);
        for (_, alloc) in self.allocations.iter_mut() {
            let before = (alloc.permissions.len(), alloc.channels.len());
            alloc
                .permissions
                .retain(|p| policy.classify(SocketAddr::new(p.ip, 0)).is_allowed());
            alloc
                .channels
                .retain(|c| policy.classify(c.peer).is_allowed());
            perms += (before.0 - alloc.permissions.len()) as i64;
            chans += (before.1 - alloc.channels.len()) as i64;
        }
        self.stats.permissions_active(-perms);
        self.stats.channels_active(-chans);
        self.settings = settings;
    }

    /// Number of live allocations in this core.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Whether `five_tuple` holds an allocation.
    pub fn has_allocation(&self, five_tuple: &FiveTuple) -> bool {
        self.by_five_tuple.contains_key(five_tuple)
    }

    /// Handles one datagram (or stream frame) from a client.
    pub fn handle_client<'s, 'd, IO: RelayIo<Socket = S>>(
        &'s mut self,
        now: Now,
        five_tuple: FiveTuple,
        link: &C,
        data: &'d [u8],
        out: &mut [u8],
        io: &mut IO,
    ) -> ClientAction<'s, 'd, S> {
        match proto::sniff(data) {
            Kind::ChannelData => self.client_channel_data(now, &five_tuple, data),
            Kind::Stun => self.client_stun(now, five_tuple, link, data, out, io),
            Kind::Other => {
                self.stats.discard(DropReason::Malformed);
                ClientAction::None
            }
        }
    }

    fn client_channel_data<'s, 'd>(
        &'s mut self,
        now: Now,
        five_tuple: &FiveTuple,
        data: &'d [u8],
    ) -> ClientAction<'s, 'd, S> {
        let Ok(frame) = proto::parse_channel_data(data) else {
            self.stats.discard(DropReason::Malformed);
            return ClientAction::None;
        };
        let Some(alloc) = self
            .by_five_tuple
            .get(five_tuple)
            .and_then(|&i| self.allocations.get_mut(i))
        else {
            self.stats.discard(DropReason::NoAllocation);
            return ClientAction::None;
        };
        let Some(channel) = alloc.channel_numbered(frame.channel, now.mono) else {
            self.stats.discard(DropReason::NoChannel);
            return ClientAction::None;
        };
        let peer = channel.peer;
        if let Err(reason) = Self::admit(
            &mut self.bandwidth,
            alloc,
            &self.settings,
            peer.ip(),
            frame.data.len(),
            now.mono,
        ) {
            self.stats.discard(reason);
            return ClientAction::None;
        }
        let Some(relay) = alloc.relay_for(&peer) else {
            self.stats.discard(DropReason::NoAllocation);
            return ClientAction::None;
        };
        self.stats.relayed(Direction::ToPeer, frame.data.len());
        ClientAction::Relay {
            socket: &relay.socket,
            peer,
            payload: frame.data,
        }
    }

    /// Send indication: relay its DATA to its XOR-PEER-ADDRESS if policy allows that
    /// exact transport address (permissions are per IP, and the own-port loop
    /// protection is per port) and a permission exists.
    fn send_indication<'s, 'd>(
        &'s mut self,
        now: Now,
        five_tuple: &FiveTuple,
        msg: &proto::Message<'d>,
    ) -> ClientAction<'s, 'd, S> {
        use proto::attr;
        let tid = msg.transaction_id();
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|a| attr::decode_xor_address(a.value, &tid).ok());
        let data = msg.get(attr::DATA).map(|a| a.value);
        let (Some(peer), Some(data)) = (peer, data) else {
            self.stats.discard(DropReason::Malformed);
            return ClientAction::None;
        };
        let Some(alloc) = self
            .by_five_tuple
            .get(five_tuple)
            .and_then(|&i| self.allocations.get_mut(i))
        else {
            self.stats.discard(DropReason::NoAllocation);
            return ClientAction::None;
        };
        if let Err(reason) = Self::admit(
            &mut self.bandwidth,
            alloc,
            &self.settings,
            peer.ip(),
            data.len(),
            now.mono,
        ) {
            self.stats.discard(reason);
            return ClientAction::None;
        }
        if !self.settings.policy.classify(peer).is_allowed() {
            self.stats.discard(DropReason::PeerDenied);
            self.stats.denied();
            return ClientAction::None;
        }
        let Some(relay) = alloc.relay_for(&peer) else {
            self.stats.discard(DropReason::NoPermission);
            return ClientAction::None;
        };
        self.stats.relayed(Direction::ToPeer, data.len());
        ClientAction::Relay {
            socket: &relay.socket,
            peer,
            payload: data,
        }
    }

    /// Handles a datagram that arrived from `peer` on a relay socket of allocation `key`.
    ///
    /// The payload sits in `buf[at..at + len]`, with at least [`PEER_HEADROOM`] bytes
    /// before it and [`PEER_TAILROOM`] after it; the header is written in place.
    pub fn handle_peer(
        &mut self,
        now: Now,
        key: AllocKey,
        peer: SocketAddr,
        buf: &mut [u8],
        at: usize,
        len: usize,
    ) -> PeerAction<'_, C> {
        let Some(alloc) = self
            .allocations
            .get_mut(key.index as usize)
            .filter(|a| a.generation == key.generation && a.expires > now.mono)
        else {
            self.stats.discard(DropReason::NoAllocation);
            return PeerAction::None;
        };
        if at < PEER_HEADROOM || at + len + PEER_TAILROOM > buf.len() || len > 0xFFFF - 64 {
            self.stats.discard(DropReason::TooLarge);
            return PeerAction::None;
        }
        if let Err(reason) = Self::admit(
            &mut self.bandwidth,
            alloc,
            &self.settings,
            peer.ip(),
            len,
            now.mono,
        ) {
            self.stats.discard(reason);
            return PeerAction::None;
        }
        let stream = alloc.five_tuple.transport.is_stream();
        let frame = if let Some(channel) = alloc.channel_to(&peer, now.mono) {
            let start = at - proto::CHANNEL_DATA_HEADER_LEN;
            if proto::channel::write_channel_data_header(
                &mut buf[start..at],
                channel.number,
                len as u16,
            )
            .is_err()
            {
                self.stats.discard(DropReason::TooLarge);
                return PeerAction::None;
            }
            let mut end = at + len;
            if stream {
                let padded = (len + 3) & !3;
                buf[end..at + padded].fill(0);
                end = at + padded;
            }
            start..end
        } else {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let mut tid = [0u8; 12];
            tid[..8].copy_from_slice(&self.rng.to_le_bytes());
            tid[8..].copy_from_slice(&(self.rng.rotate_left(29) as u32).to_le_bytes());
            match requests::write_data_indication_header(
                buf,
                at,
                len,
                proto::TransactionId(tid),
                peer,
            ) {
                Some(range) => range,
                None => {
                    self.stats.discard(DropReason::TooLarge);
                    return PeerAction::None;
                }
            }
        };
        self.stats.relayed(Direction::ToClient, len);
        PeerAction::Forward {
            link: &alloc.client,
            client: alloc.five_tuple.client,
            frame,
        }
    }

    /// When [`Core::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.allocations.is_empty() {
            None
        } else {
            self.next_sweep
        }
    }

    /// Expires allocations, permissions and channels.
    /// The edge calls this about once per [`SWEEP_INTERVAL`] (or at [`Core::poll_timeout`]);
    /// every call sweeps, so a tick that comes a little early is not skipped.
    pub fn handle_timeout(&mut self, now: Now) {
        self.next_sweep = Some(now.mono + SWEEP_INTERVAL);
        let expired: Vec<usize> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now.mono)
            .map(|(i, _)| i)
            .collect();
        for index in expired {
            self.remove(index, now, EndReason::Expired);
        }
        let (mut perms, mut chans) = (0, 0);
        for (_, alloc) in self.allocations.iter_mut() {
            let (p, c) = alloc.purge(now.mono);
            perms += p;
            chans += c;
        }
        self.stats.permissions_active(-(perms as i64));
        self.stats.channels_active(-(chans as i64));
    }

    /// Gives back container memory after many allocations ended: the slab and the
    /// 5-tuple map keep their peak capacity otherwise (Rust collections never shrink
    /// on their own), which after a busy hour is most of what the process holds.
    /// Shrinks only when less than a quarter is used, so a steady table never thrashes.
    /// Returns true when something shrank (a good moment to return freed memory to the
    /// operating system).
    pub fn compact(&mut self) -> bool {
        let mut shrank = false;
        let len = self.allocations.len();
        if self.allocations.capacity() >= COMPACT_MIN && len < self.allocations.capacity() / 4 {
            if len == 0 {
                self.allocations = Slab::new();
            } else {
                // Cannot move live entries (their index is their key): trims the tail.
                self.allocations.shrink_to_fit();
            }
            shrank = true;
        }
        let len = self.by_five_tuple.len();
        if self.by_five_tuple.capacity() >= COMPACT_MIN && len < self.by_five_tuple.capacity() / 4 {
            self.by_five_tuple.shrink_to(len * 2);
            shrank = true;
        }
        self.quotas.compact() || shrank
    }

    /// The client's stream closed: its allocation ends (RFC 8656 3.1).
    pub fn client_closed(&mut self, five_tuple: &FiveTuple, now: Now) {
        if let Some(&index) = self.by_five_tuple.get(five_tuple) {
            self.remove(index, now, EndReason::ClientGone);
        }
    }

    fn remove(&mut self, index: usize, now: Now, why: EndReason) {
        let Some(alloc) = self.allocations.try_remove(index) else {
            return;
        };
        self.by_five_tuple.remove(&alloc.five_tuple);
        let transport = alloc.five_tuple.transport.label();
        for family in alloc.families() {
            self.stats
                .allocations_active(transport, family_label(family), -1);
        }
        self.stats
            .permissions_active(-(alloc.permissions.len() as i64));
        self.stats.channels_active(-(alloc.channels.len() as i64));
        let lived = now.mono.saturating_duration_since(alloc.created);
        self.stats.allocation_lived(lived);
        tracing::info!(
            client = %crate::redact::client(alloc.five_tuple.client),
            transport = transport.label(),
            reason = ?why,
            seconds = lived.as_secs(),
            "allocation ended"
        );
        // Dropping `alloc` closes its relay sockets and returns its quota slot.
    }

    fn schedule_sweep(&mut self, now: Now) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now.mono + SWEEP_INTERVAL);
        }
    }
}

#[cfg(test)]
mod tests;
