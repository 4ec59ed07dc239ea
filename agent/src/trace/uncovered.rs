//! Clients whose credentials Sigil cannot see, reported when they run.
//!
//! Credential tracing reads plaintext at the TLS library boundary (OpenSSL, GnuTLS) or
//! on plain sockets. A program that carries its own TLS stack never crosses that
//! boundary: Go's crypto/tls, Rust's rustls, Java's JSSE. Rather than stay silent about
//! them, the tracer recognises such executables when they are exec'd and counts them in
//! `agent_stats` under `trace.uncovered`, so a user sees the blind spots on their own
//! nodes (README: "What cannot be seen").

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{
        Arc, Mutex,
        mpsc::{SyncSender, sync_channel},
    },
};

use object::{Object, ObjectSection, ObjectSymbol};
use serde::Serialize;
use tracing::{info, warn};

use crate::attest::record::ProcessRecord;

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
    pub reason: &'static str,
}

/// Recognises a client Sigil cannot see from its executable (ELF only). Generic over
/// [`object::ReadRef`] so a file is read on demand (section headers, `.dynstr`,
/// `.rodata`), never whole: debug builds carry hundreds of MiB of debug info.
pub fn classify<'a, R: object::ReadRef<'a>>(file_name: &str, data: R) -> Option<Blindspot> {
    let elf = object::File::parse(data).ok()?;
    // Go writes its build info section in every binary, stripped or not.
    let go = elf.section_by_name(".go.buildinfo").is_some()
        || elf.symbols().any(|s| s.name() == Ok("runtime.buildVersion"));
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
    elf.section_by_name(".rodata")
        .and_then(|s| s.data().ok())
        .is_some_and(|d| memchr::memmem::find(d, b"/rustls-").is_some())
        .then_some(Blindspot::Rustls)
}

/// Executables waiting to be inspected, at most.
const QUEUE: usize = 1024;

/// Exec'd binaries go to a worker thread (reading an executable can take long, and the
/// event pipeline must not wait for it); the worker classifies each distinct file once.
#[derive(Default)]
pub struct UncoveredWatcher {
    queue: Option<SyncSender<Vec<String>>>,
    shared: Arc<Mutex<Report>>,
}

#[derive(Default)]
struct Report {
    /// (dev, inode, size, mtime) -> what the executable is.
    seen: HashMap<(u64, u64, u64, i64), Option<Blindspot>>,
    clients: BTreeMap<(Blindspot, String), u64>,
    /// Execs not inspected because the worker was behind (or could not start).
    unchecked: u64,
}

impl UncoveredWatcher {
    /// Called for every exec; costs the pipeline one channel send.
    pub fn on_exec(&mut self, rec: &ProcessRecord) {
        // The executed inode itself; when the process is already gone, the file at the
        // path it ran (as the attestor does for its digest).
        let candidates: Vec<String> = [Some(format!("/proc/{}/exe", rec.pid)), rec.binary.path.clone(), rec.binary.exec_path.clone()]
            .into_iter()
            .flatten()
            .collect();
        if self.queue.is_none() {
            self.queue = self.start();
        }
        let sent = self.queue.as_ref().is_some_and(|q| q.try_send(candidates).is_ok());
        if !sent && let Ok(mut report) = self.shared.lock() {
            report.unchecked += 1;
        }
    }

    fn start(&self) -> Option<SyncSender<Vec<String>>> {
        let (tx, rx) = sync_channel::<Vec<String>>(QUEUE);
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("uncovered".into())
            .spawn(move || {
                for candidates in rx {
                    inspect_exec(&shared, &candidates);
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                warn!("cannot start the uncovered-client inspector: {e}");
                None
            }
        }
    }

    pub fn clients(&self) -> Vec<UncoveredClient> {
        let Ok(report) = self.shared.lock() else { return Vec::new() };
        report
            .clients
            .iter()
            .map(|((client, binary), execs)| UncoveredClient {
                client: *client,
                binary: binary.clone(),
                execs: *execs,
                reason: client.reason(),
            })
            .collect()
    }

    pub fn unchecked(&self) -> u64 {
        self.shared.lock().map_or(0, |r| r.unchecked)
    }
}

fn inspect_exec(shared: &Mutex<Report>, candidates: &[String]) {
    let Some((path, meta)) = candidates.iter().find_map(|p| fs::metadata(p).ok().map(|m| (p, m))) else {
        return;
    };
    let key = (meta.dev(), meta.ino(), meta.size(), meta.mtime());
    let known = shared.lock().ok().and_then(|r| r.seen.get(&key).copied());
    let kind = match known {
        Some(kind) => kind,
        None => inspect(Path::new(path), meta.size()),
    };
    let Ok(mut report) = shared.lock() else { return };
    if report.seen.len() >= CACHED {
        report.seen.clear();
    }
    report.seen.insert(key, kind);
    let Some(kind) = kind else { return };
    // Report the path the process ran, not the /proc link that named the inode.
    let binary = candidates.get(1).cloned().unwrap_or_else(|| path.clone());
    let entry = (kind, binary);
    if let Some(n) = report.clients.get_mut(&entry) {
        *n += 1;
    } else if report.clients.len() < REPORTED {
        info!("uncovered client: {} ({})", entry.1, kind.reason());
        report.clients.insert(entry, 1);
    }
}

fn inspect(exe: &Path, size: u64) -> Option<Blindspot> {
    if size > MAX_BINARY {
        return None;
    }
    let file = fs::File::open(exe).ok()?;
    let name = fs::canonicalize(exe).ok();
    let name = name
        .as_deref()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    classify(name, &object::ReadCache::new(file))
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
}
