//! Attribute type numbers and typed, zero-copy value decoders/encoders.
//!
//! Decoders take the attribute *value* (without its 4-byte header and
//! without padding, i.e. [`RawAttr::value`](super::RawAttr)) and never panic.
//! Encoders write a value into a caller-provided slice and return its length.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::{EncodeError, Family, MAGIC_COOKIE, TransactionId};

/// MAPPED-ADDRESS (RFC 8489).
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// USERNAME (RFC 8489).
pub const USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY, HMAC-SHA1 (RFC 8489).
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// ERROR-CODE (RFC 8489).
pub const ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES (RFC 8489).
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// CHANNEL-NUMBER (RFC 8656).
pub const CHANNEL_NUMBER: u16 = 0x000C;
/// LIFETIME (RFC 8656).
pub const LIFETIME: u16 = 0x000D;
/// XOR-PEER-ADDRESS (RFC 8656).
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
/// DATA (RFC 8656).
pub const DATA: u16 = 0x0013;
/// REALM (RFC 8489).
pub const REALM: u16 = 0x0014;
/// NONCE (RFC 8489).
pub const NONCE: u16 = 0x0015;
/// XOR-RELAYED-ADDRESS (RFC 8656).
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// REQUESTED-ADDRESS-FAMILY (RFC 8656 / RFC 6156).
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
/// EVEN-PORT (RFC 8656).
pub const EVEN_PORT: u16 = 0x0018;
/// REQUESTED-TRANSPORT (RFC 8656).
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
/// DONT-FRAGMENT (RFC 8656).
pub const DONT_FRAGMENT: u16 = 0x001A;
/// ACCESS-TOKEN (RFC 7635).
pub const ACCESS_TOKEN: u16 = 0x001B;
/// MESSAGE-INTEGRITY-SHA256 (RFC 8489).
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// PASSWORD-ALGORITHM (RFC 8489).
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
/// USERHASH (RFC 8489).
pub const USERHASH: u16 = 0x001E;
/// XOR-MAPPED-ADDRESS (RFC 8489).
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// RESERVATION-TOKEN (RFC 8656).
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// PRIORITY (RFC 8445, ICE).
pub const PRIORITY: u16 = 0x0024;
/// USE-CANDIDATE (RFC 8445, ICE).
pub const USE_CANDIDATE: u16 = 0x0025;
/// PADDING (RFC 5780).
pub const PADDING: u16 = 0x0026;
/// RESPONSE-PORT (RFC 5780).
pub const RESPONSE_PORT: u16 = 0x0027;
/// CONNECTION-ID (RFC 6062).
pub const CONNECTION_ID: u16 = 0x002A;
/// ADDITIONAL-ADDRESS-FAMILY (RFC 8656).
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
/// ADDRESS-ERROR-CODE (RFC 8656).
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
/// PASSWORD-ALGORITHMS (RFC 8489).
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
/// ALTERNATE-DOMAIN (RFC 8489).
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
/// ICMP (RFC 8656).
pub const ICMP: u16 = 0x8004;
/// SOFTWARE (RFC 8489).
pub const SOFTWARE: u16 = 0x8022;
/// ALTERNATE-SERVER (RFC 8489).
pub const ALTERNATE_SERVER: u16 = 0x8023;
/// TRANSACTION_TRANSMIT_COUNTER (RFC 7982).
pub const TRANSACTION_TRANSMIT_COUNTER: u16 = 0x8025;
/// CACHE-TIMEOUT (RFC 5780).
pub const CACHE_TIMEOUT: u16 = 0x8027;
/// FINGERPRINT (RFC 8489).
pub const FINGERPRINT: u16 = 0x8028;
/// ICE-CONTROLLED (RFC 8445).
pub const ICE_CONTROLLED: u16 = 0x8029;
/// ICE-CONTROLLING (RFC 8445).
pub const ICE_CONTROLLING: u16 = 0x802A;
/// RESPONSE-ORIGIN (RFC 5780).
pub const RESPONSE_ORIGIN: u16 = 0x802B;
/// OTHER-ADDRESS (RFC 5780).
pub const OTHER_ADDRESS: u16 = 0x802C;

