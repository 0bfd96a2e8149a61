//! Relay sockets: binding them in the configured port range and handing them to the
//! shard's relay poller (`relay_poll.rs`), which reads what peers send.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use std::os::fd::AsFd;

use socket2::{Domain, Protocol, Socket, Type};

use super::relay_poll::Registration;
use super::shard::Shard;
use crate::proto::Family;
use crate::relay::{AllocKey, BindError, PortChoice, RelayIo};

/// Largest UDP payload a relay socket reads.
pub const MAX_DATAGRAM: usize = 65535;
/// How many ports one bind attempt probes before answering 508.
const MAX_PROBES: u32 = 256;

/// A bound relay socket owned by an allocation (or a reservation). Dropping it takes
/// it out of the shard's poller, then closes it.
#[derive(Debug)]
pub struct RelaySocket {
    // Declared first so it drops first: out of the epoll set, then closed.
    registration: Option<Registration>,
    pub socket: std::net::UdpSocket,
}

/// Where relay sockets are bound.
#[derive(Clone, Debug)]
pub struct RelayBinding {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
    pub ports: RangeInclusive<u16>,
    /// Ports held for RESERVATION-TOKENs, shared by every shard.
    pub reservations: Arc<Reservations>,
}

/// Ports reserved by EVEN-PORT with the R bit. A token is usually redeemed from
/// another 5-tuple, which SO_REUSEPORT may hand to another shard, so the table is
/// process-wide. It holds plain (unregistered) sockets, so any shard's runtime can
/// adopt one. Touched only by Allocate; bounded by the relay port range.
#[derive(Debug, Default)]
pub struct Reservations {
    held: Mutex<Vec<Reserved>>,
}

#[derive(Debug)]
struct Reserved {
    token: [u8; 8],
    socket: std::net::UdpSocket,
    bound: SocketAddr,
    expires: Instant,
}

impl RelayBinding {
    /// The relay IP of `family`, if tarn relays on that family.
    fn ip(&self, family: Family) -> Result<IpAddr, BindError> {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
        .ok_or(BindError::FamilyUnavailable)
    }
}

impl Reservations {
    fn hold(
        &self,
        socket: std::net::UdpSocket,
        bound: SocketAddr,
        expires: Instant,
        now: Instant,
    ) -> [u8; 8] {
        let token: [u8; 8] = rand::random();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|r| r.expires > now);
        held.push(Reserved {
            token,
            socket,
            bound,
            expires,
        });
        token
    }

    fn take(&self, token: [u8; 8], now: Instant) -> Option<(std::net::UdpSocket, SocketAddr)> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|r| r.expires > now);
        let i = held.iter().position(|r| r.token == token)?;
        let r = held.swap_remove(i);
        Some((r.socket, r.bound))
    }
}

/// The [`RelayIo`] of one shard.
pub struct Binder<'a> {
    pub shard: &'a Rc<Shard>,
}

impl RelayIo for Binder<'_> {
    type Socket = RelaySocket;

    fn bind(
        &mut self,
        family: Family,
        port: PortChoice,
    ) -> Result<(RelaySocket, SocketAddr), BindError> {
        let binding = &self.shard.binding;
        let ip = binding.ip(family)?;
        let (low, high) = (
            u32::from(*binding.ports.start()),
            u32::from(*binding.ports.end()),
        );
        let span = high - low + 1;
        let candidates: Box<dyn Iterator<Item = u16>> = match port {
            PortChoice::Exact(p) if binding.ports.contains(&p) => Box::new(std::iter::once(p)),
            PortChoice::Exact(_) => return Err(BindError::Exhausted),
            PortChoice::Any => probes(span, move |i| (low + i) as u16),
            PortChoice::Even => {
                let first_even = low + (low & 1);
                if first_even > high {
                    return Err(BindError::Exhausted);
                }
                let evens = (high - first_even) / 2 + 1;
                probes(evens, move |i| (first_even + 2 * i) as u16)
            }
        };
        for port in candidates {
            match bind_std(SocketAddr::new(ip, port)) {
                Ok(socket) => {
                    let bound = socket.local_addr().map_err(|_| BindError::Exhausted)?;
                    return Ok((adopt(socket), bound));
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {
                    return Err(BindError::FamilyUnavailable);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "relay socket bind failed");
                    return Err(BindError::Exhausted);
                }
            }
        }
        Err(BindError::Exhausted)
    }

    fn reserve(
        &mut self,
        family: Family,
        port: u16,
        expires: Instant,
    ) -> Result<[u8; 8], BindError> {
        let binding = &self.shard.binding;
        let ip = binding.ip(family)?;
        if !binding.ports.contains(&port) {
            return Err(BindError::Exhausted);
        }
        let socket = bind_std(SocketAddr::new(ip, port)).map_err(|_| BindError::Exhausted)?;
        let bound = socket.local_addr().map_err(|_| BindError::Exhausted)?;
        Ok(binding
            .reservations
            .hold(socket, bound, expires, Instant::now()))
    }

    fn redeem(&mut self, token: [u8; 8], now: Instant) -> Option<(RelaySocket, SocketAddr)> {
        let (socket, bound) = self.shard.binding.reservations.take(token, now)?;
        Some((adopt(socket), bound))
    }

    fn start(&mut self, socket: &mut RelaySocket, key: AllocKey, _family: Family) {
        match self.shard.relay_poll.register(socket.socket.as_fd(), key) {
            Ok(registration) => socket.registration = Some(registration),
            // Only on kernel resource exhaustion; the allocation then relays nothing
            // from peers and ends with its lifetime.
            Err(e) => tracing::warn!(error = %e, "relay socket not added to the poller"),
        }
    }
}

/// Port candidates: a small range is scanned whole from a random start; a large one
/// gets independent random probes, so busy ports do not cluster the search (a linear
/// probe from one random start kept hitting the same occupied stretch).
fn probes(count: u32, port: impl Fn(u32) -> u16 + 'static) -> Box<dyn Iterator<Item = u16>> {
    if count <= MAX_PROBES {
        let start = rand::random_range(0..count);
        Box::new((0..count).map(move |i| port((start + i) % count)))
    } else {
        Box::new((0..MAX_PROBES).map(move |_| port(rand::random_range(0..count))))
    }
}

/// Sends one datagram now, without waiting for readiness; a full socket buffer is an
/// error (the caller drops and counts the datagram, as UDP would).
///
/// tokio's `try_send_to` answers `WouldBlock` until its reactor has once seen the
/// socket writable, which loses the first datagram on a relay socket bound within
/// the same batch of work. A plain non-blocking `sendto` has no such state.
#[inline]
pub fn send_now(socket: &impl AsFd, payload: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket2::SockRef::from(socket).send_to(payload, &to.into())
}

/// A bound, non-blocking UDP socket not yet registered with any runtime.
fn bind_std(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Wraps a bound socket; the poller learns of it when its allocation starts.
fn adopt(socket: std::net::UdpSocket) -> RelaySocket {
    RelaySocket {
        registration: None,
        socket,
    }
}
