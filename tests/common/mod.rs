//! Test harness: runs the real `tarn` binary on loopback with a generated config and
//! reads its log to learn the ports it bound. Every wait is bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The REST secret every test daemon accepts.
pub const SECRET: &str = "interop-test-secret";
/// The realm every test daemon uses.
pub const REALM: &str = "tarn.test";
/// How long a daemon may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running daemon; killed on drop if the test did not stop it.
pub struct Daemon {
    child: Option<Child>,
    /// UDP listen addresses, as logged by the daemon.
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses, as logged by the daemon.
    pub tcp: Vec<SocketAddr>,
    /// TLS listen addresses, as logged by the daemon.
    pub tls: Vec<SocketAddr>,
    /// The metrics endpoint, if enabled.
    pub metrics: Option<SocketAddr>,
    /// Every log line so far (stderr).
    pub log: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
    lines: mpsc::Receiver<String>,
}

/// A unique scratch directory under the system temp dir.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tarn-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The base configuration of test daemons: loopback only, 127.0.0.1 allowed as a peer
/// (tests run their echo peers there; the default deny list is otherwise untouched),
/// a known secret and realm. Change keys with [`set_key`] in [`Daemon::start_with`].
pub fn base_config(dir: &std::path::Path) -> String {
    format!(
        r#"[server]
realm = "{REALM}"
listen = ["127.0.0.1:0"]
relay_address = ["127.0.0.1", "::1"]
relay_ports = "61000-65535"
threads = 2
state_directory = "{state}"
drain_timeout = 0

[auth]
secrets = ["{SECRET}"]

[peers]
allow = ["127.0.0.1/32"]

[limits]
unauthenticated_rate = 0

[metrics]
listen = ""
"#,
        state = dir.join("state").display()
    )
}

impl Daemon {
    /// Starts a daemon on the base configuration.
    pub fn start() -> Daemon {
        Self::start_with(|c| c)
    }

    /// Starts a daemon on the base configuration as changed by `edit` (which gets and
    /// returns the whole TOML text; use [`set_key`] to change single keys).
    pub fn start_with(edit: impl FnOnce(String) -> String) -> Daemon {
        let dir = scratch_dir("daemon");
        let config = edit(base_config(&dir));
        let path = dir.join("tarn.toml");
        std::fs::write(&path, &config).expect("write config");
        Self::spawn(&["--config", path.to_str().expect("utf-8 path")], dir, &[])
    }

