//! Clients whose credentials Sigil cannot see, reported when they run; and Go clients,
//! which it can once their binary is hooked.
//!
//! Credential tracing reads plaintext at the TLS library boundary (OpenSSL, GnuTLS) or
//! on plain sockets. A program that carries its own TLS stack never crosses that
//! boundary: Go's crypto/tls, Rust's rustls, Java's JSSE. The tracer recognises such
//! executables when they are exec'd. A Go binary whose `crypto/tls.(*Conn).Write` is
//! found in its `.gopclntab` ([`super::golang`]) is handed back ([`GoBinary`]) for the
//! pipeline to attach a uprobe to; the others (and a Go binary whose function cannot be
//! found or hooked, with the reason) are counted in `agent_stats` under
//! `trace.uncovered`, so a user sees the blind spots on their own nodes (README: "What
//! cannot be seen").

use std::{
    collections::{BTreeMap, HashMap},
    fs::{self, File},
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, SyncSender, sync_channel},
    },
};

use object::{Object, ObjectSection, ObjectSymbol};
use serde::Serialize;
use tracing::{info, warn};

use crate::attest::{hash::FileKey, record::ProcessRecord};

/// Executables larger than this are not inspected (counted as unknown, not guessed).
const MAX_BINARY: u64 = 512 * 1024 * 1024;
/// Distinct executables remembered (classification cache) and reported.
const CACHED: usize = 4096;
const REPORTED: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Blindspot {
    /// Go programs link crypto/tls statically (kubectl, terraform, most cloud-native
    /// services).
    GoCryptoTls,
    /// Rust programs using rustls (statically linked, no library boundary).
    Rustls,
    /// Java encrypts in JSSE, inside the JVM.
    JavaJsse,
}

impl Blindspot {
    /// The name it is reported under (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Blindspot::GoCryptoTls => "go_crypto_tls",
            Blindspot::Rustls => "rustls",
            Blindspot::JavaJsse => "java_jsse",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::GoCryptoTls => "Go links crypto/tls into the binary: no TLS library call to hook",
            Self::Rustls => "rustls is compiled into the binary: no TLS library call to hook",
            Self::JavaJsse => "Java encrypts in JSSE inside the JVM: no native TLS call to hook",
        }
    }
}

/// One executable Sigil cannot see into, as `agent_stats` reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UncoveredClient {
    pub client: Blindspot,
    /// `/proc/<pid>/exe` as the process saw it (its own mount namespace).
    pub binary: String,
    pub execs: u64,
    pub reason: String,
}

/// The Go function whose entry carries the plaintext of every TLS write.
pub const GO_TLS_WRITE: &str = "crypto/tls.(*Conn).Write";

/// A Go binary that was exec'd and can be hooked: the open file (so the probe lands on the
/// inode that was parsed, even if the path is replaced meanwhile) and where to probe it.
#[derive(Debug)]
pub struct GoBinary {
    pub file: File,
    /// (dev, inode) of `file`.
    pub id: (u64, u64),
    /// The path the process ran, for logs and reports.
    pub binary: String,
    /// File offset of the probe point in `crypto/tls.(*Conn).Write`.
    pub offset: u64,
}

/// What an executable is, cached per file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Nothing to report (libssl, GnuTLS, plain sockets, or not inspected).
    Seen,
    /// A Go binary that can be hooked at this file offset.
    Go(u64),
    /// A client Sigil cannot see, and why.
    Blind(Blindspot, String),
}

