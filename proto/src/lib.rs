//! Generated protobuf types and gRPC stubs.
//!
//! `spiffe`: the SPIFFE Workload API (upstream has no proto package, so prost writes it
//! to `_.rs`).
#![allow(clippy::all, clippy::unwrap_used)]

pub mod spiffe {
    tonic::include_proto!("_");
}

/// `sigil.v1`: agent -> collector ingest, and collector queries.
pub mod v1 {
    tonic::include_proto!("sigil.v1");
}
