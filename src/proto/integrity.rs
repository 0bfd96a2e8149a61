//! MESSAGE-INTEGRITY (HMAC-SHA1), MESSAGE-INTEGRITY-SHA256 and FINGERPRINT
//! (RFC 8489 14.5-14.7).
//!
//! All checks run over the received bytes without copying the message: a
//! 20-byte copy of the header with its length field patched is fed to the
//! MAC/CRC first, followed by the rest of the covered bytes.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::attr::{FINGERPRINT, MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256};
use super::message::RawAttr;
use super::{HEADER_LEN, Message};

/// Constant XOR-ed into the CRC-32 to form FINGERPRINT ("STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Length of the MESSAGE-INTEGRITY value.
pub const MI_LEN: usize = 20;

/// Length of the full MESSAGE-INTEGRITY-SHA256 value.
pub const MI_SHA256_LEN: usize = 32;

/// Why an integrity or fingerprint check failed.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityError {
    /// The attribute is absent.
    #[error("attribute missing")]
    Missing,
    /// The attribute has the wrong length.
    #[error("attribute malformed")]
    Malformed,
    /// The MAC or CRC does not match.
    #[error("integrity check failed")]
    Mismatch,
    /// FINGERPRINT is followed by other attributes.
    #[error("FINGERPRINT is not the last attribute")]
    NotLast,
}

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA1 with `key` over `header` (length already patched) followed by `body`.
pub fn hmac_sha1(key: &[u8], header: &[u8; HEADER_LEN], body: &[u8]) -> [u8; MI_LEN] {
    // HMAC accepts keys of any length, so this never takes the error branch.
    match <HmacSha1 as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(header);
            mac.update(body);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; MI_LEN],
    }
}

/// HMAC-SHA256 with `key` over `header` (length already patched) followed by `body`.
pub fn hmac_sha256(key: &[u8], header: &[u8; HEADER_LEN], body: &[u8]) -> [u8; MI_SHA256_LEN] {
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(header);
            mac.update(body);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; MI_SHA256_LEN],
    }
}

/// FINGERPRINT value: CRC-32 of `header` (length already patched) followed by `body`,
/// XOR [`FINGERPRINT_XOR`].
pub fn fingerprint_value(header: &[u8; HEADER_LEN], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(body);
    h.finalize() ^ FINGERPRINT_XOR
}

/// The header of `msg` with its length field set so the message ends just after `a`,
/// and the bytes between the header and `a`.
fn covered<'a>(msg: &Message<'a>, a: &RawAttr<'a>) -> Option<([u8; HEADER_LEN], &'a [u8])> {
    let raw = msg.raw();
    let (hdr, _) = raw.split_first_chunk::<HEADER_LEN>()?;
    let mut hdr = *hdr;
    let body_len = u16::try_from(a.end().checked_sub(HEADER_LEN)?).ok()?;
    let [_, _, l0, l1, ..] = &mut hdr;
    [*l0, *l1] = body_len.to_be_bytes();
    Some((hdr, raw.get(HEADER_LEN..a.offset)?))
}

/// Verifies MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 14.5) with `key`, in constant time.
/// Uses the first MESSAGE-INTEGRITY, which must be exactly 20 bytes.
pub fn verify_message_integrity(msg: &Message<'_>, key: &[u8]) -> Result<(), IntegrityError> {
    let a = msg.get(MESSAGE_INTEGRITY).ok_or(IntegrityError::Missing)?;
    if a.value.len() != MI_LEN {
        return Err(IntegrityError::Malformed);
    }
    let (hdr, body) = covered(msg, &a).ok_or(IntegrityError::Malformed)?;
    let mac = hmac_sha1(key, &hdr, body);
    if bool::from(mac.ct_eq(a.value)) {
        Ok(())
    } else {
        Err(IntegrityError::Mismatch)
    }
}

/// Verifies MESSAGE-INTEGRITY-SHA256 (RFC 8489 14.6) with `key`, in constant time.
/// The value may be truncated: 16..=32 bytes, a multiple of 4; the leading bytes are compared.
pub fn verify_message_integrity_sha256(
    msg: &Message<'_>,
    key: &[u8],
) -> Result<(), IntegrityError> {
    let a = msg
        .get(MESSAGE_INTEGRITY_SHA256)
        .ok_or(IntegrityError::Missing)?;
    let n = a.value.len();
    if !(16..=MI_SHA256_LEN).contains(&n) || !n.is_multiple_of(4) {
        return Err(IntegrityError::Malformed);
    }
    let (hdr, body) = covered(msg, &a).ok_or(IntegrityError::Malformed)?;
    let mac = hmac_sha256(key, &hdr, body);
    let prefix = mac.get(..n).ok_or(IntegrityError::Malformed)?;
    if bool::from(prefix.ct_eq(a.value)) {
        Ok(())
    } else {
        Err(IntegrityError::Mismatch)
    }
}

/// Verifies FINGERPRINT (RFC 8489 14.7): it must be the last attribute and 4 bytes long.
pub fn verify_fingerprint(msg: &Message<'_>) -> Result<(), IntegrityError> {
    let mut attrs = msg.attributes();
    let a = attrs
        .find(|a| a.typ == FINGERPRINT)
        .ok_or(IntegrityError::Missing)?;
    if attrs.next().is_some() {
        return Err(IntegrityError::NotLast);
    }
    let Ok(got) = <[u8; 4]>::try_from(a.value) else {
        return Err(IntegrityError::Malformed);
    };
    let (hdr, body) = covered(msg, &a).ok_or(IntegrityError::Malformed)?;
    if fingerprint_value(&hdr, body) == u32::from_be_bytes(got) {
        Ok(())
    } else {
        Err(IntegrityError::Mismatch)
    }
}

