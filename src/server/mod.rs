//! The I/O edge: sockets, threads, signals. The protocol itself lives in
//! [`crate::relay`] (decisions) and [`crate::proto`] (bytes).
//!
//! Start-up binds every listener before any thread starts, so a bad address fails
//! fast and port 0 resolves to one concrete port shared by all shards. Then one shard
//! thread per core runs, each with SO_REUSEPORT siblings of the listeners; the kernel
//! keeps a client's 5-tuple on one shard. The main thread waits for signals.

mod addresses;
mod control;
mod heap;
mod limits;
mod mmsg;
mod relay_poll;
mod relay_socket;
mod shard;
mod stream;
pub mod tls;
mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::auth::NonceKey;
use crate::config::Config;
use crate::relay::Quotas;
use crate::stats::Stats;
pub use addresses::RelayIps;
pub use control::LogReload;
use relay_socket::RelayBinding;

/// Socket buffer size asked for on UDP listeners.
const LISTENER_BUFFER: usize = 4 << 20;

/// The realm: `server.realm`, or the host name.
pub fn realm(config: &Config) -> String {
    if !config.server.realm.is_empty() {
        return config.server.realm.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tarn".to_string())
}

/// Runs the daemon until SIGINT or SIGTERM (and the drain that follows).
/// `config_path` is re-read on SIGHUP; `log_reload` applies a new log filter.
pub fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    log_reload: Option<LogReload>,
) -> anyhow::Result<()> {
    crate::redact::set_mode(config.log.client_addresses);
    heap::configure();
    raise_open_file_limit();
    let loaded = crate::secrets::load(&config).map_err(anyhow::Error::msg)?;
    let threads = match config.server.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };

    // Bind all listeners first: errors surface before anything runs.
    let mut per_shard: Vec<ShardSockets> = (0..threads).map(|_| ShardSockets::default()).collect();
    let mut listening = Vec::new();
    let mut listening_tcp = Vec::new();
    for addr in &config.server.listen {
        match bind_udp_and_tcp(*addr, threads) {
            Ok((udp, tcp)) => {
                listening.push(udp[0].local_addr()?);
                listening_tcp.push(tcp[0].local_addr()?);
                for ((shard, u), t) in per_shard.iter_mut().zip(udp).zip(tcp) {
                    shard.udp.push(u);
                    shard.tcp.push(t);
                }
            }
            Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() && is_no_ipv6(&e) => {
                tracing::warn!(listen = %addr, "IPv6 is not available here; not listening on it");
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
        }
    }
    let certs = match (&config.tls.certificate, &config.tls.private_key) {
        (Some(cert), Some(key)) => Some(
            tls::CertStore::load(cert.clone(), key.clone())
                .context("cannot load the TLS certificate")?,
        ),
        _ => None,
    };
    let tls_config = match &certs {
        Some(store) => Some(store.server_config().context("TLS configuration")?),
        None => None,
    };
    let mut listening_tls = Vec::new();
    if certs.is_some() {
        for addr in &config.server.tls_listen {
            match stream::bind_listeners(*addr, threads) {
                Ok(listeners) => {
                    listening_tls.push(listeners[0].local_addr()?);
                    for (shard, l) in per_shard.iter_mut().zip(listeners) {
                        shard.tls.push(l);
                    }
                }
                Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() && is_no_ipv6(&e) => {
                    tracing::warn!(listen = %addr, "IPv6 is not available here; not listening on it");
                }
                Err(e) => return Err(e).with_context(|| format!("cannot listen on tls {addr}")),
            }
        }
    }
    let streams = stream::StreamSettings {
        limits: limits::ConnectionLimits::new(
            config.limits.max_connections,
            config.limits.connections_per_address,
        ),
        idle_timeout: Duration::from_secs(config.limits.idle_timeout),
        handshake_timeout: Duration::from_secs(config.tls.handshake_timeout),
    };

    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(
            crate::metrics::bind(addr)
                .with_context(|| format!("cannot listen for metrics on {addr}"))?,
        ),
        None => None,
    };

    let relay_ips = addresses::relay_ips(&config);
    let mut listening_all = [listening.as_slice(), &listening_tcp, &listening_tls].concat();
    if let Some(m) = &metrics_listener {
        listening_all.push(m.local_addr()?);
    }
    let own = addresses::own_addresses(&config, &relay_ips, &listening_all);
    let settings = Arc::new(control::build_settings(
        &config,
        loaded.secrets,
        own,
        threads,
    ));
    let nonce_key = Arc::new(NonceKey::random());
    let quotas = Quotas::new(
        config.limits.max_allocations,
        config.limits.allocations_per_user,
        config.limits.allocations_per_address,
    );
    let (settings_tx, settings_rx) = watch::channel(Arc::clone(&settings));
    let draining = Arc::new(AtomicBool::new(false));
    let binding = RelayBinding {
        v4: relay_ips.v4,
        v6: relay_ips.v6,
        ports: config.server.relay_ports.0.clone(),
        reservations: Arc::default(),
    };

    // Signal handlers go in before "ready", so a signal right after it is handled.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signals = runtime.block_on(async { control::Signals::install() })?;

    let (stop, stopped) = watch::channel(false);
    let mut handles = Vec::new();
    let mut shard_stats = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(threads);
    for (i, sockets) in per_shard.into_iter().enumerate() {
        let stats = Arc::new(Stats::default());
        shard_stats.push(Arc::clone(&stats));
        let start = shard::ShardStart {
            settings: settings_rx.clone(),
            draining: Arc::clone(&draining),
            nonce_key: Arc::clone(&nonce_key),
            quotas: Arc::clone(&quotas),
            binding: binding.clone(),
            stats,
            udp: sockets.udp,
            tcp: sockets.tcp,
            tls: sockets.tls,
            tls_config: tls_config.clone(),
            streams: streams.clone(),
            shutdown: stopped.clone(),
            ready: ready_tx.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("tarn-shard-{i}"))
            .spawn(move || shard::run(start))?;
        handles.push(handle);
    }
    drop(ready_tx);
    // "listening" and "ready" are promises to whoever reads the log (tests, scripts,
    // orchestrators): wait until every shard serves, and fail if one could not start.
    for _ in 0..handles.len() {
        if ready_rx.recv().is_err() {
            let _ = stop.send(true);
            for handle in handles {
                if let Ok(Err(e)) = handle.join() {
                    return Err(e.into());
                }
            }
            anyhow::bail!("a shard thread stopped during start-up");
        }
    }

    for addr in &listening {
        tracing::info!(udp = %addr, "listening");
    }
    for addr in &listening_tcp {
        tracing::info!(tcp = %addr, "listening");
    }
    for addr in &listening_tls {
        tracing::info!(tls = %addr, "listening");
    }
    let health = Arc::new(crate::metrics::Health::default());
    if let Some(listener) = metrics_listener {
        tracing::info!(metrics = %listener.local_addr()?, "listening");
        let endpoint = crate::metrics::Endpoint::new(
            shard_stats.clone(),
            config.metrics.expose_version,
            config.metrics.bearer_token.clone(),
            Arc::clone(&health),
        );
        let _guard = runtime.enter();
        runtime.spawn(crate::metrics::serve(listener, endpoint));
    }
    tracing::info!(
        realm = %settings.realm,
        relay_v4 = ?relay_ips.v4,
        relay_v6 = ?relay_ips.v6,
        relay_ports = ?binding.ports,
        external_v4 = ?settings.external_v4,
        external_v6 = ?settings.external_v6,
        shards = threads,
        secrets = settings.secrets.len(),
        client_addresses = ?config.log.client_addresses,
        "ready"
    );

    if let Some(store) = &certs
        && config.tls.reload_interval > 0
    {
        runtime.spawn(Arc::clone(store).watch(Duration::from_secs(config.tls.reload_interval)));
    }
    let control = control::Control {
        config_path,
        relay_ips,
        listening: listening_all,
        shards: threads,
        settings: settings_tx,
        quotas: Arc::clone(&quotas),
        connections: Arc::clone(&streams.limits),
        certs: certs.clone(),
        draining,
        health,
        log_reload,
        config,
    };
    runtime.block_on(control.run(signals));
    tracing::info!("stopping");
    let _ = stop.send(true);
    for handle in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "shard stopped with an error"),
            Err(_) => tracing::warn!("shard panicked"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft open-file limit to the hard one: every allocation holds a relay
/// socket, and the common soft default (1024) would cap a server at about a thousand
/// allocations although the hard limit allows many more.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let wanted = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
            tracing::debug!(
                from = limit.rlim_cur,
                to = limit.rlim_max,
                "raised the open-file limit"
            );
        }
    }
}

