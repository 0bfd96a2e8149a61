//! Relay sockets: binding them in the configured port range, and the task that reads
//! peer datagrams from each and hands them to its shard's core.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::rc::Rc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use super::shard::Shard;
use crate::proto::Family;
use crate::relay::{AllocKey, BindError, Now, PEER_HEADROOM, PeerAction, PortChoice, RelayIo};

/// Largest UDP payload a relay socket reads.
pub const MAX_DATAGRAM: usize = 65535;
/// How many ports one bind attempt probes before answering 508.
const MAX_PROBES: u32 = 256;
/// Datagrams a reader handles before yielding to other tasks.
const BATCH: usize = 32;

/// A bound relay socket owned by an allocation (or a reservation). Dropping it stops
/// its reader task; the socket closes when the task's handle is gone too.
#[derive(Debug)]
pub struct RelaySocket {
    pub socket: Rc<UdpSocket>,
    reader: Option<AbortHandle>,
}

impl Drop for RelaySocket {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

/// Where relay sockets are bound.
#[derive(Clone, Debug)]
pub struct RelayBinding {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
    pub ports: RangeInclusive<u16>,
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
        let ip = match family {
            Family::V4 => binding.v4,
            Family::V6 => binding.v6,
        }
        .ok_or(BindError::FamilyUnavailable)?;
        let (low, high) = (
            u32::from(*binding.ports.start()),
            u32::from(*binding.ports.end()),
        );
        let span = high - low + 1;
        let candidates: Box<dyn Iterator<Item = u16>> = match port {
            PortChoice::Exact(p) if binding.ports.contains(&p) => Box::new(std::iter::once(p)),
            PortChoice::Exact(_) => return Err(BindError::Exhausted),
            PortChoice::Any => {
                let start = rand::random_range(0..span);
                Box::new((0..span.min(MAX_PROBES)).map(move |i| (low + (start + i) % span) as u16))
            }
            PortChoice::Even => {
                let first_even = low + (low & 1);
                if first_even > high {
                    return Err(BindError::Exhausted);
                }
                let evens = (high - first_even) / 2 + 1;
                let start = rand::random_range(0..evens);
                Box::new(
                    (0..evens.min(MAX_PROBES))
                        .map(move |i| (first_even + 2 * ((start + i) % evens)) as u16),
                )
            }
        };
        for port in candidates {
            match bind_udp(SocketAddr::new(ip, port)) {
                Ok(socket) => {
                    let bound = socket.local_addr().map_err(|_| BindError::Exhausted)?;
                    return Ok((
                        RelaySocket {
                            socket: Rc::new(socket),
                            reader: None,
                        },
                        bound,
                    ));
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

    fn start(&mut self, socket: &mut RelaySocket, key: AllocKey, _family: Family) {
        let task = tokio::task::spawn_local(read_peers(
            Rc::clone(self.shard),
            Rc::clone(&socket.socket),
            key,
        ));
        socket.reader = Some(task.abort_handle());
    }
}

/// Sends one datagram now, without waiting for readiness; a full socket buffer is an
/// error (the caller drops and counts the datagram, as UDP would).
///
/// tokio's `try_send_to` answers `WouldBlock` until its reactor has once seen the
/// socket writable, which loses the first datagram on a relay socket bound within
/// the same batch of work. A plain non-blocking `sendto` has no such state.
#[inline]
pub fn send_now(socket: &UdpSocket, payload: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket2::SockRef::from(socket).send_to(payload, &to.into())
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Reads datagrams from peers and forwards what the core allows to the client.
async fn read_peers(shard: Rc<Shard>, socket: Rc<UdpSocket>, key: AllocKey) {
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        for _ in 0..BATCH {
            let mut scratch = shard.scratch.borrow_mut();
            let buf = &mut scratch[..];
            match socket.try_recv_from(&mut buf[PEER_HEADROOM..PEER_HEADROOM + MAX_DATAGRAM]) {
                Ok((len, peer)) => {
                    let mut core = shard.core.borrow_mut();
                    if let PeerAction::Forward {
                        link,
                        client,
                        frame,
                    } = core.handle_peer(Now::read(), key, peer, buf, PEER_HEADROOM, len)
                    {
                        link.send(&buf[frame], client, &shard.stats);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        tokio::task::yield_now().await;
    }
}
