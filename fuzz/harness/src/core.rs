//! The `core` target: one sans-IO [`Core`] with an in-memory [`RelayIo`], driven by a
//! [`Scenario`] decoded from the fuzz input.
//!
//! # Input format
//! A [`Scenario`] implements [`Arbitrary`] by hand over a simple, forward-only byte
//! format (see [`Scenario::encode`]), so seeds can be written by `gen-seeds` and a
//! crasher can be read back with [`Scenario::decode`] and `{:#?}`:
//! two config bytes, then up to [`MAX_ACTIONS`] actions, each an opcode byte and its
//! fields. Missing bytes read as zero, so every input decodes.
//!
//! # What the harness knows
//! It holds the REST secret, the realm and the nonce key, so `Request` actions carry
//! valid (or deliberately wrong) USERNAME/REALM/NONCE/MESSAGE-INTEGRITY; a nonce can
//! also be the one from the last 401/438 the core sent on that five-tuple. It keeps a
//! model of what the core granted (permissions and channels with their expiry, per
//! five-tuple) from the success responses it saw.
//!
//! # Invariants (checked after every action; a failure panics)
//! - never panic; `allocation_count()` equals the quota's total, and no allocation is
//!   created while the total quota is full or while draining;
//! - every `Reply(n)` has `n <= out.len()`, answers a STUN request and parses as a
//!   success or error response with the request's method and transaction id, echoes
//!   FINGERPRINT exactly when the request had one, never carries SOFTWARE, carries
//!   REALM and a valid NONCE on 401/438, a MESSAGE-INTEGRITY that verifies with the
//!   requester's key on every non-Binding success, the client's address on Binding;
//! - every well-formed request gets an answer (unless unauthenticated rate limiting is on
//!   and the five-tuple has no allocation);
//! - `Relay` goes out through a socket owned by the sending five-tuple's allocation,
//!   of the peer's family, to a peer the current policy allows, which the model says
//!   has a live permission (and, for ChannelData, a live channel to that peer);
//!   the payload is exactly what the client sent;
//! - `PeerAction::Forward` goes to the five-tuple that owns the allocation, lies within
//!   the buffer, and parses as ChannelData (padded on streams) for a live channel to
//!   that peer, or as a Data indication with that peer and payload when no channel is
//!   live; the peer has a live permission and passes the current policy;
//! - once every timer has run out, nothing is left: no allocation, no quota slot, no
//!   bound port, and every gauge back at zero.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use tarn::auth::{self, NonceCheck, NonceKey, Secret};
use tarn::policy::{OwnAddresses, PeerPolicy};
use tarn::proto::{
    self, Class, Family, Kind, Message, MessageWriter, Method, TransactionId, attr, integrity,
};
use tarn::relay::{
    AllocKey, BindError, ClientAction, Core, FiveTuple, Now, PEER_HEADROOM, PEER_TAILROOM,
    PeerAction, PortChoice, Quotas, RelayIo, Settings, Transport,
};
use tarn::stats::Stats;

/// Most actions one input runs.
pub const MAX_ACTIONS: usize = 64;

pub const REALM: &str = "fuzz.example";
pub const SECRET: &[u8] = b"fuzz-secret";
pub const OLD_SECRET: &[u8] = b"fuzz-old-secret";
const WRONG_SECRET: &[u8] = b"not-a-secret";
/// Unix time the scenario starts at (fixed, so inputs replay identically).
pub const BASE_UNIX: u64 = 1_900_000_000;
const NONCE_KEY: [u8; 32] = [0x42; 32];
const USER_IDS: [&str; 3] = ["alice", "bob", ""];
const RELAY_V4: [u8; 4] = [93, 184, 216, 34];
const RELAY_V6: &str = "2606:2800:220:1::10";
const PORT_LO: u16 = 50000;
const OUT_LEN: usize = 2048;
const BIG: usize = 70_000;

/// Methods a `Request` can name (index modulo the length).
pub const METHODS: [Method; 9] = [
    Method::BINDING,
    Method::ALLOCATE,
    Method::REFRESH,
    Method::CREATE_PERMISSION,
    Method::CHANNEL_BIND,
    Method::SEND,
    Method::DATA,
    Method::CONNECT,
    Method(0x0FFF),
];

/// `Request::flags` bits.
pub mod flags {
    /// Append FINGERPRINT.
    pub const FINGERPRINT: u8 = 1;
    /// Send as an indication instead of a request.
    pub const INDICATION: u8 = 2;
    /// Reuse the five-tuple's previous transaction id (a retransmission).
    pub const RETRANSMIT: u8 = 4;
    /// XOR one byte of the finished message (`Request::mutate`).
    pub const MUTATE: u8 = 8;
    /// Do not add REQUESTED-TRANSPORT=UDP to an Allocate automatically.
    pub const NO_AUTO_TRANSPORT: u8 = 16;
}

/// `Request::cred` low three bits (the user is `(cred >> 3) % 3`).
pub mod cred {
    pub const NONE: u8 = 0;
    pub const GOOD: u8 = 1;
    pub const OLD_SECRET: u8 = 2;
    pub const WRONG_SECRET: u8 = 3;
    pub const EXPIRED: u8 = 4;
    pub const STALE_NONCE: u8 = 5;
    pub const OTHER_TUPLE_NONCE: u8 = 6;
    /// The NONCE of the last 401/438 on this five-tuple (a fresh one if none yet).
    pub const CHALLENGE_NONCE: u8 = 7;
}

// ---------------------------------------------------------------------------------
// Input model and its byte format
// ---------------------------------------------------------------------------------

