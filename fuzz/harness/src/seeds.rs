//! The committed seed corpus, as code: `gen-seeds` writes these to `fuzz/seeds/<target>/`
//! and `tests/replay.rs` checks the files still match.
//!
//! `codec` seeds are wire bytes: the RFC 5769 / RFC 8489 B.1 vectors and one message of
//! each kind tarn handles (Binding, authenticated Allocate, CreatePermission,
//! ChannelBind, Send and Data indications, error and success responses), ChannelData
//! frames and a TCP stream of frames back to back. `core` seeds are [`Scenario`]s:
//! realistic flows (challenge, authenticated Allocate, permission, Send, Data, channel,
//! ChannelData both ways, expiry, refresh, dual stack over TCP, EVEN-PORT reservation,
//! quotas, error paths, reload, drain).

use std::net::SocketAddr;

use tarn::proto::{Class, Family, MessageWriter, Method, TransactionId, attr, encode_channel_data};

use crate::codec::KEY;
use crate::core::{Action, AttrSpec, Payload, PeerSpec, Request, Scenario, cred, flags};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

const TID: TransactionId = TransactionId(*b"tarn-fuzz-01");

fn message(
    class: Class,
    method: Method,
    body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), tarn::proto::EncodeError>,
) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut w = MessageWriter::new(&mut buf, class, method, TID).expect("header");
    body(&mut w).expect("seed encodes");
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn creds(w: &mut MessageWriter<'_>) -> Result<(), tarn::proto::EncodeError> {
    w.attr(attr::USERNAME, b"1900086400:alice")?;
    w.attr(attr::REALM, b"fuzz.example")?;
    w.attr(attr::NONCE, b"AAAAAHEk8sBAx2TfEUu7mO_hmZ3t3ExA")?;
    w.message_integrity(KEY)
}

