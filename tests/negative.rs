//! Negative paths and robustness over raw UDP, spoken with tarn's own codec: every
//! error code a client can provoke, the peer policy on the wire, lifetimes that free
//! relay ports, FINGERPRINT and MESSAGE-INTEGRITY on responses, and a flood of garbage
//! after which the daemon still serves and stops cleanly.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, REALM, credentials, set_key};
use tarn::auth::long_term_key;
use tarn::proto::{
    Class, Family, MAGIC_COOKIE, Message, MessageWriter, Method, TransactionId, attr, integrity,
};

/// Bound on every wait for a response.
const WAIT: Duration = Duration::from_secs(5);
/// How long "no response" is waited for.
const SILENCE: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------
// A small raw STUN client.

/// A fresh transaction id (unique within this process).
fn tid() -> TransactionId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 12];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8..].copy_from_slice(&std::process::id().to_be_bytes());
    TransactionId(id)
}

/// REST credentials and their long-term key.
#[derive(Clone)]
struct Creds {
    username: String,
    key: [u8; 16],
}

impl Creds {
    fn new(id: &str, ttl: i64) -> Creds {
        let (username, password) = credentials(id, ttl);
        let key = long_term_key(&username, REALM, &password);
        Creds { username, key }
    }
}

/// Builds a request: `body` writes the method's attributes; with `auth`, USERNAME,
/// REALM, NONCE and MESSAGE-INTEGRITY follow; then FINGERPRINT if asked.
fn build(
    method: Method,
    id: TransactionId,
    auth: Option<(&Creds, &[u8])>,
    fingerprint: bool,
    body: impl FnOnce(&mut MessageWriter<'_>),
) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut w = MessageWriter::new(&mut buf, Class::Request, method, id).unwrap();
    body(&mut w);
    if let Some((creds, nonce)) = auth {
        w.attr(attr::USERNAME, creds.username.as_bytes()).unwrap();
        w.attr(attr::REALM, REALM.as_bytes()).unwrap();
        w.attr(attr::NONCE, nonce).unwrap();
        w.message_integrity(&creds.key).unwrap();
    }
    if fingerprint {
        w.fingerprint().unwrap();
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn udp_transport(w: &mut MessageWriter<'_>) {
    w.requested_transport(attr::PROTO_UDP).unwrap();
}

/// A received response (owned bytes, parsed on demand).
#[derive(Debug)]
struct Resp {
    raw: Vec<u8>,
}

impl Resp {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.raw).expect("a well-formed STUN message")
    }
    fn class(&self) -> Class {
        self.msg().class()
    }
    fn is_success(&self) -> bool {
        self.class() == Class::Success
    }
    /// The ERROR-CODE number, if any.
    fn code(&self) -> Option<u16> {
        self.msg().get(attr::ERROR_CODE).map(|a| {
            attr::decode_error_code(a.value)
                .expect("valid ERROR-CODE")
                .0
        })
    }
    fn attr(&self, typ: u16) -> Option<Vec<u8>> {
        self.msg().get(typ).map(|a| a.value.to_vec())
    }
    fn has(&self, typ: u16) -> bool {
        self.msg().get(typ).is_some()
    }
    fn xor_address(&self, typ: u16) -> Option<SocketAddr> {
        let msg = self.msg();
        msg.get(typ)
            .map(|a| attr::decode_xor_address(a.value, &msg.transaction_id()).expect("address"))
    }
    fn relayed(&self) -> SocketAddr {
        self.xor_address(attr::XOR_RELAYED_ADDRESS)
            .unwrap_or_else(|| panic!("XOR-RELAYED-ADDRESS in {self:?}"))
    }
    fn lifetime(&self) -> Option<u32> {
        self.attr(attr::LIFETIME)
            .map(|v| attr::decode_u32(&v).expect("LIFETIME"))
    }
    fn verifies_with(&self, key: &[u8]) -> bool {
        integrity::verify_message_integrity(&self.msg(), key).is_ok()
    }
    /// Panics unless this is a success response whose MESSAGE-INTEGRITY verifies.
    fn assert_success(&self, key: &[u8], what: &str) {
        assert!(
            self.is_success(),
            "{what}: expected success, got {:?} {:?}",
            self.class(),
            self.code()
        );
        assert!(self.verifies_with(key), "{what}: MESSAGE-INTEGRITY");
    }
    fn assert_error(&self, code: u16, what: &str) {
        assert_eq!(
            self.class(),
            Class::Error,
            "{what}: expected an error {code}"
        );
        assert_eq!(self.code(), Some(code), "{what}");
    }
}

