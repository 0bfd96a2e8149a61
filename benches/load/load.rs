//! `load`: a TURN load generator for tarn, coturn or any RFC 8656 server over UDP.
//!
//! Every client is a raw TURN client on its own UDP socket (its own 5-tuple), built on
//! tarn's codec like tests/soak.rs, with TURN REST credentials (`--secret`, `--realm`;
//! username `<expiry>:<id>`, password base64(HMAC-SHA1)). Relayed traffic goes to an
//! in-process UDP echo peer on 127.0.0.1 and back. Loopback only; every run is bounded
//! in time (`--duration`, warm-up, drain) and in count.
//!
//! Modes (see BENCHMARKS.md for the commands compare.sh runs):
//! - `relay`: N allocations send ChannelData (`--framing channel`, after ChannelBind)
//!   or Send indications (`--framing send`, after CreatePermission) to the echo peer,
//!   closed loop (`--window W` packets in flight per allocation) or paced (`--rate R`
//!   round trips per second in total, spread evenly over the allocations). Reports
//!   round trips/s, loss, RTT percentiles and, with `--server-pid`, the server's CPU
//!   time per round trip and its RSS.
//! - `alloc-cycle`: C clients loop Allocate (401), Allocate, Refresh(0) → cycles/s.
//! - `binding`: C clients send Binding requests, one in flight each → responses/s.
//! - `hold`: N allocations with one permission each; server RSS before, held and after
//!   release → KiB per allocation.
//!
//! The generator is one thread around epoll (plus the echo peer's thread, which moves
//! datagrams in recvmmsg/sendmmsg batches); the data path allocates nothing per packet.

mod ctl;
mod peer;
mod sys;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tarn::auth::Secret;
use tarn::proto::{self, Class, Message, MessageWriter, Method, TransactionId, attr};

use ctl::{Client, Creds, Run, Step};
use sys::{Epoll, TimerFd};

/// Largest datagram the generator reads.
const RX_LEN: usize = 2048;
/// Bytes at the start of every payload: sequence, send time, flow index.
const STAMP_LEN: usize = 20;
/// epoll token of the pacing timer.
const TIMER: u64 = u64::MAX;

#[derive(Parser)]
#[command(
    name = "load",
    about = "TURN load generator over UDP loopback (see BENCHMARKS.md)"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Relay traffic through N allocations to the echo peer and back.
    Relay(RelayArgs),
    /// Clients looping Allocate (401) + Allocate + Refresh(0).
    AllocCycle(CycleArgs),
    /// Clients sending Binding requests, one in flight each.
    Binding(BindingArgs),
    /// Hold N allocations and read the server's RSS before, during and after.
    Hold(HoldArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// The TURN server (UDP).
    #[arg(long, default_value = "127.0.0.1:3478")]
    server: SocketAddr,
    /// TURN REST shared secret (coturn static-auth-secret, tarn auth.secrets).
    #[arg(long)]
    secret: String,
    /// Realm the server uses.
    #[arg(long, default_value = "tarn.bench")]
    realm: String,
    /// Measured interval, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured load before the interval, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// The server's process id: CPU time (utime+stime from /proc/PID/stat) and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also print one JSON line (the last line of output).
    #[arg(long)]
    json: bool,
    /// A free-form label copied into the JSON line (e.g. the server's name).
    #[arg(long, default_value = "")]
    label: String,
    /// A shell command run (and waited for) as the measured interval starts, e.g.
    /// `callgrind_control -z PID` to profile exactly the interval.
    #[arg(long)]
    hook_start: Option<String>,
    /// A shell command run (and waited for) as the measured interval ends.
    #[arg(long)]
    hook_end: Option<String>,
}

