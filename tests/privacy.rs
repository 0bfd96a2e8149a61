//! Privacy by construction, checked from the outside: after traffic from many source
//! addresses with distinct usernames, neither the log nor `/metrics` contains any of
//! those addresses, ports or usernames under the default settings; `truncate` and
//! `full` write exactly their forms (so these tests can fail). The counters move as
//! the traffic says. Clients are the independent webrtc-rs `turn` crate.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{Daemon, credentials, http_get, sample, set_key, udp_echo_peer};
use tokio::time::timeout;
use turn::client::Client;
use webrtc_util::Conn;

const WAIT: Duration = Duration::from_secs(10);
const ROUND_TRIPS: usize = 3;
const PAYLOAD: usize = 100;

/// What one client did, for the checks afterwards.
struct Footprint {
    addr: SocketAddr,
    username: String,
}

fn metrics_daemon(mode: &str) -> Daemon {
    Daemon::start_with(|c| {
        let c = set_key(&c, "metrics", "listen", "\"127.0.0.1:0\"");
        let c = set_key(&c, "log", "client_addresses", &format!("\"{mode}\""));
        set_key(&c, "limits", "allocations_per_user", "1")
    })
}

async fn turn_client(
    local: IpAddr,
    server: SocketAddr,
    user: &str,
    password: &str,
) -> (Client, SocketAddr) {
    common::turn_client(local, server, user, password).await
}

/// Allocates from `local`, relays a few datagrams to the echo peer, and deletes the
/// allocation.
async fn session(local: IpAddr, server: SocketAddr, peer: SocketAddr, id: &str) -> Footprint {
    let (username, password) = credentials(id, 600);
    let (client, addr) = turn_client(local, server, &username, &password).await;
    let relay = timeout(WAIT, client.allocate())
        .await
        .expect("allocate in time")
        .expect("allocate");
    let mut buf = vec![0u8; 2048];
    for i in 0..ROUND_TRIPS {
        let payload = vec![i as u8; PAYLOAD];
        relay.send_to(&payload, peer).await.expect("send");
        let (n, from) = timeout(WAIT, relay.recv_from(&mut buf))
            .await
            .expect("echo in time")
            .expect("recv");
        assert_eq!((from, &buf[..n]), (peer, &payload[..]));
    }
    relay.close().await.expect("close relay");
    client.close().await.expect("close client");
    Footprint { addr, username }
}

/// A client whose password is wrong: its Allocate must fail.
async fn wrong_password(local: IpAddr, server: SocketAddr, id: &str) -> Footprint {
    let (username, _) = credentials(id, 600);
    let (client, addr) = turn_client(local, server, &username, "not-the-password").await;
    let result = timeout(WAIT, client.allocate())
        .await
        .expect("answer in time");
    assert!(result.is_err(), "a wrong password must not allocate");
    client.close().await.expect("close client");
    Footprint { addr, username }
}

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// Runs sessions from 127.0.0.2..=last with distinct usernames (plus a wrong password
/// from each fifth address); returns every footprint.
async fn traffic(daemon: &Daemon, last: u8, tag: &str) -> Vec<Footprint> {
    let peer = udp_echo_peer(10_000);
    let mut footprints = Vec::new();
    for n in 2..=last {
        footprints
            .push(session(loopback(n), daemon.addr(), peer, &format!("{tag}-user-{n}")).await);
        if n % 5 == 0 {
            footprints
                .push(wrong_password(loopback(n), daemon.addr(), &format!("{tag}-bad-{n}")).await);
        }
    }
    wait_for_ends(
        daemon,
        footprints
            .iter()
            .filter(|f| !f.username.contains("-bad-"))
            .count(),
    );
    footprints
}

/// Waits (bounded) until the daemon has logged `count` ended allocations.
fn wait_for_ends(daemon: &Daemon, count: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ended = daemon
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("allocation ended"))
            .count();
        if ended >= count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {ended} of {count} allocations ended"
        );
        let _ = daemon.wait_for_log("\u{1}never\u{1}", Duration::from_millis(100));
    }
}

