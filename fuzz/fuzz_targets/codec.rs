//! Codec target: `Message::parse`, every attribute decoder, integrity and
//! fingerprint checks, ChannelData and stream framing on arbitrary bytes, plus
//! re-encode/re-parse differential properties. See `tarn_fuzz_harness::codec`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tarn_fuzz_harness::codec::run(data);
});
