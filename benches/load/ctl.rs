//! TURN control transactions (Allocate, CreatePermission, ChannelBind, Refresh) for
//! many clients at once: a small non-blocking engine over epoll that walks every
//! client through a script of steps, a bounded number of clients at a time, with
//! retransmissions and a deadline. Requests are built with tarn's own codec, as in
//! tests/soak.rs.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tarn::auth::{self, Secret};
use tarn::proto::{Class, Message, MessageWriter, Method, TransactionId, attr};

use crate::sys::{self, Epoll};

/// The channel every relay-mode client binds (one channel per allocation).
pub const CHANNEL: u16 = 0x4000;

/// One request of a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Allocate without credentials; expects 401 with a NONCE.
    Challenge,
    /// Allocate with credentials (REQUESTED-TRANSPORT UDP).
    Allocate,
    /// CreatePermission for the peer.
    Permission,
    /// ChannelBind of [`CHANNEL`] to the peer.
    ChannelBind,
    /// Refresh with LIFETIME 0: deletes the allocation.
    Release,
}

/// REST credentials shared by every client (each gets its own username).
pub struct Creds {
    pub secret: Secret,
    pub realm: String,
}

/// Where a client is in its script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Waiting,
    Done,
    Failed,
}

/// One TURN client: its own socket (connected to the server, so one 5-tuple), REST
/// username, long-term key and current nonce.
pub struct Client {
    pub socket: UdpSocket,
    pub username: String,
    pub key: [u8; 16],
    pub nonce: Vec<u8>,
    /// Whether the server holds an allocation for this client (Allocate succeeded and
    /// no Release has yet).
    pub allocated: bool,
    pub relayed: Option<SocketAddr>,
    id: u32,
    /// Tag of `socket` in its epoll token (`index | tag << 32`).
    socket_tag: u32,
    /// Spare sockets to rotate through (alloc-cycle `--socket-pool`), with their tags.
    pool: std::collections::VecDeque<(UdpSocket, u32)>,
    sockets_made: u64,
    counter: u64,
    tid: [u8; 12],
    req: [u8; 512],
    req_len: usize,
    state: State,
    step: usize,
    sent_at: Instant,
    tries: u32,
}

/// A new connected, non-blocking UDP socket on 127.0.0.1 (or ::1 for an IPv6 server).
pub fn client_socket(server: SocketAddr) -> io::Result<UdpSocket> {
    client_socket_from(server, 0)
}