/// Recognises a client Sigil cannot see from its executable (ELF only). Generic over
/// [`object::ReadRef`] so a file is read on demand (section headers, `.dynstr`,
/// `.rodata`), never whole: debug builds carry hundreds of MiB of debug info.
pub fn classify<'a, R: object::ReadRef<'a>>(file_name: &str, data: R) -> Option<Blindspot> {
    let elf = object::File::parse(data).ok()?;
    // Go writes its build info section in every binary, stripped or not.
    let go = elf.section_by_name(".go.buildinfo").is_some() || elf.symbols().any(|s| s.name() == Ok("runtime.buildVersion"));
    if go {
        return Some(Blindspot::GoCryptoTls);
    }
    let needed = elf
        .section_by_name(".dynstr")
        .and_then(|s| s.data().ok())
        .is_some_and(|dynstr| dynstr.split(|&b| b == 0).any(|lib| matches!(lib, b"libjli.so" | b"libjvm.so")));
    if file_name == "java" || needed {
        return Some(Blindspot::JavaJsse);
    }
    // Rust keeps crate paths in panic locations (.rodata) even when stripped.
    elf.section_by_name(".rodata").and_then(|s| s.data().ok()).is_some_and(|d| memchr::memmem::find(d, b"/rustls-").is_some()).then_some(Blindspot::Rustls)
}

/// Executables waiting to be inspected, at most.
const QUEUE: usize = 1024;

/// Exec'd binaries go to a worker thread (reading an executable can take long, and the
/// event pipeline must not wait for it); the worker classifies each distinct file once.
#[derive(Default)]
pub struct UncoveredWatcher {
    queue: Option<SyncSender<Exec>>,
    /// Go binaries the worker found hookable, for the pipeline to attach.
    go: Option<Receiver<GoBinary>>,
    shared: Arc<Mutex<Report>>,
    /// Set when the agent stops: the worker leaves what is still queued.
    stopping: Arc<AtomicBool>,
}

#[derive(Default)]
struct Report {
    /// (dev, inode, size, mtime) -> what the executable is.
    seen: HashMap<(u64, u64, u64, i64), Verdict>,
    /// (client, binary) -> (execs, reason).
    clients: BTreeMap<(Blindspot, String), (u64, String)>,
    /// Execs not inspected because the worker was behind (or could not start).
    unchecked: u64,
}

impl Report {
    fn count(&mut self, client: Blindspot, binary: String, reason: &str) {
        let entry = (client, binary);
        if let Some((n, _)) = self.clients.get_mut(&entry) {
            *n += 1;
        } else if self.clients.len() < REPORTED {
            info!("uncovered client: {} ({reason})", entry.1);
            self.clients.insert(entry, (1, reason.to_owned()));
        }
    }
}

impl UncoveredWatcher {
    /// Called for every exec; costs the pipeline one channel send.
    pub fn on_exec(&mut self, rec: &ProcessRecord) {
        // A file already classified, known by the kernel's identity of it, is settled
        // here without the worker opening it again (the common case: the same few
        // binaries exec'd over and over).
        if let Some(k) = rec.kernel_exe
            && let Ok(mut report) = self.shared.lock()
        {
            match report.seen.get(&k.version()).cloned() {
                Some(Verdict::Seen) => return,
                Some(Verdict::Blind(kind, reason)) => {
                    if let Some(path) = rec.binary.path.clone().or_else(|| rec.binary.exec_path.clone()) {
                        report.count(kind, path, &reason);
                        return;
                    }
                }
                // Go binaries go to the worker, which hands them on to be attached.
                Some(Verdict::Go(_)) | None => {}
            }
        }
        // The executed inode itself; when the process is already gone, the file at the
        // path it ran (as the attestor does for its digest).
        let candidates: Vec<String> =
            [Some(format!("/proc/{}/exe", rec.pid)), rec.binary.path.clone(), rec.binary.exec_path.clone()].into_iter().flatten().collect();
        if self.queue.is_none() {
            self.queue = self.start();
        }
        let exec = Exec { candidates, inode: rec.binary.inode };
        let sent = self.queue.as_ref().is_some_and(|q| q.try_send(exec).is_ok());
        if !sent && let Ok(mut report) = self.shared.lock() {
            report.unchecked += 1;
        }
    }

