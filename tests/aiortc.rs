//! aiortc (PyPI), a WebRTC stack of its own, connects two peers through tarn with
//! relay-only ICE and echoes data-channel messages over `turn:…?transport=udp`,
//! `turn:…?transport=tcp` and `turns:localhost:…?transport=tcp`.
//!
//! Relay only: aiortc 1.16's `RTCConfiguration` has `iceTransportPolicy`; `RELAY` is
//! handed to aioice as `TransportPolicy.RELAY`, so no host or server-reflexive
//! candidate is gathered (no SDP filtering needed). The script,
//! `tests/interop/aiortc_echo.py`, checks that every SDP candidate is a relay
//! candidate and that the nominated pair joins two relay candidates; this test also
//! checks tarn's log for the allocations over the expected transport. For `turns:`
//! aiortc makes a default `ssl.SSLContext` (hostname checked); the Python process
//! trusts the rcgen test certificate through `SSL_CERT_FILE`.
//!
//! Two topologies, as in `tests/browser.rs` (see `tests/interop/relays.rs`): both
//! peers on one daemon (`*_one_server_*`), or each on its own (`*_two_servers_*`).
//!
//! Needs Python with aiortc: `.ci/setup-browser` installs it into a venv and `.ci/run`
//! points `TARN_PYTHON` at its python (default `python3`). Ignored in a plain
//! `cargo test`; in CI a missing tool fails the test.

mod common;
#[path = "interop/relays.rs"]
mod relays;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::credentials;
use relays::{Relays, Topology, Transport};

const COUNT: usize = 50;

fn python() -> String {
    std::env::var("TARN_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aiortc_echo.py")
}

/// Runs the echo script with its two peers on `topology` over `transport`.
fn run_case(topology: Topology, transport: Transport) {
    let started = Instant::now();
    let check = Command::new(python())
        .args(["-c", "import aiortc"])
        .output()
        .unwrap_or_else(|e| panic!("python ({}) is needed for the aiortc test: {e}", python()));
    assert!(
        check.status.success(),
        "aiortc is not importable with {} (run .ci/setup-browser): {}",
        python(),
        String::from_utf8_lossy(&check.stderr)
    );
    let relays = Relays::start(topology, transport);
    let (username, password) = credentials("aiortc", 600);
    let mut cmd = Command::new(python());
    cmd.arg(script())
        .args(["--url", &relays.url(0)])
        .args(["--answer-url", &relays.url(1)])
        .args(["--username", &username, "--password", &password])
        .args(["--count", &COUNT.to_string()])
        .args(["--timeout", "20"]);
    if let Some(ca) = relays.cafile() {
        cmd.env("SSL_CERT_FILE", ca);
    }
    let output = run_bounded(cmd, Duration::from_secs(150));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let context = || {
        format!(
            "stdout:\n{stdout}\nstderr:\n{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            relays.log_text()
        )
    };
    assert!(
        output.status.success(),
        "aiortc ({topology:?}, {transport:?}) failed\n{}",
        context()
    );
    let line = stdout.lines().last().expect("a result line");
    let result: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("result is not JSON ({e})\n{}", context()));
    assert_eq!(
        result["received"],
        COUNT,
        "every message echoed\n{}",
        context()
    );
    for key in ["offer_candidates", "answer_candidates"] {
        let candidates = result[key].as_array().expect("candidate list");
        assert!(!candidates.is_empty(), "{key} empty\n{}", context());
        for c in candidates {
            let c = c.as_str().unwrap_or_default();
            assert!(
                c.contains(" typ relay") && c.contains(" 127.0.0.1 "),
                "{key}: {c} is not a relay candidate on tarn's relay address\n{}",
                context()
            );
        }
    }
    for key in ["offerer_pair", "answerer_pair"] {
        for end in ["local", "remote"] {
            assert_eq!(
                result[key][end]["type"],
                "relay",
                "{key} {end} candidate\n{}",
                context()
            );
            assert_eq!(
                result[key][end]["host"],
                "127.0.0.1",
                "{key} {end} candidate\n{}",
                context()
            );
        }
    }
    if let Err(e) = relays.check_allocations() {
        panic!("{e}\n{}", context());
    }
    eprintln!(
        "aiortc, {topology:?} over {}: {COUNT} echoes, connected after {} s, {:.1} s in all",
        transport.label(),
        result["connected_after_s"],
        started.elapsed().as_secs_f64()
    );
    relays.stop();
}

fn run_bounded(mut cmd: Command, limit: Duration) -> std::process::Output {
    common::output_bounded(&mut cmd, limit, "aiortc")
}

#[test]
#[ignore = "needs Python with aiortc; run by .ci/run"]
fn aiortc_one_server_udp() {
    run_case(Topology::OneServer, Transport::Udp);
}

#[test]
#[ignore = "needs Python with aiortc; run by .ci/run"]
fn aiortc_one_server_tcp() {
    run_case(Topology::OneServer, Transport::Tcp);
}

#[test]
#[ignore = "needs Python with aiortc; run by .ci/run"]
fn aiortc_one_server_tls() {
    run_case(Topology::OneServer, Transport::Tls);
}

#[test]
#[ignore = "needs Python with aiortc; run by .ci/run"]
fn aiortc_two_servers_udp() {
    run_case(Topology::TwoServers, Transport::Udp);
}

#[test]
#[ignore = "needs Python with aiortc; run by .ci/run"]
fn aiortc_two_servers_tcp() {
    run_case(Topology::TwoServers, Transport::Tcp);
}

#[test]
#[ignore = "needs Python with aiortc; run by .ci/run"]
fn aiortc_two_servers_tls() {
    run_case(Topology::TwoServers, Transport::Tls);
}
