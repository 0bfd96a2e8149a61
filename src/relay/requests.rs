//! STUN/TURN request handling: Binding, authentication, Allocate, Refresh,
//! CreatePermission and ChannelBind (RFC 8489, RFC 8656, RFC 6156).
//!
//! Every answer is encoded into the caller's buffer. Reason phrases are the standard
//! ones: they never say more about the server than the code already does.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use super::allocation::{Allocation, Channel, Relay};
use super::{
    AllocKey, BindError, ClientAction, Core, EndReason, FiveTuple, Now, PortChoice,
    RESERVATION_LIFETIME, RelayIo, family_index, family_label,
};
use crate::auth::{self, CredentialError, NonceCheck};
use crate::policy::Verdict;
use crate::proto::{
    self, Class, EncodeError, Family, Message, MessageWriter, Method, TransactionId, attr,
    integrity,
};
use crate::stats::{AllocResult, AuthFailure, DropReason, MethodLabel, QuotaKind, ResultLabel};

/// Attributes this server understands; any other comprehension-required one gets 420.
const KNOWN: &[u16] = &[
    attr::MAPPED_ADDRESS,
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::ERROR_CODE,
    attr::UNKNOWN_ATTRIBUTES,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REALM,
    attr::NONCE,
    attr::XOR_RELAYED_ADDRESS,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::EVEN_PORT,
    attr::REQUESTED_TRANSPORT,
    attr::DONT_FRAGMENT,
    attr::XOR_MAPPED_ADDRESS,
    attr::RESERVATION_TOKEN,
    attr::PRIORITY,
    attr::USE_CANDIDATE,
    attr::PADDING,
];

/// IANA protocol number of UDP, the only relayed transport (REQUESTED-TRANSPORT).
const PROTO_UDP: u8 = 17;

/// Standard reason phrases.
fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

fn method_label(m: Method) -> MethodLabel {
    match m {
        Method::BINDING => MethodLabel::Binding,
        Method::ALLOCATE => MethodLabel::Allocate,
        Method::REFRESH => MethodLabel::Refresh,
        Method::CREATE_PERMISSION => MethodLabel::CreatePermission,
        Method::CHANNEL_BIND => MethodLabel::ChannelBind,
        _ => MethodLabel::Other,
    }
}

/// What a request needs for its answer.
struct Request<'m> {
    msg: Message<'m>,
    fingerprint: bool,
}

/// The outcome of a handler: an error code, or a success whose attributes are
/// written by the handler itself.
enum Outcome {
    Error(u16),
    Written(usize),
}

/// A request whose MESSAGE-INTEGRITY verified.
struct Authenticated<'m> {
    username: &'m str,
    key: [u8; 16],
}

/// Why authentication did not succeed, and how to answer.
enum AuthOutcome {
    /// 401 or 438 with REALM and NONCE.
    Challenge(u16),
    /// 400 without integrity.
    BadRequest,
}

impl<S, C: Clone> Core<S, C> {
    pub(super) fn client_stun<'s, 'd, IO: RelayIo<Socket = S>>(
        &'s mut self,
        now: Now,
        five_tuple: FiveTuple,
        link: &C,
        data: &'d [u8],
        out: &mut [u8],
        io: &mut IO,
    ) -> ClientAction<'s, 'd, S> {
        let Ok(msg) = Message::parse(data) else {
            self.stats.discard(DropReason::Malformed);
            return ClientAction::None;
        };
        let fingerprint = integrity::has_fingerprint(&msg);
        if fingerprint && integrity::verify_fingerprint(&msg).is_err() {
            self.stats.discard(DropReason::BadFingerprint);
            return ClientAction::None;
        }
        match msg.class() {
            Class::Request => {
                let req = Request { msg, fingerprint };
                let len = self.request(now, five_tuple, link, &req, out, io);
                if len == 0 {
                    ClientAction::None
                } else {
                    ClientAction::Reply(len)
                }
            }
            Class::Indication if msg.method() == Method::SEND => {
                self.send_indication(now, &five_tuple, &msg)
            }
            // A Binding indication is a keep-alive: no answer (RFC 8489 6.3.2).
            Class::Indication if msg.method() == Method::BINDING => ClientAction::None,
            _ => {
                self.stats.discard(DropReason::Unexpected);
                ClientAction::None
            }
        }
    }

