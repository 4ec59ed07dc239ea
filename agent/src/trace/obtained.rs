//! Which responses are read, and the `credential_obtained` events made of them.
//!
//! A TLS connection's response is read only after the client sent a request there that
//! was a credential exchange (a body credential with an `Exchange`, a GCP IAM Credentials
//! call, or a POST to a token endpoint path). The tracer registers each such request
//! here ([`ResponseTracker::expect`]); the reads that follow on the connection are fed to
//! its [`ResponseStream`], and the first whole response answers the oldest exchange.
//! Reads on connections that expect nothing are dropped unparsed, and the tracer then
//! withdraws the kernel's budget for them.

use std::collections::VecDeque;

use hashlink::LruCache;
use sigil_proto::v1;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{
    fingerprint::Fingerprinter,
    response::{Obtained, ResponseError, ResponseStream},
};

/// Connections with exchanges awaiting their response; the least recently used go first.
const CONNECTIONS: usize = 4096;
/// Exchanges awaiting a response on one connection (pipelined requests).
const PER_CONNECTION: usize = 8;

/// A credential exchange whose response has not been read yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub exchange_kind: String,
    /// The request's Host.
    pub host: Option<String>,
    /// The presented credential's JWT claims and fingerprint, when known.
    pub presented_jti: Option<String>,
    pub presented_iss: Option<String>,
    pub presented_sub: Option<String>,
    pub presented_fingerprint: Option<String>,
}

#[derive(Default)]
struct Connection {
    expected: VecDeque<Expected>,
    stream: ResponseStream,
}

/// Key: tgid and the TLS library's connection object.
pub struct ResponseTracker {
    conns: LruCache<(u32, u64), Connection>,
}

impl Default for ResponseTracker {
    fn default() -> Self {
        Self { conns: LruCache::new(CONNECTIONS) }
    }
}

impl ResponseTracker {
    /// The request just written on (tgid, conn) was a credential exchange.
    pub fn expect(&mut self, tgid: u32, conn: u64, expected: Expected) {
        let c = match self.conns.get_mut(&(tgid, conn)) {
            Some(c) => c,
            None => {
                self.conns.insert((tgid, conn), Connection::default());
                match self.conns.get_mut(&(tgid, conn)) {
                    Some(c) => c,
                    None => return,
                }
            }
        };
        if c.expected.len() >= PER_CONNECTION {
            c.expected.pop_front();
        }
        c.expected.push_back(expected);
    }

    pub fn expects(&self, tgid: u32, conn: u64) -> bool {
        self.conns.peek(&(tgid, conn)).is_some_and(|c| !c.expected.is_empty())
    }

    /// Feeds one read. When it completes a response: the exchange it answers and what
    /// was read from it. `None` also when the connection expects nothing.
    pub fn on_read(&mut self, tgid: u32, conn: u64, captured: &[u8], true_len: usize) -> Option<(Expected, Result<Obtained, ResponseError>)> {
        let c = self.conns.get_mut(&(tgid, conn))?;
        if c.expected.is_empty() {
            return None;
        }
        let outcome = c.stream.feed(captured, true_len)?;
        let expected = c.expected.pop_front()?;
        if c.expected.is_empty() {
            self.conns.remove(&(tgid, conn));
        }
        Some((expected, outcome))
    }
}

fn rfc3339(unix: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix).ok()?.format(&Rfc3339).ok()
}

/// The event for a credential read from a response: `base` carries who, where and when
/// (time, node, pid, process, destination, tls_library); `now` is the read's Unix time.
pub fn event(mut base: v1::CredentialObtained, expected: Expected, o: Obtained, now: i64, fingerprinter: &Fingerprinter) -> v1::CredentialObtained {
    let expires = o.expires_at.or_else(|| o.expires_in.map(|s| now.saturating_add(s)));
    base.issued_at = base.time.clone();
    if let Some(dest) = base.destination.as_mut() {
        dest.host = expected.host;
    }
    base.exchange_kind = expected.exchange_kind;
    base.format = o.format.into();
    base.identifier = o.identifier;
    base.class = if expires.is_some() { v1::CredentialClass::ShortLived } else { v1::CredentialClass::Unknown } as i32;
    base.fingerprint = o.secret.as_ref().map(|s| fingerprinter.fingerprint(s)).unwrap_or_default();
    base.expires_at = expires.and_then(rfc3339);
    base.expires_in = o.expires_in.or_else(|| o.expires_at.map(|at| at.saturating_sub(now)));
    base.principal = o.principal;
    base.token_type = o.token_type;
    base.scope = o.scope;
    base.token_iss = o.token_iss;
    base.token_sub = o.token_sub;
    base.token_jti = o.token_jti;
    base.token_exp = o.token_exp;
    base.presented_jti = expected.presented_jti;
    base.presented_iss = expected.presented_iss;
    base.presented_sub = expected.presented_sub;
    base.presented_fingerprint = expected.presented_fingerprint;
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    #[test]
    fn responses_answer_expected_exchanges_in_order_and_others_are_ignored() {
        let mut t = ResponseTracker::default();
        let r = response(r#"{"access_token":"opaque-secret","token_type":"Bearer","expires_in":3600}"#);
        assert!(t.on_read(1, 9, &r, r.len()).is_none(), "nothing expected: not read");
        t.expect(1, 9, Expected { exchange_kind: "oauth_client_credentials".into(), ..Default::default() });
        assert!(t.expects(1, 9) && !t.expects(2, 9));
        let (a, b) = r.split_at(20);
        assert!(t.on_read(1, 9, a, a.len()).is_none());
        let (exp, got) = t.on_read(1, 9, b, b.len()).expect("complete");
        assert_eq!(exp.exchange_kind, "oauth_client_credentials");
        let fp = Fingerprinter::new(b"k");
        let base = v1::CredentialObtained { time: "2026-11-24T01:00:00Z".into(), ..Default::default() };
        let ev = event(base, exp, got.expect("reads"), 1_700_000_000, &fp);
        assert_eq!(ev.expires_in, Some(3600));
        assert_eq!(ev.expires_at.as_deref(), Some("2023-11-14T23:13:20Z"));
        assert_eq!(ev.class, v1::CredentialClass::ShortLived as i32);
        assert_eq!(ev.fingerprint, fp.fingerprint(&super::super::detect::Secret::new(b"opaque-secret".to_vec())));
        assert!(!format!("{ev:?}").contains("opaque-secret"));
        assert!(!t.expects(1, 9), "answered");
    }
}
