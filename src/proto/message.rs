//! Zero-copy STUN message parsing ([`Message`]) and in-place encoding ([`MessageWriter`]).

use std::net::SocketAddr;

use super::attr::{self, FINGERPRINT, MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256};
use super::integrity;
use super::{
    Class, Family, HEADER_LEN, MAGIC_COOKIE, Method, TransactionId, be16, message_type, pad4,
    split_message_type,
};

/// Largest body length the 16-bit length field can describe with 4-byte alignment.
const MAX_BODY_LEN: usize = 0xFFFC;

/// Why a buffer is not a well-formed STUN message (or ChannelData frame).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes than a header.
    #[error("buffer shorter than a header")]
    TooShort,
    /// The top two bits are not 00.
    #[error("not a STUN message")]
    NotStun,
    /// The magic cookie does not match.
    #[error("bad magic cookie")]
    BadCookie,
    /// The length field is not a multiple of 4.
    #[error("bad message length")]
    BadLength,
    /// The length field runs past the end of the buffer.
    #[error("message truncated")]
    Truncated,
    /// The attribute TLVs do not tile the body exactly.
    #[error("malformed attribute")]
    BadAttribute,
    /// A ChannelData channel number outside 0x4000..=0x7FFF.
    #[error("channel number out of range")]
    BadChannel,
}

/// Why a message (or ChannelData frame) could not be encoded.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer has no room for what was asked.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// A value (or the whole message) exceeds what its length field can express.
    #[error("value too long")]
    ValueTooLong,
    /// A value outside its allowed range (error code not 300..=699, channel not 0x4000..=0x7FFF).
    #[error("value out of range")]
    InvalidValue,
}

/// One attribute as it appears on the wire, borrowing its value from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAttr<'a> {
    /// Attribute type.
    pub typ: u16,
    /// Value bytes, without padding.
    pub value: &'a [u8],
    /// Offset of the attribute header within [`Message::raw`].
    pub offset: usize,
}

impl RawAttr<'_> {
    /// Offset just past this attribute's padding within [`Message::raw`].
    pub fn end(&self) -> usize {
        self.offset
            .saturating_add(4)
            .saturating_add(pad4(self.value.len()))
    }
}

/// Iterator over the attributes of a [`Message`], in wire order.
#[derive(Clone, Debug)]
pub struct AttrIter<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = RawAttr<'a>;

    fn next(&mut self) -> Option<RawAttr<'a>> {
        let typ = be16(self.raw, self.pos)?;
        let len = usize::from(be16(self.raw, self.pos.checked_add(2)?)?);
        let start = self.pos.checked_add(4)?;
        let value = self.raw.get(start..start.checked_add(len)?)?;
        let offset = self.pos;
        self.pos = start.checked_add(pad4(len))?;
        Some(RawAttr { typ, value, offset })
    }
}

/// A parsed STUN message borrowing from the received buffer.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    raw: &'a [u8],
    class: Class,
    method: Method,
    tid: TransactionId,
}