/// Runs a `--hook-start`/`--hook-end` command, if any.
fn hook(cmd: Option<&String>) {
    if let Some(cmd) = cmd
        && let Err(e) = std::process::Command::new("sh").arg("-c").arg(cmd).status()
    {
        eprintln!("load: hook {cmd:?} failed: {e}");
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Framing {
    /// ChannelData after ChannelBind.
    Channel,
    /// Send and Data indications after CreatePermission.
    Send,
}

#[derive(Args)]
struct RelayArgs {
    #[command(flatten)]
    common: Common,
    /// Allocations (one client socket each).
    #[arg(long, default_value_t = 100)]
    allocations: usize,
    #[arg(long, value_enum, default_value_t = Framing::Channel)]
    framing: Framing,
    /// Application payload bytes per packet (at least 20: sequence, time, flow).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Closed loop: packets in flight per allocation (default 1 unless --rate).
    #[arg(long, conflicts_with = "rate")]
    window: Option<u32>,
    /// Open loop: round trips per second in total, paced evenly over the allocations.
    #[arg(long)]
    rate: Option<f64>,
    /// Pacing timer period in microseconds (open loop).
    #[arg(long, default_value_t = 200)]
    tick_us: u64,
    /// Longest wait for the last replies after the interval, milliseconds.
    #[arg(long, default_value_t = 1000)]
    drain_ms: u64,
    /// Allocations set up at once.
    #[arg(long, default_value_t = 256)]
    setup_concurrency: usize,
}

#[derive(Args)]
struct CycleArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// A new 5-tuple for every cycle instead of reusing the released one (coturn
    /// answers 437 to an Allocate from a 5-tuple it released a moment ago).
    #[arg(long)]
    new_socket: bool,
    /// With --new-socket: rotate through this many pre-opened sockets per client
    /// instead of opening one per cycle (0: open one per cycle).
    #[arg(long, default_value_t = 0)]
    socket_pool: usize,
}

#[derive(Args)]
struct BindingArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent clients (one request in flight each).
    #[arg(long, default_value_t = 8)]
    clients: usize,
}

#[derive(Args)]
struct HoldArgs {
    #[command(flatten)]
    common: Common,
    /// Allocations to hold (one permission each).
    #[arg(long, default_value_t = 2000)]
    allocations: usize,
    /// Seconds to let the server settle before each RSS reading.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    sys::raise_nofile();
    let (common, report) = match &cli.mode {
        Mode::Relay(a) => (&a.common, relay(a)?),
        Mode::AllocCycle(a) => (&a.common, alloc_cycle(a)?),
        Mode::Binding(a) => (&a.common, binding(a)?),
        Mode::Hold(a) => (&a.common, hold(a)?),
    };
    if common.json {
        let mut report = report;
        if let Value::Object(m) = &mut report {
            m.insert("label".into(), json!(common.label));
            m.insert("server".into(), json!(common.server.to_string()));
        }
        println!("{report}");
    }
    Ok(())
}

fn creds(c: &Common) -> Creds {
    Creds {
        secret: Secret::new(c.secret.as_bytes().to_vec()),
        realm: c.realm.clone(),
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// A tag unique to this run for REST usernames.
fn tag(mode: &str) -> String {
    format!("load-{mode}-{}", std::process::id())
}

/// CPU and RSS readings of the server (absent without `--server-pid`).
#[derive(Clone, Copy, Default)]
struct Probe {
    server_cpu: Option<f64>,
    server_rss: Option<u64>,
    own_cpu: f64,
    at: Option<Instant>,
}

impl Probe {
    fn read(pid: Option<u32>) -> Self {
        Self {
            server_cpu: pid.and_then(sys::proc_cpu_seconds),
            server_rss: pid.and_then(sys::proc_rss_kib),
            own_cpu: sys::self_cpu_seconds(),
            at: Some(Instant::now()),
        }
    }
}

/// Server CPU seconds, own CPU seconds and wall seconds between two probes.
fn between(a: &Probe, b: &Probe) -> (Option<f64>, f64, f64) {
    let wall = match (a.at, b.at) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
        _ => 0.0,
    };
    let server = match (a.server_cpu, b.server_cpu) {
        (Some(x), Some(y)) => Some(y - x),
        _ => None,
    };
    (server, b.own_cpu - a.own_cpu, wall)
}

/// Round-trip times at 1 µs resolution up to one second, without allocation per sample.
struct Hist {
    buckets: Vec<u32>,
    over: u64,
    count: u64,
    max_ns: u64,
}

impl Hist {
    fn new() -> Self {
        Self {
            buckets: vec![0; 1_000_000],
            over: 0,
            count: 0,
            max_ns: 0,
        }
    }

    #[inline]
    fn record(&mut self, ns: u64) {
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
        match self.buckets.get_mut((ns / 1000) as usize) {
            Some(b) => *b += 1,
            None => self.over += 1,
        }
    }

    /// The `q` quantile in microseconds (None without samples).
    fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let target = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (us, n) in self.buckets.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= target {
                return Some(us as f64);
            }
        }
        Some(self.max_ns as f64 / 1000.0)
    }
}

