//! Credentials: TURN REST ephemeral credentials, long-term keys, and
//! stateless nonces.
//!
//! This module owns every secret-dependent computation of the daemon, so
//! that the protocol code never handles raw key material directly and the
//! constant-time and no-leak rules live in one place.
//!
//! * **TURN REST credentials** (coturn `use-auth-secret`, Prosody
//!   `mod_external_services`, draft-uberti-behave-turn-rest): the
//!   application server and the relay share a [`Secret`]; the username is
//!   `"<unix-expiry>:<opaque-id>"` and the password is
//!   `base64(HMAC-SHA1(secret, username))`. The relay keeps no user
//!   database: it checks the expiry ([`check_rest_username`]) and derives the
//!   password ([`rest_password`]).
//! * **Long-term keys** (RFC 8489 9.2.2): `MD5(username ":" realm ":"
//!   password)` ([`long_term_key`]) and the SHA-256 variant
//!   ([`long_term_key_sha256`]) used with PASSWORD-ALGORITHM. The caller is
//!   responsible for any OpaqueString (RFC 8265) preparation of the password;
//!   REST passwords are base64 and need none.
//! * **Stateless nonces** ([`NonceKey`]): a nonce is the expiry time plus a
//!   MAC over the expiry and the client's transport address, under a
//!   per-process random key. Checking it needs no per-client state, so an
//!   unauthenticated flood cannot grow memory, and a nonce issued to one
//!   client is useless from another address, port or transport.
//!
//! Secrets never appear in `Debug` output.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::digest::Key;
use hmac::digest::block_api::EagerHash;
use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A shared secret (TURN REST `static-auth-secret`). `Debug` does not print
/// it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes (typically the UTF-8 of the configured string).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// The raw secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a TURN REST username was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The username is not `"<expiry>"` or `"<expiry>:<id>"`.
    #[error("malformed TURN REST username")]
    Malformed,
    /// The expiry time has passed.
    #[error("TURN REST credential expired")]
    Expired,
}

/// Longest accepted expiry field: `u64::MAX` has 20 decimal digits.
const MAX_EXPIRY_DIGITS: usize = 20;

/// Parses the expiry of a TURN REST username.
///
/// username = `"<unix-expiry-seconds>:<opaque-id>"` or bare
/// `"<unix-expiry-seconds>"`; the expiry is decimal ASCII digits, at most 20
/// of them, no sign or space, and must fit in a `u64`. The id may contain
/// anything (even more colons) but must be non-empty when the colon is
/// present.
///
/// # Errors
/// [`CredentialError::Malformed`] for anything else.
pub fn rest_expiry(username: &str) -> Result<u64, CredentialError> {
    let expiry = match username.split_once(':') {
        Some((_, "")) => return Err(CredentialError::Malformed),
        Some((expiry, _id)) => expiry,
        None => username,
    };
    if expiry.is_empty()
        || expiry.len() > MAX_EXPIRY_DIGITS
        || !expiry.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(CredentialError::Malformed);
    }
    // Only digits remain, so the sole possible failure is u64 overflow.
    expiry.parse().map_err(|_| CredentialError::Malformed)
}

/// Checks a TURN REST username's format and expiry: `Err(Expired)` when
/// expiry < `now_unix` (expiry == now is still valid).
///
/// # Errors
/// [`CredentialError::Malformed`] as for [`rest_expiry`];
/// [`CredentialError::Expired`] once the expiry has passed.
pub fn check_rest_username(username: &str, now_unix: u64) -> Result<(), CredentialError> {
    if rest_expiry(username)? < now_unix {
        Err(CredentialError::Expired)
    } else {
        Ok(())
    }
}

/// Length of base64 (padded) of a 20-byte HMAC-SHA1.
const REST_PASSWORD_LEN: usize = 28;

/// Writes the REST password into `out` without allocating.
fn rest_password_into<'o>(
    secret: &Secret,
    username: &str,
    out: &'o mut [u8; REST_PASSWORD_LEN],
) -> &'o [u8] {
    let mac = new_hmac::<Sha1>(secret.as_bytes())
        .chain_update(username.as_bytes())
        .finalize()
        .into_bytes();
    // 20 bytes always encode to exactly 28 characters.
    let n = STANDARD.encode_slice(mac, &mut out[..]).unwrap_or(0);
    out.get(..n).unwrap_or_default()
}