fn scrape(daemon: &Daemon) -> String {
    let (status, body) = http_get(daemon.metrics.expect("metrics endpoint"), "/metrics", &[]);
    assert_eq!(status, 200);
    body
}

/// Asserts that no form of any footprint's address, port or username is in `text`.
fn assert_no_trace(text: &str, footprints: &[Footprint], what: &str) {
    for f in footprints {
        let ip = f.addr.ip().to_string();
        let port = f.addr.port();
        assert!(!text.contains(&ip), "{what} contains client IP {ip}");
        for form in [
            format!(":{port}"),
            format!("={port}"),
            format!(" {port} "),
            format!("\"{port}\""),
        ] {
            assert!(
                !text.contains(&form),
                "{what} contains client port {port} ({form})"
            );
        }
        assert!(
            !text.contains(&f.username),
            "{what} contains username {}",
            f.username
        );
        let id = f.username.split_once(':').map(|(_, id)| id).unwrap_or("");
        assert!(
            id.is_empty() || !text.contains(id),
            "{what} contains REST id {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_settings_leave_no_client_trace_in_logs_or_metrics() {
    let daemon = metrics_daemon("omit");
    let footprints = traffic(&daemon, 60, "omit").await;
    assert!(footprints.len() >= 59);
    let log = daemon.log_text();
    assert!(
        log.contains("allocation created"),
        "the log does say what happened"
    );
    assert!(
        log.contains("[omitted]"),
        "client fields are present but omitted"
    );
    assert_no_trace(&log, &footprints, "log");
    assert_no_trace(&scrape(&daemon), &footprints, "/metrics");
    assert!(tokio::task::block_in_place(|| daemon.stop()).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_logs_only_the_truncated_forms() {
    let daemon = metrics_daemon("truncate");
    let footprints = traffic(&daemon, 12, "trunc").await;
    let log = daemon.log_text();
    assert!(
        log.contains("client=127.0.0.0"),
        "truncated IPv4 /16 in the log"
    );
    assert_no_trace(&log, &footprints, "log");
    assert_no_trace(&scrape(&daemon), &footprints, "/metrics");
    assert!(tokio::task::block_in_place(|| daemon.stop()).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_logs_the_full_addresses_and_still_no_usernames() {
    let daemon = metrics_daemon("full");
    let footprints = traffic(&daemon, 8, "full").await;
    let log = daemon.log_text();
    for f in footprints.iter().filter(|f| !f.username.contains("-bad-")) {
        assert!(
            log.contains(&format!("client={}", f.addr)),
            "full address {} in the log",
            f.addr
        );
    }
    for f in &footprints {
        assert!(!log.contains(&f.username), "usernames are never logged");
    }
    assert_no_trace(&scrape(&daemon), &footprints, "/metrics");
    assert!(tokio::task::block_in_place(|| daemon.stop()).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_the_traffic() {
    let daemon = metrics_daemon("omit");
    let before = scrape(&daemon);
    assert_eq!(
        sample(&before, "tarn_allocations_total{result=\"created\"}"),
        0.0
    );
    let footprints = traffic(&daemon, 6, "count").await;
    let sessions = footprints
        .iter()
        .filter(|f| !f.username.contains("-bad-"))
        .count() as f64;
    let wrong = footprints.len() as f64 - sessions;

    // A peer in a denied range: CreatePermission gets 403 (nothing is sent there).
    let peer = udp_echo_peer(10);
    let (username, password) = credentials("count-denied", 600);
    let (client, _) = turn_client(loopback(70), daemon.addr(), &username, &password).await;
    let relay = timeout(WAIT, client.allocate())
        .await
        .unwrap()
        .expect("allocate");
    let denied: SocketAddr = "10.1.2.3:9".parse().unwrap();
    let _ = timeout(WAIT, relay.send_to(b"x", denied)).await;
    // A second allocation for the same username: per-user quota (1 in this config).
    let (client2, _) = turn_client(loopback(71), daemon.addr(), &username, &password).await;
    assert!(
        timeout(WAIT, client2.allocate()).await.unwrap().is_err(),
        "486 expected"
    );
    // One more relayed round trip on the live allocation, so gauges are non-zero.
    relay.send_to(&[7u8; PAYLOAD], peer).await.unwrap();
    let mut buf = [0u8; 512];
    timeout(WAIT, relay.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();

    let body = scrape(&daemon);
    assert_eq!(
        sample(&body, "tarn_allocations_total{result=\"created\"}"),
        sessions + 1.0
    );
    assert_eq!(
        sample(
            &body,
            "tarn_allocations_active{transport=\"udp\",family=\"ipv4\"}"
        ),
        1.0
    );
    let trips = sessions * ROUND_TRIPS as f64 + 1.0;
    assert_eq!(
        sample(&body, "tarn_relayed_packets_total{direction=\"to_peer\"}"),
        trips
    );
    assert_eq!(
        sample(&body, "tarn_relayed_packets_total{direction=\"to_client\"}"),
        trips
    );
    assert_eq!(
        sample(&body, "tarn_relayed_bytes_total{direction=\"to_peer\"}"),
        trips * PAYLOAD as f64
    );
    assert_eq!(
        sample(&body, "tarn_relayed_bytes_total{direction=\"to_client\"}"),
        trips * PAYLOAD as f64
    );
    assert!(sample(&body, "tarn_auth_failures_total{reason=\"bad_integrity\"}") >= wrong);
    assert!(
        sample(
            &body,
            "tarn_auth_failures_total{reason=\"missing_credentials\"}"
        ) >= sessions
    );
    assert!(sample(&body, "tarn_peer_denied_total") >= 1.0);
    assert_eq!(
        sample(&body, "tarn_quota_rejections_total{kind=\"per_user\"}"),
        1.0
    );
    assert_eq!(
        sample(&body, "tarn_allocation_duration_seconds_count"),
        sessions
    );
    assert!(
        sample(
            &body,
            "tarn_requests_total{method=\"allocate\",result=\"success\"}"
        ) >= sessions + 1.0
    );
    assert_eq!(
        sample(&body, "tarn_build_info"),
        1.0,
        "no version label by default"
    );

    let (status, health) = http_get(daemon.metrics.unwrap(), "/healthz", &[]);
    assert_eq!((status, health.trim()), (200, "ok"));
    relay.close().await.unwrap();
    client.close().await.unwrap();
    client2.close().await.unwrap();
    assert!(tokio::task::block_in_place(|| daemon.stop()).success());
}

#[test]
fn bearer_token_guards_metrics_but_not_health() {
    let daemon = Daemon::start_with(|c| {
        let c = set_key(&c, "metrics", "listen", "\"127.0.0.1:0\"");
        set_key(&c, "metrics", "bearer_token", "\"s3cr3t-token\"")
    });
    let addr = daemon.metrics.expect("metrics endpoint");
    assert_eq!(http_get(addr, "/metrics", &[]).0, 401);
    assert_eq!(
        http_get(addr, "/metrics", &[("Authorization", "Bearer wrong")]).0,
        401
    );
    let (status, body) = http_get(
        addr,
        "/metrics",
        &[("Authorization", "Bearer s3cr3t-token")],
    );
    assert_eq!(status, 200);
    assert!(body.contains("tarn_allocations_total"));
    assert_eq!(http_get(addr, "/healthz", &[]).0, 200);
    let (status, om) = http_get(
        addr,
        "/metrics",
        &[
            ("Authorization", "Bearer s3cr3t-token"),
            ("Accept", "application/openmetrics-text"),
        ],
    );
    assert_eq!(status, 200);
    assert!(om.trim_end().ends_with("# EOF"), "OpenMetrics on request");
    assert!(daemon.stop().success());
}
