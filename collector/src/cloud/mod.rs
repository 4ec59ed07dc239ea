//! Cloud audit-log parsers: turn AWS CloudTrail and GCP Cloud Audit Log exports into
//! [`CloudAction`]s that the collector can attribute to workload runs.
//!
//! Audit logs arrive from many places (S3 deliveries, `gcloud` output, hand-made exports,
//! partially copied files), so parsing is deliberately tolerant at the document level and
//! strict at the record level: one bad record never costs the others, and every bad record
//! is reported with where it was, instead of being silently dropped or half-read.

mod borrowed;
pub mod cloudtrail;
mod document;
pub mod gcp;
// Storing parsed records needs the store; the fuzz target compiles this module on its own
// (fuzz/fuzz_targets/cloud_logs.rs) and exercises only the parsers.
#[cfg(not(fuzzing))]
pub mod ingest;
mod input;
mod timestamps;

use std::fmt;

use serde_json::Value;

use document::{Item, Layout, Position};
pub use input::Limits;
use input::{Kind, parse_path_with};
use timestamps::parse_expiration;
pub use timestamps::parse_rfc3339;

/// Part of an action's identity: ids are only unique within one provider's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Aws,
    Gcp,
}

impl Provider {
    /// The name stored and shown (`aws`, `gcp`), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Gcp => "gcp",
        }
    }
}

/// One API call recorded by a cloud provider's audit log, normalised across providers so
/// that attribution works on a single shape.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CloudAction {
    pub provider: Provider,
    /// CloudTrail eventID, GCP insertId: unique per record, used as primary key.
    pub id: String,
    pub time_unix: i64,
    pub action: String,
    pub service: String,
    pub region: Option<String>,
    pub principal: Option<String>,
    pub principal_type: Option<String>,
    /// The key is what links a call back to the credential an attested workload received.
    pub access_key_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// Denied calls matter as much as successful ones, so they are kept, with the code.
    pub error_code: Option<String>,
    /// AssumeRoleWithWebIdentity / AssumeRole: what the call handed out and to whom.
    pub assumed: Option<AssumedRole>,
    /// GCP: service-account impersonation chain (serviceAccountDelegationInfo principals).
    pub delegation: Vec<String>,
    /// The record's JSON text, for display: as received for a plain record, re-serialised
    /// for one taken out of a container (a batch, a SIEM hit, an EventBridge event).
    pub raw: String,
}

/// Credentials issued by an STS AssumeRole* call: the bridge from a workload's OIDC token
/// (subject, provider, audience) to the temporary access key that later calls are made with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AssumedRole {
    pub issued_access_key_id: Option<String>,
    pub role_arn: Option<String>,
    pub role_session_name: Option<String>,
    pub web_identity_subject: Option<String>,
    pub web_identity_provider: Option<String>,
    pub audience: Option<String>,
    /// None when CloudTrail wrote a date format we do not recognise: the expiry is
    /// informative only and must not cost the record.
    pub expiration_unix: Option<i64>,
}

/// A record that could not be ingested, located precisely enough for an operator to find it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{source_name}: {position}: {reason}")]
pub struct RecordError {
    pub source_name: String,
    pub position: String,
    pub reason: String,
}

/// A file in a directory that was not ingested, and why: nothing is left out silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for SkippedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Where parsed records go as they are read: collected ([`Parsed`]) or stored in batches
/// ([`ingest::StoreSink`]), so a large input never has to be held as actions all at once.
pub trait Sink {
    fn action(&mut self, action: CloudAction);
    fn error(&mut self, error: RecordError);
    fn skipped(&mut self, file: SkippedFile);
}

/// What parsing one input produced: the good records, a clear error per bad one, and the
/// files of a directory that were not audit data.
#[derive(Debug, Default)]
pub struct Parsed {
    pub actions: Vec<CloudAction>,
    pub errors: Vec<RecordError>,
    pub skipped: Vec<SkippedFile>,
}

impl Parsed {
    /// Everything `feed` hands a sink, collected.
    fn collect<E>(feed: impl FnOnce(&mut Parsed) -> Result<(), E>) -> Result<Parsed, E> {
        let mut out = Parsed::default();
        feed(&mut out)?;
        Ok(out)
    }

    /// One input parsed by a provider's `parse_into`, collected.
    fn of(source_name: &str, bytes: &[u8], parse: fn(&str, &[u8], &Limits, &mut dyn Sink)) -> Parsed {
        let mut out = Parsed::default();
        parse(source_name, bytes, &Limits::default(), &mut out);
        out
    }
}

impl Sink for Parsed {
    fn action(&mut self, action: CloudAction) {
        self.actions.push(action);
    }
    fn error(&mut self, error: RecordError) {
        self.errors.push(error);
    }
    fn skipped(&mut self, file: SkippedFile) {
        self.skipped.push(file);
    }
}

/// A sink seen from inside one input: errors are located in `source_name`.
pub(crate) struct Emitter<'s> {
    source_name: &'s str,
    sink: &'s mut dyn Sink,
}

