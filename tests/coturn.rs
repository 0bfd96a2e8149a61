//! Interop with coturn's client tools (Debian package `coturn`, 4.6.1 on Debian 12):
//! `turnutils_uclient` relays through tarn to a `turnutils_peer` echo peer and counts
//! what comes back; `turnutils_stunclient` checks the Binding reflexive address.
//!
//! The tool tests are `#[ignore]`d so that a plain `cargo test` passes on a machine
//! without coturn. `.ci/run` installs the tools (`.ci/setup`) and runs them with
//! `cargo test --test coturn -- --ignored --test-threads=1`; there a missing tool is a
//! failure, never a skip.
//!
//! What uclient does (coturn 4.6.1, `src/apps/uclient/startuclient.c`):
//! - every client first makes a "probe" Allocate on its own socket (left to expire),
//!   then its real Allocate(s); every Allocate is retried once after the 401 challenge;
//! - `-c` (no RTCP): one allocation per client, with EVEN-PORT R=0 or no EVEN-PORT
//!   (random);
//! - without `-c` (RTP/RTCP pair mode): Allocates alternate between EVEN-PORT R=1 (the
//!   answer carries a RESERVATION-TOKEN) and RESERVATION-TOKEN (the reserved odd port);
//!   the token is always redeemed from a *different* client socket than the one that
//!   reserved it;
//! - channels (the default): ChannelBind with a random channel number in
//!   0x4000..=0x7FFF (the RFC 5766 range), twice per peer; `-s`: CreatePermission and
//!   Send/Data indications instead;
//! - every client sends `-n` messages of `-l` bytes to the peer (port `-r`) and, in
//!   pair mode, to the peer's port + 1; `turnutils_peer` listens on both and echoes.

mod common;

use std::fmt::Write as _;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Daemon, SECRET, set_key};

/// Clients per uclient run (`-m`).
const CLIENTS: u64 = 10;
/// Messages each client sends (`-n`).
const MESSAGES: u64 = 200;
/// Message length in bytes (`-l`).
const LENGTH: u64 = 120;
/// Upper bound for one uclient run (a healthy one takes about 15 s).
const UCLIENT_TIMEOUT: Duration = Duration::from_secs(90);
/// Upper bound for one stunclient run.
const STUNCLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the echo peer may take to bind its ports.
const PEER_START_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------
// The tests.

/// Channels (ChannelBind + ChannelData), one allocation per client (`-c`).
#[test]
#[ignore = "needs coturn client tools; run by .ci/run"]
fn uclient_udp_channels() {
    relay_through_tarn(Mode {
        channels: true,
        rtcp_pairs: false,
        transport: Transport::Udp,
    });
}

/// CreatePermission + Send/Data indications (`-s`), one allocation per client (`-c`).
#[test]
#[ignore = "needs coturn client tools; run by .ci/run"]
fn uclient_udp_send_indications() {
    relay_through_tarn(Mode {
        channels: false,
        rtcp_pairs: false,
        transport: Transport::Udp,
    });
}

/// RTP/RTCP pairs: EVEN-PORT R=1 and RESERVATION-TOKEN; Send indications (`-s`) so
/// that this test is about the reservations only.
#[test]
#[ignore = "needs coturn client tools; run by .ci/run"]
fn uclient_udp_rtp_rtcp_pairs_send_indications() {
    relay_through_tarn(Mode {
        channels: false,
        rtcp_pairs: true,
        transport: Transport::Udp,
    });
}

/// uclient's defaults: RTP/RTCP pairs (EVEN-PORT R=1, RESERVATION-TOKEN) and channels.
#[test]
#[ignore = "needs coturn client tools; run by .ci/run"]
fn uclient_udp_rtp_rtcp_pairs_channels() {
    relay_through_tarn(Mode {
        channels: true,
        rtcp_pairs: true,
        transport: Transport::Udp,
    });
}

/// TURN over TCP (`-t`): channels, one allocation per client; relayed to the peer over UDP.
#[test]
#[ignore = "needs coturn client tools; run by .ci/run"]
fn uclient_tcp_channels() {
    relay_through_tarn(Mode {
        channels: true,
        rtcp_pairs: false,
        transport: Transport::Tcp,
    });
}

