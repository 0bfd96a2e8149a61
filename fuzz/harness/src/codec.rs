//! The `codec` target: everything in `tarn::proto` on one arbitrary buffer.
//!
//! Besides "never panics", each step checks a property that a wrong decoder or
//! encoder would break:
//! - `sniff` agrees with `Message::parse` and `parse_channel_data`;
//! - the attributes of a parsed message tile its body, `visible_attributes` and
//!   `get` follow RFC 8489 14.5-14.7 (checked against a declarative model);
//! - every typed decoder that accepts a value re-encodes it to the same bytes
//!   (reserved bits aside);
//! - copying the attributes into a `MessageWriter` gives a message that parses to
//!   the same attributes and to the same bytes once padding is zeroed;
//! - the same attributes signed with MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and
//!   FINGERPRINT verify with the key and fail with another one;
//! - ChannelData re-encodes to the same frame; stream framing agrees with the
//!   message and ChannelData parsers and is stable under truncation.

use std::net::SocketAddr;

use tarn::auth::{self, NonceKey};
use tarn::policy::{OwnAddresses, PeerPolicy};
use tarn::proto::attr::{self, AttrError};
use tarn::proto::integrity::{self, IntegrityError};
use tarn::proto::stream::{self, Frame, FrameError};
use tarn::proto::{
    self, CHANNEL_DATA_HEADER_LEN, Class, EncodeError, Family, HEADER_LEN, Kind, MAGIC_COOKIE,
    MAX_MESSAGE_LEN, Message, MessageWriter, ParseError, RawAttr, TransactionId,
};

/// The fixed key integrity is checked with: the RFC 5769 short-term password, so the
/// RFC vectors in the seed corpus verify and reach the success branches.
pub const KEY: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const OTHER_KEY: &[u8] = b"not-the-key";

