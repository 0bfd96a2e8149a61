//! A real browser relays through tarn: Debian's headless Chromium connects two
//! `RTCPeerConnection`s in one page with `iceTransportPolicy: "relay"`, so every packet
//! of their data channel goes client → tarn → relay port → relay port → tarn → client,
//! over `turn:…?transport=udp`, `turn:…?transport=tcp` and `turns:localhost:…`.
//!
//! How it runs:
//! - The test serves the page (`tests/interop/browser/relay.html`, with the ICE server
//!   entry and REST credentials it minted filled in) from a tiny HTTP server thread on
//!   127.0.0.1. The page reports progress to `POST /log` and its outcome, including
//!   `getStats()` of the selected candidate pair, to `POST /result`. No browser driver
//!   is needed: Chromium is started with the page's URL and killed (its whole process
//!   group) once the result is in or the case's 60 s are up.
//! - Chromium runs with `--headless --no-sandbox --disable-gpu --no-first-run
//!   --disable-background-networking --disable-component-update --disable-sync
//!   --disable-quic` and a fresh `--user-data-dir` (plus `--disable-extensions
//!   --disable-default-apps --no-default-browser-check --disable-dev-shm-usage
//!   --enable-logging=stderr`: quieter, and its WebRTC warnings land in the failure
//!   report); for `turns:` also `--ignore-certificate-errors-spki-list=<base64 SHA-256
//!   of the SPKI>` of the rcgen test certificate for `localhost` and `127.0.0.1` (the
//!   SPKI DER from `PublicKeyData::subject_public_key_info()`). Without that flag the
//!   TLS handshake fails with net_error -202 (authority invalid) and no candidate is
//!   gathered. The browser gets PR_SET_PDEATHSIG, so a killed test leaves none behind.
//!
//! Loopback (observed with Debian's Chromium 156): with a relay-only policy and no
//! media permission Chromium gathers on its "any address" network (a wildcard socket,
//! `Net[any:0.0.0.x/0:Wildcard]` in its log), so TURN to 127.0.0.1 works as long as
//! the machine has *some* non-loopback interface, with no flag and no network
//! namespace; both relay candidates are 127.0.0.1:<relay port>, which the base test
//! config allows as a peer. In a network namespace with `lo` only (checked with
//! `unshare -n`), Chromium gathers no candidate at all unless it gets
//! `--allow-loopback-in-peer-connection`; [`chromium_flags`] adds that flag exactly
//! when no interface but `lo` is up, so the test also runs in such a sandbox.
//!
//! Two topologies (`tests/interop/relays.rs`): `chromium_one_server_*` puts both peer
//! connections on one daemon (relay ↔ relay on one server, what two relay-only
//! browsers of one deployment do); `chromium_two_servers_*` gives each its own daemon
//! (disjoint relay port ranges), which checks Chromium's TURN client against tarn
//! independently of the peer policy's treatment of the daemon's own relay addresses.
//!
//! Needs `chromium` (`.ci/setup-browser`; `TARN_CHROMIUM` overrides the path). Ignored
//! in a plain `cargo test`; in CI a missing browser fails the test.

mod common;
#[path = "interop/relays.rs"]
mod relays;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{credentials, scratch_dir};
use relays::{Relays, Topology, Transport};

/// Messages sent each way over the data channel.
const MESSAGES: usize = 20;
/// The whole case, from Chromium's start to the page's result.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);
/// What the page allows each of its own waits (ICE, channel open, exchange).
const PAGE_STEP_TIMEOUT_MS: u64 = 45_000;

const PAGE: &str = include_str!("interop/browser/relay.html");