/// One client socket talking to the daemon.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Client {
    fn new(server: SocketAddr) -> Client {
        let local: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::LOCALHOST, 0).into()
        } else {
            (Ipv6Addr::LOCALHOST, 0).into()
        };
        let socket = UdpSocket::bind(local).expect("bind client socket");
        Client { socket, server }
    }

    fn send(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).expect("send_to");
    }

    /// The next datagram from the server within `timeout`, if any.
    fn recv_within(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) if from == self.server => return Some(buf[..n].to_vec()),
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("recv_from: {e}"),
            }
        }
    }

    /// Reads and drops whatever the server sent, until it has been quiet for 200 ms
    /// (bounded by 10 s).
    fn drain(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.recv_within(Duration::from_millis(200)).is_some() {
            assert!(Instant::now() < deadline, "the server never went quiet");
        }
    }

    /// Sends a request and waits (bounded) for the response with its transaction id;
    /// anything else that arrives meanwhile is skipped.
    fn transact(&self, request: &[u8]) -> Resp {
        self.send(request);
        self.response_to(request, WAIT)
            .unwrap_or_else(|| panic!("no response within {WAIT:?} to {:02x?}", &request[..2]))
    }

    fn response_to(&self, request: &[u8], timeout: Duration) -> Option<Resp> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.recv_within(deadline.saturating_duration_since(Instant::now()))?;
            if got.len() >= 20 && got[8..20] == request[8..20] {
                return Some(Resp { raw: got });
            }
        }
    }

    /// A Binding round trip, retransmitted every 500 ms while the daemon works through
    /// a backlog (bounded by 20 s); panics without an answer.
    fn ping(&self) {
        let binding = build(Method::BINDING, tid(), None, false, |_| {});
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.send(&binding);
            if let Some(r) = self.response_to(&binding, Duration::from_millis(500)) {
                assert!(r.is_success());
                assert_eq!(
                    r.xor_address(attr::XOR_MAPPED_ADDRESS),
                    Some(self.socket.local_addr().unwrap())
                );
                return;
            }
            assert!(Instant::now() < deadline, "no Binding response within 20 s");
        }
    }

    /// An unauthenticated Allocate: expects 401 with REALM and NONCE; returns the nonce.
    fn challenge(&self) -> Vec<u8> {
        let r = self.transact(&build(Method::ALLOCATE, tid(), None, false, udp_transport));
        r.assert_error(401, "unauthenticated Allocate");
        assert_eq!(r.attr(attr::REALM).as_deref(), Some(REALM.as_bytes()));
        assert!(!r.has(attr::MESSAGE_INTEGRITY), "a challenge is not signed");
        r.attr(attr::NONCE).expect("NONCE in the 401")
    }
}

/// A client with credentials and a current nonce.
struct Session {
    client: Client,
    creds: Creds,
    nonce: Vec<u8>,
}

impl Session {
    fn new(server: SocketAddr, id: &str) -> Session {
        let client = Client::new(server);
        let nonce = client.challenge();
        Session {
            client,
            creds: Creds::new(id, 3600),
            nonce,
        }
    }