/// One fuzz input: settings and a sequence of actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// bit0: no IPv6 relay; bit1: 4 relay ports per family instead of 32;
    /// bits2-3: permissions per allocation (0 means 4); bits4-5: channels per
    /// allocation (0 means 4); bit6: allow 10.0.0.0/8; bit7: allow-list only.
    pub config: u8,
    /// bit0: rate-limit unauthenticated answers; bit1: per-allocation bandwidth limit;
    /// bit2: shard bandwidth limit; bits3-4: total quota (0 means 4);
    /// bit5: per-user quota 1 instead of 2; bit6: per-address quota 1 instead of 3.
    pub limits: u8,
    pub actions: Vec<Action>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Arbitrary bytes from a client five-tuple (`ft % 4`).
    Raw { ft: u8, bytes: Vec<u8> },
    /// A built STUN request, authenticated as `cred` says.
    Request(Request),
    /// A Send indication (`flags`: bit0 FINGERPRINT, bit1 no DATA, bit2 no peer).
    Send {
        ft: u8,
        peer: PeerSpec,
        data: Payload,
        flags: u8,
    },
    /// A ChannelData frame (`trailing & 7` extra zero bytes; bit7: length field one too long).
    ChannelData {
        ft: u8,
        channel: u16,
        data: Payload,
        trailing: u8,
    },
    /// A datagram from `peer` on the relay socket of the `alloc`-th allocation ever started.
    /// `room` bit7: misbehaving edge, headroom `room & 0x3f`, tailroom `(room >> 6) & 1`.
    Peer {
        alloc: u8,
        peer: PeerSpec,
        data: Payload,
        room: u8,
    },
    /// Time passes, then `handle_timeout`.
    Advance { secs: u16 },
    /// `handle_timeout` without time passing.
    Timeout,
    /// The client's stream closed (`client_closed`).
    Close { ft: u8 },
    /// Toggle the drain flag.
    Drain,
    /// Reload: new settings from a config byte and a limits byte (same bits as the scenario's).
    Reload { config: u8, limits: u8 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub ft: u8,
    /// Index into [`METHODS`].
    pub method: u8,
    /// See [`cred`].
    pub cred: u8,
    /// See [`flags`].
    pub flags: u8,
    pub attrs: Vec<AttrSpec>,
    /// (position modulo the length, XOR mask), applied when [`flags::MUTATE`] is set.
    pub mutate: (u16, u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrSpec {
    Transport(u8),
    /// See [`lifetime_value`].
    Lifetime(u32),
    Peer(PeerSpec),
    /// See [`channel_value`].
    Channel(u16),
    EvenPort(u8),
    /// A RESERVATION-TOKEN seen in an earlier response (index modulo their number).
    Token(u8),
    TokenRaw([u8; 8]),
    /// See [`family_value`].
    RequestedFamily(u8),
    AdditionalFamily(u8),
    DontFragment,
    Raw {
        typ: u16,
        value: Vec<u8>,
    },
    Data(Payload),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSpec {
    /// Index into [`fixed_peers`] (tag byte below 0xF0).
    Fixed(u8),
    V4([u8; 4], u16),
    V6([u8; 16], u16),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// At most 127 bytes.
    Bytes(Vec<u8>),
    Repeat {
        byte: u8,
        len: u16,
    },
}

struct Reader<'a, 'b> {
    u: &'b mut Unstructured<'a>,
}

impl<'a> Reader<'a, '_> {
    fn u8(&mut self) -> u8 {
        u8::arbitrary(self.u).unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.u8())
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.u.len());
        self.u.bytes(n).map(<[u8]>::to_vec).unwrap_or_default()
    }
    fn done(&self) -> bool {
        self.u.is_empty()
    }
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

impl PeerSpec {
    fn read(r: &mut Reader<'_, '_>) -> Self {
        match r.u8() {
            b @ 0..=0xEF => PeerSpec::Fixed(b),
            0xF0..=0xF7 => PeerSpec::V4(r.array(), r.u16()),
            _ => PeerSpec::V6(r.array(), r.u16()),
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            PeerSpec::Fixed(b) => out.push((*b).min(0xEF)),
            PeerSpec::V4(ip, port) => {
                out.push(0xF0);
                out.extend_from_slice(ip);
                put16(out, *port);
            }
            PeerSpec::V6(ip, port) => {
                out.push(0xF8);
                out.extend_from_slice(ip);
                put16(out, *port);
            }
        }
    }
    fn resolve(&self) -> SocketAddr {
        match self {
            PeerSpec::Fixed(b) => {
                let peers = fixed_peers();
                peers[usize::from(*b) % peers.len()]
            }
            PeerSpec::V4(ip, port) => SocketAddr::from((*ip, *port)),
            PeerSpec::V6(ip, port) => SocketAddr::from((*ip, *port)),
        }
    }
}

impl Payload {
    fn read(r: &mut Reader<'_, '_>) -> Self {
        let b = r.u8();
        if b & 0x80 == 0 {
            Payload::Bytes(r.bytes(usize::from(b)))
        } else {
            Payload::Repeat {
                byte: r.u8(),
                len: r.u16(),
            }
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Bytes(v) => {
                let v = &v[..v.len().min(0x7F)];
                out.push(v.len() as u8);
                out.extend_from_slice(v);
            }
            Payload::Repeat { byte, len } => {
                out.extend_from_slice(&[0x80, *byte]);
                put16(out, *len);
            }
        }
    }
    fn bytes(&self) -> Vec<u8> {
        match self {
            Payload::Bytes(v) => v.clone(),
            Payload::Repeat { byte, len } => vec![*byte; usize::from(*len)],
        }
    }
}

impl AttrSpec {
    const KINDS: u8 = 12;
    fn read(r: &mut Reader<'_, '_>) -> Self {
        match r.u8() % Self::KINDS {
            0 => AttrSpec::Transport(r.u8()),
            1 => AttrSpec::Lifetime(r.u32()),
            2 => AttrSpec::Peer(PeerSpec::read(r)),
            3 => AttrSpec::Channel(r.u16()),
            4 => AttrSpec::EvenPort(r.u8()),
            5 => AttrSpec::Token(r.u8()),
            6 => AttrSpec::TokenRaw(r.array()),
            7 => AttrSpec::RequestedFamily(r.u8()),
            8 => AttrSpec::AdditionalFamily(r.u8()),
            9 => AttrSpec::DontFragment,
            10 => {
                let typ = r.u16();
                let n = usize::from(r.u8());
                AttrSpec::Raw {
                    typ,
                    value: r.bytes(n),
                }
            }
            _ => AttrSpec::Data(Payload::read(r)),
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            AttrSpec::Transport(p) => out.extend_from_slice(&[0, *p]),
            AttrSpec::Lifetime(x) => {
                out.push(1);
                out.extend_from_slice(&x.to_be_bytes());
            }
            AttrSpec::Peer(p) => {
                out.push(2);
                p.write(out);
            }
            AttrSpec::Channel(c) => {
                out.push(3);
                put16(out, *c);
            }
            AttrSpec::EvenPort(b) => out.extend_from_slice(&[4, *b]),
            AttrSpec::Token(i) => out.extend_from_slice(&[5, *i]),
            AttrSpec::TokenRaw(t) => {
                out.push(6);
                out.extend_from_slice(t);
            }
            AttrSpec::RequestedFamily(f) => out.extend_from_slice(&[7, *f]),
            AttrSpec::AdditionalFamily(f) => out.extend_from_slice(&[8, *f]),
            AttrSpec::DontFragment => out.push(9),
            AttrSpec::Raw { typ, value } => {
                out.push(10);
                put16(out, *typ);
                let v = &value[..value.len().min(0xFF)];
                out.push(v.len() as u8);
                out.extend_from_slice(v);
            }
            AttrSpec::Data(p) => {
                out.push(11);
                p.write(out);
            }
        }
    }
}

impl Action {
    const KINDS: u8 = 10;
    fn read(r: &mut Reader<'_, '_>) -> Self {
        match r.u8() % Self::KINDS {
            0 => {
                let ft = r.u8();
                let n = usize::from(r.u16());
                Action::Raw {
                    ft,
                    bytes: r.bytes(n),
                }
            }
            1 => {
                let ft = r.u8();
                let method = r.u8();
                let cred = r.u8();
                let flags = r.u8();
                let n = r.u8() % 9;
                let attrs = (0..n).map(|_| AttrSpec::read(r)).collect();
                let mutate = if flags & flags::MUTATE != 0 {
                    (r.u16(), r.u8())
                } else {
                    (0, 0)
                };
                Action::Request(Request {
                    ft,
                    method,
                    cred,
                    flags,
                    attrs,
                    mutate,
                })
            }
            2 => Action::Send {
                ft: r.u8(),
                peer: PeerSpec::read(r),
                data: Payload::read(r),
                flags: r.u8(),
            },
            3 => Action::ChannelData {
                ft: r.u8(),
                channel: r.u16(),
                data: Payload::read(r),
                trailing: r.u8(),
            },
            4 => Action::Peer {
                alloc: r.u8(),
                peer: PeerSpec::read(r),
                data: Payload::read(r),
                room: r.u8(),
            },
            5 => Action::Advance { secs: r.u16() },
            6 => Action::Timeout,
            7 => Action::Close { ft: r.u8() },
            8 => Action::Drain,
            _ => Action::Reload {
                config: r.u8(),
                limits: r.u8(),
            },
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Action::Raw { ft, bytes } => {
                out.extend_from_slice(&[0, *ft]);
                let b = &bytes[..bytes.len().min(0xFFFF)];
                put16(out, b.len() as u16);
                out.extend_from_slice(b);
            }
            Action::Request(q) => {
                let attrs = &q.attrs[..q.attrs.len().min(8)];
                out.extend_from_slice(&[1, q.ft, q.method, q.cred, q.flags, attrs.len() as u8]);
                for a in attrs {
                    a.write(out);
                }
                if q.flags & flags::MUTATE != 0 {
                    put16(out, q.mutate.0);
                    out.push(q.mutate.1);
                }
            }
            Action::Send {
                ft,
                peer,
                data,
                flags,
            } => {
                out.extend_from_slice(&[2, *ft]);
                peer.write(out);
                data.write(out);
                out.push(*flags);
            }
            Action::ChannelData {
                ft,
                channel,
                data,
                trailing,
            } => {
                out.extend_from_slice(&[3, *ft]);
                put16(out, *channel);
                data.write(out);
                out.push(*trailing);
            }
            Action::Peer {
                alloc,
                peer,
                data,
                room,
            } => {
                out.extend_from_slice(&[4, *alloc]);
                peer.write(out);
                data.write(out);
                out.push(*room);
            }
            Action::Advance { secs } => {
                out.push(5);
                put16(out, *secs);
            }
            Action::Timeout => out.push(6),
            Action::Close { ft } => out.extend_from_slice(&[7, *ft]),
            Action::Drain => out.push(8),
            Action::Reload { config, limits } => out.extend_from_slice(&[9, *config, *limits]),
        }
    }
}

impl<'a> Arbitrary<'a> for Scenario {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut r = Reader { u };
        let config = r.u8();
        let limits = r.u8();
        let mut actions = Vec::new();
        while !r.done() && actions.len() < MAX_ACTIONS {
            actions.push(Action::read(&mut r));
        }
        Ok(Scenario {
            config,
            limits,
            actions,
        })
    }
}

