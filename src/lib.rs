//! tarn: a privacy-first STUN/TURN relay daemon.
//!
//! The crate is split the way `quinn` splits `quinn-proto` from `quinn`:
//! - [`proto`]: the STUN/TURN codec, pure functions over byte slices;
//! - [`relay`]: the sans-IO server (allocations, permissions, channels, timers), fed
//!   bytes and time, answering with what to send where;
//! - [`auth`], [`policy`]: credential and peer-address decisions, also sans-IO;
//! - [`server`]: the I/O edge (sockets, shard threads, signals);
//! - [`config`], [`secrets`], [`redact`], [`stats`], [`metrics`]: configuration,
//!   secret sources, log redaction, counters and their Prometheus endpoint.

pub mod auth;
pub mod config;
pub mod metrics;
pub mod policy;
pub mod proto;
pub mod redact;
pub mod relay;
pub mod secrets;
pub mod server;
pub mod stats;