    fn request_as(
        &self,
        creds: &Creds,
        method: Method,
        body: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Resp {
        self.client.transact(&build(
            method,
            tid(),
            Some((creds, &self.nonce)),
            false,
            body,
        ))
    }

    fn request(&self, method: Method, body: impl FnOnce(&mut MessageWriter<'_>)) -> Resp {
        self.request_as(&self.creds, method, body)
    }

    fn allocate(&self) -> Resp {
        self.request(Method::ALLOCATE, udp_transport)
    }

    /// Allocates (asserting success) and returns the relayed address.
    fn allocate_ok(&self) -> SocketAddr {
        let r = self.allocate();
        r.assert_success(&self.creds.key, "Allocate");
        r.relayed()
    }

    fn create_permission(&self, peer: SocketAddr) -> Resp {
        self.request(Method::CREATE_PERMISSION, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        })
    }

    fn channel_bind(&self, channel: u16, peer: SocketAddr) -> Resp {
        self.request(Method::CHANNEL_BIND, |w| {
            w.channel_number(channel).unwrap();
            w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        })
    }

    fn refresh(&self, lifetime: Option<u32>) -> Resp {
        self.request(Method::REFRESH, |w| {
            if let Some(l) = lifetime {
                w.u32_attr(attr::LIFETIME, l).unwrap();
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// Helpers around the daemon.

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

fn assert_relayed(relayed: SocketAddr, ip: IpAddr) {
    assert_eq!(relayed.ip(), ip, "relayed address {relayed}");
    assert!(
        relay_ports().contains(&relayed.port()),
        "{relayed} in range"
    );
}

/// A UDP socket on 127.0.0.1 whose port is outside the relay range (a peer address
/// the policy allows in the harness configuration).
fn outside_relay_range() -> UdpSocket {
    let relay = relay_ports();
    let mut held = Vec::new();
    for _ in 0..200 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        if !relay.contains(&s.local_addr().unwrap().port()) {
            return s;
        }
        held.push(s);
    }
    panic!("no port outside {relay:?}");
}

/// Whether a UDP socket can be bound on `addr` right now (the port is free).
fn port_is_free(addr: SocketAddr) -> bool {
    UdpSocket::bind(addr).is_ok()
}

/// Polls (bounded by `within`) until `addr` can be bound; panics otherwise.
fn wait_until_free(addr: SocketAddr, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while !port_is_free(addr) {
        assert!(
            Instant::now() < deadline,
            "{what}: relay port {addr} still bound after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(daemon: Daemon) {
    let log = daemon.log_text();
    assert!(!log.contains("panicked"), "daemon log:\n{log}");
    let status = daemon.stop();
    assert!(status.success(), "exit status {status:?}\nlog:\n{log}");
}

fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

fn v6(text: &str, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(text.parse().unwrap()), port)
}

// ---------------------------------------------------------------------------------------
// Authentication.

#[test]
fn wrong_password_is_401_and_allocates_nothing() {
    let daemon = Daemon::start();
    let client = Client::new(daemon.addr());
    let nonce = client.challenge();
    let good = Creds::new("alice", 3600);
    let (_, password) = credentials("alice", 3600);
    let bad = Creds {
        key: long_term_key(&good.username, REALM, &format!("{password}x")),
        ..good.clone()
    };
    let r = client.transact(&build(
        Method::ALLOCATE,
        tid(),
        Some((&bad, &nonce)),
        false,
        udp_transport,
    ));
    r.assert_error(401, "wrong password");
    assert!(r.has(attr::NONCE) && r.has(attr::REALM));
    assert!(!r.has(attr::MESSAGE_INTEGRITY));
    // Had the failed request made an allocation, a new Allocate here would get 437.
    let r = client.transact(&build(
        Method::ALLOCATE,
        tid(),
        Some((&good, &nonce)),
        false,
        udp_transport,
    ));
    r.assert_success(&good.key, "correct Allocate on the same 5-tuple");
    assert_relayed(r.relayed(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    stop(daemon);
}

#[test]
fn expired_username_is_401() {
    let daemon = Daemon::start();
    let client = Client::new(daemon.addr());
    let nonce = client.challenge();
    for id in ["bob", ""] {
        let expired = Creds::new(id, -60);
        let r = client.transact(&build(
            Method::ALLOCATE,
            tid(),
            Some((&expired, &nonce)),
            false,
            udp_transport,
        ));
        r.assert_error(401, &format!("expired username {:?}", expired.username));
        assert!(r.has(attr::NONCE) && !r.has(attr::MESSAGE_INTEGRITY));
    }
    // The same id with a future expiry is fine (bare-expiry form too).
    let fresh = Creds::new("", 60);
    let r = client.transact(&build(
        Method::ALLOCATE,
        tid(),
        Some((&fresh, &nonce)),
        false,
        udp_transport,
    ));
    r.assert_success(&fresh.key, "unexpired bare-expiry username");
    stop(daemon);
}

#[test]
fn stale_nonce_is_438_with_a_new_nonce_that_works() {
    let daemon = Daemon::start_with(|c| set_key(&c, "auth", "nonce_lifetime", "1"));
    let mut s = Session::new(daemon.addr(), "stale");
    let first = s.nonce.clone();
    // A Refresh without an allocation changes nothing: 437 while the nonce is valid,
    // 438 once it is stale. Poll until then (the lifetime is 1 s; bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let stale = loop {
        let r = s.refresh(None);
        match r.code() {
            Some(437) => {
                assert!(
                    r.verifies_with(&s.creds.key),
                    "437 after authentication is signed"
                );
                assert!(Instant::now() < deadline, "nonce never went stale");
                std::thread::sleep(Duration::from_millis(200));
            }
            Some(438) => break r,
            other => panic!("unexpected answer {other:?} to Refresh"),
        }
    };
    let second = stale
        .attr(attr::NONCE)
        .expect("a 438 carries a fresh NONCE");
    assert_ne!(second, first);
    assert_eq!(stale.attr(attr::REALM).as_deref(), Some(REALM.as_bytes()));
    assert!(!stale.has(attr::MESSAGE_INTEGRITY));
    // An Allocate with the stale nonce is refused the same way...
    let r = s.allocate();
    r.assert_error(438, "Allocate with a stale nonce");
    // ...and succeeds with the newest one.
    s.nonce = r.attr(attr::NONCE).expect("NONCE");
    s.allocate_ok();
    stop(daemon);
}

#[test]
fn wrong_credentials_on_an_allocation_is_441() {
    let daemon = Daemon::start();
    let s = Session::new(daemon.addr(), "erin");
    s.allocate_ok();
    let peer = outside_relay_range().local_addr().unwrap();
    let other = Creds::new("frank", 3600);
    let r = s.request_as(&other, Method::CREATE_PERMISSION, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    });
    r.assert_error(441, "CreatePermission with another user's credentials");
    assert!(r.verifies_with(&other.key));
    let r = s.request_as(&other, Method::REFRESH, |_| {});
    r.assert_error(441, "Refresh with another user's credentials");
    // The owner still can.
    s.create_permission(peer)
        .assert_success(&s.creds.key, "CreatePermission by the owner");
    stop(daemon);
}

// ---------------------------------------------------------------------------------------
// Peer policy.

#[test]
fn default_denied_ipv4_peers_are_403() {
    let daemon = Daemon::start();
    let s = Session::new(daemon.addr(), "carol");
    let relayed = s.allocate_ok();
    let cases = [
        (
            "loopback other than the allowed 127.0.0.1",
            v4(127, 0, 0, 2, 5000),
        ),
        ("private 10/8", v4(10, 1, 2, 3, 5000)),
        ("link-local (cloud metadata)", v4(169, 254, 169, 254, 80)),
        ("shared address space 100.64/10", v4(100, 64, 0, 1, 5000)),
        ("unspecified", v4(0, 0, 0, 0, 5000)),
        (
            "unspecified, the relay's own port",
            v4(0, 0, 0, 0, relayed.port()),
        ),
    ];
    for (what, peer) in cases {
        s.create_permission(peer)
            .assert_error(403, &format!("CreatePermission {what} {peer}"));
        s.channel_bind(0x4000, peer)
            .assert_error(403, &format!("ChannelBind {what} {peer}"));
    }
    // Positive control: the allow-listed 127.0.0.1 on an ordinary port.
    let peer = outside_relay_range().local_addr().unwrap();
    s.create_permission(peer)
        .assert_success(&s.creds.key, "CreatePermission 127.0.0.1");
    s.channel_bind(0x4000, peer)
        .assert_success(&s.creds.key, "ChannelBind 127.0.0.1");
    stop(daemon);
}

#[test]
fn the_daemons_listeners_are_403_and_its_relayed_addresses_are_peers() {
    let daemon = Daemon::start();
    let s = Session::new(daemon.addr(), "own");
    let relayed = s.allocate_ok();
    let other = Session::new(daemon.addr(), "own-2");
    let other_relayed = other.allocate_ok();
    // Its listening ports (UDP/TCP share one) are refused: no TURN inside TURN.
    let tcp = daemon.tcp[0];
    for (what, peer) in [
        ("its listen address", daemon.addr()),
        ("its TCP listener", tcp),
    ] {
        s.create_permission(peer)
            .assert_error(403, &format!("CreatePermission to {what} {peer}"));
        s.channel_bind(0x4001, peer)
            .assert_error(403, &format!("ChannelBind to {what} {peer}"));
    }
    // Relayed addresses of this server are peers like any other: two clients of one
    // server reach each other relay to relay (what two relay-only browsers do).
    for (i, (what, peer)) in [
        ("this allocation's relayed address", relayed),
        ("another allocation's relayed address", other_relayed),
    ]
    .into_iter()
    .enumerate()
    {
        s.create_permission(peer)
            .assert_success(&s.creds.key, &format!("CreatePermission to {what} {peer}"));
        s.channel_bind(0x4001 + i as u16, peer)
            .assert_success(&s.creds.key, &format!("ChannelBind to {what} {peer}"));
    }
    stop(daemon);
}

/// On an IPv6 relayed address: loopback, an IPv4-mapped loopback, NAT64 and 6to4
/// encodings of denied IPv4 addresses are 403. Needs ::1; fails loudly without it.
#[test]
fn default_denied_ipv6_peers_are_403() {
    UdpSocket::bind("[::1]:0").expect("this test needs IPv6 loopback (::1); it is unavailable");
    // No loopback on the allow list here, so ::ffff:127.0.0.1 is judged as the denied
    // 127.0.0.1; a documentation address is allow-listed as the positive control (a
    // permission sends nothing).
    let daemon = Daemon::start_with(|c| {
        let c = set_key(&c, "server", "relay_address", r#"["127.0.0.1", "::1"]"#);
        set_key(&c, "peers", "allow", r#"["2001:db8::7/128"]"#)
    });
    let s = Session::new(daemon.addr(), "dave");
    let r = s.request(Method::ALLOCATE, |w| {
        udp_transport(w);
        w.address_family(attr::REQUESTED_ADDRESS_FAMILY, Family::V6)
            .unwrap();
    });
    r.assert_success(&s.creds.key, "IPv6 Allocate");
    assert_relayed(r.relayed(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    let cases = [
        ("loopback ::1", v6("::1", 5000)),
        ("IPv4-mapped 127.0.0.1", v6("::ffff:127.0.0.1", 5000)),
        ("IPv4-mapped 10.1.2.3", v6("::ffff:10.1.2.3", 5000)),
        ("NAT64 of 10.1.2.3", v6("64:ff9b::a01:203", 5000)),
        ("6to4 of 127.0.0.1", v6("2002:7f00:1::1", 5000)),
        ("unspecified ::", v6("::", 5000)),
        ("unique local fc00::/7", v6("fd00::1", 5000)),
    ];
    for (what, peer) in cases {
        s.create_permission(peer)
            .assert_error(403, &format!("CreatePermission {what} {peer}"));
    }
    s.create_permission(v6("2001:db8::7", 5000))
        .assert_success(&s.creds.key, "allow-listed IPv6 peer");
    // An IPv4 peer that policy allows, on an IPv6-only allocation: family mismatch.
    // (CreatePermission sends nothing to the peer.) A denied one gets 403 first.
    s.create_permission(v4(192, 0, 2, 1, 5000))
        .assert_error(403, "denied IPv4 peer on an IPv6 allocation");
    s.create_permission(v4(8, 8, 8, 8, 5000))
        .assert_error(443, "IPv4 peer on an IPv6 allocation");
    stop(daemon);
}

// ---------------------------------------------------------------------------------------
// Allocations: mismatch, retransmission, lifetimes.

#[test]
fn second_allocate_is_437_and_a_retransmission_gets_the_same_answer() {
    let daemon = Daemon::start();
    let s = Session::new(daemon.addr(), "grace");
    let request = build(
        Method::ALLOCATE,
        tid(),
        Some((&s.creds, &s.nonce)),
        false,
        udp_transport,
    );
    let first = s.client.transact(&request);
    first.assert_success(&s.creds.key, "Allocate");
    let again = s.client.transact(&request);
    again.assert_success(&s.creds.key, "retransmitted Allocate");
    assert_eq!(again.relayed(), first.relayed(), "same relayed address");
    let r = s.allocate();
    r.assert_error(437, "a new Allocate on an allocated 5-tuple");
    assert!(r.verifies_with(&s.creds.key));
    stop(daemon);
}

#[test]
fn an_expired_allocation_frees_its_relay_port() {
    let daemon = Daemon::start_with(|c| {
        let c = set_key(&c, "allocation", "default_lifetime", "1");
        set_key(&c, "allocation", "max_lifetime", "1")
    });
    let s = Session::new(daemon.addr(), "heidi");
    let r = s.allocate();
    r.assert_success(&s.creds.key, "Allocate");
    assert!(
        r.lifetime().is_some_and(|l| l <= 1),
        "LIFETIME {:?}",
        r.lifetime()
    );
    let relayed = r.relayed();
    assert!(
        !port_is_free(relayed),
        "the relay port is bound while allocated"
    );
    wait_until_free(relayed, Duration::from_secs(10), "expired allocation");
    s.refresh(None).assert_error(437, "Refresh after expiry");
    // The 5-tuple is free for a new allocation.
    s.allocate_ok();
    stop(daemon);
}

#[test]
fn refresh_with_lifetime_zero_deletes_the_allocation() {
    let daemon = Daemon::start();
    let s = Session::new(daemon.addr(), "ivan");
    let relayed = s.allocate_ok();
    assert!(
        !port_is_free(relayed),
        "the relay port is bound while allocated"
    );
    let r = s.refresh(Some(0));
    r.assert_success(&s.creds.key, "Refresh LIFETIME 0");
    assert_eq!(r.lifetime(), Some(0));
    wait_until_free(relayed, Duration::from_secs(10), "deleted allocation");
    s.refresh(None).assert_error(437, "Refresh after deletion");
    s.refresh(Some(0)).assert_error(437, "second delete");
    stop(daemon);
}

// ---------------------------------------------------------------------------------------
// The relay path.

/// A UDP echo peer on 127.0.0.1 outside the relay range (a thread; ends when idle 30 s).
fn echo_peer() -> SocketAddr {
    common::echo_on(outside_relay_range(), 100_000)
}

fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut w = MessageWriter::new(&mut buf, Class::Indication, Method::SEND, tid()).unwrap();
    w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    w.attr(attr::DATA, data).unwrap();
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// Regression test: the first datagram relayed on a fresh allocation reaches the peer.
/// A client sends Allocate, CreatePermission and a Send indication back to back (its
/// nonce is from the 401); the echo must come back as a Data indication. Repeated on
/// ten fresh allocations.
#[test]
fn the_first_datagram_of_a_fresh_allocation_is_relayed() {
    let daemon = Daemon::start();
    let peer = echo_peer();
    let mut lost = Vec::new();
    for k in 0..10 {
        let s = Session::new(daemon.addr(), &format!("first-{k}"));
        let auth = Some((&s.creds, &s.nonce[..]));
        let allocate = build(Method::ALLOCATE, tid(), auth, false, udp_transport);
        let permission = build(Method::CREATE_PERMISSION, tid(), auth, false, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        });
        let payload = format!("first datagram of allocation {k}").into_bytes();
        s.client.send(&allocate);
        s.client.send(&permission);
        s.client.send(&send_indication(peer, &payload));
        let (mut allocated, mut permitted, mut echoed) = (false, false, false);
        let deadline = Instant::now() + Duration::from_secs(1);
        while !(allocated && permitted && echoed) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(raw) = s.client.recv_within(left) else {
                break;
            };
            let r = Resp { raw };
            let msg = r.msg();
            if msg.transaction_id().0[..] == allocate[8..20] {
                r.assert_success(&s.creds.key, "pipelined Allocate");
                allocated = true;
            } else if msg.transaction_id().0[..] == permission[8..20] {
                r.assert_success(&s.creds.key, "pipelined CreatePermission");
                permitted = true;
            } else if (msg.class(), msg.method()) == (Class::Indication, Method::DATA) {
                assert_eq!(r.xor_address(attr::XOR_PEER_ADDRESS), Some(peer));
                assert_eq!(r.attr(attr::DATA), Some(payload.clone()));
                echoed = true;
            }
        }
        assert!(allocated && permitted, "allocation {k}: responses missing");
        if !echoed {
            lost.push(k);
        }
        // Later datagrams on the same allocation do get through.
        s.client.send(&send_indication(peer, b"second"));
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let raw = s
                .client
                .recv_within(left)
                .unwrap_or_else(|| panic!("allocation {k}: second datagram not relayed"));
            let r = Resp { raw };
            if r.attr(attr::DATA).as_deref() == Some(b"second") {
                break;
            }
        }
    }
    assert!(
        lost.is_empty(),
        "the first datagram was not relayed on allocations {lost:?} of 10"
    );
    stop(daemon);
}

// ---------------------------------------------------------------------------------------
// Request validation and quotas.

#[test]
fn unknown_comprehension_required_attribute_is_420() {
    let daemon = Daemon::start();
    let client = Client::new(daemon.addr());
    let r = client.transact(&build(Method::BINDING, tid(), None, false, |w| {
        w.attr(0xC0DE, b"optional").unwrap();
        w.attr(0x7ABC, b"required").unwrap();
        w.attr(0x7ABD, b"").unwrap();
    }));
    r.assert_error(
        420,
        "Binding with unknown comprehension-required attributes",
    );
    let listed: Vec<u16> =
        attr::decode_unknown_attributes(&r.attr(attr::UNKNOWN_ATTRIBUTES).expect("listed"))
            .unwrap()
            .collect();
    assert_eq!(listed, vec![0x7ABC, 0x7ABD], "only the required ones");
    // A comprehension-optional unknown attribute alone is ignored.
    let r = client.transact(&build(Method::BINDING, tid(), None, false, |w| {
        w.attr(0xC0DE, b"optional").unwrap();
    }));
    assert!(r.is_success(), "{:?}", r.code());
    // Authenticated requests are checked the same way.
    let s = Session::new(daemon.addr(), "judy");
    let r = s.request(Method::ALLOCATE, |w| {
        udp_transport(w);
        w.attr(0x7ABC, b"x").unwrap();
    });
    r.assert_error(420, "Allocate with an unknown required attribute");
    stop(daemon);
}

#[test]
fn tcp_transport_is_442_and_missing_transport_is_400() {
    let daemon = Daemon::start();
    let s = Session::new(daemon.addr(), "ken");
    let r = s.request(Method::ALLOCATE, |w| {
        w.requested_transport(attr::PROTO_TCP).unwrap();
    });
    r.assert_error(442, "REQUESTED-TRANSPORT TCP");
    assert!(r.verifies_with(&s.creds.key));
    let r = s.request(Method::ALLOCATE, |_| {});
    r.assert_error(400, "Allocate without REQUESTED-TRANSPORT");
    // Neither refusal left an allocation behind.
    s.allocate_ok();
    stop(daemon);
}

#[test]
fn total_allocation_quota_is_486_and_counted() {
    let daemon = Daemon::start_with(|c| {
        let c = set_key(&c, "limits", "max_allocations", "2");
        set_key(&c, "metrics", "listen", "\"127.0.0.1:0\"")
    });
    let first = Session::new(daemon.addr(), "ada");
    first.allocate_ok();
    Session::new(daemon.addr(), "grace").allocate_ok();
    let third = Session::new(daemon.addr(), "hedy");
    let r = third.allocate();
    r.assert_error(486, "third allocation over the total quota");
    assert!(r.verifies_with(&third.creds.key));
    assert_eq!(
        daemon.metric("tarn_quota_rejections_total{kind=\"total\"}"),
        1.0
    );
    // Deleting one allocation gives the slot back to anyone.
    first
        .refresh(Some(0))
        .assert_success(&first.creds.key, "delete");
    third.allocate_ok();
    stop(daemon);
}

#[test]
fn per_user_allocation_quota_is_486() {
    let daemon = Daemon::start_with(|c| set_key(&c, "limits", "allocations_per_user", "1"));
    let first = Session::new(daemon.addr(), "leo");
    first.allocate_ok();
    let mut second = Session::new(daemon.addr(), "ignored");
    second.creds = first.creds.clone();
    let r = second.allocate();
    r.assert_error(486, "second allocation of the same username");
    assert!(r.verifies_with(&second.creds.key));
    // Another username is not affected.
    Session::new(daemon.addr(), "mallory").allocate_ok();
    // Deleting the first allocation gives the slot back.
    first
        .refresh(Some(0))
        .assert_success(&first.creds.key, "delete");
    second.allocate_ok();
    stop(daemon);
}

/// Two free consecutive ports below the kernel's ephemeral range (so no other socket
/// is handed them during the test) and outside the harness's relay range (so no other
/// test daemon takes them).
fn two_free_ports() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let relay = relay_ports();
    (1024..ephemeral_low.saturating_sub(2))
        .rev()
        .step_by(97)
        .chain(47000..47100)
        .find(|p| {
            !relay.contains(p)
                && !relay.contains(&(p + 1))
                && port_is_free(v4(127, 0, 0, 1, *p))
                && port_is_free(v4(127, 0, 0, 1, p + 1))
        })
        .expect("two free ports")
}

#[test]
fn exhausted_relay_ports_are_508() {
    let low = two_free_ports();
    let daemon = Daemon::start_with(|c| {
        set_key(
            &c,
            "server",
            "relay_ports",
            &format!("\"{low}-{}\"", low + 1),
        )
    });
    let a = Session::new(daemon.addr(), "ports-a");
    let b = Session::new(daemon.addr(), "ports-b");
    let c = Session::new(daemon.addr(), "ports-c");
    let mut got = vec![a.allocate_ok().port(), b.allocate_ok().port()];
    got.sort_unstable();
    assert_eq!(got, vec![low, low + 1]);
    let r = c.allocate();
    r.assert_error(508, "third allocation with two relay ports");
    assert!(r.verifies_with(&c.creds.key));
    // Freeing one port lets the third client in.
    a.refresh(Some(0)).assert_success(&a.creds.key, "delete");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.allocate();
        if r.is_success() {
            break;
        }
        r.assert_error(508, "while the port is being released");
        assert!(Instant::now() < deadline, "port never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(daemon);
}

// ---------------------------------------------------------------------------------------
// FINGERPRINT and MESSAGE-INTEGRITY.

#[test]
fn fingerprint_is_verified_and_answered() {
    let daemon = Daemon::start();
    let client = Client::new(daemon.addr());
    let with = client.transact(&build(Method::BINDING, tid(), None, true, |_| {}));
    assert!(with.is_success());
    let msg = with.msg();
    assert_eq!(
        msg.attributes().last().map(|a| a.typ),
        Some(attr::FINGERPRINT),
        "FINGERPRINT last"
    );
    integrity::verify_fingerprint(&msg).expect("valid FINGERPRINT in the response");
    assert_eq!(
        with.xor_address(attr::XOR_MAPPED_ADDRESS),
        Some(client.socket.local_addr().unwrap())
    );
    let without = client.transact(&build(Method::BINDING, tid(), None, false, |_| {}));
    assert!(without.is_success() && !without.has(attr::FINGERPRINT));

    let mut corrupted = build(Method::BINDING, tid(), None, true, |_| {});
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0x01;
    client.send(&corrupted);
    assert!(
        client.response_to(&corrupted, SILENCE).is_none(),
        "no answer to a bad FINGERPRINT"
    );
    // The same on an authenticated request.
    let s = Session::new(daemon.addr(), "nina");
    let mut request = build(
        Method::ALLOCATE,
        tid(),
        Some((&s.creds, &s.nonce)),
        true,
        udp_transport,
    );
    let last = request.len() - 1;
    request[last] ^= 0x80;
    s.client.send(&request);
    assert!(s.client.response_to(&request, SILENCE).is_none());
    // Fixed, it is answered, with FINGERPRINT and MESSAGE-INTEGRITY.
    request[last] ^= 0x80;
    let r = s.client.transact(&request);
    r.assert_success(&s.creds.key, "Allocate with FINGERPRINT");
    integrity::verify_fingerprint(&r.msg()).expect("FINGERPRINT on the Allocate response");
    stop(daemon);
}

#[test]
fn success_responses_carry_message_integrity_with_the_long_term_key() {
    let daemon = Daemon::start();
    let s = Session::new(daemon.addr(), "oscar");
    // The key, derived here from first principles for the check.
    let (username, password) = credentials("oscar", 3600);
    assert_eq!(username, s.creds.username);
    let key = long_term_key(&username, REALM, &password);
    let wrong = long_term_key(&username, REALM, "not-the-password");
    let peer = outside_relay_range().local_addr().unwrap();
    let responses = [
        ("Allocate", s.allocate()),
        ("CreatePermission", s.create_permission(peer)),
        ("ChannelBind", s.channel_bind(0x4ABC, peer)),
        ("Refresh", s.refresh(Some(600))),
        ("Refresh LIFETIME 0", s.refresh(Some(0))),
    ];
    for (what, r) in responses {
        r.assert_success(&key, what);
        assert!(
            !r.verifies_with(&wrong),
            "{what}: a wrong key must not verify"
        );
        // The integrity covers the whole message: changing a byte breaks it.
        let mut raw = r.raw.clone();
        raw[8] ^= 0xFF;
        let tampered = Resp { raw };
        assert!(
            !tampered.verifies_with(&key),
            "{what}: tampered still verifies"
        );
    }
    stop(daemon);
}

// ---------------------------------------------------------------------------------------
// Garbage.

/// xorshift64*: deterministic noise, seeded per run for reproducibility.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Up to `max - 1` random bytes.
    fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max);
        self.bytes(len)
    }
}

fn stun_header(typ: u16, len: u16, id: &[u8; 12]) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    v.extend_from_slice(&typ.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    v.extend_from_slice(id);
    v
}

/// Datagram number `i` of the flood.
fn garbage(n: &mut Noise, i: usize, victim: &Creds, nonce: &[u8]) -> Vec<u8> {
    let id: [u8; 12] = n.bytes(12).try_into().unwrap();
    match i % 12 {
        // Random bytes.
        0 => n.some_bytes(1500),
        // Truncated headers: a STUN start, cut before 20 bytes.
        1 => {
            let mut v = stun_header([0x0001, 0x0003, 0x0009][n.below(3)], 0, &id);
            v.truncate(n.below(20));
            v
        }
        // Length fields that lie: too long, not a multiple of 4, or huge.
        2 => {
            let words = n.below(16);
            let body = n.bytes(4 * words);
            let len = [
                body.len() as u16 + 4,
                body.len() as u16 + 2,
                0xFFFC,
                n.next() as u16,
            ][n.below(4)];
            let mut v = stun_header(0x0003, len, &id);
            v.extend_from_slice(&body);
            v
        }
        // Well-formed requests with a bad FINGERPRINT.
        3 => {
            let method = [Method::BINDING, Method::ALLOCATE, Method::REFRESH][n.below(3)];
            let mut v = build(method, TransactionId(id), None, true, udp_transport);
            let k = v.len() - 1 - n.below(4);
            v[k] ^= 1 << n.below(8);
            v
        }
        // Attributes whose length runs past the message.
        4 => {
            let mut v = stun_header(0x0001, 8, &id);
            v.extend_from_slice(&[0x00, 0x06, 0xFF, 0xFF]);
            v.extend_from_slice(&n.bytes(4));
            let len = [12u16, 8, 0x0100][n.below(3)];
            v[2..4].copy_from_slice(&len.to_be_bytes());
            v
        }
        // ChannelData on channels nobody bound, some with lying lengths.
        5 => {
            let ch = 0x4000 + n.below(0x1000) as u16;
            let data = n.some_bytes(600);
            let len = if n.below(2) == 0 {
                data.len() as u16
            } else {
                n.next() as u16
            };
            let mut v = Vec::new();
            v.extend_from_slice(&ch.to_be_bytes());
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(&data);
            v
        }
        // Huge datagrams: noise, a STUN header claiming the maximum body, ChannelData.
        6 if i % 24 == 6 => {
            let mut v = n.bytes(65_000);
            match n.below(3) {
                0 => v[..20].copy_from_slice(&stun_header(0x0003, 0xFFFC, &id)),
                1 => v[..4].copy_from_slice(&[0x40, 0x00, 0xFF, 0xFF]),
                _ => {}
            }
            v
        }
        // Requests with random methods and attributes (well-formed TLVs).
        6 | 7 => {
            let method = Method(n.below(0x1000) as u16);
            build(method, TransactionId(id), None, n.below(2) == 0, |w| {
                for _ in 0..n.below(6) {
                    let typ = n.next() as u16;
                    let value = n.some_bytes(40);
                    w.attr(typ, &value).unwrap();
                }
            })
        }
        // Empty and tiny datagrams, reserved channel numbers.
        8 => {
            let len = n.below(4);
            let mut v = n.bytes(len);
            if let Some(b) = v.first_mut() {
                *b = 0x50 + (*b & 0x2F);
            }
            v
        }
        // Authenticated-looking requests with a wrong MESSAGE-INTEGRITY.
        9 => {
            let forged = Creds {
                key: n.bytes(16).try_into().unwrap(),
                ..victim.clone()
            };
            let method = [Method::ALLOCATE, Method::REFRESH, Method::CREATE_PERMISSION][n.below(3)];
            build(
                method,
                TransactionId(id),
                Some((&forged, nonce)),
                false,
                |w| {
                    udp_transport(w);
                    w.u32_attr(attr::LIFETIME, 0).unwrap();
                },
            )
        }
        // Send indications without a permission, and responses/indications nobody asked for.
        10 => {
            let mut buf = vec![0u8; 512];
            let class = [Class::Indication, Class::Success, Class::Error][n.below(3)];
            let method = [Method::SEND, Method::DATA, Method::BINDING][n.below(3)];
            let mut w = MessageWriter::new(&mut buf, class, method, TransactionId(id)).unwrap();
            w.xor_address(attr::XOR_PEER_ADDRESS, v4(127, 0, 0, 1, 9))
                .unwrap();
            w.attr(attr::DATA, &n.some_bytes(100)).unwrap();
            let len = w.finish();
            buf.truncate(len);
            buf
        }
        // Valid header, body of random TLVs including zero-length and odd lengths.
        _ => {
            let mut body = Vec::new();
            for _ in 0..n.below(8) {
                let len = n.below(13);
                body.extend_from_slice(&(n.next() as u16).to_be_bytes());
                body.extend_from_slice(&(len as u16).to_be_bytes());
                body.extend_from_slice(&n.bytes(len.div_ceil(4) * 4));
            }
            let mut v = stun_header(n.next() as u16 & 0x3FFF, body.len() as u16, &id);
            v.extend_from_slice(&body);
            v
        }
    }
}

#[test]
fn ten_thousand_garbage_datagrams_leave_the_daemon_serving() {
    const DATAGRAMS: usize = 10_000;
    let daemon = Daemon::start();
    // An allocation that must survive garbage sent from its own 5-tuple too.
    let victim = Session::new(daemon.addr(), "victim");
    victim.allocate_ok();
    let senders: Vec<Client> = (0..4).map(|_| Client::new(daemon.addr())).collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("garbage seed {seed:#x}");
    let mut noise = Noise(seed);
    let mut huge = 0;
    for i in 0..DATAGRAMS {
        let datagram = garbage(&mut noise, i, &victim.creds, &victim.nonce);
        huge += usize::from(datagram.len() >= 65_000);
        let sender = if i % 5 == 4 {
            &victim.client
        } else {
            &senders[i % 4]
        };
        sender
            .socket
            .send_to(&datagram, daemon.addr())
            .unwrap_or_else(|e| panic!("send garbage #{i} ({} bytes): {e}", datagram.len()));
        // Every 500 datagrams, wait until each sender's shard has caught up, so the
        // garbage is parsed by the daemon rather than dropped by the kernel.
        if i % 500 == 499 {
            for sender in &senders {
                sender.ping();
            }
        }
    }
    assert!(huge >= 100, "{huge} huge datagrams");

    // A fresh client gets a Binding response.
    Client::new(daemon.addr()).ping();
    // A new allocation succeeds, and the victim's allocation is still there (its
    // socket first drops the answers to the garbage it sent, which fill its buffer).
    Session::new(daemon.addr(), "after-flood").allocate_ok();
    victim.client.drain();
    victim
        .refresh(Some(600))
        .assert_success(&victim.creds.key, "victim's allocation survived");
    stop(daemon);
}

/// Bursts in both directions cross the batched receive and send paths (several
/// datagrams per `recvmmsg`, several answers per `sendmmsg`): nothing is lost,
/// duplicated or reordered, for ChannelData and for Send/Data indications.
#[test]
fn bursts_are_relayed_whole_and_in_order() {
    // More per burst than one relay-socket pass reads (2 x 32), fewer than the
    // default socket buffers hold (about 270 small datagrams).
    const BURST: u32 = 150;
    const BURSTS: u32 = 2;
    let daemon = Daemon::start();
    // Data from a peer with a channel comes back as ChannelData, so the Send path
    // uses a second peer without one.
    let channel_peer = echo_peer();
    let peer = echo_peer();
    let s = Session::new(daemon.addr(), "burst");
    s.allocate_ok();
    s.channel_bind(0x4001, channel_peer)
        .assert_success(&s.creds.key, "ChannelBind");
    s.create_permission(peer)
        .assert_success(&s.creds.key, "CreatePermission");

    let payload = |framing: &str, n: u32| format!("{framing} {n:05}").into_bytes();
    for framing in ["channel", "send"] {
        let mut next = 0u32;
        for _ in 0..BURSTS {
            for k in 0..BURST {
                let data = payload(framing, next + k);
                if framing == "channel" {
                    let mut frame = vec![0x40, 0x01];
                    frame.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    frame.extend_from_slice(&data);
                    s.client.send(&frame);
                } else {
                    s.client.send(&send_indication(peer, &data));
                }
            }
            for k in 0..BURST {
                let raw = s
                    .client
                    .recv_within(WAIT)
                    .unwrap_or_else(|| panic!("{framing}: datagram {} lost", next + k));
                let got = if framing == "channel" {
                    assert_eq!(&raw[..2], &[0x40, 0x01], "ChannelData on channel 0x4001");
                    let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
                    raw[4..4 + len].to_vec()
                } else {
                    let r = Resp { raw };
                    assert_eq!(r.xor_address(attr::XOR_PEER_ADDRESS), Some(peer));
                    r.attr(attr::DATA).expect("Data indication with DATA")
                };
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&payload(framing, next + k)),
                    "{framing}: in order, nothing lost or doubled"
                );
            }
            next += BURST;
        }
    }
    stop(daemon);
}
