//! The main thread's job once the shards run: signals, live reload and drain.
//!
//! SIGHUP re-reads the configuration file and the secrets it names and, if all of it
//! is valid, swaps in new settings everywhere at once (each shard receives one
//! `Arc<Settings>` snapshot through a watch channel; nothing is half-applied). Secrets,
//! peer policy, quotas, lifetimes, rate and bandwidth limits and log settings change
//! without dropping an allocation; keys that need new sockets or threads are reported
//! as needing a restart. An invalid file is refused and the old settings stay.
//!
//! SIGTERM (or SIGINT) drains: new allocations are refused (508), `/healthz` answers
//! 503 so an orchestrator sends new clients elsewhere, existing allocations relay
//! until they end or `server.drain_timeout` passes; a second signal stops at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use super::limits::ConnectionLimits;
use super::tls::CertStore;
use crate::config::Config;
use crate::metrics::Health;
use crate::policy::{OwnAddresses, PeerPolicy};
use crate::relay::{Quotas, Settings};

/// Applies a new log filter (the binary owns the subscriber).
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send>;

/// How often a drain checks whether the last allocation has ended.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// Builds the core settings from a configuration snapshot.
pub fn build_settings(
    config: &Config,
    secrets: Vec<crate::auth::Secret>,
    own: OwnAddresses,
    shards: usize,
) -> Settings {
    let external = |v4: bool| {
        config
            .server
            .external_address
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == v4)
    };
    let limits = &config.limits;
    let kbps = |k: u64| k as f64 * 1000.0 / 8.0;
    Settings {
        realm: super::realm(config),
        software: Some(config.server.software.clone()).filter(|s| !s.is_empty()),
        secrets,
        nonce_lifetime: config.auth.nonce_lifetime,
        default_lifetime: Duration::from_secs(config.allocation.default_lifetime),
        max_lifetime: Duration::from_secs(config.allocation.max_lifetime),
        permission_lifetime: Duration::from_secs(config.allocation.permission_lifetime),
        channel_lifetime: Duration::from_secs(config.allocation.channel_lifetime),
        permissions_per_allocation: limits.permissions_per_allocation as usize,
        channels_per_allocation: limits.channels_per_allocation as usize,
        policy: PeerPolicy::new(config.peers.allow.clone(), config.peers.allow_only, own),
        external_v4: external(true),
        external_v6: external(false),
        unauthenticated_rate: f64::from(limits.unauthenticated_rate),
        unauthenticated_burst: f64::from(limits.unauthenticated_burst.max(1)),
        allocation_bandwidth: kbps(limits.allocation_bandwidth_kbps),
        shard_bandwidth: kbps(limits.total_bandwidth_kbps) / shards.max(1) as f64,
    }
}

/// The signals the daemon reacts to.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers (before "ready", so an early signal is not fatal).
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// What the main thread controls.
pub struct Control {
    pub config_path: Option<PathBuf>,
    pub config: Config,
    pub relay_ips: super::RelayIps,
    pub listening: Vec<std::net::SocketAddr>,
    pub shards: usize,
    pub settings: watch::Sender<Arc<Settings>>,
    pub quotas: Arc<Quotas>,
    pub connections: Arc<ConnectionLimits>,
    pub certs: Option<Arc<CertStore>>,
    pub draining: Arc<AtomicBool>,
    pub health: Arc<Health>,
    pub log_reload: Option<LogReload>,
}