/// TURN over TCP (`-t`) with Send indications (`-s`).
#[test]
#[ignore = "needs coturn client tools; run by .ci/run"]
fn uclient_tcp_send_indications() {
    relay_through_tarn(Mode {
        channels: false,
        rtcp_pairs: false,
        transport: Transport::Tcp,
    });
}

/// TURN over TLS (`-S`, a self-signed test certificate): channels.
#[test]
#[ignore = "needs coturn client tools; run by .ci/run"]
fn uclient_tls_channels() {
    relay_through_tarn(Mode {
        channels: true,
        rtcp_pairs: false,
        transport: Transport::Tls,
    });
}

/// `turnutils_stunclient` gets its reflexive address (127.0.0.1) from a Binding.
#[test]
#[ignore = "needs coturn client tools; run by .ci/run"]
fn stunclient_reports_reflexive_address() {
    let stunclient = tool("turnutils_stunclient");
    let daemon = Daemon::start();
    let port = daemon.addr().port().to_string();
    let out = run_bounded(
        Command::new(stunclient).args(["-p", &port, "127.0.0.1"]),
        STUNCLIENT_TIMEOUT,
        "turnutils_stunclient",
    );
    let context = || {
        format!(
            "turnutils_stunclient {}\n--- stdout:\n{}\n--- stderr:\n{}\n--- tarn log:\n{}",
            out.status,
            out.stdout,
            out.stderr,
            tail(&daemon.log_text(), 40)
        )
    };
    assert!(out.status.success(), "stunclient failed: {}", context());
    let reflexive = parse_stunclient(&out.stdout)
        .unwrap_or_else(|e| panic!("unrecognised stunclient output: {e}\n{}", context()));
    assert_eq!(
        reflexive.ip(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "reflexive address: {}",
        context()
    );
    assert_ne!(reflexive.port(), 0, "reflexive port: {}", context());
    let status = daemon.stop();
    assert!(status.success(), "tarn exit status {status:?}");
}

// ---------------------------------------------------------------------------------
// uclient runs.

/// The client-to-server transport of a uclient run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    /// `-t`
    Tcp,
    /// `-S`
    Tls,
}

/// How uclient is run.
#[derive(Clone, Copy, Debug)]
struct Mode {
    /// How uclient reaches tarn.
    transport: Transport,
    /// ChannelBind + ChannelData (uclient's default); false: `-s` (Send indications).
    channels: bool,
    /// RTP/RTCP allocation pairs (uclient's default); false: `-c`.
    rtcp_pairs: bool,
}

impl Mode {
    /// The message count uclient should report: pair mode rounds the clients up to an
    /// even number (one RTP and one RTCP session each); every session sends `-n`.
    fn expected_messages(self) -> u64 {
        let sessions = if self.rtcp_pairs {
            CLIENTS.div_ceil(2) * 2
        } else {
            CLIENTS
        };
        sessions * MESSAGES
    }
}