/// Maximum USERNAME value length in bytes (RFC 8489 14.3).
pub const MAX_USERNAME_LEN: usize = 513;
/// Maximum REALM value length in bytes (RFC 8489 14.9).
pub const MAX_REALM_LEN: usize = 763;
/// Maximum NONCE value length in bytes (RFC 8489 14.10).
pub const MAX_NONCE_LEN: usize = 763;
/// Maximum SOFTWARE value length in bytes (RFC 8489 14.14).
pub const MAX_SOFTWARE_LEN: usize = 763;
/// Maximum ERROR-CODE reason phrase length in bytes (RFC 8489 14.8).
pub const MAX_REASON_LEN: usize = 763;

/// IANA protocol number for UDP, as carried in REQUESTED-TRANSPORT.
pub const PROTO_UDP: u8 = 17;
/// IANA protocol number for TCP, as carried in REQUESTED-TRANSPORT (RFC 6062).
pub const PROTO_TCP: u8 = 6;

/// Whether an attribute type is comprehension-required (below 0x8000).
pub const fn is_comprehension_required(typ: u16) -> bool {
    typ < 0x8000
}

/// The RFC name of a known attribute type, for logs.
pub const fn name(typ: u16) -> Option<&'static str> {
    Some(match typ {
        MAPPED_ADDRESS => "MAPPED-ADDRESS",
        USERNAME => "USERNAME",
        MESSAGE_INTEGRITY => "MESSAGE-INTEGRITY",
        ERROR_CODE => "ERROR-CODE",
        UNKNOWN_ATTRIBUTES => "UNKNOWN-ATTRIBUTES",
        CHANNEL_NUMBER => "CHANNEL-NUMBER",
        LIFETIME => "LIFETIME",
        XOR_PEER_ADDRESS => "XOR-PEER-ADDRESS",
        DATA => "DATA",
        REALM => "REALM",
        NONCE => "NONCE",
        XOR_RELAYED_ADDRESS => "XOR-RELAYED-ADDRESS",
        REQUESTED_ADDRESS_FAMILY => "REQUESTED-ADDRESS-FAMILY",
        EVEN_PORT => "EVEN-PORT",
        REQUESTED_TRANSPORT => "REQUESTED-TRANSPORT",
        DONT_FRAGMENT => "DONT-FRAGMENT",
        ACCESS_TOKEN => "ACCESS-TOKEN",
        MESSAGE_INTEGRITY_SHA256 => "MESSAGE-INTEGRITY-SHA256",
        PASSWORD_ALGORITHM => "PASSWORD-ALGORITHM",
        USERHASH => "USERHASH",
        XOR_MAPPED_ADDRESS => "XOR-MAPPED-ADDRESS",
        RESERVATION_TOKEN => "RESERVATION-TOKEN",
        PRIORITY => "PRIORITY",
        USE_CANDIDATE => "USE-CANDIDATE",
        PADDING => "PADDING",
        RESPONSE_PORT => "RESPONSE-PORT",
        CONNECTION_ID => "CONNECTION-ID",
        ADDITIONAL_ADDRESS_FAMILY => "ADDITIONAL-ADDRESS-FAMILY",
        ADDRESS_ERROR_CODE => "ADDRESS-ERROR-CODE",
        PASSWORD_ALGORITHMS => "PASSWORD-ALGORITHMS",
        ALTERNATE_DOMAIN => "ALTERNATE-DOMAIN",
        ICMP => "ICMP",
        SOFTWARE => "SOFTWARE",
        ALTERNATE_SERVER => "ALTERNATE-SERVER",
        TRANSACTION_TRANSMIT_COUNTER => "TRANSACTION-TRANSMIT-COUNTER",
        CACHE_TIMEOUT => "CACHE-TIMEOUT",
        FINGERPRINT => "FINGERPRINT",
        ICE_CONTROLLED => "ICE-CONTROLLED",
        ICE_CONTROLLING => "ICE-CONTROLLING",
        RESPONSE_ORIGIN => "RESPONSE-ORIGIN",
        OTHER_ADDRESS => "OTHER-ADDRESS",
        _ => return None,
    })
}

/// Why an attribute value could not be decoded.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum AttrError {
    /// The value has the wrong length for its type.
    #[error("attribute value has a bad length")]
    BadLength,
    /// An address attribute carries a family byte other than 0x01/0x02.
    #[error("unknown address family")]
    BadFamily,
    /// A text value is not valid UTF-8.
    #[error("attribute text is not valid UTF-8")]
    BadUtf8,
    /// A text value is longer than its limit.
    #[error("attribute text is too long")]
    TooLong,
    /// A field holds a value outside its allowed range (e.g. ERROR-CODE class).
    #[error("attribute field out of range")]
    BadValue,
}

