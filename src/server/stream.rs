//! TCP and TLS client connections: accept, admission, framing, and the write queue.
//!
//! A connection carries STUN messages and ChannelData back to back (RFC 8656 12.5).
//! Its reader hands each frame to the shard's core exactly like a UDP datagram; its
//! writer drains a bounded queue that replies and relayed peer data share, so a slow
//! client loses relayed packets (counted), as it would over UDP, instead of growing
//! memory. A client that stalls a write, sends garbage, never finishes its TLS
//! handshake, or idles without an allocation is disconnected; closing a connection
//! ends its allocation (RFC 8656 3.1).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::limits::ConnectionLimits;
use super::relay_socket::{Binder, send_now};
use super::shard::{ClientLink, Shard};
use crate::proto::stream::{FrameError, next_frame};
use crate::relay::{ClientAction, FiveTuple, Now, Transport};
use crate::stats::DropReason;

/// Largest frame accepted from a client: a full STUN message (20-byte header plus a
/// 16-bit length) is the largest thing the framing can describe.
pub const MAX_FRAME: usize = 20 + 0xFFFF;
/// Bytes queued towards one client before relayed data is dropped.
const MAX_QUEUED: usize = 256 * 1024;
/// How long one write to a client may stall before the client is cut off.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response the core writes.
const OUT_LEN: usize = 2048;

/// Per-connection settings shared by the shard's accept loops.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    pub limits: Arc<ConnectionLimits>,
    /// A connection without an allocation that sends nothing this long is closed.
    pub idle_timeout: Duration,
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
}

/// The write side of a connection, shared with the core through [`ClientLink`].
#[derive(Debug, Default)]
pub struct StreamOut {
    pending: RefCell<Vec<u8>>,
    wake: Notify,
    closed: Cell<bool>,
}

impl StreamOut {
    /// Queues a whole frame; false (and nothing queued) when the queue is full or closed.
    pub fn push(&self, frame: &[u8]) -> bool {
        if self.closed.get() {
            return false;
        }
        let mut pending = self.pending.borrow_mut();
        if pending.len() + frame.len() > MAX_QUEUED {
            return false;
        }
        pending.extend_from_slice(frame);
        self.wake.notify_one();
        true
    }
}

/// Accepts TCP connections (plain, or TLS when `tls` is set) on one listener.
pub async fn accept(
    shard: Rc<Shard>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    settings: StreamSettings,
) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    loop {
        let (tcp, client) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = settings.limits.admit(client.ip()) else {
            shard.stats.discard(DropReason::ConnectionLimit);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shard = Rc::clone(&shard);
        let tls = tls.clone();
        let settings = settings.clone();
        tokio::task::spawn_local(async move {
            let _slot = slot;
            let five_tuple = FiveTuple {
                transport: if tls.is_some() {
                    Transport::Tls
                } else {
                    Transport::Tcp
                },
                client,
                server: local,
            };
            match tls {
                None => serve(shard, tcp, five_tuple, &settings).await,
                Some(acceptor) => {
                    match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(stream)) => serve(shard, stream, five_tuple, &settings).await,
                        Ok(Err(_)) => shard.stats.discard(DropReason::TlsHandshake),
                        Err(_) => shard.stats.discard(DropReason::TlsHandshake),
                    }
                }
            }
        });
    }
}

/// Serves one established connection until either side ends it.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shard: Rc<Shard>,
    stream: S,
    five_tuple: FiveTuple,
    settings: &StreamSettings,
) {
    let (reader, writer) = tokio::io::split(stream);
    let out = Rc::new(StreamOut::default());
    tokio::select! {
        _ = read_frames(&shard, reader, five_tuple, &out, settings.idle_timeout) => {}
        _ = write_queue(writer, &out) => {}
    }
    out.closed.set(true);
    shard
        .core
        .borrow_mut()
        .client_closed(&five_tuple, Now::read());
}

async fn write_queue<W: AsyncWrite + Unpin>(mut writer: W, out: &StreamOut) {
    let mut chunk = Vec::new();
    loop {
        out.wake.notified().await;
        std::mem::swap(&mut chunk, &mut *out.pending.borrow_mut());
        if chunk.is_empty() {
            continue;
        }
        match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&chunk)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        if tokio::time::timeout(WRITE_TIMEOUT, writer.flush())
            .await
            .is_err()
        {
            return;
        }
        chunk.clear();
    }
}

async fn read_frames<R: AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    mut reader: R,
    five_tuple: FiveTuple,
    out_queue: &Rc<StreamOut>,
    idle_timeout: Duration,
) {
    let link = ClientLink::Stream(Rc::clone(out_queue));
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out = vec![0u8; OUT_LEN].into_boxed_slice();
    loop {
        // Hand every complete frame to the core.
        let mut start = 0;
        loop {
            match next_frame(&buf[start..], MAX_FRAME) {
                Ok(Some(frame)) => {
                    let end = start + frame.total();
                    handle_frame(shard, five_tuple, &link, &buf[start..end], &mut out);
                    start = end;
                }
                Ok(None) => break,
                Err(FrameError::TooLarge) => {
                    shard.stats.discard(DropReason::TooLarge);
                    return;
                }
                Err(FrameError::Garbage) => {
                    shard.stats.discard(DropReason::Malformed);
                    return;
                }
            }
        }
        buf.drain(..start);
        if buf.capacity() - buf.len() < 2048 {
            buf.reserve(8192);
        }
        let read = tokio::time::timeout(idle_timeout, reader.read_buf(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => {
                // Quiet for a whole idle period: fine while an allocation lives, which
                // has its own lifetime; otherwise the connection is only holding a slot.
                if !shard.core.borrow().has_allocation(&five_tuple) {
                    return;
                }
            }
        }
        if buf.capacity() > 4 * MAX_FRAME {
            buf.shrink_to(2 * MAX_FRAME);
        }
    }
}

fn handle_frame(
    shard: &Rc<Shard>,
    five_tuple: FiveTuple,
    link: &ClientLink,
    frame: &[u8],
    out: &mut [u8],
) {
    let mut core = shard.core.borrow_mut();
    let mut io = Binder { shard };
    match core.handle_client(Now::read(), five_tuple, link, frame, out, &mut io) {
        ClientAction::None => {}
        ClientAction::Reply(n) => link.send(&out[..n], five_tuple.client, &shard.stats),
        ClientAction::Relay {
            socket,
            peer,
            payload,
        } => {
            if send_now(&socket.socket, payload, peer).is_err() {
                shard.stats.discard(DropReason::SendFailed);
            }
        }
    }
}

/// Binds `count` SO_REUSEPORT TCP listeners on `addr` (port 0 resolves once, for all).
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let std: std::net::TcpListener = socket.into();
        addr = std.local_addr()?;
        listeners.push(std);
    }
    Ok(listeners)
}

/// Converts a std listener for the current runtime.
pub fn listener(std: std::net::TcpListener) -> io::Result<TcpListener> {
    TcpListener::from_std(std)
}
