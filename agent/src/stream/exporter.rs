//! Agent -> collector: every event is spooled on disk first, then sent in order in
//! batches; a batch is forgotten only once the collector has stored it. While the
//! collector is unreachable the spool absorbs events (bounded; the oldest are dropped and
//! counted when full), and delivery resumes where it stopped.

use std::{
    io,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use prost::Message;
use serde::Serialize;
use sigil_proto::{
    CONTRACT_VERSION, EventBody,
    v1::{Event, PushRequest, ingest_client::IngestClient},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::{info, warn};

use super::spool::{Spool, SpoolStats, Spooled};
use crate::output::Sink;

/// Events per Push.
const BATCH: usize = 500;

#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub url: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub spool_dir: PathBuf,
    pub spool_bytes: u64,
}

#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct ExportStats {
    pub batches_sent: u64,
    pub events_acked: u64,
    pub send_errors: u64,
    /// Events the spool could not take (disk errors): counted, and logged.
    pub spool_errors: u64,
    pub spool: SpoolStats,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    spool_errors: AtomicU64,
}

/// The spool as an output sink, plus what the exporter task needs.
#[derive(Clone)]
pub struct SpoolSink {
    spool: Arc<Mutex<Spool>>,
    wake: Arc<tokio::sync::Notify>,
    counters: Arc<Counters>,
}

impl Sink for SpoolSink {
    /// Spools the typed (protobuf) encoding: the exporter sends it as it is, and the
    /// collector decodes the same types.
    fn emit(&self, event: &EventBody) -> io::Result<()> {
        let kind = event.kind();
        let appended = self.spool.lock().map_err(|_| io::Error::other("spool lock poisoned"))?.append(kind, &event.encode_event());
        if let Err(e) = appended {
            // The agent keeps attesting; the loss is counted in agent_stats and logged.
            self.counters.spool_errors.fetch_add(1, Ordering::Relaxed);
            warn!("could not spool a {kind} event: {e}");
        }
        self.wake.notify_one();
        Ok(())
    }
}

impl SpoolSink {
    pub fn open(cfg: &CollectorConfig) -> Result<Self> {
        let spool = Spool::open(&cfg.spool_dir, cfg.spool_bytes).with_context(|| format!("opening spool {}", cfg.spool_dir.display()))?;
        let depth = spool.stats().depth_events;
        if depth > 0 {
            info!("spool holds {depth} events not yet acknowledged by the collector; they will be sent first");
        }
        Ok(Self { spool: Arc::new(Mutex::new(spool)), wake: Arc::new(tokio::sync::Notify::new()), counters: Arc::default() })
    }

    pub fn stats(&self) -> ExportStats {
        ExportStats {
            batches_sent: self.counters.batches.load(Ordering::Relaxed),
            events_acked: self.counters.acked.load(Ordering::Relaxed),
            send_errors: self.counters.errors.load(Ordering::Relaxed),
            spool_errors: self.counters.spool_errors.load(Ordering::Relaxed),
            spool: self.spool.lock().map(|s| s.stats()).unwrap_or_default(),
        }
    }
}

/// A spooled record as the `Event` it was encoded from, with its id. A record that does
/// not decode (written by a future agent, or damaged past its checksum) still goes out,
/// bodiless, so the collector rejects it by id with a reason instead of it vanishing here.
fn to_event(s: Spooled) -> Event {
    let event = Event::decode(s.payload.as_slice()).unwrap_or_else(|e| {
        warn!("spooled event {} ({}) does not decode: {e}", s.id, s.kind);
        Event::default()
    });
    Event { id: s.id, kind: s.kind, ..event }
}