impl Emitter<'_> {
    fn action(&mut self, action: CloudAction) {
        self.sink.action(action);
    }

    fn error(&mut self, position: impl fmt::Display, reason: impl Into<String>) {
        self.sink.error(RecordError { source_name: self.source_name.to_owned(), position: position.to_string(), reason: reason.into() });
    }
}

/// Parses one input (plain or gzip) of a provider whose records `record` turns into actions.
/// Never fails as a whole: complete records reach the sink even when others, or the
/// document itself, are damaged.
pub(crate) fn parse_document(
    source_name: &str,
    bytes: &[u8],
    layout: &Layout,
    limits: &Limits,
    sink: &mut dyn Sink,
    fast: Option<fn(&str) -> Option<CloudAction>>,
    record: fn(Position, Value, &mut Emitter<'_>),
) {
    let mut out = Emitter { source_name, sink };
    let data = input::decode(bytes, limits, &mut out);
    document::split(&data, layout, &mut |item| match item {
        Item::Error { position, reason } => out.error(position, reason),
        Item::Record { position, raw } => {
            let len = raw.get().len();
            if len > limits.max_record_bytes {
                out.error(position, format!("record is {len} bytes, above the bound of {} bytes; it is skipped", limits.max_record_bytes));
                return;
            }
            // The common record read without a value tree; anything unusual, and every
            // error, is the general path's.
            if let Some(action) = fast.and_then(|f| f(raw.get())) {
                out.action(action);
                return;
            }
            match serde_json::from_str::<Value>(raw.get()) {
                Ok(value) => record(position, value, &mut out),
                Err(e) => out.error(position, format!("not JSON: {e}")),
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// Typed field access with precise reasons
// ---------------------------------------------------------------------------------------

/// Looks up a dotted path. Absent and `null` are both "not there"; a non-object on the way
/// is a type error naming the offending prefix, so the operator sees which field is wrong.
fn get_path<'a>(root: &'a Value, path: &[&str]) -> Result<Option<&'a Value>, String> {
    let mut cur = root;
    for (n, key) in path.iter().enumerate() {
        let Value::Object(map) = cur else {
            return Err(format!("field `{}` is not an object", path[..n].join(".")));
        };
        match map.get(*key) {
            Some(Value::Null) => return Ok(None),
            Some(v) => cur = v,
            None => return Ok(flattened(map, &path[n..])),
        }
    }
    Ok(Some(cur))
}

/// SIEM exports (Logstash, OpenSearch) may flatten nested fields into dotted keys
/// (`"userIdentity.accessKeyId"`), wholly or in part: the rest of a path that is missing as
/// nested objects is looked up that way.
fn flattened<'a>(map: &'a serde_json::Map<String, Value>, rest: &[&str]) -> Option<&'a Value> {
    (2..=rest.len()).find_map(|j| {
        let v = map.get(&rest[..j].join("."))?;
        match (v, &rest[j..]) {
            (Value::Null, _) => None,
            (v, []) => Some(v),
            (v, more) => get_path(v, more).ok().flatten(),
        }
    })
}

fn req_str(root: &Value, path: &[&str]) -> Result<String, String> {
    match get_path(root, path)? {
        None => Err(format!("missing field `{}`", path.join("."))),
        Some(Value::String(s)) if s.is_empty() => Err(format!("field `{}` is empty", path.join("."))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field `{}` is not a string", path.join("."))),
    }
}

/// Empty strings count as absent: CloudTrail writes `"accessKeyId": ""` for some callers,
/// and an empty key must never match another record's empty key during attribution.
fn opt_str(root: &Value, path: &[&str]) -> Result<Option<String>, String> {
    match get_path(root, path)? {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("field `{}` is not a string", path.join("."))),
    }
}

fn req_time(root: &Value, path: &[&str]) -> Result<i64, String> {
    let s = req_str(root, path)?;
    parse_rfc3339(&s).ok_or_else(|| format!("field `{}` is not an RFC 3339 timestamp: {s:?}", path.join(".")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
mod tests {
    use super::*;

    #[test]
    fn dotted_keys_are_found_when_nested_objects_are_not() {
        let v: Value = serde_json::json!({
            "userIdentity.type": "IAMUser",
            "userIdentity.accessKeyId": "AKIAFLAT",
            "responseElements": {"credentials.accessKeyId": "ASIAFLAT"},
        });
        assert_eq!(get_path(&v, &["userIdentity", "type"]).unwrap().unwrap(), "IAMUser");
        assert_eq!(opt_str(&v, &["userIdentity", "accessKeyId"]).unwrap().as_deref(), Some("AKIAFLAT"));
        assert_eq!(opt_str(&v, &["responseElements", "credentials", "accessKeyId"]).unwrap().as_deref(), Some("ASIAFLAT"));
        assert_eq!(opt_str(&v, &["userIdentity", "arn"]).unwrap(), None);
        assert_eq!(opt_str(&v, &["userIdentity", "type", "x"]).unwrap(), None);
    }
}
