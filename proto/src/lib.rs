//! Generated protobuf types and gRPC stubs, and the identity event contract.
//!
//! `spiffe`: the SPIFFE Workload API (upstream has no proto package, so prost writes it
//! to `_.rs`). `v1`: agent -> collector ingest, collector queries, and every identity
//! event (sigil/v1/events.proto), defined once for the agent, the collector, and JSON.
#![allow(clippy::all, clippy::unwrap_used)]

pub mod json;

pub mod spiffe {
    tonic::include_proto!("_");
}

/// `sigil.v1`: agent -> collector ingest, and collector queries.
pub mod v1 {
    tonic::include_proto!("sigil.v1");
}

pub use v1::event::Body as EventBody;

/// The version of the event contract this build speaks. Fields are only added within a
/// version; a change of a field's meaning bumps it. Sent in `PushRequest.contract_version`.
pub const CONTRACT_VERSION: u32 = 1;

/// Every kind, by fixed id (the `Event.body` field number) and name.
pub const KINDS: [(u32, &str); 10] = [
    (10, "process_exec"),
    (11, "process_exit"),
    (12, "token_issued"),
    (13, "token_denied"),
    (14, "credential_use"),
    (15, "credential_file_read"),
    (16, "agent_stats"),
    (17, "config_change"),
    (18, "credential_obtained"),
    (19, "finding"),
];

impl EventBody {
    /// The kind's fixed id: its field number in `Event.body`.
    pub fn kind_id(&self) -> u32 {
        match self {
            Self::ProcessExec(_) => 10,
            Self::ProcessExit(_) => 11,
            Self::TokenIssued(_) => 12,
            Self::TokenDenied(_) => 13,
            Self::CredentialUse(_) => 14,
            Self::CredentialFileRead(_) => 15,
            Self::AgentStats(_) => 16,
            Self::ConfigChange(_) => 17,
            Self::CredentialObtained(_) => 18,
            Self::Finding(_) => 19,
        }
    }

    /// The kind's name, as JSON writes it in `"kind"`.
    pub fn kind(&self) -> &'static str {
        let id = self.kind_id();
        KINDS.iter().find(|(k, _)| *k == id).map_or("unknown", |(_, n)| n)
    }

    /// The event's own RFC 3339 time as the agent wrote it; `None` for agent statistics,
    /// which are about the moment they arrive.
    pub fn time(&self) -> Option<&str> {
        match self {
            Self::ProcessExec(e) => Some(&e.time),
            Self::ProcessExit(e) => Some(&e.time),
            Self::TokenIssued(e) => Some(&e.time),
            Self::TokenDenied(e) => Some(&e.time),
            Self::CredentialUse(e) => Some(&e.time),
            Self::CredentialFileRead(e) => Some(&e.time),
            Self::ConfigChange(e) => Some(&e.time),
            Self::CredentialObtained(e) => Some(&e.time),
            // A finding is about its latest misuse.
            Self::Finding(e) => Some(&e.last_time),
            Self::AgentStats(_) => None,
        }
    }

    /// The JSON document (`{"kind": ..., fields...}`) of `sigil-agent run --stdout`.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }

    /// Reads a JSON document back into its typed body (agents before contract 1, HTTP).
    pub fn from_json(json: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(json)
    }

    /// The typed (protobuf) encoding the agent spools and sends: an `Event` with only the
    /// body set, so the spooled bytes decode as an `Event`.
    pub fn encode_event(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf
    }
}

#[cfg(test)]
mod tests;
