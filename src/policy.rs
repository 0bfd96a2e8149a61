//! Peer address policy: the one place that decides which peers the relay may
//! talk to.
//!
//! A TURN relay is an open proxy for whoever holds credentials. Without a
//! filter, a client can ask it to send to `127.0.0.1:22`, to the cloud
//! metadata service at `169.254.169.254`, to the operator's private LAN, or
//! back into the relay itself (a TURN loop). This module owns that decision:
//! every XOR-PEER-ADDRESS (CreatePermission, ChannelBind, Send indication)
//! goes through [`PeerPolicy::classify`] and nothing else.
//!
//! The rules, in order:
//!
//! 1. **Canonicalise.** An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) *is*
//!    the IPv4 address `a.b.c.d` (the kernel sends it as IPv4), so it is
//!    classified exactly as that IPv4 address, allow list included.
//! 2. **Own addresses** (loop protection), on the canonical form and on
//!    every IPv4 address embedded in it: the unspecified address and the
//!    daemon's own addresses are denied with [`DenyReason::OwnAddress`],
//!    except on a port of the relay range: that is another allocation's
//!    relayed address, which two clients of the same server use to reach
//!    each other (relay to relay). It cannot loop or amplify: the receiving
//!    allocation forwards only what its own client has a permission for, one
//!    datagram for one. The listening ports and every other port of the host
//!    stay closed. An own address that the operator explicitly allow-listed
//!    (typically a loopback echo peer in tests) is allowed except on the
//!    daemon's own listening ports. "Explicitly" means an allow-list entry for
//!    that single address (`/32`, `/128`) or one inside the loopback range;
//!    a broad entry that merely contains the host (`10.0.0.0/8`,
//!    `0.0.0.0/0`) does not open the host's own services. Loopback
//!    addresses always count as own addresses, whether or not they are
//!    listed in [`OwnAddresses`]. The unspecified address is never opened.
//! 3. **Every form must be acceptable.** For IPv6 encodings that carry an
//!    IPv4 address (IPv4-compatible, NAT64, 6to4, Teredo, SIIT), both the raw
//!    IPv6 address and every embedded IPv4 address must pass. A single form
//!    passes iff it is in the allow list, or (`allow_only` is off and it is
//!    not in the default deny lists [`DENIED_V4`] / [`DENIED_V6`]).
//!
//! coturn's CVE-2020-26262 (`0.0.0.0` / `::` reaching loopback) and
//! CVE-2026-27624 (IPv4-mapped bypass of the deny list) were bypasses of
//! exactly this canonicalisation; the tests in this module are generated from
//! the deny lists so every range is exercised in every encoding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why a peer address was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// The address (or an IPv4 address embedded in it) is in a
    /// special-purpose range from the default deny lists.
    SpecialPurpose,
    /// The address is the unspecified address or one the daemon itself
    /// uses: relaying there would loop or reach the host's own services.
    OwnAddress,
    /// `allow_only` is set and the address is not in the allow list.
    NotAllowListed,
}

