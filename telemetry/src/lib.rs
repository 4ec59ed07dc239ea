//! Metrics for Sigil's agent and collector, through OpenTelemetry.
//!
//! One meter provider, two readers: a Prometheus registry served at `/metrics` (so a
//! Prometheus server can scrape every agent), and, when an endpoint is configured, an
//! OTLP/HTTP exporter pushing to any OpenTelemetry collector. Instrument names follow the
//! OTel conventions (`sigil.agent.tokens.issued`); the Prometheus side renders them in
//! Prometheus form (`sigil_agent_tokens_issued_total`). No instrument may carry a secret,
//! a fingerprint or an unbounded label (pids, jtis): labels are small fixed vocabularies.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use opentelemetry::{KeyValue, metrics::Meter};
use opentelemetry_otlp::{MetricExporter, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    metrics::{PeriodicReader, SdkMeterProvider},
};
use prometheus::{Encoder, Registry, TextEncoder};
use tracing::warn;

/// Where metrics go.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL (e.g. http://otel-collector:4318); metrics go to `<url>/v1/metrics`.
    pub otlp_endpoint: Option<String>,
    pub export_interval: Duration,
}

pub struct Telemetry {
    provider: SdkMeterProvider,
    registry: Registry,
}

impl Telemetry {
    pub fn new(service: &'static str, node: &str, cfg: &TelemetryConfig) -> Result<Self> {
        let registry = Registry::new();
        // Standard process metrics (CPU seconds, resident memory) for the health dashboard.
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .context("registering process metrics")?;
        let prom = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .build()
            .context("building the Prometheus exporter")?;
        let resource = Resource::builder()
            .with_service_name(service)
            .with_attributes([KeyValue::new("host.name", node.to_owned())])
            .build();
        let mut builder = SdkMeterProvider::builder().with_resource(resource).with_reader(prom);
        if let Some(url) = &cfg.otlp_endpoint {
            let exporter = MetricExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/metrics", url.trim_end_matches('/')))
                .build()
                .context("building the OTLP metrics exporter")?;
            let interval = if cfg.export_interval.is_zero() { Duration::from_secs(30) } else { cfg.export_interval };
            builder = builder.with_reader(PeriodicReader::builder(exporter).with_interval(interval).build());
        }
        Ok(Self { provider: builder.build(), registry })
    }

    pub fn meter(&self, name: &'static str) -> Meter {
        opentelemetry::metrics::MeterProvider::meter(&self.provider, name)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            warn!("encoding metrics: {e}");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Pushes what is pending to OTLP (at shutdown, so the last interval is not lost).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            warn!("flushing metrics: {e}");
        }
    }
}

async fn metrics(State(t): State<std::sync::Arc<Telemetry>>) -> impl IntoResponse {
    let t2 = t.clone();
    let body = tokio::task::spawn_blocking(move || t2.render()).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Binds `/metrics` (synchronously, so a busy port fails start-up). Call inside a runtime.
pub fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener> {
    let std = std::net::TcpListener::bind(listen).with_context(|| format!("binding metrics on {listen}"))?;
    std.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(std)?)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    t: std::sync::Arc<Telemetry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = Router::new().route("/metrics", get(metrics)).with_state(t);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("metrics server")
}