/// Runs every codec check on `data`. Panics (with a message naming the property)
/// when a property fails.
pub fn run(data: &[u8]) {
    check_sniff(data);
    check_stun(data);
    check_channel_data(data);
    check_stream(data);
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn check_sniff(data: &[u8]) {
    let kind = proto::sniff(data);
    let stun =
        data.len() >= HEADER_LEN && data[0] >> 6 == 0 && data[4..8] == MAGIC_COOKIE.to_be_bytes();
    // ChannelData is told by its first byte alone: 01 in the top bits and a first
    // byte within the bindable range (whatever range the crate settles on).
    let channel = data
        .first()
        .is_some_and(|b| b >> 6 == 0b01 && proto::is_valid_channel(u16::from_be_bytes([*b, 0])));
    let expect = if stun {
        Kind::Stun
    } else if channel {
        Kind::ChannelData
    } else {
        Kind::Other
    };
    assert_eq!(kind, expect, "sniff disagrees with the header bytes");
}

fn check_stun(data: &[u8]) {
    let msg = match Message::parse(data) {
        Ok(m) => m,
        Err(e) => {
            // An error is only allowed for a reason the header or the TLVs show.
            if data.len() >= HEADER_LEN
                && data[0] >> 6 == 0
                && data[4..8] == MAGIC_COOKIE.to_be_bytes()
            {
                let len = usize::from(be16(data, 2));
                if len % 4 == 0 && HEADER_LEN + len <= data.len() {
                    assert_eq!(
                        e,
                        ParseError::BadAttribute,
                        "parse error on a well-framed message"
                    );
                }
            }
            return;
        }
    };
    assert_eq!(
        proto::sniff(data),
        Kind::Stun,
        "parsed STUN that sniff does not call STUN"
    );
    let raw = msg.raw();
    assert_eq!(
        raw,
        &data[..raw.len()],
        "raw() is not a prefix of the input"
    );
    assert_eq!(
        raw.len(),
        HEADER_LEN + usize::from(be16(data, 2)),
        "raw() length"
    );
    assert_eq!(
        proto::message_type(msg.class(), msg.method()),
        be16(data, 0),
        "class/method do not rebuild the type field"
    );
    let tid = msg.transaction_id();
    assert_eq!(&tid.0[..], &data[8..20], "transaction id");

    // Attributes tile the body exactly, in order.
    let attrs: Vec<RawAttr<'_>> = msg.attributes().collect();
    let mut pos = HEADER_LEN;
    for a in &attrs {
        assert_eq!(a.offset, pos, "attribute offset");
        assert_eq!(a.typ, be16(raw, pos), "attribute type");
        let len = usize::from(be16(raw, pos + 2));
        assert_eq!(a.value.len(), len, "attribute length");
        assert_eq!(a.value, &raw[pos + 4..pos + 4 + len], "attribute value");
        assert_eq!(a.end(), pos + 4 + pad4(len), "attribute end");
        pos = a.end();
    }
    assert_eq!(pos, raw.len(), "attributes do not tile the body");

    check_visibility(&msg, &attrs);
    for a in &attrs {
        check_decoders(a, &tid);
    }
    check_integrity(&msg);
    check_reencode(&msg, &attrs);
    check_resign(&msg, &attrs);
}

/// RFC 8489 14.5-14.7, stated per attribute: visible unless a FINGERPRINT precedes it,
/// only MI-SHA256/FINGERPRINT after a MESSAGE-INTEGRITY, only FINGERPRINT after a
/// MESSAGE-INTEGRITY-SHA256.
fn check_visibility(msg: &Message<'_>, attrs: &[RawAttr<'_>]) {
    use attr::{FINGERPRINT, MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256};
    let expected: Vec<RawAttr<'_>> = attrs
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            let before = &attrs[..*i];
            let seen = |t: u16| before.iter().any(|b| b.typ == t);
            if seen(FINGERPRINT) {
                return false;
            }
            if seen(MESSAGE_INTEGRITY_SHA256) {
                return a.typ == FINGERPRINT;
            }
            if seen(MESSAGE_INTEGRITY) {
                return a.typ == FINGERPRINT || a.typ == MESSAGE_INTEGRITY_SHA256;
            }
            true
        })
        .map(|(_, a)| *a)
        .collect();
    let visible: Vec<RawAttr<'_>> = msg.visible_attributes().collect();
    assert_eq!(visible, expected, "visible_attributes");
    let mut types: Vec<u16> = attrs.iter().map(|a| a.typ).collect();
    types.extend([
        attr::USERNAME,
        attr::REALM,
        attr::NONCE,
        MESSAGE_INTEGRITY,
        FINGERPRINT,
    ]);
    for t in types {
        assert_eq!(
            msg.get(t),
            expected.iter().find(|a| a.typ == t).copied(),
            "get({t:#06x})"
        );
    }
    let known = [
        attr::USERNAME,
        attr::REALM,
        attr::NONCE,
        MESSAGE_INTEGRITY,
        attr::DATA,
    ];
    let mut out = [0u16; 8];
    let n = msg.unknown_comprehension_required(&known, &mut out);
    assert!(n <= out.len());
    let listed = &out[..n];
    for (i, t) in listed.iter().enumerate() {
        assert!(
            attr::is_comprehension_required(*t),
            "420 lists an optional attribute"
        );
        assert!(!known.contains(t), "420 lists a known attribute");
        assert!(!listed[..i].contains(t), "420 lists an attribute twice");
        assert!(
            expected.iter().any(|a| a.typ == *t),
            "420 lists an invisible attribute"
        );
    }
    let distinct_unknown = {
        let mut v: Vec<u16> = expected
            .iter()
            .map(|a| a.typ)
            .filter(|t| attr::is_comprehension_required(*t) && !known.contains(t))
            .collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    assert_eq!(n, distinct_unknown.min(8), "420 count");
}