fn arr<const N: usize>(value: &[u8]) -> Result<[u8; N], AttrError> {
    <[u8; N]>::try_from(value).map_err(|_| AttrError::BadLength)
}

fn xor_key(tid: &TransactionId) -> [u8; 16] {
    let mut k = [0u8; 16];
    let (c, t) = k.split_at_mut(4);
    c.copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    t.copy_from_slice(&tid.0);
    k
}

/// Decodes an address value, optionally XOR-ed with `key` (cookie || tid).
fn decode_addr(value: &[u8], key: Option<&[u8; 16]>) -> Result<SocketAddr, AttrError> {
    let (&[_reserved, family, p0, p1], rest) =
        value.split_first_chunk::<4>().ok_or(AttrError::BadLength)?;
    let xk = key.copied().unwrap_or([0u8; 16]);
    let port = u16::from_be_bytes([p0 ^ xk[0], p1 ^ xk[1]]);
    match family {
        0x01 => {
            let mut ip = arr::<4>(rest)?;
            ip.iter_mut().zip(xk.iter()).for_each(|(b, k)| *b ^= k);
            Ok(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        0x02 => {
            let mut ip = arr::<16>(rest)?;
            ip.iter_mut().zip(xk.iter()).for_each(|(b, k)| *b ^= k);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                0,
                0,
            )))
        }
        _ => Err(AttrError::BadFamily),
    }
}

/// Decodes an XOR-MAPPED-ADDRESS / XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS
/// value: family 0x01 needs exactly 8 bytes, family 0x02 exactly 20.
pub fn decode_xor_address(value: &[u8], tid: &TransactionId) -> Result<SocketAddr, AttrError> {
    decode_addr(value, Some(&xor_key(tid)))
}

/// Decodes a plain (non-XOR) address value such as MAPPED-ADDRESS or
/// ALTERNATE-SERVER: family 0x01 needs exactly 8 bytes, family 0x02 exactly 20.
pub fn decode_address(value: &[u8]) -> Result<SocketAddr, AttrError> {
    decode_addr(value, None)
}

/// Decodes a 4-byte big-endian integer value (LIFETIME, PRIORITY, ...).
pub fn decode_u32(value: &[u8]) -> Result<u32, AttrError> {
    arr::<4>(value).map(u32::from_be_bytes)
}

/// Decodes an 8-byte big-endian integer value (ICE-CONTROLLED/-CONTROLLING).
pub fn decode_u64(value: &[u8]) -> Result<u64, AttrError> {
    arr::<8>(value).map(u64::from_be_bytes)
}

/// Decodes CHANNEL-NUMBER (4 bytes: number + RFFU). The number is returned
/// unvalidated; checking the 0x4000..=0x7FFF range is the caller's job.
pub fn decode_channel_number(value: &[u8]) -> Result<u16, AttrError> {
    let [a, b, _, _] = arr::<4>(value)?;
    Ok(u16::from_be_bytes([a, b]))
}

/// Decodes REQUESTED-TRANSPORT (4 bytes: protocol + RFFU), returning the protocol number.
pub fn decode_requested_transport(value: &[u8]) -> Result<u8, AttrError> {
    let [p, _, _, _] = arr::<4>(value)?;
    Ok(p)
}

/// Decodes REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY (4 bytes).
/// An unknown family byte is returned as `Ok(Err(raw))` so the caller can answer 440.
pub fn decode_address_family(value: &[u8]) -> Result<Result<Family, u8>, AttrError> {
    let [f, _, _, _] = arr::<4>(value)?;
    Ok(Family::from_wire(f).ok_or(f))
}

/// Decodes EVEN-PORT (1 byte; padding is not part of the value), returning the R bit.
pub fn decode_even_port(value: &[u8]) -> Result<bool, AttrError> {
    let [b] = arr::<1>(value)?;
    Ok(b & 0x80 != 0)
}

/// Decodes RESERVATION-TOKEN (exactly 8 bytes).
pub fn decode_reservation_token(value: &[u8]) -> Result<[u8; 8], AttrError> {
    arr::<8>(value)
}

