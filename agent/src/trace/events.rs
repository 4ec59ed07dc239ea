//! Credential-use identity events. They carry fingerprints and non-secret identifiers,
//! never a secret: the secret is dropped as soon as it has been fingerprinted.

use serde::Serialize;

use super::{
    body::Exchange,
    detect::{Class, Detector, Identifiers},
    files::FileKind,
    http::Protocol,
};
use crate::attest::record::ProcessRef;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Destination {
    pub ip: Option<String>,
    pub port: Option<u16>,
    /// HTTP Host / :authority as the client sent it.
    pub host: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CredentialUse {
    pub kind: &'static str,
    pub time: String,
    pub node: String,
    pub pid: u32,
    pub process: Option<ProcessRef>,
    pub destination: Destination,
    /// `tls` (plaintext taken from the TLS library) or `plain` (a socket write).
    pub transport: &'static str,
    pub tls_library: Option<&'static str>,
    pub protocol: Protocol,
    pub method: String,
    /// Request path with credential-bearing query parameters removed.
    pub path: String,
    pub detector: Detector,
    /// `class` plus lifetime fields where known.
    #[serde(flatten)]
    pub class: Class,
    /// Keyed hash of the secret part: equal across runs and nodes for one credential.
    pub fingerprint: String,
    pub identifiers: Identifiers,
    /// Set when the credential was presented in a request body to a token endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange: Option<Exchange>,
    /// Uses this event stands for: 1 for a first use, more for an aggregate of repeats
    /// (see `aggregate`). Absent means 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Times of the first and last use an aggregate counts (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CredentialFileRead {
    pub kind: &'static str,
    pub time: String,
    pub node: String,
    pub pid: u32,
    pub process: Option<ProcessRef>,
    pub path: String,
    pub file_kind: FileKind,
    /// `read`, `write` or `read_write`, from the open flags.
    pub access: &'static str,
}