impl Scenario {
    /// Decodes an input the way the fuzz target does.
    pub fn decode(data: &[u8]) -> Scenario {
        Scenario::arbitrary_take_rest(Unstructured::new(data)).expect("every input decodes")
    }

    /// The bytes that [`Scenario::decode`] turns back into this scenario (for seeds).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.config, self.limits];
        for a in self.actions.iter().take(MAX_ACTIONS) {
            a.write(&mut out);
        }
        out
    }
}

/// Maps a LIFETIME spec to a value: small specs pick interesting values, others are raw.
pub fn lifetime_value(x: u32) -> u32 {
    const PICKS: [u32; 10] = [0, 1, 599, 600, 601, 1800, 3599, 3600, 3601, u32::MAX];
    if x < 0x1000_0000 {
        PICKS[x as usize % PICKS.len()]
    } else {
        x
    }
}

/// Maps a channel spec: below 0xC000 one of 16 channels from 0x4000 (so numbers
/// collide), 0xC000..=0xDFFF a value at an edge of some channel range, above that raw.
pub fn channel_value(spec: u16) -> u16 {
    const EDGES: [u16; 8] = [
        0x3FFF, 0x4FFF, 0x5000, 0x7FFF, 0x8000, 0x0000, 0xFFFF, 0x4000,
    ];
    match spec {
        0..0xC000 => 0x4000 + spec % 16,
        0xC000..0xE000 => EDGES[usize::from(spec) % EDGES.len()],
        _ => spec,
    }
}

/// Maps a family spec: below 0x80 IPv4 or IPv6, above it the raw byte.
pub fn family_value(spec: u8) -> u8 {
    if spec < 0x80 { 1 + spec % 2 } else { spec }
}

/// Peers a [`PeerSpec::Fixed`] names: allowed IPv4/IPv6, denied ranges, encodings of
/// IPv4 in IPv6, the relay's own address, and repeated IPs on other ports.
pub fn fixed_peers() -> [SocketAddr; 16] {
    [
        "8.8.4.4:5000",
        "9.9.9.9:443",
        "[2001:4860:4860::8888]:3478",
        "[2606:4700::1111]:53",
        "10.0.0.1:5000",
        "127.0.0.1:3478",
        "[::ffff:8.8.4.4]:5000",
        "[64:ff9b::a00:1]:80",
        "[2002:808:404::1]:9",
        "93.184.216.34:50000",
        "[::1]:1",
        "0.0.0.0:0",
        "255.255.255.255:9",
        "[fe80::1]:5",
        "8.8.4.4:5001",
        "[2001:4860:4860::8888]:9",
    ]
    .map(|s| s.parse().expect("literal"))
}

/// The four client five-tuples: UDP v4, UDP v6, TCP v4, TCP v6 (the v6 clients share a /64).
pub fn five_tuples() -> [FiveTuple; 4] {
    let t = |transport, client: &str, server: &str| FiveTuple {
        transport,
        client: client.parse().expect("literal"),
        server: server.parse().expect("literal"),
    };
    [
        t(Transport::Udp, "198.51.100.7:40000", "203.0.113.1:3478"),
        t(Transport::Udp, "[2001:db8::7]:40001", "[2001:db8::1]:3478"),
        t(Transport::Tcp, "198.51.100.8:40002", "203.0.113.1:3478"),
        t(Transport::Tcp, "[2001:db8::8]:40003", "[2001:db8::1]:3478"),
    ]
}

// ---------------------------------------------------------------------------------
// The fake edge
// ---------------------------------------------------------------------------------

type Ports = Rc<RefCell<HashSet<(Family, u16)>>>;

/// A relay "socket": a port held in the fake's table until dropped.
#[derive(Debug)]
pub struct FakeSocket {
    id: u64,
    family: Family,
    port: u16,
    ports: Ports,
}

impl Drop for FakeSocket {
    fn drop(&mut self) {
        let freed = self.ports.borrow_mut().remove(&(self.family, self.port));
        assert!(freed, "relay port {} closed twice", self.port);
    }
}

struct FakeIo {
    v6: bool,
    port_hi: u16,
    ports: Ports,
    next_id: u64,
    /// The five-tuple whose datagram the core is handling (owner of started sockets).
    current_ft: usize,
    /// Sockets started during the current call: (id, bound address).
    started_now: Vec<(u64, SocketAddr)>,
    socket_owner: HashMap<u64, usize>,
    key_owner: HashMap<AllocKey, usize>,
    /// Every allocation key ever started, in order.
    keys: Vec<AllocKey>,
    /// Ports held for a RESERVATION-TOKEN: (token, socket, address, expiry).
    reserved: Vec<([u8; 8], FakeSocket, SocketAddr, Instant)>,
    next_token: u64,
}

impl FakeIo {
    /// The edge's own expiry of reservations (the core no longer holds them).
    fn purge(&mut self, now: Instant) {
        self.reserved.retain(|r| r.3 > now);
    }
}

fn relay_ip(f: Family) -> IpAddr {
    match f {
        Family::V4 => IpAddr::from(RELAY_V4),
        Family::V6 => RELAY_V6.parse().expect("literal"),
    }
}

impl RelayIo for FakeIo {
    type Socket = FakeSocket;