fn fmt_opt(v: Option<f64>, digits: usize, unit: &str) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}{unit}"))
}

/// One relay flow: the frame it sends (payload patched in place) and its window.
struct Flow {
    frame: Vec<u8>,
    data_at: usize,
    seq: u64,
    outstanding: u32,
    last_rx: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Warmup,
    Measure,
    Drain,
}

#[derive(Default)]
struct Counters {
    sent: u64,
    sent_measured: u64,
    received: u64,
    received_measured: u64,
    malformed: u64,
    send_errors: u64,
    skipped: u64,
    stalls: u64,
}

/// Builds a flow's frame: ChannelData, or a Send indication to `peer`.
fn build_frame(framing: Framing, peer: SocketAddr, payload: usize, idx: u32) -> (Vec<u8>, usize) {
    let mut data = vec![0u8; payload];
    for (i, b) in data.iter_mut().enumerate().skip(STAMP_LEN) {
        *b = (i as u8) ^ 0x5A;
    }
    data[16..20].copy_from_slice(&idx.to_be_bytes());
    match framing {
        Framing::Channel => {
            let mut frame = vec![0u8; 4 + payload];
            let n = proto::encode_channel_data(&mut frame, ctl::CHANNEL, &data, false)
                .expect("payload fits ChannelData");
            frame.truncate(n);
            (frame, 4)
        }
        Framing::Send => {
            let mut frame = vec![0u8; 64 + payload + 4];
            let mut tid = [0u8; 12];
            tid[..4].copy_from_slice(&idx.to_be_bytes());
            let mut w = MessageWriter::new(
                &mut frame,
                Class::Indication,
                Method::SEND,
                TransactionId(tid),
            )
            .expect("room for a header");
            w.xor_address(attr::XOR_PEER_ADDRESS, peer)
                .expect("room for the peer");
            w.attr(attr::DATA, &data).expect("room for the data");
            let n = w.finish();
            frame.truncate(n);
            let at = Message::parse(&frame)
                .ok()
                .and_then(|m| m.get(attr::DATA))
                .map(|a| a.offset + 4)
                .expect("DATA just written");
            (frame, at)
        }
    }
}

/// The payload of a datagram from the server: ChannelData's data or a Data
/// indication's DATA.
#[inline]
fn payload_of(framing: Framing, buf: &[u8]) -> Option<&[u8]> {
    match framing {
        Framing::Channel => proto::parse_channel_data(buf).ok().map(|c| c.data),
        Framing::Send => {
            let m = Message::parse(buf).ok()?;
            if m.class() != Class::Indication || m.method() != Method::DATA {
                return None;
            }
            m.get(attr::DATA).map(|a| a.value)
        }
    }
}

