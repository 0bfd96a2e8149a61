//! Sans-IO tests of the core: bytes and time in, decisions out, no socket, no sleep.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::auth::{self, NonceKey, Secret};
use crate::policy::{OwnAddresses, PeerPolicy};
use crate::proto::{Class, Message, MessageWriter, Method, TransactionId, attr};
use crate::stats::{AuthFailure, DropReason};

const REALM: &str = "test.realm";
const SECRET: &[u8] = b"unit-test-secret";
const PEER: &str = "8.8.4.4:5000";
const NONCE_LIFETIME: u64 = 5000;

/// A relay socket that records its port being freed.
#[derive(Debug)]
struct FakeSocket {
    port: u16,
    freed: Rc<RefCell<Vec<u16>>>,
}

impl Drop for FakeSocket {
    fn drop(&mut self) {
        self.freed.borrow_mut().push(self.port);
    }
}

#[derive(Default)]
struct FakeIo {
    next_port: u16,
    last_port: u16,
    v6: bool,
    bound: usize,
    started: usize,
    freed: Rc<RefCell<Vec<u16>>>,
    reserved: Vec<([u8; 8], FakeSocket, SocketAddr)>,
}

impl FakeIo {
    fn new() -> Self {
        Self {
            next_port: 50000,
            last_port: 50100,
            v6: true,
            ..Default::default()
        }
    }
}

impl RelayIo for FakeIo {
    type Socket = FakeSocket;
    fn bind(
        &mut self,
        family: Family,
        port: PortChoice,
    ) -> Result<(FakeSocket, SocketAddr), BindError> {
        if family == Family::V6 && !self.v6 {
            return Err(BindError::FamilyUnavailable);
        }
        let port = match port {
            PortChoice::Exact(p) => p,
            PortChoice::Even => self.next_port + (self.next_port & 1),
            PortChoice::Any => self.next_port,
        };
        if port > self.last_port {
            return Err(BindError::Exhausted);
        }
        self.next_port = port + 1;
        self.bound += 1;
        let ip: IpAddr = match family {
            Family::V4 => "192.0.2.10".parse().unwrap(),
            Family::V6 => "2001:db8::10".parse().unwrap(),
        };
        Ok((
            FakeSocket {
                port,
                freed: Rc::clone(&self.freed),
            },
            SocketAddr::new(ip, port),
        ))
    }
    fn start(&mut self, _: &mut FakeSocket, _: AllocKey, _: Family) {
        self.started += 1;
    }
    fn reserve(&mut self, family: Family, port: u16, _: Instant) -> Result<[u8; 8], BindError> {
        let (socket, addr) = self.bind(family, PortChoice::Exact(port))?;
        let token = [port as u8; 8];
        self.reserved.push((token, socket, addr));
        Ok(token)
    }
    fn redeem(&mut self, token: [u8; 8], _: Instant) -> Option<(FakeSocket, SocketAddr)> {
        let i = self.reserved.iter().position(|r| r.0 == token)?;
        let (_, socket, addr) = self.reserved.swap_remove(i);
        Some((socket, addr))
    }
}

struct Harness {
    core: Core<FakeSocket, ()>,
    io: FakeIo,
    now: Now,
    stats: Arc<Stats>,
    out: Vec<u8>,
}

fn settings(max_per_user: u32) -> (Arc<Settings>, Arc<Quotas>) {
    settings_with(
        max_per_user,
        PeerPolicy::new(Vec::new(), false, OwnAddresses::default()),
    )
}