/// Every typed decoder on every value; whatever decodes must re-encode to the same bytes.
fn check_decoders(a: &RawAttr<'_>, tid: &TransactionId) {
    let v = a.value;
    let mut buf = vec![0u8; v.len() + 32];
    let policy = PeerPolicy::new(Vec::new(), false, OwnAddresses::default());

    let family_ok = |addr: &SocketAddr| match addr {
        SocketAddr::V4(_) => v.len() == 8 && v[1] == 0x01,
        SocketAddr::V6(_) => v.len() == 20 && v[1] == 0x02,
    };
    match attr::decode_xor_address(v, tid) {
        Ok(addr) => {
            assert!(family_ok(&addr), "xor address length/family");
            let n = attr::encode_xor_address(&mut buf, addr, tid).expect("encode xor address");
            assert_eq!(n, v.len());
            assert_eq!(&buf[1..n], &v[1..], "xor address round trip");
            let _ = policy.classify(addr);
        }
        Err(e) => assert!(matches!(e, AttrError::BadLength | AttrError::BadFamily)),
    }
    if let Ok(addr) = attr::decode_address(v) {
        assert!(family_ok(&addr), "address length/family");
        let n = attr::encode_address(&mut buf, addr).expect("encode address");
        assert_eq!(&buf[1..n], &v[1..], "address round trip");
        let _ = policy.classify(addr);
    }
    match attr::decode_u32(v) {
        Ok(x) => assert_eq!(&x.to_be_bytes()[..], v),
        Err(e) => assert_eq!((e, v.len() == 4), (AttrError::BadLength, false)),
    }
    match attr::decode_u64(v) {
        Ok(x) => assert_eq!(&x.to_be_bytes()[..], v),
        Err(_) => assert_ne!(v.len(), 8),
    }
    if let Ok(ch) = attr::decode_channel_number(v) {
        assert_eq!((v.len(), ch), (4, be16(v, 0)), "CHANNEL-NUMBER");
    }
    if let Ok(p) = attr::decode_requested_transport(v) {
        assert_eq!((v.len(), p), (4, v[0]), "REQUESTED-TRANSPORT");
    }
    if let Ok(f) = attr::decode_address_family(v) {
        assert_eq!(v.len(), 4);
        assert_eq!(f, Family::from_wire(v[0]).ok_or(v[0]), "address family");
    }
    if let Ok(r) = attr::decode_even_port(v) {
        assert_eq!((v.len(), r), (1, v[0] & 0x80 != 0), "EVEN-PORT");
    }
    match attr::decode_reservation_token(v) {
        Ok(t) => assert_eq!(&t[..], v),
        Err(_) => assert_ne!(v.len(), 8),
    }
    if let Ok((code, reason)) = attr::decode_error_code(v) {
        assert!((300..=699).contains(&code), "ERROR-CODE class");
        let n = attr::encode_error_code(&mut buf, code, reason).expect("encode ERROR-CODE");
        assert_eq!(n, v.len());
        assert_eq!(
            (buf[2], buf[3]),
            (v[2] & 0x07, v[3]),
            "ERROR-CODE round trip"
        );
        assert_eq!(&buf[4..n], &v[4..], "ERROR-CODE reason");
    }
    if let Ok((family, code, reason)) = attr::decode_address_error_code(v) {
        assert!((300..=699).contains(&code), "ADDRESS-ERROR-CODE class");
        assert_eq!(family, Family::from_wire(v[0]).ok_or(v[0]));
        if let Ok(f) = family {
            let n = attr::encode_address_error_code(&mut buf, f, code, reason)
                .expect("encode ADDRESS-ERROR-CODE");
            assert_eq!(n, v.len());
            assert_eq!((buf[0], buf[2], buf[3]), (v[0], v[2] & 0x07, v[3]));
            assert_eq!(&buf[4..n], &v[4..]);
        }
    }
    for max in [0, attr::MAX_USERNAME_LEN, attr::MAX_REALM_LEN, usize::MAX] {
        match attr::decode_text(v, max) {
            Ok(s) => assert_eq!(s.as_bytes(), v),
            Err(AttrError::TooLong) => assert!(v.len() > max),
            Err(AttrError::BadUtf8) => assert!(v.len() <= max && std::str::from_utf8(v).is_err()),
            Err(e) => panic!("decode_text: unexpected {e:?}"),
        }
    }
    match attr::decode_unknown_attributes(v) {
        Ok(it) => {
            let types: Vec<u16> = it.collect();
            assert_eq!(types.len() * 2, v.len());
            let n = attr::encode_unknown_attributes(&mut buf, &types).expect("encode");
            assert_eq!(&buf[..n], v, "UNKNOWN-ATTRIBUTES round trip");
        }
        Err(_) => assert!(v.len() % 2 == 1),
    }
    if let Ok(it) = attr::decode_password_algorithms(v) {
        let mut off = 0usize;
        for (alg, params) in it {
            assert!(off + 4 <= v.len(), "PASSWORD-ALGORITHMS entry past the end");
            assert_eq!(be16(v, off), alg);
            assert_eq!(usize::from(be16(v, off + 2)), params.len());
            assert_eq!(&v[off + 4..off + 4 + params.len()], params);
            off += 4 + pad4(params.len());
        }
        assert!(
            off >= v.len() && off < v.len() + 4,
            "PASSWORD-ALGORITHMS does not tile"
        );
    }
    if let Ok(name) = attr::decode_text(v, attr::MAX_USERNAME_LEN)
        && let Ok(expiry) = auth::rest_expiry(name)
    {
        assert!(!name.is_empty() && name.as_bytes()[0].is_ascii_digit());
        let _ = auth::check_rest_username(name, expiry);
    }
    if a.typ == attr::NONCE {
        let key = NonceKey::from_bytes([7; 32]);
        let client: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let _ = key.check(v, client, 0, 1_900_000_000);
    }
    let _ = attr::name(a.typ);
}

