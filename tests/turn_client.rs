//! Interop with an independent TURN client: the webrtc-rs `turn` 0.17 crate allocates on
//! the real daemon and relays many distinct payloads to a UDP echo peer and back.
//!
//! The crate decides the framing by itself (`turn/src/client/relay_conn.rs`): the first
//! `send_to` towards a peer creates a permission (waiting for it), sees no channel binding
//! for the peer, starts a ChannelBind in a background task and sends the payload as a
//! Send indication. Every later packet goes as a Send indication until that ChannelBind
//! succeeded, and as ChannelData from then on (a failed ChannelBind leaves the binding
//! "failed" and the peer on Send indications for good). The server answers with Data
//! indications for peers without a channel and ChannelData for peers with one.
//!
//! The client's socket is wrapped in [`Wire`], a `webrtc_util::Conn` that forwards to a
//! real UDP socket and records the first bytes of every datagram, so the tests prove which
//! framing crossed the wire. `Wire` can also refuse ChannelBind requests on the server's
//! behalf (never sending them), which pins the client to Send/Data indications, and it can
//! add REQUESTED-ADDRESS-FAMILY to the authenticated Allocate (re-signing it), because the
//! crate has no API for an IPv6 relayed address.
//!
//! Each allocation starts with one marker datagram (see [`warm_up`]) that must come back
//! on its first send: the first datagram through a fresh relay socket once got lost;
//! every payload after it must come back intact too.

mod common;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

use common::{Daemon, REALM, credentials, set_key};
use tarn::auth::long_term_key;
use tarn::proto::{Class, Family, MAGIC_COOKIE, Message, MessageWriter, Method, attr};

/// The relay port range of the harness configuration.
fn relay_ports() -> RangeInclusive<u16> {
    let config = common::base_config(std::path::Path::new("/nonexistent"));
    let value = config
        .lines()
        .find(|l| l.trim_start().starts_with("relay_ports"))
        .and_then(|l| l.split('"').nth(1))
        .expect("relay_ports in the harness configuration");
    tarn::config::PortRange::parse(value)
        .expect("a valid relay port range")
        .0
}

/// Bound on every single wait for a datagram or a response.
const WAIT: Duration = Duration::from_secs(5);

/// STUN message types seen on the wire.
const ALLOCATE_REQUEST: u16 = 0x0003;
const REFRESH_SUCCESS: u16 = 0x0104;
const CHANNEL_BIND_REQUEST: u16 = 0x0009;
const CHANNEL_BIND_SUCCESS: u16 = 0x0109;
const SEND_INDICATION: u16 = 0x0016;
const DATA_INDICATION: u16 = 0x0017;

/// What one datagram was, judged by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    /// First byte 0x40..=0x4F: ChannelData with this channel number.
    ChannelData(u16),
    /// A STUN message of this type.
    Stun(u16),
    /// Anything else.
    Other,
}

fn frame_of(buf: &[u8]) -> Frame {
    match buf {
        [b0 @ 0x40..=0x4F, b1, _, _, ..] => Frame::ChannelData(u16::from_be_bytes([*b0, *b1])),
        [b0, b1, _, _, c0, c1, c2, c3, ..]
            if b0 & 0xC0 == 0
                && buf.len() >= 20
                && u32::from_be_bytes([*c0, *c1, *c2, *c3]) == MAGIC_COOKIE =>
        {
            Frame::Stun(u16::from_be_bytes([*b0, *b1]))
        }
        _ => Frame::Other,
    }
}

/// Everything [`Wire`] saw, in order.
#[derive(Default, Debug)]
struct Tap {
    /// Datagrams sent to the server.
    out: Vec<Frame>,
    /// Datagrams received from the server.
    incoming: Vec<Frame>,
    /// ChannelBind requests refused by the wire itself (never sent).
    refused_binds: usize,
}

impl Tap {
    fn out_count(&self, f: impl Fn(&Frame) -> bool) -> usize {
        self.out.iter().filter(|x| f(x)).count()
    }
    fn in_count(&self, f: impl Fn(&Frame) -> bool) -> usize {
        self.incoming.iter().filter(|x| f(x)).count()
    }
}