fn chromium() -> PathBuf {
    std::env::var_os("TARN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// True when some interface other than `lo` is up with an address. Chromium then
/// gathers (on its wildcard "any address" network) and needs no loopback flag; in a
/// namespace with `lo` alone it gathers nothing without
/// `--allow-loopback-in-peer-connection`. Unknown (no `ip`): assume a normal host.
fn has_non_loopback_interface() -> bool {
    let Ok(out) = Command::new("ip")
        .args(["-o", "addr", "show", "up"])
        .output()
    else {
        return true;
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|name| name != "lo")
}

/// The Chromium command line (without the URL).
fn chromium_flags(profile: &Path, spki: Option<&str>) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-default-browser-check",
        "--disable-dev-shm-usage",
        "--enable-logging=stderr",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.push(format!("--user-data-dir={}", profile.display()));
    if let Some(spki) = spki {
        flags.push(format!("--ignore-certificate-errors-spki-list={spki}"));
    }
    if !has_non_loopback_interface() {
        flags.push("--allow-loopback-in-peer-connection".into());
    }
    flags
}

/// What the page's HTTP server heard.
enum PageEvent {
    Log(String),
    Result(String),
}

/// A loopback HTTP server for the test page; stops when dropped.
struct PageServer {
    addr: SocketAddr,
    events: mpsc::Receiver<PageEvent>,
    stop: Arc<AtomicBool>,
}

impl PageServer {
    fn start(page: String) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind page server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, events) = mpsc::channel();
        let page = Arc::new(page);
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let tx = tx.clone();
                        let page = Arc::clone(&page);
                        // One thread per connection: Chromium opens speculative
                        // connections that may never carry a request.
                        std::thread::spawn(move || serve(stream, &page, &tx));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        PageServer { addr, events, stop }
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers the requests on one connection (bounded by read timeouts).
fn serve(stream: TcpStream, page: &str, tx: &mpsc::Sender<PageEvent>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut content_length = 0usize;
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; content_length.min(1 << 20)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, content_type, response): (&str, &str, &str) = match (method, path) {
            ("GET", "/") => ("200 OK", "text/html; charset=utf-8", page),
            ("POST", "/log") => {
                let _ = tx.send(PageEvent::Log(body));
                ("204 No Content", "text/plain", "")
            }
            ("POST", "/result") => {
                let _ = tx.send(PageEvent::Result(body));
                ("204 No Content", "text/plain", "")
            }
            _ => ("404 Not Found", "text/plain", ""),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\n\r\n",
            response.len()
        );
        if writer.write_all(head.as_bytes()).is_err()
            || writer.write_all(response.as_bytes()).is_err()
        {
            return;
        }
    }
}

/// Chromium in its own process group; the whole group is killed on drop.
struct Browser {
    child: Child,
    stderr_path: PathBuf,
}

impl Browser {
    fn launch(flags: &[String], url: &str, stderr_path: PathBuf) -> Browser {
        let exe = chromium();
        assert!(
            exe.exists(),
            "{} is missing: the browser test needs Debian's chromium (bash .ci/setup-browser)",
            exe.display()
        );
        let stderr = std::fs::File::create(&stderr_path).expect("chromium log file");
        let mut cmd = Command::new(&exe);
        cmd.args(flags)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("dup log file"))
            .stderr(stderr)
            .process_group(0);
        // If the test process dies without running Drop (killed by a timeout), the
        // kernel kills the browser too; its helper processes follow it.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        Browser { child, stderr_path }
    }

    /// The last lines Chromium wrote to stderr, without its D-Bus complaints (a
    /// container has no system bus).
    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let all: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("dbus") && !l.contains("D-Bus"))
            .collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The process group holds Chromium's zygote, renderer, GPU and network
        // processes; it was created for this child alone (its id is the child's pid).
        let group = -(self.child.id() as libc::pid_t);
        // SAFETY: plain kill(2) calls on the group this test created.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let _ = self.child.try_wait(); // reap the leader so it does not linger
            // SAFETY: signal 0 only checks whether any process of the group is left.
            let alive = unsafe { libc::kill(group, 0) } == 0;
            if !alive || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser case: Chromium's two peer connections relay through `relays`.