fn check_integrity(msg: &Message<'_>) {
    let mi = integrity::verify_message_integrity(msg, KEY);
    let mi256 = integrity::verify_message_integrity_sha256(msg, KEY);
    let fp = integrity::verify_fingerprint(msg);
    let has = integrity::has_fingerprint(msg);
    if fp.is_ok() {
        assert!(has, "verified FINGERPRINT but has_fingerprint is false");
    }
    if mi.is_ok() {
        assert_eq!(
            integrity::verify_message_integrity(msg, OTHER_KEY),
            Err(IntegrityError::Mismatch),
            "MESSAGE-INTEGRITY verifies with two keys"
        );
    }
    if mi256.is_ok() {
        assert_eq!(
            integrity::verify_message_integrity_sha256(msg, OTHER_KEY),
            Err(IntegrityError::Mismatch)
        );
    }
    if msg.get(attr::MESSAGE_INTEGRITY).is_none() {
        assert_eq!(mi, Err(IntegrityError::Missing));
    }
    if !msg.attributes().any(|a| a.typ == attr::FINGERPRINT) {
        assert_eq!(fp, Err(IntegrityError::Missing));
        assert!(!has);
    }
}

/// Copies the attributes into a new message: same attributes, same bytes with padding zeroed.
fn check_reencode(msg: &Message<'_>, attrs: &[RawAttr<'_>]) {
    let raw = msg.raw();
    let mut buf = vec![0u8; raw.len()];
    let mut w = MessageWriter::new(&mut buf, msg.class(), msg.method(), msg.transaction_id())
        .expect("header fits");
    for a in attrs {
        w.attr(a.typ, a.value)
            .expect("a parsed attribute re-encodes into the same space");
    }
    let n = w.finish();
    assert_eq!(n, raw.len(), "re-encoded length");
    let mut expect = raw.to_vec();
    for a in attrs {
        let start = a.offset + 4 + a.value.len();
        expect[start..a.end()].fill(0);
    }
    assert_eq!(
        &buf[..n],
        &expect[..],
        "re-encoded bytes differ beyond padding"
    );
    let again = Message::parse(&buf[..n]).expect("re-encoded message parses");
    assert_eq!((again.class(), again.method()), (msg.class(), msg.method()));
    assert_eq!(again.transaction_id(), msg.transaction_id());
    let a1: Vec<(u16, &[u8])> = attrs.iter().map(|a| (a.typ, a.value)).collect();
    let a2: Vec<(u16, &[u8])> = again.attributes().map(|a| (a.typ, a.value)).collect();
    assert_eq!(a1, a2, "re-parsed attributes differ");
    if buf[..n] == *raw {
        assert_eq!(
            integrity::verify_message_integrity(&again, KEY),
            integrity::verify_message_integrity(msg, KEY)
        );
        assert_eq!(
            integrity::verify_fingerprint(&again),
            integrity::verify_fingerprint(msg)
        );
    }

    // The same attributes with non-zero padding decode to the same values too.
    let mut buf2 = vec![0u8; raw.len()];
    let mut w = MessageWriter::new(
        &mut buf2,
        Class::Indication,
        msg.method(),
        msg.transaction_id(),
    )
    .expect("header fits");
    for a in attrs {
        w.attr_padded(a.typ, a.value, 0x20).expect("fits");
    }
    let n = w.finish();
    let padded = Message::parse(&buf2[..n]).expect("space-padded message parses");
    let a3: Vec<(u16, &[u8])> = padded.attributes().map(|a| (a.typ, a.value)).collect();
    assert_eq!(a1, a3, "space-padded attributes differ");
}