impl Control {
    /// Runs until the daemon should stop: reloads on SIGHUP, drains on the first
    /// SIGTERM/SIGINT, stops on the second or when the drain is over.
    pub async fn run(mut self, mut signals: Signals) {
        loop {
            tokio::select! {
                _ = signals.term.recv() => break,
                _ = signals.int.recv() => break,
                _ = signals.hup.recv() => self.reload(),
            }
        }
        let timeout = Duration::from_secs(self.config.server.drain_timeout);
        if timeout.is_zero() || self.quotas.total() == 0 {
            return;
        }
        self.draining.store(true, Ordering::Relaxed);
        self.health.set_draining();
        tracing::info!(
            allocations = self.quotas.total(),
            timeout_seconds = timeout.as_secs(),
            "draining: new allocations are refused; a second signal stops at once"
        );
        let deadline = Instant::now() + timeout;
        let mut poll = tokio::time::interval(DRAIN_POLL);
        loop {
            tokio::select! {
                _ = signals.term.recv() => {
                    tracing::info!("second signal: stopping now");
                    return;
                }
                _ = signals.int.recv() => {
                    tracing::info!("second signal: stopping now");
                    return;
                }
                _ = signals.hup.recv() => self.reload(),
                _ = poll.tick() => {
                    if self.quotas.total() == 0 {
                        tracing::info!("drained: no allocation left");
                        return;
                    }
                    if Instant::now() >= deadline {
                        tracing::info!(allocations = self.quotas.total(), "drain timeout reached");
                        return;
                    }
                }
            }
        }
    }

    /// SIGHUP: the TLS certificate, then the configuration file.
    fn reload(&mut self) {
        if let Some(store) = &self.certs {
            store.reload();
        }
        let Some(path) = self.config_path.clone() else {
            tracing::info!("SIGHUP: no configuration file to reload");
            return;
        };
        match self.load(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "configuration reloaded"),
            Err(e) => tracing::error!(
                path = %path.display(),
                error = %e,
                "configuration reload refused; the running configuration stays"
            ),
        }
    }

    fn load(&mut self, path: &std::path::Path) -> Result<(), String> {
        let new = Config::load(path).map_err(|e| e.to_string())?;
        let secrets = crate::secrets::load(&new)?;
        if let Some(filter) = (new.log.level != self.config.log.level).then_some(&new.log.level)
            && let Some(apply) = &self.log_reload
        {
            apply(filter)?;
        }
        for key in restart_needed(&self.config, &new) {
            tracing::warn!(
                key,
                "changed in the file, but takes effect only after a restart"
            );
        }
        let own = super::addresses::own_addresses(&new, &self.relay_ips, &self.listening);
        let settings = build_settings(&new, secrets.secrets, own, self.shards);
        crate::redact::set_mode(new.log.client_addresses);
        let l = &new.limits;
        self.quotas.set_limits(
            l.max_allocations,
            l.allocations_per_user,
            l.allocations_per_address,
        );
        self.connections
            .set_limits(l.max_connections, l.connections_per_address);
        let _ = self.settings.send(Arc::new(settings));
        self.config = new;
        Ok(())
    }
}

/// Keys whose change needs a restart (sockets, threads, the TLS file paths).
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            keys.push(key);
        }
    };
    check(o.listen != n.listen, "server.listen");
    check(o.tls_listen != n.tls_listen, "server.tls_listen");
    check(o.relay_ports != n.relay_ports, "server.relay_ports");
    check(o.relay_address != n.relay_address, "server.relay_address");
    check(o.threads != n.threads, "server.threads");
    check(
        o.state_directory != n.state_directory,
        "server.state_directory",
    );
    check(
        old.tls.certificate != new.tls.certificate,
        "tls.certificate",
    );
    check(
        old.tls.private_key != new.tls.private_key,
        "tls.private_key",
    );
    check(
        old.tls.handshake_timeout != new.tls.handshake_timeout,
        "tls.handshake_timeout",
    );
    check(
        old.tls.reload_interval != new.tls.reload_interval,
        "tls.reload_interval",
    );
    check(
        old.limits.idle_timeout != new.limits.idle_timeout,
        "limits.idle_timeout",
    );
    check(old.log.format != new.log.format, "log.format");
    check(old.metrics.listen != new.metrics.listen, "metrics.listen");
    check(
        old.metrics.bearer_token != new.metrics.bearer_token,
        "metrics.bearer_token",
    );
    check(
        old.metrics.expose_version != new.metrics.expose_version,
        "metrics.expose_version",
    );
    keys
}