fn settings_with(max_per_user: u32, policy: PeerPolicy) -> (Arc<Settings>, Arc<Quotas>) {
    let s = Settings {
        realm: REALM.into(),
        software: None,
        secrets: vec![
            Secret::new(b"old-secret".to_vec()),
            Secret::new(SECRET.to_vec()),
        ],
        nonce_lifetime: NONCE_LIFETIME,
        default_lifetime: Duration::from_secs(600),
        max_lifetime: Duration::from_secs(3600),
        permission_lifetime: Duration::from_secs(300),
        channel_lifetime: Duration::from_secs(600),
        permissions_per_allocation: 4,
        channels_per_allocation: 2,
        policy,
        external_v4: None,
        external_v6: None,
        unauthenticated_rate: 0.0,
        unauthenticated_burst: 0.0,
        allocation_bandwidth: 0.0,
        shard_bandwidth: 0.0,
    };
    (Arc::new(s), Quotas::new(100, max_per_user, 100))
}

fn client(n: u16) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: SocketAddr::new("192.0.2.200".parse().unwrap(), 40000 + n),
        server: "192.0.2.1:3478".parse().unwrap(),
    }
}

/// What the client knows after a 401.
#[derive(Clone)]
struct Creds {
    username: String,
    key: [u8; 16],
    nonce: Vec<u8>,
}

enum Reply {
    None,
    Message(Vec<u8>),
    Relay(SocketAddr, Vec<u8>),
}

impl Harness {
    fn new() -> Self {
        Self::with_quota(10)
    }
    fn with_quota(per_user: u32) -> Self {
        let (settings, quotas) = settings(per_user);
        Self::with(settings, quotas)
    }

    fn with(settings: Arc<Settings>, quotas: Arc<Quotas>) -> Self {
        let stats = Arc::new(Stats::default());
        Self {
            core: Core::new(
                settings,
                Arc::new(NonceKey::random()),
                quotas,
                Arc::clone(&stats),
            ),
            io: FakeIo::new(),
            now: Now::read(),
            stats,
            out: vec![0u8; 2048],
        }
    }

    fn send(&mut self, ft: FiveTuple, bytes: &[u8]) -> Reply {
        match self
            .core
            .handle_client(self.now, ft, &(), bytes, &mut self.out, &mut self.io)
        {
            ClientAction::None => Reply::None,
            ClientAction::Reply(n) => Reply::Message(self.out[..n].to_vec()),
            ClientAction::Relay { peer, payload, .. } => Reply::Relay(peer, payload.to_vec()),
        }
    }

