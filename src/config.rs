//! Configuration: the TOML file, its embedded defaults, and validation.
//!
//! Every key is documented in `conf/tarn.toml`. Unknown keys are errors; values that
//! cannot be right (a reversed port range, a lifetime of zero) are refused while the
//! file is parsed, so the error names the key and its line. The binary turns any
//! [`ConfigError`] into exit status 2.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use crate::redact::AddressLogging;

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub peers: PeersConfig,
    pub allocation: AllocationConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
}

/// `[server]`: where tarn listens and relays.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Realm for long-term credentials; empty means the host name.
    pub realm: String,
    /// UDP (and, from issue 3 on, TCP) listen addresses.
    pub listen: Vec<SocketAddr>,
    /// TLS listen addresses (used only when `[tls]` is configured).
    pub tls_listen: Vec<SocketAddr>,
    /// Relay port range, "LOW-HIGH".
    pub relay_ports: PortRange,
    /// Local IPs relay sockets bind to, at most one per family. Empty: derived.
    pub relay_address: Vec<IpAddr>,
    /// Public IPs announced in XOR-RELAYED-ADDRESS (one per family), for NAT'd hosts.
    pub external_address: Vec<IpAddr>,
    /// Worker threads (shards); 0 means one per CPU core.
    pub threads: usize,
    /// Value of the SOFTWARE attribute; empty sends none (no version disclosure).
    pub software: String,
    /// Where a generated secret is kept; empty means `$STATE_DIRECTORY`, else a default.
    pub state_directory: PathBuf,
    /// Seconds a SIGTERM waits for allocations to end; 0 stops at once.
    pub drain_timeout: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            realm: String::new(),
            listen: vec![
                SocketAddr::from(([0, 0, 0, 0], 3478)),
                SocketAddr::from(([0u16; 8], 3478)),
            ],
            tls_listen: vec![SocketAddr::from(([0, 0, 0, 0], 5349))],
            relay_ports: PortRange(49152..=65535),
            relay_address: Vec::new(),
            external_address: Vec::new(),
            threads: 0,
            software: String::new(),
            state_directory: PathBuf::new(),
            drain_timeout: 60,
        }
    }
}

/// `[auth]`: where the REST shared secrets come from.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Secrets written into the file itself; all are accepted (rotation).
    pub secrets: Vec<String>,
    /// A file with one secret per line (blank lines and `#` comments ignored).
    pub secret_file: Option<PathBuf>,
    /// The name of an environment variable holding one secret.
    pub secret_env: Option<String>,
    /// Seconds a nonce stays valid before a request gets 438 Stale Nonce.
    #[serde(deserialize_with = "positive_u64")]
    pub nonce_lifetime: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            secrets: Vec::new(),
            secret_file: None,
            secret_env: None,
            nonce_lifetime: DEFAULT_NONCE_LIFETIME,
        }
    }
}

/// `[tls]`: certificate and key for `turns:`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// Seconds a TLS handshake may take.
    #[serde(deserialize_with = "positive_u64")]
    pub handshake_timeout: u64,
    /// Seconds between checks of the certificate files for a renewal; 0: SIGHUP only.
    pub reload_interval: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            certificate: None,
            private_key: None,
            handshake_timeout: 10,
            reload_interval: 5,
        }
    }
}

/// `[peers]`: who may be relayed to.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    /// CIDRs that override the default deny list.
    pub allow: Vec<IpNet>,
    /// Relay only to `allow`.
    pub allow_only: bool,
}

/// `[allocation]`: lifetimes, in seconds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllocationConfig {
    #[serde(deserialize_with = "positive_u64")]
    pub default_lifetime: u64,
    #[serde(deserialize_with = "positive_u64")]
    pub max_lifetime: u64,
    #[serde(deserialize_with = "positive_u64")]
    pub permission_lifetime: u64,
    #[serde(deserialize_with = "positive_u64")]
    pub channel_lifetime: u64,
}

impl Default for AllocationConfig {
    fn default() -> Self {
        Self {
            default_lifetime: 600,
            max_lifetime: 3600,
            permission_lifetime: 300,
            channel_lifetime: 600,
        }
    }
}