    /// Answers a request; returns the reply length (0: nothing to send).
    fn request<IO: RelayIo<Socket = S>>(
        &mut self,
        now: Now,
        five_tuple: FiveTuple,
        link: &C,
        req: &Request<'_>,
        out: &mut [u8],
        io: &mut IO,
    ) -> usize {
        let method = req.msg.method();
        let label = method_label(method);
        // Anyone without an allocation gets answers at a bounded rate per source
        // prefix: no state is created for them, and the answers cannot be used to
        // amplify a flood or to make the server burn HMACs.
        if !self.by_five_tuple.contains_key(&five_tuple) {
            let s = &self.settings;
            if !self.unauthenticated.allow(
                five_tuple.client.ip(),
                s.unauthenticated_rate,
                s.unauthenticated_burst,
                now.mono,
            ) {
                self.stats.discard(DropReason::RateLimited);
                return 0;
            }
        }
        let mut unknown = [0u16; 8];
        let n = req.msg.unknown_comprehension_required(KNOWN, &mut unknown);
        if n > 0 {
            self.stats.request(label, ResultLabel::ClientError);
            return self.error(out, req, 420, None, |w| {
                w.unknown_attributes(&unknown[..n.min(unknown.len())])
            });
        }
        if method == Method::BINDING {
            self.stats.request(label, ResultLabel::Success);
            return self.success(out, req, None, |w| {
                w.xor_address(attr::XOR_MAPPED_ADDRESS, five_tuple.client)?;
                w.address(attr::MAPPED_ADDRESS, five_tuple.client)
            });
        }
        if !matches!(
            method,
            Method::ALLOCATE | Method::REFRESH | Method::CREATE_PERMISSION | Method::CHANNEL_BIND
        ) {
            self.stats.request(label, ResultLabel::ClientError);
            return self.error(out, req, 400, None, |_| Ok(()));
        }
        let authed = match self.authenticate(now, &five_tuple, &req.msg) {
            Ok(a) => a,
            Err(AuthOutcome::BadRequest) => {
                self.stats.request(label, ResultLabel::ClientError);
                return self.error(out, req, 400, None, |_| Ok(()));
            }
            Err(AuthOutcome::Challenge(code)) => {
                self.stats.request(label, ResultLabel::Challenge);
                return self.challenge(now, &five_tuple, out, req, code);
            }
        };
        let outcome = match method {
            Method::ALLOCATE => self.allocate(now, five_tuple, link, req, &authed, out, io),
            Method::REFRESH => self.refresh(now, &five_tuple, req, &authed, out),
            Method::CREATE_PERMISSION => {
                self.create_permission(now, &five_tuple, req, &authed, out)
            }
            _ => self.channel_bind(now, &five_tuple, req, &authed, out),
        };
        match outcome {
            Outcome::Written(len) => {
                self.stats.request(label, ResultLabel::Success);
                len
            }
            Outcome::Error(code) => {
                let class = if code >= 500 {
                    ResultLabel::ServerError
                } else {
                    ResultLabel::ClientError
                };
                self.stats.request(label, class);
                if method == Method::ALLOCATE {
                    self.stats.allocation(AllocResult::Refused);
                }
                self.error(out, req, code, Some(&authed.key), |_| Ok(()))
            }
        }
    }

