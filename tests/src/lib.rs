//! Helpers for the root-only integration tests.
