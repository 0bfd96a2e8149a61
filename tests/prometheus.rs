//! The exposition as real Prometheus tools see it: `promtool check metrics` accepts
//! it, and a Prometheus server (Debian package `prometheus`, started here on loopback,
//! bounded) scrapes tarn and answers a query for `tarn_allocations_total`. Ignored in a
//! plain `cargo test`; `.ci/run` installs the tools and runs it, where a missing tool
//! fails the test.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, http_get, set_key};

fn metrics_daemon() -> Daemon {
    Daemon::start_with(|c| set_key(&c, "metrics", "listen", "\"127.0.0.1:0\""))
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed (Debian package `prometheus`; run .ci/setup)"
    );
}

#[test]
#[ignore = "needs promtool; run by .ci/run"]
fn promtool_accepts_the_exposition() {
    require("promtool");
    let daemon = metrics_daemon();
    let (status, body) = http_get(daemon.metrics.expect("metrics"), "/metrics", &[]);
    assert_eq!(status, 200);
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(daemon.stop().success());
}

/// Kills the Prometheus server when the test ends, however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs the prometheus server; run by .ci/run"]
fn a_prometheus_server_scrapes_tarn() {
    require("prometheus");
    let daemon = metrics_daemon();
    let target = daemon.metrics.expect("metrics");
    let dir = common::scratch_dir("prometheus");
    let web = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tarn\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let _server = Server(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    loop {
        if let Ok(stream) = std::net::TcpStream::connect_timeout(&web, Duration::from_secs(1)) {
            drop(stream);
            let (status, body) = http_get(web, "/api/v1/query?query=tarn_allocations_total", &[]);
            if status == 200 && body.contains("\"__name__\":\"tarn_allocations_total\"") {
                assert!(body.contains("\"result\":\"created\""), "{body}");
                break;
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not report tarn_allocations_total within 90 s; last answer: {last}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(daemon.stop().success());
    let _ = std::fs::remove_dir_all(dir);
}
