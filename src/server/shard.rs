//! A shard: one thread with a single-threaded runtime that owns one [`Core`], its
//! listener sockets (SO_REUSEPORT siblings of the other shards') and the relay sockets
//! of the allocations it made. Everything an allocation touches lives on one thread, so
//! the per-packet path borrows a `RefCell` instead of taking a lock.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::relay_socket::{MAX_DATAGRAM, RelayBinding, RelaySocket, send_now};
use super::stream::{self, StreamOut, StreamSettings};
use super::udp;
use crate::auth::NonceKey;
use crate::relay::{Core, Now, PEER_HEADROOM, PEER_TAILROOM, Quotas, Settings};
use crate::stats::{DropReason, Stats};

/// How a shard reaches a client.
#[derive(Clone, Debug)]
pub enum ClientLink {
    /// Through the UDP listener socket the client talks to.
    Udp(Rc<UdpSocket>),
    /// Through the write queue of its TCP or TLS connection.
    Stream(Rc<StreamOut>),
}

impl ClientLink {
    /// Sends one datagram or frame to the client; a full buffer drops it (counted).
    pub fn send(&self, bytes: &[u8], client: SocketAddr, stats: &Stats) {
        match self {
            ClientLink::Udp(socket) => {
                if send_now(socket, bytes, client).is_err() {
                    stats.discard(DropReason::SendFailed);
                }
            }
            ClientLink::Stream(out) => {
                if !out.push(bytes) {
                    stats.discard(DropReason::SendFailed);
                }
            }
        }
    }
}

/// The state of one shard, shared by its tasks.
pub struct Shard {
    pub core: RefCell<Core<RelaySocket, ClientLink>>,
    /// Scratch buffer for peer datagrams, with head- and tailroom for in-place framing.
    pub scratch: RefCell<Box<[u8]>>,
    pub binding: RelayBinding,
    pub stats: Arc<Stats>,
}

impl Shard {
    /// A shard around `core`.
    pub fn new(
        core: Core<RelaySocket, ClientLink>,
        binding: RelayBinding,
        stats: Arc<Stats>,
    ) -> Rc<Self> {
        Rc::new(Self {
            core: RefCell::new(core),
            scratch: RefCell::new(
                vec![0u8; PEER_HEADROOM + MAX_DATAGRAM + PEER_TAILROOM].into_boxed_slice(),
            ),
            binding,
            stats,
        })
    }
}

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
        let shard = Shard::new(core, binding, stats);
        for socket in sockets {
            let socket = UdpSocket::from_std(socket)?;
            tokio::task::spawn_local(udp::serve(Rc::clone(&shard), Rc::new(socket)));
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
            super::heap::return_freed_memory();
        }
    }
}