/// Signs the non-integrity attributes: all three checks pass with [`KEY`], fail without.
fn check_resign(msg: &Message<'_>, attrs: &[RawAttr<'_>]) {
    use attr::{FINGERPRINT, MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256};
    let kept: Vec<&RawAttr<'_>> = attrs
        .iter()
        .filter(|a| {
            !matches!(
                a.typ,
                MESSAGE_INTEGRITY | MESSAGE_INTEGRITY_SHA256 | FINGERPRINT
            )
        })
        .collect();
    let mut buf = vec![0u8; msg.raw().len() + 24 + 36 + 8];
    let Ok(mut w) = MessageWriter::new(&mut buf, msg.class(), msg.method(), msg.transaction_id())
    else {
        panic!("header fits");
    };
    for a in &kept {
        w.attr(a.typ, a.value).expect("fits");
    }
    let signed = w
        .message_integrity(KEY)
        .and_then(|()| w.message_integrity_sha256(KEY))
        .and_then(|()| w.fingerprint());
    match signed {
        Ok(()) => {}
        // Only a body over 0xFFFC bytes may refuse the trailer.
        Err(EncodeError::ValueTooLong) => return,
        Err(e) => panic!("signing failed: {e:?}"),
    }
    let n = w.finish();
    let m = Message::parse(&buf[..n]).expect("signed message parses");
    assert_eq!(
        integrity::verify_message_integrity(&m, KEY),
        Ok(()),
        "MI of a signed message"
    );
    assert_eq!(
        integrity::verify_message_integrity_sha256(&m, KEY),
        Ok(()),
        "MI-SHA256"
    );
    assert_eq!(
        integrity::verify_fingerprint(&m),
        Ok(()),
        "FINGERPRINT of a signed message"
    );
    assert!(integrity::has_fingerprint(&m));
    assert_eq!(
        integrity::verify_message_integrity(&m, OTHER_KEY),
        Err(IntegrityError::Mismatch)
    );
    for a in &kept {
        let first = kept.iter().find(|b| b.typ == a.typ).map(|b| b.value);
        assert_eq!(m.get(a.typ).map(|b| b.value), first, "get after signing");
    }
    // Flipping any covered byte breaks MESSAGE-INTEGRITY (checked on one byte).
    if n > HEADER_LEN + 28 {
        let mut tampered = buf[..n].to_vec();
        tampered[HEADER_LEN + 4] ^= 0x01;
        if let Ok(t) = Message::parse(&tampered) {
            assert_ne!(
                integrity::verify_message_integrity(&t, KEY),
                Ok(()),
                "tamper undetected"
            );
        }
    }
}

