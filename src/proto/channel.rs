//! ChannelData messages (RFC 8656 12.4): a 4-byte header (channel number,
//! data length) followed by the application data.

use super::{EncodeError, ParseError, is_valid_channel, pad4};

/// Length of the ChannelData header.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

/// A parsed ChannelData message borrowing its payload from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// Channel number (0x4000..=0x7FFF).
    pub channel: u16,
    /// Application data (exactly the header's length, padding excluded).
    pub data: &'a [u8],
}

/// Channel number 0x4000..=0x7FFF, length field <= buf.len()-4 (UDP may carry padding or trailing bytes; they are ignored).
pub fn parse_channel_data(buf: &[u8]) -> Result<ChannelData<'_>, ParseError> {
    let (&[c0, c1, l0, l1], rest) = buf
        .split_first_chunk::<CHANNEL_DATA_HEADER_LEN>()
        .ok_or(ParseError::TooShort)?;
    let channel = u16::from_be_bytes([c0, c1]);
    if !is_valid_channel(channel) {
        return Err(ParseError::BadChannel);
    }
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    let data = rest.get(..len).ok_or(ParseError::Truncated)?;
    Ok(ChannelData { channel, data })
}

/// Writes only the 4 header bytes (for in-place relay: payload already sits after it).
pub fn write_channel_data_header(
    buf: &mut [u8],
    channel: u16,
    data_len: u16,
) -> Result<(), EncodeError> {
    if !is_valid_channel(channel) {
        return Err(EncodeError::InvalidValue);
    }
    let hdr = buf
        .first_chunk_mut::<CHANNEL_DATA_HEADER_LEN>()
        .ok_or(EncodeError::BufferTooSmall)?;
    let [c0, c1] = channel.to_be_bytes();
    let [l0, l1] = data_len.to_be_bytes();
    *hdr = [c0, c1, l0, l1];
    Ok(())
}

/// Writes header + data (+ zero padding to 4 when `pad`), returns bytes written.
/// Fails with [`EncodeError::InvalidValue`] for a channel outside 0x4000..=0x7FFF.
pub fn encode_channel_data(
    buf: &mut [u8],
    channel: u16,
    data: &[u8],
    pad: bool,
) -> Result<usize, EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::ValueTooLong)?;
    if !is_valid_channel(channel) {
        return Err(EncodeError::InvalidValue);
    }
    let body = if pad { pad4(data.len()) } else { data.len() };
    let total = CHANNEL_DATA_HEADER_LEN + body;
    let out = buf.get_mut(..total).ok_or(EncodeError::BufferTooSmall)?;
    write_channel_data_header(out, channel, len)?;
    let (_, rest) = out.split_at_mut(CHANNEL_DATA_HEADER_LEN);
    let (d, p) = rest.split_at_mut(data.len());
    d.copy_from_slice(data);
    p.fill(0);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    #[test]
    fn round_trip_padded_and_unpadded() {
        let mut buf = [0xFFu8; 16];
        let n = encode_channel_data(&mut buf, 0x4001, b"hello", true).unwrap();
        assert_eq!(n, 12);
        assert_eq!(
            &buf[..12],
            &[0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o', 0, 0, 0]
        );
        let cd = parse_channel_data(&buf[..n]).unwrap();
        assert_eq!(
            cd,
            ChannelData {
                channel: 0x4001,
                data: b"hello"
            }
        );
        let n = encode_channel_data(&mut buf, 0x4FFF, b"hello", false).unwrap();
        assert_eq!(n, 9);
        assert_eq!(parse_channel_data(&buf[..n]).unwrap().data, b"hello");
        let n = encode_channel_data(&mut buf, 0x4000, b"", true).unwrap();
        assert_eq!(n, 4);
        assert_eq!(parse_channel_data(&buf[..n]).unwrap().data, b"");
    }

    #[test]
    fn trailing_bytes_ignored() {
        let cd = parse_channel_data(&[0x40, 0x00, 0, 2, 1, 2, 0, 0, 9, 9]).unwrap();
        assert_eq!(cd.data, &[1, 2]);
    }

    #[test]
    fn channel_out_of_range() {
        assert_eq!(
            parse_channel_data(&[0x3F, 0xFF, 0, 0]),
            Err(ParseError::BadChannel)
        );
        // RFC 5766's wider range stays accepted (coturn's client uses it).
        assert!(parse_channel_data(&[0x50, 0x00, 0, 0]).is_ok());
        assert!(parse_channel_data(&[0x7F, 0xFF, 0, 0]).is_ok());
        assert_eq!(
            parse_channel_data(&[0x80, 0x00, 0, 0]),
            Err(ParseError::BadChannel)
        );
        let mut buf = [0u8; 8];
        assert_eq!(
            encode_channel_data(&mut buf, 0x8000, b"", true),
            Err(EncodeError::InvalidValue)
        );
        assert_eq!(
            encode_channel_data(&mut buf, 0x3FFF, b"", true),
            Err(EncodeError::InvalidValue)
        );
        assert_eq!(
            write_channel_data_header(&mut buf, 0x0001, 0),
            Err(EncodeError::InvalidValue)
        );
    }

    #[test]
    fn length_beyond_buffer() {
        assert_eq!(
            parse_channel_data(&[0x40, 0x00, 0, 5, 1, 2, 3, 4]),
            Err(ParseError::Truncated)
        );
        assert_eq!(
            parse_channel_data(&[0x40, 0x00, 0xFF, 0xFF]),
            Err(ParseError::Truncated)
        );
        assert_eq!(
            parse_channel_data(&[0x40, 0x00, 0]),
            Err(ParseError::TooShort)
        );
    }

    #[test]
    fn encode_buffer_limits() {
        let mut buf = [0u8; 8];
        assert_eq!(
            encode_channel_data(&mut buf, 0x4000, b"hello", true),
            Err(EncodeError::BufferTooSmall)
        );
        assert_eq!(encode_channel_data(&mut buf, 0x4000, b"hell", true), Ok(8));
        assert_eq!(
            write_channel_data_header(&mut buf[..3], 0x4000, 0),
            Err(EncodeError::BufferTooSmall)
        );
        let big = vec![0u8; 0x1_0000];
        let mut out = vec![0u8; 0x1_0008];
        assert_eq!(
            encode_channel_data(&mut out, 0x4000, &big, false),
            Err(EncodeError::ValueTooLong)
        );
    }

    #[test]
    fn header_only_in_place() {
        let mut buf = [0u8; 9];
        buf[4..].copy_from_slice(b"abcde");
        write_channel_data_header(&mut buf, 0x4123, 5).unwrap();
        assert_eq!(
            parse_channel_data(&buf).unwrap(),
            ChannelData {
                channel: 0x4123,
                data: b"abcde"
            }
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(buf in vec(any::<u8>(), 0..600)) {
            if let Ok(cd) = parse_channel_data(&buf) {
                prop_assert!(cd.data.len() + 4 <= buf.len());
            }
        }

        #[test]
        fn encode_parse_round_trip(ch in 0x4000u16..=0x4FFF, data in vec(any::<u8>(), 0..300), pad in any::<bool>()) {
            let mut buf = [0u8; 512];
            let n = encode_channel_data(&mut buf, ch, &data, pad).unwrap();
            prop_assert_eq!(n.is_multiple_of(4), pad || data.len().is_multiple_of(4));
            let cd = parse_channel_data(&buf[..n]).unwrap();
            prop_assert_eq!(cd.channel, ch);
            prop_assert_eq!(cd.data, &data[..]);
        }
    }
}