impl<'a> Message<'a> {
    /// Parses exactly one STUN message at the start of `buf`. Validates: top two bits zero, magic cookie,
    /// length field a multiple of 4 and `HEADER_LEN + length <= buf.len()`, and that the attribute TLVs
    /// tile the body exactly (each attribute's padded length fits). Bytes after the message are ignored
    /// (the caller decides whether trailing bytes are allowed). No heap.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let (hdr, _) = buf
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(ParseError::TooShort)?;
        let [t0, t1, l0, l1, c0, c1, c2, c3, tid @ ..] = *hdr;
        if t0 & 0xC0 != 0 {
            return Err(ParseError::NotStun);
        }
        if u32::from_be_bytes([c0, c1, c2, c3]) != MAGIC_COOKIE {
            return Err(ParseError::BadCookie);
        }
        let body_len = usize::from(u16::from_be_bytes([l0, l1]));
        if !body_len.is_multiple_of(4) {
            return Err(ParseError::BadLength);
        }
        let raw = buf
            .get(..HEADER_LEN + body_len)
            .ok_or(ParseError::Truncated)?;
        // Attributes must tile the body exactly.
        let mut pos = HEADER_LEN;
        while pos < raw.len() {
            let len = be16(raw, pos + 2).ok_or(ParseError::BadAttribute)?;
            let end = pos + 4 + pad4(usize::from(len));
            if end > raw.len() {
                return Err(ParseError::BadAttribute);
            }
            pos = end;
        }
        let (class, method) = split_message_type(u16::from_be_bytes([t0, t1]));
        Ok(Message {
            raw,
            class,
            method,
            tid: TransactionId(tid),
        })
    }

    /// The message class.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The 12-bit method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// The message bytes: header plus body exactly.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// All attributes in wire order (including any after MESSAGE-INTEGRITY).
    pub fn attributes(&self) -> AttrIter<'a> {
        AttrIter {
            raw: self.raw,
            pos: HEADER_LEN,
        }
    }

    /// Attributes that RFC 8489 14.5/14.6 lets a receiver look at, in wire order:
    /// after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT,
    /// after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT, and nothing after FINGERPRINT.
    pub fn visible_attributes(&self) -> impl Iterator<Item = RawAttr<'a>> + 'a {
        // 0: all, 1: after MI, 2: after MI-SHA256, 3: after FINGERPRINT.
        let mut level = 0u8;
        self.attributes().filter(move |a| {
            let (allowed, next) = match (level, a.typ) {
                (3, _) => (false, 3),
                (_, FINGERPRINT) => (true, 3),
                (0 | 1, MESSAGE_INTEGRITY_SHA256) => (true, 2),
                (0, MESSAGE_INTEGRITY) => (true, 1),
                (0, _) => (true, 0),
                (l, _) => (false, l),
            };
            level = next;
            allowed
        })
    }

    /// First occurrence of attribute `typ` among the [visible](Self::visible_attributes)
    /// attributes: those after MESSAGE-INTEGRITY are ignored except
    /// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (RFC 8489 14.5).
    pub fn get(&self, typ: u16) -> Option<RawAttr<'a>> {
        self.visible_attributes().find(|a| a.typ == typ)
    }

    /// Comprehension-required (type < 0x8000) attribute types not in `known`, deduplicated,
    /// collected into `out` in wire order (at most 8); returns the count. Attributes that
    /// must be ignored after MESSAGE-INTEGRITY are not reported. Used for 420 UNKNOWN-ATTRIBUTES.
    pub fn unknown_comprehension_required(&self, known: &[u16], out: &mut [u16; 8]) -> usize {
        let mut n = 0;
        for a in self.visible_attributes() {
            if !attr::is_comprehension_required(a.typ) || known.contains(&a.typ) {
                continue;
            }
            let seen = out.get(..n).unwrap_or_default();
            if seen.contains(&a.typ) {
                continue;
            }
            match out.get_mut(n) {
                Some(slot) => {
                    *slot = a.typ;
                    n += 1;
                }
                None => break,
            }
        }
        n
    }
}

