//! TURN over TCP and TLS against the real daemon: allocation and relay, stream framing
//! at the edge, certificate reload without dropping a call, and connection hygiene.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Daemon, REALM, credentials, set_key, udp_echo_peer};
use tarn::proto::stream::next_frame;
use tarn::proto::{Class, Message, MessageWriter, Method, TransactionId, attr};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A TURN client over any byte stream, using tarn's codec only to build and read frames.
struct StreamClient<S: Read + Write> {
    stream: S,
    buf: Vec<u8>,
    username: String,
    key: [u8; 16],
    nonce: Vec<u8>,
}

fn tid() -> TransactionId {
    TransactionId(rand_bytes())
}

fn rand_bytes() -> [u8; 12] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed) ^ (std::process::id() as u64) << 32;
    let mut t = [0u8; 12];
    t[..8].copy_from_slice(&n.to_be_bytes());
    t
}

impl<S: Read + Write> StreamClient<S> {
    fn new(stream: S, user: &str) -> Self {
        let (username, password) = credentials(user, 3600);
        let key = tarn::auth::long_term_key(&username, REALM, &password);
        Self {
            stream,
            buf: Vec::new(),
            username,
            key,
            nonce: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
        self.stream.flush().expect("flush");
    }

    /// Reads one frame (bounded by the stream's read timeout).
    fn recv(&mut self) -> Vec<u8> {
        loop {
            if let Some(frame) = next_frame(&self.buf, 70_000).expect("valid framing from tarn") {
                let bytes: Vec<u8> = self.buf.drain(..frame.total()).collect();
                return bytes;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "connection closed by tarn");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn request(
        &mut self,
        method: Method,
        auth: bool,
        attrs: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        let mut out = vec![0u8; 1024];
        let mut w = MessageWriter::new(&mut out, Class::Request, method, tid()).unwrap();
        attrs(&mut w);
        if auth {
            w.attr(attr::USERNAME, self.username.as_bytes()).unwrap();
            w.attr(attr::REALM, REALM.as_bytes()).unwrap();
            w.attr(attr::NONCE, &self.nonce).unwrap();
            w.message_integrity(&self.key).unwrap();
        }
        let n = w.finish();
        self.send(&out[..n]);
        let resp = self.recv();
        let msg = Message::parse(&resp).expect("STUN response");
        assert_eq!(msg.method(), method);
        resp
    }

    /// 401 then Allocate; returns the relayed address.
    fn allocate(&mut self) -> SocketAddr {
        let challenge = self.request(Method::ALLOCATE, false, |w| {
            w.requested_transport(17).unwrap()
        });
        assert_eq!(error_code(&challenge), Some(401));
        self.nonce = Message::parse(&challenge)
            .unwrap()
            .get(attr::NONCE)
            .unwrap()
            .value
            .to_vec();
        let resp = self.request(Method::ALLOCATE, true, |w| {
            w.requested_transport(17).unwrap()
        });
        assert_eq!(error_code(&resp), None, "allocate failed");
        let msg = Message::parse(&resp).unwrap();
        tarn::proto::integrity::verify_message_integrity(&msg, &self.key).expect("integrity");
        attr::decode_xor_address(
            msg.get(attr::XOR_RELAYED_ADDRESS).unwrap().value,
            &msg.transaction_id(),
        )
        .unwrap()
    }

    fn channel_bind(&mut self, number: u16, peer: SocketAddr) {
        let resp = self.request(Method::CHANNEL_BIND, true, |w| {
            w.channel_number(number).unwrap();
            w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        });
        assert_eq!(error_code(&resp), None, "channel bind failed");
    }

    fn create_permission(&mut self, peer: SocketAddr) {
        let resp = self.request(Method::CREATE_PERMISSION, true, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        });
        assert_eq!(error_code(&resp), None, "create permission failed");
    }

    /// Sends `payload` on channel `number` and returns the echoed payload.
    fn channel_round_trip(&mut self, number: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; payload.len() + 8];
        let n = tarn::proto::encode_channel_data(&mut frame, number, payload, true).unwrap();
        self.send(&frame[..n]);
        let back = self.recv();
        assert_eq!(back.len() % 4, 0, "ChannelData over streams is padded");
        let cd = tarn::proto::parse_channel_data(&back).expect("ChannelData back");
        assert_eq!(cd.channel, number);
        cd.data.to_vec()
    }

    /// Sends a Send indication and returns the DATA of the Data indication that comes back.
    fn send_indication_round_trip(&mut self, peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; payload.len() + 64];
        let mut w = MessageWriter::new(&mut out, Class::Indication, Method::SEND, tid()).unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        w.attr(attr::DATA, payload).unwrap();
        let n = w.finish();
        self.send(&out[..n]);
        let back = self.recv();
        let msg = Message::parse(&back).expect("Data indication");
        assert_eq!(
            (msg.class(), msg.method()),
            (Class::Indication, Method::DATA)
        );
        msg.get(attr::DATA).unwrap().value.to_vec()
    }
}

