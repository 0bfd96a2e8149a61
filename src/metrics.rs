//! The Prometheus endpoint: aggregate counters only.
//!
//! The per-shard [`Stats`] are plain atomics that the relay path bumps without a lock;
//! a [`prometheus_client`] collector sums them at scrape time. Every label value comes
//! from a fixed enum in [`crate::stats`], so nothing a client sends can become a label
//! or a series. The endpoint speaks the classic text format (0.0.4) by default, which
//! Prometheus and `promtool check metrics` both accept, and OpenMetrics to scrapers
//! that ask for it in `Accept`. An optional bearer token guards it; `/healthz` answers
//! for orchestrators.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use subtle::ConstantTimeEq;

use crate::stats::{
    AllocResult, AuthFailure, DURATION_BUCKETS, Direction, DropReason, FamilyLabel, MethodLabel,
    QuotaKind, ResultLabel, Stats, TransportLabel,
};

/// Whether the daemon takes new allocations (for `/healthz`).
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
}

impl Health {
    /// Marks the daemon as draining: `/healthz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
    /// Whether the daemon is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Sums the shards' counters on each scrape.
#[derive(Debug)]
struct ShardCollector {
    shards: Vec<Arc<Stats>>,
    version: Option<&'static str>,
}

type Labels<const N: usize> = [(&'static str, &'static str); N];

impl ShardCollector {
    fn sum(&self, read: impl Fn(&Stats) -> u64) -> u64 {
        self.shards.iter().map(|s| read(s)).sum()
    }
    fn sum_signed(&self, read: impl Fn(&Stats) -> i64) -> i64 {
        self.shards.iter().map(|s| read(s)).sum::<i64>().max(0)
    }
}

fn count(m: MetricEncoder<'_>, v: u64) -> fmt::Result {
    let mut m = m;
    m.encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn load_i(c: &std::sync::atomic::AtomicI64) -> i64 {
    c.load(Ordering::Relaxed)
}

impl Collector for ShardCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        {
            let mut m = enc.encode_descriptor(
                "tarn_allocations_active",
                "Allocations currently held, by client transport and relay address family",
                None,
                MetricType::Gauge,
            )?;
            for t in TransportLabel::ALL {
                for f in FamilyLabel::ALL {
                    let v = self
                        .sum_signed(|s| load_i(&s.allocations_active[*t as usize][*f as usize]));
                    let labels: Labels<2> = [("transport", t.label()), ("family", f.label())];
                    m.encode_family(&labels)?.encode_gauge(&v)?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "tarn_allocations",
                "Allocate requests that created an allocation or were refused after authentication",
                None,
                MetricType::Counter,
            )?;
            for r in AllocResult::ALL {
                let v = self.sum(|s| load(&s.allocations_total[*r as usize]));
                let labels: Labels<1> = [("result", r.label())];
                count(m.encode_family(&labels)?, v)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "tarn_allocation_duration_seconds",
                "How long ended allocations lived",
                None,
                MetricType::Histogram,
            )?;
            // The encoder accumulates: hand it each bucket's own count, and the rest
            // (allocations longer than the last bound) as the +Inf bucket.
            let mut buckets = Vec::with_capacity(DURATION_BUCKETS.len() + 1);
            let mut bucketed = 0u64;
            for (i, upper) in DURATION_BUCKETS.iter().enumerate() {
                let n = self.sum(|s| load(&s.duration_buckets[i]));
                bucketed += n;
                buckets.push((*upper, n));
            }
            let count = self.sum(|s| load(&s.duration_count));
            buckets.push((f64::INFINITY, count.saturating_sub(bucketed)));
            let sum = self.sum(|s| load(&s.duration_sum_millis)) as f64 / 1000.0;
            m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        for (name, help, read) in [
            (
                "tarn_permissions_active",
                "Permissions currently installed",
                (|s: &Stats| load_i(&s.permissions_active)) as fn(&Stats) -> i64,
            ),
            (
                "tarn_channels_active",
                "Channel bindings currently installed",
                |s: &Stats| load_i(&s.channels_active),
            ),
        ] {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            m.encode_gauge(&self.sum_signed(read))?;
        }
        for (name, help, bytes) in [
            (
                "tarn_relayed_bytes",
                "Payload bytes relayed, by direction",
                true,
            ),
            (
                "tarn_relayed_packets",
                "Packets relayed, by direction",
                false,
            ),
        ] {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for d in Direction::ALL {
                let v = self.sum(|s| {
                    load(if bytes {
                        &s.relayed_bytes[*d as usize]
                    } else {
                        &s.relayed_packets[*d as usize]
                    })
                });
                let labels: Labels<1> = [("direction", d.label())];
                count(m.encode_family(&labels)?, v)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "tarn_requests",
                "STUN/TURN requests answered, by method and result class",
                None,
                MetricType::Counter,
            )?;
            for method in MethodLabel::ALL {
                for result in ResultLabel::ALL {
                    let v = self.sum(|s| load(&s.requests[*method as usize][*result as usize]));
                    let labels: Labels<2> =
                        [("method", method.label()), ("result", result.label())];
                    count(m.encode_family(&labels)?, v)?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "tarn_auth_failures",
                "Failed authentications, by reason",
                None,
                MetricType::Counter,
            )?;
            for r in AuthFailure::ALL {
                let v = self.sum(|s| load(&s.auth_failures[*r as usize]));
                let labels: Labels<1> = [("reason", r.label())];
                count(m.encode_family(&labels)?, v)?;
            }
        }
        {
            let m = enc.encode_descriptor(
                "tarn_peer_denied",
                "Peer addresses refused by the relay policy",
                None,
                MetricType::Counter,
            )?;
            count(m, self.sum(|s| load(&s.peer_denied)))?;
        }
        {
            let mut m = enc.encode_descriptor(
                "tarn_quota_rejections",
                "Requests refused by a quota, by kind",
                None,
                MetricType::Counter,
            )?;
            for k in QuotaKind::ALL {
                let v = self.sum(|s| load(&s.quota_rejections[*k as usize]));
                let labels: Labels<1> = [("kind", k.label())];
                count(m.encode_family(&labels)?, v)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "tarn_dropped_packets",
                "Packets and connections dropped without an answer, by reason",
                None,
                MetricType::Counter,
            )?;
            for r in DropReason::ALL {
                let v = self.sum(|s| load(&s.dropped[*r as usize]));
                let labels: Labels<1> = [("reason", r.label())];
                count(m.encode_family(&labels)?, v)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "tarn_build_info",
                "Always 1; carries the version only where the operator enabled it",
                None,
                MetricType::Gauge,
            )?;
            match self.version {
                Some(v) => {
                    let labels: Labels<1> = [("version", v)];
                    m.encode_family(&labels)?.encode_gauge(&1i64)?;
                }
                None => m.encode_gauge(&1i64)?,
            }
        }
        Ok(())
    }
}

/// What the endpoint serves.
#[derive(Debug)]
pub struct Endpoint {
    registry: Registry,
    token: Option<String>,
    health: Arc<Health>,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Endpoint {
    /// An endpoint over the shards' stats.
    pub fn new(
        shards: Vec<Arc<Stats>>,
        show_version: bool,
        token: Option<String>,
        health: Arc<Health>,
    ) -> Arc<Self> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ShardCollector {
            shards,
            version: show_version.then_some(env!("CARGO_PKG_VERSION")),
        }));
        Arc::new(Self {
            registry,
            token,
            health,
        })
    }

    /// The exposition in the classic text format.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, ctype: &str, body: String| {
            Response::builder()
                .status(status)
                .header("content-type", ctype)
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
        };
        if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match req.uri().path() {
            "/healthz" => {
                if self.health.is_draining() {
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "draining\n".into(),
                    )
                } else {
                    reply(StatusCode::OK, "text/plain", "ok\n".into())
                }
            }
            "/metrics" => {
                if let Some(token) = &self.token {
                    let given = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or("");
                    if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
                        return reply(
                            StatusCode::UNAUTHORIZED,
                            "text/plain",
                            "unauthorized\n".into(),
                        );
                    }
                }
                let wants_openmetrics = req
                    .headers()
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("application/openmetrics-text"));
                if wants_openmetrics {
                    let mut out = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
                    reply(StatusCode::OK, OPENMETRICS, out)
                } else {
                    reply(
                        StatusCode::OK,
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                        self.render_text(),
                    )
                }
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }
}