    fn start(&mut self) -> Option<SyncSender<Exec>> {
        let (tx, rx) = sync_channel::<Exec>(QUEUE);
        let (go_tx, go_rx) = sync_channel::<GoBinary>(QUEUE);
        let (shared, stopping) = (Arc::clone(&self.shared), Arc::clone(&self.stopping));
        let spawned = std::thread::Builder::new().name("uncovered".into()).spawn(move || {
            for exec in rx {
                inspect_exec(&shared, &go_tx, &exec, &stopping);
            }
        });
        match spawned {
            Ok(_) => {
                self.go = Some(go_rx);
                Some(tx)
            }
            Err(e) => {
                warn!("cannot start the uncovered-client inspector: {e}");
                None
            }
        }
    }

    /// The agent is stopping: executables still queued are left uninspected, so the
    /// worker does not log on after the agent said it stopped.
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.queue = None;
    }

    /// The executable of this version was classified as nothing to report (no Go, no
    /// blind spot): its execs need no inspection.
    pub fn is_plain(&self, key: &(u64, u64, u64, i64)) -> bool {
        self.shared.lock().is_ok_and(|r| matches!(r.seen.get(key), Some(Verdict::Seen)))
    }

    /// Go binaries found hookable since the last call (never blocks).
    pub fn go_binaries(&self) -> Vec<GoBinary> {
        self.go.as_ref().map(|rx| rx.try_iter().collect()).unwrap_or_default()
    }

    /// A Go binary that was found but could not be hooked stays a blind spot.
    pub fn hook_failed(&self, binary: String, why: &str) {
        if let Ok(mut report) = self.shared.lock() {
            let reason = format!("{}; the probe could not be attached: {why}", Blindspot::GoCryptoTls.reason());
            report.count(Blindspot::GoCryptoTls, binary, &reason);
        }
    }

    pub fn clients(&self) -> Vec<UncoveredClient> {
        let Ok(report) = self.shared.lock() else { return Vec::new() };
        report
            .clients
            .iter()
            .map(|((client, binary), (execs, reason))| UncoveredClient { client: *client, binary: binary.clone(), execs: *execs, reason: reason.clone() })
            .collect()
    }

    pub fn unchecked(&self) -> u64 {
        self.shared.lock().map_or(0, |r| r.unchecked)
    }
}

/// One exec to inspect: where its executable may be read, and its inode when the
/// attestor saw it.
struct Exec {
    candidates: Vec<String>,
    inode: Option<u64>,
}

/// Classifies one exec'd file and reports it; does nothing once the agent is stopping
/// (checked again after the inspection, which can take a while on a large binary).
fn inspect_exec(shared: &Mutex<Report>, go: &SyncSender<GoBinary>, exec: &Exec, stopping: &AtomicBool) {
    if stopping.load(Ordering::Relaxed) {
        return;
    }
    let candidates = &exec.candidates;
    // Open first and read everything from this one file: the path may be replaced while
    // we look, and the probe must land on the inode that was inspected. A file that is
    // not the one the exec ran is skipped: by the time we look, /proc/<pid>/exe may name
    // what the process exec'd next (a shell that execs its command), which comes with its
    // own exec event, and must not be reported under this exec's path.
    let Some((path, file, meta)) = candidates.iter().find_map(|p| {
        let f = File::open(p).ok()?;
        let m = f.metadata().ok().filter(|m| exec.inode.is_none_or(|i| i == m.ino()))?;
        Some((p, f, m))
    }) else {
        return;
    };
    let key = FileKey::from_metadata(&meta).version();
    let known = shared.lock().ok().and_then(|r| r.seen.get(&key).cloned());
    let verdict = match known {
        Some(v) => v,
        None => inspect(Path::new(path), &file, meta.size()),
    };
    let Ok(mut report) = shared.lock() else { return };
    if stopping.load(Ordering::Relaxed) {
        return;
    }
    if report.seen.len() >= CACHED {
        report.seen.clear();
    }
    report.seen.insert(key, verdict.clone());
    let binary = reported_path(path, &file, candidates);
    match verdict {
        Verdict::Seen => {}
        Verdict::Blind(kind, reason) => report.count(kind, binary, &reason),
        Verdict::Go(offset) => {
            let id = (meta.dev(), meta.ino());
            if go.try_send(GoBinary { file, id, binary, offset }).is_err() {
                report.unchecked += 1;
            }
        }
    }
}