fn decode_code_and_reason(value: &[u8]) -> Result<(u16, &str), AttrError> {
    let (&[_, c, n], reason) = value.split_first_chunk::<3>().ok_or(AttrError::BadLength)?;
    let class = u16::from(c & 0x07);
    let number = u16::from(n);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(AttrError::BadValue);
    }
    Ok((class * 100 + number, decode_text(reason, MAX_REASON_LEN)?))
}

/// Decodes ERROR-CODE into `(class * 100 + number, reason phrase)`.
/// Class must be 3..=6 and number 0..=99; reserved bits are ignored.
pub fn decode_error_code(value: &[u8]) -> Result<(u16, &str), AttrError> {
    // Byte 0 is reserved; bytes 1..4 are (reserved, reserved|class, number).
    let (_, rest) = value.split_first().ok_or(AttrError::BadLength)?;
    decode_code_and_reason(rest)
}

/// A decoded ADDRESS-ERROR-CODE: family (`Err(raw)` if unknown), code, reason phrase.
pub type AddressErrorCode<'a> = (Result<Family, u8>, u16, &'a str);

/// Decodes ADDRESS-ERROR-CODE (RFC 8656 18.13) into
/// `(family, class * 100 + number, reason)`; an unknown family byte is `Err(raw)`.
pub fn decode_address_error_code(value: &[u8]) -> Result<AddressErrorCode<'_>, AttrError> {
    let (&f, rest) = value.split_first().ok_or(AttrError::BadLength)?;
    let (code, reason) = decode_code_and_reason(rest)?;
    Ok((Family::from_wire(f).ok_or(f), code, reason))
}

/// Decodes a UTF-8 text value (USERNAME, REALM, NONCE, SOFTWARE, ...) of at most `max_len` bytes.
pub fn decode_text(value: &[u8], max_len: usize) -> Result<&str, AttrError> {
    if value.len() > max_len {
        return Err(AttrError::TooLong);
    }
    std::str::from_utf8(value).map_err(|_| AttrError::BadUtf8)
}

/// Decodes UNKNOWN-ATTRIBUTES into an iterator over the listed types (value length must be even).
pub fn decode_unknown_attributes(
    value: &[u8],
) -> Result<impl Iterator<Item = u16> + '_, AttrError> {
    if !value.len().is_multiple_of(2) {
        return Err(AttrError::BadLength);
    }
    Ok(value.chunks_exact(2).map(|c| match c {
        &[a, b] => u16::from_be_bytes([a, b]),
        _ => 0,
    }))
}

/// Decodes PASSWORD-ALGORITHMS into an iterator of `(algorithm, parameters)`.
/// The value must tile exactly into padded entries.
pub fn decode_password_algorithms(
    value: &[u8],
) -> Result<impl Iterator<Item = PasswordAlgorithm<'_>> + '_, AttrError> {
    // Validate first so the iterator itself never has to report errors.
    let mut rest = value;
    while !rest.is_empty() {
        let (_, r) = split_password_algorithm(rest)?;
        rest = r;
    }
    let mut rest = value;
    Ok(std::iter::from_fn(move || {
        let (item, r) = split_password_algorithm(rest).ok()?;
        rest = r;
        Some(item)
    }))
}

/// One PASSWORD-ALGORITHMS entry: algorithm number and its parameters.
pub type PasswordAlgorithm<'a> = (u16, &'a [u8]);

/// Splits off the first entry; the last entry's padding may be absent (it is then the
/// attribute's own padding).
fn split_password_algorithm(v: &[u8]) -> Result<(PasswordAlgorithm<'_>, &[u8]), AttrError> {
    let (&[a0, a1, l0, l1], rest) = v.split_first_chunk::<4>().ok_or(AttrError::BadLength)?;
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    let params = rest.get(..len).ok_or(AttrError::BadLength)?;
    let next = rest.get(super::pad4(len)..).unwrap_or_default();
    Ok(((u16::from_be_bytes([a0, a1]), params), next))
}

/// Length of an (XOR-)address value for `addr`: 8 for IPv4, 20 for IPv6.
pub const fn address_value_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

