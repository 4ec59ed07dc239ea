//! Sigil collector: stores identity events from agents and attributes cloud actions to
//! the workload runs that made them.
//!
//! agents --gRPC--> [`server`] -> [`ingest`] (typed contract) -> [`store`] <- [`cloud`]
//!                                                                   |
//!        answers (trace, who-used, run, posture): each backend's queries, behind `Store`
//!        [`correlate`]: the attribution rules, over the backend's `Lookups`
pub mod cloud;
pub mod correlate;
pub mod ingest;
pub mod metrics;
pub mod server;
pub mod store;
