//! Sans-IO STUN/TURN wire codec (RFC 8489 STUN, RFC 8656 TURN, RFC 6156
//! IPv6 TURN, RFC 6062 TCP allocations' method numbers).
//!
//! This module is hand-written rather than built on the `stun`/`turn`
//! crates: those decode every attribute into an owned copy, while the relay
//! fast path needs zero-copy parsing that borrows attribute values straight
//! from the received datagram, and in-place encoding into a caller-owned
//! buffer (no `Vec`, no heap on the encode or parse path). Everything here is
//! a pure function over byte slices: no sockets, no clocks, no allocation,
//! no `unsafe`, and no panics on arbitrary input.
//!
//! Layout:
//! - [`message`]: [`Message::parse`] and [`MessageWriter`].
//! - [`attr`]: attribute type numbers and typed value decoders/encoders.
//! - [`integrity`]: MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT.
//! - [`channel`]: ChannelData framing.
//! - [`stream`]: frame delimitation on TCP/TLS streams.

pub mod attr;
pub mod channel;
pub mod integrity;
pub mod message;
pub mod stream;

#[cfg(test)]
mod vectors;

use std::net::SocketAddr;

pub use channel::{
    CHANNEL_DATA_HEADER_LEN, ChannelData, encode_channel_data, parse_channel_data,
    write_channel_data_header,
};
pub use message::{AttrIter, EncodeError, Message, MessageWriter, ParseError, RawAttr};

/// The fixed magic cookie found at bytes 4..8 of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Length of the fixed STUN header (type, length, cookie, transaction id).
pub const HEADER_LEN: usize = 20;

/// Largest possible STUN message: header plus a 16-bit body length.
pub const MAX_MESSAGE_LEN: usize = HEADER_LEN + 0xFFFF;

/// First channel number a client may bind (RFC 8656 12).
pub const CHANNEL_MIN: u16 = 0x4000;

/// Last channel number a client may bind. RFC 8656 12 narrowed the range to
/// 0x4000..=0x4FFF, but RFC 5766 clients (coturn's own client among them) pick
/// numbers up to 0x7FFF, and coturn accepts them; rejecting them would break those
/// clients for nothing, since ChannelData is still told apart from STUN (00), and
/// from DTLS/RTP (10, 11) by its first two bits.
pub const CHANNEL_MAX: u16 = 0x7FFF;

/// Whether `ch` lies in the bindable channel range `0x4000..=0x7FFF`.
pub const fn is_valid_channel(ch: u16) -> bool {
    ch >= CHANNEL_MIN && ch <= CHANNEL_MAX
}

/// The 96-bit STUN transaction id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TransactionId(pub [u8; 12]);

/// The class of a STUN message (the C1/C0 bits of the message type).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    /// Request (0b00).
    Request,
    /// Indication (0b01).
    Indication,
    /// Success response (0b10).
    Success,
    /// Error response (0b11).
    Error,
}

impl Class {
    /// The two class bits (C1 C0) as a number 0..=3.
    pub const fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    /// Class from its two bits (only the low two bits of `b` are looked at).
    pub const fn from_bits(b: u16) -> Class {
        match b & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// A 12-bit STUN method number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Method(pub u16);

impl Method {
    /// Binding (RFC 8489).
    pub const BINDING: Method = Method(0x001);
    /// Allocate (RFC 8656).
    pub const ALLOCATE: Method = Method(0x003);
    /// Refresh (RFC 8656).
    pub const REFRESH: Method = Method(0x004);
    /// Send indication (RFC 8656).
    pub const SEND: Method = Method(0x006);
    /// Data indication (RFC 8656).
    pub const DATA: Method = Method(0x007);
    /// CreatePermission (RFC 8656).
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// ChannelBind (RFC 8656).
    pub const CHANNEL_BIND: Method = Method(0x009);
    /// Connect (RFC 6062).
    pub const CONNECT: Method = Method(0x00A);
    /// ConnectionBind (RFC 6062).
    pub const CONNECTION_BIND: Method = Method(0x00B);
    /// ConnectionAttempt (RFC 6062).
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);
}

/// Builds the 14-bit message type field from a class and a method
/// (bits of the method above 12 are dropped).
pub const fn message_type(class: Class, method: Method) -> u16 {
    let m = method.0 & 0x0FFF;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// Splits a message type field into class and method (the top two bits are ignored).
pub const fn split_message_type(t: u16) -> (Class, Method) {
    let m = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let c = ((t >> 4) & 0b01) | ((t >> 7) & 0b10);
    (Class::from_bits(c), Method(m))
}

/// An address family, as carried in STUN address attributes and in
/// REQUESTED-/ADDITIONAL-ADDRESS-FAMILY (RFC 6156 / RFC 8656).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Family {
    /// IPv4 (wire value 0x01).
    V4,
    /// IPv6 (wire value 0x02).
    V6,
}

impl Family {
    /// The family of a socket address (an IPv4-mapped IPv6 address counts as V6).
    pub fn of(addr: &SocketAddr) -> Family {
        match addr {
            SocketAddr::V4(_) => Family::V4,
            SocketAddr::V6(_) => Family::V6,
        }
    }