fn is_channel_data(f: &Frame) -> bool {
    matches!(f, Frame::ChannelData(_))
}

fn is_stun(t: u16) -> impl Fn(&Frame) -> bool {
    move |f| *f == Frame::Stun(t)
}

/// A `webrtc_util::Conn` over a real UDP socket that records every datagram.
struct Wire {
    socket: UdpSocket,
    server: SocketAddr,
    tap: Mutex<Tap>,
    /// Bumped after every recorded datagram, so waiters need not poll.
    events: watch::Sender<u64>,
    /// Answer ChannelBind requests with an error here instead of sending them.
    refuse_channel_bind: bool,
    /// Long-term key to re-sign the authenticated Allocate with REQUESTED-ADDRESS-FAMILY
    /// IPv6 added.
    allocate_v6_key: Option<[u8; 16]>,
    injected_tx: mpsc::UnboundedSender<Vec<u8>>,
    injected_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
    /// The daemon's log, for failure messages.
    daemon_log: Arc<Mutex<Vec<String>>>,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Wire {
    fn new(
        socket: UdpSocket,
        daemon: &Daemon,
        server: SocketAddr,
        refuse_channel_bind: bool,
        allocate_v6_key: Option<[u8; 16]>,
    ) -> Arc<Wire> {
        let (injected_tx, injected_rx) = mpsc::unbounded_channel();
        Arc::new(Wire {
            socket,
            server,
            tap: Mutex::new(Tap::default()),
            events: watch::channel(0).0,
            refuse_channel_bind,
            allocate_v6_key,
            injected_tx,
            injected_rx: tokio::sync::Mutex::new(injected_rx),
            daemon_log: Arc::clone(&daemon.log),
        })
    }

    /// What the wire saw and what the daemon logged, for failure messages.
    fn diagnostics(&self) -> String {
        format!(
            "echo peers received {:?}\nwire: {:?}\ndaemon log:\n{}",
            ECHOED.lock().unwrap(),
            self.tap.lock().unwrap(),
            self.daemon_log.lock().unwrap().join("\n")
        )
    }

    fn record(&self, out: bool, frame: Frame) {
        {
            let mut tap = self.tap.lock().unwrap();
            if out {
                tap.out.push(frame);
            } else {
                tap.incoming.push(frame);
            }
        }
        self.events.send_modify(|n| *n += 1);
    }

    fn with_tap<T>(&self, f: impl FnOnce(&Tap) -> T) -> T {
        f(&self.tap.lock().unwrap())
    }

    /// Waits (bounded) until `cond` holds for the tap.
    async fn wait_until(&self, what: &str, cond: impl Fn(&Tap) -> bool) {
        let mut rx = self.events.subscribe();
        let waited = timeout(WAIT, rx.wait_for(|_| self.with_tap(&cond))).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "timed out waiting for {what}; {}",
            self.diagnostics()
        );
    }

    async fn do_send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        let frame = frame_of(buf);
        if self.refuse_channel_bind && frame == Frame::Stun(CHANNEL_BIND_REQUEST) {
            self.tap.lock().unwrap().refused_binds += 1;
            let _ = self.injected_tx.send(channel_bind_refusal(buf));
            return Ok(buf.len());
        }
        let rewritten;
        let buf = match self.allocate_v6_key {
            Some(key) if frame == Frame::Stun(ALLOCATE_REQUEST) => {
                rewritten = add_requested_family_v6(buf, &key);
                &rewritten[..]
            }
            _ => buf,
        };
        self.record(true, frame);
        self.socket.send_to(buf, target).await
    }

    async fn do_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut injected = self.injected_rx.lock().await;
        tokio::select! {
            r = self.socket.recv_from(buf) => {
                let (n, from) = r?;
                self.record(false, frame_of(&buf[..n]));
                Ok((n, from))
            }
            Some(reply) = injected.recv() => {
                let n = reply.len().min(buf.len());
                buf[..n].copy_from_slice(&reply[..n]);
                Ok((n, self.server))
            }
        }
    }
}

