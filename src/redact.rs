//! The one place that decides how a client's transport address appears in a log line.
//!
//! Privacy is a code rule in tarn: every log line that concerns a client passes the
//! address through [`client`] (or [`client_ip`]); usernames and REST ids are never
//! logged at all, so there is no helper for them. The mode is process-global so that
//! a log site needs no configuration plumbing, and it can be changed on reload.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};

use serde::Deserialize;

/// What `log.client_addresses` allows a log line to contain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressLogging {
    /// No trace of the address (the default).
    #[default]
    Omit,
    /// IPv4 /16 (last two octets zeroed) or IPv6 /32, no port.
    Truncate,
    /// The full transport address.
    Full,
}

static MODE: AtomicU8 = AtomicU8::new(0);

/// Sets the process-wide mode (at start-up and on reload).
pub fn set_mode(mode: AddressLogging) {
    MODE.store(mode as u8, Ordering::Relaxed);
}

/// The process-wide mode.
pub fn mode() -> AddressLogging {
    match MODE.load(Ordering::Relaxed) {
        1 => AddressLogging::Truncate,
        2 => AddressLogging::Full,
        _ => AddressLogging::Omit,
    }
}

/// A client transport address formatted according to the current mode.
pub fn client(addr: SocketAddr) -> Redacted {
    Redacted {
        mode: mode(),
        ip: addr.ip(),
        port: Some(addr.port()),
    }
}

/// A client IP address formatted according to the current mode.
pub fn client_ip(ip: IpAddr) -> Redacted {
    Redacted {
        mode: mode(),
        ip,
        port: None,
    }
}

/// Display wrapper produced by [`client`]; it never holds more than the mode allows to print.
#[derive(Clone, Copy, Debug)]
pub struct Redacted {
    mode: AddressLogging,
    ip: IpAddr,
    port: Option<u16>,
}

impl Redacted {
    /// The same address under an explicit mode (for tests and for config summaries).
    pub fn with_mode(mut self, mode: AddressLogging) -> Self {
        self.mode = mode;
        self
    }
}

/// Zeroes the host part: IPv4 keeps its /16, IPv6 its /32.
pub fn truncate_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, _, _] = v4.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, 0, 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], 0, 0, 0, 0, 0, 0))
        }
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mode {
            AddressLogging::Omit => f.write_str("[omitted]"),
            AddressLogging::Truncate => write!(f, "{}", truncate_ip(self.ip)),
            AddressLogging::Full => match self.port {
                Some(port) => write!(f, "{}", SocketAddr::new(self.ip, port)),
                None => write!(f, "{}", self.ip),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(addr: &str, mode: AddressLogging) -> String {
        let addr: SocketAddr = addr.parse().expect("test address");
        client(addr).with_mode(mode).to_string()
    }

    #[test]
    fn omit_prints_nothing_of_the_address() {
        assert_eq!(
            show("198.51.100.77:40000", AddressLogging::Omit),
            "[omitted]"
        );
        assert_eq!(
            show("[2001:db8:1:2::5]:1", AddressLogging::Omit),
            "[omitted]"
        );
    }

    #[test]
    fn truncate_keeps_v4_16_and_v6_32_without_port() {
        assert_eq!(
            show("198.51.100.77:40000", AddressLogging::Truncate),
            "198.51.0.0"
        );
        assert_eq!(
            show("[2001:db8:1:2::5]:443", AddressLogging::Truncate),
            "2001:db8::"
        );
    }

    #[test]
    fn full_prints_the_transport_address() {
        assert_eq!(
            show("198.51.100.77:40000", AddressLogging::Full),
            "198.51.100.77:40000"
        );
    }
}