/// base64 (standard alphabet, padded) of HMAC-SHA1(secret, username): the
/// TURN REST password for `username`.
#[must_use]
pub fn rest_password(secret: &Secret, username: &str) -> String {
    let mut buf = [0u8; REST_PASSWORD_LEN];
    String::from_utf8_lossy(rest_password_into(secret, username, &mut buf)).into_owned()
}

/// The RFC 8489 MD5 long-term key for a TURN REST username, computed
/// without allocating: `long_term_key(username, realm,
/// rest_password(secret, username))`.
#[must_use]
pub fn rest_long_term_key(secret: &Secret, username: &str, realm: &str) -> [u8; 16] {
    let mut buf = [0u8; REST_PASSWORD_LEN];
    let password = rest_password_into(secret, username, &mut buf);
    long_term_key_bytes::<Md5>(username, realm, password).into()
}

/// The RFC 8489 SHA-256 long-term key for a TURN REST username, computed
/// without allocating.
#[must_use]
pub fn rest_long_term_key_sha256(secret: &Secret, username: &str, realm: &str) -> [u8; 32] {
    let mut buf = [0u8; REST_PASSWORD_LEN];
    let password = rest_password_into(secret, username, &mut buf);
    long_term_key_bytes::<Sha256>(username, realm, password).into()
}

fn long_term_key_bytes<D: Digest>(
    username: &str,
    realm: &str,
    password: &[u8],
) -> hmac::digest::Output<D> {
    D::new()
        .chain_update(username.as_bytes())
        .chain_update(b":")
        .chain_update(realm.as_bytes())
        .chain_update(b":")
        .chain_update(password)
        .finalize()
}

/// MD5(username ":" realm ":" password) (RFC 8489 9.2.2).
#[must_use]
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    long_term_key_bytes::<Md5>(username, realm, password.as_bytes()).into()
}

/// SHA-256 of the same string (RFC 8489 PASSWORD-ALGORITHM SHA-256).
#[must_use]
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    long_term_key_bytes::<Sha256>(username, realm, password.as_bytes()).into()
}

/// Mints a TURN REST (username, password) pair: username =
/// `format!("{expiry}:{id}")` (or just the expiry if `id` is empty), expiry
/// = `now_unix + ttl_secs` (saturating).
#[must_use]
pub fn mint(secret: &Secret, id: &str, now_unix: u64, ttl_secs: u64) -> (String, String) {
    let expiry = now_unix.saturating_add(ttl_secs);
    let username = if id.is_empty() {
        expiry.to_string()
    } else {
        format!("{expiry}:{id}")
    };
    let password = rest_password(secret, &username);
    (username, password)
}

/// HMAC keyed with `key`, without a fallible constructor: the key is
/// derived to one hash block exactly as RFC 2104 does (hashed if longer
/// than a block, zero-padded otherwise), so the result is bit-for-bit the
/// standard HMAC.
fn new_hmac<D>(key: &[u8]) -> Hmac<D>
where
    D: EagerHash,
    Hmac<D>: KeyInit,
{
    let mut block = Key::<Hmac<D>>::default();
    if key.len() > block.len() {
        let digest = D::digest(key);
        for (dst, src) in block.iter_mut().zip(digest.iter()) {
            *dst = *src;
        }
    } else {
        for (dst, src) in block.iter_mut().zip(key) {
            *dst = *src;
        }
    }
    Hmac::<D>::new(&block)
}

/// Raw nonce bytes: 8-byte big-endian expiry + 16-byte truncated MAC.
const NONCE_RAW_LEN: usize = 24;
/// Bytes of HMAC-SHA256 kept in a nonce.
const NONCE_MAC_LEN: usize = 16;
/// Length of a nonce as text: base64url without padding of 24 bytes.
pub const NONCE_LEN: usize = 32;

/// The per-process key for stateless nonces: 32 random bytes, never
/// persisted. `Debug` prints nothing secret.
///
/// nonce = base64url-no-pad(expiry_be_u64 || mac\[..16\]), mac =
/// HMAC-SHA256(key, expiry_be || client ip octets || client port_be ||
/// transport tag byte). IPv4-mapped client addresses are treated as IPv4.
///
/// If the protocol layer adds the RFC 8489 `obMatJos2` security-feature
/// prefix, it must strip it again before calling [`NonceKey::check`].
#[derive(Clone)]
pub struct NonceKey {
    /// HMAC state already keyed; cloned per nonce.
    mac: Hmac<Sha256>,
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// Outcome of [`NonceKey::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by this process to this client and not expired.
    Valid,
    /// MAC is right (issued to this client) but the lifetime has passed:
    /// answer 438 Stale Nonce with a fresh one.
    Stale,
    /// Anything else: wrong length, bad base64, bad MAC, another client,
    /// another transport, or another process's key.
    Invalid,
}

