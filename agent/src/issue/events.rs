//! Identity events of the issuance path. Tokens themselves never appear here: a token
//! is a bearer secret, so events carry its `jti`, never its text.

use serde::Serialize;

use super::policy::DenyReason;
pub use crate::attest::record::ProcessRef;

#[derive(Debug, Clone, Serialize)]
pub struct TokenIssued {
    pub kind: &'static str,
    pub time: String,
    pub node: String,
    pub jti: String,
    pub spiffe_id: String,
    pub audience: Vec<String>,
    pub issuer: String,
    pub kid: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub ttl_seconds: i64,
    /// Line of the registration entry that granted it.
    pub entry_line: usize,
    pub process: ProcessRef,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenDenied {
    pub kind: &'static str,
    pub time: String,
    pub node: String,
    pub reason: DenyReason,
    pub detail: String,
    /// The first audiences asked for, each cut to a bounded length.
    pub audience: Vec<String>,
    /// How many audiences the request named.
    pub audience_count: usize,
    pub requested_spiffe_id: Option<String>,
    /// The pid the kernel reported for the connection.
    pub peer_pid: u32,
    pub process: Option<ProcessRef>,
}

/// A policy or pod-metadata file changed on disk.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigChange {
    pub kind: &'static str,
    pub time: String,
    pub node: String,
    pub path: String,
    /// `reloaded` or `rejected` (then the previous version stays in force).
    pub outcome: &'static str,
    pub error: Option<String>,
}