fn relay(a: &RelayArgs) -> anyhow::Result<Value> {
    let c = &a.common;
    anyhow::ensure!(a.allocations > 0, "--allocations must be positive");
    anyhow::ensure!(
        (STAMP_LEN..=1400).contains(&a.payload),
        "--payload must be {STAMP_LEN}..=1400"
    );
    let window = a.window.unwrap_or(1).max(1);
    let rate = a.rate.filter(|r| *r > 0.0);
    let creds = creds(c);
    let peer = peer::EchoPeer::start(RX_LEN)?;
    let epoll = Epoll::new()?;
    let mut clients = ctl::make_clients(&epoll, c.server, &creds, &tag("relay"), a.allocations)?;
    let bind = match a.framing {
        Framing::Channel => Step::ChannelBind,
        Framing::Send => Step::Permission,
    };
    let setup = ctl::run_script(
        &epoll,
        &mut clients,
        &Run {
            script: &[Step::Challenge, Step::Allocate, bind],
            peer: peer.addr,
            server: c.server,
            realm: &c.realm,
            concurrency: a.setup_concurrency.max(1),
            deadline: Instant::now() + Duration::from_secs(60),
            repeat_until: None,
            window: None,
            new_socket: false,
            only_allocated: false,
            rto: Duration::from_millis(250),
        },
        &mut |_| {},
    );
    let n_ready = setup.ok;
    if setup.failed > 0 || n_ready < a.allocations {
        // Give back what was made before reporting the failure.
        ctl::release_all(
            &epoll,
            &mut clients,
            c.server,
            peer.addr,
            &c.realm,
            Duration::from_secs(10),
        );
        anyhow::bail!(
            "setup: {} of {} allocations ready; errors: {}",
            n_ready,
            a.allocations,
            setup.errors_text()
        );
    }

    let t0 = Instant::now();
    let mut flows: Vec<Flow> = (0..clients.len())
        .map(|i| {
            let (frame, data_at) = build_frame(a.framing, peer.addr, a.payload, i as u32);
            Flow {
                frame,
                data_at,
                seq: 0,
                outstanding: 0,
                last_rx: t0,
            }
        })
        .collect();
    let tick = match rate {
        Some(_) => Duration::from_micros(a.tick_us.max(20)),
        None => Duration::from_millis(10),
    };
    let timer = TimerFd::new(tick)?;
    epoll.add(timer.fd(), TIMER)?;

    let meas_start = t0 + secs(c.warmup);
    let meas_end = meas_start + secs(c.duration);
    let (ms_ns, me_ns) = (
        meas_start.duration_since(t0).as_nanos() as u64,
        meas_end.duration_since(t0).as_nanos() as u64,
    );
    let mut phase = Phase::Warmup;
    let mut drain_until = meas_end;
    let mut k = Counters::default();
    let mut hist = Hist::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut rx = [0u8; RX_LEN];
    let (mut p0, mut p1) = (Probe::default(), Probe::default());
    let mut paced = 0u64;
    let mut rr = 0usize;
    let mut last_stall_scan = t0;
    let max_burst = rate.map_or(0, |r| ((r * 0.005) as u64).max(1));

    // Sends one packet on flow `i` at `now`.
    let send =
        |flows: &mut [Flow], clients: &[Client], k: &mut Counters, i: usize, now: Instant| {
            let f = &mut flows[i];
            let sent_ns = now.duration_since(t0).as_nanos() as u64;
            f.seq += 1;
            let at = f.data_at;
            f.frame[at..at + 8].copy_from_slice(&f.seq.to_le_bytes());
            f.frame[at + 8..at + 16].copy_from_slice(&sent_ns.to_le_bytes());
            if a.framing == Framing::Send {
                // A fresh transaction id per indication (the XOR of an IPv4 peer address
                // does not depend on it).
                f.frame[12..20].copy_from_slice(&f.seq.to_le_bytes());
            }
            match clients[i].socket.send(&f.frame) {
                Ok(_) => {
                    k.sent += 1;
                    if sent_ns >= ms_ns && sent_ns < me_ns {
                        k.sent_measured += 1;
                    }
                    f.outstanding += 1;
                }
                Err(_) => k.send_errors += 1,
            }
        };

    if rate.is_none() {
        let now = Instant::now();
        for i in 0..flows.len() {
            for _ in 0..window {
                send(&mut flows, &clients, &mut k, i, now);
            }
        }
    }
    loop {
        let now = Instant::now();
        if phase == Phase::Warmup && now >= meas_start {
            hook(c.hook_start.as_ref());
            p0 = Probe::read(c.server_pid);
            phase = Phase::Measure;
        }
        if phase == Phase::Measure && now >= meas_end {
            p1 = Probe::read(c.server_pid);
            hook(c.hook_end.as_ref());
            phase = Phase::Drain;
            drain_until = now + Duration::from_millis(a.drain_ms);
        }
        if phase == Phase::Drain && (now >= drain_until || k.received_measured >= k.sent_measured) {
            break;
        }
        let n = epoll.wait(&mut events, 10)?;
        for ev in &events[..n] {
            let token = sys::token(ev);
            if token == TIMER {
                timer.drain();
                let now = Instant::now();
                if phase == Phase::Drain {
                    continue;
                }
                if let Some(r) = rate {
                    let target = (now.duration_since(t0).as_secs_f64() * r) as u64;
                    let mut due = target.saturating_sub(paced);
                    if due > max_burst {
                        k.skipped += due - max_burst;
                        paced += due - max_burst;
                        due = max_burst;
                    }
                    for _ in 0..due {
                        send(&mut flows, &clients, &mut k, rr, now);
                        rr = (rr + 1) % flows.len();
                        paced += 1;
                    }
                } else if now.duration_since(last_stall_scan) >= Duration::from_millis(100) {
                    // Closed loop: a window whose packets were all lost would stay
                    // empty; refill flows silent for 250 ms.
                    last_stall_scan = now;
                    for i in 0..flows.len() {
                        let f = &mut flows[i];
                        if f.outstanding > 0
                            && now.duration_since(f.last_rx) > Duration::from_millis(250)
                        {
                            k.stalls += 1;
                            f.outstanding = 0;
                            f.last_rx = now;
                            for _ in 0..window {
                                send(&mut flows, &clients, &mut k, i, now);
                            }
                        }
                    }
                }
                continue;
            }
            let i = token as usize;
            for _ in 0..64 {
                let len = match clients[i].socket.recv(&mut rx) {
                    Ok(len) => len,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => continue,
                };
                let now = Instant::now();
                let Some(data) = payload_of(a.framing, &rx[..len]) else {
                    k.malformed += 1;
                    continue;
                };
                if data.len() != a.payload || data[16..20] != (i as u32).to_be_bytes() {
                    k.malformed += 1;
                    continue;
                }
                let sent_ns = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
                let now_ns = now.duration_since(t0).as_nanos() as u64;
                k.received += 1;
                if sent_ns >= ms_ns && sent_ns < me_ns {
                    k.received_measured += 1;
                    hist.record(now_ns.saturating_sub(sent_ns));
                }
                let f = &mut flows[i];
                f.outstanding = f.outstanding.saturating_sub(1);
                f.last_rx = now;
                if rate.is_none() && phase != Phase::Drain {
                    send(&mut flows, &clients, &mut k, i, now);
                }
            }
        }
    }
    let _ = epoll.remove(timer.fd());
    let rss_end = c.server_pid.and_then(sys::proc_rss_kib);
    let released = ctl::release_all(
        &epoll,
        &mut clients,
        c.server,
        peer.addr,
        &c.realm,
        Duration::from_secs(10),
    );

    let (server_cpu, own_cpu, wall) = between(&p0, &p1);
    let rts = k.received_measured as f64;
    let per_s = if wall > 0.0 { rts / wall } else { 0.0 };
    let lost = k.sent_measured.saturating_sub(k.received_measured);
    let loss_pct = if k.sent_measured > 0 {
        100.0 * lost as f64 / k.sent_measured as f64
    } else {
        0.0
    };
    let cpu_us = server_cpu.filter(|_| rts > 0.0).map(|s| s * 1e6 / rts);
    let own_us = if rts > 0.0 { own_cpu * 1e6 / rts } else { 0.0 };
    let (p50, p99, p999) = (
        hist.quantile_us(0.50),
        hist.quantile_us(0.99),
        hist.quantile_us(0.999),
    );
    let load_text = match rate {
        Some(r) => format!("paced {r:.0} round trips/s"),
        None => format!("closed loop, window {window}"),
    };
    println!(
        "relay: {} allocations, {:?} framing, {} B payload, {load_text}, server {}",
        a.allocations, a.framing, a.payload, c.server
    );
    println!(
        "  setup        {}/{} allocations in {:.2} s (retransmits {})",
        n_ready,
        a.allocations,
        setup.elapsed.as_secs_f64(),
        setup.retransmits
    );
    println!(
        "  round trips  {per_s:.0}/s over {wall:.2} s (relayed packets {:.0}/s), offered {:.0}/s, skipped by pacer {}",
        2.0 * per_s,
        k.sent_measured as f64 / wall.max(1e-9),
        k.skipped
    );
    println!(
        "  loss         {lost} of {} ({loss_pct:.3}%), send errors {}, malformed {}, stalls {}",
        k.sent_measured, k.send_errors, k.malformed, k.stalls
    );
    println!(
        "  rtt          p50 {} µs, p99 {} µs, p99.9 {} µs, max {:.0} µs",
        fmt_opt(p50, 0, ""),
        fmt_opt(p99, 0, ""),
        fmt_opt(p999, 0, ""),
        hist.max_ns as f64 / 1000.0
    );
    println!(
        "  server       cpu {} s = {} per round trip, rss {} KiB",
        fmt_opt(server_cpu, 3, ""),
        fmt_opt(cpu_us, 2, " µs"),
        rss_end.map_or("n/a".into(), |r| r.to_string())
    );
    println!(
        "  generator    cpu {own_cpu:.3} s = {own_us:.2} µs per round trip; echo peer echoed {}, dropped {}",
        peer.echoed(),
        peer.dropped()
    );
    println!(
        "  release      {} allocations released ({})",
        released.completed,
        released.errors_text()
    );
    Ok(json!({
        "mode": "relay",
        "framing": format!("{:?}", a.framing).to_lowercase(),
        "allocations": a.allocations,
        "payload": a.payload,
        "rate": rate,
        "window": if rate.is_none() { Some(window) } else { None },
        "setup_seconds": setup.elapsed.as_secs_f64(),
        "seconds": wall,
        "round_trips_per_s": per_s,
        "relayed_packets_per_s": 2.0 * per_s,
        "offered_per_s": k.sent_measured as f64 / wall.max(1e-9),
        "sent": k.sent_measured,
        "received": k.received_measured,
        "lost": lost,
        "loss_pct": loss_pct,
        "send_errors": k.send_errors,
        "malformed": k.malformed,
        "skipped": k.skipped,
        "rtt_p50_us": p50,
        "rtt_p99_us": p99,
        "rtt_p999_us": p999,
        "rtt_max_us": hist.max_ns as f64 / 1000.0,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_rt": cpu_us,
        "server_rss_kib": rss_end,
        "generator_cpu_us_per_rt": own_us,
    }))
}