/// The path to report for the file inspected, not the /proc link that named it. The link
/// is read through our own descriptor: the process may have exited since it was opened,
/// and then its /proc entry names nothing. Failing that, the first candidate that is a
/// real path (the record's path may be an earlier exec's when the attestor could not
/// read the inode).
fn reported_path(path: &str, file: &File, candidates: &[String]) -> String {
    if !path.starts_with("/proc/") {
        return path.to_owned();
    }
    crate::attest::path_of_open(file).or_else(|| candidates.iter().find(|c| !c.starts_with("/proc/")).cloned()).unwrap_or_else(|| path.to_owned())
}

fn inspect(exe: &Path, file: &File, size: u64) -> Verdict {
    if size > MAX_BINARY {
        return Verdict::Seen;
    }
    let name = fs::canonicalize(exe).ok();
    let name = name.as_deref().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or_default();
    let data = object::ReadCache::new(file);
    match classify(name, &data) {
        None => Verdict::Seen,
        Some(Blindspot::GoCryptoTls) => match super::golang::find_function(&data, GO_TLS_WRITE) {
            Ok(f) => Verdict::Go(f.probe_offset),
            Err(e) => Verdict::Blind(Blindspot::GoCryptoTls, format!("{}; not hooked: {e}", Blindspot::GoCryptoTls.reason())),
        },
        Some(kind) => Verdict::Blind(kind, kind.reason().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_file(path: &str) -> Option<Option<Blindspot>> {
        let file = fs::File::open(path).ok()?;
        let name = Path::new(path).file_name()?.to_str()?;
        Some(classify(name, &object::ReadCache::new(file)))
    }

    #[test]
    fn real_binaries_on_this_machine() {
        // Debian's prometheus package ships Go binaries; curl links libssl.
        if let Some(kind) = classify_file("/usr/bin/promtool") {
            assert_eq!(kind, Some(Blindspot::GoCryptoTls));
        }
        assert_eq!(classify_file("/usr/bin/curl"), Some(None), "curl is covered (libssl)");
        if let Ok(java) = fs::canonicalize("/usr/bin/java") {
            let java = java.display().to_string();
            assert_eq!(classify_file(&java), Some(Some(Blindspot::JavaJsse)));
        }
    }

    #[test]
    fn non_elf_and_garbage_are_not_classified() {
        assert_eq!(classify("x", &b""[..]), None);
        assert_eq!(classify("x", &b"#!/bin/sh\necho /rustls-0.23/\n"[..]), None);
        assert_eq!(classify("java", &b"\x7fELF garbage"[..]), None);
    }
    #[test]
    fn a_process_gone_after_its_exe_was_opened_is_reported_by_the_file_path() {
        let mut child = std::process::Command::new("/bin/sleep").arg("30").spawn().expect("sleep");
        let link = format!("/proc/{}/exe", child.id());
        while fs::read_link(&link).ok().as_deref() != Some(Path::new("/usr/bin/sleep")) {
            std::thread::yield_now();
        }
        let file = File::open(&link).expect("open exe");
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert!(fs::read_link(&link).is_err(), "the /proc entry is gone");
        let candidates = [link.clone(), "/bin/sleep".to_owned()];
        assert_eq!(reported_path(&link, &file, &candidates), "/usr/bin/sleep");
        assert_eq!(reported_path("/bin/sleep", &file, &candidates), "/bin/sleep");
    }
}