fn encode_addr(
    out: &mut [u8],
    addr: SocketAddr,
    key: Option<&[u8; 16]>,
) -> Result<usize, EncodeError> {
    let n = address_value_len(&addr);
    let out = out.get_mut(..n).ok_or(EncodeError::BufferTooSmall)?;
    let xk = key.copied().unwrap_or([0u8; 16]);
    let (hdr, ip_out) = out.split_at_mut(4);
    let port = addr.port().to_be_bytes();
    let fam = match addr.ip() {
        IpAddr::V4(ip) => {
            ip_out.copy_from_slice(&ip.octets());
            Family::V4
        }
        IpAddr::V6(ip) => {
            ip_out.copy_from_slice(&ip.octets());
            Family::V6
        }
    };
    ip_out.iter_mut().zip(xk.iter()).for_each(|(b, k)| *b ^= k);
    hdr.copy_from_slice(&[0, fam.wire(), port[0] ^ xk[0], port[1] ^ xk[1]]);
    Ok(n)
}

/// Writes an XOR-address value for `addr` into `out`, returns its length (8 or 20).
pub fn encode_xor_address(
    out: &mut [u8],
    addr: SocketAddr,
    tid: &TransactionId,
) -> Result<usize, EncodeError> {
    encode_addr(out, addr, Some(&xor_key(tid)))
}

/// Writes a plain address value (MAPPED-ADDRESS form) into `out`, returns its length (8 or 20).
pub fn encode_address(out: &mut [u8], addr: SocketAddr) -> Result<usize, EncodeError> {
    encode_addr(out, addr, None)
}

/// Length of an ERROR-CODE value with this reason phrase.
pub const fn error_code_value_len(reason: &str) -> usize {
    4 + reason.len()
}

fn check_code(code: u16, reason: &str) -> Result<[u8; 2], EncodeError> {
    if !(300..=699).contains(&code) {
        return Err(EncodeError::InvalidValue);
    }
    if reason.len() > MAX_REASON_LEN {
        return Err(EncodeError::ValueTooLong);
    }
    // Both fit in a byte: class 3..=6, number 0..=99.
    Ok([(code / 100) as u8, (code % 100) as u8])
}

/// Writes an ERROR-CODE value (`code` in 300..=699) into `out`, returns its length.
pub fn encode_error_code(out: &mut [u8], code: u16, reason: &str) -> Result<usize, EncodeError> {
    let [class, number] = check_code(code, reason)?;
    let n = error_code_value_len(reason);
    let out = out.get_mut(..n).ok_or(EncodeError::BufferTooSmall)?;
    let (hdr, text) = out.split_at_mut(4);
    hdr.copy_from_slice(&[0, 0, class, number]);
    text.copy_from_slice(reason.as_bytes());
    Ok(n)
}

/// Writes an ADDRESS-ERROR-CODE value (RFC 8656) into `out`, returns its length.
pub fn encode_address_error_code(
    out: &mut [u8],
    family: Family,
    code: u16,
    reason: &str,
) -> Result<usize, EncodeError> {
    let [class, number] = check_code(code, reason)?;
    let n = error_code_value_len(reason);
    let out = out.get_mut(..n).ok_or(EncodeError::BufferTooSmall)?;
    let (hdr, text) = out.split_at_mut(4);
    hdr.copy_from_slice(&[family.wire(), 0, class, number]);
    text.copy_from_slice(reason.as_bytes());
    Ok(n)
}