impl DenyReason {
    /// A short, stable, lowercase name for logs and metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            DenyReason::SpecialPurpose => "special-purpose",
            DenyReason::OwnAddress => "own-address",
            DenyReason::NotAllowListed => "not-allow-listed",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of [`PeerPolicy::classify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The relay may send to and receive from this peer.
    Allow,
    /// The peer is refused (TURN error 403 Forbidden).
    Deny(DenyReason),
}

impl Verdict {
    /// `true` for [`Verdict::Allow`].
    #[must_use]
    pub const fn is_allowed(self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

/// The empty port range, used as the default for
/// [`OwnAddresses::relay_ports`].
pub const NO_PORTS: RangeInclusive<u16> = RangeInclusive::new(1, 0);

/// Addresses the daemon itself uses: peers there would make TURN loops or
/// reach the host's own services.
#[derive(Clone, Debug)]
pub struct OwnAddresses {
    /// IP addresses the daemon listens or relays on (IPv4-mapped forms are
    /// treated as the IPv4 address).
    pub ips: Vec<IpAddr>,
    /// The daemon's listening ports (STUN/TURN, TLS, metrics, ...).
    pub ports: Vec<u16>,
    /// The port range relay allocations are drawn from.
    pub relay_ports: RangeInclusive<u16>,
}

impl Default for OwnAddresses {
    fn default() -> Self {
        OwnAddresses {
            ips: Vec::new(),
            ports: Vec::new(),
            relay_ports: NO_PORTS,
        }
    }
}

impl OwnAddresses {
    fn has_port(&self, port: u16) -> bool {
        self.ports.contains(&port) || self.relay_ports.contains(&port)
    }
}

/// Default-deny IPv4 ranges: everything that is not globally reachable
/// unicast (RFC 6890 special-purpose registry, multicast, reserved,
/// documentation, benchmarking, CGNAT, and the limited broadcast address
/// which lies inside `240.0.0.0/4`).
pub const DENIED_V4: &[Ipv4Net] = &[
    v4(0, 0, 0, 0, 8),       // "this network", RFC 791
    v4(10, 0, 0, 0, 8),      // private, RFC 1918
    v4(100, 64, 0, 0, 10),   // shared address space (CGNAT), RFC 6598
    v4(127, 0, 0, 0, 8),     // loopback
    v4(169, 254, 0, 0, 16),  // link local, incl. cloud metadata services
    v4(172, 16, 0, 0, 12),   // private, RFC 1918
    v4(192, 0, 0, 0, 24),    // IETF protocol assignments, RFC 6890
    v4(192, 0, 2, 0, 24),    // TEST-NET-1, RFC 5737
    v4(192, 31, 196, 0, 24), // AS112-v4, RFC 7535
    v4(192, 52, 193, 0, 24), // AMT, RFC 7450
    v4(192, 88, 99, 0, 24),  // deprecated 6to4 relay anycast, RFC 7526
    v4(192, 168, 0, 0, 16),  // private, RFC 1918
    v4(192, 175, 48, 0, 24), // direct delegation AS112, RFC 7534
    v4(198, 18, 0, 0, 15),   // benchmarking, RFC 2544
    v4(198, 51, 100, 0, 24), // TEST-NET-2, RFC 5737
    v4(203, 0, 113, 0, 24),  // TEST-NET-3, RFC 5737
    v4(224, 0, 0, 0, 4),     // multicast
    v4(240, 0, 0, 0, 4),     // reserved, incl. 255.255.255.255 broadcast
];

/// Default-deny IPv6 ranges (RFC 6890 / IANA special-purpose registry plus
/// multicast, link-local and deprecated site-local).
pub const DENIED_V6: &[Ipv6Net] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128), // unspecified
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128), // loopback
    // Deprecated IPv4-compatible addresses (RFC 4291 2.5.5.1). Nobody routes
    // them any more, so the whole /96 is denied, not just the embedded v4.
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), // NAT64 well-known, RFC 6052
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), // NAT64 local-use, RFC 8215
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),     // discard-only, RFC 6666
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),    // IETF protocol assignments (Teredo, ...)
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation, RFC 3849
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),    // 6to4, RFC 3056
    v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48), // direct delegation AS112, RFC 7534
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),    // documentation, RFC 9637
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),    // segment routing SIDs, RFC 9602
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),     // unique local, RFC 4193
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),    // link local
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),    // site local (deprecated), RFC 3879
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),     // multicast
];

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    // Evaluated at compile time: an invalid prefix is a build error.
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    )
}

/// Is `ip`, taken literally, in the default deny lists?
///
/// This looks at the raw form only: it does not canonicalise IPv4-mapped
/// addresses nor look at embedded IPv4 addresses (so `::ffff:127.0.0.1`
/// is *not* special-purpose here). Use [`PeerPolicy::classify`] to decide
/// about a peer.
#[must_use]
pub fn is_special_purpose(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => DENIED_V4.iter().any(|net| net.contains(&v4)),
        IpAddr::V6(v6) => DENIED_V6.iter().any(|net| net.contains(&v6)),
    }
}

/// IPv4 addresses embedded in an IPv6 address by an IPv4-in-IPv6 encoding.
///
/// A fixed-size iterator (no heap) over at most two addresses. Produced by
/// [`embedded_ipv4`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedIpv4 {
    addrs: [Ipv4Addr; 2],
    len: u8,
    next: u8,
}

impl EmbeddedIpv4 {
    const fn none() -> Self {
        EmbeddedIpv4 {
            addrs: [Ipv4Addr::UNSPECIFIED; 2],
            len: 0,
            next: 0,
        }
    }

    const fn one(a: Ipv4Addr) -> Self {
        EmbeddedIpv4 {
            addrs: [a, Ipv4Addr::UNSPECIFIED],
            len: 1,
            next: 0,
        }
    }

    const fn two(a: Ipv4Addr, b: Ipv4Addr) -> Self {
        EmbeddedIpv4 {
            addrs: [a, b],
            len: 2,
            next: 0,
        }
    }
}

impl Iterator for EmbeddedIpv4 {
    type Item = Ipv4Addr;

    fn next(&mut self) -> Option<Ipv4Addr> {
        if self.next >= self.len {
            return None;
        }
        let item = self.addrs.get(usize::from(self.next)).copied();
        self.next = self.next.saturating_add(1);
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.len.saturating_sub(self.next));
        (n, Some(n))
    }
}

impl ExactSizeIterator for EmbeddedIpv4 {}

/// IPv4 addresses embedded in an IPv6 address by any IPv4-in-IPv6 encoding.
///
/// Recognised encodings (their prefixes are disjoint, so at most one
/// applies; Teredo yields two addresses):
///
/// | encoding | prefix | embedded IPv4 |
/// |---|---|---|
/// | IPv4-mapped (RFC 4291) | `::ffff:0:0/96` | last 32 bits |
/// | IPv4-compatible (deprecated, RFC 4291) | `::/96` except `::` and `::1` | last 32 bits |
/// | SIIT IPv4-translated (RFC 2765) | `::ffff:0:0:0/96` | last 32 bits |
/// | NAT64 well-known (RFC 6052) | `64:ff9b::/96` | last 32 bits |
/// | NAT64 local-use (RFC 8215) | `64:ff9b:1::/48` | last 32 bits |
/// | 6to4 (RFC 3056) | `2002::/16` | bits 16..48 |
/// | Teredo (RFC 4380) | `2001::/32` | server: bits 32..64; client: last 32 bits XOR `0xffffffff` |
#[must_use]
pub fn embedded_ipv4(ip: Ipv6Addr) -> EmbeddedIpv4 {
    /// Top 96 bits of `64:ff9b::/96`.
    const NAT64_WKP: u128 = 0x0064_ff9b_0000_0000_0000_0000;
    /// Top 48 bits of `64:ff9b:1::/48`.
    const NAT64_LOCAL: u128 = 0x0064_ff9b_0001;

    let bits = ip.to_bits();
    let hi96 = bits >> 32;
    // Truncating casts below deliberately select 32-bit fields.
    let low32 = Ipv4Addr::from_bits(bits as u32);

    // ::ffff:0:0/96 (mapped), ::/96 (compatible, except `::` and `::1`,
    // which RFC 4291 excludes), ::ffff:0:0:0/96 (SIIT), 64:ff9b::/96 and
    // 64:ff9b:1::/48 (NAT64): IPv4 in the last 32 bits.
    let compatible = hi96 == 0 && bits > 1;
    if compatible || matches!(hi96, 0xffff | 0xffff_0000 | NAT64_WKP) || bits >> 80 == NAT64_LOCAL {
        EmbeddedIpv4::one(low32)
    } else if bits >> 112 == 0x2002 {
        // 6to4: 2002:AABB:CCDD::/48.
        EmbeddedIpv4::one(Ipv4Addr::from_bits((bits >> 80) as u32))
    } else if bits >> 96 == 0x2001_0000 {
        // Teredo: 2001:0:SSSS:SSSS:flags:port:~CCCC:~CCCC.
        let server = Ipv4Addr::from_bits((bits >> 64) as u32);
        let client = Ipv4Addr::from_bits(!(bits as u32));
        EmbeddedIpv4::two(server, client)
    } else {
        EmbeddedIpv4::none()
    }
}

/// An IPv4-mapped IPv6 address becomes the IPv4 address; anything else is
/// returned unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

/// An allow-list entry written as an IPv4-mapped IPv6 network
/// (`::ffff:10.0.0.0/104`) becomes the IPv4 network it means, so it matches
/// the canonical (IPv4) form of mapped peers. Host bits are cleared.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(n6) = net
        && n6.prefix_len() >= 96
        && let Some(v4) = n6.addr().to_ipv4_mapped()
        && let Ok(n4) = Ipv4Net::new(v4, n6.prefix_len() - 96)
    {
        return IpNet::V4(n4.trunc());
    }
    net.trunc()
}

/// The relay's peer address filter. Build once from configuration, share
/// read-only, and call [`PeerPolicy::classify`] for every peer address.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    allow_only: bool,
    own: OwnAddresses,
}

impl PeerPolicy {
    /// Builds a policy.
    ///
    /// * `allow`: networks that are acceptable even if special-purpose
    ///   (IPv4-mapped IPv6 networks are converted to IPv4 networks).
    /// * `allow_only`: relay *only* to the allow list (e.g. a Jitsi
    ///   deployment whose only peer is its videobridge).
    /// * `own`: the daemon's own addresses and ports, for loop protection.
    pub fn new(allow: Vec<IpNet>, allow_only: bool, mut own: OwnAddresses) -> Self {
        let allow = allow.into_iter().map(canonical_net).collect();
        for ip in &mut own.ips {
            *ip = canonical(*ip);
        }
        PeerPolicy {
            allow,
            allow_only,
            own,
        }
    }

    /// The (canonicalised) allow list.
    pub fn allow_list(&self) -> &[IpNet] {
        &self.allow
    }

    /// Whether only allow-listed peers are acceptable.
    pub fn allow_only(&self) -> bool {
        self.allow_only
    }

    /// The daemon's own addresses (canonicalised).
    pub fn own(&self) -> &OwnAddresses {
        &self.own
    }

    /// Decides whether the relay may talk to `peer`. Never panics, never
    /// allocates.
    #[must_use]
    pub fn classify(&self, peer: SocketAddr) -> Verdict {
        let ip = canonical(peer.ip());
        let port = peer.port();
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6),
            IpAddr::V4(_) => EmbeddedIpv4::none(),
        };
        let forms = || std::iter::once(ip).chain(embedded.clone().map(IpAddr::V4));

        // Loop protection first, on every form.
        if forms().any(|form| self.is_own(form, port)) {
            return Verdict::Deny(DenyReason::OwnAddress);
        }
        // Then every form must be acceptable on its own.
        for form in forms() {
            if !self.is_allow_listed(form) {
                if self.allow_only {
                    return Verdict::Deny(DenyReason::NotAllowListed);
                }
                if is_special_purpose(form) {
                    return Verdict::Deny(DenyReason::SpecialPurpose);
                }
            }
        }
        Verdict::Allow
    }

    fn is_allow_listed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Is `ip` *explicitly* allow-listed, as an own or loopback address must
    /// be before it is opened? Only an entry that names the single address
    /// (`/32`, `/128`) or lies entirely inside the loopback range counts: a
    /// subnet that merely happens to contain the relay host (`10.0.0.0/8`,
    /// `0.0.0.0/0`) does not expose the host's own services.
    fn is_explicitly_allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| {
            let host_route = net.prefix_len() == net.max_prefix_len();
            let inside_loopback = match net {
                IpNet::V4(n) => n.prefix_len() >= 8 && n.addr().is_loopback(),
                IpNet::V6(n) => n.prefix_len() == 128 && n.addr().is_loopback(),
            };
            (host_route || inside_loopback) && net.contains(&ip)
        })
    }

    /// Should this single (canonical) form be refused as the daemon itself?
    fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        // The unspecified address means "this host" to the kernel
        // (CVE-2020-26262). No real peer has it, so no allow list entry
        // (not even 0.0.0.0/0) opens it.
        if ip.is_unspecified() {
            return true;
        }
        let listed = self.own.ips.contains(&ip);
        if !listed && !ip.is_loopback() {
            return false;
        }
        if self.own.relay_ports.contains(&port) {
            // Another allocation's relayed address: relay to relay through this
            // server. Still subject to the deny list (a private relay IP needs an
            // allow entry), checked after this.
            return false;
        }
        if self.is_explicitly_allowed(ip) {
            // Explicitly allowed (e.g. a loopback echo peer in tests): still
            // never the daemon's own listening ports.
            self.own.has_port(port)
        } else if listed {
            true
        } else {
            // Loopback, not explicitly allowed. If a broad allow entry covers
            // it, refuse it here as the host itself; otherwise the deny list
            // refuses it (SpecialPurpose).
            self.is_allow_listed(ip)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(ip: IpAddr, port: u16) -> SocketAddr {
        SocketAddr::new(ip, port)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test literal")
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("test literal")
    }

    fn default_policy() -> PeerPolicy {
        PeerPolicy::new(Vec::new(), false, OwnAddresses::default())
    }

    fn v4_first_last(n: &Ipv4Net) -> (u32, u32) {
        (n.network().to_bits(), n.broadcast().to_bits())
    }

    fn v6_first_last(n: &Ipv6Net) -> (u128, u128) {
        (n.network().to_bits(), n.broadcast().to_bits())
    }

    /// Test-side membership, computed from the lists by integer range, not
    /// through the code under test.
    fn in_any_v4(a: u32) -> bool {
        DENIED_V4.iter().any(|n| {
            let (f, l) = v4_first_last(n);
            (f..=l).contains(&a)
        })
    }

    fn in_any_v6(a: u128) -> bool {
        DENIED_V6.iter().any(|n| {
            let (f, l) = v6_first_last(n);
            (f..=l).contains(&a)
        })
    }

    fn v4_samples(n: &Ipv4Net) -> [Ipv4Addr; 3] {
        let (f, l) = v4_first_last(n);
        [
            Ipv4Addr::from_bits(f),
            Ipv4Addr::from_bits(l),
            Ipv4Addr::from_bits(f + (l - f) / 2 + 1),
        ]
    }

    /// Every IPv6 encoding of `a` that classify must see through.
    fn encodings(a: Ipv4Addr) -> Vec<(&'static str, Ipv6Addr)> {
        let b = u128::from(a.to_bits());
        vec![
            ("mapped", a.to_ipv6_mapped()),
            ("compatible", a.to_ipv6_compatible()),
            ("siit", Ipv6Addr::from_bits((0xffff_0000u128 << 32) | b)),
            ("nat64", Ipv6Addr::from_bits((0x64_ff9bu128 << 96) | b)),
            (
                "nat64-local",
                Ipv6Addr::from_bits((0x64_ff9b_0001u128 << 80) | (0xabcd << 32) | b),
            ),
            (
                "6to4",
                Ipv6Addr::from_bits((0x2002u128 << 112) | (b << 80) | 0x1234_0000_0000_0001),
            ),
            (
                "teredo-server",
                // Server `a`, client 8.8.8.8 (stored inverted).
                Ipv6Addr::from_bits(
                    (0x2001_0000u128 << 96)
                        | (b << 64)
                        | (0x8000_f227u128 << 32)
                        | u128::from(!0x0808_0808u32),
                ),
            ),
            (
                "teredo-client",
                Ipv6Addr::from_bits(
                    (0x2001_0000u128 << 96)
                        | (0x0808_0808u128 << 64)
                        | (0x8000_f227u128 << 32)
                        | u128::from(!a.to_bits()),
                ),
            ),
        ]
    }

    #[test]
    fn lists_are_normalised_networks() {
        for n in DENIED_V4 {
            assert_eq!(n.addr(), n.network(), "{n}");
        }
        for n in DENIED_V6 {
            assert_eq!(n.addr(), n.network(), "{n}");
        }
        assert!(DENIED_V4.iter().any(|n| n.contains(&Ipv4Addr::BROADCAST)));
    }

    #[test]
    fn every_v4_range_denied_and_neighbours_allowed() {
        let p = default_policy();
        for n in DENIED_V4 {
            for a in v4_samples(n) {
                assert!(n.contains(&a));
                assert!(is_special_purpose(IpAddr::V4(a)), "{a}");
                let v = p.classify(sa(IpAddr::V4(a), 3478));
                assert!(!v.is_allowed(), "{a} in {n}: {v:?}");
            }
            let (f, l) = v4_first_last(n);
            for out in [f.checked_sub(1), l.checked_add(1)].into_iter().flatten() {
                if in_any_v4(out) {
                    continue;
                }
                let a = IpAddr::V4(Ipv4Addr::from_bits(out));
                assert_eq!(p.classify(sa(a, 3478)), Verdict::Allow, "{a} next to {n}");
                assert!(!is_special_purpose(a), "{a}");
            }
        }
    }

    #[test]
    fn every_v6_range_denied_and_neighbours_allowed() {
        let p = default_policy();
        for n in DENIED_V6 {
            let (f, l) = v6_first_last(n);
            let inside = f + (l - f) / 2 + u128::from(l != f);
            for a in [f, l, inside] {
                let a = Ipv6Addr::from_bits(a);
                assert!(n.contains(&a));
                assert!(is_special_purpose(IpAddr::V6(a)), "{a}");
                let v = p.classify(sa(IpAddr::V6(a), 3478));
                assert!(!v.is_allowed(), "{a} in {n}: {v:?}");
            }
            for out in [f.checked_sub(1), l.checked_add(1)].into_iter().flatten() {
                if in_any_v6(out) {
                    continue;
                }
                let a = IpAddr::V6(Ipv6Addr::from_bits(out));
                assert_eq!(p.classify(sa(a, 3478)), Verdict::Allow, "{a} next to {n}");
            }
        }
    }

    #[test]
    fn every_v4_range_denied_in_every_v6_encoding() {
        let default = default_policy();
        // With all of IPv6 allow-listed, only the embedded-IPv4 check can deny
        // the non-mapped encodings: this proves the embedding is looked at.
        let all_v6 = PeerPolicy::new(vec![net("::/0")], false, OwnAddresses::default());
        for n in DENIED_V4 {
            for a in v4_samples(n) {
                for (name, enc) in encodings(a) {
                    let got: Vec<_> = embedded_ipv4(enc).collect();
                    assert!(
                        got.contains(&a) || enc.to_bits() <= 1,
                        "{name} {enc}: {got:?}"
                    );
                    for p in [&default, &all_v6] {
                        let v = p.classify(sa(IpAddr::V6(enc), 443));
                        assert!(!v.is_allowed(), "{name} {enc} ({a} in {n}): {v:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn public_v4_in_v6_encodings() {
        let all_v6 = PeerPolicy::new(vec![net("::/0")], false, OwnAddresses::default());
        let default = default_policy();
        let a = Ipv4Addr::new(8, 8, 8, 8);
        for (name, enc) in encodings(a) {
            let v = all_v6.classify(sa(IpAddr::V6(enc), 443));
            assert_eq!(v, Verdict::Allow, "{name} {enc}");
        }
        // By default the raw prefixes of the non-mapped encodings are denied.
        assert_eq!(
            default.classify(sa(IpAddr::V6(a.to_ipv6_mapped()), 443)),
            Verdict::Allow
        );
        assert_eq!(
            default.classify(sa(ip("2002:808:808::1"), 443)),
            Verdict::Deny(DenyReason::SpecialPurpose)
        );
    }

    #[test]
    fn embedded_extraction() {
        let e = |s: &str| match ip(s) {
            IpAddr::V6(v6) => embedded_ipv4(v6).collect::<Vec<_>>(),
            IpAddr::V4(_) => unreachable!(),
        };
        let a = |s: &str| s.parse::<Ipv4Addr>().expect("literal");
        assert_eq!(e("::ffff:1.2.3.4"), [a("1.2.3.4")]);
        assert_eq!(e("::1.2.3.4"), [a("1.2.3.4")]);
        assert_eq!(e("64:ff9b::1.2.3.4"), [a("1.2.3.4")]);
        assert_eq!(e("64:ff9b:1:abcd::1.2.3.4"), [a("1.2.3.4")]);
        assert_eq!(e("2002:102:304::1"), [a("1.2.3.4")]);
        // RFC 4380 example: server 65.54.227.120, client 192.0.2.45.
        assert_eq!(
            e("2001:0:4136:e378:8000:63bf:3fff:fdd2"),
            [a("65.54.227.120"), a("192.0.2.45")]
        );
        assert!(e("2a00:1450::1").is_empty());
        assert!(e("2001:db8::1").is_empty());
        assert!(e("64:ff9b:2::1").is_empty());
        assert!(e("::").is_empty());
        assert!(e("::1").is_empty());
        assert_eq!(e("::2"), [a("0.0.0.2")]);
        let it = match ip("2001:0:4136:e378:8000:63bf:3fff:fdd2") {
            IpAddr::V6(v6) => embedded_ipv4(v6),
            IpAddr::V4(_) => unreachable!(),
        };
        assert_eq!(it.len(), 2);
    }

    #[test]
    fn public_examples_allowed() {
        let p = default_policy();
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "9.9.9.9",
            "185.199.108.153",
            "2a00:1450::1",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(p.classify(sa(ip(s), 3478)), Verdict::Allow, "{s}");
        }
    }

    #[test]
    fn unspecified_and_loopback_denied() {
        let p = default_policy();
        for s in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
            assert_eq!(
                p.classify(sa(ip(s), 9)),
                Verdict::Deny(DenyReason::OwnAddress),
                "{s}"
            );
        }
        for s in ["127.0.0.1", "::1", "::ffff:127.0.0.1", "127.255.255.254"] {
            assert_eq!(
                p.classify(sa(ip(s), 9)),
                Verdict::Deny(DenyReason::SpecialPurpose),
                "{s}"
            );
        }
        // Even allow-listing everything does not open the unspecified address.
        let all = PeerPolicy::new(
            vec![net("0.0.0.0/0"), net("::/0")],
            false,
            OwnAddresses::default(),
        );
        for s in ["0.0.0.0", "::", "::ffff:0.0.0.0", "2002::1"] {
            assert_eq!(
                all.classify(sa(ip(s), 9)),
                Verdict::Deny(DenyReason::OwnAddress),
                "{s}"
            );
        }
    }

    #[test]
    fn allow_list_overrides_deny_list() {
        let p = PeerPolicy::new(vec![net("10.0.0.5/32")], false, OwnAddresses::default());
        assert_eq!(p.classify(sa(ip("10.0.0.5"), 10000)), Verdict::Allow);
        assert_eq!(p.classify(sa(ip("::ffff:10.0.0.5"), 10000)), Verdict::Allow);
        assert_eq!(
            p.classify(sa(ip("10.0.0.6"), 10000)),
            Verdict::Deny(DenyReason::SpecialPurpose)
        );
        assert_eq!(
            p.classify(sa(ip("::ffff:10.0.0.6"), 10000)),
            Verdict::Deny(DenyReason::SpecialPurpose)
        );
        // The raw NAT64 / 6to4 forms are not in the allow list.
        assert!(!p.classify(sa(ip("64:ff9b::10.0.0.5"), 1)).is_allowed());
        assert!(!p.classify(sa(ip("2002:a00:5::1"), 1)).is_allowed());
        assert_eq!(p.classify(sa(ip("8.8.8.8"), 53)), Verdict::Allow);
    }

    #[test]
    fn mapped_allow_entries_are_canonicalised() {
        let p = PeerPolicy::new(
            vec![net("::ffff:10.1.0.0/112")],
            false,
            OwnAddresses::default(),
        );
        assert_eq!(p.allow_list(), &[net("10.1.0.0/16")]);
        assert_eq!(p.classify(sa(ip("10.1.2.3"), 1)), Verdict::Allow);
        assert_eq!(p.classify(sa(ip("::ffff:10.1.2.3"), 1)), Verdict::Allow);
        assert!(!p.classify(sa(ip("10.2.0.1"), 1)).is_allowed());
    }

    #[test]
    fn allow_only() {
        let p = PeerPolicy::new(
            vec![net("10.0.0.0/24"), net("2001:db8::/64")],
            true,
            OwnAddresses::default(),
        );
        assert!(p.allow_only());
        assert_eq!(p.classify(sa(ip("10.0.0.7"), 10000)), Verdict::Allow);
        assert_eq!(p.classify(sa(ip("::ffff:10.0.0.7"), 10000)), Verdict::Allow);
        assert_eq!(p.classify(sa(ip("2001:db8::7"), 10000)), Verdict::Allow);
        for s in ["8.8.8.8", "2a00:1450::1", "10.0.1.1", "::ffff:8.8.8.8"] {
            assert_eq!(
                p.classify(sa(ip(s), 10000)),
                Verdict::Deny(DenyReason::NotAllowListed),
                "{s}"
            );
        }
    }

    #[test]
    fn allow_only_still_checks_embedded_forms() {
        // The raw v6 is allow-listed but the embedded v4 is not.
        let p = PeerPolicy::new(vec![net("2002::/16")], true, OwnAddresses::default());
        assert_eq!(
            p.classify(sa(ip("2002:808:808::1"), 1)),
            Verdict::Deny(DenyReason::NotAllowListed)
        );
        let p = PeerPolicy::new(
            vec![net("2002::/16"), net("8.8.8.8/32")],
            true,
            OwnAddresses::default(),
        );
        assert_eq!(p.classify(sa(ip("2002:808:808::1"), 1)), Verdict::Allow);
    }

    #[test]
    fn embedded_bypass_attempts_with_public_v6_allow() {
        let p = PeerPolicy::new(
            vec![net("2000::/3"), net("::/8"), net("64:ff9b::/32")],
            false,
            OwnAddresses::default(),
        );
        for s in [
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101::1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo client 127.0.0.1
            "2001:0:7f00:1::1",                     // Teredo server 127.0.0.1
            "64:ff9b::127.0.0.1",
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::a9fe:a9fe",
            "::127.0.0.1",
            "::10.0.0.1",
            "::ffff:0:127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            let v = p.classify(sa(ip(s), 22));
            assert!(!v.is_allowed(), "{s}: {v:?}");
        }
        assert_eq!(p.classify(sa(ip("2002:808:808::1"), 1)), Verdict::Allow);
        assert_eq!(p.classify(sa(ip("2a00:1450::1"), 1)), Verdict::Allow);
    }

    fn own() -> OwnAddresses {
        OwnAddresses {
            ips: vec![
                ip("127.0.0.1"),
                ip("203.0.113.10"),
                ip("::ffff:198.51.100.7"),
            ],
            ports: vec![3478, 5349],
            relay_ports: 49152..=65535,
        }
    }

    #[test]
    fn own_addresses_denied() {
        let p = PeerPolicy::new(Vec::new(), false, own());
        for s in [
            "203.0.113.10",
            "::ffff:203.0.113.10",
            "198.51.100.7",
            "::ffff:198.51.100.7",
        ] {
            assert_eq!(
                p.classify(sa(ip(s), 80)),
                Verdict::Deny(DenyReason::OwnAddress),
                "{s}"
            );
        }
        // A public own address, reached through an embedding.
        let pubown = OwnAddresses {
            ips: vec![ip("8.8.4.4"), ip("2a00:1450::10")],
            ..OwnAddresses::default()
        };
        let p = PeerPolicy::new(
            vec![net("2002::/16"), net("64:ff9b::/96")],
            false,
            pubown.clone(),
        );
        for s in [
            "8.8.4.4",
            "::ffff:8.8.4.4",
            "2002:808:404::1",
            "64:ff9b::8.8.4.4",
            "2a00:1450::10",
        ] {
            assert_eq!(
                p.classify(sa(ip(s), 80)),
                Verdict::Deny(DenyReason::OwnAddress),
                "{s}"
            );
        }
        assert_eq!(p.classify(sa(ip("8.8.8.8"), 80)), Verdict::Allow);
        assert_eq!(p.classify(sa(ip("2002:808:808::1"), 80)), Verdict::Allow);

        // A subnet entry that contains an own address does not open it; a
        // host entry does (except on own ports, none configured here).
        let p = PeerPolicy::new(vec![net("2a00:1450::/32")], false, pubown.clone());
        assert_eq!(
            p.classify(sa(ip("2a00:1450::10"), 80)),
            Verdict::Deny(DenyReason::OwnAddress)
        );
        let p = PeerPolicy::new(vec![net("2a00:1450::10/128")], false, pubown);
        assert_eq!(p.classify(sa(ip("2a00:1450::10"), 80)), Verdict::Allow);
        assert_eq!(
            p.classify(sa(ip("8.8.4.4"), 80)),
            Verdict::Deny(DenyReason::OwnAddress)
        );
    }

    #[test]
    fn allow_listed_own_address_keeps_own_ports_denied() {
        let p = PeerPolicy::new(vec![net("127.0.0.1/32")], false, own());
        assert_eq!(p.classify(sa(ip("127.0.0.1"), 40000)), Verdict::Allow);
        assert_eq!(
            p.classify(sa(ip("::ffff:127.0.0.1"), 40000)),
            Verdict::Allow
        );
        // Relay ports are other allocations' relayed addresses: relay to relay.
        for port in [49152, 50000, 65535] {
            assert_eq!(
                p.classify(sa(ip("127.0.0.1"), port)),
                Verdict::Allow,
                "{port}"
            );
        }
        for port in [3478, 5349] {
            for s in ["127.0.0.1", "::ffff:127.0.0.1"] {
                assert_eq!(
                    p.classify(sa(ip(s), port)),
                    Verdict::Deny(DenyReason::OwnAddress),
                    "{s}:{port}"
                );
            }
        }
        // Other loopback addresses are not allow-listed.
        assert_eq!(
            p.classify(sa(ip("127.0.0.2"), 40000)),
            Verdict::Deny(DenyReason::SpecialPurpose)
        );
        // Own addresses that are not allow-listed stay denied on any port.
        assert_eq!(
            p.classify(sa(ip("203.0.113.10"), 40000)),
            Verdict::Deny(DenyReason::OwnAddress)
        );
    }

    #[test]
    fn allow_listed_loopback_is_own_even_if_unlisted() {
        let own = OwnAddresses {
            ips: Vec::new(),
            ports: vec![3478],
            relay_ports: 50000..=50010,
        };
        let p = PeerPolicy::new(vec![net("127.0.0.0/8"), net("::1/128")], false, own);
        assert_eq!(p.classify(sa(ip("127.0.0.1"), 9)), Verdict::Allow);
        assert_eq!(p.classify(sa(ip("::1"), 9)), Verdict::Allow);
        for s in ["127.0.0.1", "::1", "127.1.2.3"] {
            assert_eq!(
                p.classify(sa(ip(s), 50000)),
                Verdict::Allow,
                "relay to relay"
            );
            assert_eq!(
                p.classify(sa(ip(s), 3478)),
                Verdict::Deny(DenyReason::OwnAddress),
                "{s}:3478"
            );
        }
    }

    #[test]
    fn relay_to_relay_on_a_public_own_address() {
        let own = OwnAddresses {
            ips: vec![ip("203.0.113.7")],
            ports: vec![3478, 5349],
            relay_ports: 49152..=65535,
        };
        let p = PeerPolicy::new(Vec::new(), false, own);
        // 203.0.113.0/24 is a documentation range, so allow it for this check
        // through a policy whose own address is a "public" one.
        let public = OwnAddresses {
            ips: vec![ip("8.8.8.8")],
            ports: vec![3478, 5349],
            relay_ports: 49152..=65535,
        };
        let q = PeerPolicy::new(Vec::new(), false, public);
        assert_eq!(q.classify(sa(ip("8.8.8.8"), 50000)), Verdict::Allow);
        for port in [22, 80, 3478, 5349, 49151] {
            assert_eq!(
                q.classify(sa(ip("8.8.8.8"), port)),
                Verdict::Deny(DenyReason::OwnAddress),
                "{port}"
            );
        }
        // A relay IP in a denied range still needs an allow entry.
        assert_eq!(
            p.classify(sa(ip("203.0.113.7"), 50000)),
            Verdict::Deny(DenyReason::SpecialPurpose)
        );
    }

    #[test]
    fn default_own_addresses_have_no_ports() {
        let o = OwnAddresses::default();
        assert!(o.relay_ports.is_empty());
        assert!(!o.has_port(0) && !o.has_port(1) && !o.has_port(65535));
        assert_eq!(DenyReason::OwnAddress.to_string(), "own-address");
    }

    #[test]
    fn broad_allow_entries_do_not_open_the_host() {
        let own = OwnAddresses {
            ips: vec![ip("10.0.0.1"), ip("2a00:1450::10")],
            ports: vec![3478],
            relay_ports: 50000..=50010,
        };
        let broad = PeerPolicy::new(vec![net("0.0.0.0/0"), net("::/0")], false, own.clone());
        for s in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "::1",
            "10.0.0.1",
            "2a00:1450::10",
        ] {
            assert_eq!(
                broad.classify(sa(ip(s), 22)),
                Verdict::Deny(DenyReason::OwnAddress),
                "{s}"
            );
        }
        assert_eq!(broad.classify(sa(ip("10.0.0.2"), 22)), Verdict::Allow);
        assert_eq!(broad.classify(sa(ip("fd00::1"), 22)), Verdict::Allow);

        let subnet = PeerPolicy::new(vec![net("10.0.0.0/8")], false, own.clone());
        assert_eq!(
            subnet.classify(sa(ip("10.0.0.1"), 22)),
            Verdict::Deny(DenyReason::OwnAddress)
        );
        assert_eq!(subnet.classify(sa(ip("10.0.0.2"), 22)), Verdict::Allow);

        let host = PeerPolicy::new(
            vec![
                net("10.0.0.0/8"),
                net("10.0.0.1/32"),
                net("2a00:1450::10/128"),
            ],
            false,
            own,
        );
        for s in ["10.0.0.1", "::ffff:10.0.0.1", "2a00:1450::10"] {
            assert_eq!(host.classify(sa(ip(s), 9)), Verdict::Allow, "{s}");
            assert_eq!(
                host.classify(sa(ip(s), 50000)),
                Verdict::Allow,
                "{s} relay to relay"
            );
            assert_eq!(
                host.classify(sa(ip(s), 3478)),
                Verdict::Deny(DenyReason::OwnAddress),
                "{s}:3478"
            );
        }
    }

    fn arb_policy() -> impl Strategy<Value = PeerPolicy> {
        let arb_net = prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, l)| IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from_bits(a), l).expect("len <= 32")
            )),
            (any::<u128>(), 0u8..=128).prop_map(|(a, l)| IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from_bits(a), l).expect("len <= 128")
            )),
        ];
        (
            proptest::collection::vec(arb_net, 0..4),
            any::<bool>(),
            proptest::collection::vec(any::<IpAddr>(), 0..3),
            proptest::collection::vec(any::<u16>(), 0..3),
            any::<(u16, u16)>(),
        )
            .prop_map(|(allow, only, ips, ports, (a, b))| {
                PeerPolicy::new(
                    allow,
                    only,
                    OwnAddresses {
                        ips,
                        ports,
                        relay_ports: a..=b,
                    },
                )
            })
    }

    proptest! {
        #[test]
        fn classify_never_panics(p in arb_policy(), peer in any::<SocketAddr>()) {
            let _ = p.classify(peer);
        }

        #[test]
        fn classify_never_panics_on_encodings(
            p in arb_policy(),
            a in any::<u32>(),
            port in any::<u16>(),
        ) {
            for (_, enc) in encodings(Ipv4Addr::from_bits(a)) {
                let _ = p.classify(sa(IpAddr::V6(enc), port));
            }
        }

        #[test]
        fn mapped_equals_v4(p in arb_policy(), a in any::<u32>(), port in any::<u16>()) {
            let v4 = Ipv4Addr::from_bits(a);
            let plain = p.classify(sa(IpAddr::V4(v4), port));
            let mapped = p.classify(sa(IpAddr::V6(v4.to_ipv6_mapped()), port));
            prop_assert_eq!(plain, mapped);
            let d = default_policy();
            prop_assert_eq!(
                d.classify(sa(IpAddr::V4(v4), port)),
                d.classify(sa(IpAddr::V6(v4.to_ipv6_mapped()), port))
            );
        }

        #[test]
        fn embedded_encodings_found(a in any::<u32>()) {
            let v4 = Ipv4Addr::from_bits(a);
            for (name, enc) in encodings(v4) {
                let got: Vec<_> = embedded_ipv4(enc).collect();
                // `::` and `::1` are not IPv4-compatible addresses.
                prop_assert!(got.contains(&v4) || enc.to_bits() <= 1, "{} {}: {:?}", name, enc, got);
            }
        }

        #[test]
        fn special_v4_never_allowed_through_encodings(a in any::<u32>(), port in any::<u16>()) {
            let v4 = Ipv4Addr::from_bits(a);
            let all_v6 = PeerPolicy::new(vec![net("::/0")], false, OwnAddresses::default());
            if is_special_purpose(IpAddr::V4(v4)) {
                for (name, enc) in encodings(v4) {
                    let v = all_v6.classify(sa(IpAddr::V6(enc), port));
                    prop_assert!(!v.is_allowed(), "{} {}", name, enc);
                }
            }
        }
    }
}
