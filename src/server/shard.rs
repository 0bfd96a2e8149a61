//! A shard: one thread with a single-threaded runtime that owns one [`Core`], its
//! listener sockets (SO_REUSEPORT siblings of the other shards') and the relay sockets
//! of the allocations it made. Everything an allocation touches lives on one thread, so
//! the per-packet path borrows a `RefCell` instead of taking a lock.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};

use super::mmsg::{Received, RecvBatch, SendBatch};
use super::relay_poll::{self, RelayPoll};
use super::relay_socket::{MAX_DATAGRAM, RelayBinding, RelaySocket};
use super::stream::{self, StreamOut, StreamSettings};
use super::udp;
use crate::auth::NonceKey;
use crate::relay::{Core, Now, PEER_HEADROOM, PEER_TAILROOM, Quotas, Settings};
use crate::stats::{DropReason, Stats};

/// How a shard reaches a client.
#[derive(Clone)]
pub enum ClientLink {
    /// Through the UDP listener socket the client talks to (batched sends).
    Udp(Rc<UdpOut>),
    /// Through the write queue of its TCP or TLS connection.
    Stream(Rc<StreamOut>),
}

impl std::fmt::Debug for ClientLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientLink::Udp(_) => "ClientLink::Udp",
            ClientLink::Stream(_) => "ClientLink::Stream",
        })
    }
}

impl ClientLink {
    /// Sends one datagram or frame to the client; a full buffer drops it (counted).
    pub fn send(&self, bytes: &[u8], client: SocketAddr, stats: &Stats) {
        match self {
            ClientLink::Udp(out) => out.push(bytes, client, stats),
            ClientLink::Stream(out) => {
                if !out.push(bytes) {
                    stats.discard(DropReason::SendFailed);
                }
            }
        }
    }
}

/// Datagrams a listener socket sends: queued during a turn of the shard's event loop
/// and sent together, by the listener at the end of its own batch or by the listener's
/// flush task, which runs after the relay readers woken in the same turn.
pub struct UdpOut {
    pub socket: Rc<UdpSocket>,
    queue: RefCell<SendBatch>,
    /// Set while the listener handles a batch: it flushes at the end itself.
    in_batch: Cell<bool>,
    wake: Notify,
}

/// Datagrams queued per listener before a flush is forced.
const SEND_BATCH: usize = 64;

impl UdpOut {
    pub fn new(socket: Rc<UdpSocket>) -> Rc<Self> {
        Rc::new(Self {
            socket,
            queue: RefCell::new(SendBatch::new(SEND_BATCH)),
            in_batch: Cell::new(false),
            wake: Notify::new(),
        })
    }

    /// Queues one datagram for `to`.
    pub fn push(&self, bytes: &[u8], to: SocketAddr, stats: &Stats) {
        let mut queue = self.queue.borrow_mut();
        if queue.is_full() {
            self.send_queued(&mut queue, stats);
        }
        if queue.is_empty() && !self.in_batch.get() {
            self.wake.notify_one();
        }
        queue.push(bytes, to);
    }

    /// The listener starts handling a batch of requests.
    pub fn begin_batch(&self) {
        self.in_batch.set(true);
    }

    /// The listener finished its batch: send what it (and anyone else) queued.
    pub fn end_batch(&self, stats: &Stats) {
        self.in_batch.set(false);
        self.flush(stats);
    }

    /// Sends everything queued.
    pub fn flush(&self, stats: &Stats) {
        let mut queue = self.queue.borrow_mut();
        if !queue.is_empty() {
            self.send_queued(&mut queue, stats);
        }
    }

    fn send_queued(&self, queue: &mut SendBatch, stats: &Stats) {
        let done = queue.flush(&*self.socket);
        stats.discard_many(DropReason::SendFailed, done.dropped as u64);
    }

    /// Flushes whenever a datagram was queued outside the listener's own batch.
    pub async fn flush_task(self: Rc<Self>, stats: Arc<Stats>) {
        loop {
            self.wake.notified().await;
            self.flush(&stats);
        }
    }
}

/// The state of one shard, shared by its tasks.
pub struct Shard {
    pub core: RefCell<Core<RelaySocket, ClientLink>>,
    /// Receive slots for every UDP socket of the shard (listeners and relay sockets),
    /// with head- and tailroom so peer datagrams are framed in place.
    pub recv: RefCell<RecvBatch>,
    /// The epoll set of this shard's relay sockets.
    pub relay_poll: Rc<RelayPoll>,
    pub binding: RelayBinding,
    pub stats: Arc<Stats>,
}

