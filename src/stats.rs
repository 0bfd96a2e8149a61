//! Live counters, kept per shard in plain atomics so the relay path takes no lock.
//!
//! Every label is a fixed enum defined here; nothing derived from client input can
//! become a label or a value. The Prometheus exposition sums the shards on scrape.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

macro_rules! label_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }
        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Number of values.
            pub const COUNT: usize = Self::ALL.len();
            /// The label value as exposed.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }
    };
}

label_enum!(
    /// Direction of relayed traffic.
    Direction { ToPeer => "to_peer", ToClient => "to_client" }
);
label_enum!(
    /// Client transport.
    TransportLabel { Udp => "udp", Tcp => "tcp", Tls => "tls" }
);
label_enum!(
    /// Address family.
    FamilyLabel { V4 => "ipv4", V6 => "ipv6" }
);
label_enum!(
    /// STUN/TURN request method.
    MethodLabel {
        Binding => "binding",
        Allocate => "allocate",
        Refresh => "refresh",
        CreatePermission => "create_permission",
        ChannelBind => "channel_bind",
        Other => "other",
    }
);
label_enum!(
    /// Outcome class of a request.
    ResultLabel { Success => "success", Challenge => "challenge", ClientError => "client_error", ServerError => "server_error" }
);
label_enum!(
    /// Why authentication failed.
    AuthFailure {
        Missing => "missing_credentials",
        StaleNonce => "stale_nonce",
        Expired => "expired",
        Malformed => "malformed_username",
        BadIntegrity => "bad_integrity",
        WrongRealm => "wrong_realm",
        WrongCredentials => "wrong_credentials",
    }
);
label_enum!(
    /// Which quota refused a request.
    QuotaKind {
        Total => "total",
        PerUser => "per_user",
        PerAddress => "per_address",
        Permissions => "permissions",
        Channels => "channels",
        Ports => "ports",
    }
);
label_enum!(
    /// Why a packet was dropped without an answer.
    DropReason {
        Malformed => "malformed",
        BadFingerprint => "bad_fingerprint",
        NoAllocation => "no_allocation",
        NoPermission => "no_permission",
        NoChannel => "no_channel",
        PeerDenied => "peer_denied",
        SendFailed => "send_failed",
        Unexpected => "unexpected_message",
        TooLarge => "too_large",
        ConnectionLimit => "connection_limit",
        TlsHandshake => "tls_handshake",
        RateLimited => "rate_limited",
        Bandwidth => "bandwidth",
    }
);
label_enum!(
    /// Result of an Allocate.
    AllocResult { Created => "created", Refused => "refused" }
);

/// Upper bounds (seconds) of the allocation-duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 8] = [10.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 86400.0];

/// Counters and gauges of one shard.
#[derive(Debug, Default)]
pub struct Stats {
    pub relayed_packets: [AtomicU64; Direction::COUNT],
    pub relayed_bytes: [AtomicU64; Direction::COUNT],
    pub requests: [[AtomicU64; ResultLabel::COUNT]; MethodLabel::COUNT],
    pub auth_failures: [AtomicU64; AuthFailure::COUNT],
    pub peer_denied: AtomicU64,
    pub quota_rejections: [AtomicU64; QuotaKind::COUNT],
    pub dropped: [AtomicU64; DropReason::COUNT],
    pub allocations_total: [AtomicU64; AllocResult::COUNT],
    pub allocations_active: [[AtomicI64; FamilyLabel::COUNT]; TransportLabel::COUNT],
    pub permissions_active: AtomicI64,
    pub channels_active: AtomicI64,
    /// Ended allocations per duration bucket (not cumulative); longer ones only count
    /// in `duration_count`, which the exposition turns into the +Inf bucket.
    pub duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    pub duration_sum_millis: AtomicU64,
    pub duration_count: AtomicU64,
}

#[inline]
fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Stats {
    /// One relayed datagram of `bytes` payload bytes.
    #[inline]
    pub fn relayed(&self, dir: Direction, bytes: usize) {
        bump(&self.relayed_packets[dir as usize], 1);
        bump(&self.relayed_bytes[dir as usize], bytes as u64);
    }
    /// A dropped packet.
    #[inline]
    pub fn discard(&self, reason: DropReason) {
        bump(&self.dropped[reason as usize], 1);
    }
    /// `n` dropped datagrams of one reason.
    pub fn discard_many(&self, reason: DropReason, n: u64) {
        if n > 0 {
            bump(&self.dropped[reason as usize], n);
        }
    }
    /// A finished request.
    pub fn request(&self, method: MethodLabel, result: ResultLabel) {
        bump(&self.requests[method as usize][result as usize], 1);
    }
    /// A failed authentication.
    pub fn auth_failure(&self, reason: AuthFailure) {
        bump(&self.auth_failures[reason as usize], 1);
    }
    /// A quota rejection.
    pub fn quota(&self, kind: QuotaKind) {
        bump(&self.quota_rejections[kind as usize], 1);
    }
    /// A peer refused by policy.
    pub fn denied(&self) {
        bump(&self.peer_denied, 1);
    }
    /// An Allocate outcome.
    pub fn allocation(&self, result: AllocResult) {
        bump(&self.allocations_total[result as usize], 1);
    }
    /// Adjusts the active-allocations gauge.
    pub fn allocations_active(&self, t: TransportLabel, f: FamilyLabel, delta: i64) {
        self.allocations_active[t as usize][f as usize].fetch_add(delta, Ordering::Relaxed);
    }
    /// Adjusts the active-permissions gauge.
    pub fn permissions_active(&self, delta: i64) {
        self.permissions_active.fetch_add(delta, Ordering::Relaxed);
    }
    /// Adjusts the active-channels gauge.
    pub fn channels_active(&self, delta: i64) {
        self.channels_active.fetch_add(delta, Ordering::Relaxed);
    }
    /// An allocation ended after `seconds`.
    pub fn allocation_lived(&self, lived: std::time::Duration) {
        let secs = lived.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|upper| secs <= *upper) {
            bump(&self.duration_buckets[i], 1);
        }
        bump(&self.duration_sum_millis, lived.as_millis() as u64);
        bump(&self.duration_count, 1);
    }
    /// Reads a counter (for tests and the exposition).
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