fn check_channel_data(data: &[u8]) {
    match proto::parse_channel_data(data) {
        Ok(cd) => {
            assert_eq!(
                proto::sniff(data),
                Kind::ChannelData,
                "ChannelData that sniff rejects"
            );
            assert!(proto::is_valid_channel(cd.channel));
            assert_eq!(cd.channel, be16(data, 0));
            let len = usize::from(be16(data, 2));
            assert_eq!(cd.data, &data[4..4 + len], "ChannelData payload");
            let mut buf = vec![0u8; len + 8];
            let n =
                proto::encode_channel_data(&mut buf, cd.channel, cd.data, false).expect("encode");
            assert_eq!(&buf[..n], &data[..4 + len], "ChannelData round trip");
            let n =
                proto::encode_channel_data(&mut buf, cd.channel, cd.data, true).expect("encode");
            assert_eq!(n, 4 + pad4(len));
            let again = proto::parse_channel_data(&buf[..n]).expect("padded ChannelData parses");
            assert_eq!(again, cd);
        }
        Err(e) => {
            if data.len() >= 4 && proto::is_valid_channel(be16(data, 0)) {
                assert_eq!(e, ParseError::Truncated);
                assert!(4 + usize::from(be16(data, 2)) > data.len());
            }
        }
    }
}

fn check_stream(data: &[u8]) {
    let parsed = Message::parse(data).ok().map(|m| m.raw().len());
    for max in [0, HEADER_LEN, 64, 1500, 4096, MAX_MESSAGE_LEN, usize::MAX] {
        let peek = stream::peek_frame(data, max);
        let next = stream::next_frame(data, max);
        let expect: Result<Option<Frame>, FrameError> =
            peek.map(|p| p.filter(|f| f.total() <= data.len()));
        assert_eq!(
            next, expect,
            "next_frame is peek_frame filtered by completeness"
        );
        if let Ok(Some(f)) = peek {
            assert!(f.total() <= max, "frame over max_frame");
            match f {
                Frame::Stun(t) => {
                    assert_eq!(t, HEADER_LEN + usize::from(be16(data, 2)));
                    assert_eq!(t % 4, 0);
                }
                Frame::ChannelData { total, data_len } => {
                    assert_eq!(data_len, usize::from(be16(data, 2)));
                    assert_eq!(total, CHANNEL_DATA_HEADER_LEN + pad4(data_len));
                }
            }
        }
        if let Ok(Some(f)) = next {
            assert!(f.total() <= data.len());
            if let Frame::ChannelData { total, data_len } = f {
                let cd =
                    proto::parse_channel_data(&data[..total]).expect("framed ChannelData parses");
                assert_eq!(cd.data.len(), data_len);
            }
        }
        if let Some(len) = parsed
            && len <= max
        {
            assert_eq!(
                next,
                Ok(Some(Frame::Stun(len))),
                "a parsed message is one stream frame"
            );
        }
        // A prefix never contradicts the whole: more bytes only complete a frame.
        for cut in 0..data.len().min(4) {
            match stream::peek_frame(&data[..cut], max) {
                Ok(None) => {}
                other => assert_eq!(other, peek, "peek_frame changes its mind at {cut} bytes"),
            }
        }
    }
    // Walk a stream of back-to-back frames.
    let mut rest = data;
    for _ in 0..64 {
        match stream::next_frame(rest, MAX_MESSAGE_LEN) {
            Ok(Some(f)) => {
                let (frame, tail) = rest.split_at(f.total());
                match f {
                    Frame::Stun(_) => {
                        if let Ok(m) = Message::parse(frame) {
                            assert_eq!(m.raw().len(), frame.len());
                        }
                    }
                    Frame::ChannelData { .. } => {
                        proto::parse_channel_data(frame).expect("framed ChannelData parses");
                    }
                }
                if f.total() == 0 {
                    break;
                }
                rest = tail;
            }
            _ => break,
        }
    }
}