/// Writes one message into a caller's buffer; the header's length field is kept current after each attribute.
///
/// A failed call leaves the writer (and the bytes written so far) unchanged.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    tid: TransactionId,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message: writes the 20-byte header with a zero length field.
    pub fn new(
        buf: &'b mut [u8],
        class: Class,
        method: Method,
        tid: TransactionId,
    ) -> Result<Self, EncodeError> {
        let hdr = buf
            .first_chunk_mut::<HEADER_LEN>()
            .ok_or(EncodeError::BufferTooSmall)?;
        let (t, rest) = hdr.split_at_mut(2);
        t.copy_from_slice(&message_type(class, method).to_be_bytes());
        let (l, rest) = rest.split_at_mut(2);
        l.copy_from_slice(&[0, 0]);
        let (c, id) = rest.split_at_mut(4);
        c.copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        id.copy_from_slice(&tid.0);
        Ok(MessageWriter {
            buf,
            len: HEADER_LEN,
            tid,
        })
    }

    /// The transaction id written in the header.
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// Bytes written so far (header plus attributes).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a writer holds at least the header.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The message as written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Ends the message; returns the total bytes written.
    pub fn finish(self) -> usize {
        self.len
    }

    /// The header as it will be once `extra` more bytes are appended (length field patched).
    fn patched_header(&self, extra: usize) -> Result<[u8; HEADER_LEN], EncodeError> {
        let body = self.len - HEADER_LEN + extra;
        if body > MAX_BODY_LEN {
            return Err(EncodeError::ValueTooLong);
        }
        let mut hdr = *self
            .buf
            .first_chunk::<HEADER_LEN>()
            .ok_or(EncodeError::BufferTooSmall)?;
        let [_, _, l0, l1, ..] = &mut hdr;
        // body <= 0xFFFC, so it fits in u16.
        [*l0, *l1] = (body as u16).to_be_bytes();
        Ok(hdr)
    }

    /// Appends an attribute header for a `len`-byte value and zeroes its padding; the value
    /// bytes themselves are left untouched. Returns the value's start offset.
    fn reserve(&mut self, typ: u16, len: usize) -> Result<usize, EncodeError> {
        let len16 = u16::try_from(len).map_err(|_| EncodeError::ValueTooLong)?;
        let total = 4 + pad4(len);
        let hdr = self.patched_header(total)?;
        let end = self.len + total;
        let region = self
            .buf
            .get_mut(self.len..end)
            .ok_or(EncodeError::BufferTooSmall)?;
        let (ah, rest) = region.split_at_mut(4);
        let [t0, t1] = typ.to_be_bytes();
        let [l0, l1] = len16.to_be_bytes();
        ah.copy_from_slice(&[t0, t1, l0, l1]);
        if let Some(pad) = rest.get_mut(len..) {
            pad.fill(0);
        }
        if let Some(h) = self.buf.first_chunk_mut::<HEADER_LEN>() {
            *h = hdr;
        }
        let start = self.len + 4;
        self.len = end;
        Ok(start)
    }

    /// Appends an attribute of `len` value bytes and returns the (zeroed) value slot for the
    /// caller to fill in place; padding is already zero.
    pub fn attr_slot(&mut self, typ: u16, len: usize) -> Result<&mut [u8], EncodeError> {
        let start = self.reserve(typ, len)?;
        let slot = self
            .buf
            .get_mut(start..start + len)
            .ok_or(EncodeError::BufferTooSmall)?;
        slot.fill(0);
        Ok(slot)
    }

    /// Appends an attribute whose `len` value bytes already sit in the buffer right after
    /// where its 4-byte header goes (at offset `self.len() + 4`): only the header and
    /// zero padding are written. For relaying DATA without copying.
    pub fn attr_in_place(&mut self, typ: u16, len: usize) -> Result<(), EncodeError> {
        self.reserve(typ, len).map(drop)
    }

    /// Appends an attribute, zero-padded to 4 bytes.
    pub fn attr(&mut self, typ: u16, value: &[u8]) -> Result<(), EncodeError> {
        self.attr_slot(typ, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// Appends an attribute padded with `pad` instead of zeros (RFC 5769 vectors pad with spaces).
    pub fn attr_padded(&mut self, typ: u16, value: &[u8], pad: u8) -> Result<(), EncodeError> {
        let start = self.reserve(typ, value.len())?;
        let end = start + pad4(value.len());
        if let Some(region) = self.buf.get_mut(start..end) {
            let (v, p) = region.split_at_mut(value.len());
            v.copy_from_slice(value);
            p.fill(pad);
        }
        Ok(())
    }

    /// Appends an XOR-address attribute (XOR-MAPPED-/PEER-/RELAYED-ADDRESS) for `addr`.
    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> Result<(), EncodeError> {
        let tid = self.tid;
        let slot = self.attr_slot(typ, attr::address_value_len(&addr))?;
        attr::encode_xor_address(slot, addr, &tid).map(drop)
    }

    /// Appends a plain address attribute (MAPPED-ADDRESS form, e.g. ALTERNATE-SERVER).
    pub fn address(&mut self, typ: u16, addr: SocketAddr) -> Result<(), EncodeError> {
        let slot = self.attr_slot(typ, attr::address_value_len(&addr))?;
        attr::encode_address(slot, addr).map(drop)
    }

    /// Appends a 4-byte big-endian integer attribute (LIFETIME, PRIORITY, ...).
    pub fn u32_attr(&mut self, typ: u16, v: u32) -> Result<(), EncodeError> {
        self.attr(typ, &v.to_be_bytes())
    }

    /// Appends ERROR-CODE; `code` must be in 300..=699 and `reason` at most 763 bytes.
    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<(), EncodeError> {
        // Validate before reserving so a bad code leaves the writer untouched.
        let mut probe = [0u8; 4];
        attr::encode_error_code(&mut probe, code, "")?;
        if reason.len() > attr::MAX_REASON_LEN {
            return Err(EncodeError::ValueTooLong);
        }
        let slot = self.attr_slot(attr::ERROR_CODE, attr::error_code_value_len(reason))?;
        attr::encode_error_code(slot, code, reason).map(drop)
    }

    /// Appends UNKNOWN-ATTRIBUTES listing `types`.
    pub fn unknown_attributes(&mut self, types: &[u16]) -> Result<(), EncodeError> {
        let len = types
            .len()
            .checked_mul(2)
            .ok_or(EncodeError::ValueTooLong)?;
        let slot = self.attr_slot(attr::UNKNOWN_ATTRIBUTES, len)?;
        attr::encode_unknown_attributes(slot, types).map(drop)
    }

    /// Appends CHANNEL-NUMBER (2 bytes + 2 RFFU); the number is not range-checked.
    pub fn channel_number(&mut self, ch: u16) -> Result<(), EncodeError> {
        let [a, b] = ch.to_be_bytes();
        self.attr(attr::CHANNEL_NUMBER, &[a, b, 0, 0])
    }

    /// Appends REQUESTED-TRANSPORT (protocol + 3 RFFU).
    pub fn requested_transport(&mut self, proto: u8) -> Result<(), EncodeError> {
        self.attr(attr::REQUESTED_TRANSPORT, &[proto, 0, 0, 0])
    }

    /// Appends REQUESTED-ADDRESS-FAMILY or ADDITIONAL-ADDRESS-FAMILY (`typ`) for `f`.
    pub fn address_family(&mut self, typ: u16, f: Family) -> Result<(), EncodeError> {
        self.attr(typ, &[f.wire(), 0, 0, 0])
    }

    /// Appends ADDRESS-ERROR-CODE (RFC 8656); `code` must be in 300..=699.
    pub fn address_error_code(
        &mut self,
        f: Family,
        code: u16,
        reason: &str,
    ) -> Result<(), EncodeError> {
        let mut probe = [0u8; 4];
        attr::encode_address_error_code(&mut probe, f, code, "")?;
        if reason.len() > attr::MAX_REASON_LEN {
            return Err(EncodeError::ValueTooLong);
        }
        let slot = self.attr_slot(attr::ADDRESS_ERROR_CODE, attr::error_code_value_len(reason))?;
        attr::encode_address_error_code(slot, f, code, reason).map(drop)
    }

    /// Appends a MAC attribute of `N` bytes computed by `mac` over the message so far
    /// with the length field covering the new attribute.
    fn mac_attr<const N: usize>(
        &mut self,
        typ: u16,
        mac: impl FnOnce(&[u8; HEADER_LEN], &[u8]) -> [u8; N],
    ) -> Result<(), EncodeError> {
        let hdr = self.patched_header(4 + N)?;
        let body = self
            .buf
            .get(HEADER_LEN..self.len)
            .ok_or(EncodeError::BufferTooSmall)?;
        let value = mac(&hdr, body);
        self.attr(typ, &value)
    }

    /// Appends MESSAGE-INTEGRITY: HMAC-SHA1 with `key` over the message so far, with
    /// the length field already covering this attribute (RFC 8489 14.5).
    pub fn message_integrity(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        self.mac_attr(MESSAGE_INTEGRITY, |h, b| integrity::hmac_sha1(key, h, b))
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 in its full 32-byte form (RFC 8489 14.6).
    pub fn message_integrity_sha256(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        self.mac_attr(MESSAGE_INTEGRITY_SHA256, |h, b| {
            integrity::hmac_sha256(key, h, b)
        })
    }

    /// Appends FINGERPRINT: CRC-32 of the message so far (length covering this attribute)
    /// XOR 0x5354554E (RFC 8489 14.7). Should be the last attribute.
    pub fn fingerprint(&mut self) -> Result<(), EncodeError> {
        self.mac_attr(FINGERPRINT, |h, b| {
            integrity::fingerprint_value(h, b).to_be_bytes()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::attr::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    const TID: TransactionId = TransactionId([0xAA; 12]);

    fn header(typ: u16, len: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&typ.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        v.extend_from_slice(&TID.0);
        v
    }

    #[test]
    fn parse_header_fields() {
        let mut buf = [0u8; 64];
        let mut w = MessageWriter::new(&mut buf, Class::Error, Method::ALLOCATE, TID).unwrap();
        w.error_code(401, "Unauthorized").unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(m.class(), Class::Error);
        assert_eq!(m.method(), Method::ALLOCATE);
        assert_eq!(m.transaction_id(), TID);
        assert_eq!(m.raw().len(), n);
        let ec = m.get(ERROR_CODE).unwrap();
        assert_eq!(ec.offset, 20);
        assert_eq!(decode_error_code(ec.value), Ok((401, "Unauthorized")));
    }

    #[test]
    fn parse_rejects_bad_headers() {
        assert_eq!(Message::parse(&[0u8; 19]).err(), Some(ParseError::TooShort));
        let mut h = header(0x0001, 0);
        assert!(Message::parse(&h).is_ok());
        h[0] = 0x80;
        assert_eq!(Message::parse(&h).err(), Some(ParseError::NotStun));
        h[0] = 0x40;
        assert_eq!(Message::parse(&h).err(), Some(ParseError::NotStun));
        let mut h = header(0x0001, 0);
        h[7] ^= 1;
        assert_eq!(Message::parse(&h).err(), Some(ParseError::BadCookie));
        let h = header(0x0001, 2);
        assert_eq!(
            Message::parse(&[&h[..], &[0, 0]].concat()).err(),
            Some(ParseError::BadLength)
        );
        let h = header(0x0001, 3);
        assert_eq!(Message::parse(&h).err(), Some(ParseError::BadLength));
        let h = header(0x0001, 8);
        assert_eq!(
            Message::parse(&[&h[..], &[0; 4]].concat()).err(),
            Some(ParseError::Truncated)
        );
    }

    #[test]
    fn parse_rejects_truncated_attribute() {
        // Attribute claims 8 bytes but the body only has 4 after its header.
        let mut m = header(0x0001, 8);
        m.extend_from_slice(&[0x80, 0x22, 0x00, 0x08, 1, 2, 3, 4]);
        assert_eq!(Message::parse(&m).err(), Some(ParseError::BadAttribute));
        // Attribute of length 5 needs 8 padded bytes.
        let mut m = header(0x0001, 8);
        m.extend_from_slice(&[0x80, 0x22, 0x00, 0x05, 1, 2, 3, 4]);
        assert_eq!(Message::parse(&m).err(), Some(ParseError::BadAttribute));
        // Same attribute with room: fine, and trailing bytes are ignored.
        let mut m = header(0x0001, 12);
        m.extend_from_slice(&[0x80, 0x22, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0, 0xde, 0xad]);
        let msg = Message::parse(&m).unwrap();
        assert_eq!(msg.raw().len(), 32);
        assert_eq!(msg.get(SOFTWARE).unwrap().value, &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn get_ignores_attributes_after_integrity() {
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
        w.attr(USERNAME, b"alice").unwrap();
        w.message_integrity(b"key").unwrap();
        w.attr(REALM, b"late").unwrap();
        w.message_integrity_sha256(b"key").unwrap();
        w.attr(NONCE, b"late").unwrap();
        w.fingerprint().unwrap();
        w.attr(SOFTWARE, b"after-fp").unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert!(m.get(USERNAME).is_some());
        assert!(m.get(MESSAGE_INTEGRITY).is_some());
        assert!(m.get(REALM).is_none());
        assert!(m.get(MESSAGE_INTEGRITY_SHA256).is_some());
        assert!(m.get(NONCE).is_none());
        assert!(m.get(FINGERPRINT).is_some());
        assert!(m.get(SOFTWARE).is_none());
        assert_eq!(m.attributes().count(), 7);
        assert_eq!(m.visible_attributes().count(), 4);
    }

    #[test]
    fn unknown_comprehension_required_collects() {
        let mut buf = [0u8; 512];
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::ALLOCATE, TID).unwrap();
        w.attr(0x7001, b"").unwrap();
        w.requested_transport(PROTO_UDP).unwrap();
        w.attr(0x7001, b"x").unwrap(); // duplicate, reported once
        w.attr(0xC001, b"").unwrap(); // comprehension-optional
        for t in 0x7100..0x7110u16 {
            w.attr(t, b"").unwrap();
        }
        w.message_integrity(b"k").unwrap();
        w.attr(0x7fff, b"").unwrap(); // after MI: ignored
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        let mut out = [0u16; 8];
        let k =
            m.unknown_comprehension_required(&[REQUESTED_TRANSPORT, MESSAGE_INTEGRITY], &mut out);
        assert_eq!(k, 8);
        assert_eq!(
            out,
            [
                0x7001, 0x7100, 0x7101, 0x7102, 0x7103, 0x7104, 0x7105, 0x7106
            ]
        );

        let mut buf = [0u8; 64];
        let w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(m.unknown_comprehension_required(&[], &mut out), 0);
    }

    #[test]
    fn writer_errors_leave_state_unchanged() {
        let mut small = [0u8; 19];
        assert_eq!(
            MessageWriter::new(&mut small, Class::Request, Method::BINDING, TID).err(),
            Some(EncodeError::BufferTooSmall)
        );
        let mut buf = [0u8; 32];
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TID).unwrap();
        w.attr(SOFTWARE, b"abcd").unwrap();
        assert_eq!(w.len(), 28);
        assert_eq!(w.attr(SOFTWARE, b"a"), Err(EncodeError::BufferTooSmall));
        assert_eq!(w.error_code(200, "x"), Err(EncodeError::InvalidValue));
        assert_eq!(w.message_integrity(b"k"), Err(EncodeError::BufferTooSmall));
        assert_eq!(w.fingerprint(), Err(EncodeError::BufferTooSmall));
        assert_eq!(w.len(), 28);
        assert!(!w.is_empty());
        let n = w.finish();
        assert_eq!(&buf[2..4], &[0, 8]);
        assert!(Message::parse(&buf[..n]).is_ok());

        let mut big = vec![0u8; 70_000];
        let mut w = MessageWriter::new(&mut big, Class::Request, Method::BINDING, TID).unwrap();
        assert_eq!(w.attr(DATA, &[0; 0x1_0000]), Err(EncodeError::ValueTooLong));
        w.attr(DATA, &[0; 0xFFF0]).unwrap();
        assert_eq!(w.attr(DATA, &[0; 16]), Err(EncodeError::ValueTooLong));
        w.attr(DATA, &[0; 4]).unwrap();
        let n = w.finish();
        assert_eq!(n, 20 + 0xFFFC);
        assert!(Message::parse(&big[..n]).is_ok());
    }

    #[test]
    fn writer_encodes_turn_attributes() {
        let mut buf = [0u8; 256];
        let peer: SocketAddr = "[2001:db8::7]:9000".parse().unwrap();
        let mut w =
            MessageWriter::new(&mut buf, Class::Request, Method::CHANNEL_BIND, TID).unwrap();
        w.channel_number(0x4001).unwrap();
        w.xor_address(XOR_PEER_ADDRESS, peer).unwrap();
        w.address(ALTERNATE_SERVER, peer).unwrap();
        w.u32_attr(LIFETIME, 600).unwrap();
        w.address_family(REQUESTED_ADDRESS_FAMILY, Family::V6)
            .unwrap();
        w.address_error_code(Family::V4, 440, "Address Family not Supported")
            .unwrap();
        w.unknown_attributes(&[0x7777, 0x0031, 0x0001]).unwrap();
        w.attr_padded(SOFTWARE, b"tarn", b' ').unwrap();
        w.attr(EVEN_PORT, &[0x80]).unwrap();
        let n = w.finish();
        assert_eq!(&buf[2..4], &((n - 20) as u16).to_be_bytes());
        let m = Message::parse(&buf[..n]).unwrap();
        let tid = m.transaction_id();
        assert_eq!(
            decode_channel_number(m.get(CHANNEL_NUMBER).unwrap().value),
            Ok(0x4001)
        );
        assert_eq!(
            decode_xor_address(m.get(XOR_PEER_ADDRESS).unwrap().value, &tid),
            Ok(peer)
        );
        assert_eq!(
            decode_address(m.get(ALTERNATE_SERVER).unwrap().value),
            Ok(peer)
        );
        assert_eq!(decode_u32(m.get(LIFETIME).unwrap().value), Ok(600));
        assert_eq!(
            decode_address_family(m.get(REQUESTED_ADDRESS_FAMILY).unwrap().value),
            Ok(Ok(Family::V6))
        );
        assert_eq!(
            decode_address_error_code(m.get(ADDRESS_ERROR_CODE).unwrap().value),
            Ok((Ok(Family::V4), 440, "Address Family not Supported"))
        );
        let ua: Vec<u16> = decode_unknown_attributes(m.get(UNKNOWN_ATTRIBUTES).unwrap().value)
            .unwrap()
            .collect();
        assert_eq!(ua, vec![0x7777, 0x0031, 0x0001]);
        assert_eq!(decode_even_port(m.get(EVEN_PORT).unwrap().value), Ok(true));
        let ep = m.get(EVEN_PORT).unwrap();
        assert_eq!(
            &m.raw()[ep.offset..ep.end()],
            &[0, 0x18, 0, 1, 0x80, 0, 0, 0]
        );
        let sw = m.get(SOFTWARE).unwrap();
        assert_eq!(&m.raw()[sw.offset + 4..sw.end()], b"tarn");
    }

    #[test]
    fn writer_in_place_data() {
        let mut buf = [0xEEu8; 64];
        let payload = b"hello";
        // Payload already placed where the DATA value will go.
        buf[24..29].copy_from_slice(payload);
        let mut w = MessageWriter::new(&mut buf, Class::Indication, Method::DATA, TID).unwrap();
        w.attr_in_place(DATA, payload.len()).unwrap();
        let slot = w.attr_slot(SOFTWARE, 3).unwrap();
        assert_eq!(slot, &[0, 0, 0]);
        slot.copy_from_slice(b"abc");
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(m.get(DATA).unwrap().value, payload);
        assert_eq!(&m.raw()[29..32], &[0, 0, 0]);
        assert_eq!(m.get(SOFTWARE).unwrap().value, b"abc");
    }

    fn arb_attrs() -> impl Strategy<Value = Vec<(u16, Vec<u8>)>> {
        vec((any::<u16>(), vec(any::<u8>(), 0..48)), 0..12)
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(attrs in arb_attrs(), c in 0u16..4, m in 0u16..0x1000, tid in any::<[u8; 12]>()) {
            let mut buf = [0u8; 1024];
            let class = Class::from_bits(c);
            let tid = TransactionId(tid);
            let mut w = MessageWriter::new(&mut buf, class, Method(m), tid).unwrap();
            for (t, v) in &attrs {
                w.attr(*t, v).unwrap();
            }
            let n = w.finish();
            let msg = Message::parse(&buf[..n]).unwrap();
            prop_assert_eq!(msg.class(), class);
            prop_assert_eq!(msg.method(), Method(m));
            prop_assert_eq!(msg.transaction_id(), tid);
            prop_assert_eq!(msg.raw().len(), n);
            let got: Vec<(u16, Vec<u8>)> = msg.attributes().map(|a| (a.typ, a.value.to_vec())).collect();
            prop_assert_eq!(got, attrs);
        }

        #[test]
        fn parse_never_panics(buf in vec(any::<u8>(), 0..600), key in vec(any::<u8>(), 0..32)) {
            if let Ok(m) = Message::parse(&buf) {
                for a in m.attributes() {
                    prop_assert!(a.end() <= m.raw().len());
                    let _ = m.get(a.typ);
                }
                let mut out = [0u16; 8];
                let _ = m.unknown_comprehension_required(&[1, 6], &mut out);
                let _ = crate::proto::integrity::verify_message_integrity(&m, &key);
                let _ = crate::proto::integrity::verify_message_integrity_sha256(&m, &key);
                let _ = crate::proto::integrity::verify_fingerprint(&m);
                let _ = crate::proto::integrity::has_fingerprint(&m);
            }
        }

        #[test]
        fn parse_never_panics_with_valid_header(body in vec(any::<u8>(), 0..600), typ in 0u16..0x4000) {
            // Arbitrary bodies behind a well-formed header, to reach the attribute walker.
            let len = (body.len() & !3) as u16;
            let mut buf = header(typ, len);
            buf.extend_from_slice(&body);
            if let Ok(m) = Message::parse(&buf) {
                prop_assert_eq!(m.attributes().last().map_or(20, |a| a.end()), m.raw().len());
                let _ = crate::proto::integrity::verify_message_integrity(&m, b"k");
                let _ = crate::proto::integrity::verify_fingerprint(&m);
            }
        }
    }
}