/// Runs uclient through a fresh tarn to a fresh echo peer and asserts that every
/// message came back.
fn relay_through_tarn(mode: Mode) {
    let uclient = tool("turnutils_uclient");
    let peer_tool = tool("turnutils_peer");
    let certs = common::scratch_dir("uclient-tls");
    let daemon = if mode.transport == Transport::Tls {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("test certificate");
        let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).expect("write cert");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
        Daemon::start_with(|c| {
            let c = set_key(&c, "server", "tls_listen", "[\"127.0.0.1:0\"]");
            let c = set_key(&c, "tls", "certificate", &format!("\"{}\"", cert.display()));
            set_key(&c, "tls", "private_key", &format!("\"{}\"", key.display()))
        })
    } else {
        Daemon::start()
    };
    let peer = EchoPeer::start(&peer_tool, &relay_ports());

    let mut cmd = Command::new(uclient);
    let server_port = match mode.transport {
        Transport::Udp => daemon.addr().port(),
        Transport::Tcp => daemon.tcp[0].port(),
        Transport::Tls => daemon.tls[0].port(),
    }
    .to_string();
    let peer_port = peer.port.to_string();
    let (clients, messages, length) = (
        CLIENTS.to_string(),
        MESSAGES.to_string(),
        LENGTH.to_string(),
    );
    cmd.args(["-p", &server_port])
        .args(["-e", "127.0.0.1", "-r", &peer_port])
        .args(["-W", SECRET, "-u", "coturn-interop"])
        .args(["-m", &clients, "-n", &messages, "-l", &length]);
    if !mode.rtcp_pairs {
        cmd.arg("-c");
    }
    if !mode.channels {
        cmd.arg("-s");
    }
    match mode.transport {
        Transport::Udp => {}
        Transport::Tcp => {
            cmd.arg("-t");
        }
        Transport::Tls => {
            cmd.args(["-t", "-S"]);
        }
    }
    if std::env::var_os("TARN_UCLIENT_VERBOSE").is_some() {
        cmd.arg("-v");
    }
    cmd.arg("127.0.0.1");
    let command_line = format!("{cmd:?}");
    let out = run_bounded(&mut cmd, UCLIENT_TIMEOUT, "turnutils_uclient");
    drop(peer);

    let context = || {
        format!(
            "mode {mode:?}\n{command_line}\nexit: {}\n--- uclient stdout (tail):\n{}\n\
             --- uclient stderr (tail):\n{}\n--- tarn log (tail):\n{}",
            out.status,
            tail(&out.stdout, 60),
            tail(&out.stderr, 30),
            tail(&daemon.log_text(), 60)
        )
    };
    assert!(
        out.status.success(),
        "turnutils_uclient failed (set TARN_UCLIENT_VERBOSE=1 for its -v trace)\n{}",
        context()
    );
    let stats = parse_uclient(&out.stdout)
        .unwrap_or_else(|e| panic!("unrecognised uclient output: {e}\n{}", context()));
    let expected = mode.expected_messages();
    assert_eq!(
        stats.sent_msgs,
        expected,
        "uclient sent a different number of messages than asked for\n{}",
        context()
    );
    assert_eq!(
        (stats.recv_msgs, stats.lost, stats.send_dropped),
        (expected, 0, 0),
        "messages lost through tarn (received, lost, send dropped)\n{}",
        context()
    );
    assert_eq!(
        (stats.sent_bytes, stats.recv_bytes),
        (expected * LENGTH, expected * LENGTH),
        "bytes sent and received\n{}",
        context()
    );
    let status = daemon.stop();
    assert!(status.success(), "tarn exit status {status:?}");
    let _ = std::fs::remove_dir_all(certs);
}

/// The relay port range of the harness's test daemons: the echo peer must not sit in
/// it (tarn refuses its own relay ports as peers: no TURN loops).
fn relay_ports() -> RangeInclusive<u16> {
    let config = common::base_config(Path::new("/nonexistent"));
    let value = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("relay_ports"))
        .and_then(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"'))
        .expect("relay_ports in the harness's base config");
    let (low, high) = value.split_once('-').expect("relay_ports is LOW-HIGH");
    let low: u16 = low.trim().parse().expect("relay_ports LOW");
    let high: u16 = high.trim().parse().expect("relay_ports HIGH");
    low..=high
}

// ---------------------------------------------------------------------------------
// The echo peer.

/// `turnutils_peer` on 127.0.0.1: it echoes on `port` and `port + 1` (RTCP). Killed
/// on drop, also when the test panics.
struct EchoPeer {
    port: u16,
    _child: KillOnDrop,
}

