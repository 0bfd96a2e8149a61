//! Criterion micro-benchmarks of the per-message work: the STUN/TURN codec
//! (parse, encode, MESSAGE-INTEGRITY, FINGERPRINT, ChannelData) and the ChannelData
//! relay path through the sans-IO core (`Core::handle_client` for a bound channel,
//! `Core::handle_peer` for a peer datagram), with a fake `RelayIo` as in
//! src/relay/tests.rs. No sockets, no clock reads inside the measured loops (except
//! the `Now::read` bench, which measures exactly that).
//!
//! `cargo bench --bench codec` (about two minutes); see BENCHMARKS.md.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tarn::auth::{self, NonceKey, Secret};
use tarn::policy::{OwnAddresses, PeerPolicy};
use tarn::proto::{self, Class, Message, MessageWriter, Method, TransactionId, attr, integrity};
use tarn::relay::{
    AllocKey, BindError, ClientAction, Core, FiveTuple, Now, PEER_HEADROOM, PEER_TAILROOM,
    PeerAction, PortChoice, Quotas, RelayIo, Settings, Transport,
};
use tarn::stats::Stats;

const REALM: &str = "bench.realm";
const SECRET: &[u8] = b"bench-secret";
const TID: TransactionId = TransactionId([7; 12]);
const PAYLOAD: usize = 100;

fn client_addr() -> SocketAddr {
    "192.0.2.200:40000".parse().expect("literal")
}
fn server_addr() -> SocketAddr {
    "192.0.2.1:3478".parse().expect("literal")
}
fn peer_addr() -> SocketAddr {
    // A public address: allowed by the default peer policy.
    "8.8.4.4:5000".parse().expect("literal")
}

fn key_for(username: &str) -> [u8; 16] {
    auth::rest_long_term_key(&Secret::new(SECRET.to_vec()), username, REALM)
}

fn username() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{}:bench", now + 86_400)
}

/// An authenticated Allocate as a browser sends it (no FINGERPRINT), or with one.
fn allocate_request(username: &str, nonce: &[u8], fingerprint: bool) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::ALLOCATE, TID).expect("buf");
    w.requested_transport(17).expect("fits");
    w.attr(attr::USERNAME, username.as_bytes()).expect("fits");
    w.attr(attr::REALM, REALM.as_bytes()).expect("fits");
    w.attr(attr::NONCE, nonce).expect("fits");
    w.message_integrity(&key_for(username)).expect("fits");
    if fingerprint {
        w.fingerprint().expect("fits");
    }
    let n = w.finish();
    buf[..n].to_vec()
}

fn send_indication(peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 64 + payload.len()];
    let mut w = MessageWriter::new(&mut buf, Class::Indication, Method::SEND, TID).expect("buf");
    w.xor_address(attr::XOR_PEER_ADDRESS, peer).expect("fits");
    w.attr(attr::DATA, payload).expect("fits");
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let binding = {
        let mut buf = [0u8; 20];
        let w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TID).expect("buf");
        w.finish();
        buf
    };
    let user = username();
    let nonce = [b'n'; 36];
    let allocate = allocate_request(&user, &nonce, false);
    let allocate_fp = allocate_request(&user, &nonce, true);
    let payload = [0xA5u8; PAYLOAD];
    let send = send_indication(peer_addr(), &payload);
    let mut channel_data = [0u8; 4 + PAYLOAD];
    proto::encode_channel_data(&mut channel_data, 0x4000, &payload, false).expect("fits");
    let key = key_for(&user);

    g.throughput(Throughput::Elements(1));
    g.bench_function("parse/binding_request", |b| {
        b.iter(|| Message::parse(black_box(&binding)).map(|m| m.method()))
    });
    g.bench_function("parse/allocate_authenticated", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(&allocate)).expect("valid");
            // What the request path reads before the MAC: USERNAME, REALM, NONCE.
            (
                m.get(attr::USERNAME).map(|a| a.value.len()),
                m.get(attr::REALM).map(|a| a.value.len()),
                m.get(attr::NONCE).map(|a| a.value.len()),
            )
        })
    });
    g.bench_function("parse/send_indication_peer_and_data", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(&send)).expect("valid");
            let tid = m.transaction_id();
            let peer = m
                .get(attr::XOR_PEER_ADDRESS)
                .and_then(|a| attr::decode_xor_address(a.value, &tid).ok());
            (peer, m.get(attr::DATA).map(|a| a.value.len()))
        })
    });
    g.bench_function("parse/channel_data", |b| {
        b.iter(|| proto::parse_channel_data(black_box(&channel_data)).map(|c| c.data.len()))
    });
    g.bench_function("encode/binding_success_xor_mapped", |b| {
        let mut out = [0u8; 128];
        b.iter(|| {
            let mut w =
                MessageWriter::new(&mut out, Class::Success, Method::BINDING, black_box(TID))
                    .expect("buf");
            w.xor_address(attr::XOR_MAPPED_ADDRESS, black_box(client_addr()))
                .expect("fits");
            w.finish()
        })
    });
    g.bench_function("encode/allocate_success_mi_fingerprint", |b| {
        let mut out = [0u8; 256];
        b.iter(|| {
            let mut w =
                MessageWriter::new(&mut out, Class::Success, Method::ALLOCATE, black_box(TID))
                    .expect("buf");
            w.xor_address(attr::XOR_RELAYED_ADDRESS, black_box(server_addr()))
                .expect("fits");
            w.u32_attr(attr::LIFETIME, 600).expect("fits");
            w.xor_address(attr::XOR_MAPPED_ADDRESS, black_box(client_addr()))
                .expect("fits");
            w.message_integrity(black_box(&key)).expect("fits");
            w.fingerprint().expect("fits");
            w.finish()
        })
    });
    let msg = Message::parse(&allocate).expect("valid");
    g.bench_function("integrity/verify_message_integrity", |b| {
        b.iter(|| integrity::verify_message_integrity(black_box(&msg), black_box(&key)).is_ok())
    });
    let msg_fp = Message::parse(&allocate_fp).expect("valid");
    g.bench_function("integrity/verify_fingerprint", |b| {
        b.iter(|| integrity::verify_fingerprint(black_box(&msg_fp)).is_ok())
    });
    g.bench_function("auth/rest_long_term_key", |b| {
        let secret = Secret::new(SECRET.to_vec());
        b.iter(|| auth::rest_long_term_key(black_box(&secret), black_box(&user), REALM))
    });
    g.bench_function("time/Now::read", |b| b.iter(Now::read));
    g.finish();
}

