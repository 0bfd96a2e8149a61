//! Core target: a sans-IO `tarn::relay::Core` with an in-memory `RelayIo`, driven
//! by a sequence of client datagrams, authenticated requests, peer datagrams and
//! time steps decoded from the input. See `tarn_fuzz_harness::core`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tarn_fuzz_harness::core::run(data);
});