    fn request(
        &mut self,
        ft: FiveTuple,
        method: Method,
        creds: Option<&Creds>,
        attrs: impl FnOnce(&mut MessageWriter<'_>),
    ) -> (TransactionId, Vec<u8>) {
        let tid = TransactionId(rand::random());
        let bytes = build(method, Class::Request, tid, creds, attrs);
        match self.send(ft, &bytes) {
            Reply::Message(m) => (tid, m),
            _ => panic!("expected a response"),
        }
    }

    /// Unauthenticated Allocate, then credentials for `user` with the issued nonce.
    fn login(&mut self, ft: FiveTuple, user: &str) -> Creds {
        let (_, resp) = self.request(ft, Method::ALLOCATE, None, |w| {
            w.requested_transport(17).unwrap();
        });
        assert_eq!(error_code(&resp), Some(401));
        let msg = Message::parse(&resp).unwrap();
        let nonce = msg.get(attr::NONCE).expect("nonce").value.to_vec();
        let realm = attr::decode_text(msg.get(attr::REALM).expect("realm").value, 763).unwrap();
        assert_eq!(realm, REALM);
        let (username, password) =
            auth::mint(&Secret::new(SECRET.to_vec()), user, self.now.unix, 86400);
        let key = auth::long_term_key(&username, REALM, &password);
        Creds {
            username,
            key,
            nonce,
        }
    }

    fn allocate(&mut self, ft: FiveTuple, creds: &Creds) -> Vec<u8> {
        let (_, resp) = self.request(ft, Method::ALLOCATE, Some(creds), |w| {
            w.requested_transport(17).unwrap();
        });
        resp
    }

    fn peer_packet(&mut self, key: AllocKey, peer: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
        match self
            .core
            .handle_peer(self.now, key, peer, &mut buf, PEER_HEADROOM, payload.len())
        {
            PeerAction::None => None,
            PeerAction::Forward { frame, .. } => Some(buf[frame].to_vec()),
        }
    }

    fn only_key(&self) -> AllocKey {
        let (index, a) = self.core.allocations.iter().next().expect("one allocation");
        AllocKey {
            index: index as u32,
            generation: a.generation,
        }
    }
}

fn build(
    method: Method,
    class: Class,
    tid: TransactionId,
    creds: Option<&Creds>,
    attrs: impl FnOnce(&mut MessageWriter<'_>),
) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let mut w = MessageWriter::new(&mut buf, class, method, tid).unwrap();
    attrs(&mut w);
    if let Some(c) = creds {
        w.attr(attr::USERNAME, c.username.as_bytes()).unwrap();
        w.attr(attr::REALM, REALM.as_bytes()).unwrap();
        w.attr(attr::NONCE, &c.nonce).unwrap();
        w.message_integrity(&c.key).unwrap();
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn error_code(resp: &[u8]) -> Option<u16> {
    let msg = Message::parse(resp).ok()?;
    match msg.class() {
        Class::Error => attr::decode_error_code(msg.get(attr::ERROR_CODE)?.value)
            .ok()
            .map(|(c, _)| c),
        _ => None,
    }
}

fn is_success(resp: &[u8]) -> bool {
    Message::parse(resp).is_ok_and(|m| m.class() == Class::Success)
}

fn xor_addr(resp: &[u8], typ: u16) -> Option<SocketAddr> {
    let msg = Message::parse(resp).ok()?;
    attr::decode_xor_address(msg.get(typ)?.value, &msg.transaction_id()).ok()
}

fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

fn permission(h: &mut Harness, ft: FiveTuple, creds: &Creds, peer: SocketAddr) -> Vec<u8> {
    h.request(ft, Method::CREATE_PERMISSION, Some(creds), |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    })
    .1
}

fn channel_bind(
    h: &mut Harness,
    ft: FiveTuple,
    creds: &Creds,
    number: u16,
    peer: SocketAddr,
) -> Vec<u8> {
    h.request(ft, Method::CHANNEL_BIND, Some(creds), |w| {
        w.channel_number(number).unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    })
    .1
}

#[test]
fn binding_reports_the_reflexive_address() {
    let mut h = Harness::new();
    let (_, resp) = h.request(client(1), Method::BINDING, None, |_| {});
    assert!(is_success(&resp));
    assert_eq!(
        xor_addr(&resp, attr::XOR_MAPPED_ADDRESS),
        Some(client(1).client)
    );
    let msg = Message::parse(&resp).unwrap();
    assert!(msg.get(attr::SOFTWARE).is_none(), "no version disclosure");
    assert!(
        msg.get(attr::FINGERPRINT).is_none(),
        "request had no FINGERPRINT"
    );
}

#[test]
fn fingerprint_is_echoed_and_checked() {
    let mut h = Harness::new();
    let tid = TransactionId([7; 12]);
    let mut bytes = build(Method::BINDING, Class::Request, tid, None, |w| {
        w.fingerprint().unwrap()
    });
    let Reply::Message(resp) = h.send(client(1), &bytes) else {
        panic!("answer expected");
    };
    let msg = Message::parse(&resp).unwrap();
    crate::proto::integrity::verify_fingerprint(&msg).expect("response fingerprint");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(h.send(client(1), &bytes), Reply::None));
    assert_eq!(
        Stats::get(&h.stats.dropped[DropReason::BadFingerprint as usize]),
        1
    );
}

#[test]
fn unknown_comprehension_required_attribute_gets_420() {
    let mut h = Harness::new();
    let (_, resp) = h.request(client(1), Method::BINDING, None, |w| {
        w.attr(0x0031, b"????").unwrap();
    });
    assert_eq!(error_code(&resp), Some(420));
    let msg = Message::parse(&resp).unwrap();
    let unknown: Vec<u16> =
        attr::decode_unknown_attributes(msg.get(attr::UNKNOWN_ATTRIBUTES).unwrap().value)
            .unwrap()
            .collect();
    assert_eq!(unknown, vec![0x0031]);
}

#[test]
fn allocate_challenge_then_success_and_retransmission() {
    let mut h = Harness::new();
    let ft = client(1);
    let creds = h.login(ft, "alice");
    let tid = TransactionId([9; 12]);
    let req = build(Method::ALLOCATE, Class::Request, tid, Some(&creds), |w| {
        w.requested_transport(17).unwrap();
    });
    let Reply::Message(first) = h.send(ft, &req) else {
        panic!()
    };
    assert!(is_success(&first), "{:?}", error_code(&first));
    let relayed = xor_addr(&first, attr::XOR_RELAYED_ADDRESS).expect("relayed address");
    assert_eq!(relayed.port(), 50000);
    assert_eq!(xor_addr(&first, attr::XOR_MAPPED_ADDRESS), Some(ft.client));
    let msg = Message::parse(&first).unwrap();
    crate::proto::integrity::verify_message_integrity(&msg, &creds.key).expect("response MI");
    assert_eq!(
        attr::decode_u32(msg.get(attr::LIFETIME).unwrap().value).unwrap(),
        600
    );

    // A retransmission gets the same relayed address and binds nothing new.
    let Reply::Message(again) = h.send(ft, &req) else {
        panic!()
    };
    assert_eq!(xor_addr(&again, attr::XOR_RELAYED_ADDRESS), Some(relayed));
    assert_eq!(h.io.bound, 1);
    // A new Allocate on the same 5-tuple is a mismatch.
    assert_eq!(error_code(&h.allocate(ft, &creds)), Some(437));
    assert_eq!(h.core.allocation_count(), 1);
}

#[test]
fn wrong_password_expired_username_and_stale_nonce() {
    let mut h = Harness::new();
    let ft = client(1);
    let mut creds = h.login(ft, "bob");
    let good_key = creds.key;
    creds.key = auth::long_term_key(&creds.username, REALM, "not-the-password");
    assert_eq!(error_code(&h.allocate(ft, &creds)), Some(401));
    assert_eq!(h.core.allocation_count(), 0);

    let (expired, password) = auth::mint(
        &Secret::new(SECRET.to_vec()),
        "bob",
        h.now.unix - 7200,
        3600,
    );
    let old = Creds {
        key: auth::long_term_key(&expired, REALM, &password),
        username: expired,
        nonce: creds.nonce.clone(),
    };
    assert_eq!(error_code(&h.allocate(ft, &old)), Some(401));
    assert_eq!(
        Stats::get(&h.stats.auth_failures[AuthFailure::Expired as usize]),
        1
    );

    creds.key = good_key;
    h.now = h.now.plus(NONCE_LIFETIME + 1);
    let stale = h.allocate(ft, &creds);
    assert_eq!(error_code(&stale), Some(438));
    let fresh = Message::parse(&stale)
        .unwrap()
        .get(attr::NONCE)
        .unwrap()
        .value
        .to_vec();
    creds.nonce = fresh;
    assert!(is_success(&h.allocate(ft, &creds)));

    // Another realm is refused even with a key computed for it.
    let mut elsewhere = creds.clone();
    let (name, password) = auth::mint(&Secret::new(SECRET.to_vec()), "bob", h.now.unix, 86400);
    elsewhere.username = name.clone();
    elsewhere.key = auth::long_term_key(&name, "other.realm", &password);
    let (_, r) = h.request(ft, Method::REFRESH, None, |w| {
        w.attr(attr::USERNAME, name.as_bytes()).unwrap();
        w.attr(attr::REALM, b"other.realm").unwrap();
        w.attr(attr::NONCE, &elsewhere.nonce).unwrap();
        w.message_integrity(&elsewhere.key).unwrap();
    });
    assert_eq!(error_code(&r), Some(401));
    assert_eq!(
        Stats::get(&h.stats.auth_failures[AuthFailure::WrongRealm as usize]),
        1
    );

    // A nonce is bound to the client's transport address.
    let other = client(2);
    assert_eq!(error_code(&h.allocate(other, &creds)), Some(438));
}

#[test]
fn allocate_error_paths() {
    let mut h = Harness::new();
    let ft = client(1);
    let creds = h.login(ft, "carol");
    let (_, r) = h.request(ft, Method::ALLOCATE, Some(&creds), |_| {});
    assert_eq!(error_code(&r), Some(400), "no REQUESTED-TRANSPORT");
    let (_, r) = h.request(ft, Method::ALLOCATE, Some(&creds), |w| {
        w.requested_transport(6).unwrap()
    });
    assert_eq!(error_code(&r), Some(442));
    let (_, r) = h.request(ft, Method::ALLOCATE, Some(&creds), |w| {
        w.requested_transport(17).unwrap();
        w.attr(attr::REQUESTED_ADDRESS_FAMILY, &[0x07, 0, 0, 0])
            .unwrap();
    });
    assert_eq!(error_code(&r), Some(440));
    let (_, r) = h.request(ft, Method::ALLOCATE, Some(&creds), |w| {
        w.requested_transport(17).unwrap();
        w.attr(attr::RESERVATION_TOKEN, &[1; 8]).unwrap();
    });
    assert_eq!(error_code(&r), Some(508), "unknown reservation token");
    h.io.v6 = false;
    let (_, r) = h.request(ft, Method::ALLOCATE, Some(&creds), |w| {
        w.requested_transport(17).unwrap();
        w.address_family(attr::REQUESTED_ADDRESS_FAMILY, Family::V6)
            .unwrap();
    });
    assert_eq!(error_code(&r), Some(440));
    h.io.last_port = 0;
    assert_eq!(error_code(&h.allocate(ft, &creds)), Some(508));
    assert_eq!(h.core.allocation_count(), 0);
}

#[test]
fn quota_per_user_gives_486() {
    let mut h = Harness::with_quota(1);
    let creds = h.login(client(1), "dave");
    assert!(is_success(&h.allocate(client(1), &creds)));
    let mut second = h.login(client(2), "dave");
    second.username = creds.username.clone();
    second.key = creds.key;
    assert_eq!(error_code(&h.allocate(client(2), &second)), Some(486));
}

#[test]
fn dual_stack_and_ipv6_allocations() {
    let mut h = Harness::new();
    let creds = h.login(client(1), "erin");
    let (_, r) = h.request(client(1), Method::ALLOCATE, Some(&creds), |w| {
        w.requested_transport(17).unwrap();
        w.address_family(attr::ADDITIONAL_ADDRESS_FAMILY, Family::V6)
            .unwrap();
    });
    assert!(is_success(&r));
    let msg = Message::parse(&r).unwrap();
    let relayed: Vec<SocketAddr> = msg
        .attributes()
        .filter(|a| a.typ == attr::XOR_RELAYED_ADDRESS)
        .map(|a| attr::decode_xor_address(a.value, &msg.transaction_id()).unwrap())
        .collect();
    assert_eq!(relayed.len(), 2);
    assert!(relayed[0].is_ipv4() && relayed[1].is_ipv6());

    // Without IPv6 a dual-stack request still gets IPv4 plus ADDRESS-ERROR-CODE.
    h.io.v6 = false;
    let creds2 = h.login(client(2), "erin");
    let (_, r) = h.request(client(2), Method::ALLOCATE, Some(&creds2), |w| {
        w.requested_transport(17).unwrap();
        w.address_family(attr::ADDITIONAL_ADDRESS_FAMILY, Family::V6)
            .unwrap();
    });
    assert!(is_success(&r));
    assert!(
        Message::parse(&r)
            .unwrap()
            .get(attr::ADDRESS_ERROR_CODE)
            .is_some()
    );
}

#[test]
fn even_port_with_reservation() {
    let mut h = Harness::new();
    let creds = h.login(client(1), "fay");
    let (_, r) = h.request(client(1), Method::ALLOCATE, Some(&creds), |w| {
        w.requested_transport(17).unwrap();
        w.attr(attr::EVEN_PORT, &[0x80]).unwrap();
    });
    assert!(is_success(&r), "{:?}", error_code(&r));
    let port = xor_addr(&r, attr::XOR_RELAYED_ADDRESS).unwrap().port();
    assert_eq!(port % 2, 0);
    let token = Message::parse(&r)
        .unwrap()
        .get(attr::RESERVATION_TOKEN)
        .unwrap()
        .value
        .to_vec();
    let creds2 = h.login(client(2), "fay");
    let (_, r2) = h.request(client(2), Method::ALLOCATE, Some(&creds2), |w| {
        w.requested_transport(17).unwrap();
        w.attr(attr::RESERVATION_TOKEN, &token).unwrap();
    });
    assert!(is_success(&r2), "{:?}", error_code(&r2));
    assert_eq!(
        xor_addr(&r2, attr::XOR_RELAYED_ADDRESS).unwrap().port(),
        port + 1
    );
}

#[test]
fn permission_send_data_and_channels() {
    let mut h = Harness::new();
    let ft = client(1);
    let creds = h.login(ft, "gus");
    assert!(is_success(&h.allocate(ft, &creds)));
    let key = h.only_key();

    // Without a permission nothing passes either way.
    let send = build(
        Method::SEND,
        Class::Indication,
        TransactionId([1; 12]),
        None,
        |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer()).unwrap();
            w.attr(attr::DATA, b"hello").unwrap();
        },
    );
    assert!(matches!(h.send(ft, &send), Reply::None));
    assert!(h.peer_packet(key, peer(), b"x").is_none());

    // Denied peers get 403.
    for denied in ["127.0.0.1:9", "10.1.2.3:9", "169.254.169.254:80", "[::1]:9"] {
        let r = permission(&mut h, ft, &creds, denied.parse().unwrap());
        let code = error_code(&r);
        assert!(code == Some(403) || code == Some(443), "{denied}: {code:?}");
    }
    assert!(is_success(&permission(&mut h, ft, &creds, peer())));
    let Reply::Relay(to, payload) = h.send(ft, &send) else {
        panic!("relay expected")
    };
    assert_eq!((to, payload.as_slice()), (peer(), &b"hello"[..]));

    // Peer → client as a Data indication.
    let data = h
        .peer_packet(key, peer(), b"reply")
        .expect("data indication");
    let msg = Message::parse(&data).unwrap();
    assert_eq!(
        (msg.class(), msg.method()),
        (Class::Indication, Method::DATA)
    );
    assert_eq!(
        attr::decode_xor_address(
            msg.get(attr::XOR_PEER_ADDRESS).unwrap().value,
            &msg.transaction_id()
        )
        .unwrap(),
        peer()
    );
    assert_eq!(msg.get(attr::DATA).unwrap().value, b"reply");

    // Channel: both directions as ChannelData.
    assert!(is_success(&channel_bind(
        &mut h,
        ft,
        &creds,
        0x4001,
        peer()
    )));
    let mut cd = vec![0u8; 16];
    let n = crate::proto::encode_channel_data(&mut cd, 0x4001, b"via-ch", false).unwrap();
    let Reply::Relay(to, payload) = h.send(ft, &cd[..n]) else {
        panic!("relay expected")
    };
    assert_eq!((to, payload.as_slice()), (peer(), &b"via-ch"[..]));
    let frame = h.peer_packet(key, peer(), b"back").expect("channel data");
    let parsed = crate::proto::parse_channel_data(&frame).unwrap();
    assert_eq!((parsed.channel, parsed.data), (0x4001, &b"back"[..]));
    // An unbound channel number is dropped.
    let n = crate::proto::encode_channel_data(&mut cd, 0x4002, b"x", false).unwrap();
    assert!(matches!(h.send(ft, &cd[..n]), Reply::None));

    // Rebinding rules: a bound number keeps its peer, a bound peer its number.
    let other: SocketAddr = "8.8.8.8:1".parse().unwrap();
    assert_eq!(
        error_code(&channel_bind(&mut h, ft, &creds, 0x4001, other)),
        Some(400)
    );
    assert_eq!(
        error_code(&channel_bind(&mut h, ft, &creds, 0x4003, peer())),
        Some(400)
    );
    assert_eq!(
        error_code(&channel_bind(&mut h, ft, &creds, 0x3FFF, other)),
        Some(400)
    );
    assert!(
        is_success(&channel_bind(&mut h, ft, &creds, 0x4001, peer())),
        "refresh is fine"
    );
    // Quota: two channels per allocation in this harness.
    assert!(is_success(&channel_bind(&mut h, ft, &creds, 0x4005, other)));
    let third: SocketAddr = "8.8.8.9:1".parse().unwrap();
    assert_eq!(
        error_code(&channel_bind(&mut h, ft, &creds, 0x4006, third)),
        Some(508)
    );
    // An IPv6 peer on an IPv4-only allocation.
    let v6: SocketAddr = "[2a00:1450::1]:1".parse().unwrap();
    assert_eq!(error_code(&permission(&mut h, ft, &creds, v6)), Some(443));
}

