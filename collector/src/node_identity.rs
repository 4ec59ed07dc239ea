//! Which node is talking: the SAN of the agent's mTLS client certificate, never a field
//! the agent sends. `spiffe://<trust domain>/sigil/node/<name>` names the node; without
//! such a URI SAN, the first DNS SAN does. On loopback without TLS (the demo) there is no
//! certificate, and the node name in the request is taken as given.

use thiserror::Error;
use tonic::{Request, Status};
use x509_parser::{extensions::GeneralName, prelude::FromDer};

/// The path under a trust domain that names a node in a SPIFFE ID SAN.
pub const NODE_PATH: &str = "/sigil/node/";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("the client certificate could not be parsed: {0}")]
    BadCertificate(String),
    #[error("the client certificate names no node (no spiffe://<td>/sigil/node/<name> URI SAN and no DNS SAN)")]
    NoNode,
    #[error("this connection is authenticated as node {authenticated:?} but the request claims node {claimed:?}")]
    Mismatch { authenticated: String, claimed: String },
    #[error("node must be set")]
    Missing,
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Missing => Status::invalid_argument(e.to_string()),
            _ => Status::permission_denied(e.to_string()),
        }
    }
}

/// The names in a certificate's SAN that can identify a node.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CertNames {
    /// From a `spiffe://<td>/sigil/node/<name>` URI SAN: certainly a node certificate.
    pub spiffe_node: Option<String>,
    /// The first DNS SAN.
    pub dns: Option<String>,
}

impl CertNames {
    /// The node this certificate names: its SPIFFE node ID, else its DNS name.
    pub fn node(self) -> Option<String> {
        self.spiffe_node.or(self.dns)
    }
}

pub fn certificate_names(der: &[u8]) -> Result<CertNames, NodeError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).map_err(|e| NodeError::BadCertificate(e.to_string()))?;
    let san = cert.subject_alternative_name().map_err(|e| NodeError::BadCertificate(e.to_string()))?;
    let names = san.map(|s| s.value.general_names.clone()).unwrap_or_default();
    Ok(CertNames {
        spiffe_node: names.iter().find_map(|n| match n {
            GeneralName::URI(u) => node_of_spiffe_id(u),
            _ => None,
        }),
        dns: names.iter().find_map(|n| match n {
            GeneralName::DNSName(d) if !d.is_empty() => Some((*d).to_owned()),
            _ => None,
        }),
    })
}

/// `spiffe://<td>/sigil/node/<name>` -> `<name>`.
pub fn node_of_spiffe_id(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("spiffe://")?;
    let (_, path) = rest.split_once('/')?;
    let name = format!("/{path}").strip_prefix(NODE_PATH)?.to_owned();
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// Whether this connection came with a node's (an agent's) SPIFFE certificate.
pub fn is_node_certificate<T>(req: &Request<T>) -> bool {
    req.peer_certs().and_then(|c| c.first().map(|d| certificate_names(d.as_ref()))).is_some_and(|n| matches!(n, Ok(CertNames { spiffe_node: Some(_), .. })))
}

/// The authenticated node of a gRPC request. With mTLS: the certificate's node, and a
/// `claimed` name that differs is an error (the caller counts it). Without TLS (loopback
/// only, enforced at start-up): `claimed`, as given.
pub fn authenticated_node<T>(req: &Request<T>, claimed: &str) -> Result<String, NodeError> {
    match req.peer_certs() {
        Some(certs) => {
            let leaf = certs.first().ok_or(NodeError::NoNode)?;
            let node = certificate_names(leaf.as_ref())?.node().ok_or(NodeError::NoNode)?;
            if !claimed.is_empty() && claimed != node {
                return Err(NodeError::Mismatch { authenticated: node, claimed: claimed.to_owned() });
            }
            Ok(node)
        }
        None if claimed.is_empty() => Err(NodeError::Missing),
        None => Ok(claimed.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_node_paths_name_nodes() {
        assert_eq!(node_of_spiffe_id("spiffe://sigil.test/sigil/node/n1").as_deref(), Some("n1"));
        assert_eq!(node_of_spiffe_id("spiffe://sigil.test/sigil/node/"), None);
        assert_eq!(node_of_spiffe_id("spiffe://sigil.test/sigil/node/a/b"), None);
        assert_eq!(node_of_spiffe_id("spiffe://sigil.test/ns/x/sa/y"), None);
        assert_eq!(node_of_spiffe_id("https://sigil.test/sigil/node/n1"), None);
    }
}
