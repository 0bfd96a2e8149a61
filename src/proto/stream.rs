//! Frame delimitation for STUN over TCP/TLS (RFC 8489 6.2.2, RFC 8656 12.5):
//! STUN messages and ChannelData messages back to back, ChannelData padded to
//! a multiple of 4 bytes.

use super::{CHANNEL_DATA_HEADER_LEN, HEADER_LEN, is_valid_channel, pad4};

/// One frame found at the start of a stream buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A STUN message of this many bytes (header included).
    Stun(usize),
    /// A ChannelData message: `total` bytes on the stream (header and padding
    /// included) carrying `data_len` bytes of application data.
    ChannelData {
        /// Bytes the frame occupies on the stream, padding included.
        total: usize,
        /// Length of the application data.
        data_len: usize,
    },
}

impl Frame {
    /// Bytes this frame occupies on the stream.
    pub fn total(&self) -> usize {
        match *self {
            Frame::Stun(n) => n,
            Frame::ChannelData { total, .. } => total,
        }
    }
}

/// Why a stream can no longer be framed.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes are neither STUN nor ChannelData (or the STUN length is not a multiple of 4).
    #[error("stream is out of sync: not STUN or ChannelData")]
    Garbage,
    /// The frame is longer than the allowed maximum.
    #[error("frame exceeds the maximum size")]
    TooLarge,
}

/// Identifies the frame at the start of `buf` from its first 4 bytes, without
/// waiting for the whole frame: `Ok(None)` only if fewer than 4 bytes are there
/// (and the first byte is not already garbage). Use it to size a read; use
/// [`next_frame`] to know a frame is complete.
pub fn peek_frame(buf: &[u8], max_frame: usize) -> Result<Option<Frame>, FrameError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    let frame = match b0 >> 6 {
        0b00 => {
            let Some(&[_, _, l0, l1]) = buf.first_chunk::<4>() else {
                return Ok(None);
            };
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            if !len.is_multiple_of(4) {
                return Err(FrameError::Garbage);
            }
            Frame::Stun(HEADER_LEN + len)
        }
        0b01 => {
            if !is_valid_channel(u16::from_be_bytes([b0, 0])) {
                return Err(FrameError::Garbage);
            }
            let Some(&[_, _, l0, l1]) = buf.first_chunk::<4>() else {
                return Ok(None);
            };
            let data_len = usize::from(u16::from_be_bytes([l0, l1]));
            Frame::ChannelData {
                total: CHANNEL_DATA_HEADER_LEN + pad4(data_len),
                data_len,
            }
        }
        _ => return Err(FrameError::Garbage),
    };
    if frame.total() > max_frame {
        return Err(FrameError::TooLarge);
    }
    Ok(Some(frame))
}