#[test]
fn timers_expire_permissions_channels_and_allocations() {
    let mut h = Harness::new();
    let ft = client(1);
    let creds = h.login(ft, "hal");
    assert!(is_success(&h.allocate(ft, &creds)));
    let key = h.only_key();
    assert!(is_success(&channel_bind(
        &mut h,
        ft,
        &creds,
        0x4000,
        peer()
    )));
    assert!(h.peer_packet(key, peer(), b"x").is_some());
    h.now = h.now.plus(301);
    h.core.handle_timeout(h.now);
    assert!(
        h.peer_packet(key, peer(), b"x").is_none(),
        "permission expired"
    );
    assert_eq!(h.core.allocation_count(), 1);
    h.now = h.now.plus(300);
    h.core.handle_timeout(h.now);
    assert_eq!(h.core.allocation_count(), 0, "allocation expired");
    assert_eq!(*h.io.freed.borrow(), vec![50000], "relay port freed");
}

#[test]
fn refresh_extends_and_zero_deletes() {
    let mut h = Harness::new();
    let ft = client(1);
    let creds = h.login(ft, "ivy");
    assert!(is_success(&h.allocate(ft, &creds)));
    let (_, r) = h.request(ft, Method::REFRESH, Some(&creds), |w| {
        w.u32_attr(attr::LIFETIME, 99_999).unwrap()
    });
    let msg = Message::parse(&r).unwrap();
    assert_eq!(
        attr::decode_u32(msg.get(attr::LIFETIME).unwrap().value).unwrap(),
        3600
    );
    h.now = h.now.plus(1200);
    h.core.handle_timeout(h.now);
    assert_eq!(h.core.allocation_count(), 1, "refreshed past the default");
    let (_, r) = h.request(ft, Method::REFRESH, Some(&creds), |w| {
        w.u32_attr(attr::LIFETIME, 0).unwrap()
    });
    assert!(is_success(&r));
    assert_eq!(h.core.allocation_count(), 0);
    assert_eq!(h.io.freed.borrow().len(), 1);
    let (_, r) = h.request(ft, Method::REFRESH, Some(&creds), |w| {
        w.u32_attr(attr::LIFETIME, 0).unwrap()
    });
    assert_eq!(error_code(&r), Some(437));
}