fn alloc_cycle(a: &CycleArgs) -> anyhow::Result<Value> {
    let c = &a.common;
    anyhow::ensure!(a.clients > 0, "--clients must be positive");
    let creds = creds(c);
    let epoll = Epoll::new()?;
    let mut clients = ctl::make_clients(&epoll, c.server, &creds, &tag("cycle"), a.clients)?;
    if a.new_socket && a.socket_pool > 1 {
        for (i, cl) in clients.iter_mut().enumerate() {
            cl.fill_pool(c.server, &epoll, i, a.socket_pool - 1)?;
        }
    }
    let t0 = Instant::now();
    let meas_start = t0 + secs(c.warmup);
    let meas_end = meas_start + secs(c.duration);
    let mut probes = [Probe::default(); 2];
    let pid = c.server_pid;
    let unused_peer: SocketAddr = "127.0.0.1:9".parse().expect("literal");
    let out = ctl::run_script(
        &epoll,
        &mut clients,
        &Run {
            script: &[Step::Challenge, Step::Allocate, Step::Release],
            peer: unused_peer,
            server: c.server,
            realm: &c.realm,
            concurrency: a.clients,
            deadline: meas_end + Duration::from_secs(5),
            repeat_until: Some(meas_end),
            window: Some((meas_start, meas_end)),
            new_socket: a.new_socket,
            only_allocated: false,
            rto: Duration::from_millis(250),
        },
        &mut |m| {
            if m == 0 {
                hook(c.hook_start.as_ref());
            }
            probes[m] = Probe::read(pid);
            if m == 1 {
                hook(c.hook_end.as_ref());
            }
        },
    );
    let leftover = ctl::release_all(
        &epoll,
        &mut clients,
        c.server,
        unused_peer,
        &c.realm,
        Duration::from_secs(5),
    );
    let (server_cpu, own_cpu, wall) = between(&probes[0], &probes[1]);
    let cycles = out.completed_in_window as f64;
    let per_s = if wall > 0.0 { cycles / wall } else { 0.0 };
    let cpu_us = server_cpu
        .filter(|_| cycles > 0.0)
        .map(|s| s * 1e6 / cycles);
    let sockets = match (a.new_socket, a.socket_pool) {
        (false, _) => "the same socket every cycle".to_string(),
        (true, 0 | 1) => "a new socket every cycle".to_string(),
        (true, k) => format!("a new 5-tuple every cycle from a pool of {k} sockets per client"),
    };
    println!(
        "alloc-cycle: {} clients, {sockets}, server {}",
        a.clients, c.server
    );
    println!(
        "  cycles       {per_s:.0}/s over {wall:.2} s ({} in the interval, {} in all)",
        out.completed_in_window, out.completed
    );
    println!(
        "  errors       {} (timeouts {}, retransmits {}, abandoned allocations {}); released afterwards {}",
        out.errors_text(),
        out.timeouts,
        out.retransmits,
        out.abandoned,
        leftover.completed
    );
    println!(
        "  server       cpu {} s = {} per cycle, rss {} KiB",
        fmt_opt(server_cpu, 3, ""),
        fmt_opt(cpu_us, 1, " µs"),
        probes[1].server_rss.map_or("n/a".into(), |r| r.to_string())
    );
    println!(
        "  generator    cpu {own_cpu:.3} s = {:.1} µs per cycle",
        if cycles > 0.0 {
            own_cpu * 1e6 / cycles
        } else {
            0.0
        }
    );
    Ok(json!({
        "mode": "alloc-cycle",
        "clients": a.clients,
        "new_socket": a.new_socket,
        "socket_pool": a.socket_pool,
        "seconds": wall,
        "cycles": out.completed_in_window,
        "cycles_per_s": per_s,
        "errors": out.errors.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "timeouts": out.timeouts,
        "retransmits": out.retransmits,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_cycle": cpu_us,
        "server_rss_kib": probes[1].server_rss,
    }))
}