impl Shard {
    /// A shard around `core`.
    pub fn new(
        core: Core<RelaySocket, ClientLink>,
        relay_poll: Rc<RelayPoll>,
        binding: RelayBinding,
        stats: Arc<Stats>,
    ) -> Rc<Self> {
        Rc::new(Self {
            core: RefCell::new(core),
            recv: RefCell::new(RecvBatch::new(
                RECV_BATCH,
                PEER_HEADROOM,
                MAX_DATAGRAM,
                PEER_TAILROOM,
            )),
            relay_poll,
            binding,
            stats,
        })
    }

    /// One batched receive from `socket` into [`recv`](Self::recv), through tokio's
    /// readiness: a short read proves the queue empty and clears the readiness, so no
    /// further receive is made just to learn `EAGAIN`. Truncated datagrams are counted.
    pub fn receive(&self, socket: &UdpSocket) -> std::io::Result<Received> {
        let mut got = None;
        let result = socket.try_io(Interest::READABLE, || {
            let r = self.receive_from(socket)?;
            got = Some(r);
            if r.drained {
                Err(std::io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match (got, result) {
            (Some(r), _) => Ok(r),
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }

    /// One batched receive from `socket` into [`recv`](Self::recv), regardless of any
    /// readiness state (the relay poller tracks its own; [`receive`](Self::receive)
    /// wraps this for tokio's sockets). Truncated datagrams are counted.
    pub fn receive_from(&self, socket: &impl AsRawFd) -> std::io::Result<Received> {
        let mut truncated = 0;
        let result = self.recv.borrow_mut().recv(socket, &mut truncated);
        self.stats.discard_many(DropReason::TooLarge, truncated);
        result
    }
}

/// Datagrams one receive call can bring.
const RECV_BATCH: usize = 32;

/// What a shard thread starts with.
pub struct ShardStart {
    /// The current settings; a reload sends a new snapshot.
    pub settings: watch::Receiver<Arc<Settings>>,
    /// Set while the daemon drains.
    pub draining: Arc<AtomicBool>,
    pub nonce_key: Arc<NonceKey>,
    pub quotas: Arc<Quotas>,
    pub binding: RelayBinding,
    pub stats: Arc<Stats>,
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: Vec<std::net::TcpListener>,
    pub tls: Vec<std::net::TcpListener>,
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    pub streams: StreamSettings,
    pub shutdown: watch::Receiver<bool>,
    /// Told once the shard serves its sockets; dropped unsent if it fails to start.
    pub ready: std::sync::mpsc::SyncSender<()>,
}

/// Runs a shard until shutdown. Blocks the calling thread.
pub fn run(start: ShardStart) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let ShardStart {
        mut settings,
        draining,
        nonce_key,
        quotas,
        binding,
        stats,
        udp: sockets,
        tcp,
        tls,
        tls_config,
        streams,
        mut shutdown,
        ready,
    } = start;
    local.block_on(&runtime, async move {
        // The core holds `Rc`s, so it is made on the thread that runs it.
        let mut core = Core::new(
            Arc::clone(&settings.borrow_and_update()),
            nonce_key,
            quotas,
            Arc::clone(&stats),
        );
        core.set_drain_flag(draining);
        let relay_poll = RelayPoll::new()?;
        let shard = Shard::new(core, Rc::clone(&relay_poll), binding, stats);
        tokio::task::spawn_local(relay_poll::read_peers(Rc::clone(&shard), relay_poll));
        for socket in sockets {
            let out = UdpOut::new(Rc::new(UdpSocket::from_std(socket)?));
            tokio::task::spawn_local(Rc::clone(&out).flush_task(Arc::clone(&shard.stats)));
            tokio::task::spawn_local(udp::serve(Rc::clone(&shard), out));
        }
        for listener in tcp {
            let listener = stream::listener(listener)?;
            tokio::task::spawn_local(stream::accept(
                Rc::clone(&shard),
                listener,
                None,
                streams.clone(),
            ));
        }
        if let Some(config) = tls_config {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            for listener in tls {
                let listener = stream::listener(listener)?;
                tokio::task::spawn_local(stream::accept(
                    Rc::clone(&shard),
                    listener,
                    Some(acceptor.clone()),
                    streams.clone(),
                ));
            }
        }
        tokio::task::spawn_local(sweep(Rc::clone(&shard)));
        let reload = Rc::clone(&shard);
        tokio::task::spawn_local(async move {
            while settings.changed().await.is_ok() {
                let new = Arc::clone(&settings.borrow_and_update());
                reload.core.borrow_mut().set_settings(new);
            }
        });
        // Every task is spawned: the daemon may say it is ready.
        let _ = ready.send(());
        drop(ready);
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    })?;
    // Dropping the LocalSet drops every task, which closes every socket.
    drop(local);
    Ok(())
}

/// Expires allocations, permissions and channels once a second.
async fn sweep(shard: Rc<Shard>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut core = shard.core.borrow_mut();
        core.handle_timeout(Now::read());
        if core.compact() {
            shard.recv.borrow_mut().release_pages();
            super::heap::return_freed_memory();
        }
    }
}
