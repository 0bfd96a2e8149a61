//! Batched UDP I/O: many datagrams per system call (`recvmmsg`, `sendmmsg`).
//!
//! On loopback and on a busy server most of a relayed packet's cost is the kernel
//! crossing, so a wake-up that finds several datagrams should pay for one receive, and
//! the datagrams a shard produces for one listener socket during one turn of its event
//! loop should leave in one send. A receive that returns fewer datagrams than asked
//! also proves the socket's queue empty, which saves the extra receive that would
//! otherwise only report `EAGAIN` to clear the reactor's readiness.
//!
//! Written here rather than taken from a crate: `quinn-udp` batches receives but sends
//! one destination per call (GSO) and switches on GRO, which would merge a peer's
//! datagrams; `nix` has the calls but needs allocation per call for the address list.
//! The unsafe surface is two system calls over buffers this module owns.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::SockAddr;

/// A set of receive slots, each with room in front of and behind the payload so a
/// relayed datagram can be framed in place (ChannelData header, Data indication).
pub struct RecvBatch {
    headroom: usize,
    payload: usize,
    slot: usize,
    data: Box<[u8]>,
    lens: Box<[usize]>,
    from: Box<[Option<SocketAddr>]>,
    /// Whole datagrams held from the last receive.
    count: usize,
    #[cfg(target_os = "linux")]
    sys: linux::RecvState,
}

/// What one receive brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Whole datagrams now in the batch ([`RecvBatch::get`] `0..count`).
    pub count: usize,
    /// The socket's queue was empty after them: no need to ask again until the
    /// reactor reports it readable.
    pub drained: bool,
}

/// One received datagram.
pub struct Datagram<'a> {
    /// The whole slot: headroom, payload, tailroom.
    pub slot: &'a mut [u8],
    /// Where the payload starts in `slot`.
    pub start: usize,
    /// Payload length.
    pub len: usize,
    pub from: SocketAddr,
}

impl RecvBatch {
    /// `slots` slots of `headroom + payload + tailroom` bytes. Memory is reserved, not
    /// touched: a slot's pages become resident only when a datagram that large arrives.
    pub fn new(slots: usize, headroom: usize, payload: usize, tailroom: usize) -> Self {
        let slot = headroom + payload + tailroom;
        Self {
            headroom,
            payload,
            slot,
            data: vec![0u8; slots * slot].into_boxed_slice(),
            lens: vec![0; slots].into_boxed_slice(),
            from: vec![None; slots].into_boxed_slice(),
            count: 0,
            #[cfg(target_os = "linux")]
            sys: linux::RecvState::new(slots),
        }
    }

    /// How many datagrams one call can receive.
    pub fn slots(&self) -> usize {
        self.lens.len()
    }