fn binding(a: &BindingArgs) -> anyhow::Result<Value> {
    let c = &a.common;
    anyhow::ensure!(a.clients > 0, "--clients must be positive");
    let epoll = Epoll::new()?;
    let mut sockets = Vec::with_capacity(a.clients);
    for i in 0..a.clients {
        let s = ctl::client_socket(c.server)?;
        epoll.add(s.as_raw_fd(), i as u64)?;
        sockets.push(s);
    }
    // Per client: the request being waited for and when it went out.
    let mut reqs = vec![[0u8; 20]; a.clients];
    let mut sent_at = vec![Instant::now(); a.clients];
    let mut counter = vec![0u64; a.clients];
    let t0 = Instant::now();
    let meas_start = t0 + secs(c.warmup);
    let meas_end = meas_start + secs(c.duration);
    let mut p0 = Probe::default();
    let p1: Probe;
    let mut phase = Phase::Warmup;
    let mut hist = Hist::new();
    let (mut ok, mut ok_measured, mut timeouts, mut sent_measured) = (0u64, 0u64, 0u64, 0u64);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut rx = [0u8; RX_LEN];
    let mut last_scan = t0;

    let fire = |i: usize,
                reqs: &mut [[u8; 20]],
                counter: &mut [u64],
                sent_at: &mut [Instant],
                now: Instant| {
        counter[i] += 1;
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&(i as u32).to_be_bytes());
        tid[4..].copy_from_slice(&counter[i].to_be_bytes());
        let w = MessageWriter::new(
            &mut reqs[i],
            Class::Request,
            Method::BINDING,
            TransactionId(tid),
        )
        .expect("20 bytes hold a header");
        let n = w.finish();
        sent_at[i] = now;
        let _ = sockets[i].send(&reqs[i][..n]);
    };
    for i in 0..a.clients {
        fire(i, &mut reqs, &mut counter, &mut sent_at, Instant::now());
    }
    loop {
        let now = Instant::now();
        if phase == Phase::Warmup && now >= meas_start {
            hook(c.hook_start.as_ref());
            p0 = Probe::read(c.server_pid);
            phase = Phase::Measure;
        }
        if phase == Phase::Measure && now >= meas_end {
            p1 = Probe::read(c.server_pid);
            hook(c.hook_end.as_ref());
            break;
        }
        let n = epoll.wait(&mut events, 5)?;
        for ev in &events[..n] {
            let i = sys::token(ev) as usize;
            for _ in 0..16 {
                let len = match sockets[i].recv(&mut rx) {
                    Ok(len) => len,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => continue,
                };
                let Ok(m) = Message::parse(&rx[..len]) else {
                    continue;
                };
                if m.class() != Class::Success || m.transaction_id().0[..] != reqs[i][8..20] {
                    continue;
                }
                let now = Instant::now();
                ok += 1;
                if phase == Phase::Measure && sent_at[i] >= meas_start {
                    ok_measured += 1;
                    hist.record(now.duration_since(sent_at[i]).as_nanos() as u64);
                }
                fire(i, &mut reqs, &mut counter, &mut sent_at, now);
                if phase == Phase::Measure {
                    sent_measured += 1;
                }
            }
        }
        let now = Instant::now();
        if now.duration_since(last_scan) >= Duration::from_millis(50) {
            last_scan = now;
            for i in 0..a.clients {
                if now.duration_since(sent_at[i]) > Duration::from_millis(200) {
                    timeouts += 1;
                    fire(i, &mut reqs, &mut counter, &mut sent_at, now);
                }
            }
        }
    }
    let _ = sent_measured;
    let (server_cpu, own_cpu, wall) = between(&p0, &p1);
    let per_s = if wall > 0.0 {
        ok_measured as f64 / wall
    } else {
        0.0
    };
    let cpu_us = server_cpu
        .filter(|_| ok_measured > 0)
        .map(|s| s * 1e6 / ok_measured as f64);
    let (p50, p99) = (hist.quantile_us(0.5), hist.quantile_us(0.99));
    println!("binding: {} clients, server {}", a.clients, c.server);
    println!("  responses    {per_s:.0}/s over {wall:.2} s ({ok} in all, {timeouts} timeouts)");
    println!(
        "  rtt          p50 {} µs, p99 {} µs",
        fmt_opt(p50, 0, ""),
        fmt_opt(p99, 0, "")
    );
    println!(
        "  server       cpu {} s = {} per response",
        fmt_opt(server_cpu, 3, ""),
        fmt_opt(cpu_us, 2, " µs")
    );
    println!(
        "  generator    cpu {own_cpu:.3} s = {:.2} µs per response",
        if ok_measured > 0 {
            own_cpu * 1e6 / ok_measured as f64
        } else {
            0.0
        }
    );
    Ok(json!({
        "mode": "binding",
        "clients": a.clients,
        "seconds": wall,
        "responses": ok_measured,
        "responses_per_s": per_s,
        "timeouts": timeouts,
        "rtt_p50_us": p50,
        "rtt_p99_us": p99,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_response": cpu_us,
    }))
}