    /// Long-term credential check with REST usernames and stateless nonces (RFC 8489 9.2.4).
    fn authenticate<'m>(
        &self,
        now: Now,
        five_tuple: &FiveTuple,
        msg: &Message<'m>,
    ) -> Result<Authenticated<'m>, AuthOutcome> {
        if msg.get(attr::MESSAGE_INTEGRITY).is_none() {
            self.stats.auth_failure(AuthFailure::Missing);
            return Err(AuthOutcome::Challenge(401));
        }
        let text = |typ: u16, max: usize| {
            msg.get(typ)
                .and_then(|a| attr::decode_text(a.value, max).ok())
        };
        let (Some(username), Some(realm), Some(nonce)) = (
            text(attr::USERNAME, 513),
            text(attr::REALM, 763),
            msg.get(attr::NONCE).map(|a| a.value),
        ) else {
            self.stats.auth_failure(AuthFailure::Missing);
            return Err(AuthOutcome::BadRequest);
        };
        match self.nonce_key.check(
            nonce,
            five_tuple.client,
            five_tuple.transport.tag(),
            now.unix,
        ) {
            NonceCheck::Valid => {}
            NonceCheck::Stale | NonceCheck::Invalid => {
                self.stats.auth_failure(AuthFailure::StaleNonce);
                return Err(AuthOutcome::Challenge(438));
            }
        }
        // The key is derived from our realm; a request naming another realm was
        // computed for another server (RFC 8489 9.2.4).
        if realm != self.settings.realm {
            self.stats.auth_failure(AuthFailure::WrongRealm);
            return Err(AuthOutcome::Challenge(401));
        }
        match auth::check_rest_username(username, now.unix) {
            Ok(()) => {}
            Err(CredentialError::Expired) => {
                self.stats.auth_failure(AuthFailure::Expired);
                return Err(AuthOutcome::Challenge(401));
            }
            Err(CredentialError::Malformed) => {
                self.stats.auth_failure(AuthFailure::Malformed);
                return Err(AuthOutcome::Challenge(401));
            }
        }
        let realm = &self.settings.realm;
        for secret in &self.settings.secrets {
            let password = auth::rest_password(secret, username);
            let key = auth::long_term_key(username, realm, &password);
            if integrity::verify_message_integrity(msg, &key).is_ok() {
                return Ok(Authenticated { username, key });
            }
        }
        self.stats.auth_failure(AuthFailure::BadIntegrity);
        Err(AuthOutcome::Challenge(401))
    }

    /// The allocation of `five_tuple`, checked against the authenticated username.
    fn own_allocation(
        &mut self,
        five_tuple: &FiveTuple,
        authed: &Authenticated<'_>,
    ) -> Result<usize, u16> {
        let Some(&index) = self.by_five_tuple.get(five_tuple) else {
            return Err(437);
        };
        match self.allocations.get(index) {
            Some(a) if a.slot.username() == authed.username => Ok(index),
            Some(_) => {
                self.stats.auth_failure(AuthFailure::WrongCredentials);
                Err(441)
            }
            None => Err(437),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate<IO: RelayIo<Socket = S>>(
        &mut self,
        now: Now,
        five_tuple: FiveTuple,
        link: &C,
        req: &Request<'_>,
        authed: &Authenticated<'_>,
        out: &mut [u8],
        io: &mut IO,
    ) -> Outcome {
        let msg = &req.msg;
        let tid = msg.transaction_id();
        if let Some(&index) = self.by_five_tuple.get(&five_tuple) {
            // A retransmission of the Allocate that made this allocation gets the same answer.
            return match self.allocations.get(index) {
                Some(a) if a.allocate_tid == tid && a.slot.username() == authed.username => {
                    let len = self.allocate_success(out, req, &authed.key, index, now, None, None);
                    Outcome::Written(len)
                }
                _ => Outcome::Error(437),
            };
        }
        if self.is_draining() {
            // Shutting down: existing allocations keep relaying, new ones go elsewhere.
            return Outcome::Error(508);
        }
        let Some(transport) = msg.get(attr::REQUESTED_TRANSPORT) else {
            return Outcome::Error(400);
        };
        match attr::decode_requested_transport(transport.value) {
            Ok(PROTO_UDP) => {}
            Ok(_) => return Outcome::Error(442),
            Err(_) => return Outcome::Error(400),
        }
        let even_port = match msg.get(attr::EVEN_PORT) {
            None => None,
            Some(a) => match attr::decode_even_port(a.value) {
                Ok(reserve) => Some(reserve),
                Err(_) => return Outcome::Error(400),
            },
        };
        let token = match msg.get(attr::RESERVATION_TOKEN) {
            None => None,
            Some(a) => match attr::decode_reservation_token(a.value) {
                Ok(t) => Some(t),
                Err(_) => return Outcome::Error(400),
            },
        };
        let family_attr = |typ| match msg.get(typ) {
            None => Ok(None),
            Some(a) => match attr::decode_address_family(a.value) {
                Ok(Ok(f)) => Ok(Some(f)),
                Ok(Err(_)) => Err(440),
                Err(_) => Err(400),
            },
        };
        let requested = match family_attr(attr::REQUESTED_ADDRESS_FAMILY) {
            Ok(f) => f,
            Err(code) => return Outcome::Error(code),
        };
        let additional = match family_attr(attr::ADDITIONAL_ADDRESS_FAMILY) {
            Ok(f) => f,
            Err(code) => return Outcome::Error(code),
        };
        if token.is_some() && (even_port.is_some() || requested.is_some() || additional.is_some()) {
            return Outcome::Error(400);
        }
        if requested.is_some() && additional.is_some() {
            return Outcome::Error(400);
        }
        if additional == Some(Family::V4) {
            return Outcome::Error(400);
        }
        let slot = match self.quotas.acquire(authed.username, five_tuple.client.ip()) {
            Ok(slot) => slot,
            Err(kind) => {
                self.stats.quota(kind);
                return Outcome::Error(486);
            }
        };

        // Bind the relay socket(s).
        let mut relays: [Option<(S, SocketAddr)>; 2] = [None, None];
        let mut v6_error = None;
        let mut new_token = None;
        if let Some(token) = token {
            let Some((socket, bound)) = io.redeem(token, now.mono) else {
                return Outcome::Error(508);
            };
            relays[family_index(Family::of(&bound))] = Some((socket, bound));
        } else {
            let primary = requested.unwrap_or(Family::V4);
            let bound = match even_port {
                Some(true) => self.bind_even_pair(now, primary, io).map(|(s, a, t)| {
                    new_token = Some(t);
                    (s, a)
                }),
                Some(false) => io.bind(primary, PortChoice::Even),
                None => io.bind(primary, PortChoice::Any),
            };
            match bound {
                Ok(pair) => relays[family_index(primary)] = Some(pair),
                Err(BindError::FamilyUnavailable) => return Outcome::Error(440),
                Err(BindError::Exhausted) => {
                    self.stats.quota(QuotaKind::Ports);
                    return Outcome::Error(508);
                }
            }
            if additional == Some(Family::V6) {
                match io.bind(Family::V6, PortChoice::Any) {
                    Ok(pair) => relays[1] = Some(pair),
                    Err(BindError::FamilyUnavailable) => v6_error = Some(440),
                    Err(BindError::Exhausted) => {
                        self.stats.quota(QuotaKind::Ports);
                        v6_error = Some(508);
                    }
                }
            }
        }

        let lifetime = self.lifetime(msg);
        let index = self.allocations.vacant_key();
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let key = AllocKey {
            index: index as u32,
            generation,
        };
        let mut installed: [Option<Relay<S>>; 2] = [None, None];
        for (i, relay) in relays.into_iter().enumerate() {
            if let Some((mut socket, bound)) = relay {
                let family = Family::of(&bound);
                io.start(&mut socket, key, family);
                let announced = SocketAddr::new(
                    match family {
                        Family::V4 => self.settings.external_v4,
                        Family::V6 => self.settings.external_v6,
                    }
                    .unwrap_or(bound.ip()),
                    bound.port(),
                );
                installed[i] = Some(Relay {
                    socket,
                    bound,
                    announced,
                });
            }
        }
        let alloc = Allocation {
            generation,
            five_tuple,
            client: link.clone(),
            slot,
            relays: installed,
            created: now.mono,
            expires: now.mono + lifetime,
            allocate_tid: tid,
            permissions: Vec::new(),
            channels: Vec::new(),
            bandwidth: super::ratelimit::TokenBucket::new(f64::MAX, now.mono),
        };
        let transport = five_tuple.transport.label();
        for family in alloc.families() {
            self.stats
                .allocations_active(transport, family_label(family), 1);
        }
        self.allocations.insert(alloc);
        self.by_five_tuple.insert(five_tuple, index);
        self.schedule_sweep(now);
        self.stats.allocation(AllocResult::Created);
        tracing::info!(
            client = %crate::redact::client(five_tuple.client),
            transport = transport.label(),
            lifetime = lifetime.as_secs(),
            "allocation created"
        );
        Outcome::Written(self.allocate_success(
            out,
            req,
            &authed.key,
            index,
            now,
            new_token,
            v6_error,
        ))
    }

    /// Binds an even port and reserves the next one (EVEN-PORT with R=1).
    fn bind_even_pair<IO: RelayIo<Socket = S>>(
        &mut self,
        now: Now,
        family: Family,
        io: &mut IO,
    ) -> Result<(S, SocketAddr, [u8; 8]), BindError> {
        for _ in 0..16 {
            let (even, addr) = io.bind(family, PortChoice::Even)?;
            let Some(next) = addr.port().checked_add(1) else {
                continue;
            };
            match io.reserve(family, next, now.mono + RESERVATION_LIFETIME) {
                Ok(token) => return Ok((even, addr, token)),
                Err(BindError::FamilyUnavailable) => return Err(BindError::FamilyUnavailable),
                Err(BindError::Exhausted) => drop(even),
            }
        }
        Err(BindError::Exhausted)
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate_success(
        &self,
        out: &mut [u8],
        req: &Request<'_>,
        key: &[u8; 16],
        index: usize,
        now: Now,
        token: Option<[u8; 8]>,
        v6_error: Option<u16>,
    ) -> usize {
        let Some(alloc) = self.allocations.get(index) else {
            return 0;
        };
        let remaining = alloc.expires.saturating_duration_since(now.mono).as_secs() as u32;
        let client = alloc.five_tuple.client;
        self.success(out, req, Some(key), |w| {
            for relay in alloc.relays.iter().flatten() {
                w.xor_address(attr::XOR_RELAYED_ADDRESS, relay.announced)?;
            }
            w.u32_attr(attr::LIFETIME, remaining)?;
            if let Some(token) = token {
                w.attr(attr::RESERVATION_TOKEN, &token)?;
            }
            if let Some(code) = v6_error {
                w.address_error_code(Family::V6, code, reason(code))?;
            }
            w.xor_address(attr::XOR_MAPPED_ADDRESS, client)
        })
    }

    /// RFC 8656 7.2/7.3: min(requested, max), but never below the default.
    fn lifetime(&self, msg: &Message<'_>) -> Duration {
        let s = &self.settings;
        let requested = msg
            .get(attr::LIFETIME)
            .and_then(|a| attr::decode_u32(a.value).ok())
            .map(|secs| Duration::from_secs(u64::from(secs)));
        match requested {
            Some(r) => r.min(s.max_lifetime).max(s.default_lifetime),
            None => s.default_lifetime,
        }
    }

    fn refresh(
        &mut self,
        now: Now,
        five_tuple: &FiveTuple,
        req: &Request<'_>,
        authed: &Authenticated<'_>,
        out: &mut [u8],
    ) -> Outcome {
        let index = match self.own_allocation(five_tuple, authed) {
            Ok(i) => i,
            Err(code) => return Outcome::Error(code),
        };
        let msg = &req.msg;
        if let Some(a) = msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            match attr::decode_address_family(a.value) {
                Ok(Ok(f)) if self.allocations[index].relays[family_index(f)].is_some() => {}
                Ok(Ok(_)) => return Outcome::Error(443),
                Ok(Err(_)) => return Outcome::Error(440),
                Err(_) => return Outcome::Error(400),
            }
        }
        let zero = msg
            .get(attr::LIFETIME)
            .and_then(|a| attr::decode_u32(a.value).ok())
            == Some(0);
        let lifetime = if zero {
            self.remove(index, now, EndReason::Deleted);
            0
        } else {
            let lifetime = self.lifetime(msg);
            self.allocations[index].expires = now.mono + lifetime;
            lifetime.as_secs() as u32
        };
        Outcome::Written(self.success(out, req, Some(&authed.key), |w| {
            w.u32_attr(attr::LIFETIME, lifetime)
        }))
    }

    /// Checks a peer address for an allocation: policy (403), then family (443).
    fn check_peer(&self, index: usize, peer: SocketAddr) -> Result<(), u16> {
        if let Verdict::Deny(why) = self.settings.policy.classify(peer) {
            self.stats.denied();
            tracing::info!(reason = %why, "peer refused by policy");
            return Err(403);
        }
        // An IPv4-mapped IPv6 peer is an IPv4 peer that an IPv6 relay socket cannot
        // reach: a permission for it would be granted and never work.
        let mapped = matches!(peer, SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some());
        if mapped || self.allocations[index].relay_for(&peer).is_none() {
            return Err(443);
        }
        Ok(())
    }

    fn create_permission(
        &mut self,
        now: Now,
        five_tuple: &FiveTuple,
        req: &Request<'_>,
        authed: &Authenticated<'_>,
        out: &mut [u8],
    ) -> Outcome {
        let index = match self.own_allocation(five_tuple, authed) {
            Ok(i) => i,
            Err(code) => return Outcome::Error(code),
        };
        let msg = &req.msg;
        let tid = msg.transaction_id();
        // Validate every peer first: the request succeeds or changes nothing.
        let mut peers = 0usize;
        let mut fresh = 0usize;
        for a in msg
            .attributes()
            .take_while(|a| a.typ != attr::MESSAGE_INTEGRITY)
            .filter(|a| a.typ == attr::XOR_PEER_ADDRESS)
        {
            let Ok(peer) = attr::decode_xor_address(a.value, &tid) else {
                return Outcome::Error(400);
            };
            if let Err(code) = self.check_peer(index, peer) {
                return Outcome::Error(code);
            }
            peers += 1;
            if !self.allocations[index].permits(peer.ip(), now.mono) {
                fresh += 1;
            }
        }
        if peers == 0 {
            return Outcome::Error(400);
        }
        let alloc = &mut self.allocations[index];
        let live = alloc
            .permissions
            .iter()
            .filter(|p| p.expires > now.mono)
            .count();
        if live + fresh > self.settings.permissions_per_allocation {
            self.stats.quota(QuotaKind::Permissions);
            return Outcome::Error(508);
        }
        let expires = now.mono + self.settings.permission_lifetime;
        let mut added = 0;
        for a in msg
            .attributes()
            .take_while(|a| a.typ != attr::MESSAGE_INTEGRITY)
            .filter(|a| a.typ == attr::XOR_PEER_ADDRESS)
        {
            if let Ok(peer) = attr::decode_xor_address(a.value, &tid) {
                added += i64::from(alloc.permit(peer.ip(), expires));
            }
        }
        self.stats.permissions_active(added);
        Outcome::Written(self.success(out, req, Some(&authed.key), |_| Ok(())))
    }

    fn channel_bind(
        &mut self,
        now: Now,
        five_tuple: &FiveTuple,
        req: &Request<'_>,
        authed: &Authenticated<'_>,
        out: &mut [u8],
    ) -> Outcome {
        let index = match self.own_allocation(five_tuple, authed) {
            Ok(i) => i,
            Err(code) => return Outcome::Error(code),
        };
        let msg = &req.msg;
        let tid = msg.transaction_id();
        let number = msg
            .get(attr::CHANNEL_NUMBER)
            .and_then(|a| attr::decode_channel_number(a.value).ok());
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|a| attr::decode_xor_address(a.value, &tid).ok());
        let (Some(number), Some(peer)) = (number, peer) else {
            return Outcome::Error(400);
        };
        if !proto::is_valid_channel(number) {
            return Outcome::Error(400);
        }
        if let Err(code) = self.check_peer(index, peer) {
            return Outcome::Error(code);
        }
        let settings = &self.settings;
        let alloc = &mut self.allocations[index];
        // A channel keeps its peer, and a peer its channel, while bound (RFC 8656 12).
        let mut channel_gone = 0;
        alloc.channels.retain(|c| {
            let live = c.expires > now.mono;
            channel_gone += i64::from(!live);
            live
        });
        let by_number = alloc.channels.iter().position(|c| c.number == number);
        let by_peer = alloc.channels.iter().position(|c| c.peer == peer);
        let expires = now.mono + settings.channel_lifetime;
        let new_channel = match (by_number, by_peer) {
            (Some(a), Some(b)) if a == b => {
                alloc.channels[a].expires = expires;
                false
            }
            (None, None) => {
                if alloc.channels.len() >= settings.channels_per_allocation {
                    self.stats.channels_active(-channel_gone);
                    self.stats.quota(QuotaKind::Channels);
                    return Outcome::Error(508);
                }
                let live = alloc
                    .permissions
                    .iter()
                    .filter(|p| p.expires > now.mono)
                    .count();
                if !alloc.permits(peer.ip(), now.mono)
                    && live >= settings.permissions_per_allocation
                {
                    self.stats.channels_active(-channel_gone);
                    self.stats.quota(QuotaKind::Permissions);
                    return Outcome::Error(508);
                }
                alloc.channels.push(Channel {
                    number,
                    peer,
                    expires,
                });
                true
            }
            _ => {
                self.stats.channels_active(-channel_gone);
                return Outcome::Error(400);
            }
        };
        let new_permission = alloc.permit(peer.ip(), now.mono + settings.permission_lifetime);
        self.stats
            .channels_active(i64::from(new_channel) - channel_gone);
        self.stats.permissions_active(i64::from(new_permission));
        Outcome::Written(self.success(out, req, Some(&authed.key), |_| Ok(())))
    }

    /// 401 or 438 with REALM and a fresh NONCE, without integrity.
    fn challenge(
        &self,
        now: Now,
        five_tuple: &FiveTuple,
        out: &mut [u8],
        req: &Request<'_>,
        code: u16,
    ) -> usize {
        let mut nonce = auth::NonceBuf::default();
        let nonce = self.nonce_key.issue(
            five_tuple.client,
            five_tuple.transport.tag(),
            now.unix,
            self.settings.nonce_lifetime,
            &mut nonce,
        );
        let realm = self.settings.realm.as_str();
        self.error(out, req, code, None, |w| {
            w.attr(attr::REALM, realm.as_bytes())?;
            w.attr(attr::NONCE, nonce.as_bytes())
        })
    }

    fn success(
        &self,
        out: &mut [u8],
        req: &Request<'_>,
        key: Option<&[u8; 16]>,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), EncodeError>,
    ) -> usize {
        self.respond(out, req, Class::Success, key, body)
    }

    fn error(
        &self,
        out: &mut [u8],
        req: &Request<'_>,
        code: u16,
        key: Option<&[u8; 16]>,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), EncodeError>,
    ) -> usize {
        self.respond(out, req, Class::Error, key, |w| {
            w.error_code(code, reason(code))?;
            body(w)
        })
    }

    /// Writes a response: body, SOFTWARE (only if configured), MESSAGE-INTEGRITY
    /// (when the request authenticated), FINGERPRINT (when the request had one).
    fn respond(
        &self,
        out: &mut [u8],
        req: &Request<'_>,
        class: Class,
        key: Option<&[u8; 16]>,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), EncodeError>,
    ) -> usize {
        let write = |out: &mut [u8]| -> Result<usize, EncodeError> {
            let mut w = MessageWriter::new(out, class, req.msg.method(), req.msg.transaction_id())?;
            body(&mut w)?;
            if let Some(software) = &self.settings.software {
                w.attr(attr::SOFTWARE, software.as_bytes())?;
            }
            if let Some(key) = key {
                w.message_integrity(key)?;
            }
            if req.fingerprint {
                w.fingerprint()?;
            }
            Ok(w.finish())
        };
        write(out).unwrap_or(0)
    }
}

/// Writes a Data indication header in front of the payload at `buf[at..at + len]`
/// and pads it; returns the frame's range.
pub(super) fn write_data_indication_header(
    buf: &mut [u8],
    at: usize,
    len: usize,
    tid: TransactionId,
    peer: SocketAddr,
) -> Option<Range<usize>> {
    let addr_len = match peer {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    };
    let header = proto::HEADER_LEN + 4 + addr_len + 4;
    let start = at.checked_sub(header)?;
    let padded = (len + 3) & !3;
    let end = at + padded;
    if end > buf.len() {
        return None;
    }
    let mut w = MessageWriter::new(
        &mut buf[start..at - 4],
        Class::Indication,
        Method::DATA,
        tid,
    )
    .ok()?;
    w.xor_address(attr::XOR_PEER_ADDRESS, peer).ok()?;
    w.finish();
    let body_len = u16::try_from(4 + addr_len + 4 + padded).ok()?;
    buf[start + 2..start + 4].copy_from_slice(&body_len.to_be_bytes());
    buf[at - 4..at - 2].copy_from_slice(&attr::DATA.to_be_bytes());
    buf[at - 2..at].copy_from_slice(&(len as u16).to_be_bytes());
    buf[at + len..end].fill(0);
    Some(start..end)
}