    /// Receives what the socket holds, up to [`slots`](Self::slots), without blocking.
    /// An empty queue is `WouldBlock`. A datagram larger than a slot's payload room is
    /// dropped and counted in `truncated`.
    pub fn recv(&mut self, socket: &impl AsRawFd, truncated: &mut u64) -> io::Result<Received> {
        self.count = 0;
        let (n, kept) = self.recv_raw(socket, truncated)?;
        self.count = kept;
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Received {
            count: kept,
            drained: n < self.slots(),
        })
    }

    /// Returns the slots' pages to the operating system (their contents are scratch):
    /// a burst that filled many slots must not keep them resident once it is over.
    pub fn release_pages(&mut self) {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: sysconf has no preconditions.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
                .unwrap_or(4096)
                .max(1);
            let start = self.data.as_mut_ptr() as usize;
            let first = start.next_multiple_of(page);
            let last = (start + self.data.len()) / page * page;
            if last > first {
                // SAFETY: [first, last) is whole pages inside `data`, which this batch
                // owns exclusively (`&mut self`); after MADV_DONTNEED private anonymous
                // pages read back as zeros, a valid value for a byte buffer.
                unsafe {
                    libc::madvise(
                        first as *mut libc::c_void,
                        last - first,
                        libc::MADV_DONTNEED,
                    );
                }
            }
        }
    }

    /// Datagram `i` of the last receive.
    pub fn get(&mut self, i: usize) -> Option<Datagram<'_>> {
        if i >= self.count {
            return None;
        }
        let from = self.from[i]?;
        let len = self.lens[i];
        let slot = &mut self.data[i * self.slot..(i + 1) * self.slot];
        Some(Datagram {
            slot,
            start: self.headroom,
            len,
            from,
        })
    }

    #[cfg(target_os = "linux")]
    fn recv_raw(
        &mut self,
        socket: &impl AsRawFd,
        truncated: &mut u64,
    ) -> io::Result<(usize, usize)> {
        let n = self.sys.recv(
            socket.as_raw_fd(),
            &mut self.data,
            self.slot,
            self.headroom,
            self.payload,
        )?;
        // Keep only whole datagrams; compact them to the front of the batch.
        let mut kept = 0;
        for i in 0..n {
            let (len, from, cut) = self.sys.result(i);
            if cut || from.is_none() {
                *truncated += u64::from(cut);
                continue;
            }
            if kept != i {
                let (src, dst) = (i * self.slot, kept * self.slot);
                self.data.copy_within(
                    src + self.headroom..src + self.headroom + len,
                    dst + self.headroom,
                );
            }
            self.lens[kept] = len;
            self.from[kept] = from;
            kept += 1;
        }
        Ok((n, kept))
    }

    #[cfg(not(target_os = "linux"))]
    fn recv_raw(
        &mut self,
        socket: &impl AsRawFd,
        truncated: &mut u64,
    ) -> io::Result<(usize, usize)> {
        let _ = truncated;
        let sock = socket2::SockRef::from(socket);
        let mut n = 0;
        while n < self.slots() {
            let start = n * self.slot + self.headroom;
            let buf = &mut self.data[start..start + self.payload];
            // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the buffer is
            // initialised already, so viewing it as possibly uninitialised is sound.
            let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
            match sock.recv_from(uninit) {
                Ok((len, from)) => {
                    let Some(from) = from.as_socket() else {
                        continue;
                    };
                    self.lens[n] = len;
                    self.from[n] = Some(from);
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok((n, n))
    }
}

/// Datagrams waiting to leave through one socket, sent together by [`flush`](Self::flush).
pub struct SendBatch {
    bytes: Vec<u8>,
    /// (offset into `bytes`, length, destination)
    entries: Vec<(usize, usize, SockAddr)>,
    limit: usize,
    #[cfg(target_os = "linux")]
    sys: linux::SendState,
}

/// What a flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    /// Datagrams the kernel refused (full buffer, unreachable destination).
    pub dropped: usize,
}

impl SendBatch {
    /// A queue for up to `limit` datagrams.
    pub fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(limit * 256),
            entries: Vec::with_capacity(limit),
            limit,
            #[cfg(target_os = "linux")]
            sys: linux::SendState::new(limit),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.limit
    }

    /// Queues one datagram. The caller flushes first when the batch [is full](Self::is_full).
    pub fn push(&mut self, payload: &[u8], to: SocketAddr) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.entries
            .push((start, payload.len(), SockAddr::from(to)));
    }

    /// Sends everything queued; what the kernel refuses is dropped, as UDP would.
    pub fn flush(&mut self, socket: &impl AsRawFd) -> Flushed {
        let mut done = Flushed::default();
        let mut next = 0;
        while next < self.entries.len() {
            match self.send_from(socket, next) {
                Ok(n) => {
                    done.sent += n;
                    next += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    done.dropped += self.entries.len() - next;
                    break;
                }
                Err(_) => {
                    // The first datagram is refused (its destination, its size): skip it.
                    done.dropped += 1;
                    next += 1;
                }
            }
        }
        self.bytes.clear();
        self.entries.clear();
        // A burst of large datagrams must not pin its buffer for good.
        if self.bytes.capacity() > self.limit * 2048 {
            self.bytes.shrink_to(self.limit * 256);
        }
        done
    }

    #[cfg(target_os = "linux")]
    fn send_from(&mut self, socket: &impl AsRawFd, first: usize) -> io::Result<usize> {
        self.sys
            .send(socket.as_raw_fd(), &self.bytes, &self.entries[first..])
    }

    #[cfg(not(target_os = "linux"))]
    fn send_from(&mut self, socket: &impl AsRawFd, first: usize) -> io::Result<usize> {
        let (start, len, to) = &self.entries[first];
        socket2::SockRef::from(socket).send_to(&self.bytes[*start..*start + *len], to)?;
        Ok(1)
    }
}