fn run_case(topology: Topology, transport: Transport) {
    let started = Instant::now();
    let relays = Relays::start(topology, transport);
    let server = |peer: usize| {
        let (username, credential) = credentials(&format!("chromium{peer}"), 600);
        serde_json::json!({
            "urls": [relays.url(peer)],
            "username": username,
            "credential": credential,
        })
    };
    let config = serde_json::json!({
        "pc1": server(0),
        "pc2": server(1),
        "messages": MESSAGES,
        "timeout_ms": PAGE_STEP_TIMEOUT_MS,
    });
    let page = PAGE.replacen("/*CONFIG*/null", &config.to_string(), 1);
    assert_ne!(page, PAGE, "the page has its CONFIG placeholder");
    let server = PageServer::start(page);

    let dir = scratch_dir("chromium");
    let profile = dir.join("profile");
    std::fs::create_dir_all(&profile).expect("profile dir");
    let spki = relays.cert().map(|c| c.spki_sha256.as_str());
    let flags = chromium_flags(&profile, spki);
    let url = format!("http://{}/", server.addr);
    let browser = Browser::launch(&flags, &url, dir.join("chromium.log"));

    let mut page_log = Vec::new();
    let deadline = started + CASE_TIMEOUT;
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match server.events.recv_timeout(left) {
            Ok(PageEvent::Log(line)) => {
                eprintln!("page: {line}");
                page_log.push(line);
            }
            Ok(PageEvent::Result(body)) => break Some(body),
            Err(_) => break None,
        }
    };
    // Log lines that raced the result.
    while let Ok(PageEvent::Log(line)) = server.events.try_recv() {
        page_log.push(line);
    }
    let context = || {
        format!(
            "flags: {}\npage log:\n{}\nchromium stderr (tail):\n{}\n{}",
            flags.join(" "),
            page_log.join("\n"),
            browser.log_tail(40),
            relays.log_text()
        )
    };
    let Some(body) = result else {
        panic!(
            "no result from the page within {CASE_TIMEOUT:?} ({topology:?}, {transport:?})\n{}",
            context()
        );
    };
    let result: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("page result is not JSON ({e}): {body}\n{}", context()));
    assert_eq!(
        result["ok"],
        true,
        "the page failed ({topology:?}, {transport:?}): {}\n{}",
        result["error"],
        context()
    );
    assert_eq!(result["received"]["pc1"], MESSAGES, "{}", context());
    assert_eq!(result["received"]["pc2"], MESSAGES, "{}", context());
    for pc in ["pc1", "pc2"] {
        let pair = &result[pc];
        for end in ["local", "remote"] {
            assert_eq!(
                pair[end]["candidateType"],
                "relay",
                "{pc}: {end} candidate of the selected pair\n{}",
                context()
            );
        }
        assert_eq!(
            pair["local"]["relayProtocol"],
            transport.label(),
            "{pc}: relayProtocol of the local candidate\n{}",
            context()
        );
        assert_eq!(
            pair["local"]["address"],
            "127.0.0.1",
            "{pc}: the relayed address is tarn's\n{}",
            context()
        );
    }
    if let Err(e) = relays.check_allocations() {
        panic!("{e}\n{}", context());
    }
    drop(browser);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "chromium, {topology:?} over {}: {MESSAGES} messages each way in {:.1} s; pc1 selected pair {} -> {}",
        transport.label(),
        started.elapsed().as_secs_f64(),
        result["pc1"]["local"],
        result["pc1"]["remote"]
    );
    relays.stop();
}

#[test]
#[ignore = "needs Debian's chromium; run by .ci/run"]
fn chromium_one_server_udp() {
    run_case(Topology::OneServer, Transport::Udp);
}

#[test]
#[ignore = "needs Debian's chromium; run by .ci/run"]
fn chromium_one_server_tcp() {
    run_case(Topology::OneServer, Transport::Tcp);
}

#[test]
#[ignore = "needs Debian's chromium; run by .ci/run"]
fn chromium_one_server_tls() {
    run_case(Topology::OneServer, Transport::Tls);
}

#[test]
#[ignore = "needs Debian's chromium; run by .ci/run"]
fn chromium_two_servers_udp() {
    run_case(Topology::TwoServers, Transport::Udp);
}

#[test]
#[ignore = "needs Debian's chromium; run by .ci/run"]
fn chromium_two_servers_tcp() {
    run_case(Topology::TwoServers, Transport::Tcp);
}

#[test]
#[ignore = "needs Debian's chromium; run by .ci/run"]
fn chromium_two_servers_tls() {
    run_case(Topology::TwoServers, Transport::Tls);
}