fn error_code(resp: &[u8]) -> Option<u16> {
    let msg = Message::parse(resp).ok()?;
    (msg.class() == Class::Error)
        .then(|| {
            attr::decode_error_code(msg.get(attr::ERROR_CODE)?.value)
                .ok()
                .map(|(c, _)| c)
        })
        .flatten()
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

fn relay_both_ways<S: Read + Write>(client: &mut StreamClient<S>, peer: SocketAddr, rounds: usize) {
    client.create_permission(peer);
    for i in 0..rounds {
        let payload = format!("send-indication {i}").into_bytes();
        assert_eq!(client.send_indication_round_trip(peer, &payload), payload);
    }
    client.channel_bind(0x4000, peer);
    for i in 0..rounds {
        // Odd lengths exercise the padding on the way in and out.
        let payload = vec![i as u8; 1 + i % 7 + i * 13];
        assert_eq!(client.channel_round_trip(0x4000, &payload), payload);
    }
}

#[test]
fn tcp_allocation_relays_both_ways_and_closing_frees_it() {
    let daemon = Daemon::start();
    let tcp_addr = *daemon.tcp.first().expect("tcp listener");
    assert_eq!(
        tcp_addr.port(),
        daemon.addr().port(),
        "TCP shares the UDP port"
    );
    let peer = udp_echo_peer(1000);
    let mut client = StreamClient::new(tcp(tcp_addr), "tcp-user");
    let relayed = client.allocate();
    relay_both_ways(&mut client, peer, 20);
    drop(client);
    // Closing the connection ends the allocation: its relay port becomes free.
    wait_until(
        Duration::from_secs(10),
        || std::net::UdpSocket::bind(relayed).is_ok(),
        "relay port freed after close",
    );
    assert!(daemon.stop().success());
}

#[test]
fn tcp_framing_split_coalesced_and_garbage() {
    let daemon = Daemon::start();
    let tcp_addr = daemon.tcp[0];
    // Two Binding requests in one write, the second split across two writes.
    let mut s = tcp(tcp_addr);
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    req.extend_from_slice(&[1u8; 12]);
    let mut req2 = req.clone();
    req2[8] = 2;
    let mut both = req.clone();
    both.extend_from_slice(&req2[..7]);
    s.write_all(&both).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // let the first half arrive on its own
    s.write_all(&req2[7..]).unwrap();
    let mut client = StreamClient::new(s, "framing");
    let first = client.recv();
    let second = client.recv();
    assert_eq!(
        Message::parse(&first).unwrap().transaction_id().0,
        [1u8; 12]
    );
    assert_eq!(Message::parse(&second).unwrap().transaction_id().0[0], 2);

    // Garbage: the server cuts the connection off.
    let mut g = tcp(tcp_addr);
    g.write_all(&[0xFF; 64]).unwrap();
    let mut buf = [0u8; 16];
    let n = g.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "garbage gets the connection closed");

    // An oversized ChannelData length is refused the same way (0x4000, len 0xFFFF is
    // fine; a STUN length that is not a multiple of 4 is garbage).
    let mut o = tcp(tcp_addr);
    o.write_all(&[0x00, 0x01, 0x00, 0x03, 0x21, 0x12, 0xA4, 0x42])
        .unwrap();
    let n = o.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "bad length gets the connection closed");

    // The daemon still serves others.
    let mut ok = StreamClient::new(tcp(tcp_addr), "after-garbage");
    ok.allocate();
    assert!(daemon.stop().success());
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A self-signed certificate for 127.0.0.1 / localhost, written as PEM files.
fn write_cert(
    dir: &Path,
    name: &str,
) -> (
    rcgen::CertifiedKey<rcgen::KeyPair>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (ck, cert, key)
}

fn tls_client(
    addr: SocketAddr,
    trusted: &[&rcgen::CertifiedKey<rcgen::KeyPair>],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for ck in trusted {
        roots.add(ck.cert.der().clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp(addr));
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("TLS handshake");
    }
    stream
}