/// Fixed-size output buffer for [`NonceKey::issue`] (no heap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonceBuf([u8; NONCE_LEN]);

impl Default for NonceBuf {
    fn default() -> Self {
        NonceBuf([0; NONCE_LEN])
    }
}

impl NonceBuf {
    /// The buffer's bytes (the last nonce issued into it, or zeros).
    pub fn as_bytes(&self) -> &[u8; NONCE_LEN] {
        &self.0
    }
}

impl NonceKey {
    /// A fresh random key from the thread-local CSPRNG.
    pub fn random() -> Self {
        Self::from_bytes(rand::random())
    }

    /// A key from fixed bytes (for tests and reproducible fixtures).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        NonceKey {
            mac: new_hmac::<Sha256>(&b),
        }
    }

    fn tag(
        &self,
        expiry: u64,
        client: SocketAddr,
        transport: u8,
    ) -> hmac::digest::Output<Hmac<Sha256>> {
        let mut mac = self.mac.clone();
        mac.update(&expiry.to_be_bytes());
        match client.ip().to_canonical() {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        mac.update(&[transport]);
        mac.finalize().into_bytes()
    }

    /// Issues a nonce for `client` over `transport` (any stable tag byte,
    /// e.g. 0 = UDP, 1 = TCP, 2 = TLS) valid until `now_unix +
    /// lifetime_secs` inclusive. Writes the nonce text into `out` and
    /// returns it as `&str` (always [`NONCE_LEN`] ASCII characters).
    #[must_use]
    pub fn issue<'o>(
        &self,
        client: SocketAddr,
        transport: u8,
        now_unix: u64,
        lifetime_secs: u64,
        out: &'o mut NonceBuf,
    ) -> &'o str {
        let expiry = now_unix.saturating_add(lifetime_secs);
        let tag = self.tag(expiry, client, transport);
        let mut raw = [0u8; NONCE_RAW_LEN];
        let (head, tail) = raw.split_at_mut(8);
        head.copy_from_slice(&expiry.to_be_bytes());
        for (dst, src) in tail.iter_mut().zip(tag.iter()) {
            *dst = *src;
        }
        // 24 bytes always encode to exactly 32 characters.
        let n = URL_SAFE_NO_PAD.encode_slice(raw, &mut out.0).unwrap_or(0);
        debug_assert_eq!(n, NONCE_LEN);
        out.0
            .get(..n)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or_default()
    }

    /// Checks a nonce received from `client` over `transport`. The MAC is
    /// compared in constant time. Never panics on any input.
    #[must_use]
    pub fn check(
        &self,
        nonce: &[u8],
        client: SocketAddr,
        transport: u8,
        now_unix: u64,
    ) -> NonceCheck {
        if nonce.len() != NONCE_LEN {
            return NonceCheck::Invalid;
        }
        let mut raw = [0u8; NONCE_RAW_LEN];
        // 32 characters without padding decode to exactly 24 bytes with no
        // leftover bits, so every valid nonce has exactly one text form.
        match URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) {
            Ok(NONCE_RAW_LEN) => {}
            _ => return NonceCheck::Invalid,
        }
        let (head, tail) = raw.split_at(8);
        let mut expiry_be = [0u8; 8];
        expiry_be.copy_from_slice(head);
        let expiry = u64::from_be_bytes(expiry_be);
        let tag = self.tag(expiry, client, transport);
        let expected = tag.get(..NONCE_MAC_LEN).unwrap_or_default();
        if !bool::from(expected.ct_eq(tail)) {
            return NonceCheck::Invalid;
        }
        if expiry < now_unix {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    // Expected values computed independently with Python:
    //   base64.b64encode(hmac.new(key, msg, hashlib.sha1).digest())
    //   hashlib.md5(b"user:realm:pass").hexdigest()
    #[test]
    fn rest_password_known_answers() {
        let north = Secret::new("north");
        let south = Secret::new("south");
        assert_eq!(
            rest_password(&north, "1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
        assert_eq!(
            rest_password(&south, "1700000000:alice"),
            "FJeNoC0yJtNekwCa5JT/sW/1Ls4="
        );
        assert_eq!(
            rest_password(&north, "1700000000"),
            "CWyHi3zCeWqXBir9thl4m+iZPRY="
        );
        // Key exactly one block, longer than a block (hashed), and empty.
        assert_eq!(
            rest_password(&Secret::new(vec![b'k'; 64]), "1700000000:alice"),
            "aiuqoSCFS7BNJi57pc4oOB/g3rA="
        );
        assert_eq!(
            rest_password(&Secret::new(vec![b'k'; 100]), "1700000000:alice"),
            "rFHfMfnsTxKQBO9SCPwZhY4zjT0="
        );
        assert_eq!(
            rest_password(&Secret::new(Vec::new()), "42"),
            "0Hqk3e/pb8FADSBzmKJ+/bGIz2E="
        );
    }

    #[test]
    fn hmac_sha256_known_answer() {
        let key: Vec<u8> = (0u8..32).collect();
        let tag = new_hmac::<Sha256>(&key)
            .chain_update(b"abc")
            .finalize()
            .into_bytes();
        assert_eq!(
            hex(&tag),
            "f0133729c4163dede81e21cd47839256da58171238c8a0d874397c73b14e1e47"
        );
    }

    #[test]
    fn long_term_keys_known_answers() {
        assert_eq!(
            hex(&long_term_key("user", "realm", "pass")),
            "8493fbc53ba582fb4c044c456bdc40eb"
        );
        assert_eq!(
            hex(&long_term_key_sha256("user", "realm", "pass")),
            "07e934117abd40836e7c6329b54731b2b2d2a5f9a71f544922d75e0730d8251b"
        );
        // RFC 5769 / RFC 8489 B.1 user and realm, password after SASLprep.
        assert_eq!(
            hex(&long_term_key(
                "\u{30de}\u{30c8}\u{30ea}\u{30c3}\u{30af}\u{30b9}",
                "example.org",
                "TheMatrIX"
            )),
            "e8ca7ad59d5eb0518e312911d2dab2a9"
        );
    }

    #[test]
    fn rest_long_term_keys_match_composition() {
        let s = Secret::new("topsecret");
        let u = "1700000000:bob";
        let p = rest_password(&s, u);
        assert_eq!(
            rest_long_term_key(&s, u, "example.org"),
            long_term_key(u, "example.org", &p)
        );
        assert_eq!(
            rest_long_term_key_sha256(&s, u, "example.org"),
            long_term_key_sha256(u, "example.org", &p)
        );
    }

    #[test]
    fn username_forms() {
        assert_eq!(rest_expiry("1700000000:alice"), Ok(1_700_000_000));
        assert_eq!(rest_expiry("1700000000"), Ok(1_700_000_000));
        assert_eq!(rest_expiry("0"), Ok(0));
        assert_eq!(rest_expiry("0001:x"), Ok(1));
        assert_eq!(rest_expiry("5:a:b:c"), Ok(5));
        assert_eq!(rest_expiry("5:::"), Ok(5));
        assert_eq!(rest_expiry("5: spaced id "), Ok(5));
        assert_eq!(rest_expiry("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(rest_expiry("18446744073709551615:x"), Ok(u64::MAX));
        assert_eq!(rest_expiry("00000000000000000007"), Ok(7));
    }

    #[test]
    fn malformed_usernames() {
        for u in [
            "",
            ":",
            "abc",
            "12a:x",
            "-5:x",
            "+5:x",
            " 5:x",
            "5 :x",
            "5:",
            ":x",
            "abc:5",
            "5\u{0660}:x",          // Arabic-Indic digit is not ASCII
            "18446744073709551616", // u64::MAX + 1
            "99999999999999999999:x",
            "100000000000000000000", // 21 digits
            "000000000000000000001:x",
        ] {
            assert_eq!(rest_expiry(u), Err(CredentialError::Malformed), "{u:?}");
            assert_eq!(
                check_rest_username(u, 0),
                Err(CredentialError::Malformed),
                "{u:?}"
            );
        }
    }

    #[test]
    fn expiry_boundary() {
        let u = "1000:alice";
        assert_eq!(check_rest_username(u, 999), Ok(()));
        assert_eq!(check_rest_username(u, 1000), Ok(()));
        assert_eq!(check_rest_username(u, 1001), Err(CredentialError::Expired));
        assert_eq!(check_rest_username("0", 0), Ok(()));
        assert_eq!(check_rest_username("0", 1), Err(CredentialError::Expired));
        assert_eq!(
            check_rest_username("18446744073709551615", u64::MAX),
            Ok(())
        );
    }

    #[test]
    fn mint_and_verify_with_several_secrets() {
        let secrets = [
            Secret::new("alpha"),
            Secret::new("bravo"),
            Secret::new("charlie"),
        ];
        let (u, p) = mint(&secrets[1], "carol@example.org", 1_700_000_000, 86_400);
        assert_eq!(u, "1700086400:carol@example.org");
        assert_eq!(check_rest_username(&u, 1_700_000_000), Ok(()));
        let matching: Vec<usize> = secrets
            .iter()
            .enumerate()
            .filter(|(_, s)| rest_password(s, &u) == p)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(matching, [1]);

        let (u, p) = mint(&secrets[0], "", 100, 5);
        assert_eq!(u, "105");
        assert_eq!(p, rest_password(&secrets[0], "105"));
        assert_eq!(rest_expiry(&u), Ok(105));

        let (u, _) = mint(&secrets[2], "x", u64::MAX, 10);
        assert_eq!(rest_expiry(&u), Ok(u64::MAX));
    }

    #[test]
    fn debug_leaks_nothing() {
        let s = Secret::new("hunter2-very-secret");
        let d = format!("{s:?} {s:#?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(s.as_bytes(), b"hunter2-very-secret");

        let k = NonceKey::from_bytes([0x41; 32]);
        let d = format!("{k:?} {k:#?}");
        assert_eq!(format!("{k:?}"), "NonceKey(..)");
        assert!(
            !d.contains("41") && !d.contains("65") && !d.contains('A'),
            "{d}"
        );
    }

    fn client() -> SocketAddr {
        "198.51.100.20:40000".parse().expect("literal")
    }

    const UDP: u8 = 0;
    const TCP: u8 = 1;

    #[test]
    fn nonce_round_trip_and_stale() {
        let key = NonceKey::from_bytes([7; 32]);
        let mut buf = NonceBuf::default();
        let n = key.issue(client(), UDP, 1000, 600, &mut buf).to_owned();
        assert_eq!(n.len(), NONCE_LEN);
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(buf.as_bytes(), n.as_bytes());
        let c = |now| key.check(n.as_bytes(), client(), UDP, now);
        assert_eq!(c(1000), NonceCheck::Valid);
        assert_eq!(c(0), NonceCheck::Valid);
        assert_eq!(c(1600), NonceCheck::Valid);
        assert_eq!(c(1601), NonceCheck::Stale);
        assert_eq!(c(u64::MAX), NonceCheck::Stale);
        // Deterministic for a fixed key, different per expiry.
        let mut buf2 = NonceBuf::default();
        assert_eq!(key.issue(client(), UDP, 1000, 600, &mut buf2), n);
        assert_ne!(key.issue(client(), UDP, 1001, 600, &mut buf2), n);
        // Saturating expiry.
        let far = key
            .issue(client(), UDP, u64::MAX, 600, &mut buf2)
            .to_owned();
        assert_eq!(
            key.check(far.as_bytes(), client(), UDP, u64::MAX),
            NonceCheck::Valid
        );
    }

    #[test]
    fn nonce_bound_to_client_and_transport() {
        let key = NonceKey::from_bytes([7; 32]);
        let mut buf = NonceBuf::default();
        let n = key
            .issue(client(), UDP, 1000, 600, &mut buf)
            .as_bytes()
            .to_vec();
        let other_ip: SocketAddr = "198.51.100.21:40000".parse().expect("literal");
        let other_port: SocketAddr = "198.51.100.20:40001".parse().expect("literal");
        let v6: SocketAddr = "[2001:db8::20]:40000".parse().expect("literal");
        assert_eq!(key.check(&n, other_ip, UDP, 1000), NonceCheck::Invalid);
        assert_eq!(key.check(&n, other_port, UDP, 1000), NonceCheck::Invalid);
        assert_eq!(key.check(&n, v6, UDP, 1000), NonceCheck::Invalid);
        assert_eq!(key.check(&n, client(), TCP, 1000), NonceCheck::Invalid);
        // Other client, even when expired, is Invalid rather than Stale.
        assert_eq!(key.check(&n, other_ip, UDP, 5000), NonceCheck::Invalid);
        // Another process's key.
        let other_key = NonceKey::from_bytes([8; 32]);
        assert_eq!(
            other_key.check(&n, client(), UDP, 1000),
            NonceCheck::Invalid
        );
        // A random key differs from a fixed one and from another random one.
        assert_eq!(
            NonceKey::random().check(&n, client(), UDP, 1000),
            NonceCheck::Invalid
        );
        // IPv4-mapped form of the same client is the same client.
        let mapped: SocketAddr = "[::ffff:198.51.100.20]:40000".parse().expect("literal");
        assert_eq!(key.check(&n, mapped, UDP, 1000), NonceCheck::Valid);
    }

    #[test]
    fn nonce_tampering_and_garbage() {
        let key = NonceKey::from_bytes([9; 32]);
        let mut buf = NonceBuf::default();
        let n = key
            .issue(client(), TCP, 1000, 600, &mut buf)
            .as_bytes()
            .to_vec();
        for i in 0..n.len() {
            for replacement in [b'A', b'z', b'-', b'_', b'0'] {
                let mut t = n.clone();
                if t[i] == replacement {
                    continue;
                }
                t[i] = replacement;
                assert_eq!(
                    key.check(&t, client(), TCP, 1000),
                    NonceCheck::Invalid,
                    "byte {i} -> {}",
                    replacement as char
                );
            }
        }
        // Moving the expiry forward (re-encoded) breaks the MAC.
        let mut raw = [0u8; NONCE_RAW_LEN];
        assert_eq!(
            URL_SAFE_NO_PAD.decode_slice(&n, &mut raw),
            Ok(NONCE_RAW_LEN)
        );
        raw[7] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(
            key.check(forged.as_bytes(), client(), TCP, 1000),
            NonceCheck::Invalid
        );

        assert_eq!(
            key.check(&n[..31], client(), TCP, 1000),
            NonceCheck::Invalid
        );
        let mut longer = n.clone();
        longer.push(b'A');
        assert_eq!(key.check(&longer, client(), TCP, 1000), NonceCheck::Invalid);
        assert_eq!(key.check(b"", client(), TCP, 1000), NonceCheck::Invalid);
        // Standard alphabet / padding variants are not accepted.
        let std_form = STANDARD.encode(raw);
        assert_eq!(
            key.check(std_form.as_bytes(), client(), TCP, 1000),
            NonceCheck::Invalid
        );
        assert_eq!(
            key.check(&[0xff; 32], client(), TCP, 1000),
            NonceCheck::Invalid
        );
        assert_eq!(
            key.check(&[b'='; 32], client(), TCP, 1000),
            NonceCheck::Invalid
        );
    }

    proptest! {
        #[test]
        fn nonce_check_never_panics(
            nonce in proptest::collection::vec(any::<u8>(), 0..64),
            addr in any::<SocketAddr>(),
            transport in any::<u8>(),
            now in any::<u64>(),
        ) {
            let key = NonceKey::from_bytes([3; 32]);
            prop_assert_eq!(key.check(&nonce, addr, transport, now), NonceCheck::Invalid);
        }

        #[test]
        fn nonce_check_never_panics_on_base64ish(
            nonce in "[A-Za-z0-9_=+/-]{30,34}",
            now in any::<u64>(),
        ) {
            let key = NonceKey::from_bytes([3; 32]);
            prop_assert_eq!(key.check(nonce.as_bytes(), client(), UDP, now), NonceCheck::Invalid);
        }

        #[test]
        fn nonce_round_trip_any_client(
            addr in any::<SocketAddr>(),
            transport in any::<u8>(),
            now in any::<u64>(),
            life in 0u64..100_000,
        ) {
            let key = NonceKey::from_bytes([5; 32]);
            let mut buf = NonceBuf::default();
            let n = key.issue(addr, transport, now, life, &mut buf).as_bytes().to_vec();
            prop_assert_eq!(n.len(), NONCE_LEN);
            prop_assert_eq!(key.check(&n, addr, transport, now), NonceCheck::Valid);
            let expiry = now.saturating_add(life);
            if let Some(after) = expiry.checked_add(1) {
                prop_assert_eq!(key.check(&n, addr, transport, after), NonceCheck::Stale);
            }
            prop_assert_eq!(
                key.check(&n, addr, transport.wrapping_add(1), now),
                NonceCheck::Invalid
            );
        }

        #[test]
        fn rest_expiry_never_panics(u in ".{0,40}") {
            let _ = rest_expiry(&u);
            let _ = check_rest_username(&u, 0);
        }

        #[test]
        fn rest_expiry_round_trip(e in any::<u64>(), id in "[^:]{0,8}(:.{0,8})?") {
            let u = if id.is_empty() { e.to_string() } else { format!("{e}:{id}") };
            prop_assert_eq!(rest_expiry(&u), Ok(e));
        }
    }
}