    fn bind(
        &mut self,
        family: Family,
        choice: PortChoice,
    ) -> Result<(FakeSocket, SocketAddr), BindError> {
        if family == Family::V6 && !self.v6 {
            return Err(BindError::FamilyUnavailable);
        }
        let free = |p: u16| !self.ports.borrow().contains(&(family, p));
        let port = match choice {
            PortChoice::Any => (PORT_LO..=self.port_hi).find(|p| free(*p)),
            PortChoice::Even => (PORT_LO..=self.port_hi).find(|p| p % 2 == 0 && free(*p)),
            PortChoice::Exact(p) => {
                Some(p).filter(|p| (PORT_LO..=self.port_hi).contains(p) && free(*p))
            }
        }
        .ok_or(BindError::Exhausted)?;
        self.ports.borrow_mut().insert((family, port));
        self.next_id += 1;
        let socket = FakeSocket {
            id: self.next_id,
            family,
            port,
            ports: Rc::clone(&self.ports),
        };
        Ok((socket, SocketAddr::new(relay_ip(family), port)))
    }

    fn start(&mut self, socket: &mut FakeSocket, key: AllocKey, family: Family) {
        assert_eq!(
            socket.family, family,
            "start() with another family than bind()"
        );
        let old = self.socket_owner.insert(socket.id, self.current_ft);
        assert!(old.is_none(), "relay socket started twice");
        match self.key_owner.get(&key) {
            Some(&owner) => assert_eq!(owner, self.current_ft, "one key, two five-tuples"),
            None => {
                self.key_owner.insert(key, self.current_ft);
                self.keys.push(key);
            }
        }
        self.started_now
            .push((socket.id, SocketAddr::new(relay_ip(family), socket.port)));
    }

    fn reserve(
        &mut self,
        family: Family,
        port: u16,
        expires: Instant,
    ) -> Result<[u8; 8], BindError> {
        let (socket, addr) = self.bind(family, PortChoice::Exact(port))?;
        self.next_token += 1;
        let mut token = *b"rsv\0\0\0\0\0";
        token[3..].copy_from_slice(&self.next_token.to_be_bytes()[3..]);
        self.reserved.push((token, socket, addr, expires));
        Ok(token)
    }

    fn redeem(&mut self, token: [u8; 8], now: Instant) -> Option<(FakeSocket, SocketAddr)> {
        let i = self
            .reserved
            .iter()
            .position(|r| r.0 == token && r.3 > now)?;
        let (_, socket, addr, _) = self.reserved.swap_remove(i);
        Some((socket, addr))
    }
}

// ---------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------

/// What the model knows one five-tuple's current allocation was granted.
#[derive(Default, Clone)]
struct Granted {
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
}

struct Limits {
    total: u32,
    per_user: u32,
    per_address: u32,
}

/// 0 -> 4 (the roomy default), otherwise the value itself (1..=3).
fn pick4(bits: u8) -> u8 {
    if bits == 0 { 4 } else { bits }
}

fn limits_of(byte: u8) -> Limits {
    Limits {
        total: u32::from(pick4((byte >> 3) & 3)),
        per_user: if byte & 0x20 != 0 { 1 } else { 2 },
        per_address: if byte & 0x40 != 0 { 1 } else { 3 },
    }
}

fn settings_of(config: u8, limits: u8) -> Settings {
    let mut allow = Vec::new();
    if config & 0x40 != 0 {
        allow.push("10.0.0.0/8".parse().expect("literal"));
    }
    let own = OwnAddresses {
        ips: vec![relay_ip(Family::V4), relay_ip(Family::V6)],
        ports: vec![3478],
        relay_ports: PORT_LO..=PORT_LO + 31,
    };
    let policy = PeerPolicy::new(allow, config & 0x80 != 0, own);
    let secrets = vec![
        Secret::new(OLD_SECRET.to_vec()),
        Secret::new(SECRET.to_vec()),
    ];
    let mut s = Settings::permissive(REALM, secrets, policy);
    s.nonce_lifetime = 3600;
    s.permissions_per_allocation = usize::from(pick4((config >> 2) & 3));
    s.channels_per_allocation = usize::from(pick4((config >> 4) & 3));
    if limits & 1 != 0 {
        s.unauthenticated_rate = 1.0;
        s.unauthenticated_burst = 4.0;
    }
    if limits & 2 != 0 {
        s.allocation_bandwidth = 70_000.0;
    }
    if limits & 4 != 0 {
        s.shard_bandwidth = 100_000.0;
    }
    s
}

struct Harness {
    core: Core<FakeSocket, usize>,
    io: FakeIo,
    settings: Arc<Settings>,
    quotas: Arc<Quotas>,
    quota_total: u32,
    stats: Arc<Stats>,
    nonce_key: Arc<NonceKey>,
    draining: Arc<AtomicBool>,
    now: Now,
    out: Vec<u8>,
    fts: [FiveTuple; 4],
    usernames: [String; 3],
    last_tid: [Option<TransactionId>; 4],
    tid_counter: u64,
    challenge: [Option<Vec<u8>>; 4],
    tokens: Vec<[u8; 8]>,
    granted: [Granted; 4],
    trace: bool,
}

/// What a client datagram is expected to be, for checking a `Relay`.
enum Sent {
    Raw,
    Send {
        peer: SocketAddr,
        data: Vec<u8>,
    },
    ChannelData {
        channel: u16,
        data: Vec<u8>,
    },
    Request {
        key: Option<[u8; 16]>,
        must_answer: bool,
    },
}

/// A `ClientAction` copied out of the core's borrow.
enum Outcome {
    None,
    Reply(usize),
    Relay {
        socket: u64,
        family: Family,
        peer: SocketAddr,
        payload: Vec<u8>,
        within: bool,
    },
}

/// Runs one fuzz input.
pub fn run(data: &[u8]) {
    execute(&Scenario::decode(data));
}

/// Runs a decoded scenario, checking every invariant. With `TARN_FUZZ_TRACE` set in
/// the environment, prints each action and what the core did with it.
pub fn execute(s: &Scenario) {
    let mut h = Harness::new(s.config, s.limits);
    h.trace = std::env::var_os("TARN_FUZZ_TRACE").is_some();
    for action in &s.actions {
        if h.trace {
            eprintln!("-> {action:?}");
        }
        h.step(action);
        h.check_global();
    }
    h.finish();
}

fn fresh_tid(counter: u64, ft: usize) -> TransactionId {
    let mut t = [0u8; 12];
    t[..8].copy_from_slice(&counter.to_be_bytes());
    t[8] = ft as u8;
    t[9..].copy_from_slice(b"fzz");
    TransactionId(t)
}

impl Harness {
    fn new(config: u8, limits: u8) -> Self {
        let settings = Arc::new(settings_of(config, limits));
        let l = limits_of(limits);
        let quotas = Quotas::new(l.total, l.per_user, l.per_address);
        let stats = Arc::new(Stats::default());
        let nonce_key = Arc::new(NonceKey::from_bytes(NONCE_KEY));
        let mut core = Core::new(
            Arc::clone(&settings),
            Arc::clone(&nonce_key),
            Arc::clone(&quotas),
            Arc::clone(&stats),
        );
        let draining = Arc::new(AtomicBool::new(false));
        core.set_drain_flag(Arc::clone(&draining));
        let io = FakeIo {
            v6: config & 1 == 0,
            port_hi: PORT_LO + if config & 2 != 0 { 3 } else { 31 },
            ports: Rc::default(),
            next_id: 0,
            current_ft: 0,
            started_now: Vec::new(),
            socket_owner: HashMap::new(),
            key_owner: HashMap::new(),
            keys: Vec::new(),
            reserved: Vec::new(),
            next_token: 0,
        };
        let secret = Secret::new(SECRET.to_vec());
        let usernames = USER_IDS.map(|id| auth::mint(&secret, id, BASE_UNIX, 2 * 86400).0);
        Self {
            core,
            io,
            settings,
            quotas,
            quota_total: l.total,
            stats,
            nonce_key,
            draining,
            now: Now {
                mono: Instant::now(),
                unix: BASE_UNIX,
            },
            out: vec![0u8; OUT_LEN],
            fts: five_tuples(),
            usernames,
            last_tid: [None; 4],
            tid_counter: 0,
            challenge: Default::default(),
            tokens: Vec::new(),
            granted: Default::default(),
            trace: false,
        }
    }