/// Writes an UNKNOWN-ATTRIBUTES value (2 bytes per type) into `out`, returns its length.
pub fn encode_unknown_attributes(out: &mut [u8], types: &[u16]) -> Result<usize, EncodeError> {
    let n = types
        .len()
        .checked_mul(2)
        .ok_or(EncodeError::ValueTooLong)?;
    let out = out.get_mut(..n).ok_or(EncodeError::BufferTooSmall)?;
    for (chunk, t) in out.chunks_exact_mut(2).zip(types) {
        chunk.copy_from_slice(&t.to_be_bytes());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TID: TransactionId = TransactionId([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

    #[test]
    fn address_lengths_are_exact() {
        let mut buf = [0u8; 20];
        let v4: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let n = encode_xor_address(&mut buf, v4, &TID).unwrap();
        assert_eq!(n, 8);
        assert_eq!(decode_xor_address(&buf[..8], &TID), Ok(v4));
        assert_eq!(
            decode_xor_address(&buf[..7], &TID),
            Err(AttrError::BadLength)
        );
        assert_eq!(
            decode_xor_address(&buf[..12], &TID),
            Err(AttrError::BadLength)
        );
        buf[1] = 3;
        assert_eq!(
            decode_xor_address(&buf[..8], &TID),
            Err(AttrError::BadFamily)
        );
        let v6: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        assert_eq!(encode_address(&mut buf, v6), Ok(20));
        assert_eq!(decode_address(&buf), Ok(v6));
        assert_eq!(decode_address(&buf[..19]), Err(AttrError::BadLength));
        assert_eq!(
            encode_address(&mut buf[..19], v6),
            Err(EncodeError::BufferTooSmall)
        );
    }

    #[test]
    fn small_values() {
        assert_eq!(decode_u32(&[0, 0, 2, 88]), Ok(600));
        assert_eq!(decode_u32(&[0, 0, 2]), Err(AttrError::BadLength));
        assert_eq!(decode_channel_number(&[0x40, 0x01, 0, 0]), Ok(0x4001));
        assert_eq!(decode_channel_number(&[0x30, 0x00, 0, 0]), Ok(0x3000));
        assert_eq!(
            decode_channel_number(&[0x40, 0x01]),
            Err(AttrError::BadLength)
        );
        assert_eq!(decode_requested_transport(&[17, 0, 0, 0]), Ok(PROTO_UDP));
        assert_eq!(decode_requested_transport(&[17]), Err(AttrError::BadLength));
        assert_eq!(decode_address_family(&[1, 0, 0, 0]), Ok(Ok(Family::V4)));
        assert_eq!(decode_address_family(&[2, 0, 0, 0]), Ok(Ok(Family::V6)));
        assert_eq!(decode_address_family(&[9, 0, 0, 0]), Ok(Err(9)));
        assert_eq!(decode_address_family(&[1, 0]), Err(AttrError::BadLength));
        assert_eq!(decode_even_port(&[0x80]), Ok(true));
        assert_eq!(decode_even_port(&[0x00]), Ok(false));
        assert_eq!(decode_even_port(&[]), Err(AttrError::BadLength));
        assert_eq!(decode_reservation_token(&[7; 8]), Ok([7; 8]));
        assert_eq!(decode_reservation_token(&[7; 4]), Err(AttrError::BadLength));
        assert_eq!(decode_u64(&[0, 0, 0, 0, 0, 0, 1, 0]), Ok(256));
    }

    #[test]
    fn error_code_round_trip() {
        let mut buf = [0u8; 64];
        let n = encode_error_code(&mut buf, 438, "Stale Nonce").unwrap();
        assert_eq!(&buf[..4], &[0, 0, 4, 38]);
        assert_eq!(decode_error_code(&buf[..n]), Ok((438, "Stale Nonce")));
        assert_eq!(decode_error_code(&[0, 0, 4]), Err(AttrError::BadLength));
        assert_eq!(decode_error_code(&[0, 0, 2, 0]), Err(AttrError::BadValue));
        assert_eq!(decode_error_code(&[0, 0, 4, 100]), Err(AttrError::BadValue));
        assert_eq!(
            decode_error_code(&[0, 0, 4, 1, 0xff]),
            Err(AttrError::BadUtf8)
        );
        // Reserved bits around the class are ignored.
        assert_eq!(decode_error_code(&[0xff, 0xff, 0xf8 | 4, 1]), Ok((401, "")));
        assert_eq!(decode_error_code(&[]), Err(AttrError::BadLength));
        assert_eq!(
            encode_error_code(&mut buf, 299, ""),
            Err(EncodeError::InvalidValue)
        );
        assert_eq!(
            encode_error_code(&mut buf, 700, ""),
            Err(EncodeError::InvalidValue)
        );
        assert_eq!(
            encode_error_code(&mut buf[..5], 400, "Bad"),
            Err(EncodeError::BufferTooSmall)
        );

        let n =
            encode_address_error_code(&mut buf, Family::V6, 440, "Address Family not Supported")
                .unwrap();
        assert_eq!(buf[0], 2);
        assert_eq!(
            decode_address_error_code(&buf[..n]),
            Ok((Ok(Family::V6), 440, "Address Family not Supported"))
        );
        assert_eq!(
            decode_address_error_code(&[1, 0, 4]),
            Err(AttrError::BadLength)
        );
    }

    #[test]
    fn text_limits() {
        assert_eq!(decode_text(b"abc", 3), Ok("abc"));
        assert_eq!(decode_text(b"abcd", 3), Err(AttrError::TooLong));
        assert_eq!(decode_text(&[0xc3], 3), Err(AttrError::BadUtf8));
    }

    #[test]
    fn unknown_attributes_round_trip() {
        let mut buf = [0u8; 8];
        let n = encode_unknown_attributes(&mut buf, &[0x0031, 0x7fff, 0x0002]).unwrap();
        assert_eq!(n, 6);
        let got: Vec<u16> = decode_unknown_attributes(&buf[..n]).unwrap().collect();
        assert_eq!(got, vec![0x0031, 0x7fff, 0x0002]);
        assert!(decode_unknown_attributes(&buf[..3]).is_err());
        assert_eq!(
            encode_unknown_attributes(&mut buf, &[1; 5]),
            Err(EncodeError::BufferTooSmall)
        );
    }

    #[test]
    fn password_algorithms() {
        let v = [0, 2, 0, 0, 0, 1, 0, 0];
        let got: Vec<(u16, &[u8])> = decode_password_algorithms(&v).unwrap().collect();
        assert_eq!(got, vec![(2, &[][..]), (1, &[][..])]);
        let v = [0, 9, 0, 1, 0xaa, 0, 0, 0];
        let got: Vec<(u16, &[u8])> = decode_password_algorithms(&v).unwrap().collect();
        assert_eq!(got, vec![(9, &[0xaa][..])]);
        assert_eq!(
            decode_password_algorithms(&[0, 9, 0, 1, 0xaa])
                .unwrap()
                .count(),
            1
        );
        assert!(decode_password_algorithms(&[0, 9, 0, 2, 0xaa]).is_err());
        assert!(decode_password_algorithms(&[0, 9, 0]).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(name(XOR_PEER_ADDRESS), Some("XOR-PEER-ADDRESS"));
        assert_eq!(name(0x7777), None);
        assert!(is_comprehension_required(0x7fff));
        assert!(!is_comprehension_required(SOFTWARE));
    }

    proptest! {
        #[test]
        fn xor_address_round_trip_v4(ip in any::<[u8; 4]>(), port in any::<u16>(), tid in any::<[u8; 12]>()) {
            let tid = TransactionId(tid);
            let addr = SocketAddr::from((ip, port));
            let mut buf = [0u8; 20];
            let n = encode_xor_address(&mut buf, addr, &tid).unwrap();
            prop_assert_eq!(n, 8);
            prop_assert_eq!(decode_xor_address(&buf[..n], &tid), Ok(addr));
            prop_assert_eq!(decode_address(&buf[..n]).map(|a| a.is_ipv4()), Ok(true));
        }

        #[test]
        fn xor_address_round_trip_v6(ip in any::<[u8; 16]>(), port in any::<u16>(), tid in any::<[u8; 12]>()) {
            let tid = TransactionId(tid);
            let addr = SocketAddr::from((Ipv6Addr::from(ip), port));
            let mut buf = [0u8; 20];
            let n = encode_xor_address(&mut buf, addr, &tid).unwrap();
            prop_assert_eq!(n, 20);
            prop_assert_eq!(decode_xor_address(&buf[..n], &tid), Ok(addr));
            let n = encode_address(&mut buf, addr).unwrap();
            prop_assert_eq!(decode_address(&buf[..n]), Ok(addr));
        }

        #[test]
        fn decoders_never_panic(v in proptest::collection::vec(any::<u8>(), 0..600), tid in any::<[u8; 12]>(), max in 0usize..800) {
            let tid = TransactionId(tid);
            let _ = decode_xor_address(&v, &tid);
            let _ = decode_address(&v);
            let _ = decode_u32(&v);
            let _ = decode_u64(&v);
            let _ = decode_channel_number(&v);
            let _ = decode_requested_transport(&v);
            let _ = decode_address_family(&v);
            let _ = decode_even_port(&v);
            let _ = decode_reservation_token(&v);
            let _ = decode_error_code(&v);
            let _ = decode_address_error_code(&v);
            let _ = decode_text(&v, max);
            if let Ok(it) = decode_unknown_attributes(&v) { it.for_each(drop); }
            if let Ok(it) = decode_password_algorithms(&v) { it.for_each(drop); }
        }
    }
}