#[cfg(target_os = "linux")]
mod linux {
    //! The two system calls and the C structures they read and fill.

    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::SocketAddr;
    use std::os::fd::RawFd;

    use socket2::SockAddr;

    pub struct RecvState {
        hdrs: Box<[libc::mmsghdr]>,
        iovs: Box<[libc::iovec]>,
        names: Box<[libc::sockaddr_storage]>,
    }

    impl RecvState {
        pub fn new(slots: usize) -> Self {
            // SAFETY: these are plain C structs for which all-zero is a valid value.
            let (hdr, iov, name) = unsafe {
                (
                    zeroed::<libc::mmsghdr>(),
                    zeroed::<libc::iovec>(),
                    zeroed::<libc::sockaddr_storage>(),
                )
            };
            Self {
                hdrs: vec![hdr; slots].into_boxed_slice(),
                iovs: vec![iov; slots].into_boxed_slice(),
                names: vec![name; slots].into_boxed_slice(),
            }
        }

        /// One `recvmmsg` into the payload room of each slot of `data`.
        pub fn recv(
            &mut self,
            fd: RawFd,
            data: &mut [u8],
            slot: usize,
            headroom: usize,
            payload: usize,
        ) -> io::Result<usize> {
            let slots = self.hdrs.len();
            debug_assert!(data.len() >= slots * slot);
            let base = data.as_mut_ptr();
            for i in 0..slots {
                // Pointers are refreshed every call, so nothing here is self-referential.
                self.iovs[i] = libc::iovec {
                    // SAFETY: i * slot + headroom + payload <= data.len() (asserted
                    // above): the pointer stays inside `data`.
                    iov_base: unsafe { base.add(i * slot + headroom) }.cast(),
                    iov_len: payload,
                };
                let hdr = &mut self.hdrs[i];
                hdr.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
                hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                hdr.msg_hdr.msg_iov = &mut self.iovs[i];
                hdr.msg_hdr.msg_iovlen = 1;
                hdr.msg_hdr.msg_control = std::ptr::null_mut();
                hdr.msg_hdr.msg_controllen = 0;
                hdr.msg_hdr.msg_flags = 0;
                hdr.msg_len = 0;
            }
            // SAFETY: every header points at a name buffer and one iovec owned by
            // `self`, and each iovec at `payload` writable bytes inside `data`; all of
            // them outlive the call. MSG_DONTWAIT makes it non-blocking.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    slots as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        }

        /// Length, sender and "cut off" flag of datagram `i` of the last receive.
        pub fn result(&self, i: usize) -> (usize, Option<SocketAddr>, bool) {
            let hdr = &self.hdrs[i];
            let cut = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let from = socket_addr(&self.names[i], hdr.msg_hdr.msg_namelen);
            (hdr.msg_len as usize, from, cut)
        }
    }

