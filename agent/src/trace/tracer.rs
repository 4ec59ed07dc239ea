//! Kernel captures -> credential-use events.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use agent_common::{ConnectEvent, DATA_CAPTURE, DataEvent, DataSource, EventHeader, FileOpenEvent, OPEN_BY_IDENTITY, OPEN_BY_NAME_IO_URING};
use sigil_proto::{EventBody, json, v1};
use tracing::{debug, warn};

use super::{
    aggregate::Aggregator,
    body::{Exchange, detect_body, header_exchange, token_endpoint},
    conn::ConnTable,
    detect::{Credential, detect},
    events::{CredentialFileRead, CredentialUse, Destination, set_class},
    files,
    fingerprint::Fingerprinter,
    http::{Request, may_start_requests},
    libs::LibraryWatcher,
    obtained::{Expected, ResponseTracker},
    scrub::event_path,
    streams::{StreamKey, StreamTable},
    uncovered::{UncoveredClient, UncoveredWatcher},
};
use crate::{
    attest::{
        Attestor,
        clock::Clock,
        record::{ProcessRecord, ProcessRef},
    },
    ebpf::{decode::c_str, loader::Probes},
};

/// HTTP streams remembered at most (one per connection and direction).
const STREAMS: usize = 16_384;

#[derive(Debug, Default, Clone)]
pub struct TraceStats {
    pub captures: u64,
    pub captured_bytes: u64,
    pub requests: u64,
    pub credential_uses: u64,
    pub credential_file_reads: u64,
    /// Plain sockets whose first bytes were not HTTP; the kernel stopped copying them.
    pub plain_sockets_ignored: u64,
    /// TLS connections whose writes are not requests (server side); no longer copied.
    pub tls_connections_ignored: u64,
    pub tls_libraries_attached: usize,
    /// Credential uses by (class, detector): small fixed vocabularies, safe as labels.
    /// Sent as a list (JSON object keys cannot be pairs).
    pub uses_by_class_detector: std::collections::BTreeMap<(String, String), u64>,
    pub file_reads_by_kind: std::collections::BTreeMap<String, u64>,
    /// Distinct long-lived credentials seen in use since start.
    pub long_lived_credentials: usize,
    /// Credentials seen used by more than one workload run.
    pub shared_credentials: usize,
    /// Executables that ran but whose TLS Sigil cannot see (Go, rustls, Java).
    pub uncovered: Vec<UncoveredClient>,
    /// Execs not checked for the above because the inspector was behind.
    pub uncovered_unchecked: u64,
    /// Credentials read from exchange responses (`credential_obtained` events).
    pub credentials_obtained: u64,
    /// Exchange responses that yielded none (error status, cut, unknown shape).
    pub responses_unread: u64,
}

impl From<&TraceStats> for v1::TraceStats {
    fn from(t: &TraceStats) -> Self {
        Self {
            captures: t.captures,
            captured_bytes: t.captured_bytes,
            requests: t.requests,
            credential_uses: t.credential_uses,
            credential_file_reads: t.credential_file_reads,
            plain_sockets_ignored: t.plain_sockets_ignored,
            tls_connections_ignored: t.tls_connections_ignored,
            tls_libraries_attached: t.tls_libraries_attached as u64,
            uses_by_class_detector: t
                .uses_by_class_detector
                .iter()
                .map(|((class, detector), count)| v1::ClassDetectorCount { class: class.clone(), detector: detector.clone(), count: *count })
                .collect(),
            file_reads_by_kind: t.file_reads_by_kind.clone(),
            long_lived_credentials: t.long_lived_credentials as u64,
            shared_credentials: t.shared_credentials as u64,
            uncovered: t
                .uncovered
                .iter()
                .map(|u| v1::UncoveredClient { client: u.client.as_str().into(), binary: u.binary.clone(), execs: u.execs, reason: u.reason.clone() })
                .collect(),
            uncovered_unchecked: t.uncovered_unchecked,
            credentials_obtained: t.credentials_obtained,
            responses_unread: t.responses_unread,
        }
    }
}

/// Fingerprints remembered for the long-lived/shared gauges (bounded memory).
const TRACKED_FINGERPRINTS: usize = 100_000;

/// The workload run of a process, as the collector names it (container, pod, unit, cgroup).
fn run_key(p: &ProcessRecord) -> String {
    let w = &p.workload;
    w.container_id.clone().or_else(|| w.pod_uid.clone()).or_else(|| w.unit.clone()).or_else(|| p.cgroup.path.clone()).unwrap_or_default()
}

