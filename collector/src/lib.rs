//! Sigil collector: stores identity events from agents and attributes cloud actions to
//! the workload runs that made them.
//!
//! agents --gRPC--> [`server`] -> [`store`] (SQLite) <- [`cloud`] (CloudTrail, GCP audit)
//!                                     |
//!                  [`correlate`] (links) -> [`query`] (trace, who-used, run, posture)
pub mod cloud;
pub mod correlate;
pub mod ingest;
pub mod metrics;
pub mod query;
pub mod server;
pub mod store;