/// Serves the endpoint on an already bound listener until the task is dropped.
pub async fn serve(listener: std::net::TcpListener, endpoint: Arc<Endpoint>) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let endpoint = Arc::clone(&endpoint);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = endpoint.respond(&req);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), conn).await;
        });
    }
}

/// Binds the metrics listener (before start-up completes, so errors surface early).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line<'a>(text: &'a str, series: &str) -> &'a str {
        text.lines()
            .find_map(|l| l.strip_prefix(series).map(str::trim))
            .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    }

    #[test]
    fn histogram_buckets_are_cumulative_once() {
        let a = Arc::new(Stats::default());
        let b = Arc::new(Stats::default());
        a.allocation_lived(Duration::from_secs(5));
        b.allocation_lived(Duration::from_secs(100));
        b.allocation_lived(Duration::from_secs(200_000));
        let text = Endpoint::new(vec![a, b], false, None, Arc::default()).render_text();
        let bucket = |le: &str| {
            line(
                &text,
                &format!("tarn_allocation_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("10"), "1");
        assert_eq!(bucket("60"), "1");
        assert_eq!(bucket("300"), "2");
        assert_eq!(bucket("86400"), "2");
        assert_eq!(bucket("+Inf"), "3");
        assert_eq!(line(&text, "tarn_allocation_duration_seconds_count"), "3");
        assert_eq!(text.matches("le=\"+Inf\"").count(), 1);
    }

    #[test]
    fn version_only_when_enabled_and_no_free_text_labels() {
        let text = Endpoint::new(vec![Arc::default()], false, None, Arc::default()).render_text();
        assert!(text.contains("tarn_build_info 1"));
        assert!(!text.contains(env!("CARGO_PKG_VERSION")));
        let text = Endpoint::new(vec![Arc::default()], true, None, Arc::default()).render_text();
        assert!(text.contains(&format!(
            "tarn_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }
}