    fn step(&mut self, action: &Action) {
        match action {
            Action::Raw { ft, bytes } => {
                self.client(usize::from(*ft) % 4, bytes, Sent::Raw);
            }
            Action::Request(q) => self.request(q),
            Action::Send {
                ft,
                peer,
                data,
                flags,
            } => {
                let ft = usize::from(*ft) % 4;
                let peer = peer.resolve();
                let data = data.bytes();
                let tid = self.next_tid(ft);
                let mut buf = vec![0u8; BIG];
                let Ok(mut w) = MessageWriter::new(&mut buf, Class::Indication, Method::SEND, tid)
                else {
                    return;
                };
                if flags & 4 == 0 {
                    let _ = w.xor_address(attr::XOR_PEER_ADDRESS, peer);
                }
                if flags & 2 == 0 {
                    let _ = w.attr(attr::DATA, &data);
                }
                if flags & 1 != 0 {
                    let _ = w.fingerprint();
                }
                let n = w.finish();
                buf.truncate(n);
                self.client(ft, &buf, Sent::Send { peer, data });
            }
            Action::ChannelData {
                ft,
                channel,
                data,
                trailing,
            } => {
                let ft = usize::from(*ft) % 4;
                let channel = channel_value(*channel);
                let data = data.bytes();
                let mut bytes = channel.to_be_bytes().to_vec();
                let len = data.len().min(0xFFFF) as u16;
                let claimed = if trailing & 0x80 != 0 {
                    len.wrapping_add(1)
                } else {
                    len
                };
                put16(&mut bytes, claimed);
                bytes.extend_from_slice(&data[..usize::from(len)]);
                bytes.resize(bytes.len() + usize::from(trailing & 7), 0);
                // What a relay must carry: the claimed length, if the datagram holds it.
                let end = (4 + usize::from(claimed)).min(bytes.len());
                let data = bytes[4..end].to_vec();
                self.client(ft, &bytes, Sent::ChannelData { channel, data });
            }
            Action::Peer {
                alloc,
                peer,
                data,
                room,
            } => self.peer(*alloc, peer.resolve(), &data.bytes(), *room),
            Action::Advance { secs } => {
                self.now = self.now.plus(u64::from(*secs));
                self.io.purge(self.now.mono);
                self.core.handle_timeout(self.now);
            }
            Action::Timeout => {
                self.io.purge(self.now.mono);
                self.core.handle_timeout(self.now);
            }
            Action::Close { ft } => {
                let ft = usize::from(*ft) % 4;
                self.core.client_closed(&self.fts[ft], self.now);
                assert!(
                    !self.core.has_allocation(&self.fts[ft]),
                    "allocation survives its close"
                );
                self.granted[ft] = Granted::default();
            }
            Action::Drain => {
                let on = !self.draining.load(Ordering::Relaxed);
                self.draining.store(on, Ordering::Relaxed);
            }
            Action::Reload { config, limits } => {
                // The relay family and port range are the edge's: only settings change.
                self.settings = Arc::new(settings_of(*config, *limits));
                self.core.set_settings(Arc::clone(&self.settings));
                let l = limits_of(*limits);
                self.quotas.set_limits(l.total, l.per_user, l.per_address);
                self.quota_total = l.total;
                // The core drops what the new policy refuses; so does the model.
                let policy = &self.settings.policy;
                for g in &mut self.granted {
                    g.permissions
                        .retain(|ip, _| policy.classify(SocketAddr::new(*ip, 0)).is_allowed());
                    g.channels
                        .retain(|_, (peer, _)| policy.classify(*peer).is_allowed());
                }
            }
        }
    }

    fn next_tid(&mut self, ft: usize) -> TransactionId {
        self.tid_counter += 1;
        let tid = fresh_tid(self.tid_counter, ft);
        self.last_tid[ft] = Some(tid);
        tid
    }

    fn request(&mut self, q: &Request) {
        let ft = usize::from(q.ft) % 4;
        let method = METHODS[usize::from(q.method) % METHODS.len()];
        let class = if q.flags & flags::INDICATION != 0 {
            Class::Indication
        } else {
            Class::Request
        };
        let tid = match self.last_tid[ft] {
            Some(t) if q.flags & flags::RETRANSMIT != 0 => t,
            _ => self.next_tid(ft),
        };
        let mut buf = vec![0u8; BIG];
        let Ok(mut w) = MessageWriter::new(&mut buf, class, method, tid) else {
            return;
        };
        let mut complete = true;
        if method == Method::ALLOCATE && q.flags & flags::NO_AUTO_TRANSPORT == 0 {
            complete &= w.requested_transport(attr::PROTO_UDP).is_ok();
        }
        for a in &q.attrs {
            complete &= self.write_attr(&mut w, a).is_ok();
        }
        let key = self.credentials(&mut w, ft, q.cred, &mut complete);
        if q.flags & flags::FINGERPRINT != 0 {
            complete &= w.fingerprint().is_ok();
        }
        let n = w.finish();
        buf.truncate(n);
        let mutated = q.flags & flags::MUTATE != 0 && q.mutate.1 != 0;
        if mutated {
            let at = usize::from(q.mutate.0) % n;
            buf[at] ^= q.mutate.1;
        }
        let bogus_fingerprint = q.attrs.iter().any(|a| {
            matches!(
                a,
                AttrSpec::Raw {
                    typ: attr::FINGERPRINT,
                    ..
                }
            )
        });
        let must_answer = class == Class::Request && complete && !mutated && !bogus_fingerprint;
        self.client(ft, &buf, Sent::Request { key, must_answer });
    }

    fn write_attr(
        &self,
        w: &mut MessageWriter<'_>,
        a: &AttrSpec,
    ) -> Result<(), proto::EncodeError> {
        match a {
            AttrSpec::Transport(p) => w.requested_transport(*p),
            AttrSpec::Lifetime(x) => w.u32_attr(attr::LIFETIME, lifetime_value(*x)),
            AttrSpec::Peer(p) => w.xor_address(attr::XOR_PEER_ADDRESS, p.resolve()),
            AttrSpec::Channel(c) => w.channel_number(channel_value(*c)),
            AttrSpec::EvenPort(b) => w.attr(attr::EVEN_PORT, &[*b]),
            AttrSpec::Token(i) => {
                let t = match self.tokens.len() {
                    0 => [*i; 8],
                    n => self.tokens[usize::from(*i) % n],
                };
                w.attr(attr::RESERVATION_TOKEN, &t)
            }
            AttrSpec::TokenRaw(t) => w.attr(attr::RESERVATION_TOKEN, t),
            AttrSpec::RequestedFamily(f) => {
                w.attr(attr::REQUESTED_ADDRESS_FAMILY, &[family_value(*f), 0, 0, 0])
            }
            AttrSpec::AdditionalFamily(f) => w.attr(
                attr::ADDITIONAL_ADDRESS_FAMILY,
                &[family_value(*f), 0, 0, 0],
            ),
            AttrSpec::DontFragment => w.attr(attr::DONT_FRAGMENT, &[]),
            AttrSpec::Raw { typ, value } => w.attr(*typ, value),
            AttrSpec::Data(p) => w.attr(attr::DATA, &p.bytes()),
        }
    }

