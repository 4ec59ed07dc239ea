//! Credential-use tracing: recovering requests from captured writes and finding the
//! credentials in them without keeping the secrets.
//!
//! Kernel captures ([`tracer`]) -> per-connection request recovery ([`http`]) ->
//! [`detect`] -> [`fingerprint`] -> [`events`]. [`conn`] knows where each socket goes,
//! [`libs`] which TLS libraries to hook, [`files`] which credential files to watch.
pub mod aggregate;
pub mod body;
pub mod catalogue;
pub mod chunked;
pub mod conn;
pub mod detect;
pub mod events;
#[cfg(test)]
mod families_test;
pub mod files;
pub mod fingerprint;
pub mod golang;
pub mod hook_site;
pub mod http;
pub mod libs;
pub mod obtained;
pub mod proxy_protocol;
pub mod redact;
pub mod response;
pub mod scrub;
pub mod static_tls;
pub mod streams;
pub mod tracer;
pub mod uncovered;