    /// Starts the binary with explicit arguments and environment.
    pub fn spawn(args: &[&str], dir: PathBuf, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tarn"));
        cmd.args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tarn");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut daemon = Daemon {
            child: Some(child),
            udp: Vec::new(),
            tcp: Vec::new(),
            tls: Vec::new(),
            metrics: None,
            log,
            dir,
            lines: rx,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match daemon.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "tarn did not become ready; log:\n{}",
                    daemon.log.lock().unwrap().join("\n")
                ),
            };
            if line.contains("listening") {
                for (key, list) in [
                    ("udp=", &mut daemon.udp),
                    ("tcp=", &mut daemon.tcp),
                    ("tls=", &mut daemon.tls),
                ] {
                    let addr = line
                        .split(key)
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next());
                    if let Some(Ok(a)) = addr.map(str::parse) {
                        list.push(a);
                    }
                }
                let metrics = line
                    .split("metrics=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next());
                if let Some(Ok(a)) = metrics.map(str::parse) {
                    daemon.metrics = Some(a);
                }
            }
            if line.contains(" ready") {
                break;
            }
        }
        daemon
    }

    /// The first UDP listen address.
    pub fn addr(&self) -> SocketAddr {
        *self.udp.first().expect("a UDP listener")
    }

    /// The scratch directory of this daemon.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Waits (bounded) for a log line containing `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Stops the daemon with SIGTERM and returns its exit status (bounded wait).
    pub fn stop(mut self) -> ExitStatus {
        self.signal("TERM");
        let child = self.child.take().expect("running");
        wait_bounded(
            child,
            Duration::from_secs(15),
            "tarn did not stop within 15 s of SIGTERM",
        )
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits (bounded) for a daemon that is expected to exit by itself.
    pub fn stop_after_exit(mut self) -> ExitStatus {
        let child = self.child.take().expect("running");
        wait_bounded(
            child,
            Duration::from_secs(15),
            "tarn did not exit by itself within 15 s",
        )
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits for `child` to exit, killing it and panicking with `what` after `limit`.
pub fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> ExitStatus {
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(limit) {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("{what}");
        }
    }
}

/// Runs `cmd` with piped output, killing it and panicking after `limit`.
pub fn output_bounded(cmd: &mut Command, limit: Duration, what: &str) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

/// Replaces `key = ...` inside `[table]` of a TOML text, or adds it to the table.
pub fn set_key(config: &str, table: &str, key: &str, value: &str) -> String {
    let mut out = Vec::new();
    let mut in_table = false;
    let mut done = false;
    for line in config.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            if in_table && !done {
                out.push(format!("{key} = {value}"));
                done = true;
            }
            in_table = trimmed == format!("[{table}]");
        }
        if in_table && !done && trimmed.starts_with(&format!("{key} ")) {
            out.push(format!("{key} = {value}"));
            done = true;
            continue;
        }
        out.push(line.to_string());
    }
    if !done {
        if !in_table {
            out.push(format!("[{table}]"));
        }
        out.push(format!("{key} = {value}"));
    }
    out.join("\n") + "\n"
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A REST username/password pair for `id`, valid for `ttl` seconds (negative: expired).
pub fn credentials(id: &str, ttl: i64) -> (String, String) {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let expiry = (unix_now() as i64 + ttl).max(0);
    let username = if id.is_empty() {
        expiry.to_string()
    } else {
        format!("{expiry}:{id}")
    };
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// A webrtc-rs `turn` client (the independent test client) on `local`:0, listening,
/// with the harness realm; returns it with its local address.
pub async fn turn_client(
    local: std::net::IpAddr,
    server: SocketAddr,
    username: &str,
    password: &str,
) -> (turn::client::Client, SocketAddr) {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(local, 0))
        .await
        .expect("bind client");
    let addr = socket.local_addr().expect("client address");
    let client = turn::client::Client::new(turn::client::ClientConfig {
        stun_serv_addr: String::new(),
        turn_serv_addr: server.to_string(),
        username: username.to_string(),
        password: password.to_string(),
        realm: REALM.to_string(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(socket),
        vnet: None,
    })
    .await
    .expect("turn client");
    client.listen().await.expect("listen");
    (client, addr)
}

/// A plain HTTP/1.0 GET on loopback (bounded); returns status code and body.
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one sample line `name{labels}` (or `name` without labels) in a
/// Prometheus text exposition.
pub fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("series {series} missing from /metrics:\n{body}"))
        .trim()
        .parse()
        .expect("numeric sample")
}

impl Daemon {
    /// One series from the daemon's `/metrics` (the metrics endpoint must be on).
    pub fn metric(&self, series: &str) -> f64 {
        let addr = self.metrics.expect("metrics endpoint enabled");
        let (status, body) = http_get(addr, "/metrics", &[]);
        assert_eq!(status, 200, "/metrics");
        sample(&body, series)
    }
}

/// A UDP echo peer on 127.0.0.1 that answers every datagram (bounded: it stops after
/// `limit` datagrams or when idle for 30 s).
pub fn udp_echo_peer(limit: usize) -> SocketAddr {
    echo_on(
        UdpSocket::bind("127.0.0.1:0").expect("bind echo peer"),
        limit,
    )
}

/// Echoes every datagram `socket` receives back to its sender, in a thread that ends
/// after `limit` datagrams or 30 s without one; returns the socket's address.
pub fn echo_on(socket: UdpSocket, limit: usize) -> SocketAddr {
    let addr = socket.local_addr().expect("addr");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        for _ in 0..limit {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                break;
            };
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}