impl EchoPeer {
    fn start(tool: &Path, relay_ports: &RangeInclusive<u16>) -> EchoPeer {
        let port = free_port_pair(relay_ports);
        let child = Command::new(tool)
            .args(["-L", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", tool.display()));
        let mut child = KillOnDrop(Some(child));
        let deadline = Instant::now() + PEER_START_TIMEOUT;
        // Ready when both ports are bound (read from /proc: probing with a bind of our
        // own could take a port from under the peer).
        while !(udp_bound(port) && udp_bound(port + 1)) {
            if let Some(status) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.0.as_mut().and_then(|c| c.stderr.take()) {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("turnutils_peer exited at start ({status}): {err}");
            }
            assert!(
                Instant::now() < deadline,
                "turnutils_peer did not bind 127.0.0.1:{port} and :{} within {PEER_START_TIMEOUT:?}",
                port + 1
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        EchoPeer {
            port,
            _child: child,
        }
    }
}

/// A UDP port on 127.0.0.1 such that it and the next one are free and outside the
/// relay range (bounded search over kernel-chosen ports).
fn free_port_pair(relay_ports: &RangeInclusive<u16>) -> u16 {
    for _ in 0..1000 {
        let Ok(first) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let port = first.local_addr().expect("local addr").port();
        if port == u16::MAX || relay_ports.contains(&port) || relay_ports.contains(&(port + 1)) {
            continue;
        }
        if UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("found no free pair of UDP ports on 127.0.0.1 outside {relay_ports:?}");
}

/// Whether some socket is bound to UDP 127.0.0.1:`port` (from `/proc/net/udp`).
fn udp_bound(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/udp").expect("read /proc/net/udp");
    // local_address of 127.0.0.1:port, as the kernel prints it (little-endian IP).
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
}

// ---------------------------------------------------------------------------------
// Processes.

/// The absolute path of a tool from `PATH`; panics (never skips) if it is missing.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} not found in PATH: the coturn interop tests need the client tools of \
                 Debian's `coturn` package; install them with `bash .ci/setup` (as root)"
            )
        })
}

/// A child process that is killed (and reaped) when dropped.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a finished process printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with no stdin, collecting its output; kills it and panics after `timeout`.
fn run_bounded(cmd: &mut Command, timeout: Duration, what: &str) -> Finished {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut child = KillOnDrop(Some(child));
    let stdout = reader(child.0.as_mut().and_then(|c| c.stdout.take()));
    let stderr = reader(child.0.as_mut().and_then(|c| c.stderr.take()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(child); // kills it if still running, so the readers see EOF
    let (stdout, stderr) = (join(stdout), join(stderr));
    match status {
        Some(status) => Finished {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{what} did not finish within {timeout:?}; killed it\n--- stdout (tail):\n{}\n\
             --- stderr (tail):\n{}",
            tail(&stdout, 60),
            tail(&stderr, 30)
        ),
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn join(handle: JoinHandle<String>) -> String {
    handle.join().unwrap_or_default()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skip > 0 {
        let _ = writeln!(out, "[... {skip} lines ...]");
    }
    out.push_str(&lines[skip..].join("\n"));
    out
}

// ---------------------------------------------------------------------------------
// Output parsing (strict: an unrecognised format is an error, never a pass).

/// uclient's final statistics.
#[derive(Debug, PartialEq, Eq)]
struct UclientStats {
    sent_msgs: u64,
    recv_msgs: u64,
    sent_bytes: u64,
    recv_bytes: u64,
    lost: u64,
    send_dropped: u64,
}

/// Parses uclient's closing lines (log prefix `N: : ` before each):
/// ```text
/// start_mclient: tot_send_msgs=2000, tot_recv_msgs=2000
/// start_mclient: tot_send_bytes ~ 240000, tot_recv_bytes ~ 240000
/// Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
/// ```
/// Each must appear (uclient may print a line twice; copies must agree). The progress
/// lines (`start_mclient: msz=...`) are not the final statistics and are ignored.
fn parse_uclient(stdout: &str) -> Result<UclientStats, String> {
    let msgs = single(stdout, "start_mclient: tot_send_msgs=", |rest| {
        // "2000, tot_recv_msgs=2000"
        let (sent, recv) = rest
            .split_once(", tot_recv_msgs=")
            .ok_or("no tot_recv_msgs")?;
        Ok((number(sent)?, number(recv)?))
    })?;
    let bytes = single(stdout, "start_mclient: tot_send_bytes ~ ", |rest| {
        // "240000, tot_recv_bytes ~ 240000"
        let (sent, recv) = rest
            .split_once(", tot_recv_bytes ~ ")
            .ok_or("no tot_recv_bytes")?;
        Ok((number(sent)?, number(recv)?))
    })?;
    let loss = single(stdout, "Total lost packets ", |rest| {
        // "0 (0.000000%), total send dropped 0 (0.000000%)"
        let (lost, rest) = rest.split_once(" (").ok_or("no lost percentage")?;
        let (_, rest) = rest
            .split_once("), total send dropped ")
            .ok_or("no send dropped")?;
        let (dropped, pct) = rest.split_once(" (").ok_or("no dropped percentage")?;
        if !pct.ends_with("%)") {
            return Err(format!("dropped percentage {pct:?}"));
        }
        Ok((number(lost)?, number(dropped)?))
    })?;
    Ok(UclientStats {
        sent_msgs: msgs.0,
        recv_msgs: msgs.1,
        sent_bytes: bytes.0,
        recv_bytes: bytes.1,
        lost: loss.0,
        send_dropped: loss.1,
    })
}

/// Parses `turnutils_stunclient`'s `IPv4. UDP reflexive addr: 127.0.0.1:PORT` line(s);
/// all copies must agree.
fn parse_stunclient(stdout: &str) -> Result<SocketAddr, String> {
    single(stdout, "UDP reflexive addr: ", |rest| {
        rest.parse::<SocketAddr>()
            .map_err(|e| format!("address {rest:?}: {e}"))
    })
}

/// Finds every line containing `marker`, parses what follows it, and requires at
/// least one such line with all copies parsing to the same value.
fn single<T: PartialEq + std::fmt::Debug>(
    text: &str,
    marker: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, String> {
    let mut found: Option<T> = None;
    for line in text.lines() {
        let Some((_, rest)) = line.split_once(marker) else {
            continue;
        };
        let value = parse(rest.trim_end()).map_err(|e| format!("line {line:?}: {e}"))?;
        match &found {
            None => found = Some(value),
            Some(v) if *v == value => {}
            Some(v) => {
                return Err(format!(
                    "lines with {marker:?} disagree: {v:?} and {value:?}"
                ));
            }
        }
    }
    found.ok_or_else(|| format!("no line containing {marker:?}"))
}

fn number(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("{s:?} is not a number"))
}

// Parser tests: these run in a plain `cargo test` (no tools needed).

const UCLIENT_SAMPLE: &str = "\
0: : Total connect time is 1
0: : Total connect time is 1
1: : start_mclient: msz=10, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
6: : start_mclient: msz=10, tot_send_msgs=1990, tot_recv_msgs=1989, tot_send_bytes ~ 238800, tot_recv_bytes ~ 238680
8: : done, connection 0x7f7cbecd7010 closed.
8: : start_mclient: tot_send_msgs=2000, tot_recv_msgs=1999
8: : start_mclient: tot_send_bytes ~ 240000, tot_recv_bytes ~ 239880
8: : Total transmit time is 7
8: : Total lost packets 1 (0.050000%), total send dropped 0 (0.000000%)
8: : Average round trip delay 0.000000 ms; min = 0 ms, max = 0 ms
8: : Average jitter 0.820000 ms; min = 0 ms, max = 6 ms
";

#[test]
fn uclient_statistics_are_parsed() {
    assert_eq!(
        parse_uclient(UCLIENT_SAMPLE),
        Ok(UclientStats {
            sent_msgs: 2000,
            recv_msgs: 1999,
            sent_bytes: 240000,
            recv_bytes: 239880,
            lost: 1,
            send_dropped: 0,
        })
    );
}

#[test]
fn unrecognised_uclient_output_is_an_error() {
    // Any closing line missing or changed: an error, never a default of zero.
    for needle in [
        "start_mclient: tot_send_msgs=",
        "start_mclient: tot_send_bytes ~ ",
        "Total lost packets ",
    ] {
        let text: String = UCLIENT_SAMPLE
            .lines()
            .filter(|l| !l.contains(needle))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse_uclient(&text).is_err(), "without {needle:?}");
    }
    let changed = UCLIENT_SAMPLE.replace("tot_recv_msgs=1999", "tot_recv_messages=1999");
    assert!(parse_uclient(&changed).is_err());
    let changed = UCLIENT_SAMPLE.replace("Total lost packets 1 (", "Total lost packets one (");
    assert!(parse_uclient(&changed).is_err());
    let twice =
        format!("{UCLIENT_SAMPLE}9: : start_mclient: tot_send_msgs=2000, tot_recv_msgs=2000\n");
    assert!(parse_uclient(&twice).is_err(), "copies that disagree");
    assert!(parse_uclient("").is_err());
}

#[test]
fn stunclient_output_is_parsed() {
    let out = "0: : IPv4. UDP reflexive addr: 127.0.0.1:37511\n\
               0: : IPv4. UDP reflexive addr: 127.0.0.1:37511\n";
    assert_eq!(
        parse_stunclient(out),
        Ok("127.0.0.1:37511".parse().unwrap())
    );
    assert!(parse_stunclient("0: : IPv4. UDP reflexive addr: 127.0.0.1\n").is_err());
    assert!(parse_stunclient("nothing\n").is_err());
    let disagree = "x UDP reflexive addr: 127.0.0.1:1\nx UDP reflexive addr: 127.0.0.1:2\n";
    assert!(parse_stunclient(disagree).is_err());
}