/// Whether the message ends with a 4-byte FINGERPRINT attribute (not checked).
pub fn has_fingerprint(msg: &Message<'_>) -> bool {
    msg.attributes()
        .last()
        .is_some_and(|a| a.typ == FINGERPRINT && a.value.len() == 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::attr::{SOFTWARE, USERNAME};
    use crate::proto::{Class, MessageWriter, Method, TransactionId};

    const TID: TransactionId = TransactionId([7; 12]);

    fn signed(buf: &mut [u8]) -> usize {
        let mut w = MessageWriter::new(buf, Class::Request, Method::ALLOCATE, TID).unwrap();
        w.attr(USERNAME, b"user").unwrap();
        w.message_integrity(b"secret").unwrap();
        w.message_integrity_sha256(b"secret").unwrap();
        w.fingerprint().unwrap();
        w.finish()
    }

    #[test]
    fn round_trip_all_three() {
        let mut buf = [0u8; 256];
        let n = signed(&mut buf);
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(verify_message_integrity(&m, b"secret"), Ok(()));
        assert_eq!(verify_message_integrity_sha256(&m, b"secret"), Ok(()));
        assert_eq!(verify_fingerprint(&m), Ok(()));
        assert!(has_fingerprint(&m));
    }

    #[test]
    fn mi_mismatch() {
        let mut buf = [0u8; 256];
        let n = signed(&mut buf);
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(
            verify_message_integrity(&m, b"wrong"),
            Err(IntegrityError::Mismatch)
        );
        assert_eq!(
            verify_message_integrity_sha256(&m, b"wrong"),
            Err(IntegrityError::Mismatch)
        );
        // Flip a byte of the username: MI fails, and so does FINGERPRINT.
        buf[24] ^= 1;
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(
            verify_message_integrity(&m, b"secret"),
            Err(IntegrityError::Mismatch)
        );
        assert_eq!(verify_fingerprint(&m), Err(IntegrityError::Mismatch));
    }

    #[test]
    fn fingerprint_mismatch() {
        let mut buf = [0u8; 256];
        let n = signed(&mut buf);
        buf[n - 1] ^= 0x01;
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(verify_fingerprint(&m), Err(IntegrityError::Mismatch));
        // MI does not cover FINGERPRINT.
        assert_eq!(verify_message_integrity(&m, b"secret"), Ok(()));
    }

    #[test]
    fn fingerprint_not_last() {
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
        w.fingerprint().unwrap();
        w.attr(SOFTWARE, b"x").unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(verify_fingerprint(&m), Err(IntegrityError::NotLast));
        assert!(!has_fingerprint(&m));
    }

    #[test]
    fn missing_and_malformed() {
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
        w.attr(SOFTWARE, b"x").unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(
            verify_message_integrity(&m, b"k"),
            Err(IntegrityError::Missing)
        );
        assert_eq!(
            verify_message_integrity_sha256(&m, b"k"),
            Err(IntegrityError::Missing)
        );
        assert_eq!(verify_fingerprint(&m), Err(IntegrityError::Missing));
        assert!(!has_fingerprint(&m));

        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
        w.attr(MESSAGE_INTEGRITY, &[0; 16]).unwrap();
        w.attr(FINGERPRINT, &[0; 8]).unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(
            verify_message_integrity(&m, b"k"),
            Err(IntegrityError::Malformed)
        );
        assert_eq!(verify_fingerprint(&m), Err(IntegrityError::Malformed));

        for bad in [12usize, 18, 36] {
            let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
            w.attr(MESSAGE_INTEGRITY_SHA256, &vec![0; bad]).unwrap();
            let n = w.finish();
            let m = Message::parse(&buf[..n]).unwrap();
            assert_eq!(
                verify_message_integrity_sha256(&m, b"k"),
                Err(IntegrityError::Malformed)
            );
        }
    }

    #[test]
    fn truncated_sha256_verifies() {
        // Build a message with a full MI-SHA256, then truncate it to 16 bytes by hand:
        // the MAC must be recomputed over the new length, so compute it directly.
        let mut buf = [0u8; 128];
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
        w.attr(USERNAME, b"u").unwrap();
        let n0 = w.finish();
        let mut hdr: [u8; 20] = buf[..20].try_into().unwrap();
        let body_len = (n0 - 20 + 4 + 16) as u16;
        hdr[2..4].copy_from_slice(&body_len.to_be_bytes());
        let mac = hmac_sha256(b"k", &hdr, &buf[20..n0]);
        buf[..20].copy_from_slice(&hdr);
        buf[n0..n0 + 4].copy_from_slice(&[0x00, 0x1C, 0x00, 0x10]);
        buf[n0 + 4..n0 + 20].copy_from_slice(&mac[..16]);
        let m = Message::parse(&buf[..n0 + 20]).unwrap();
        assert_eq!(verify_message_integrity_sha256(&m, b"k"), Ok(()));
        assert_eq!(
            verify_message_integrity_sha256(&m, b"x"),
            Err(IntegrityError::Mismatch)
        );
    }

    #[test]
    fn mi_ignores_later_mi() {
        // A second MESSAGE-INTEGRITY after the first must not affect verification.
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
        w.attr(USERNAME, b"user").unwrap();
        w.message_integrity(b"secret").unwrap();
        w.attr(MESSAGE_INTEGRITY, &[0; 20]).unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(verify_message_integrity(&m, b"secret"), Ok(()));
    }
}