/// Seeds for the `codec` target: (file name, bytes).
pub fn codec() -> Vec<(&'static str, Vec<u8>)> {
    let v4: SocketAddr = "8.8.4.4:5000".parse().expect("literal");
    let v6: SocketAddr = "[2001:4860:4860::8888]:3478".parse().expect("literal");
    let mut seeds = vec![
        (
            "rfc5769-2.1-request",
            hex(
                "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf",
            ),
        ),
        (
            "rfc5769-2.2-ipv4-response",
            hex(
                "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000080001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96",
            ),
        ),
        (
            "rfc5769-2.3-ipv6-response",
            hex(
                "010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d900080014a382954e4be67bf11784c97c8292c275bfe3ed4180280004c8fb0b4c",
            ),
        ),
        (
            "rfc5769-2.4-long-term",
            hex(
                "000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383aae38383e382afe382b900000015001c662f2f3439396b39353464364f4c33346f4c394653547679363473410014000b6578616d706c652e6f72670000080014f67024656dd64a3e02b8e0712e85c9a28ca89666",
            ),
        ),
        (
            "rfc8489-b1-sha256",
            hex(
                "000100902112a44278ad3433c6ad72c029da412e001e00204a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704001500296f624d61744a6f733241414143662f2f3439396b39353464364f4c33346f4c394653547679363473410000000014000b6578616d706c652e6f726700001d000400020000001c0020b5c7bf005b6c52a21c51c5e892f81924136296cb927c43149309278cc6518e65",
            ),
        ),
    ];
    seeds.push((
        "binding-request-fingerprint",
        message(Class::Request, Method::BINDING, |w| w.fingerprint()),
    ));
    seeds.push((
        "allocate-authenticated",
        message(Class::Request, Method::ALLOCATE, |w| {
            w.requested_transport(attr::PROTO_UDP)?;
            w.u32_attr(attr::LIFETIME, 600)?;
            w.attr(attr::EVEN_PORT, &[0x80])?;
            w.address_family(attr::REQUESTED_ADDRESS_FAMILY, Family::V4)?;
            w.attr(attr::DONT_FRAGMENT, &[])?;
            creds(w)?;
            w.message_integrity_sha256(KEY)?;
            w.fingerprint()
        }),
    ));
    seeds.push((
        "create-permission",
        message(Class::Request, Method::CREATE_PERMISSION, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, v4)?;
            w.xor_address(attr::XOR_PEER_ADDRESS, v6)?;
            creds(w)
        }),
    ));
    seeds.push((
        "channel-bind",
        message(Class::Request, Method::CHANNEL_BIND, |w| {
            w.channel_number(0x4001)?;
            w.xor_address(attr::XOR_PEER_ADDRESS, v4)?;
            creds(w)?;
            w.fingerprint()
        }),
    ));
    seeds.push((
        "send-indication",
        message(Class::Indication, Method::SEND, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, v6)?;
            w.attr(attr::DONT_FRAGMENT, &[])?;
            w.attr(attr::DATA, b"hello, peer")
        }),
    ));
    seeds.push((
        "data-indication",
        message(Class::Indication, Method::DATA, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, v4)?;
            w.attr(attr::DATA, b"hello, client")
        }),
    ));
    seeds.push((
        "error-401",
        message(Class::Error, Method::ALLOCATE, |w| {
            w.error_code(401, "Unauthorized")?;
            w.attr(attr::REALM, b"fuzz.example")?;
            w.attr(attr::NONCE, b"AAAAAHEk8sBAx2TfEUu7mO_hmZ3t3ExA")
        }),
    ));
    seeds.push((
        "error-420",
        message(Class::Error, Method::BINDING, |w| {
            w.error_code(420, "Unknown Attribute")?;
            w.unknown_attributes(&[0x7001, 0x0031])?;
            w.fingerprint()
        }),
    ));
    seeds.push((
        "allocate-success",
        message(Class::Success, Method::ALLOCATE, |w| {
            w.xor_address(
                attr::XOR_RELAYED_ADDRESS,
                "93.184.216.34:50000".parse().expect("literal"),
            )?;
            w.xor_address(
                attr::XOR_RELAYED_ADDRESS,
                "[2606:2800:220:1::10]:50001".parse().expect("literal"),
            )?;
            w.u32_attr(attr::LIFETIME, 600)?;
            w.attr(attr::RESERVATION_TOKEN, b"tokentok")?;
            w.address_error_code(Family::V6, 440, "Address Family not Supported")?;
            w.xor_address(
                attr::XOR_MAPPED_ADDRESS,
                "198.51.100.7:40000".parse().expect("literal"),
            )?;
            w.message_integrity(KEY)?;
            w.fingerprint()
        }),
    ));
    seeds.push((
        "misc-attributes",
        message(Class::Request, Method::BINDING, |w| {
            w.attr(attr::PASSWORD_ALGORITHMS, &[0, 2, 0, 0, 0, 1, 0, 0])?;
            w.attr(attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0])?;
            w.attr(attr::USERHASH, &[0x11; 32])?;
            w.address(attr::ALTERNATE_SERVER, v6)?;
            w.address(attr::MAPPED_ADDRESS, v4)?;
            w.attr(attr::ICE_CONTROLLING, &[1, 2, 3, 4, 5, 6, 7, 8])?;
            w.u32_attr(attr::PRIORITY, 0x6e0001ff)?;
            w.attr(attr::USE_CANDIDATE, &[])?;
            w.attr(attr::CHANNEL_NUMBER, &[0x4f, 0xff, 0, 0])?;
            w.attr_padded(attr::SOFTWARE, b"tarn fuzz", b' ')
        }),
    ));
    let mut cd = vec![0u8; 64];
    let n = encode_channel_data(&mut cd, 0x4000, b"hello", false).expect("encodes");
    seeds.push(("channeldata-unpadded", cd[..n].to_vec()));
    let n = encode_channel_data(&mut cd, 0x4FFF, b"hello", true).expect("encodes");
    seeds.push(("channeldata-padded", cd[..n].to_vec()));
    let mut stream = message(Class::Request, Method::BINDING, |w| w.fingerprint());
    stream.extend_from_slice(&cd[..n]);
    stream.extend(message(Class::Indication, Method::SEND, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, v4)?;
        w.attr(attr::DATA, b"x")
    }));
    seeds.push(("tcp-stream-frames", stream));
    seeds
}

