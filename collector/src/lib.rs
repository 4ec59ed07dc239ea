//! Sigil collector: stores identity events from agents and attributes cloud actions to
//! the workload runs that made them.
//!
//! agents --gRPC--> [`server`] -> [`ingest`] (typed contract) -> [`store`] <- [`cloud`]
//!                                                                   |
//!        answers (trace, who-used, run, posture): each backend's queries, behind `Store`
//!        [`correlate`]: the attribution rules, over the backend's `Lookups`
//!        [`findings`]: misuse found as batches arrive, over the backend's `FindingLookups`
//!
//! Fleet mode: [`sign`] is the cluster signer and OIDC issuer; [`node_identity`] names the
//! node behind each mTLS connection; [`http_auth`] and [`https`] guard the HTTP API.
pub mod cloud;
pub mod correlate;
pub mod findings;
pub mod http_auth;
pub mod https;
pub mod ingest;
pub mod metrics;
pub mod node_identity;
pub mod server;
pub mod sign;
pub mod store;
