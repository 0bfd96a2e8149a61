//! The UDP echo peer: one socket on 127.0.0.1 (an ephemeral port, outside any relay
//! range below 32768) that sends every datagram back to where it came from. It runs on
//! its own thread and moves datagrams in batches of up to 64 with recvmmsg/sendmmsg,
//! so it costs two system calls per batch, not two per packet.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sys;

const BATCH: usize = 64;

/// A running echo peer; stopped (and joined) on drop.
pub struct EchoPeer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl EchoPeer {
    /// Binds 127.0.0.1:0 and starts echoing datagrams of up to `max_len` bytes.
    pub fn start(max_len: usize) -> io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        sys::set_buffers(socket.as_raw_fd(), 16 << 20);
        // A blocking socket with a receive timeout: the thread sleeps in recvmmsg and
        // still notices `stop` within 50 ms.
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, echoed, dropped) =
                (Arc::clone(&stop), Arc::clone(&echoed), Arc::clone(&dropped));
            std::thread::Builder::new()
                .name("echo-peer".into())
                .spawn(move || run(&socket, max_len, &stop, &echoed, &dropped))?
        };
        Ok(Self {
            addr,
            stop,
            echoed,
            dropped,
            handle: Some(handle),
        })
    }

    /// Datagrams echoed so far.
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Relaxed)
    }

    /// Datagrams the peer could not send back.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(
    socket: &UdpSocket,
    max_len: usize,
    stop: &AtomicBool,
    echoed: &AtomicU64,
    dropped: &AtomicU64,
) {
    let fd = socket.as_raw_fd();
    let mut bufs = vec![0u8; BATCH * max_len];
    // SAFETY: all-zero is a valid sockaddr_storage, iovec and mmsghdr (null pointers,
    // zero lengths); every pointer is set below before any call uses it.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    for (i, chunk) in bufs.chunks_exact_mut(max_len).enumerate() {
        iovs[i].iov_base = chunk.as_mut_ptr().cast();
        iovs[i].iov_len = max_len;
    }
    let (names_ptr, iovs_ptr) = (names.as_mut_ptr(), iovs.as_mut_ptr());
    for (i, m) in msgs.iter_mut().enumerate() {
        // SAFETY: `i < BATCH`, the length of both vectors, which never reallocate.
        unsafe {
            m.msg_hdr.msg_name = names_ptr.add(i).cast();
            m.msg_hdr.msg_iov = iovs_ptr.add(i);
        }
        m.msg_hdr.msg_iovlen = 1;
    }
    let name_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..BATCH {
            iovs[i].iov_len = max_len;
            msgs[i].msg_hdr.msg_namelen = name_len;
            msgs[i].msg_hdr.msg_flags = 0;
        }
        // SAFETY: every mmsghdr points at a live name and iovec over `bufs`, all of
        // which outlive the call; the kernel writes within the given lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            // Timeout (EAGAIN) or EINTR: look at `stop` and wait again.
            continue;
        }
        let n = n as usize;
        for i in 0..n {
            iovs[i].iov_len = msgs[i].msg_len as usize;
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: as above; names and lengths are what recvmmsg filled in.
            let s = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs.as_mut_ptr().add(sent),
                    (n - sent) as libc::c_uint,
                    0,
                )
            };
            if s <= 0 {
                // The datagram at `sent` failed (e.g. ENOBUFS): drop it, go on.
                dropped.fetch_add(1, Ordering::Relaxed);
                sent += 1;
            } else {
                sent += s as usize;
            }
        }
        echoed.fetch_add(n as u64, Ordering::Relaxed);
    }
}