    /// Decodes an IPv4 or IPv6 socket address the kernel wrote.
    fn socket_addr(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
        use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
        let len = len as usize;
        match libc::c_int::from(name.ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says sockaddr_in, the length covers it, and
                // sockaddr_storage is aligned for every sockaddr type.
                let a = unsafe {
                    &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let a = unsafe {
                    &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    // Addresses are compared whole (channels, 5-tuples): a flow label
                    // must not make the same peer look like another one.
                    0,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    pub struct SendState {
        hdrs: Vec<libc::mmsghdr>,
        iovs: Vec<libc::iovec>,
    }

    impl SendState {
        pub fn new(limit: usize) -> Self {
            Self {
                hdrs: Vec::with_capacity(limit),
                iovs: Vec::with_capacity(limit),
            }
        }

        /// One `sendmmsg` of `entries` (offsets into `bytes`); how many were sent.
        pub fn send(
            &mut self,
            fd: RawFd,
            bytes: &[u8],
            entries: &[(usize, usize, SockAddr)],
        ) -> io::Result<usize> {
            self.iovs.clear();
            self.hdrs.clear();
            for (start, len, _) in entries {
                self.iovs.push(libc::iovec {
                    // The kernel only reads through this pointer (sendmmsg).
                    iov_base: bytes[*start..*start + *len].as_ptr() as *mut libc::c_void,
                    iov_len: *len,
                });
            }
            for (i, (_, _, to)) in entries.iter().enumerate() {
                // SAFETY: all-zero is a valid mmsghdr; the fields that matter are set next.
                let mut hdr: libc::mmsghdr = unsafe { zeroed() };
                hdr.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
                hdr.msg_hdr.msg_namelen = to.len();
                hdr.msg_hdr.msg_iov = &mut self.iovs[i];
                hdr.msg_hdr.msg_iovlen = 1;
                self.hdrs.push(hdr);
            }
            // SAFETY: each header points at a destination address owned by `entries`
            // and one iovec in `self.iovs` over bytes in `bytes`; all outlive the call,
            // and the vectors are not touched until it returns.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    self.hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    fn bound(addr: &str) -> UdpSocket {
        let s = UdpSocket::bind(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Waits (bounded) until `socket` has something queued, so a non-blocking batch
    /// receive sees what was sent (loopback delivery is synchronous, this is a guard).
    fn wait_readable(socket: &UdpSocket) {
        let mut fd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut fd, 1, 5000) };
        assert_eq!(n, 1, "socket became readable");
    }

    #[test]
    fn receives_a_batch_with_senders_and_headroom() {
        let rx = bound("127.0.0.1:0");
        let to = rx.local_addr().unwrap();
        let a = bound("127.0.0.1:0");
        let b = bound("127.0.0.1:0");
        for i in 0..5u8 {
            let s = if i % 2 == 0 { &a } else { &b };
            s.send_to(&[i; 10][..usize::from(i) + 1], to).unwrap();
        }
        wait_readable(&rx);
        let mut batch = RecvBatch::new(8, 48, 1500, 4);
        let mut cut = 0;
        let got = batch.recv(&rx, &mut cut).unwrap();
        assert_eq!(
            got,
            Received {
                count: 5,
                drained: true
            }
        );
        for i in 0..5u8 {
            let d = batch.get(usize::from(i)).unwrap();
            assert_eq!(d.start, 48);
            assert_eq!(d.len, usize::from(i) + 1);
            assert!(d.slot[d.start..d.start + d.len].iter().all(|&x| x == i));
            let sender = if i % 2 == 0 { &a } else { &b };
            assert_eq!(d.from, sender.local_addr().unwrap());
        }
        assert!(batch.get(5).is_none());
        let again = batch.recv(&rx, &mut cut).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(cut, 0);
    }

    #[test]
    fn released_pages_still_receive() {
        let rx = bound("127.0.0.1:0");
        let tx = bound("127.0.0.1:0");
        let mut batch = RecvBatch::new(4, 48, 65535, 4);
        batch.release_pages();
        tx.send_to(b"after release", rx.local_addr().unwrap())
            .unwrap();
        wait_readable(&rx);
        let mut cut = 0;
        assert_eq!(batch.recv(&rx, &mut cut).unwrap().count, 1);
        let d = batch.get(0).unwrap();
        assert_eq!(&d.slot[d.start..d.start + d.len], b"after release");
    }

    #[test]
    fn a_full_batch_is_not_drained_and_the_rest_follows() {
        let rx = bound("127.0.0.1:0");
        let to = rx.local_addr().unwrap();
        let tx = bound("127.0.0.1:0");
        for i in 0..10u8 {
            tx.send_to(&[i], to).unwrap();
        }
        wait_readable(&rx);
        let mut batch = RecvBatch::new(4, 0, 64, 0);
        let mut cut = 0;
        let mut seen = Vec::new();
        let mut results = Vec::new();
        loop {
            match batch.recv(&rx, &mut cut) {
                Ok(r) => {
                    for i in 0..r.count {
                        let d = batch.get(i).unwrap();
                        seen.push(d.slot[d.start]);
                    }
                    results.push(r);
                    if r.drained {
                        break;
                    }
                }
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    results.push(Received {
                        count: 0,
                        drained: true,
                    });
                    break;
                }
            }
        }
        assert_eq!(seen, (0..10).collect::<Vec<u8>>());
        assert_eq!(
            results,
            vec![
                Received {
                    count: 4,
                    drained: false
                },
                Received {
                    count: 4,
                    drained: false
                },
                Received {
                    count: 2,
                    drained: true
                },
            ]
        );
    }

    #[test]
    fn an_oversized_datagram_is_dropped_and_counted() {
        let rx = bound("127.0.0.1:0");
        let to = rx.local_addr().unwrap();
        let tx = bound("127.0.0.1:0");
        tx.send_to(&[1u8; 200], to).unwrap();
        tx.send_to(&[2u8; 20], to).unwrap();
        wait_readable(&rx);
        let mut batch = RecvBatch::new(4, 8, 100, 0);
        let mut cut = 0;
        let got = batch.recv(&rx, &mut cut).unwrap();
        assert_eq!(got.count, 1);
        assert_eq!(cut, 1);
        let d = batch.get(0).unwrap();
        assert_eq!(d.len, 20);
        assert!(d.slot[d.start..d.start + 20].iter().all(|&x| x == 2));
    }

    #[test]
    fn sends_to_several_destinations_in_one_flush() {
        let tx = bound("127.0.0.1:0");
        tx.set_nonblocking(true).unwrap();
        let r1 = bound("127.0.0.1:0");
        let r2 = bound("127.0.0.1:0");
        let mut q = SendBatch::new(4);
        assert!(q.is_empty());
        q.push(b"one", r1.local_addr().unwrap());
        q.push(b"two", r2.local_addr().unwrap());
        q.push(b"three", r1.local_addr().unwrap());
        assert!(!q.is_full());
        q.push(b"four", r2.local_addr().unwrap());
        assert!(q.is_full());
        assert_eq!(
            q.flush(&tx),
            Flushed {
                sent: 4,
                dropped: 0
            }
        );
        assert!(q.is_empty());
        let mut buf = [0u8; 16];
        let mut read = |s: &UdpSocket| {
            let (n, from) = s.recv_from(&mut buf).unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            buf[..n].to_vec()
        };
        assert_eq!(read(&r1), b"one");
        assert_eq!(read(&r1), b"three");
        assert_eq!(read(&r2), b"two");
        assert_eq!(read(&r2), b"four");
    }

    #[test]
    fn a_refused_datagram_does_not_stop_the_others() {
        let tx = bound("127.0.0.1:0");
        tx.set_nonblocking(true).unwrap();
        let rx = bound("127.0.0.1:0");
        let mut q = SendBatch::new(4);
        // An IPv6 destination on an IPv4 socket is refused by the kernel.
        q.push(b"lost", "[::1]:9".parse().unwrap());
        q.push(b"kept", rx.local_addr().unwrap());
        assert_eq!(
            q.flush(&tx),
            Flushed {
                sent: 1,
                dropped: 1
            }
        );
        let mut buf = [0u8; 16];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"kept");
    }

    #[test]
    fn ipv6_senders_are_decoded() {
        let Ok(rx) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback on this machine
        };
        let tx = bound("[::1]:0");
        tx.send_to(b"v6", rx.local_addr().unwrap()).unwrap();
        wait_readable(&rx);
        let mut batch = RecvBatch::new(2, 0, 64, 0);
        let mut cut = 0;
        assert_eq!(batch.recv(&rx, &mut cut).unwrap().count, 1);
        assert_eq!(batch.get(0).unwrap().from, tx.local_addr().unwrap());
    }
}
