//! One reader for all relay sockets of a shard.
//!
//! A shard can hold thousands of relay sockets, one or two per allocation. Giving each
//! its own tokio task costs a task, a reactor registration and a waker round per
//! datagram, and spreads what a packet touches over many heap blocks. Instead the
//! relay sockets sit in one level-triggered epoll set per shard; that set's descriptor
//! is registered with tokio once, and one task reads whichever sockets it reports,
//! straight into the shard's receive batch.
//!
//! Why this is race-free with tokio's edge-triggered registration: a socket that
//! becomes readable (again) adds itself to the inner set's ready list and wakes the
//! inner set's pollers, which tokio sees as a new edge on the set's descriptor. The
//! reader clears tokio's readiness only after a pass in which every reported socket
//! was read empty (a short `recvmmsg`) and the set reported fewer sockets than asked;
//! anything that arrives after that pass is a new edge. epoll drops a closed
//! descriptor from the set by itself; the registry is cleaned when the socket drops.
//!
//! Written against libc because the pieces that exist (mio's `Poll`, tokio's reactor)
//! own their event loop; here the set has to be one readiness source inside tokio's.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use slab::Slab;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::shard::Shard;
use crate::relay::{AllocKey, Now, PeerAction};

/// Sockets reported per `epoll_wait`.
const EVENTS: usize = 64;
/// Batched receives per socket before moving on to the next one.
const ROUNDS: usize = 2;

/// The epoll set of one shard's relay sockets.
pub struct RelayPoll {
    epoll: AsyncFd<OwnedFd>,
    /// token → (descriptor, allocation). The descriptor is owned by its `RelaySocket`.
    sockets: RefCell<Slab<(RawFd, AllocKey)>>,
}

impl std::fmt::Debug for RelayPoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayPoll")
            .field("sockets", &self.sockets.borrow().len())
            .finish()
    }
}

/// A relay socket's place in the set; dropping it takes the socket out.
#[derive(Debug)]
pub struct Registration {
    poll: Rc<RelayPoll>,
    token: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let removed = self.poll.sockets.borrow_mut().try_remove(self.token);
        if let Some((fd, _)) = removed {
            // Best effort: closing the descriptor right after removes it anyway.
            let _ = self.poll.ctl(libc::EPOLL_CTL_DEL, fd, 0);
        }
    }
}

impl RelayPoll {
    /// A new, empty set, registered with the current tokio runtime.
    pub fn new() -> io::Result<Rc<Self>> {
        // SAFETY: epoll_create1 has no preconditions; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns `owned`, so the descriptor stays open and refers to
        // this epoll set for the AsyncFd's whole life.
        let epoll = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Rc::new(Self {
            epoll,
            sockets: RefCell::new(Slab::new()),
        }))
    }

    /// Adds `socket` (of allocation `key`) to the set.
    pub fn register(
        self: &Rc<Self>,
        socket: BorrowedFd<'_>,
        key: AllocKey,
    ) -> io::Result<Registration> {
        let fd = socket.as_raw_fd();
        let token = self.sockets.borrow_mut().insert((fd, key));
        if let Err(e) = self.ctl(libc::EPOLL_CTL_ADD, fd, token as u64) {
            self.sockets.borrow_mut().remove(token);
            return Err(e);
        }
        Ok(Registration {
            poll: Rc::clone(self),
            token,
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open (the set by `self`, `fd` by its socket,
        // which outlives its registration); `event` is valid for the call.
        let r = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Ready tokens, without blocking.
    fn ready(&self, events: &mut [libc::epoll_event; EVENTS]) -> io::Result<usize> {
        // SAFETY: `events` has room for EVENTS entries; timeout 0 never blocks.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.get_ref().as_fd().as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as libc::c_int,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize)
    }
}

/// Reads the shard's relay sockets and forwards what the core allows to clients.
pub async fn read_peers(shard: Rc<Shard>, poll: Rc<RelayPoll>) {
    // SAFETY: all-zero is a valid epoll_event.
    let mut events: [libc::epoll_event; EVENTS] = unsafe { std::mem::zeroed() };
    loop {
        let Ok(mut guard) = poll.epoll.readable().await else {
            return;
        };
        let n = match poll.ready(&mut events) {
            Ok(n) => n,
            Err(_) => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        let mut all_read = n < EVENTS;
        for event in &events[..n] {
            let token = event.u64 as usize;
            let Some(&(fd, key)) = poll.sockets.borrow().get(token) else {
                continue; // removed since the set reported it
            };
            if !drain(&shard, fd, key) {
                all_read = false;
            }
        }
        if all_read {
            guard.clear_ready();
        } else {
            // Level-triggered: what is left is reported again on the next pass,
            // after the shard's other tasks had their turn.
            drop(guard);
            tokio::task::yield_now().await;
        }
    }
}

/// Reads up to ROUNDS batches from one relay socket; true when it was read empty.
fn drain(shard: &Shard, fd: RawFd, key: AllocKey) -> bool {
    // SAFETY: the descriptor belongs to a relay socket still in the registry, and
    // nothing below can drop it (forwarding never ends an allocation).
    let socket = unsafe { BorrowedFd::borrow_raw(fd) };
    for _ in 0..ROUNDS {
        let received = match shard.receive_from(&socket) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return true, // not lasting for a bound UDP socket; next edge retries
        };
        let now = Now::read();
        for i in 0..received.count {
            let mut batch = shard.recv.borrow_mut();
            let Some(datagram) = batch.get(i) else {
                break;
            };
            let mut core = shard.core.borrow_mut();
            if let PeerAction::Forward {
                link,
                client,
                frame,
            } = core.handle_peer(
                now,
                key,
                datagram.from,
                datagram.slot,
                datagram.start,
                datagram.len,
            ) {
                link.send(&datagram.slot[frame], client, &shard.stats);
            }
        }
        if received.drained {
            return true;
        }
    }
    false
}