/// A relay socket that is nothing at all.
#[derive(Debug)]
struct FakeSocket;

/// Binds fake sockets and remembers the key the core starts each one with.
#[derive(Default)]
struct FakeIo {
    next_port: u16,
    started: Vec<AllocKey>,
}

impl RelayIo for FakeIo {
    type Socket = FakeSocket;
    fn bind(
        &mut self,
        family: proto::Family,
        _port: PortChoice,
    ) -> Result<(FakeSocket, SocketAddr), BindError> {
        if family != proto::Family::V4 {
            return Err(BindError::FamilyUnavailable);
        }
        self.next_port += 1;
        let port = 50_000 + self.next_port;
        Ok((
            FakeSocket,
            SocketAddr::new("192.0.2.10".parse().expect("literal"), port),
        ))
    }
    fn start(&mut self, _: &mut FakeSocket, key: AllocKey, _: proto::Family) {
        self.started.push(key);
    }
}

/// A core holding `n` allocations, each with a channel 0x4000 bound to the peer;
/// returns the core, the io, and the five-tuples.
fn core_with_channels(n: u16) -> (Core<FakeSocket, ()>, FakeIo, Vec<FiveTuple>, Now) {
    let policy = PeerPolicy::new(Vec::new(), false, OwnAddresses::default());
    let settings = Arc::new(Settings::permissive(
        REALM,
        vec![Secret::new(SECRET.to_vec())],
        policy,
    ));
    let mut core = Core::new(
        settings,
        Arc::new(NonceKey::random()),
        Quotas::new(100_000, 100_000, 100_000),
        Arc::new(Stats::default()),
    );
    let mut io = FakeIo::default();
    let now = Now::read();
    let mut tuples = Vec::new();
    let mut out = [0u8; 1024];
    for i in 0..n {
        let five_tuple = FiveTuple {
            transport: Transport::Udp,
            client: SocketAddr::new(client_addr().ip(), 10_000 + i),
            server: server_addr(),
        };
        let user = format!("{}:bench-{i}", now.unix + 86_400);
        let key = key_for(&user);
        // Unauthenticated Allocate: 401 with a nonce.
        let mut req = [0u8; 512];
        let mut w =
            MessageWriter::new(&mut req, Class::Request, Method::ALLOCATE, TID).expect("buf");
        w.requested_transport(17).expect("fits");
        let len = w.finish();
        let nonce = match core.handle_client(now, five_tuple, &(), &req[..len], &mut out, &mut io) {
            ClientAction::Reply(n) => Message::parse(&out[..n])
                .expect("401")
                .get(attr::NONCE)
                .expect("NONCE")
                .value
                .to_vec(),
            other => panic!("expected a 401, got {other:?}"),
        };
        let mut request = |method: Method, fill: &dyn Fn(&mut MessageWriter<'_>)| {
            let mut w = MessageWriter::new(&mut req, Class::Request, method, TID).expect("buf");
            fill(&mut w);
            w.attr(attr::USERNAME, user.as_bytes()).expect("fits");
            w.attr(attr::REALM, REALM.as_bytes()).expect("fits");
            w.attr(attr::NONCE, &nonce).expect("fits");
            w.message_integrity(&key).expect("fits");
            let len = w.finish();
            match core.handle_client(now, five_tuple, &(), &req[..len], &mut out, &mut io) {
                ClientAction::Reply(n) => {
                    let m = Message::parse(&out[..n]).expect("response");
                    assert_eq!(m.class(), Class::Success, "{method:?}");
                }
                other => panic!("expected a reply, got {other:?}"),
            }
        };
        request(Method::ALLOCATE, &|w| {
            w.requested_transport(17).expect("fits")
        });
        request(Method::CHANNEL_BIND, &|w| {
            w.channel_number(0x4000).expect("fits");
            w.xor_address(attr::XOR_PEER_ADDRESS, peer_addr())
                .expect("fits");
        });
        tuples.push(five_tuple);
    }
    (core, io, tuples, now)
}

