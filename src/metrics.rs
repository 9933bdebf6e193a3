//! Prometheus metrics (`metricsPort`, off by default): the worker's counters in the text
//! exposition format on `GET /metrics`, served on `metricsHost` (loopback by default).
//! prometheus-client encodes them; the values are read from [`Stats`] at scrape time, so the
//! job path pays nothing for them beyond the counters it already keeps.

use crate::error::{ErrorCode, PierError, RequestOp};
use crate::log::{Level, SharedLogger};
use crate::stats::Stats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The worker's connection state as status reports it (`connected`, `connecting`, ...).
pub type StateFn = Box<dyn Fn() -> &'static str + Send + Sync>;

const STATES: [&str; 5] = [
    "connecting",
    "connected",
    "disconnected",
    "stopping",
    "stopped",
];

/// Reads everything from the worker's [`Stats`] on each scrape.
struct WorkerCollector {
    stats: Arc<Stats>,
    state: StateFn,
}

impl std::fmt::Debug for WorkerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerCollector")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

impl Collector for WorkerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = self.stats.snapshot();
        let mut jobs = encoder.encode_descriptor(
            "pier_jobs",
            "Jobs by how they ended: completed, failed, rejected (OVERLOADED, SHUTTING_DOWN, PRICE_TOO_LOW, RATE_LIMITED, BUDGET_EXHAUSTED), timed_out, no_reply; code is the task_error code",
            None,
            MetricType::Counter,
        )?;
        let mut rows: Vec<(&str, &str, u64)> =
            vec![("completed", "", s.completed), ("no_reply", "", s.no_reply)];
        for code in ErrorCode::ALL {
            let n = s.errors_by_code.get(code.as_str()).copied().unwrap_or(0);
            rows.push((Stats::bucket_of(code), code.as_str(), n));
        }
        for (outcome, code, n) in rows {
            ConstCounter::new(n)
                .encode(jobs.encode_family(&[("outcome", outcome), ("code", code)])?)?;
        }
        let (sum, count, mut buckets) = self.stats.durations().read();
        // Per-bucket counts (the encoder sums them up); the rest go to `+Inf`.
        let beyond = count.saturating_sub(buckets.iter().map(|(_, n)| n).sum());
        buckets.push((f64::INFINITY, beyond));
        let mut histogram: MetricEncoder = encoder.encode_descriptor(
            "pier_job_duration_seconds",
            "Time from receipt to answer of each job that ran",
            None,
            MetricType::Histogram,
        )?;
        histogram.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        ConstGauge::new(s.in_flight as i64).encode(encoder.encode_descriptor(
            "pier_jobs_in_flight",
            "Jobs running now",
            None,
            MetricType::Gauge,
        )?)?;
        let now = (self.state)();
        let mut state = encoder.encode_descriptor(
            "pier_connection_state",
            "1 for the worker's current connection state, 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for name in STATES {
            ConstGauge::new(i64::from(name == now))
                .encode(state.encode_family(&[("state", name)])?)?;
        }
        counter(
            &mut encoder,
            "pier_reconnects",
            "Reconnections to NATS",
            s.reconnects,
        )?;
        counter(
            &mut encoder,
            "pier_disconnects",
            "Lost NATS connections",
            s.disconnects,
        )?;
        counter(
            &mut encoder,
            "pier_reply_failures",
            "Replies the connection refused to send",
            s.reply_failures,
        )?;
        counter(
            &mut encoder,
            "pier_passed_on",
            "JetStream jobs refused for this worker's own reason and given back for another worker",
            s.passed_on,
        )?;
        ConstCounter::new(s.earned).encode(encoder.encode_descriptor(
            "pier_earned",
            "Sum of meta.price of completed jobs, in the marketplace's price unit",
            None,
            MetricType::Counter,
        )?)?;
        // Direction only: a label per sender or job would grow without bound.
        let mut tokens = encoder.encode_descriptor(
            "pier_job_tokens",
            "Tokens job turns used, as the agent host reported them: input (not from a cache), output, cache_read, cache_write",
            None,
            MetricType::Counter,
        )?;
        for (direction, n) in [
            ("input", s.tokens_in),
            ("output", s.tokens_out),
            ("cache_read", s.cache_read_tokens),
            ("cache_write", s.cache_write_tokens),
        ] {
            ConstCounter::new(n).encode(tokens.encode_family(&[("direction", direction)])?)?;
        }
        ConstCounter::new(s.spent).encode(encoder.encode_descriptor(
            "pier_job_cost",
            "What job turns cost, in the unit of the models' cost config (OpenClaw: its per-million-token prices, usually USD)",
            None,
            MetricType::Counter,
        )?)
    }
}

/// The running `/metrics` endpoint; stops when dropped or `stop`ped.
pub struct MetricsServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `host:port` and serves until stopped.
    pub async fn start(
        host: &str,
        port: u16,
        stats: Arc<Stats>,
        state: StateFn,
        logger: SharedLogger,
    ) -> Result<MetricsServer, PierError> {
        let listener = TcpListener::bind((host, port))
            .await
            .map_err(|e| PierError::request(RequestOp::Metrics, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| PierError::request(RequestOp::Metrics, e))?;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(WorkerCollector { stats, state }));
        let registry = Arc::new(registry);
        let stop = CancellationToken::new();
        let token = stop.clone();
        logger.log(
            Level::Info,
            &format!("[pier-connector] metrics on http://{addr}/metrics"),
        );
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    accepted = listener.accept() => if let Ok((stream, _)) = accepted {
                        tokio::spawn(answer(stream, registry.clone()));
                    },
                }
            }
        });
        Ok(MetricsServer { addr, stop, task })
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// One HTTP/1.1 exchange: `GET /metrics` gets the exposition, anything else 404; then close.
async fn answer(mut stream: TcpStream, registry: Arc<Registry>) {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        true
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(5), read_head).await,
        Ok(true)
    ) {
        return;
    }
    let wanted = head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?");
    let (status, kind, body) = if wanted {
        let mut body = String::new();
        match prometheus_client::encoding::text::encode(&mut body, &registry) {
            Ok(()) => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            Err(_) => ("500 Internal Server Error", "text/plain", String::new()),
        }
    } else {
        ("404 Not Found", "text/plain", "not found\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
