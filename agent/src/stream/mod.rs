//! Delivery of identity events to the collector, which may be unreachable for a while.
pub mod exporter;
pub mod spool;