fn relay_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(1));
    let payload = [0x5Au8; PAYLOAD];
    let mut frame = [0u8; 4 + PAYLOAD];
    proto::encode_channel_data(&mut frame, 0x4000, &payload, false).expect("fits");
    let send = send_indication(peer_addr(), &payload);
    for n in [1u16, 10_000] {
        let (mut core, mut io, tuples, now) = core_with_channels(n);
        let mut out = [0u8; 256];
        let five_tuple = tuples[tuples.len() / 2];
        g.bench_function(format!("handle_client/channel_data/{n}_allocations"), |b| {
            b.iter(|| {
                match core.handle_client(
                    now,
                    black_box(five_tuple),
                    &(),
                    black_box(&frame),
                    &mut out,
                    &mut io,
                ) {
                    ClientAction::Relay { peer, payload, .. } => (peer.port(), payload.len()),
                    other => panic!("not relayed: {other:?}"),
                }
            })
        });
        g.bench_function(
            format!("handle_client/send_indication/{n}_allocations"),
            |b| {
                b.iter(|| {
                    match core.handle_client(
                        now,
                        black_box(five_tuple),
                        &(),
                        black_box(&send),
                        &mut out,
                        &mut io,
                    ) {
                        ClientAction::Relay { peer, payload, .. } => (peer.port(), payload.len()),
                        other => panic!("not relayed: {other:?}"),
                    }
                })
            },
        );
        let key = io.started[io.started.len() / 2];
        let mut buf = vec![0u8; PEER_HEADROOM + 2048 + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + PAYLOAD].copy_from_slice(&payload);
        g.bench_function(format!("handle_peer/channel/{n}_allocations"), |b| {
            b.iter(|| {
                match core.handle_peer(
                    now,
                    black_box(key),
                    black_box(peer_addr()),
                    &mut buf,
                    PEER_HEADROOM,
                    PAYLOAD,
                ) {
                    PeerAction::Forward { frame, .. } => frame.len(),
                    PeerAction::None => panic!("dropped"),
                }
            })
        });
        // Per-packet cost as the edge pays it: a fresh `Now::read` every datagram.
        if n == 1 {
            g.bench_function(
                "handle_client/channel_data/1_allocations_with_Now::read",
                |b| {
                    b.iter(|| {
                        match core.handle_client(
                            Now::read(),
                            black_box(five_tuple),
                            &(),
                            black_box(&frame),
                            &mut out,
                            &mut io,
                        ) {
                            ClientAction::Relay { payload, .. } => payload.len(),
                            other => panic!("not relayed: {other:?}"),
                        }
                    })
                },
            );
        }
    }
    g.finish();
}

/// FxHash (rustc's hasher): one rotate, xor and multiply per word. Here only to put a
/// number on the `by_five_tuple` lookup with a cheaper hasher than std's SipHash-1-3.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The allocation table's lookup by 5-tuple (10,000 entries), std's SipHash against FxHash.
fn five_tuple_lookup(c: &mut Criterion) {
    use std::collections::HashMap;
    use std::hash::BuildHasherDefault;
    let mut g = c.benchmark_group("five_tuple_lookup");
    g.throughput(Throughput::Elements(1));
    let tuples: Vec<FiveTuple> = (0..10_000u32)
        .map(|i| FiveTuple {
            transport: Transport::Udp,
            client: SocketAddr::new(
                std::net::Ipv4Addr::from(0xC000_0200 + (i >> 12)).into(),
                (10_000 + (i & 0xFFF)) as u16,
            ),
            server: server_addr(),
        })
        .collect();
    let sip: HashMap<FiveTuple, usize> = tuples.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let fx: HashMap<FiveTuple, usize, BuildHasherDefault<FxHasher>> =
        tuples.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut i = 0usize;
    g.bench_function("siphash_std/10000_entries", |b| {
        b.iter(|| {
            i = (i + 7919) % tuples.len();
            sip.get(black_box(&tuples[i])).copied()
        })
    });
    g.bench_function("fxhash/10000_entries", |b| {
        b.iter(|| {
            i = (i + 7919) % tuples.len();
            fx.get(black_box(&tuples[i])).copied()
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = codec, relay_path, five_tuple_lookup
}
criterion_main!(benches);
