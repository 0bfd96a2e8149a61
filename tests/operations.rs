//! Operating tarn under abuse and change: live reload of secrets, policy and log
//! settings without dropping allocations; drain on SIGTERM; quotas per address;
//! rate limits for unauthenticated traffic in bounded memory; bandwidth limits.
//! Clients are the independent webrtc-rs `turn` crate, plus raw Binding requests.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Daemon, credentials, http_get, set_key, udp_echo_peer};
use tokio::time::timeout;
use turn::client::Client;
use webrtc_util::Conn;

const WAIT: Duration = Duration::from_secs(10);

async fn client(local: IpAddr, server: SocketAddr, user: &str, password: &str) -> Client {
    common::turn_client(local, server, user, password).await.0
}

fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// One echo round trip through `relay`; false when nothing came back in time.
async fn round_trip(relay: &impl Conn, peer: SocketAddr, payload: &[u8], wait: Duration) -> bool {
    if relay.send_to(payload, peer).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 2048];
    loop {
        match timeout(wait, relay.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) if from == peer && &buf[..n] == payload => return true,
            Ok(Ok(_)) => continue, // a late echo of an earlier payload
            _ => return false,
        }
    }
}

fn config_path(daemon: &Daemon) -> std::path::PathBuf {
    daemon.dir().join("tarn.toml")
}

fn metric(daemon: &Daemon, series: &str) -> f64 {
    let (_, body) = http_get(daemon.metrics.expect("metrics"), "/metrics", &[]);
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} missing"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_secrets_and_policy_without_dropping_calls() {
    let daemon = Daemon::start_with(|c| set_key(&c, "metrics", "listen", "\"127.0.0.1:0\""));
    let peer = udp_echo_peer(10_000);
    let (user, password) = credentials("before-reload", 3600);
    let old = client(lo(1), daemon.addr(), &user, &password).await;
    let relay = timeout(WAIT, old.allocate())
        .await
        .unwrap()
        .expect("allocate");
    assert!(round_trip(&relay, peer, b"before", WAIT).await);

    // Rotate: only a new secret, addresses logged in full. Invalid first: refused.
    let path = config_path(&daemon);
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, set_key(&good, "auth", "no_such_key", "1")).unwrap();
    daemon.signal("HUP");
    daemon
        .wait_for_log("configuration reload refused", WAIT)
        .expect("invalid file refused");
    let rotated = set_key(&good, "auth", "secrets", "[\"rotated-secret\"]");
    let rotated = set_key(&rotated, "log", "client_addresses", "\"full\"");
    std::fs::write(&path, &rotated).unwrap();
    daemon.signal("HUP");
    daemon
        .wait_for_log("configuration reloaded", WAIT)
        .expect("reloaded");

    // The running call is untouched.
    for i in 0..10u8 {
        assert!(
            round_trip(&relay, peer, &[i; 50], WAIT).await,
            "relay {i} after reload; log:\n{}",
            daemon.log_text()
        );
    }
    // The old secret no longer allocates; the new one does, and its address is logged.
    let (u2, p2) = credentials("old-secret", 3600);
    let refused = client(lo(2), daemon.addr(), &u2, &p2).await;
    assert!(
        timeout(WAIT, refused.allocate()).await.unwrap().is_err(),
        "old secret refused"
    );
    let (u3, _) = credentials("new-secret", 3600);
    let p3 = rest_password("rotated-secret", &u3);
    let fresh = client(lo(3), daemon.addr(), &u3, &p3).await;
    let relay3 = timeout(WAIT, fresh.allocate())
        .await
        .unwrap()
        .expect("new secret allocates");
    assert!(round_trip(&relay3, peer, b"new", WAIT).await);
    daemon
        .wait_for_log("client=127.0.0.3:", WAIT)
        .expect("log.client_addresses applied live");

    // Policy: loopback no longer allowed; live permissions to it go at once.
    let closed = set_key(&rotated, "peers", "allow", "[]");
    std::fs::write(&path, closed).unwrap();
    daemon.signal("HUP");
    let deadline = Instant::now() + WAIT;
    while daemon.log_text().matches("configuration reloaded").count() < 2 {
        assert!(Instant::now() < deadline, "second reload not logged");
        let _ = daemon.wait_for_log("\u{1}", Duration::from_millis(50));
    }
    assert!(
        !round_trip(&relay, peer, b"after-policy", Duration::from_millis(500)).await,
        "no relay to a now-denied peer"
    );
    let dropped: f64 = ["no_permission", "no_channel", "peer_denied"]
        .iter()
        .map(|r| {
            metric(
                &daemon,
                &format!("tarn_dropped_packets_total{{reason=\"{r}\"}}"),
            )
        })
        .sum();
    assert!(dropped >= 1.0, "the refused datagram is counted");
    for c in [old, refused, fresh] {
        c.close().await.unwrap();
    }
    assert!(tokio::task::block_in_place(|| daemon.stop()).success());
}