// `Conn` is an `async_trait` trait; async-trait is not a dependency of this package, so
// the impl is written in its desugared form.
impl Conn for Wire {
    fn connect<'a, 'b>(&'a self, _addr: SocketAddr) -> BoxFuture<'b, webrtc_util::Result<()>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async { Err(io::Error::other("not connected").into()) })
    }

    fn recv<'a, 'c, 'b>(&'a self, _buf: &'c mut [u8]) -> BoxFuture<'b, webrtc_util::Result<usize>>
    where
        'a: 'b,
        'c: 'b,
        Self: 'b,
    {
        Box::pin(async { Err(io::Error::other("not connected").into()) })
    }

    fn recv_from<'a, 'c, 'b>(
        &'a self,
        buf: &'c mut [u8],
    ) -> BoxFuture<'b, webrtc_util::Result<(usize, SocketAddr)>>
    where
        'a: 'b,
        'c: 'b,
        Self: 'b,
    {
        Box::pin(async move { Ok(self.do_recv_from(buf).await?) })
    }

    fn send<'a, 'c, 'b>(&'a self, _buf: &'c [u8]) -> BoxFuture<'b, webrtc_util::Result<usize>>
    where
        'a: 'b,
        'c: 'b,
        Self: 'b,
    {
        Box::pin(async { Err(io::Error::other("not connected").into()) })
    }

    fn send_to<'a, 'c, 'b>(
        &'a self,
        buf: &'c [u8],
        target: SocketAddr,
    ) -> BoxFuture<'b, webrtc_util::Result<usize>>
    where
        'a: 'b,
        'c: 'b,
        Self: 'b,
    {
        Box::pin(async move { Ok(self.do_send_to(buf, target).await?) })
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    fn close<'a, 'b>(&'a self) -> BoxFuture<'b, webrtc_util::Result<()>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async { Ok(()) })
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// An error response to a ChannelBind request, as a server refusing channels would send.
fn channel_bind_refusal(request: &[u8]) -> Vec<u8> {
    let msg = Message::parse(request).expect("the client's ChannelBind parses");
    let mut buf = vec![0u8; 256];
    let mut w = MessageWriter::new(
        &mut buf,
        Class::Error,
        Method::CHANNEL_BIND,
        msg.transaction_id(),
    )
    .unwrap();
    w.error_code(508, "Insufficient Capacity").unwrap();
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// The client's authenticated Allocate with REQUESTED-ADDRESS-FAMILY IPv6 added and
/// MESSAGE-INTEGRITY and FINGERPRINT recomputed; an unauthenticated one is left alone.
fn add_requested_family_v6(request: &[u8], key: &[u8; 16]) -> Vec<u8> {
    let msg = Message::parse(request).expect("the client's Allocate parses");
    if msg.get(attr::MESSAGE_INTEGRITY).is_none() {
        return request.to_vec();
    }
    let mut buf = vec![0u8; request.len() + 64];
    let mut w =
        MessageWriter::new(&mut buf, msg.class(), msg.method(), msg.transaction_id()).unwrap();
    for a in msg
        .attributes()
        .take_while(|a| a.typ != attr::MESSAGE_INTEGRITY)
    {
        w.attr(a.typ, a.value).unwrap();
    }
    w.address_family(attr::REQUESTED_ADDRESS_FAMILY, Family::V6)
        .unwrap();
    w.message_integrity(key).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// Binds a UDP socket on `ip` whose port is outside the daemon's relay range: the peer
/// policy refuses the daemon's own relay ports even on an allow-listed loopback address,
/// and ephemeral ports overlap that range.
fn bind_outside_relay_range(ip: IpAddr) -> std::net::UdpSocket {
    let relay = relay_ports();
    let mut held = Vec::new();
    for _ in 0..200 {
        let s = std::net::UdpSocket::bind((ip, 0)).expect("bind a loopback UDP socket");
        if !relay.contains(&s.local_addr().unwrap().port()) {
            return s;
        }
        held.push(s);
    }
    panic!("no port outside {relay:?} after 200 binds");
}

/// Datagrams each echo peer received (for failure messages: did the relay send at all?).
static ECHOED: Mutex<std::collections::BTreeMap<SocketAddr, usize>> =
    Mutex::new(std::collections::BTreeMap::new());
/// A UDP echo peer on `ip` (a thread; it ends when idle for 30 s).
fn echo_peer(ip: IpAddr) -> SocketAddr {
    let socket = bind_outside_relay_range(ip);
    let addr = socket.local_addr().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        for _ in 0..100_000 {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                break;
            };
            *ECHOED.lock().unwrap().entry(addr).or_insert(0) += 1;
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

/// Payload number `i`: distinct text, then a length-varying tail (not a multiple of 4
/// for most `i`, so padding is exercised). It never starts with bytes that look like
/// a STUN header to the client's demultiplexer.
fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("tarn-payload-{i:05}|").into_bytes();
    let tail = (i * 37) % 1100;
    p.extend((0..tail).map(|k| (k as u8).wrapping_mul(31).wrapping_add(i as u8)));
    p
}

/// Sends `data` through the relay to `peer` and waits (bounded) for the echo.
async fn round_trip(relay: &impl Conn, wire: &Wire, peer: SocketAddr, data: &[u8]) {
    relay.send_to(data, peer).await.expect("relay send_to");
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = timeout(WAIT, relay.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no echo of {} bytes within {WAIT:?}; {}",
                    data.len(),
                    wire.diagnostics()
                )
            })
            .expect("relay recv_from");
        if &buf[..n] == WARM_UP {
            continue; // a late echo of the first datagram
        }
        assert_eq!(from, peer, "echo from the peer's address");
        assert_eq!(&buf[..n], data, "payload intact");
        return;
    }
}