fn is_no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

/// The listener sockets one shard gets.
#[derive(Default)]
struct ShardSockets {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
    tls: Vec<std::net::TcpListener>,
}

/// Binds UDP and TCP on the same address and port for every shard. With port 0 the
/// UDP port is chosen first and TCP follows it; if that TCP port is taken, try again.
fn bind_udp_and_tcp(
    addr: SocketAddr,
    count: usize,
) -> io::Result<(Vec<std::net::UdpSocket>, Vec<std::net::TcpListener>)> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = bind_udp(addr, count)?;
        let port = udp[0].local_addr()?.port();
        match stream::bind_listeners(SocketAddr::new(addr.ip(), port), count) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port")))
}

/// Binds `count` SO_REUSEPORT UDP sockets on `addr` (port 0 resolves once, for all).
fn bind_udp(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    let mut sockets = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        // Every client datagram of a shard lands in this one socket: the 208 KiB
        // default overflows under load (measured: 3-4 % loss at saturation, none
        // with 4 MiB). The kernel caps it at net.core.rmem_max; best effort.
        let _ = socket.set_recv_buffer_size(LISTENER_BUFFER);
        let _ = socket.set_send_buffer_size(LISTENER_BUFFER);
        socket.bind(&addr.into())?;
        let std: std::net::UdpSocket = socket.into();
        addr = std.local_addr()?;
        sockets.push(std);
    }
    Ok(sockets)
}
