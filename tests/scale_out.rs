//! Scale-out: REST credentials are stateless HMACs over the username, so any number of
//! tarn instances that share one secret accept the same credentials, with nothing
//! shared between them at run time. This is what lets an operator run one tarn per
//! node (DaemonSet, several DNS records, several `external_services` entries) behind
//! one conferencing server.
//!
//! Two independent daemons (own processes, own ports, same secret from the harness)
//! get one list of credentials. Each pair allocates on both instances at the same time
//! and relays datagrams to a UDP echo peer through each; neither refuses any of them.
//! A pair signed with another secret is refused by both (so acceptance really comes from
//! the shared secret). The client is the independent webrtc-rs `turn` crate.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Daemon, credentials, udp_echo_peer};
use tokio::time::timeout;
use turn::client::Client;
use webrtc_util::Conn;

/// Credentials minted once and used on both instances.
const USERS: usize = 10;
/// Datagrams relayed per allocation.
const ROUND_TRIPS: usize = 3;
/// Bound on every single wait.
const WAIT: Duration = Duration::from_secs(10);

async fn turn_client(server: SocketAddr, username: &str, password: &str) -> Client {
    let localhost = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    common::turn_client(localhost, server, username, password)
        .await
        .0
}

/// An allocation on one instance, with the client that holds it.
struct Session {
    client: Client,
    relay: Box<dyn Conn + Send + Sync>,
    instance: &'static str,
}

async fn allocate(
    instance: &'static str,
    server: SocketAddr,
    username: &str,
    password: &str,
) -> Session {
    let client = turn_client(server, username, password).await;
    let relay = timeout(WAIT, client.allocate())
        .await
        .unwrap_or_else(|_| panic!("{instance}: Allocate for {username} timed out"))
        .unwrap_or_else(|e| panic!("{instance} refused {username}: {e}"));
    Session {
        client,
        relay: Box::new(relay),
        instance,
    }
}

/// Relays `ROUND_TRIPS` distinct datagrams to the echo peer and checks each comes back.
async fn relay_round_trips(session: &Session, peer: SocketAddr, user: usize) {
    let mut buf = vec![0u8; 2048];
    for round in 0..ROUND_TRIPS {
        let payload = format!("{}-user{user}-round{round}", session.instance).into_bytes();
        session
            .relay
            .send_to(&payload, peer)
            .await
            .expect("send through the relay");
        let (n, from) = timeout(WAIT, session.relay.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: no echo for user {user}, round {round}",
                    session.instance
                )
            })
            .expect("receive through the relay");
        assert_eq!(
            (from, &buf[..n]),
            (peer, &payload[..]),
            "{}: wrong echo",
            session.instance
        );
    }
}

async fn close(session: Session) {
    session.relay.close().await.expect("close relay");
    session.client.close().await.expect("close client");
}

/// A username/password pair signed with a secret the daemons do not know.
fn foreign_credentials(id: &str) -> (String, String) {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let username = format!("{}:{id}", common::unix_now() + 600);
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"some-other-secret").expect("hmac key");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// Waits (bounded) until the daemon logged at least `count` lines containing `needle`;
/// returns how many it logged.
fn logged(daemon: &Daemon, needle: &str, count: usize) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = daemon
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count();
        if n >= count || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_credential_list_allocates_on_either_instance() {
    let a = Daemon::start();
    let b = Daemon::start();
    assert_ne!(a.addr(), b.addr(), "two instances, two listen addresses");
    let peer = udp_echo_peer(USERS * 2 * ROUND_TRIPS);

    // One list, minted once (as Prosody would), valid on every instance.
    let list: Vec<(String, String)> = (0..USERS)
        .map(|i| credentials(&format!("scale-out-{i}"), 600))
        .collect();

    for (i, (username, password)) in list.iter().enumerate() {
        // The same pair holds an allocation on both instances at once; alternate
        // which instance sees it first.
        let (first, second) = if i % 2 == 0 {
            (("a", a.addr()), ("b", b.addr()))
        } else {
            (("b", b.addr()), ("a", a.addr()))
        };
        let s1 = allocate(first.0, first.1, username, password).await;
        let s2 = allocate(second.0, second.1, username, password).await;
        let (r1, r2) = (
            s1.relay.local_addr().expect("relayed address"),
            s2.relay.local_addr().expect("relayed address"),
        );
        assert_ne!(r1, r2, "each instance relays from its own port");
        relay_round_trips(&s1, peer, i).await;
        relay_round_trips(&s2, peer, i).await;
        close(s1).await;
        close(s2).await;
    }

    // Control: a pair from another secret is refused by both instances.
    let (username, password) = foreign_credentials("scale-out-foreign");
    for (name, daemon) in [("a", &a), ("b", &b)] {
        let client = turn_client(daemon.addr(), &username, &password).await;
        let result = timeout(WAIT, client.allocate())
            .await
            .unwrap_or_else(|_| panic!("{name}: no answer to a foreign credential"));
        assert!(
            result.is_err(),
            "{name} must refuse a credential signed with another secret"
        );
        client.close().await.expect("close client");
    }

    // Each instance created exactly one allocation per credential: both did the work,
    // and the foreign pair created none.
    for (name, daemon) in [("a", &a), ("b", &b)] {
        let created = logged(daemon, "allocation created", USERS);
        assert_eq!(
            created,
            USERS,
            "instance {name} created {created} allocations, expected {USERS}; log:\n{}",
            daemon.log_text()
        );
    }

    assert!(tokio::task::block_in_place(|| a.stop()).success());
    assert!(tokio::task::block_in_place(|| b.stop()).success());
}
