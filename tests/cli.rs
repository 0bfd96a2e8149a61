//! The `tarn` command line: `check-config`, `credentials`, configuration errors at
//! start-up, and the secret generated when none is configured.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use hmac::{KeyInit, Mac};

use common::{Daemon, scratch_dir, set_key, unix_now};

/// Bound on every run of the binary.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` (bounded: killed after [`RUN_TIMEOUT`]).
fn tarn(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tarn"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tarn");
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        let _ = tx.send((child.wait(), out, err));
    });
    match rx.recv_timeout(RUN_TIMEOUT) {
        Ok((status, stdout, stderr)) => Output {
            status: status.expect("wait"),
            stdout,
            stderr,
        },
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("tarn {args:?} did not exit within {RUN_TIMEOUT:?}");
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn rest_password(secret: &str, username: &str) -> String {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

// ---------------------------------------------------------------------------------------
// check-config

#[test]
fn check_config_accepts_the_documented_file() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/tarn.toml");
    let out = tarn(&["check-config", path_str(&conf)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert!(out.stdout.contains("ok"), "stdout: {}", out.stdout);
}

#[test]
fn check_config_names_an_unknown_key_and_its_line() {
    let dir = scratch_dir("cli-unknown");
    let path = write(
        &dir,
        "t.toml",
        "[server]\nrealm = \"x\"\n\n[limits]\nallocations_per_usr = 3\n",
    );
    let out = tarn(&["check-config", path_str(&path)]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("allocations_per_usr"), "{}", out.stderr);
    assert!(out.stderr.contains("line 5"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", out.stdout);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_config_names_a_bad_value() {
    let dir = scratch_dir("cli-bad-value");
    for (text, key, line) in [
        ("[server]\nrelay_ports = \"9-1\"\n", "relay_ports", "line 2"),
        (
            "[server]\nrealm = \"x\"\nrelay_ports = \"6000-5000\"\n",
            "relay_ports",
            "line 3",
        ),
        (
            "[allocation]\ndefault_lifetime = 0\n",
            "default_lifetime",
            "line 2",
        ),
        (
            "[log]\nclient_addresses = \"everything\"\n",
            "client_addresses",
            "line 2",
        ),
    ] {
        let path = write(&dir, "t.toml", text);
        let out = tarn(&["check-config", path_str(&path)]);
        assert_eq!(out.status.code(), Some(2), "{text}: {}", out.stderr);
        assert!(out.stderr.contains(key), "{text}: {}", out.stderr);
        assert!(out.stderr.contains(line), "{text}: {}", out.stderr);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_config_of_a_missing_file_exits_2() {
    let dir = scratch_dir("cli-missing");
    let path = dir.join("does-not-exist.toml");
    let out = tarn(&["check-config", path_str(&path)]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("does-not-exist.toml"), "{}", out.stderr);
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// credentials

const CLI_SECRET: &str = "cli-test-secret-7c1e";

fn credentials_config(dir: &Path) -> PathBuf {
    write(
        dir,
        "tarn.toml",
        &format!(
            "[server]\nrealm = \"cli.test\"\nlisten = [\"127.0.0.1:3999\"]\n\n\
             [auth]\nsecrets = [\"{CLI_SECRET}\"]\n"
        ),
    )
}

/// Runs `credentials` with `extra` arguments; returns the parsed JSON and the time
/// window the expiry must fall in.
fn credentials_json(config: &Path, extra: &[&str]) -> (serde_json::Value, u64, u64) {
    let before = unix_now();
    let mut args = vec!["--config", path_str(config), "credentials"];
    args.extend_from_slice(extra);
    let out = tarn(&args);
    let after = unix_now();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("a JSON line in {:?}", out.stdout));
    let json: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
    (json, before, after)
}

#[test]
fn credentials_prints_an_ice_server_entry() {
    let dir = scratch_dir("cli-credentials");
    let config = credentials_config(&dir);
    let (json, before, after) =
        credentials_json(&config, &["--user", "alice", "--ttl", "60", "--json"]);
    let username = json["username"].as_str().expect("username");
    let (expiry, id) = username.split_once(':').expect("<expiry>:<id>");
    assert_eq!(id, "alice");
    let expiry: u64 = expiry.parse().expect("numeric expiry");
    assert!(
        (before + 60..=after + 60).contains(&expiry),
        "expiry {expiry} is now+60 (now in {before}..={after})"
    );
    assert_eq!(
        json["credential"].as_str(),
        Some(rest_password(CLI_SECRET, username).as_str()),
        "credential = base64(HMAC-SHA1(secret, username))"
    );
    let urls: Vec<&str> = json["urls"]
        .as_array()
        .expect("urls array")
        .iter()
        .map(|u| u.as_str().expect("url string"))
        .collect();
    assert!(
        urls.contains(&"turn:cli.test:3999?transport=udp"),
        "urls: {urls:?}"
    );
    assert!(urls.iter().all(|u| u.starts_with("turn")), "urls: {urls:?}");
    // --json prints only the entry.
    let out = tarn(&[
        "--config",
        path_str(&config),
        "credentials",
        "--user",
        "alice",
        "--json",
    ]);
    assert_eq!(out.stdout.trim().lines().count(), 1, "{}", out.stdout);
    assert!(
        !out.stdout.contains(CLI_SECRET),
        "the secret is never printed"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn credentials_without_user_is_a_bare_expiry() {
    let dir = scratch_dir("cli-bare");
    let config = credentials_config(&dir);
    let (json, before, after) = credentials_json(&config, &["--ttl", "120", "--json"]);
    let username = json["username"].as_str().expect("username");
    assert!(
        !username.is_empty() && username.bytes().all(|b| b.is_ascii_digit()),
        "bare expiry: {username:?}"
    );
    let expiry: u64 = username.parse().unwrap();
    assert!((before + 120..=after + 120).contains(&expiry));
    assert_eq!(
        json["credential"].as_str(),
        Some(rest_password(CLI_SECRET, username).as_str())
    );
    // Without --json the pair is printed as text as well.
    let out = tarn(&[
        "--config",
        path_str(&config),
        "credentials",
        "--user",
        "bob",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let field = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {:?}", out.stdout))
            .trim()
            .to_string()
    };
    let username = field("username:");
    assert!(username.ends_with(":bob"), "{username}");
    assert_eq!(field("password:"), rest_password(CLI_SECRET, &username));
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// The daemon and its configuration.

#[test]
fn daemon_with_a_bad_value_exits_2_without_starting() {
    let dir = scratch_dir("cli-daemon-bad");
    for (text, key) in [
        (
            "[server]\nlisten = [\"127.0.0.1:0\"]\nrelay_ports = \"9-1\"\n",
            "relay_ports",
        ),
        (
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[auth]\nsecrets = [\"s\"]\nnonce_lifetme = 5\n",
            "nonce_lifetme",
        ),
    ] {
        let path = write(&dir, "tarn.toml", text);
        let out = tarn(&["--config", path_str(&path)]);
        assert_eq!(out.status.code(), Some(2), "{text}: {}", out.stderr);
        assert!(out.stderr.contains(key), "{}", out.stderr);
        assert!(
            !out.stderr.contains("listening") && !out.stderr.contains("ready"),
            "it did not start: {}",
            out.stderr
        );
    }
    // The same with the explicit `run` subcommand.
    let path = write(
        &dir,
        "tarn.toml",
        "[server]\nlisten = [\"127.0.0.1:0\"]\nrelay_ports = \"9-1\"\n",
    );
    let out = tarn(&["--config", path_str(&path), "run"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_a_secret_the_daemon_generates_a_private_one_and_logs_only_its_path() {
    let daemon = Daemon::start_with(|c| set_key(&c, "auth", "secrets", "[]"));
    let state = daemon.dir().join("state");
    let file = state.join("secret");
    let meta = std::fs::metadata(&file).expect("<state_directory>/secret exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "secret file mode");
    let dir_mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        dir_mode & 0o077,
        0,
        "state directory not open to others: {dir_mode:o}"
    );
    let secret = std::fs::read_to_string(&file).unwrap();
    let secret = secret.trim();
    assert!(secret.len() >= 32, "a long random secret");
    let log = daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(path_str(&file)) && l.contains("secret")),
        "the log names the path:\n{log}"
    );
    assert!(
        !log.contains(secret),
        "the secret itself is not logged:\n{log}"
    );
    assert!(!log.contains(&secret[..12]), "no part of it either:\n{log}");
    // The credentials command uses the same generated secret.
    let config = daemon.dir().join("tarn.toml");
    let out = tarn(&[
        "--config",
        path_str(&config),
        "credentials",
        "--user",
        "carol",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let username = json["username"].as_str().unwrap();
    assert_eq!(
        json["credential"].as_str(),
        Some(rest_password(secret, username).as_str())
    );
    let status = daemon.stop();
    assert!(status.success(), "exit status {status:?}");
}