/// `[limits]`: quotas that bound what one user, or everyone together, can take.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Allocations in the whole process (486 beyond).
    pub max_allocations: u32,
    /// Allocations per REST username (486 beyond).
    pub allocations_per_user: u32,
    /// Allocations per client IPv4 address or IPv6 /64 (486 beyond).
    pub allocations_per_address: u32,
    /// Permissions per allocation (508 beyond).
    pub permissions_per_allocation: u32,
    /// Channel bindings per allocation (508 beyond).
    pub channels_per_allocation: u32,
    /// TCP and TLS connections in the whole process.
    pub max_connections: u32,
    /// TCP and TLS connections per source IPv4 address or IPv6 /64.
    pub connections_per_address: u32,
    /// Seconds a TCP/TLS connection without an allocation may stay silent.
    #[serde(deserialize_with = "positive_u64")]
    pub idle_timeout: u64,
    /// Unauthenticated answers (Binding, 401, ...) per second per source prefix; 0: unlimited.
    pub unauthenticated_rate: u32,
    /// Burst allowed above `unauthenticated_rate`.
    pub unauthenticated_burst: u32,
    /// Relayed kilobits per second per allocation, both directions; 0: unlimited.
    pub allocation_bandwidth_kbps: u64,
    /// Relayed kilobits per second for the whole process; 0: unlimited.
    pub total_bandwidth_kbps: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_allocations: 10_000,
            allocations_per_user: 64,
            allocations_per_address: 256,
            permissions_per_allocation: 32,
            channels_per_allocation: 32,
            max_connections: 8192,
            connections_per_address: 256,
            idle_timeout: 30,
            unauthenticated_rate: 100,
            unauthenticated_burst: 200,
            allocation_bandwidth_kbps: 20_000,
            total_bandwidth_kbps: 0,
        }
    }
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// omit | truncate | full.
    pub client_addresses: AddressLogging,
    /// A tracing filter ("info", "tarn=debug"); `RUST_LOG` wins when set.
    pub level: String,
    /// text | json.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            client_addresses: AddressLogging::Omit,
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[metrics]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint; an empty string disables it.
    #[serde(deserialize_with = "optional_addr")]
    pub listen: Option<SocketAddr>,
    /// When set, `/metrics` needs `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Put the version into `tarn_build_info` (off: no version disclosure).
    pub expose_version: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9478))),
            bearer_token: None,
            expose_version: false,
        }
    }
}

/// An inclusive, non-empty range of relay ports, written "LOW-HIGH" in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRange(pub RangeInclusive<u16>);

impl PortRange {
    /// Parses "LOW-HIGH" (or a single port); LOW must be at least 1024 and not above HIGH.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (low, high) = match text.split_once('-') {
            Some((l, h)) => (l.trim(), h.trim()),
            None => (text.trim(), text.trim()),
        };
        let low: u16 = low
            .parse()
            .map_err(|_| format!("`{text}` is not a port range like \"49152-65535\""))?;
        let high: u16 = high
            .parse()
            .map_err(|_| format!("`{text}` is not a port range like \"49152-65535\""))?;
        if low < 1024 {
            return Err(format!("relay ports must be 1024 or above, got {low}"));
        }
        if low > high {
            return Err(format!("port range `{text}` is reversed"));
        }
        Ok(Self(low..=high))
    }

    /// Number of ports in the range.
    pub fn len(&self) -> u32 {
        u32::from(*self.0.end()) - u32::from(*self.0.start()) + 1
    }

    /// Always false: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PortRange::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom("must be greater than zero"));
    }
    Ok(v)
}

fn optional_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an address like \"127.0.0.1:9478\""
        ))
    })
}

/// Seconds a nonce stays valid when the file says nothing.
pub const DEFAULT_NONCE_LIFETIME: u64 = 3600;