/// Like [`client_socket`], but for `spread > 0` and an IPv4 loopback server, bound to
/// 127.0.0.(2 + spread % 250): servers may keep a released 5-tuple's state for a
/// while (coturn answers 437 to a new Allocate from it), and ephemeral ports recur
/// within seconds at thousands of sockets per second; spreading the source address
/// over the loopback /8 makes a recurring 5-tuple rare.
pub fn client_socket_from(server: SocketAddr, spread: u64) -> io::Result<UdpSocket> {
    let local: SocketAddr = match server {
        SocketAddr::V4(v4) if spread > 0 && v4.ip().is_loopback() => {
            SocketAddr::from(([127, 0, 0, 2 + (spread % 250) as u8], 0))
        }
        SocketAddr::V4(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
        SocketAddr::V6(_) => "[::1]:0".parse().expect("literal"),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(server)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

impl Client {
    /// A client with a fresh socket and username `<expiry>:<tag>-<id>`.
    pub fn new(server: SocketAddr, creds: &Creds, tag: &str, id: u32) -> io::Result<Self> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let username = format!("{}:{tag}-{id}", now + 86_400);
        let password = auth::rest_password(&creds.secret, &username);
        let key = auth::long_term_key(&username, &creds.realm, &password);
        Ok(Self {
            socket: client_socket(server)?,
            username,
            key,
            nonce: Vec::with_capacity(128),
            allocated: false,
            relayed: None,
            id,
            socket_tag: 0,
            pool: std::collections::VecDeque::new(),
            sockets_made: 0,
            counter: 0,
            tid: [0; 12],
            req: [0; 512],
            req_len: 0,
            state: State::Idle,
            step: 0,
            sent_at: Instant::now(),
            tries: 0,
        })
    }

    /// Builds the request for `step` (a new transaction id) into the client's buffer.
    fn encode(&mut self, step: Step, peer: SocketAddr, realm: &str) {
        self.counter += 1;
        self.tid[..4].copy_from_slice(&self.id.to_be_bytes());
        self.tid[4..].copy_from_slice(&self.counter.to_be_bytes());
        let method = match step {
            Step::Challenge | Step::Allocate => Method::ALLOCATE,
            Step::Permission => Method::CREATE_PERMISSION,
            Step::ChannelBind => Method::CHANNEL_BIND,
            Step::Release => Method::REFRESH,
        };
        let mut w = MessageWriter::new(
            &mut self.req,
            Class::Request,
            method,
            TransactionId(self.tid),
        )
        .expect("512 bytes hold a header");
        let r = (|| {
            match step {
                Step::Challenge | Step::Allocate => w.requested_transport(17)?,
                Step::Permission => w.xor_address(attr::XOR_PEER_ADDRESS, peer)?,
                Step::ChannelBind => {
                    w.channel_number(CHANNEL)?;
                    w.xor_address(attr::XOR_PEER_ADDRESS, peer)?;
                }
                Step::Release => w.u32_attr(attr::LIFETIME, 0)?,
            }
            if step != Step::Challenge {
                w.attr(attr::USERNAME, self.username.as_bytes())?;
                w.attr(attr::REALM, realm.as_bytes())?;
                w.attr(attr::NONCE, &self.nonce)?;
                w.message_integrity(&self.key)?;
            }
            Ok::<(), tarn::proto::EncodeError>(())
        })();
        r.expect("requests fit in 512 bytes");
        self.req_len = w.finish();
    }

    fn send(&self) -> bool {
        self.socket.send(&self.req[..self.req_len]).is_ok()
    }

    /// A new socket with a spread source address, registered in `epoll` for client
    /// `index`; returns it with its tag.
    fn fresh_socket(
        &mut self,
        server: SocketAddr,
        epoll: &Epoll,
        index: usize,
    ) -> io::Result<(UdpSocket, u32)> {
        self.sockets_made += 1;
        let tag = (self.sockets_made % u64::from(u32::MAX)) as u32;
        let spread = u64::from(self.id) * 7919 + self.sockets_made;
        let socket = client_socket_from(server, spread)?;
        epoll.add(socket.as_raw_fd(), index as u64 | u64::from(tag) << 32)?;
        Ok((socket, tag))
    }

    /// Adds `n` spare sockets to rotate through instead of opening one per cycle.
    pub fn fill_pool(
        &mut self,
        server: SocketAddr,
        epoll: &Epoll,
        index: usize,
        n: usize,
    ) -> io::Result<()> {
        for _ in 0..n {
            let s = self.fresh_socket(server, epoll, index)?;
            self.pool.push_back(s);
        }
        Ok(())
    }

    /// Moves to another 5-tuple: the next spare socket of the pool (the current one
    /// goes to the back), or a new socket when there is no pool.
    fn renew_socket(&mut self, server: SocketAddr, epoll: &Epoll, index: usize) -> io::Result<()> {
        match self.pool.pop_front() {
            Some((socket, tag)) => {
                let old = std::mem::replace(&mut self.socket, socket);
                let old_tag = std::mem::replace(&mut self.socket_tag, tag);
                self.pool.push_back((old, old_tag));
            }
            None => {
                let _ = epoll.remove(self.socket.as_raw_fd());
                let (socket, tag) = self.fresh_socket(server, epoll, index)?;
                self.socket = socket;
                self.socket_tag = tag;
            }
        }
        Ok(())
    }

    /// Reads and discards whatever waits on the spare socket tagged `tag`.
    fn drain_spare(&self, tag: u32, buf: &mut [u8]) {
        if let Some((s, _)) = self.pool.iter().find(|(_, t)| *t == tag) {
            for _ in 0..64 {
                match s.recv(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    _ => {}
                }
            }
        }
    }
}

/// How to run a script.
pub struct Run<'a> {
    pub script: &'a [Step],
    pub peer: SocketAddr,
    pub server: SocketAddr,
    pub realm: &'a str,
    /// Clients working at once.
    pub concurrency: usize,
    /// Give up on whatever is unfinished then.
    pub deadline: Instant,
    /// Start the script again after its last step until this instant (alloc-cycle).
    pub repeat_until: Option<Instant>,
    /// Count completed scripts that end inside this window.
    pub window: Option<(Instant, Instant)>,
    /// A new socket (5-tuple) for every repetition.
    pub new_socket: bool,
    /// Skip clients that hold no allocation (for releasing).
    pub only_allocated: bool,
    /// First retransmission after this; doubled each time, at most 5 tries.
    pub rto: Duration,
}

/// What a script run achieved.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Clients that completed the script (at least once).
    pub ok: usize,
    pub failed: usize,
    /// Scripts completed in total, and inside the window.
    pub completed: u64,
    pub completed_in_window: u64,
    pub timeouts: u64,
    pub retransmits: u64,
    /// Allocations left behind on the server by a failed, restarted script.
    pub abandoned: u64,
    /// Error responses by code (0: no answer).
    pub errors: BTreeMap<u16, u64>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "none".into();
        }
        self.errors
            .iter()
            .map(|(c, n)| {
                if *c == 0 {
                    format!("timeout×{n}")
                } else {
                    format!("{c}×{n}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Walks `clients` (registered in `epoll` with their index as token) through
/// `run.script`; `on_mark` is called when the window opens and when it closes.
pub fn run_script(
    epoll: &Epoll,
    clients: &mut [Client],
    run: &Run<'_>,
    on_mark: &mut dyn FnMut(usize),
) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome::default();
    let mut next = 0usize;
    let mut active = 0usize;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = [0u8; 2048];
    let mut marks_done = 0usize;
    let mut last_scan = start;
    let mut succeeded = vec![false; clients.len()];
    for c in clients.iter_mut() {
        c.state = State::Idle;
        c.step = 0;
    }

    loop {
        let now = Instant::now();
        if let Some((open, close)) = run.window {
            if marks_done == 0 && now >= open {
                on_mark(0);
                marks_done = 1;
            }
            if marks_done == 1 && now >= close {
                on_mark(1);
                marks_done = 2;
            }
        }
        let starting = run.repeat_until.is_none_or(|t| now < t);
        while starting && active < run.concurrency && next < clients.len() {
            let c = &mut clients[next];
            next += 1;
            if run.only_allocated && !c.allocated {
                c.state = State::Done;
                continue;
            }
            begin(c, run, now);
            active += 1;
        }
        if active == 0 && (next == clients.len() || !starting) {
            break;
        }
        if now >= run.deadline {
            for c in clients.iter_mut().filter(|c| c.state == State::Waiting) {
                c.state = State::Failed;
                out.timeouts += 1;
                *out.errors.entry(0).or_default() += 1;
            }
            break;
        }
        let n = epoll.wait(&mut events, 5).unwrap_or(0);
        for ev in &events[..n] {
            let token = sys::token(ev);
            let idx = (token & 0xFFFF_FFFF) as usize;
            let Some(c) = clients.get_mut(idx) else {
                continue;
            };
            if (token >> 32) as u32 != c.socket_tag {
                c.drain_spare((token >> 32) as u32, &mut buf);
                continue;
            }
            for _ in 0..64 {
                let len = match c.socket.recv(&mut buf) {
                    Ok(len) => len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // An ICMP error (server gone) is reported once; read on.
                    Err(_) => continue,
                };
                if c.state != State::Waiting {
                    continue;
                }
                let Ok(msg) = Message::parse(&buf[..len]) else {
                    continue;
                };
                if msg.transaction_id().0 != c.tid {
                    continue;
                }
                let step = run.script[c.step];
                let code = error_code(&msg);
                let verdict = match (step, msg.class(), code) {
                    (Step::Challenge, Class::Error, _) | (_, Class::Error, Some(438)) => {
                        match msg.get(attr::NONCE) {
                            Some(n) => {
                                c.nonce.clear();
                                c.nonce.extend_from_slice(n.value);
                                Ok(step == Step::Challenge)
                            }
                            None => Err(code.unwrap_or(1)),
                        }
                    }
                    (_, Class::Success, _) => {
                        match step {
                            Step::Allocate => {
                                c.allocated = true;
                                let tid = msg.transaction_id();
                                c.relayed = msg
                                    .get(attr::XOR_RELAYED_ADDRESS)
                                    .and_then(|a| attr::decode_xor_address(a.value, &tid).ok());
                            }
                            Step::Release => c.allocated = false,
                            _ => {}
                        }
                        Ok(true)
                    }
                    // Release of an allocation that is already gone.
                    (Step::Release, Class::Error, Some(437)) => {
                        c.allocated = false;
                        Ok(true)
                    }
                    _ => Err(code.unwrap_or(1)),
                };
                let now = Instant::now();
                let advance = match verdict {
                    Ok(advance) => advance,
                    Err(code) => {
                        if give_up(c, idx, run, epoll, now, &mut out, code) {
                            break; // restarted on a new socket
                        }
                        active -= 1;
                        break;
                    }
                };
                if advance {
                    c.step += 1;
                }
                if c.step < run.script.len() {
                    // Next step (or the same one again with a fresh nonce after 438).
                    c.tries = 0;
                    c.encode(run.script[c.step], run.peer, run.realm);
                    c.sent_at = now;
                    let _ = c.send();
                    continue;
                }
                // Script complete.
                out.completed += 1;
                succeeded[idx] = true;
                if let Some((open, close)) = run.window
                    && now >= open
                    && now < close
                {
                    out.completed_in_window += 1;
                }
                if run.repeat_until.is_some_and(|t| now < t) {
                    if run.new_socket && c.renew_socket(run.server, epoll, idx).is_err() {
                        c.state = State::Failed;
                        *out.errors.entry(2).or_default() += 1;
                        active -= 1;
                        break;
                    }
                    begin(c, run, now);
                    if run.new_socket {
                        break; // the old socket is gone
                    }
                } else {
                    c.state = State::Done;
                    active -= 1;
                }
            }
        }
        // Retransmissions, scanned every 20 ms.
        let now = Instant::now();
        if now.duration_since(last_scan) >= Duration::from_millis(20) {
            last_scan = now;
            for (idx, c) in clients.iter_mut().enumerate() {
                if c.state != State::Waiting {
                    continue;
                }
                let rto = run.rto * (1 << c.tries.min(4));
                if now.duration_since(c.sent_at) < rto {
                    continue;
                }
                if c.tries >= 4 {
                    out.timeouts += 1;
                    if !give_up(c, idx, run, epoll, now, &mut out, 0) {
                        active -= 1;
                    }
                } else {
                    c.tries += 1;
                    c.sent_at = now;
                    out.retransmits += 1;
                    let _ = c.send();
                }
            }
        }
    }
    if let Some((_, _)) = run.window
        && marks_done < 2
    {
        for m in marks_done..2 {
            on_mark(m);
        }
    }
    out.ok = succeeded.iter().filter(|s| **s).count();
    out.failed = clients.iter().filter(|c| c.state == State::Failed).count();
    out.elapsed = start.elapsed();
    out
}

/// Sends the first request of the script.
fn begin(c: &mut Client, run: &Run<'_>, now: Instant) {
    c.step = 0;
    c.tries = 0;
    c.encode(run.script[0], run.peer, run.realm);
    c.sent_at = now;
    c.state = State::Waiting;
    let _ = c.send();
}

/// Counts a failed script (`code` 0: no answer). When repeating, the client starts
/// over on a new socket (an allocation it may hold is abandoned and expires on the
/// server) and true is returned; otherwise it is marked failed.
fn give_up(
    c: &mut Client,
    idx: usize,
    run: &Run<'_>,
    epoll: &Epoll,
    now: Instant,
    out: &mut Outcome,
    code: u16,
) -> bool {
    *out.errors.entry(code).or_default() += 1;
    if run.repeat_until.is_some_and(|t| now < t) && c.renew_socket(run.server, epoll, idx).is_ok() {
        out.abandoned += u64::from(c.allocated);
        c.allocated = false;
        begin(c, run, now);
        return true;
    }
    c.state = State::Failed;
    false
}

/// The ERROR-CODE of a response, if any.
fn error_code(msg: &Message<'_>) -> Option<u16> {
    let v = msg.get(attr::ERROR_CODE)?.value;
    let class = u16::from(*v.get(2)? & 0x07);
    let number = u16::from(*v.get(3)?);
    Some(class * 100 + number)
}

/// Creates `n` clients registered in `epoll` under their index.
pub fn make_clients(
    epoll: &Epoll,
    server: SocketAddr,
    creds: &Creds,
    tag: &str,
    n: usize,
) -> io::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let c = Client::new(server, creds, tag, i as u32)?;
        epoll.add(c.socket.as_raw_fd(), i as u64)?;
        clients.push(c);
    }
    Ok(clients)
}

/// Releases (Refresh 0) every client that still holds an allocation, bounded by `limit`.
pub fn release_all(
    epoll: &Epoll,
    clients: &mut [Client],
    server: SocketAddr,
    peer: SocketAddr,
    realm: &str,
    limit: Duration,
) -> Outcome {
    run_script(
        epoll,
        clients,
        &Run {
            script: &[Step::Release],
            peer,
            server,
            realm,
            concurrency: 512,
            deadline: Instant::now() + limit,
            repeat_until: None,
            window: None,
            new_socket: false,
            only_allocated: true,
            rto: Duration::from_millis(200),
        },
        &mut |_| {},
    )
}
