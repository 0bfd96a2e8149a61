//! Fuzz harnesses for tarn, as a plain library.
//!
//! - [`codec`]: the wire codec on arbitrary bytes (no-panic plus differential
//!   properties: what parses re-encodes to the same attributes, what is signed
//!   verifies, frames found on a stream parse).
//! - [`core`]: the sans-IO relay core driven by a decoded [`core::Scenario`] of
//!   client datagrams, authenticated requests, peer datagrams and time steps, with
//!   invariants checked after every step.
//!
//! The libFuzzer entry points in `fuzz/fuzz_targets/` call [`codec::run`] and
//! [`core::run`]; `tests/replay.rs` runs the committed seeds and regressions through
//! the same functions on a stable toolchain.

pub mod codec;
pub mod core;
pub mod seeds;