/// A metric label from an enum's JSON name.
fn label(name: Option<String>) -> String {
    name.unwrap_or_else(|| "unknown".into())
}

pub struct Tracer {
    node: String,
    fingerprinter: Fingerprinter,
    sigil_issuers: Vec<String>,
    clock: Clock,
    conns: ConnTable,
    streams: StreamTable,
    pub libs: LibraryWatcher,
    uncovered: UncoveredWatcher,
    stats: TraceStats,
    /// Fingerprint -> workload runs that used it (static credentials only).
    static_runs: HashMap<String, std::collections::HashSet<String>>,
    aggregator: Aggregator,
    responses: ResponseTracker,
    known_files: files::KnownFiles,
}

/// The record of the process that `pid` named when it wrote at `boot_ns`.
///
/// The table's record alone is not enough: the writer may have exited and its pid been
/// reused before its events are handled (or its exit event lost), and the Workload API
/// may already have attested the pid's next owner. So the record must have started before
/// the write, and when the process now at `pid` also did, it is the writer and its record
/// must be that process's. When the writer has exited, an earlier record is the best
/// evidence there is (a writer that lived and died between two of our looks, with no exec
/// event, cannot be told apart from its predecessor).
///
/// The kernel names the writer exactly in the event (`header.start_ns`, its start time):
/// a record with that start time is the writer's, and no procfs read is needed. That is
/// the hot path of a keep-alive client; everything else takes the checks above.
pub fn process_at(attestor: &Attestor, clock: &Clock, header: &EventHeader) -> Option<Arc<ProcessRecord>> {
    let (pid, boot_ns) = (header.pid, header.boot_ns);
    let started_by = |ticks: u64| clock.ticks_to_boot_ns(ticks) <= boot_ns.saturating_add(clock.tick_ns());
    let recorded = attestor.settled(pid).filter(|r| started_by(r.start_ticks));
    if header.start_ns != 0
        && let Some(r) = recorded.as_ref().filter(|r| r.start_ticks == clock.boot_ns_to_ticks(header.start_ns))
    {
        return Some(r.clone());
    }
    let running_since = procfs::process::Process::new(pid as i32).ok().and_then(|p| crate::attest::procstat::read(&p).ok()).map(|s| s.starttime);
    match running_since {
        Some(ticks) if started_by(ticks) => match recorded {
            Some(r) if r.start_ticks == ticks => Some(r),
            _ => attestor.attest_running(pid).map(|(r, _)| r).filter(|r| r.start_ticks == ticks),
        },
        _ => recorded,
    }
}

