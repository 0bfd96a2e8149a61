//! Which local IPs relay sockets bind to, what they announce, and which addresses
//! count as the daemon's own for the peer policy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use crate::config::Config;
use crate::policy::OwnAddresses;

/// Relay IPs per family (`None`: no relaying on that family).
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayIps {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
}

/// Chooses relay IPs: `server.relay_address`, else a specific listen IP of the family,
/// else the source address the kernel would use for a public destination. The last
/// is a route lookup: connecting a UDP socket sends nothing.
pub fn relay_ips(config: &Config) -> RelayIps {
    let pick = |v4: bool| -> Option<IpAddr> {
        let family = |ip: &IpAddr| ip.is_ipv4() == v4;
        if let Some(ip) = config.server.relay_address.iter().find(|ip| family(ip)) {
            return Some(*ip);
        }
        if let Some(addr) = config
            .server
            .listen
            .iter()
            .find(|a| family(&a.ip()) && !a.ip().is_unspecified())
        {
            return Some(addr.ip());
        }
        route_source(v4)
    };
    let mut ips = RelayIps {
        v4: pick(true),
        v6: pick(false),
    };
    if ips.v4.is_none() && ips.v6.is_none() {
        tracing::warn!(
            "no route to the outside found: relaying on 127.0.0.1 only; set server.relay_address"
        );
        ips.v4 = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    ips
}

/// The kernel's source address towards a documentation-range destination, if it has a route.
fn route_source(v4: bool) -> Option<IpAddr> {
    let (bind, probe): (SocketAddr, SocketAddr) = if v4 {
        (([0, 0, 0, 0], 0).into(), ([192, 0, 2, 1], 9).into())
    } else {
        (
            ([0u16; 8], 0).into(),
            ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 9).into(),
        )
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(probe).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Addresses a peer may not have: ours (no TURN loops, no reaching the host's services).
/// `listening` holds every address actually bound (UDP, TCP, TLS, metrics).
pub fn own_addresses(config: &Config, relay: &RelayIps, listening: &[SocketAddr]) -> OwnAddresses {
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut add = |ip: IpAddr| {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    };
    relay.v4.into_iter().chain(relay.v6).for_each(&mut add);
    config
        .server
        .external_address
        .iter()
        .copied()
        .for_each(&mut add);
    listening
        .iter()
        .chain(&config.server.tls_listen)
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .for_each(&mut add);
    let mut ports: Vec<u16> = listening
        .iter()
        .chain(&config.server.tls_listen)
        .map(|a| a.port())
        .collect();
    // Port 0 is never a bound port (a config may say ":0" for "any"); the caller
    // passes the addresses actually bound, metrics included.
    ports.retain(|p| *p != 0);
    ports.sort_unstable();
    ports.dedup();
    OwnAddresses {
        ips,
        ports,
        relay_ports: config.server.relay_ports.0.clone(),
    }
}
