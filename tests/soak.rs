//! Soak: thousands of allocations, each with a permission and a channel, are created
//! and left to expire, twice. Afterwards the allocation table is empty, the daemon's
//! open file descriptors are back to their starting count, and its resident memory
//! has not grown from the first round to the second (freed memory is reused, not
//! leaked). Bounded: 2 × 1,500 allocations, a few seconds of wall time each round.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{Daemon, REALM, credentials, set_key};
use tarn::proto::{Class, Message, MessageWriter, Method, TransactionId, attr};

const ALLOCATIONS: usize = 1500;
/// Allocation lifetime in this test: long enough for the table to hold all of them at
/// once on an idle machine, short enough to keep the test quick.
const LIFETIME: Duration = Duration::from_secs(4);

struct Raw {
    socket: UdpSocket,
    username: String,
    key: [u8; 16],
    nonce: Vec<u8>,
    n: u32,
}

impl Raw {
    fn new(id: &str) -> Raw {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (username, password) = credentials(id, 3600);
        let key = tarn::auth::long_term_key(&username, REALM, &password);
        Raw {
            socket,
            username,
            key,
            nonce: Vec::new(),
            n: 0,
        }
    }

    fn request(
        &mut self,
        server: SocketAddr,
        method: Method,
        auth: bool,
        attrs: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        self.n += 1;
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&self.n.to_be_bytes());
        let mut buf = [0u8; 512];
        let mut w =
            MessageWriter::new(&mut buf, Class::Request, method, TransactionId(tid)).unwrap();
        attrs(&mut w);
        if auth {
            w.attr(attr::USERNAME, self.username.as_bytes()).unwrap();
            w.attr(attr::REALM, REALM.as_bytes()).unwrap();
            w.attr(attr::NONCE, &self.nonce).unwrap();
            w.message_integrity(&self.key).unwrap();
        }
        let len = w.finish();
        self.socket.send_to(&buf[..len], server).unwrap();
        let mut resp = [0u8; 1024];
        let (n, _) = self.socket.recv_from(&mut resp).expect("answer within 5 s");
        resp[..n].to_vec()
    }

    fn setup(&mut self, server: SocketAddr, peer: SocketAddr) {
        let challenge = self.request(server, Method::ALLOCATE, false, |w| {
            w.requested_transport(17).unwrap()
        });
        self.nonce = Message::parse(&challenge)
            .unwrap()
            .get(attr::NONCE)
            .expect("401 with NONCE")
            .value
            .to_vec();
        for (method, what) in [
            (Method::ALLOCATE, "allocate"),
            (Method::CREATE_PERMISSION, "permission"),
            (Method::CHANNEL_BIND, "channel"),
        ] {
            let resp = self.request(server, method, true, |w| match method {
                Method::ALLOCATE => w.requested_transport(17).unwrap(),
                Method::CREATE_PERMISSION => w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap(),
                _ => {
                    w.channel_number(0x4000).unwrap();
                    w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
                }
            });
            assert_eq!(
                Message::parse(&resp).unwrap().class(),
                Class::Success,
                "{what}"
            );
        }
    }
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Waits (bounded) until the daemon holds `expected` descriptors: a relay
/// socket is closed by the sweep that expires its allocation, up to a second after
/// its lifetime ends.
fn wait_for_fds(pid: u32, expected: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fds(pid) != expected {
        assert!(
            Instant::now() < deadline,
            "{what}: {} descriptors open, {expected} at start",
            fds(pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Creates ALLOCATIONS allocations, checks they are all live, and waits (bounded)
/// until every one has expired.
fn round(daemon: &Daemon, tag: &str) {
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let created_before = daemon.metric("tarn_allocations_total{result=\"created\"}");
    let started = Instant::now();
    let mut clients = Vec::with_capacity(ALLOCATIONS);
    for i in 0..ALLOCATIONS {
        let mut c = Raw::new(&format!("{tag}-{i}"));
        c.setup(daemon.addr(), peer);
        clients.push(c);
    }
    let created = daemon.metric("tarn_allocations_total{result=\"created\"}") - created_before;
    assert_eq!(created, ALLOCATIONS as f64, "every allocation was created");
    // All of them live at once, unless this (possibly busy) machine took longer to
    // create them than their lifetime: then the first ones have rightly expired.
    if started.elapsed() < LIFETIME - Duration::from_millis(500) {
        assert_eq!(
            daemon.metric("tarn_allocations_active{transport=\"udp\",family=\"ipv4\"}"),
            ALLOCATIONS as f64
        );
        assert_eq!(daemon.metric("tarn_channels_active"), ALLOCATIONS as f64);
    } else {
        eprintln!(
            "soak: creating {ALLOCATIONS} allocations took {:?}, longer than their lifetime",
            started.elapsed()
        );
    }
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.metric("tarn_allocations_active{transport=\"udp\",family=\"ipv4\"}") > 0.0 {
        assert!(Instant::now() < deadline, "allocations did not expire");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(daemon.metric("tarn_permissions_active"), 0.0);
    assert_eq!(daemon.metric("tarn_channels_active"), 0.0);
}

#[test]
fn allocations_come_and_go_without_leaking() {
    let daemon = Daemon::start_with(|c| {
        let secs = LIFETIME.as_secs().to_string();
        let c = set_key(&c, "allocation", "default_lifetime", &secs);
        let c = set_key(&c, "allocation", "max_lifetime", &secs);
        let c = set_key(&c, "limits", "max_allocations", "5000");
        let c = set_key(&c, "limits", "allocations_per_address", "5000");
        set_key(&c, "metrics", "listen", "\"127.0.0.1:0\"")
    });
    let pid = daemon.pid();
    let fds_start = fds(pid);
    round(&daemon, "first");
    wait_for_fds(pid, fds_start, "every relay socket closed");
    let rss_after_first = rss_kib(pid);
    round(&daemon, "second");
    wait_for_fds(pid, fds_start, "every relay socket closed again");
    let rss_after_second = rss_kib(pid);
    assert!(
        rss_after_second <= rss_after_first + rss_after_first / 10,
        "RSS grew from {rss_after_first} KiB to {rss_after_second} KiB between identical rounds"
    );
    eprintln!(
        "soak: fds {fds_start}, RSS after round 1 {rss_after_first} KiB, after round 2 {rss_after_second} KiB"
    );
    assert!(daemon.stop().success());
}