#[test]
fn another_user_on_the_same_five_tuple_gets_441() {
    let mut h = Harness::new();
    let ft = client(1);
    let creds = h.login(ft, "jo");
    assert!(is_success(&h.allocate(ft, &creds)));
    let (name, password) = auth::mint(&Secret::new(SECRET.to_vec()), "mallory", h.now.unix, 3600);
    let other = Creds {
        key: auth::long_term_key(&name, REALM, &password),
        username: name,
        nonce: creds.nonce.clone(),
    };
    assert_eq!(
        error_code(&permission(&mut h, ft, &other, peer())),
        Some(441)
    );
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let mut h = Harness::new();
    let mut seed = 0x1234_5678_9abc_def0u64;
    for len in 0..2000usize {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut bytes: Vec<u8> = (0..len % 300).map(|i| (seed >> (i % 56)) as u8).collect();
        if len % 3 == 0 && bytes.len() >= 20 {
            bytes[0] = 0;
            bytes[4..8].copy_from_slice(&crate::proto::MAGIC_COOKIE.to_be_bytes());
        }
        let _ = h.send(client(1), &bytes);
    }
    assert_eq!(h.core.allocation_count(), 0);
}

#[test]
fn send_indications_obey_the_policy_per_port() {
    // 127.0.0.1 allowed (a loopback peer) but its listen port is the daemon's own.
    let own = OwnAddresses {
        ips: vec!["127.0.0.1".parse().unwrap()],
        ports: vec![3478],
        relay_ports: 60000..=60010,
    };
    let policy = PeerPolicy::new(vec!["127.0.0.1/32".parse().unwrap()], false, own);
    let (settings, quotas) = settings_with(10, policy);
    let mut h = Harness::with(settings, quotas);
    let ft = client(1);
    let creds = h.login(ft, "loop");
    assert!(is_success(&h.allocate(ft, &creds)));
    let echo: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert!(is_success(&permission(&mut h, ft, &creds, echo)));
    let send = |to: SocketAddr| {
        build(
            Method::SEND,
            Class::Indication,
            TransactionId([3; 12]),
            None,
            |w| {
                w.xor_address(attr::XOR_PEER_ADDRESS, to).unwrap();
                w.attr(attr::DATA, b"x").unwrap();
            },
        )
    };
    assert!(matches!(h.send(ft, &send(echo)), Reply::Relay(..)));
    let own_port: SocketAddr = "127.0.0.1:3478".parse().unwrap();
    assert!(
        matches!(h.send(ft, &send(own_port)), Reply::None),
        "own listener refused"
    );
    assert_eq!(
        Stats::get(&h.stats.dropped[DropReason::PeerDenied as usize]),
        1
    );
    assert_eq!(Stats::get(&h.stats.peer_denied), 1);
}

#[test]
fn compact_gives_table_capacity_back_after_allocations_end() {
    let (settings, _) = settings(1000);
    let mut h = Harness::with(settings, Quotas::new(1000, 1000, 1000));
    h.io.last_port = 60000;
    for n in 0..600 {
        let ft = client(n);
        let creds = h.login(ft, "many");
        assert!(is_success(&h.allocate(ft, &creds)), "allocation {n}");
    }
    assert!(!h.core.compact(), "a full table keeps its capacity");
    let peak = h.core.allocations.capacity();
    assert!(peak >= 600);

    h.now = h.now.plus(601);
    h.core.handle_timeout(h.now);
    assert_eq!(h.core.allocation_count(), 0);
    assert!(h.core.compact(), "an empty table shrinks");
    assert_eq!(h.core.allocations.capacity(), 0);
    assert!(h.core.by_five_tuple.capacity() < 256);
    assert!(!h.core.compact(), "nothing left to shrink");

    // And it still works afterwards.
    let ft = client(1000);
    let creds = h.login(ft, "again");
    assert!(is_success(&h.allocate(ft, &creds)));
}