    /// The wire value of the family byte (0x01 or 0x02).
    pub const fn wire(self) -> u8 {
        match self {
            Family::V4 => 0x01,
            Family::V6 => 0x02,
        }
    }

    /// Family from its wire value, `None` for anything but 0x01/0x02.
    pub const fn from_wire(b: u8) -> Option<Family> {
        match b {
            0x01 => Some(Family::V4),
            0x02 => Some(Family::V6),
            _ => None,
        }
    }
}

/// What a datagram (or the start of a stream frame) looks like, from its first byte(s).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// A STUN message: top two bits 00, at least 20 bytes, magic cookie present.
    Stun,
    /// ChannelData: first two bytes in 0x4000..=0x7FFF.
    ChannelData,
    /// Anything else (reserved channel range, DTLS, RTP, garbage, short STUN).
    Other,
}

/// Classifies a datagram by its first bytes without parsing it.
///
/// Top two bits 00 -> [`Kind::Stun`] when the buffer holds at least a header
/// and the magic cookie matches, else [`Kind::Other`]; a first byte in
/// 0x40..=0x7F -> [`Kind::ChannelData`]; everything else -> [`Kind::Other`].
pub fn sniff(buf: &[u8]) -> Kind {
    let Some(&first) = buf.first() else {
        return Kind::Other;
    };
    match first >> 6 {
        0b00 => match buf.get(4..8) {
            Some(c) if buf.len() >= HEADER_LEN && c == MAGIC_COOKIE.to_be_bytes() => Kind::Stun,
            _ => Kind::Other,
        },
        0b01 => Kind::ChannelData,
        _ => Kind::Other,
    }
}

/// Reads a big-endian u16 at `at`, `None` if out of bounds.
pub(crate) fn be16(buf: &[u8], at: usize) -> Option<u16> {
    match buf.get(at..at.checked_add(2)?) {
        Some(&[a, b]) => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

/// Rounds `n` up to a multiple of 4 (saturating).
pub(crate) const fn pad4(n: usize) -> usize {
    match n.checked_add(3) {
        Some(v) => v & !3,
        None => usize::MAX & !3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn message_type_known_values() {
        assert_eq!(message_type(Class::Request, Method::BINDING), 0x0001);
        assert_eq!(message_type(Class::Success, Method::BINDING), 0x0101);
        assert_eq!(message_type(Class::Error, Method::BINDING), 0x0111);
        assert_eq!(message_type(Class::Indication, Method::BINDING), 0x0011);
        assert_eq!(message_type(Class::Request, Method::ALLOCATE), 0x0003);
        assert_eq!(message_type(Class::Error, Method::ALLOCATE), 0x0113);
        assert_eq!(message_type(Class::Indication, Method::SEND), 0x0016);
        assert_eq!(message_type(Class::Indication, Method::DATA), 0x0017);
        assert_eq!(message_type(Class::Success, Method::CHANNEL_BIND), 0x0109);
        assert_eq!(split_message_type(0x0113), (Class::Error, Method::ALLOCATE));
    }

    #[test]
    fn sniff_kinds() {
        let mut stun = [0u8; 20];
        stun[1] = 1;
        stun[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert_eq!(sniff(&stun), Kind::Stun);
        assert_eq!(sniff(&stun[..19]), Kind::Other);
        stun[4] = 0;
        assert_eq!(sniff(&stun), Kind::Other);
        assert_eq!(sniff(&[0x40, 0x00, 0, 0]), Kind::ChannelData);
        assert_eq!(sniff(&[0x4F, 0xFF]), Kind::ChannelData);
        assert_eq!(sniff(&[0x50, 0x00, 0, 0]), Kind::ChannelData);
        assert_eq!(sniff(&[0x7F, 0xFF, 0, 0]), Kind::ChannelData);
        assert_eq!(sniff(&[0x80, 0, 0, 0]), Kind::Other);
        assert_eq!(sniff(&[0x16, 0xfe, 0xfd]), Kind::Other);
        assert_eq!(sniff(&[]), Kind::Other);
    }

    #[test]
    fn family_of() {
        let v4: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        assert_eq!(Family::of(&v4), Family::V4);
        assert_eq!(Family::of(&v6), Family::V6);
        assert_eq!(Family::from_wire(Family::V6.wire()), Some(Family::V6));
        assert_eq!(Family::from_wire(3), None);
    }

    proptest! {
        #[test]
        fn message_type_round_trip(c in 0u16..4, m in 0u16..0x1000) {
            let class = Class::from_bits(c);
            let t = message_type(class, Method(m));
            prop_assert_eq!(t & 0xC000, 0);
            prop_assert_eq!(split_message_type(t), (class, Method(m)));
        }

        #[test]
        fn sniff_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = sniff(&buf);
        }
    }
}