    /// Appends USERNAME/REALM/NONCE/MESSAGE-INTEGRITY as `cred` says; returns the key used.
    fn credentials(
        &self,
        w: &mut MessageWriter<'_>,
        ft: usize,
        c: u8,
        complete: &mut bool,
    ) -> Option<[u8; 16]> {
        let kind = c & 7;
        if kind == cred::NONE {
            return None;
        }
        let user = usize::from(c >> 3) % USER_IDS.len();
        let now = self.now.unix;
        let username = if kind == cred::EXPIRED {
            auth::mint(&Secret::new(SECRET.to_vec()), USER_IDS[user], now - 1, 0).0
        } else {
            self.usernames[user].clone()
        };
        let secret = match kind {
            cred::OLD_SECRET => OLD_SECRET,
            cred::WRONG_SECRET => WRONG_SECRET,
            _ => SECRET,
        };
        let password = auth::rest_password(&Secret::new(secret.to_vec()), &username);
        let key = auth::long_term_key(&username, REALM, &password);
        let mut nb = auth::NonceBuf::default();
        let issue = |client: &FiveTuple, at: u64, nb: &mut auth::NonceBuf| {
            self.nonce_key
                .issue(client.client, client.transport.tag(), at, 3600, nb)
                .as_bytes()
                .to_vec()
        };
        let nonce = match kind {
            cred::STALE_NONCE => issue(&self.fts[ft], now - 3601, &mut nb),
            cred::OTHER_TUPLE_NONCE => issue(&self.fts[(ft + 1) % 4], now, &mut nb),
            cred::CHALLENGE_NONCE => match &self.challenge[ft] {
                Some(n) => n.clone(),
                None => issue(&self.fts[ft], now, &mut nb),
            },
            _ => issue(&self.fts[ft], now, &mut nb),
        };
        *complete &= w.attr(attr::USERNAME, username.as_bytes()).is_ok();
        *complete &= w.attr(attr::REALM, REALM.as_bytes()).is_ok();
        *complete &= w.attr(attr::NONCE, &nonce).is_ok();
        *complete &= w.message_integrity(&key).is_ok();
        Some(key)
    }

    /// Hands a client datagram to the core and checks what it decided.
    fn client(&mut self, ft: usize, data: &[u8], sent: Sent) {
        let five_tuple = self.fts[ft];
        let count_before = self.core.allocation_count();
        let had_allocation = self.core.has_allocation(&five_tuple);
        self.io.current_ft = ft;
        self.io.started_now.clear();
        self.out.fill(0xA5);
        let outcome = match self.core.handle_client(
            self.now,
            five_tuple,
            &ft,
            data,
            &mut self.out,
            &mut self.io,
        ) {
            ClientAction::None => Outcome::None,
            ClientAction::Reply(n) => Outcome::Reply(n),
            ClientAction::Relay {
                socket,
                peer,
                payload,
            } => {
                let base = data.as_ptr() as usize;
                let p = payload.as_ptr() as usize;
                Outcome::Relay {
                    socket: socket.id,
                    family: socket.family,
                    peer,
                    payload: payload.to_vec(),
                    within: p >= base && p + payload.len() <= base + data.len(),
                }
            }
        };

        if self.trace {
            match &outcome {
                Outcome::None => eprintln!("   client: nothing"),
                Outcome::Reply(n) => eprintln!("   client: reply {}", describe(&self.out[..*n])),
                Outcome::Relay { peer, payload, .. } => {
                    eprintln!("   client: relay {} bytes to {peer}", payload.len())
                }
            }
            if !self.io.started_now.is_empty() {
                eprintln!("   new allocation on {:?}", self.io.started_now);
            }
        }
        // A new allocation on this five-tuple starts with nothing granted.
        if !self.io.started_now.is_empty() {
            assert!(
                !self.draining.load(Ordering::Relaxed),
                "allocation created while draining"
            );
            assert!(
                (count_before as u32) < self.quota_total,
                "allocation created with the total quota full"
            );
            assert!(
                self.core.has_allocation(&five_tuple),
                "started sockets but no allocation"
            );
            self.granted[ft] = Granted::default();
        }

        match outcome {
            Outcome::None => {
                if let Sent::Request {
                    must_answer: true, ..
                } = sent
                {
                    let limited = self.settings.unauthenticated_rate > 0.0 && !had_allocation;
                    assert!(limited, "a well-formed request got no answer");
                }
            }
            Outcome::Reply(n) => {
                let key = match sent {
                    Sent::Request { key, .. } => key,
                    _ => None,
                };
                self.check_reply(ft, data, n, key);
            }
            Outcome::Relay {
                socket,
                family,
                peer,
                payload,
                within,
            } => {
                assert!(
                    within,
                    "relayed payload is not inside the client's datagram"
                );
                assert_eq!(
                    self.io.socket_owner.get(&socket),
                    Some(&ft),
                    "relay socket of another client"
                );
                assert_eq!(
                    family,
                    Family::of(&peer),
                    "relay socket of the wrong family"
                );
                let expected_channel = match sent {
                    Sent::Send { peer: p, data: d } => {
                        assert_eq!((peer, &payload), (p, &d), "Send relayed elsewhere");
                        None
                    }
                    Sent::ChannelData { channel, data: d } => {
                        assert_eq!(payload, d, "ChannelData payload changed");
                        Some(channel)
                    }
                    Sent::Raw | Sent::Request { .. } => match proto::sniff(data) {
                        Kind::ChannelData => {
                            let cd = proto::parse_channel_data(data)
                                .expect("relayed ChannelData parses");
                            assert_eq!(payload, cd.data);
                            Some(cd.channel)
                        }
                        Kind::Stun => {
                            let m = Message::parse(data).expect("relayed STUN parses");
                            assert_eq!(
                                (m.class(), m.method()),
                                (Class::Indication, Method::SEND),
                                "relayed a STUN message that is not a Send indication"
                            );
                            let p = m.get(attr::XOR_PEER_ADDRESS).and_then(|a| {
                                attr::decode_xor_address(a.value, &m.transaction_id()).ok()
                            });
                            assert_eq!(p, Some(peer), "Send relayed to another peer");
                            assert_eq!(m.get(attr::DATA).map(|a| a.value), Some(&payload[..]));
                            None
                        }
                        Kind::Other => panic!("relayed garbage"),
                    },
                };
                self.check_peer_allowed(ft, peer, expected_channel);
            }
        }
    }

    /// The model must hold a live permission (and channel) for a relayed peer, and the
    /// current policy must allow it.
    fn check_peer_allowed(&self, ft: usize, peer: SocketAddr, channel: Option<u16>) {
        assert!(
            self.settings.policy.classify(peer).is_allowed(),
            "relay to/from a peer the policy denies: {peer}"
        );
        let g = &self.granted[ft];
        let live = |t: &Instant| *t > self.now.mono;
        assert!(
            g.permissions.get(&peer.ip()).is_some_and(live),
            "relay to/from {peer} without a live permission"
        );
        if let Some(ch) = channel {
            match g.channels.get(&ch) {
                Some((p, t)) if live(t) => {
                    assert_eq!(*p, peer, "channel {ch:#x} used for another peer")
                }
                _ => panic!("channel {ch:#x} used without a live binding"),
            }
        }
    }