fn rest_password(secret: &str, username: &str) -> String {
    tarn::auth::rest_password(
        &tarn::auth::Secret::new(secret.as_bytes().to_vec()),
        username,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits() {
    let daemon = Daemon::start_with(|c| {
        let c = set_key(&c, "server", "drain_timeout", "30");
        set_key(&c, "metrics", "listen", "\"127.0.0.1:0\"")
    });
    let peer = udp_echo_peer(10_000);
    let (user, password) = credentials("draining", 3600);
    let a = client(lo(1), daemon.addr(), &user, &password).await;
    let relay = timeout(WAIT, a.allocate())
        .await
        .unwrap()
        .expect("allocate");
    assert!(round_trip(&relay, peer, b"before", WAIT).await);
    assert_eq!(http_get(daemon.metrics.unwrap(), "/healthz", &[]).0, 200);

    daemon.signal("TERM");
    daemon.wait_for_log("draining", WAIT).expect("drain starts");
    let (status, body) = http_get(daemon.metrics.unwrap(), "/healthz", &[]);
    assert_eq!((status, body.trim()), (503, "draining"));
    // New allocations are refused; the running one relays on.
    let (u2, p2) = credentials("late", 3600);
    let b = client(lo(2), daemon.addr(), &u2, &p2).await;
    assert!(
        timeout(WAIT, b.allocate()).await.unwrap().is_err(),
        "refused while draining"
    );
    for i in 0..5u8 {
        assert!(
            round_trip(&relay, peer, &[i; 20], WAIT).await,
            "relays while draining"
        );
    }
    // The last allocation ends: the daemon exits 0 on its own.
    relay.close().await.unwrap();
    daemon
        .wait_for_log("drained", WAIT)
        .expect("drain completes when the last allocation ends");
    a.close().await.unwrap();
    b.close().await.unwrap();
    assert!(tokio::task::block_in_place(|| daemon.stop_after_exit()).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_stops_at_once() {
    let daemon = Daemon::start_with(|c| set_key(&c, "server", "drain_timeout", "600"));
    let (user, password) = credentials("held", 3600);
    let a = client(lo(1), daemon.addr(), &user, &password).await;
    let _relay = timeout(WAIT, a.allocate())
        .await
        .unwrap()
        .expect("allocate");
    daemon.signal("TERM");
    daemon.wait_for_log("draining", WAIT).expect("drain starts");
    let started = Instant::now();
    let status = tokio::task::block_in_place(|| daemon.stop());
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "second signal is immediate"
    );
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_per_address_is_486() {
    let daemon = Daemon::start_with(|c| set_key(&c, "limits", "allocations_per_address", "2"));
    let mut held = Vec::new();
    for i in 0..2 {
        let (u, p) = credentials(&format!("addr-{i}"), 3600);
        let c = client(lo(9), daemon.addr(), &u, &p).await;
        held.push(
            timeout(WAIT, c.allocate())
                .await
                .unwrap()
                .expect("within quota"),
        );
        std::mem::forget(c); // keep its socket (and allocation) for the test's life
    }
    let (u, p) = credentials("addr-3", 3600);
    let third = client(lo(9), daemon.addr(), &u, &p).await;
    assert!(
        timeout(WAIT, third.allocate()).await.unwrap().is_err(),
        "third from one address"
    );
    let other = client(lo(10), daemon.addr(), &u, &p).await;
    assert!(
        timeout(WAIT, other.allocate()).await.unwrap().is_ok(),
        "another address is fine"
    );
    assert!(tokio::task::block_in_place(|| daemon.stop()).success());
}

fn binding_request(n: u32) -> Vec<u8> {
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    req.extend_from_slice(&n.to_be_bytes());
    req.extend_from_slice(&[0u8; 8]);
    req
}

/// Sends `count` Binding requests from `socket` and counts the answers (bounded).
fn binding_burst(socket: &std::net::UdpSocket, server: SocketAddr, count: u32) -> u32 {
    for n in 0..count {
        socket.send_to(&binding_request(n), server).unwrap();
    }
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 256];
    let mut answers = 0;
    while socket.recv_from(&mut buf).is_ok() {
        answers += 1;
    }
    answers
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn unauthenticated_flood_is_rate_limited_in_bounded_memory() {
    let daemon = Daemon::start_with(|c| {
        let c = set_key(&c, "limits", "unauthenticated_rate", "5");
        let c = set_key(&c, "limits", "unauthenticated_burst", "10");
        set_key(&c, "metrics", "listen", "\"127.0.0.1:0\"")
    });
    let server = daemon.addr();
    let one = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let answers = binding_burst(&one, server, 100);
    assert!(
        (10..=15).contains(&answers),
        "burst of 10 (+rate), got {answers}"
    );
    // Another source prefix has its own budget.
    let two = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    assert!(
        binding_burst(&two, server, 5) == 5,
        "another source is answered"
    );

    // A flood from 4,000 source transport addresses across 200 loopback IPs.
    let pid = daemon.pid();
    let before = rss_kib(pid);
    let mut sockets = Vec::new();
    for ip in 3..=202u8 {
        for _ in 0..20 {
            sockets.push(std::net::UdpSocket::bind((Ipv4Addr::new(127, 0, 0, ip), 0)).unwrap());
        }
    }
    for round in 0..10u32 {
        for (i, s) in sockets.iter().enumerate() {
            let _ = s.send_to(&binding_request(round * 10_000 + i as u32), server);
        }
        // Let the daemon drain its socket buffer between rounds (bounded wait on a reply).
        let _ = binding_burst(&two, server, 0);
    }
    let after = rss_kib(pid);
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert!(
        metric(
            &daemon,
            "tarn_dropped_packets_total{reason=\"rate_limited\"}"
        ) >= 85.0
    );
    // Still serving: a fresh source is answered.
    let fresh = std::net::UdpSocket::bind("127.0.0.250:0").unwrap();
    assert_eq!(binding_burst(&fresh, server, 1), 1);
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_bandwidth_is_limited() {
    // 800 kbit/s = 100 kB/s; the burst is one second (and at least one datagram).
    let daemon = Daemon::start_with(|c| {
        let c = set_key(&c, "limits", "allocation_bandwidth_kbps", "800");
        set_key(&c, "metrics", "listen", "\"127.0.0.1:0\"")
    });
    let peer = udp_echo_peer(100_000);
    let (u, p) = credentials("bandwidth", 3600);
    let c = client(lo(1), daemon.addr(), &u, &p).await;
    let relay = timeout(WAIT, c.allocate())
        .await
        .unwrap()
        .expect("allocate");
    assert!(round_trip(&relay, peer, b"first", WAIT).await);
    // 1,000 datagrams of 1,000 bytes as fast as possible: far above 100 kB/s.
    let payload = vec![0x5a; 1000];
    for _ in 0..1000 {
        relay.send_to(&payload, peer).await.unwrap();
    }
    let mut buf = vec![0u8; 2048];
    let mut echoed = 0;
    while let Ok(Ok(_)) = timeout(Duration::from_millis(500), relay.recv_from(&mut buf)).await {
        echoed += 1;
    }
    assert!(echoed < 400, "{echoed} of 1000 echoed despite the limit");
    assert!(metric(&daemon, "tarn_dropped_packets_total{reason=\"bandwidth\"}") > 0.0);
    c.close().await.unwrap();
    assert!(tokio::task::block_in_place(|| daemon.stop()).success());
}