fn req(ft: u8, method: Method, cred: u8, flags: u8, attrs: Vec<AttrSpec>) -> Action {
    let method = crate::core::METHODS
        .iter()
        .position(|m| *m == method)
        .expect("method in the table") as u8;
    Action::Request(Request {
        ft,
        method,
        cred,
        flags,
        attrs,
        mutate: (0, 0),
    })
}

fn bytes(b: &[u8]) -> Payload {
    Payload::Bytes(b.to_vec())
}

/// `cred` byte for `kind` as user `user`.
fn as_user(kind: u8, user: u8) -> u8 {
    kind | (user << 3)
}

/// Seeds for the `core` target: (file name, scenario).
pub fn core() -> Vec<(&'static str, Scenario)> {
    use AttrSpec as A;
    use Method as M;
    let peer0 = || A::Peer(PeerSpec::Fixed(0));
    let good = cred::GOOD;
    vec![
        (
            "udp-relay-flow",
            Scenario {
                config: 0,
                limits: 0,
                actions: vec![
                    req(0, M::BINDING, cred::NONE, 0, vec![]),
                    req(0, M::ALLOCATE, cred::NONE, 0, vec![]),
                    req(0, M::ALLOCATE, cred::CHALLENGE_NONCE, 0, vec![]),
                    req(0, M::CREATE_PERMISSION, good, 0, vec![peer0()]),
                    Action::Send {
                        ft: 0,
                        peer: PeerSpec::Fixed(0),
                        data: bytes(b"hello"),
                        flags: 0,
                    },
                    Action::Peer {
                        alloc: 0,
                        peer: PeerSpec::Fixed(0),
                        data: bytes(b"world"),
                        room: 0,
                    },
                    req(0, M::CHANNEL_BIND, good, 0, vec![A::Channel(0), peer0()]),
                    Action::ChannelData {
                        ft: 0,
                        channel: 0,
                        data: bytes(b"abc"),
                        trailing: 0,
                    },
                    Action::Peer {
                        alloc: 0,
                        peer: PeerSpec::Fixed(14),
                        data: bytes(b"other port"),
                        room: 0,
                    },
                    Action::Peer {
                        alloc: 0,
                        peer: PeerSpec::Fixed(0),
                        data: bytes(b"xyz"),
                        room: 0,
                    },
                    Action::Advance { secs: 301 },
                    Action::Peer {
                        alloc: 0,
                        peer: PeerSpec::Fixed(0),
                        data: bytes(b"late"),
                        room: 0,
                    },
                    req(0, M::REFRESH, good, 0, vec![A::Lifetime(5)]),
                    req(0, M::REFRESH, good, 0, vec![A::Lifetime(0)]),
                ],
            },
        ),
        (
            "tcp-dual-stack",
            Scenario {
                config: 0,
                limits: 0,
                actions: vec![
                    req(
                        2,
                        M::ALLOCATE,
                        good,
                        flags::FINGERPRINT,
                        vec![A::AdditionalFamily(1)],
                    ),
                    req(
                        2,
                        M::CREATE_PERMISSION,
                        good,
                        flags::FINGERPRINT,
                        vec![
                            A::Peer(PeerSpec::Fixed(2)),
                            peer0(),
                            A::Peer(PeerSpec::Fixed(3)),
                        ],
                    ),
                    req(
                        2,
                        M::CHANNEL_BIND,
                        good,
                        0,
                        vec![A::Channel(5), A::Peer(PeerSpec::Fixed(2))],
                    ),
                    Action::Peer {
                        alloc: 0,
                        peer: PeerSpec::Fixed(2),
                        data: bytes(b"12345"),
                        room: 0,
                    },
                    Action::Peer {
                        alloc: 0,
                        peer: PeerSpec::Fixed(3),
                        data: bytes(b"12345"),
                        room: 0,
                    },
                    Action::Send {
                        ft: 2,
                        peer: PeerSpec::Fixed(3),
                        data: Payload::Repeat { byte: 7, len: 1200 },
                        flags: 1,
                    },
                    Action::ChannelData {
                        ft: 2,
                        channel: 5,
                        data: bytes(b"to v6"),
                        trailing: 3,
                    },
                    req(
                        3,
                        M::ALLOCATE,
                        as_user(good, 1),
                        0,
                        vec![A::RequestedFamily(1)],
                    ),
                    Action::Close { ft: 2 },
                ],
            },
        ),
        (
            "even-port-reservation",
            Scenario {
                config: 0,
                limits: 0,
                actions: vec![
                    req(0, M::ALLOCATE, good, 0, vec![A::EvenPort(0x80)]),
                    req(1, M::ALLOCATE, as_user(good, 1), 0, vec![A::Token(0)]),
                    req(2, M::ALLOCATE, as_user(good, 2), 0, vec![A::EvenPort(0)]),
                    req(
                        3,
                        M::ALLOCATE,
                        as_user(good, 2),
                        0,
                        vec![A::TokenRaw(*b"nosuchtk")],
                    ),
                    Action::Advance { secs: 31 },
                    Action::Timeout,
                ],
            },
        ),
        (
            "quota-and-errors",
            Scenario {
                config: 0x02 | 0x04,
                limits: 0x10 | 0x20,
                actions: vec![
                    req(0, M::ALLOCATE, good, 0, vec![]),
                    req(1, M::ALLOCATE, good, 0, vec![]),
                    req(2, M::ALLOCATE, as_user(good, 1), 0, vec![]),
                    req(3, M::ALLOCATE, as_user(good, 2), 0, vec![]),
                    req(1, M::ALLOCATE, cred::WRONG_SECRET, 0, vec![]),
                    req(1, M::ALLOCATE, cred::EXPIRED, 0, vec![]),
                    req(1, M::ALLOCATE, cred::STALE_NONCE, 0, vec![]),
                    req(1, M::ALLOCATE, cred::OTHER_TUPLE_NONCE, 0, vec![]),
                    req(
                        1,
                        M::ALLOCATE,
                        cred::OLD_SECRET,
                        flags::NO_AUTO_TRANSPORT,
                        vec![A::Transport(6)],
                    ),
                    req(
                        0,
                        M::CREATE_PERMISSION,
                        good,
                        0,
                        vec![A::Peer(PeerSpec::Fixed(4))],
                    ),
                    req(
                        0,
                        M::CREATE_PERMISSION,
                        good,
                        0,
                        vec![A::Peer(PeerSpec::Fixed(6))],
                    ),
                    req(
                        0,
                        M::CREATE_PERMISSION,
                        good,
                        0,
                        vec![A::Peer(PeerSpec::Fixed(7))],
                    ),
                    req(
                        0,
                        M::CREATE_PERMISSION,
                        good,
                        0,
                        vec![A::Peer(PeerSpec::Fixed(9))],
                    ),
                    req(
                        0,
                        M::CHANNEL_BIND,
                        good,
                        0,
                        vec![
                            A::Raw {
                                typ: attr::CHANNEL_NUMBER,
                                value: vec![0x3f, 0xff, 0, 0],
                            },
                            peer0(),
                        ],
                    ),
                    req(
                        0,
                        M::BINDING,
                        cred::NONE,
                        0,
                        vec![A::Raw {
                            typ: 0x7001,
                            value: vec![],
                        }],
                    ),
                    req(0, M::REFRESH, as_user(good, 1), 0, vec![]),
                    Action::Raw {
                        ft: 0,
                        bytes: vec![0x16, 0xfe, 0xfd, 0, 0, 0, 0],
                    },
                    Action::Raw {
                        ft: 0,
                        bytes: vec![0x40, 0x00, 0x00, 0x10, 1, 2],
                    },
                ],
            },
        ),
        (
            "timers-reload-drain",
            Scenario {
                config: 0x40,
                limits: 0,
                actions: vec![
                    req(0, M::ALLOCATE, good, 0, vec![A::Lifetime(1800)]),
                    req(
                        0,
                        M::CREATE_PERMISSION,
                        good,
                        0,
                        vec![A::Peer(PeerSpec::Fixed(4)), peer0()],
                    ),
                    req(
                        0,
                        M::CHANNEL_BIND,
                        good,
                        0,
                        vec![A::Channel(1), A::Peer(PeerSpec::Fixed(4))],
                    ),
                    req(0, M::CHANNEL_BIND, good, 0, vec![A::Channel(1), peer0()]),
                    Action::Advance { secs: 299 },
                    Action::ChannelData {
                        ft: 0,
                        channel: 1,
                        data: bytes(b"still"),
                        trailing: 0,
                    },
                    Action::Advance { secs: 2 },
                    Action::Timeout,
                    Action::ChannelData {
                        ft: 0,
                        channel: 1,
                        data: bytes(b"expired"),
                        trailing: 0,
                    },
                    req(
                        0,
                        M::CREATE_PERMISSION,
                        good,
                        0,
                        vec![A::Peer(PeerSpec::Fixed(4))],
                    ),
                    Action::Reload {
                        config: 0,
                        limits: 0,
                    },
                    Action::Peer {
                        alloc: 0,
                        peer: PeerSpec::Fixed(4),
                        data: bytes(b"private"),
                        room: 0,
                    },
                    Action::Drain,
                    req(1, M::ALLOCATE, good, 0, vec![]),
                    Action::Drain,
                    req(0, M::REFRESH, good, 0, vec![A::Lifetime(7)]),
                    Action::Advance { secs: 3601 },
                ],
            },
        ),
        (
            "retransmit-and-mutate",
            Scenario {
                config: 0,
                limits: 1,
                actions: vec![
                    req(0, M::ALLOCATE, good, flags::FINGERPRINT, vec![]),
                    req(
                        0,
                        M::ALLOCATE,
                        good,
                        flags::FINGERPRINT | flags::RETRANSMIT,
                        vec![],
                    ),
                    Action::Request(Request {
                        ft: 0,
                        method: 3,
                        cred: good,
                        flags: flags::MUTATE,
                        attrs: vec![peer0()],
                        mutate: (30, 0x01),
                    }),
                    req(
                        0,
                        M::CREATE_PERMISSION,
                        good,
                        0,
                        vec![peer0(), A::Peer(PeerSpec::Fixed(2))],
                    ),
                    req(
                        0,
                        M::SEND,
                        cred::NONE,
                        flags::INDICATION,
                        vec![peer0(), A::Data(bytes(b"x"))],
                    ),
                    Action::Send {
                        ft: 0,
                        peer: PeerSpec::V4([8, 8, 4, 4], 7),
                        data: bytes(b"raw"),
                        flags: 0,
                    },
                    Action::Peer {
                        alloc: 0,
                        peer: PeerSpec::Fixed(0),
                        data: Payload::Repeat {
                            byte: 0,
                            len: 0xFFBF,
                        },
                        room: 0,
                    },
                    Action::Peer {
                        alloc: 0,
                        peer: PeerSpec::Fixed(0),
                        data: bytes(b"edge"),
                        room: 0x85,
                    },
                ],
            },
        ),
    ]
}