    fn check_reply(&mut self, ft: usize, data: &[u8], n: usize, key: Option<[u8; 16]>) {
        assert!(n <= self.out.len(), "reply longer than the output buffer");
        let req = Message::parse(data).expect("a reply answers a STUN message");
        assert_eq!(req.class(), Class::Request, "a reply to a non-request");
        let out = self.out[..n].to_vec();
        let resp = Message::parse(&out).expect("reply parses as STUN");
        assert_eq!(resp.raw().len(), n, "reply has trailing bytes");
        assert!(
            matches!(resp.class(), Class::Success | Class::Error),
            "reply is not a response"
        );
        assert_eq!(resp.method(), req.method(), "reply method");
        assert_eq!(
            resp.transaction_id(),
            req.transaction_id(),
            "reply transaction id"
        );
        assert!(
            !resp.attributes().any(|a| a.typ == attr::SOFTWARE),
            "SOFTWARE sent without being configured"
        );
        if integrity::has_fingerprint(&req) {
            assert_eq!(
                integrity::verify_fingerprint(&resp),
                Ok(()),
                "FINGERPRINT not echoed"
            );
        } else {
            assert!(
                !resp.attributes().any(|a| a.typ == attr::FINGERPRINT),
                "FINGERPRINT on a reply to a request without one"
            );
        }
        let five_tuple = self.fts[ft];
        let tid = resp.transaction_id();
        let xor = |m: &Message<'_>, typ| {
            m.get(typ)
                .and_then(|a| attr::decode_xor_address(a.value, &m.transaction_id()).ok())
        };
        if resp.class() == Class::Error {
            let code = resp
                .get(attr::ERROR_CODE)
                .and_then(|a| attr::decode_error_code(a.value).ok())
                .map(|(c, _)| c)
                .expect("error response without a valid ERROR-CODE");
            assert!(
                [400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 508].contains(&code),
                "unexpected error code {code}"
            );
            if code == 420 {
                assert!(
                    resp.get(attr::UNKNOWN_ATTRIBUTES).is_some(),
                    "420 without UNKNOWN-ATTRIBUTES"
                );
            }
            if code == 401 || code == 438 {
                let realm = resp.get(attr::REALM).map(|a| a.value);
                assert_eq!(realm, Some(REALM.as_bytes()), "challenge REALM");
                let nonce = resp
                    .get(attr::NONCE)
                    .expect("challenge without NONCE")
                    .value;
                let check = self.nonce_key.check(
                    nonce,
                    five_tuple.client,
                    five_tuple.transport.tag(),
                    self.now.unix,
                );
                assert_eq!(check, NonceCheck::Valid, "challenge NONCE does not verify");
                assert!(
                    resp.get(attr::MESSAGE_INTEGRITY).is_none(),
                    "challenge with integrity"
                );
                self.challenge[ft] = Some(nonce.to_vec());
            }
            return;
        }
        // Success.
        if req.method() == Method::BINDING {
            assert_eq!(
                xor(&resp, attr::XOR_MAPPED_ADDRESS),
                Some(five_tuple.client)
            );
            let mapped = resp
                .get(attr::MAPPED_ADDRESS)
                .and_then(|a| attr::decode_address(a.value).ok());
            assert_eq!(mapped, Some(five_tuple.client), "MAPPED-ADDRESS");
            return;
        }
        // A non-Binding success needs integrity under the requester's key.
        let username = req
            .get(attr::USERNAME)
            .and_then(|a| attr::decode_text(a.value, attr::MAX_USERNAME_LEN).ok())
            .expect("success without a USERNAME in the request");
        let verified = [SECRET, OLD_SECRET].iter().any(|s| {
            let k = auth::rest_long_term_key(&Secret::new(s.to_vec()), username, REALM);
            integrity::verify_message_integrity(&resp, &k).is_ok()
        });
        assert!(verified, "success response without valid MESSAGE-INTEGRITY");
        if let Some(k) = key {
            assert_eq!(
                integrity::verify_message_integrity(&resp, &k),
                Ok(()),
                "success signed with another key than the request's"
            );
        }
        let lifetime = resp
            .get(attr::LIFETIME)
            .and_then(|a| attr::decode_u32(a.value).ok());
        let s = &self.settings;
        let in_range = |l: Option<u32>| {
            l.is_some_and(|l| {
                (s.default_lifetime.as_secs()..=s.max_lifetime.as_secs()).contains(&u64::from(l))
            })
        };
        match req.method() {
            Method::ALLOCATE => {
                assert_eq!(
                    xor(&resp, attr::XOR_MAPPED_ADDRESS),
                    Some(five_tuple.client)
                );
                if !self.io.started_now.is_empty() {
                    assert!(in_range(lifetime), "Allocate LIFETIME {lifetime:?}");
                    let mut relayed: Vec<SocketAddr> = resp
                        .attributes()
                        .filter(|a| a.typ == attr::XOR_RELAYED_ADDRESS)
                        .filter_map(|a| attr::decode_xor_address(a.value, &tid).ok())
                        .collect();
                    let mut started: Vec<SocketAddr> =
                        self.io.started_now.iter().map(|(_, a)| *a).collect();
                    relayed.sort();
                    started.sort();
                    assert_eq!(
                        relayed, started,
                        "XOR-RELAYED-ADDRESS is not the bound relay"
                    );
                    if req
                        .get(attr::EVEN_PORT)
                        .is_some_and(|a| attr::decode_even_port(a.value).is_ok())
                    {
                        let primary = req
                            .get(attr::REQUESTED_ADDRESS_FAMILY)
                            .and_then(|a| attr::decode_address_family(a.value).ok())
                            .and_then(Result::ok)
                            .unwrap_or(Family::V4);
                        for a in started.iter().filter(|a| Family::of(a) == primary) {
                            assert_eq!(a.port() % 2, 0, "EVEN-PORT allocation on an odd port");
                        }
                    }
                }
                if let Some(t) = resp
                    .get(attr::RESERVATION_TOKEN)
                    .and_then(|a| attr::decode_reservation_token(a.value).ok())
                {
                    // The token names a port the edge holds: the one after the relayed even port.
                    let relayed = xor(&resp, attr::XOR_RELAYED_ADDRESS).expect("relayed address");
                    let held = self.io.reserved.iter().find(|r| r.0 == t).map(|r| r.2);
                    assert_eq!(
                        held.map(|a| (a.ip(), a.port())),
                        Some((relayed.ip(), relayed.port() + 1)),
                        "RESERVATION-TOKEN does not hold the next port"
                    );
                    self.tokens.push(t);
                }
            }
            Method::REFRESH => match lifetime {
                Some(0) => {
                    assert!(
                        !self.core.has_allocation(&five_tuple),
                        "Refresh 0 kept the allocation"
                    );
                    self.granted[ft] = Granted::default();
                }
                other => assert!(in_range(other), "Refresh LIFETIME {other:?}"),
            },
            Method::CREATE_PERMISSION => {
                let expires = self.now.mono + s.permission_lifetime;
                let peers: Vec<SocketAddr> = req
                    .attributes()
                    .take_while(|a| a.typ != attr::MESSAGE_INTEGRITY)
                    .filter(|a| a.typ == attr::XOR_PEER_ADDRESS)
                    .filter_map(|a| attr::decode_xor_address(a.value, &tid).ok())
                    .collect();
                assert!(!peers.is_empty(), "CreatePermission granted nothing");
                for p in peers {
                    assert!(
                        s.policy.classify(p).is_allowed(),
                        "permission for a denied peer {p}"
                    );
                    let e = self.granted[ft]
                        .permissions
                        .entry(p.ip())
                        .or_insert(expires);
                    *e = (*e).max(expires);
                }
            }
            Method::CHANNEL_BIND => {
                let number = req
                    .get(attr::CHANNEL_NUMBER)
                    .and_then(|a| attr::decode_channel_number(a.value).ok())
                    .expect("ChannelBind success without CHANNEL-NUMBER");
                let peer =
                    xor(&req, attr::XOR_PEER_ADDRESS).expect("ChannelBind success without peer");
                assert!(proto::is_valid_channel(number), "bound channel {number:#x}");
                assert!(
                    s.policy.classify(peer).is_allowed(),
                    "channel to a denied peer {peer}"
                );
                let now = self.now.mono;
                let g = &mut self.granted[ft];
                // RFC 8656 12: no rebinding while bound, either way round.
                if let Some((p, t)) = g.channels.get(&number) {
                    assert!(
                        *t <= now || *p == peer,
                        "channel {number:#x} rebound to another peer"
                    );
                }
                for (n, (p, t)) in &g.channels {
                    assert!(
                        *t <= now || *p != peer || *n == number,
                        "peer {peer} bound to two channels"
                    );
                }
                g.channels.insert(number, (peer, now + s.channel_lifetime));
                let pe = now + s.permission_lifetime;
                let e = g.permissions.entry(peer.ip()).or_insert(pe);
                *e = (*e).max(pe);
            }
            m => panic!("success for method {m:?}"),
        }
    }

    fn peer(&mut self, alloc: u8, peer: SocketAddr, payload: &[u8], room: u8) {
        let Some(&key) = self
            .io
            .keys
            .get(usize::from(alloc) % self.io.keys.len().max(1))
        else {
            return;
        };
        let owner = self.io.key_owner[&key];
        let (head, tail) = if room & 0x80 == 0 {
            (PEER_HEADROOM, PEER_TAILROOM)
        } else {
            (usize::from(room & 0x3F), usize::from((room >> 6) & 1))
        };
        let len = payload.len();
        let mut buf = vec![0xEEu8; head + len + tail];
        buf[head..head + len].copy_from_slice(payload);
        let (link, client, frame) = match self
            .core
            .handle_peer(self.now, key, peer, &mut buf, head, len)
        {
            PeerAction::None => {
                if self.trace {
                    eprintln!("   peer: dropped");
                }
                return;
            }
            PeerAction::Forward {
                link,
                client,
                frame,
            } => (*link, client, frame),
        };
        if self.trace {
            eprintln!(
                "   peer: forward {} to ft {link}: {}",
                frame.len(),
                describe(&buf[frame.clone()])
            );
        }
        assert_eq!(link, owner, "forwarded to another client's link");
        assert_eq!(
            client, self.fts[owner].client,
            "forwarded to another client address"
        );
        assert!(
            frame.start <= frame.end && frame.end <= buf.len(),
            "frame outside the buffer"
        );
        let f = &buf[frame];
        let stream = self.fts[owner].transport.is_stream();
        let channel = match proto::sniff(f) {
            Kind::ChannelData => {
                let cd = proto::parse_channel_data(f).expect("forwarded ChannelData parses");
                assert_eq!(cd.data, payload, "forwarded ChannelData payload");
                let expect_len = if stream {
                    4 + ((len + 3) & !3)
                } else {
                    4 + len
                };
                assert_eq!(
                    f.len(),
                    expect_len,
                    "ChannelData frame length (stream: {stream})"
                );
                assert!(
                    f[4 + len..].iter().all(|b| *b == 0),
                    "ChannelData padding not zero"
                );
                Some(cd.channel)
            }
            Kind::Stun => {
                let m = Message::parse(f).expect("forwarded Data indication parses");
                assert_eq!(m.raw().len(), f.len(), "Data indication length");
                assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));
                let p = m
                    .get(attr::XOR_PEER_ADDRESS)
                    .and_then(|a| attr::decode_xor_address(a.value, &m.transaction_id()).ok());
                assert_eq!(p, Some(peer), "Data indication XOR-PEER-ADDRESS");
                assert_eq!(
                    m.get(attr::DATA).map(|a| a.value),
                    Some(payload),
                    "Data indication DATA"
                );
                let now = self.now.mono;
                let bound = self.granted[owner]
                    .channels
                    .values()
                    .any(|(p, t)| *p == peer && *t > now);
                assert!(
                    !bound,
                    "Data indication although a channel to {peer} is bound"
                );
                None
            }
            Kind::Other => panic!("forwarded frame is neither ChannelData nor STUN"),
        };
        self.check_peer_allowed(owner, peer, channel);
    }

    fn check_global(&self) {
        let count = self.core.allocation_count();
        assert_eq!(
            self.quotas.total() as usize,
            count,
            "quota total != allocations"
        );
        if count > 0 {
            assert!(
                self.core.poll_timeout().is_some(),
                "allocations but no timer"
            );
        }
        let active: i64 = self
            .stats
            .allocations_active
            .iter()
            .flatten()
            .map(|g| g.load(Ordering::Relaxed))
            .sum();
        assert!(
            active >= count as i64 && active <= 2 * count as i64,
            "allocations_active gauge {active} for {count} allocations"
        );
        assert!(
            self.stats.permissions_active.load(Ordering::Relaxed) >= 0,
            "permissions gauge < 0"
        );
        assert!(
            self.stats.channels_active.load(Ordering::Relaxed) >= 0,
            "channels gauge < 0"
        );
    }

    /// Lets every timer run out: nothing may be left behind.
    fn finish(mut self) {
        let end = self
            .settings
            .max_lifetime
            .max(Duration::from_secs(3600))
            .as_secs()
            * 2
            + 60;
        self.now = self.now.plus(end);
        self.io.purge(self.now.mono);
        self.core.handle_timeout(self.now);
        assert_eq!(
            self.core.allocation_count(),
            0,
            "allocations outlive their lifetime"
        );
        assert_eq!(self.quotas.total(), 0, "quota slots leaked");
        assert_eq!(
            self.core.poll_timeout(),
            None,
            "timer armed with nothing to expire"
        );
        assert!(
            self.io.ports.borrow().is_empty(),
            "relay ports leaked: {:?}",
            self.io.ports.borrow()
        );
        let active: i64 = self
            .stats
            .allocations_active
            .iter()
            .flatten()
            .map(|g| g.load(Ordering::Relaxed))
            .sum();
        assert_eq!(active, 0, "allocations_active gauge not back to zero");
        assert_eq!(
            self.stats.permissions_active.load(Ordering::Relaxed),
            0,
            "permissions gauge drift"
        );
        assert_eq!(
            self.stats.channels_active.load(Ordering::Relaxed),
            0,
            "channels gauge drift"
        );
    }
}

/// One line about a frame, for traces.
fn describe(f: &[u8]) -> String {
    if let Ok(m) = Message::parse(f) {
        let code = m
            .get(attr::ERROR_CODE)
            .and_then(|a| attr::decode_error_code(a.value).ok())
            .map(|(c, _)| format!(" {c}"))
            .unwrap_or_default();
        format!("{:?} {:?}{code}", m.method(), m.class())
    } else if let Ok(cd) = proto::parse_channel_data(f) {
        format!("ChannelData {:#x} ({} bytes)", cd.channel, cd.data.len())
    } else {
        format!("{} bytes", f.len())
    }
}