fn served_cert(stream: &rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> Vec<u8> {
    stream.conn.peer_certificates().expect("server certificate")[0].to_vec()
}

fn tls_daemon(dir: &Path, cert: &Path, key: &Path, extra: impl FnOnce(String) -> String) -> Daemon {
    let _ = dir;
    let cert = cert.display().to_string();
    let key = key.display().to_string();
    Daemon::start_with(|c| {
        let c = set_key(&c, "server", "tls_listen", "[\"127.0.0.1:0\"]");
        let c = set_key(&c, "tls", "certificate", &format!("\"{cert}\""));
        let c = set_key(&c, "tls", "private_key", &format!("\"{key}\""));
        extra(c)
    })
}

#[test]
fn tls_allocation_survives_certificate_renewal() {
    let dir = common::scratch_dir("tls-reload");
    let (old, cert_a, key_a) = write_cert(&dir, "a");
    let live_cert = dir.join("fullchain.pem");
    let live_key = dir.join("privkey.pem");
    std::fs::copy(&cert_a, &live_cert).unwrap();
    std::fs::copy(&key_a, &live_key).unwrap();
    let daemon = tls_daemon(&dir, &live_cert, &live_key, |c| {
        set_key(&c, "tls", "reload_interval", "1")
    });
    let tls_addr = *daemon.tls.first().expect("tls listener");
    let peer = udp_echo_peer(1000);

    let stream = tls_client(tls_addr, &[&old]);
    assert_eq!(served_cert(&stream), old.cert.der().to_vec());
    let mut call = StreamClient::new(stream, "tls-user");
    call.allocate();
    relay_both_ways(&mut call, peer, 5);

    // Renewal, as certbot does it: new files replace the old ones.
    let (new, cert_b, key_b) = write_cert(&dir, "b");
    std::fs::copy(&key_b, &live_key).unwrap();
    std::fs::copy(&cert_b, &live_cert).unwrap();
    daemon
        .wait_for_log("TLS certificate reloaded", Duration::from_secs(15))
        .expect("the renewal is picked up without SIGHUP");

    // A new handshake sees the new certificate...
    let fresh = tls_client(tls_addr, &[&old, &new]);
    assert_eq!(served_cert(&fresh), new.cert.der().to_vec());
    // ...and the call that started before the renewal still relays.
    for i in 0..10u8 {
        let payload = vec![i; 100];
        assert_eq!(call.channel_round_trip(0x4000, &payload), payload);
    }

    // A broken renewal is refused and the current certificate stays.
    std::fs::write(&live_key, "not a key").unwrap();
    daemon.signal("HUP");
    daemon
        .wait_for_log("reload refused", Duration::from_secs(10))
        .expect("broken key refused");
    let still = tls_client(tls_addr, &[&old, &new]);
    assert_eq!(served_cert(&still), new.cert.der().to_vec());
    assert!(daemon.stop().success());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tls_handshake_timeout_and_connection_caps() {
    let dir = common::scratch_dir("tls-hygiene");
    let (_ck, cert, key) = write_cert(&dir, "c");
    let daemon = tls_daemon(&dir, &cert, &key, |c| {
        let c = set_key(&c, "tls", "handshake_timeout", "1");
        let c = set_key(&c, "limits", "connections_per_address", "3");
        set_key(&c, "limits", "idle_timeout", "2")
    });
    let tls_addr = daemon.tls[0];
    let tcp_addr = daemon.tcp[0];

    // A client that never starts its handshake is dropped after the timeout.
    let started = Instant::now();
    let mut silent = tcp(tls_addr);
    let mut buf = [0u8; 8];
    assert_eq!(
        silent.read(&mut buf).unwrap_or(0),
        0,
        "closed by the server"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed near the 1 s timeout"
    );

    // A TCP connection that never allocates is closed after the idle timeout.
    let mut idle = tcp(tcp_addr);
    assert_eq!(
        idle.read(&mut buf).unwrap_or(0),
        0,
        "idle connection closed"
    );

    // Per-address cap: three connections are admitted, the fourth is closed at once.
    // Each one allocates right after connecting: a connection that waits longer than
    // the idle timeout before its first Allocate is rightly closed, and on a busy CI
    // machine three sequential allocations can take longer than that.
    let mut held: Vec<_> = (0..3)
        .map(|i| {
            let mut c = StreamClient::new(tcp(tcp_addr), &format!("cap{i}"));
            c.allocate();
            c
        })
        .collect();
    let mut fourth = tcp(tcp_addr);
    let _ = fourth.write_all(&[0u8; 20]);
    assert_eq!(
        fourth.read(&mut buf).unwrap_or(0),
        0,
        "over the cap: closed"
    );
    // Allocated connections are not idle-closed, and still work: stay quiet for longer
    // than the idle timeout (a wait for something that must *not* happen).
    std::thread::sleep(Duration::from_millis(2500));
    for c in &mut held {
        let r = c.request(Method::REFRESH, true, |_| {});
        assert_eq!(error_code(&r), None);
    }
    assert!(daemon.stop().success());
    let _ = std::fs::remove_dir_all(dir);
}