pub fn is_loopback(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or(url).split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_matches(['[', ']']);
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The collector replicas `--collector` names: one URL, or several separated by commas
/// (replicas sharing one PostgreSQL store).
pub fn urls(spec: &str) -> impl Iterator<Item = &str> {
    spec.split(',').map(str::trim).filter(|u| !u.is_empty())
}

/// Identity events leave the node only encrypted, unless the collector is on loopback.
pub fn check_transport(spec: &str) -> Result<()> {
    for url in urls(spec) {
        if !url.starts_with("https://") && !is_loopback(url) {
            bail!("refusing to send identity events in plaintext to {url} (not loopback): use https:// with --collector-ca");
        }
    }
    Ok(())
}

/// Validates the configuration and builds a lazily connecting channel per replica.
pub fn channel(cfg: &CollectorConfig) -> Result<Vec<Channel>> {
    check_transport(&cfg.url)?;
    let channels = urls(&cfg.url).map(|url| replica(cfg, url)).collect::<Result<Vec<_>>>()?;
    if channels.is_empty() {
        bail!("no collector URL in {:?}", cfg.url);
    }
    Ok(channels)
}

fn replica(cfg: &CollectorConfig, url: &str) -> Result<Channel> {
    let tls = url.starts_with("https://");
    let mut ep = Endpoint::from_shared(url.to_owned()).context("collector URL")?.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(30));
    if tls {
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let mut t = ClientTlsConfig::new();
        if let Some(ca) = &cfg.ca {
            t = t.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) {
            t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        ep = ep.tls_config(t).context("collector TLS configuration")?;
    }
    Ok(ep.connect_lazy())
}

/// Sends spooled events until `stop` is set. Never gives up: the spool is the buffer.
/// With several replicas it stays on one until a push to it fails, then moves to the
/// next; a batch whose answer was lost may reach two replicas, which store it once.
pub async fn run(sink: SpoolSink, channels: Vec<Channel>, node: String, stop: Arc<AtomicBool>) {
    let mut clients: Vec<IngestClient<Channel>> = channels.into_iter().map(IngestClient::new).collect();
    let mut current = 0;
    let mut backoff = Duration::from_millis(200);
    let mut reported_down = false;
    while !stop.load(Ordering::Relaxed) {
        let batch = match sink.spool.lock().map_err(|_| "spool lock poisoned".to_owned()).and_then(|mut s| s.peek(BATCH).map_err(|e| e.to_string())) {
            Ok(b) => b,
            Err(e) => {
                warn!("reading the spool: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(last) = batch.last().map(|e| e.seq) else {
            let _ = tokio::time::timeout(Duration::from_millis(500), sink.wake.notified()).await;
            continue;
        };
        let n = batch.len() as u64;
        let req = PushRequest { node: node.clone(), events: batch.into_iter().map(to_event).collect(), contract_version: CONTRACT_VERSION };
        let Some(client) = clients.get_mut(current) else { return };
        match client.push(req).await {
            Ok(resp) => {
                let r = resp.into_inner();
                if r.rejected > 0 {
                    // Rejected events are malformed and would be rejected forever: they are
                    // acknowledged (not retried) but never silently: counted and logged.
                    warn!("collector rejected {} events: {}", r.rejected, r.errors.join("; "));
                }
                if let Err(e) = sink.spool.lock().map_err(|_| "spool lock poisoned".to_owned()).and_then(|mut s| s.ack(last).map_err(|e| e.to_string())) {
                    warn!("acknowledging spooled events: {e}");
                }
                sink.counters.batches.fetch_add(1, Ordering::Relaxed);
                sink.counters.acked.fetch_add(n, Ordering::Relaxed);
                if reported_down {
                    info!("collector reachable again; delivering spooled events");
                    reported_down = false;
                }
                backoff = Duration::from_millis(200);
            }
            Err(status) => {
                sink.counters.errors.fetch_add(1, Ordering::Relaxed);
                current = (current + 1) % clients.len();
                if !reported_down {
                    warn!("collector unreachable ({}); spooling events until it is back", status.message());
                    reported_down = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_to_loopback() {
        for (url, ok) in [
            ("http://127.0.0.1:50051", true),
            ("http://localhost:50051", true),
            ("http://[::1]:50051", true),
            ("http://10.0.0.5:50051", false),
            ("http://collector.sigil-system:50051", false),
        ] {
            assert_eq!(is_loopback(url), ok, "{url}");
        }
    }
}
