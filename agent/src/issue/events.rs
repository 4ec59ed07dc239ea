//! Identity events of the issuance path, as the contract defines them (sigil-proto,
//! sigil/v1/events.proto). Tokens themselves never appear here: a token is a bearer
//! secret, so events carry its `jti`, never its text.

pub use sigil_proto::v1::{ConfigChange, TokenDenied, TokenIssued};

pub use crate::attest::record::ProcessRef;