const WARM_UP: &[u8] = b"tarn warm-up datagram";

/// The first datagram through a fresh allocation: its echo must arrive on the first
/// send (regression: the daemon once dropped the first datagram relayed on a new
/// relay socket). Returns how many sends it took, always 1.
async fn warm_up(relay: &impl Conn, wire: &Wire, peer: SocketAddr) -> usize {
    let mut buf = vec![0u8; 65536];
    relay.send_to(WARM_UP, peer).await.expect("relay send_to");
    match timeout(Duration::from_secs(5), relay.recv_from(&mut buf)).await {
        Ok(r) => {
            let (n, from) = r.expect("relay recv_from");
            assert_eq!((from, &buf[..n]), (peer, WARM_UP), "first datagram echoed");
            1
        }
        Err(_) => panic!(
            "first datagram through a fresh allocation lost; {}",
            wire.diagnostics()
        ),
    }
}

/// A turn client over `wire` with fresh REST credentials for `user`, allocated.
async fn allocate(wire: &Arc<Wire>, user: &str, password: &str) -> (Client, impl Conn) {
    let client = Client::new(ClientConfig {
        stun_serv_addr: String::new(),
        turn_serv_addr: wire.server.to_string(),
        username: user.to_string(),
        password: password.to_string(),
        realm: REALM.to_string(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::clone(wire) as Arc<dyn Conn + Send + Sync>,
        vnet: None,
    })
    .await
    .expect("turn client");
    client.listen().await.expect("listen");
    let relay = timeout(Duration::from_secs(10), client.allocate())
        .await
        .expect("Allocate within 10 s")
        .expect("Allocate succeeds");
    (client, relay)
}

/// Closes the relay conn (Refresh with LIFETIME 0), waits for the server's success answer
/// and for the daemon to log the deletion, then closes the client.
async fn close(client: Client, relay: impl Conn, wire: &Wire, daemon: &Daemon) {
    let before = wire.with_tap(|t| t.in_count(is_stun(REFRESH_SUCCESS)));
    relay.close().await.expect("relay close");
    wire.wait_until("the Refresh (lifetime 0) success", |t| {
        t.in_count(is_stun(REFRESH_SUCCESS)) > before
    })
    .await;
    client.close().await.expect("client close");
    let line = tokio::task::block_in_place(|| daemon.wait_for_log("allocation ended", WAIT))
        .expect("the daemon logs the end of the allocation");
    assert!(line.contains("Deleted"), "ended by the client: {line}");
}

fn stop(daemon: Daemon) {
    let log = daemon.log_text();
    assert!(!log.contains("panicked"), "daemon log:\n{log}");
    let status = tokio::task::block_in_place(|| daemon.stop());
    assert!(status.success(), "exit status {status:?}");
}

fn start_daemon(edit: impl FnOnce(String) -> String) -> Daemon {
    tokio::task::block_in_place(|| Daemon::start_with(edit))
}

fn assert_relayed(relayed: SocketAddr, ip: IpAddr) {
    assert_eq!(relayed.ip(), ip, "relayed address {relayed}");
    assert!(
        relay_ports().contains(&relayed.port()),
        "relayed port {relayed} in the configured range"
    );
}

/// Round trips until at least `want` ChannelData went each way (bounded), starting at
/// payload number `first`; returns the next payload number.
async fn round_trips_until_channel_data(
    relay: &impl Conn,
    wire: &Wire,
    peer: SocketAddr,
    first: usize,
    want: usize,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = first;
    loop {
        round_trip(relay, wire, peer, &payload(i)).await;
        i += 1;
        let (out, inc) =
            wire.with_tap(|t| (t.out_count(is_channel_data), t.in_count(is_channel_data)));
        if out >= want && inc >= want {
            return i;
        }
        assert!(
            Instant::now() < deadline && i - first < 5000,
            "after {} round trips only {out} ChannelData out and {inc} in; {}",
            i - first,
            wire.diagnostics()
        );
    }
}

/// Checks the framing story of a natural (channel-binding) run: the first payload went
/// as a Send indication, ChannelBind succeeded, and once ChannelData started no Send
/// indication followed; every ChannelData used one channel number.
fn assert_indication_then_channel(tap: &Tap) {
    let data_frames: Vec<Frame> = tap
        .out
        .iter()
        .copied()
        .filter(|f| is_channel_data(f) || *f == Frame::Stun(SEND_INDICATION))
        .collect();
    assert_eq!(
        data_frames.first(),
        Some(&Frame::Stun(SEND_INDICATION)),
        "the first payload goes as a Send indication (no channel yet)"
    );
    let first_cd = data_frames
        .iter()
        .position(is_channel_data)
        .expect("ChannelData sent");
    assert!(
        data_frames[first_cd..].iter().all(is_channel_data),
        "no Send indication after the first ChannelData: {data_frames:?}"
    );
    assert_eq!(
        tap.out_count(is_stun(CHANNEL_BIND_REQUEST)),
        1,
        "one ChannelBind"
    );
    assert_eq!(
        tap.in_count(is_stun(CHANNEL_BIND_SUCCESS)),
        1,
        "ChannelBind succeeded"
    );
    let mut channels: Vec<u16> = tap
        .out
        .iter()
        .chain(&tap.incoming)
        .filter_map(|f| match f {
            Frame::ChannelData(c) => Some(*c),
            _ => None,
        })
        .collect();
    channels.dedup();
    assert_eq!(channels.len(), 1, "one channel both ways: {channels:x?}");
    assert!((0x4000..=0x4FFF).contains(&channels[0]));
}

/// With every ChannelBind refused (by the wire, on the server's behalf), the client stays
/// on Send indications and the daemon answers with Data indications: 200 distinct
/// payloads each way, none as ChannelData.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_data_indications_carry_every_payload() {
    const ROUND_TRIPS: usize = 200;
    let daemon = start_daemon(|c| c);
    let peer = echo_peer(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let wire = Wire::new(socket, &daemon, daemon.addr(), true, None);
    let (user, password) = credentials("turn-rs-indications", 3600);
    let (client, relay) = allocate(&wire, &user, &password).await;
    assert_relayed(relay.local_addr().unwrap(), IpAddr::V4(Ipv4Addr::LOCALHOST));

    let sends = warm_up(&relay, &wire, peer).await;
    for i in 0..ROUND_TRIPS {
        round_trip(&relay, &wire, peer, &payload(i)).await;
    }

    wire.with_tap(|t| {
        assert!(t.refused_binds >= 1, "the client tried to bind a channel");
        assert_eq!(t.out_count(is_stun(CHANNEL_BIND_REQUEST)), 0);
        let send = t.out_count(is_stun(SEND_INDICATION));
        assert_eq!(send, ROUND_TRIPS + sends, "{t:?}");
        let data = t.in_count(is_stun(DATA_INDICATION));
        assert!(
            (ROUND_TRIPS + 1..=ROUND_TRIPS + sends).contains(&data),
            "{t:?}"
        );
        assert_eq!(t.out_count(is_channel_data), 0, "{t:?}");
        assert_eq!(t.in_count(is_channel_data), 0, "{t:?}");
    });
    close(client, relay, &wire, &daemon).await;
    stop(daemon);
}

/// The client's own choice: Send indication first, ChannelBind in the background, then
/// ChannelData both ways for hundreds of distinct payloads. A second peer on the same IP
/// (covered by the IP permission, no channel) reaches the client as Data indications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_data_after_the_client_binds_a_channel() {
    let daemon = start_daemon(|c| c);
    let peer = echo_peer(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let wire = Wire::new(socket, &daemon, daemon.addr(), false, None);
    let (user, password) = credentials("turn-rs-channels", 3600);
    let (client, relay) = allocate(&wire, &user, &password).await;
    let relayed = relay.local_addr().unwrap();
    assert_relayed(relayed, IpAddr::V4(Ipv4Addr::LOCALHOST));

    warm_up(&relay, &wire, peer).await;
    let next = round_trips_until_channel_data(&relay, &wire, peer, 0, 300).await;
    wire.with_tap(assert_indication_then_channel);

    // Another port on the permitted IP, without a channel: Data indications.
    let other = bind_outside_relay_range(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let other_addr = other.local_addr().unwrap();
    let data_before = wire.with_tap(|t| t.in_count(is_stun(DATA_INDICATION)));
    let cd_before = wire.with_tap(|t| t.in_count(is_channel_data));
    for i in next..next + 50 {
        let p = payload(i);
        other.send_to(&p, relayed).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, from) = timeout(WAIT, relay.recv_from(&mut buf))
            .await
            .expect("unsolicited datagram relayed within 5 s")
            .expect("recv_from");
        assert_eq!(from, other_addr);
        assert_eq!(&buf[..n], &p[..]);
    }
    wire.with_tap(|t| {
        assert_eq!(
            t.in_count(is_stun(DATA_INDICATION)) - data_before,
            50,
            "{t:?}"
        );
        assert_eq!(t.in_count(is_channel_data), cd_before, "{t:?}");
    });

    close(client, relay, &wire, &daemon).await;
    stop(daemon);
}

/// An IPv6 relayed address (RFC 6156) used by the turn client over an IPv6 5-tuple.
/// The crate cannot ask for one (its Allocate carries no REQUESTED-ADDRESS-FAMILY), so
/// the wire adds the attribute and re-signs the request; everything after the Allocate
/// (CreatePermission, ChannelBind, Send, Data, ChannelData with IPv6 peer addresses) is
/// the crate's own. Needs ::1; fails loudly without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_relayed_address() {
    std::net::UdpSocket::bind("[::1]:0")
        .expect("this test needs IPv6 loopback (::1); it is not available here");
    let daemon = start_daemon(|c| {
        let c = set_key(&c, "server", "listen", r#"["127.0.0.1:0", "[::1]:0"]"#);
        let c = set_key(&c, "server", "relay_address", r#"["127.0.0.1", "::1"]"#);
        set_key(&c, "peers", "allow", r#"["127.0.0.1/32", "::1/128"]"#)
    });
    let server = *daemon
        .udp
        .iter()
        .find(|a| a.is_ipv6())
        .expect("the daemon listens on [::1]");
    let peer = echo_peer(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let (user, password) = credentials("turn-rs-ipv6", 3600);
    let key = long_term_key(&user, REALM, &password);
    let socket = UdpSocket::bind("[::1]:0").await.unwrap();
    let wire = Wire::new(socket, &daemon, server, false, Some(key));
    let (client, relay) = allocate(&wire, &user, &password).await;
    assert_relayed(relay.local_addr().unwrap(), IpAddr::V6(Ipv6Addr::LOCALHOST));

    warm_up(&relay, &wire, peer).await;
    round_trips_until_channel_data(&relay, &wire, peer, 0, 200).await;
    wire.with_tap(assert_indication_then_channel);

    close(client, relay, &wire, &daemon).await;
    stop(daemon);
}
