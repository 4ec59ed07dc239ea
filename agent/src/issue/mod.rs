//! Token issuance gated by kernel attestation.
//!
//! A workload asks over the SPIFFE Workload API ([`workload_api`]); the kernel says who it
//! is ([`peer`]); the attestation record says what it is; the policy ([`policy`]) says
//! what it may be; [`issuer`] decides; [`signing`] signs, with the agent's own keys ([`jwt`],
//! [`keys`]; [`oidc`] publishes them) or through the cluster signer ([`remote`], fleet mode).
pub mod client;
pub mod events;
pub mod h2_authority;
pub mod issuer;
pub mod jwt;
pub mod keys;
pub mod limits;
pub mod oidc;
pub mod peer;
pub mod policy;
pub mod remote;
pub mod sign_bench;
pub mod signing;
pub mod watched;
pub mod workload_api;
