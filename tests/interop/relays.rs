//! Shared by `tests/browser.rs` and `tests/aiortc.rs` (included with `#[path]`): the
//! tarn daemons a pair of WebRTC peers relays through, in one of two topologies.
//!
//! - [`Topology::OneServer`]: both peers allocate on the same daemon, so each peer's
//!   remote candidate is a relayed address of that daemon (relay ↔ relay on one
//!   server, what two relay-only browsers on one deployment do).
//! - [`Topology::TwoServers`]: each peer allocates on its own daemon; the daemons
//!   relay from disjoint port ranges (61000–65535 and 20000–24999), so neither sees
//!   the other's relayed address as one of its own ports.
//!
//! The TLS variants share one rcgen certificate for `localhost` and `127.0.0.1`.

#![allow(dead_code)] // each test crate uses part of this module

use std::path::{Path, PathBuf};

use crate::common::{Daemon, scratch_dir, set_key};

/// The relay port range of the second daemon in [`Topology::TwoServers`] (the first
/// keeps the base config's 61000–65535).
const SECOND_RELAY_PORTS: &str = "20000-24999";

/// How the peers reach tarn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// As tarn logs it and Chromium reports it (`relayProtocol`).
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Which daemons the two peers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    OneServer,
    TwoServers,
}

/// A self-signed certificate for `localhost` and `127.0.0.1`; its directory is removed
/// on drop.
pub struct TestCert {
    dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// base64(SHA-256(SubjectPublicKeyInfo DER)), for Chromium's
    /// `--ignore-certificate-errors-spki-list`.
    pub spki_sha256: String,
}

impl TestCert {
    pub fn new(tag: &str) -> TestCert {
        use base64::Engine;
        use rcgen::PublicKeyData;
        use sha2::Digest;

        let dir = scratch_dir(tag);
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("test certificate");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).expect("write certificate");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
        let spki_sha256 = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(
            ck.signing_key.subject_public_key_info(),
        ));
        TestCert {
            dir,
            cert,
            key,
            spki_sha256,
        }
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The daemons of one case.
pub struct Relays {
    pub topology: Topology,
    pub transport: Transport,
    daemons: Vec<Daemon>,
    cert: Option<TestCert>,
}

impl Relays {
    pub fn start(topology: Topology, transport: Transport) -> Relays {
        let cert = (transport == Transport::Tls).then(|| TestCert::new("relays-tls"));
        let start = |relay_ports: Option<&str>| {
            Daemon::start_with(|c| {
                let mut c = c;
                if let Some(ports) = relay_ports {
                    c = set_key(&c, "server", "relay_ports", &format!("\"{ports}\""));
                }
                if let Some(cert) = &cert {
                    c = set_key(&c, "server", "tls_listen", "[\"127.0.0.1:0\"]");
                    c = set_key(
                        &c,
                        "tls",
                        "certificate",
                        &format!("\"{}\"", cert.cert.display()),
                    );
                    c = set_key(
                        &c,
                        "tls",
                        "private_key",
                        &format!("\"{}\"", cert.key.display()),
                    );
                }
                c
            })
        };
        let mut daemons = vec![start(None)];
        if topology == Topology::TwoServers {
            daemons.push(start(Some(SECOND_RELAY_PORTS)));
        }
        Relays {
            topology,
            transport,
            daemons,
            cert,
        }
    }

    /// The daemon peer `peer` (0 or 1) allocates on.
    pub fn daemon(&self, peer: usize) -> &Daemon {
        &self.daemons[peer.min(self.daemons.len() - 1)]
    }

    /// The ICE server URL for peer `peer` (0 or 1).
    pub fn url(&self, peer: usize) -> String {
        let d = self.daemon(peer);
        match self.transport {
            Transport::Udp => format!("turn:127.0.0.1:{}?transport=udp", d.addr().port()),
            Transport::Tcp => format!("turn:127.0.0.1:{}?transport=tcp", d.tcp[0].port()),
            Transport::Tls => format!("turns:localhost:{}?transport=tcp", d.tls[0].port()),
        }
    }

    /// The test certificate (TLS only).
    pub fn cert(&self) -> Option<&TestCert> {
        self.cert.as_ref()
    }

    /// The certificate file to trust (TLS only).
    pub fn cafile(&self) -> Option<&Path> {
        self.cert.as_ref().map(|c| c.cert.as_path())
    }

    /// Checks from the daemons' side that the peers allocated there over the expected
    /// transport: two allocations on the one daemon, or one on each of two.
    pub fn check_allocations(&self) -> Result<(), String> {
        let wanted = if self.daemons.len() == 1 { 2 } else { 1 };
        let quoted = format!("transport=\"{}\"", self.transport.label());
        let bare = format!("transport={}", self.transport.label());
        for (i, d) in self.daemons.iter().enumerate() {
            let created = d
                .log_text()
                .lines()
                .filter(|l| l.contains("allocation created"))
                .filter(|l| l.contains(&quoted) || l.contains(&bare))
                .count();
            if created < wanted {
                return Err(format!(
                    "daemon {i} logged {created} \"allocation created\" over {}, expected at least {wanted}",
                    self.transport.label()
                ));
            }
        }
        Ok(())
    }

    /// Every daemon's log, labelled, after a hint on known causes of failure.
    pub fn log_text(&self) -> String {
        let logs = self
            .daemons
            .iter()
            .enumerate()
            .map(|(i, d)| format!("--- tarn daemon {i}:\n{}", d.log_text()))
            .collect::<Vec<_>>()
            .join("\n");
        let mut hint = String::new();
        if logs.contains("reason=own-address") {
            hint.push_str(
                "HINT: tarn refused a peer as one of its own addresses (reason=own-address): \
                 the other peer's relayed address is on this daemon, so relay-to-relay on one \
                 server is blocked by the peer policy.\n",
            );
        }
        format!("{hint}{logs}")
    }

    /// Stops every daemon; each must exit 0 on SIGTERM.
    pub fn stop(self) {
        for (i, d) in self.daemons.into_iter().enumerate() {
            assert!(d.stop().success(), "daemon {i} exited non-zero on SIGTERM");
        }
    }
}
