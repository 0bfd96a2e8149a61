//! aioice (PyPI), an independent TURN client, allocates and relays through tarn over
//! UDP, TCP and TLS. Needs Python with aioice: `.ci/setup` installs it into a venv and
//! `.ci/run` points `TARN_PYTHON` at it. Ignored in a plain `cargo test`; in CI a
//! missing tool fails the test.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, credentials, set_key, udp_echo_peer};

const COUNT: usize = 60;

fn python() -> String {
    std::env::var("TARN_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aioice_relay.py")
}

fn run_aioice(server: std::net::SocketAddr, transport: &str, cafile: Option<&std::path::Path>) {
    let check = Command::new(python())
        .args(["-c", "import aioice"])
        .output()
        .expect("python is needed for the aioice interop test");
    assert!(
        check.status.success(),
        "aioice is not importable with {} (run .ci/setup): {}",
        python(),
        String::from_utf8_lossy(&check.stderr)
    );
    let peer = udp_echo_peer(COUNT * 2);
    let (username, password) = credentials("aioice", 600);
    let mut cmd = Command::new(python());
    cmd.arg(script())
        .args(["--server", &server.to_string()])
        .args(["--transport", transport])
        .args(["--username", &username, "--password", &password])
        .args(["--peer", &peer.to_string()])
        .args(["--count", &COUNT.to_string()]);
    if let Some(ca) = cafile {
        cmd.arg("--tls").args(["--cafile", ca.to_str().unwrap()]);
    }
    let output = run_bounded(cmd, Duration::from_secs(150));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "aioice over {transport} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().expect("a result line");
    let result: serde_json::Value = serde_json::from_str(line).expect("JSON result");
    assert_eq!(
        result["received"], COUNT,
        "every payload echoed over {transport}"
    );
    assert_eq!(
        result["relayed"][0], "127.0.0.1",
        "relayed address from tarn"
    );
}

fn run_bounded(mut cmd: Command, limit: Duration) -> std::process::Output {
    common::output_bounded(&mut cmd, limit, "aioice")
}

#[test]
#[ignore = "needs Python with aioice; run by .ci/run"]
fn aioice_relays_over_udp() {
    let daemon = Daemon::start();
    run_aioice(daemon.addr(), "udp", None);
    assert!(daemon.stop().success());
}

#[test]
#[ignore = "needs Python with aioice; run by .ci/run"]
fn aioice_relays_over_tcp() {
    let daemon = Daemon::start();
    run_aioice(daemon.tcp[0], "tcp", None);
    assert!(daemon.stop().success());
}

#[test]
#[ignore = "needs Python with aioice; run by .ci/run"]
fn aioice_relays_over_tls() {
    let dir = common::scratch_dir("aioice-tls");
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let daemon = Daemon::start_with(|c| {
        let c = set_key(&c, "server", "tls_listen", "[\"127.0.0.1:0\"]");
        let c = set_key(&c, "tls", "certificate", &format!("\"{}\"", cert.display()));
        set_key(&c, "tls", "private_key", &format!("\"{}\"", key.display()))
    });
    run_aioice(daemon.tls[0], "tls", Some(&cert));
    assert!(daemon.stop().success());
    let _ = std::fs::remove_dir_all(dir);
}