fn hold(a: &HoldArgs) -> anyhow::Result<Value> {
    let c = &a.common;
    let pid = c
        .server_pid
        .ok_or_else(|| anyhow::anyhow!("hold needs --server-pid"))?;
    let rss = || sys::proc_rss_kib(pid).unwrap_or(0);
    let fds = || sys::proc_fds(pid).unwrap_or(0);
    let creds = creds(c);
    let peer = peer::EchoPeer::start(RX_LEN)?;
    let epoll = Epoll::new()?;
    let mut clients = ctl::make_clients(&epoll, c.server, &creds, &tag("hold"), a.allocations)?;
    std::thread::sleep(secs(a.settle));
    let (rss_start, fds_start) = (rss(), fds());
    let setup = ctl::run_script(
        &epoll,
        &mut clients,
        &Run {
            script: &[Step::Challenge, Step::Allocate, Step::Permission],
            peer: peer.addr,
            server: c.server,
            realm: &c.realm,
            concurrency: 256,
            deadline: Instant::now() + Duration::from_secs(60),
            repeat_until: None,
            window: None,
            new_socket: false,
            only_allocated: false,
            rto: Duration::from_millis(250),
        },
        &mut |_| {},
    );
    let held_n = clients.iter().filter(|cl| cl.allocated).count();
    std::thread::sleep(secs(a.settle));
    let (rss_held, fds_held) = (rss(), fds());
    let released = ctl::release_all(
        &epoll,
        &mut clients,
        c.server,
        peer.addr,
        &c.realm,
        Duration::from_secs(30),
    );
    std::thread::sleep(secs(a.settle));
    let (rss_after, fds_after) = (rss(), fds());
    drop(clients);
    let per_alloc = if held_n > 0 {
        (rss_held as f64 - rss_start as f64) / held_n as f64
    } else {
        0.0
    };
    let after_vs_start = if rss_start > 0 {
        100.0 * (rss_after as f64 - rss_start as f64) / rss_start as f64
    } else {
        0.0
    };
    println!(
        "hold: {} allocations with one permission each, server {} (pid {pid})",
        a.allocations, c.server
    );
    println!(
        "  setup        {held_n}/{} held in {:.2} s ({})",
        a.allocations,
        setup.elapsed.as_secs_f64(),
        setup.errors_text()
    );
    println!(
        "  rss          start {rss_start} KiB, held {rss_held} KiB, after release {rss_after} KiB ({after_vs_start:+.1}% vs start)"
    );
    println!("  per alloc    {per_alloc:.2} KiB");
    println!(
        "  fds          start {fds_start}, held {fds_held}, after release {fds_after}; released {} ({})",
        released.completed,
        released.errors_text()
    );
    Ok(json!({
        "mode": "hold",
        "allocations": a.allocations,
        "held": held_n,
        "rss_start_kib": rss_start,
        "rss_held_kib": rss_held,
        "rss_after_kib": rss_after,
        "kib_per_allocation": per_alloc,
        "rss_after_vs_start_pct": after_vs_start,
        "fds_start": fds_start,
        "fds_held": fds_held,
        "fds_after": fds_after,
        "released": released.completed,
    }))
}
