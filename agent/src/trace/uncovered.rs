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
};

use object::{Object, ObjectSection, ObjectSymbol};
use serde::Serialize;
use tracing::info;

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

/// Recognises a client Sigil cannot see from its executable's bytes (ELF only).
pub fn classify(file_name: &str, bytes: &[u8]) -> Option<Blindspot> {
    let elf = object::File::parse(bytes).ok()?;
    // Go writes its build info section in every binary, stripped or not.
    let go = elf.section_by_name(".go.buildinfo").is_some()
        || elf.symbols().any(|s| s.name() == Ok("runtime.buildVersion"));
    if go {
        return Some(Blindspot::GoCryptoTls);
    }
    let java = file_name == "java"
        || elf
            .imports()
            .ok()
            .is_some_and(|imports| imports.iter().any(|i| matches!(i.library(), b"libjli.so" | b"libjvm.so")))
        || needs(bytes, &[b"libjli.so", b"libjvm.so"]);
    if java {
        return Some(Blindspot::JavaJsse);
    }
    // Rust keeps crate paths in panic locations even when stripped.
    memchr::memmem::find(bytes, b"rustls").map(|_| Blindspot::Rustls)
}

/// Whether the dynamic section names one of `libs` as DT_NEEDED (read from the
/// dynamic string table: `object`'s imports only list symbols).
fn needs(bytes: &[u8], libs: &[&[u8]]) -> bool {
    let Ok(elf) = object::File::parse(bytes) else { return false };
    let Some(dynstr) = elf.section_by_name(".dynstr").and_then(|s| s.data().ok()) else {
        return false;
    };
    dynstr.split(|&b| b == 0).any(|name| libs.contains(&name))
}

#[derive(Default)]
pub struct UncoveredWatcher {
    /// (dev, inode, size, mtime) -> what the executable is.
    seen: HashMap<(u64, u64, u64, i64), Option<Blindspot>>,
    report: BTreeMap<(Blindspot, String), u64>,
}

impl UncoveredWatcher {
    /// Called for every exec: inspects each distinct executable once.
    pub fn on_exec(&mut self, rec: &ProcessRecord) {
        // The executed inode itself; when the process is already gone, the file at the
        // path it ran (as the attestor does for its digest).
        let exe = [Some(format!("/proc/{}/exe", rec.pid)), rec.binary.path.clone(), rec.binary.exec_path.clone()]
            .into_iter()
            .flatten()
            .find(|p| fs::metadata(p).is_ok());
        let Some(exe) = exe else { return };
        let Ok(meta) = fs::metadata(&exe) else { return };
        let key = (meta.dev(), meta.ino(), meta.size(), meta.mtime());
        let kind = match self.seen.get(&key) {
            Some(kind) => *kind,
            None => {
                let kind = inspect(Path::new(&exe), meta.size());
                if self.seen.len() >= CACHED {
                    self.seen.clear();
                }
                self.seen.insert(key, kind);
                kind
            }
        };
        let Some(kind) = kind else { return };
        let binary = rec.binary.path.clone().unwrap_or(exe);
        let entry = (kind, binary);
        if let Some(n) = self.report.get_mut(&entry) {
            *n += 1;
        } else if self.report.len() < REPORTED {
            info!("uncovered client: {} ({})", entry.1, kind.reason());
            self.report.insert(entry, 1);
        }
    }

    pub fn clients(&self) -> Vec<UncoveredClient> {
        self.report
            .iter()
            .map(|((client, binary), execs)| UncoveredClient {
                client: *client,
                binary: binary.clone(),
                execs: *execs,
                reason: client.reason(),
            })
            .collect()
    }
}

fn inspect(exe: &Path, size: u64) -> Option<Blindspot> {
    if size > MAX_BINARY {
        return None;
    }
    let bytes = fs::read(exe).ok()?;
    let name = fs::canonicalize(exe).ok();
    let name = name
        .as_deref()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    classify(name, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_file(path: &str) -> Option<Option<Blindspot>> {
        let bytes = fs::read(path).ok()?;
        let name = Path::new(path).file_name()?.to_str()?;
        Some(classify(name, &bytes))
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
        assert_eq!(classify("x", b""), None);
        assert_eq!(classify("x", b"#!/bin/sh\necho rustls\n"), None);
        assert_eq!(classify("java", b"\x7fELF garbage"), None);
    }
}