/// Ok(None) = need more bytes. Looks at most at the first 4 bytes (STUN: 20 + length; ChannelData: 4 + len rounded up to 4). Frames longer than max_frame -> TooLarge; first two bits 10/11 or reserved channel range -> Garbage.
///
/// Returns `Some` only once the whole frame is in `buf`; the frame is then
/// `buf[..frame.total()]`. Errors are reported as soon as the header shows them.
pub fn next_frame(buf: &[u8], max_frame: usize) -> Result<Option<Frame>, FrameError> {
    Ok(peek_frame(buf, max_frame)?.filter(|f| f.total() <= buf.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        Class, Message, MessageWriter, Method, TransactionId, attr, encode_channel_data,
        parse_channel_data,
    };
    use proptest::collection::vec;
    use proptest::prelude::*;

    const MAX: usize = 4096;

    fn stun(buf: &mut [u8]) -> usize {
        let mut w =
            MessageWriter::new(buf, Class::Request, Method::BINDING, TransactionId([3; 12]))
                .unwrap();
        w.attr(attr::SOFTWARE, b"tarn").unwrap();
        w.fingerprint().unwrap();
        w.finish()
    }

    #[test]
    fn split_needs_more() {
        let mut buf = [0u8; 64];
        let n = stun(&mut buf);
        for cut in 0..n {
            assert_eq!(next_frame(&buf[..cut], MAX), Ok(None), "cut {cut}");
        }
        assert_eq!(next_frame(&buf[..n], MAX), Ok(Some(Frame::Stun(n))));
        assert_eq!(peek_frame(&buf[..4], MAX), Ok(Some(Frame::Stun(n))));
        assert_eq!(peek_frame(&buf[..3], MAX), Ok(None));

        let n = encode_channel_data(&mut buf, 0x4000, b"abcde", true).unwrap();
        for cut in 0..n {
            assert_eq!(next_frame(&buf[..cut], MAX), Ok(None), "cut {cut}");
        }
        assert_eq!(
            next_frame(&buf[..n], MAX),
            Ok(Some(Frame::ChannelData {
                total: 12,
                data_len: 5
            }))
        );
    }

    #[test]
    fn coalesced_frames() {
        let mut buf = [0u8; 128];
        let a = stun(&mut buf);
        let b = encode_channel_data(&mut buf[a..], 0x4ABC, b"xyz", true).unwrap();
        let c = stun(&mut buf[a + b..]);
        let all = &buf[..a + b + c];

        let f1 = next_frame(all, MAX).unwrap().unwrap();
        assert_eq!(f1, Frame::Stun(a));
        assert!(Message::parse(&all[..f1.total()]).is_ok());
        let rest = &all[f1.total()..];
        let f2 = next_frame(rest, MAX).unwrap().unwrap();
        assert_eq!(
            f2,
            Frame::ChannelData {
                total: 8,
                data_len: 3
            }
        );
        assert_eq!(
            parse_channel_data(&rest[..f2.total()]).unwrap().data,
            b"xyz"
        );
        let rest = &rest[f2.total()..];
        assert_eq!(next_frame(rest, MAX), Ok(Some(Frame::Stun(c))));
        assert_eq!(next_frame(&rest[c..], MAX), Ok(None));
    }

    #[test]
    fn padded_channel_data() {
        for (len, total) in [(0usize, 4usize), (1, 8), (3, 8), (4, 8), (5, 12), (8, 12)] {
            let hdr = [0x40, 0x01, 0, len as u8];
            assert_eq!(
                peek_frame(&hdr, MAX),
                Ok(Some(Frame::ChannelData {
                    total,
                    data_len: len
                }))
            );
            // Unpadded bytes are not a complete frame on a stream.
            let mut v = hdr.to_vec();
            v.resize(4 + len, 0);
            let expect = if len.is_multiple_of(4) {
                Ok(Some(Frame::ChannelData {
                    total,
                    data_len: len,
                }))
            } else {
                Ok(None)
            };
            assert_eq!(next_frame(&v, MAX), expect);
        }
    }

    #[test]
    fn oversized() {
        assert_eq!(
            next_frame(&[0x00, 0x01, 0x10, 0x00], 1024),
            Err(FrameError::TooLarge)
        );
        assert_eq!(next_frame(&[0x00, 0x01, 0x03, 0xEC], 1024), Ok(None));
        assert_eq!(
            next_frame(&[0x00, 0x01, 0x03, 0xF0], 1024),
            Err(FrameError::TooLarge)
        );
        assert_eq!(next_frame(&[0x40, 0x00, 0x03, 0xFC], 1024), Ok(None));
        assert_eq!(
            next_frame(&[0x40, 0x00, 0x03, 0xFD], 1024),
            Err(FrameError::TooLarge)
        );
    }

    #[test]
    fn garbage() {
        assert_eq!(next_frame(&[0x80], MAX), Err(FrameError::Garbage));
        assert_eq!(next_frame(&[0xC0, 0, 0, 0], MAX), Err(FrameError::Garbage));
        assert_eq!(
            next_frame(&[0x50, 0, 0, 0], MAX),
            Ok(Some(Frame::ChannelData {
                total: 4,
                data_len: 0
            }))
        );
        assert_eq!(
            next_frame(&[0x00, 0x01, 0x00, 0x05], MAX),
            Err(FrameError::Garbage)
        );
        assert_eq!(
            next_frame(&[0x16, 0x03, 0x01, 0x02], MAX),
            Err(FrameError::Garbage)
        ); // TLS record (len not /4)
        assert_eq!(next_frame(&[0x40], MAX), Ok(None));
        assert_eq!(next_frame(&[], MAX), Ok(None));
    }

    proptest! {
        #[test]
        fn next_frame_never_panics(buf in vec(any::<u8>(), 0..600), max in any::<usize>()) {
            if let Ok(Some(f)) = next_frame(&buf, max) {
                prop_assert!(f.total() <= buf.len());
                prop_assert!(f.total() <= max);
            }
            let _ = peek_frame(&buf, max);
        }
    }
}