/// An error in the configuration, with the file it came from.
#[derive(Debug)]
pub struct ConfigError {
    pub source_name: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source_name, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates a TOML document; `source_name` is used in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ConfigError {
            source_name: source_name.to_string(),
            message,
        })?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The embedded defaults (no file at all).
    pub fn embedded() -> Self {
        Config::default()
    }

    /// Checks that span several keys (single values are checked while parsing).
    fn validate(&self) -> Result<(), String> {
        let a = &self.allocation;
        if a.default_lifetime > a.max_lifetime {
            return Err(format!(
                "allocation.default_lifetime ({}) is above allocation.max_lifetime ({})",
                a.default_lifetime, a.max_lifetime
            ));
        }
        one_per_family("server.relay_address", &self.server.relay_address)?;
        one_per_family("server.external_address", &self.server.external_address)?;
        if self.server.listen.is_empty() {
            return Err("server.listen: at least one address is needed".into());
        }
        if self.tls.certificate.is_some() != self.tls.private_key.is_some() {
            return Err("tls.certificate and tls.private_key go together".into());
        }
        if let Some(name) = &self.auth.secret_env
            && (name.is_empty() || name.contains('='))
        {
            return Err(format!("auth.secret_env: `{name}` is not a variable name"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(format!(
                "log.level: `{}` is not a filter: {e}",
                self.log.level
            ));
        }
        if self.server.realm.len() > 763 {
            return Err("server.realm: at most 763 bytes".into());
        }
        Ok(())
    }
}

fn one_per_family(key: &str, ips: &[IpAddr]) -> Result<(), String> {
    let v4 = ips.iter().filter(|ip| ip.is_ipv4()).count();
    let v6 = ips.len() - v4;
    if v4 > 1 || v6 > 1 {
        return Err(format!("{key}: at most one address per family"));
    }
    if ips.iter().any(|ip| ip.is_unspecified()) {
        return Err(format!(
            "{key}: a wildcard address cannot be announced or bound for relaying"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_match_the_design_card() {
        let c = Config::embedded();
        assert_eq!(c.server.listen.len(), 2);
        assert_eq!(c.server.relay_ports, PortRange(49152..=65535));
        assert_eq!(c.allocation.default_lifetime, 600);
        assert_eq!(c.allocation.max_lifetime, 3600);
        assert_eq!(c.allocation.permission_lifetime, 300);
        assert_eq!(c.allocation.channel_lifetime, 600);
        assert_eq!(c.log.client_addresses, AddressLogging::Omit);
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9478".parse().unwrap()));
        assert_eq!(c.auth.nonce_lifetime, DEFAULT_NONCE_LIFETIME);
    }

    #[test]
    fn the_documented_example_file_parses() {
        let text = include_str!("../conf/tarn.toml");
        Config::from_toml(text, "conf/tarn.toml").expect("conf/tarn.toml must parse");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::from_toml("[server]\nrealm = \"x\"\nlisten_on = []\n", "t.toml")
            .expect_err("unknown key");
        assert!(err.message.contains("listen_on"), "{err}");
        assert!(err.message.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Config::from_toml("[server]\nrelay_ports = \"6000-5000\"\n", "t.toml")
            .expect_err("reversed");
        assert!(err.message.contains("relay_ports"), "{err}");
        assert!(err.message.contains("line 2"), "{err}");
        let err = Config::from_toml("[allocation]\npermission_lifetime = 0\n", "t.toml")
            .expect_err("zero");
        assert!(err.message.contains("permission_lifetime"), "{err}");
        let err =
            Config::from_toml("[log]\nclient_addresses = \"some\"\n", "t.toml").expect_err("enum");
        assert!(err.message.contains("client_addresses"), "{err}");
        let err =
            Config::from_toml("[peers]\nallow = [\"10.0.0.0/33\"]\n", "t.toml").expect_err("cidr");
        assert!(err.message.contains("allow"), "{err}");
    }

    #[test]
    fn cross_key_checks() {
        let err = Config::from_toml(
            "[allocation]\ndefault_lifetime = 7200\nmax_lifetime = 3600\n",
            "t.toml",
        )
        .expect_err("default above max");
        assert!(err.message.contains("default_lifetime"), "{err}");
        let err = Config::from_toml("[tls]\ncertificate = \"/x.pem\"\n", "t.toml")
            .expect_err("cert without key");
        assert!(err.message.contains("private_key"), "{err}");
    }

    #[test]
    fn port_range_forms() {
        assert_eq!(PortRange::parse("5000").unwrap().len(), 1);
        assert_eq!(PortRange::parse("49152-65535").unwrap().len(), 16384);
        assert!(PortRange::parse("80-90").is_err());
        assert!(PortRange::parse("a-b").is_err());
    }
}