fn tls_library(source: DataSource) -> Option<String> {
    match source {
        DataSource::OpenSsl | DataSource::OpenSslRead => Some("openssl".into()),
        DataSource::GnuTls | DataSource::GnuTlsRead => Some("gnutls".into()),
        DataSource::GoTls => Some("go_crypto_tls".into()),
        DataSource::PlainSocket => None,
    }
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Tracer {
    pub fn new(node: String, fingerprinter: Fingerprinter, sigil_issuers: Vec<String>) -> Self {
        // Compile the family catalogue now, not on the first request: compiling it takes
        // long enough that short-lived processes would exit before they are attested.
        let families = super::catalogue::catalogue().families().len();
        tracing::info!("credential family catalogue: {families} families");
        Self {
            node,
            fingerprinter,
            sigil_issuers,
            clock: Clock::new(),
            conns: ConnTable::default(),
            streams: StreamTable::new(STREAMS),
            libs: LibraryWatcher::default(),
            uncovered: UncoveredWatcher::default(),
            stats: TraceStats::default(),
            static_runs: HashMap::new(),
            aggregator: Aggregator::default(),
            responses: ResponseTracker::default(),
            known_files: files::KnownFiles::default(),
        }
    }

    pub fn stats(&self) -> TraceStats {
        TraceStats {
            tls_libraries_attached: self.libs.attached_count(),
            long_lived_credentials: self.static_runs.len(),
            shared_credentials: self.static_runs.values().filter(|runs| runs.len() > 1).count(),
            uncovered: self.uncovered.clients(),
            uncovered_unchecked: self.uncovered.unchecked(),
            ..self.stats.clone()
        }
    }

    /// A process was exec'd: hook the TLS library compiled into its executable, if any;
    /// note it if its TLS is out of Sigil's sight.
    pub fn on_exec(&mut self, rec: &ProcessRecord, probes: &mut Probes) {
        self.libs.on_exec(probes, rec);
        self.uncovered.on_exec(rec);
    }

    /// True when nothing about this exec's executable needs the live process (no TLS of
    /// its own to attach, no Go or blind-spot client to inspect): its later execs may wait
    /// for the next poll tick.
    pub fn settled_executable(&self, rec: &ProcessRecord) -> bool {
        rec.kernel_exe.map(|k| k.version()).is_some_and(|v| self.libs.is_plain(&v) && self.uncovered.is_plain(&v))
    }

    /// Hooks the Go binaries the exec inspector found since the last call; one that cannot
    /// be hooked is reported as uncovered, with the reason.
    pub fn attach_go_binaries(&mut self, probes: &mut Probes) {
        for go in self.uncovered.go_binaries() {
            if let Err(e) = self.libs.attach_go(probes, &go) {
                warn!("cannot attach Go TLS capture to {}: {e}", go.binary);
                self.uncovered.hook_failed(go.binary, &e.to_string());
            }
        }
    }

    fn count_use(&mut self, used: &CredentialUse, process: Option<&ProcessRecord>) {
        let key = (label(json::credential_class::name(used.class)), label(json::detector::name(used.detector)));
        *self.stats.uses_by_class_detector.entry(key).or_default() += 1;
        if used.class == v1::CredentialClass::Static as i32 {
            let known = self.static_runs.contains_key(&used.fingerprint);
            if known || self.static_runs.len() < TRACKED_FINGERPRINTS {
                let runs = self.static_runs.entry(used.fingerprint.clone()).or_default();
                if let Some(p) = process
                    && runs.len() < 64
                {
                    runs.insert(run_key(p));
                }
            }
        }
    }

    pub fn on_connect(&mut self, ev: &ConnectEvent) {
        self.conns.on_connect(ev);
        // The fd now names a new connection: forget streams of the old one on it.
        self.streams.forget_fd(ev.header.pid, ev.fd);
    }

    /// A capture of bytes written (requests) or read (responses to exchanges).
    pub fn on_data(&mut self, ev: &DataEvent, attestor: &Attestor, probes: &mut Probes) -> Vec<EventBody> {
        let Some(source) = DataSource::from_u32(ev.source) else { return Vec::new() };
        if source.is_read() {
            return self.on_response(ev, source, attestor, probes).map(EventBody::CredentialObtained).into_iter().collect();
        }
        self.on_request(ev, source, attestor, probes).into_iter().map(EventBody::CredentialUse).collect()
    }

    fn on_request(&mut self, ev: &DataEvent, source: DataSource, attestor: &Attestor, probes: &mut Probes) -> Vec<CredentialUse> {
        let captured = &ev.data[..(ev.captured as usize).min(DATA_CAPTURE)];
        let true_len = usize::try_from(ev.len).unwrap_or(usize::MAX).max(captured.len());
        self.stats.captures += 1;
        self.stats.captured_bytes += captured.len() as u64;
        let tgid = ev.header.pid;
        let key = StreamKey { tgid, fd: ev.fd, conn: ev.conn };

        if !self.streams.contains(&key) && !may_start_requests(captured) {
            // Not a client's requests (TLS handshakes, database protocols, a server's
            // responses): have the kernel stop copying this connection.
            let stopped = if source == DataSource::PlainSocket {
                self.stats.plain_sockets_ignored += 1;
                probes.stop_plain_capture(tgid, ev.fd)
            } else if ev.fd >= 0 {
                self.stats.tls_connections_ignored += 1;
                probes.skip_tls(tgid, ev.fd, ev.conn)
            } else {
                Ok(())
            };
            if let Err(e) = stopped {
                warn!("could not stop capturing a connection that is not HTTP requests: {e}");
            }
            return Vec::new();
        }
        let stream = self.streams.get_or_insert(key);
        let (requests, bodies) = stream.feed_with_bodies(captured, true_len);
        let holding = stream.holding_body();
        if requests.is_empty() && bodies.is_empty() {
            return Vec::new();
        }
        self.stats.requests += requests.len() as u64;

        let now = now_unix();
        let process = process_at(attestor, &self.clock, &ev.header);
        let dest = self.conns.destination(tgid, ev.fd);
        let mut out = Vec::new();
        let issuers = &self.sigil_issuers;
        let last_head = requests.len().checked_sub(1);
        let in_headers = requests.iter().enumerate().map(|(i, r)| {
            // A head whose body is kept (still arriving, or complete in this write) is
            // decided with its body.
            let undecided = (holding && Some(i) == last_head) || bodies.iter().any(|(b, _)| b == r);
            (r, !undecided, detect(r, now, issuers).into_iter().map(|c| (c, header_exchange(r))).collect())
        });
        let in_bodies = bodies.iter().map(|(r, b)| (r, true, detect_body(r, b, now, issuers).into_iter().map(|(c, e)| (c, Some(e))).collect()));
        let found: Vec<(&Request, bool, Vec<_>)> = in_headers.chain(in_bodies).collect();
        for (req, decided, creds) in found {
            if source != DataSource::PlainSocket && decided && req.method.eq_ignore_ascii_case("POST") {
                self.decide_response(tgid, ev.conn, req, &creds, probes);
            }
            let path = event_path(&req.path, creds.iter().map(|(c, _)| c));
            for (cred, exchange) in creds {
                let mut used = CredentialUse {
                    time: self.clock.rfc3339(ev.header.boot_ns),
                    node: self.node.clone(),
                    pid: tgid,
                    process: process.as_deref().map(ProcessRef::from),
                    destination: Some(Destination {
                        ip: dest.map(|d| d.ip().to_string()),
                        port: dest.map(|d| u32::from(d.port())),
                        host: req.authority.clone(),
                    }),
                    transport: if source == DataSource::PlainSocket { "plain" } else { "tls" }.into(),
                    tls_library: tls_library(source),
                    protocol: v1::Protocol::from(req.protocol) as i32,
                    method: req.method.clone(),
                    path: path.clone(),
                    detector: v1::Detector::from(cred.detector) as i32,
                    fingerprint: self.fingerprinter.fingerprint(&cred.secret),
                    identifiers: Some(cred.identifiers.into()),
                    exchange: exchange.map(Into::into),
                    ..Default::default()
                };
                set_class(&mut used, &cred.class);
                out.push(used);
            }
        }
        self.stats.credential_uses += out.len() as u64;
        for used in &out {
            self.count_use(used, process.as_deref());
        }
        let now = Instant::now();
        out.into_iter().filter_map(|u| self.aggregator.observe(u, now)).collect()
    }

    /// A POST went out on a TLS connection (the kernel armed a response budget for it):
    /// keep the budget for a credential exchange, withdraw it for anything else.
    fn decide_response(&mut self, tgid: u32, conn: u64, req: &Request, creds: &[(Credential, Option<Exchange>)], probes: &mut Probes) {
        let presented = creds.iter().find(|(_, e)| e.is_some());
        let kind = presented
            .and_then(|(_, e)| e.as_ref().map(|e| e.kind.to_owned()))
            .or_else(|| header_exchange(req).map(|e| e.kind.to_owned()))
            .or_else(|| token_endpoint(req).then(|| "token_endpoint".to_owned()));
        match kind {
            Some(exchange_kind) => {
                let ids = presented.map(|(c, _)| &c.identifiers);
                self.responses.expect(
                    tgid,
                    conn,
                    Expected {
                        exchange_kind,
                        host: req.authority.clone(),
                        presented_jti: ids.and_then(|i| i.jwt_jti.clone()),
                        presented_iss: ids.and_then(|i| i.jwt_iss.clone()),
                        presented_sub: ids.and_then(|i| i.jwt_sub.clone()),
                        presented_fingerprint: presented.map(|(c, _)| self.fingerprinter.fingerprint(&c.secret)),
                    },
                );
            }
            None if !self.responses.expects(tgid, conn) => self.stop_responses(tgid, conn, probes),
            None => {}
        }
    }

    fn stop_responses(&mut self, tgid: u32, conn: u64, probes: &mut Probes) {
        if let Err(e) = probes.stop_response_capture(tgid, conn) {
            warn!("could not stop reading responses on a connection: {e}");
        }
    }

    /// Bytes a client read on a TLS connection after a POST.
    fn on_response(&mut self, ev: &DataEvent, source: DataSource, attestor: &Attestor, probes: &mut Probes) -> Option<v1::CredentialObtained> {
        let captured = &ev.data[..(ev.captured as usize).min(DATA_CAPTURE)];
        let true_len = usize::try_from(ev.len).unwrap_or(usize::MAX).max(captured.len());
        let tgid = ev.header.pid;
        if !self.responses.expects(tgid, ev.conn) {
            // The POST was no exchange (and its withdrawal raced this read), or the
            // exchange is answered: nothing more to copy on this connection.
            self.stop_responses(tgid, ev.conn, probes);
            return None;
        }
        self.stats.captures += 1;
        self.stats.captured_bytes += captured.len() as u64;
        let (expected, outcome) = self.responses.on_read(tgid, ev.conn, captured, true_len)?;
        if !self.responses.expects(tgid, ev.conn) {
            self.stop_responses(tgid, ev.conn, probes);
        }
        let obtained = match outcome {
            Ok(o) => o,
            Err(e) => {
                self.stats.responses_unread += 1;
                debug!(pid = tgid, exchange = %expected.exchange_kind, "exchange response yielded no credential: {e}");
                return None;
            }
        };
        self.stats.credentials_obtained += 1;
        let process = process_at(attestor, &self.clock, &ev.header);
        let dest = self.conns.destination(tgid, ev.fd);
        let base = v1::CredentialObtained {
            time: self.clock.rfc3339(ev.header.boot_ns),
            node: self.node.clone(),
            pid: tgid,
            process: process.as_deref().map(ProcessRef::from),
            destination: Some(Destination { ip: dest.map(|d| d.ip().to_string()), port: dest.map(|d| u32::from(d.port())), host: None }),
            tls_library: tls_library(source),
            ..Default::default()
        };
        Some(super::obtained::event(base, expected, obtained, now_unix(), &self.fingerprinter))
    }

    /// Aggregates of repeated uses whose interval has ended (call periodically).
    pub fn due(&mut self) -> Vec<CredentialUse> {
        self.aggregator.due(Instant::now())
    }

    /// Pending aggregates of a process that exited.
    pub fn on_exit(&mut self, pid: u32) -> Vec<CredentialUse> {
        self.aggregator.exited(pid)
    }

    /// Everything still pending (the agent is stopping).
    pub fn flush(&mut self) -> Vec<CredentialUse> {
        self.uncovered.stop();
        self.aggregator.flush()
    }

    /// Credential files found at start, so opens of them by any name are matched.
    pub fn learn_files(&mut self, found: Vec<(files::FileId, String, files::FileKind)>) {
        for (id, path, kind) in found {
            self.known_files.learn(id, path, kind);
        }
    }

    pub fn on_file_open(&mut self, ev: &FileOpenEvent, attestor: &Attestor) -> Option<CredentialFileRead> {
        let id = (ev.dev, ev.ino);
        let (path, file_kind, access) = if ev.matched == OPEN_BY_IDENTITY {
            // Opened by another name (a link, a relative or oddly spelled path): the file
            // is named as the kernel first saw it, by its name, and is what that name is.
            // (The name in use is often gone by now: a short-lived reader has closed it.)
            let (path, kind) = self.known_files.get(&id)?.clone();
            (path, kind, files::access_of(ev.flags))
        } else {
            let len = usize::from(ev.filename_len).min(ev.filename.len());
            let path = c_str(&ev.filename[..len]);
            let kind = files::classify(&path)?;
            if ev.ret >= 0 && id != (0, 0) {
                self.known_files.learn(id, path.clone(), kind);
            }
            (path, kind, files::access_of(ev.flags))
        };
        self.stats.credential_file_reads += 1;
        *self.stats.file_reads_by_kind.entry(label(json::file_kind::name(v1::FileKind::from(file_kind) as i32))).or_default() += 1;
        let process = process_at(attestor, &self.clock, &ev.header);
        Some(CredentialFileRead {
            time: self.clock.rfc3339(ev.header.boot_ns),
            node: self.node.clone(),
            pid: ev.header.pid,
            process: process.as_deref().map(ProcessRef::from),
            path,
            file_kind: v1::FileKind::from(file_kind) as i32,
            access: access.into(),
            via: if ev.matched == OPEN_BY_NAME_IO_URING { "io_uring".into() } else { String::new() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_serialize_with_their_breakdowns() {
        let mut st = TraceStats::default();
        st.uses_by_class_detector.insert(("static".into(), "aws_sigv4".into()), 2);
        st.file_reads_by_kind.insert("ssh_private_key".into(), 1);
        let v = serde_json::to_value(v1::TraceStats::from(&st)).expect("serializes");
        assert_eq!(v["uses_by_class_detector"][0]["class"], "static");
        assert_eq!(v["uses_by_class_detector"][0]["count"], 2);
        assert_eq!(v["file_reads_by_kind"]["ssh_private_key"], 1);
    }
}
