//! Metrics, traces and logs for Sigil's agent and collector, through OpenTelemetry.
//!
//! Traces: `tracing` spans (ingest batches, correlation runs, queries, token issuance)
//! become OTel spans through [`Telemetry::tracing_layer`], exported over OTLP/HTTP when an
//! endpoint is configured. Logs: records worth keeping in any OTel backend (attributed
//! cloud actions) are emitted with [`Telemetry::log`].
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
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    logger: Option<opentelemetry_sdk::logs::SdkLoggerProvider>,
    service: &'static str,
}

impl Telemetry {
    pub fn new(service: &'static str, node: &str, cfg: &TelemetryConfig) -> Result<Self> {
        let registry = Registry::new();
        // Standard process metrics (CPU seconds, resident memory) for the health dashboard.
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).context("registering process metrics")?;
        let prom =
            opentelemetry_prometheus::exporter().with_registry(registry.clone()).without_target_info().build().context("building the Prometheus exporter")?;
        let resource = Resource::builder().with_service_name(service).with_attributes([KeyValue::new("host.name", node.to_owned())]).build();
        let mut builder = SdkMeterProvider::builder().with_resource(resource.clone()).with_reader(prom);
        if let Some(url) = &cfg.otlp_endpoint {
            let exporter = MetricExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/metrics", url.trim_end_matches('/')))
                .build()
                .context("building the OTLP metrics exporter")?;
            let interval = if cfg.export_interval.is_zero() { Duration::from_secs(30) } else { cfg.export_interval };
            builder = builder.with_reader(PeriodicReader::builder(exporter).with_interval(interval).build());
        }
        let (mut tracer, mut logger) = (None, None);
        if let Some(url) = &cfg.otlp_endpoint {
            let base = url.trim_end_matches('/');
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/traces"))
                .build()
                .context("building the OTLP span exporter")?;
            tracer = Some(opentelemetry_sdk::trace::SdkTracerProvider::builder().with_resource(resource.clone()).with_batch_exporter(spans).build());
            let logs = opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/logs"))
                .build()
                .context("building the OTLP log exporter")?;
            logger = Some(opentelemetry_sdk::logs::SdkLoggerProvider::builder().with_resource(resource.clone()).with_batch_exporter(logs).build());
        }
        Ok(Self { provider: builder.build(), registry, tracer, logger, service })
    }

    /// A `tracing` layer that turns spans into OTel spans (None without an OTLP endpoint).
    pub fn tracing_layer<S>(&self) -> Option<impl tracing_subscriber::Layer<S> + use<S>>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use opentelemetry::trace::TracerProvider as _;
        self.tracer.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(self.service)))
    }

    /// Emits an OTLP log record: a message and flat string attributes (never secrets).
    pub fn log(&self, message: &str, attributes: &[(&'static str, String)]) {
        use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
        let Some(p) = &self.logger else { return };
        let logger = p.logger(self.service);
        let mut r = logger.create_log_record();
        r.set_severity_number(Severity::Info);
        r.set_severity_text("INFO");
        r.set_body(AnyValue::String(message.to_owned().into()));
        for (k, v) in attributes {
            r.add_attribute(*k, AnyValue::String(v.clone().into()));
        }
        logger.emit(r);
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
        if let Some(t) = &self.tracer {
            let _ = t.force_flush();
        }
        if let Some(l) = &self.logger {
            let _ = l.force_flush();
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
