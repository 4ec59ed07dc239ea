//! GCP Cloud Audit Logs: LogEntry objects as JSON lines (GCS sink exports, `gcloud logging
//! read --format=json` piped through `jq -c`) or as a JSON array (`gcloud ... --format=json`).

use std::path::Path;

use serde_json::Value;

use super::{
    CloudAction, Emitter, Kind, Layout, Limits, Parsed, Position, Provider, Sink, get_path, opt_str, parse_document, parse_path_with, req_str, req_time,
};

const LAYOUT: Layout = Layout { element: "entry", records_key: None };

/// How GCP audit-log files are told from other files in a directory.
pub(crate) const KIND: Kind = Kind {
    name: "GCP audit log",
    markers: &["\"protoPayload\"", "\"insertId\""],
    not_events: &[],
    skip_dirs: &[],
    other: ("CloudTrail", &["\"eventID\"", "\"eventSource\"", "\"Records\""], "sigil-collector ingest cloudtrail"),
};

/// Parses one GCP audit-log input (plain or gzip). Never fails as a whole: complete entries
/// are returned even when others, or the document itself, are damaged.
pub fn parse(source_name: &str, bytes: &[u8]) -> Parsed {
    Parsed::of(source_name, bytes, parse_into)
}

/// [`parse`], handing each action and error to `sink` as it is read.
pub fn parse_into(source_name: &str, bytes: &[u8], limits: &Limits, sink: &mut dyn Sink) {
    parse_document(source_name, bytes, &LAYOUT, limits, sink, None, record);
}

/// Parses a file, or every GCP audit-log file under a directory (recursively, sorted by
/// path, judged by content whatever the extension; other files are reported as skipped).
pub fn parse_path(path: &Path) -> Result<Parsed, std::io::Error> {
    Parsed::collect(|out| parse_path_into(path, &Limits::default(), out))
}

/// [`parse_path`], handing results to `sink` file by file.
pub fn parse_path_into(path: &Path, limits: &Limits, sink: &mut dyn Sink) -> std::io::Result<()> {
    parse_path_with(path, &KIND, limits, sink, parse_into)
}

fn record(position: Position, value: Value, out: &mut Emitter<'_>) {
    match to_action(value) {
        Ok(action) => out.action(action),
        Err(reason) => out.error(position, reason),
    }
}

/// Classifies the authenticated principal so that service-account activity (the thing a
/// workload identity maps to) can be told apart from humans and federated identities.
fn principal_type(principal: &str) -> Option<&'static str> {
    if principal.starts_with("principal://") || principal.starts_with("principalSet://") {
        Some("federated")
    } else if principal.ends_with(".gserviceaccount.com") {
        Some("service_account")
    } else if principal.contains('@') {
        Some("user")
    } else {
        None
    }
}

/// One LogEntry. Every field we read is type-checked, so an entry that lies about its shape
/// is reported instead of being half-ingested with silently missing attribution.
fn to_action(entry: Value) -> Result<CloudAction, String> {
    if !entry.is_object() {
        return Err("entry is not a JSON object".into());
    }
    let id = req_str(&entry, &["insertId"])?;
    let time_unix = req_time(&entry, &["timestamp"])?;
    let action = req_str(&entry, &["protoPayload", "methodName"])?;
    let service = req_str(&entry, &["protoPayload", "serviceName"])?;
    let region = match opt_str(&entry, &["resource", "labels", "location"])? {
        Some(location) => Some(location),
        None => opt_str(&entry, &["resource", "labels", "region"])?,
    };
    // Workload identity federation callers may have no email, only a principal subject.
    let principal = match opt_str(&entry, &["protoPayload", "authenticationInfo", "principalEmail"])? {
        Some(email) => Some(email),
        None => opt_str(&entry, &["protoPayload", "authenticationInfo", "principalSubject"])?,
    };
    let principal_type = principal.as_deref().and_then(principal_type).map(str::to_owned);
    // A service-account key is GCP's counterpart of an AWS access key id: it names the
    // long-lived credential the call was signed with.
    let access_key_id = opt_str(&entry, &["protoPayload", "authenticationInfo", "serviceAccountKeyName"])?;
    let source_ip = opt_str(&entry, &["protoPayload", "requestMetadata", "callerIp"])?;
    let user_agent = opt_str(&entry, &["protoPayload", "requestMetadata", "callerSuppliedUserAgent"])?;
    let error_code = match get_path(&entry, &["protoPayload", "status", "code"])? {
        None => None,
        Some(Value::Number(n)) if n.as_i64() == Some(0) => None,
        Some(Value::Number(n)) if n.is_i64() => Some(n.to_string()),
        Some(_) => return Err("field `protoPayload.status.code` is not an integer".into()),
    };
    let delegation = delegation_chain(&entry)?;
    Ok(CloudAction {
        provider: Provider::Gcp,
        id,
        time_unix,
        action,
        service,
        region,
        principal,
        principal_type,
        access_key_id,
        source_ip,
        user_agent,
        error_code,
        assumed: None,
        delegation,
        raw: entry.to_string(),
    })
}

/// Who actually stands behind an impersonated service account, in the order GCP lists
/// them. Third-party principals have no email; their subject (or, lacking one, their claims
/// as compact JSON) is the best identity there is.
fn delegation_chain(entry: &Value) -> Result<Vec<String>, String> {
    const FIELD: &str = "protoPayload.authenticationInfo.serviceAccountDelegationInfo";
    let links = match get_path(entry, &["protoPayload", "authenticationInfo", "serviceAccountDelegationInfo"])? {
        None => return Ok(Vec::new()),
        Some(Value::Array(links)) => links,
        Some(_) => return Err(format!("field `{FIELD}` is not an array")),
    };
    let mut chain = Vec::with_capacity(links.len());
    for (n, link) in links.iter().enumerate() {
        if !link.is_object() {
            return Err(format!("field `{FIELD}[{n}]` is not an object"));
        }
        let named = |path: &[&str]| opt_str(link, path).map_err(|reason| reason.replacen("field `", &format!("field `{FIELD}[{n}]."), 1));
        if let Some(email) = named(&["firstPartyPrincipal", "principalEmail"])? {
            chain.push(email);
        } else if let Some(subject) = named(&["principalSubject"])? {
            chain.push(subject);
        } else if let Some(claims) = link.get("thirdPartyPrincipal").and_then(|p| p.get("thirdPartyClaims"))
            && !claims.is_null()
        {
            chain.push(claims.to_string());
        }
    }
    Ok(chain)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn data(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gcp").join(rel)
    }

    fn read(rel: &str) -> (String, Vec<u8>) {
        let path = data(rel);
        (path.display().to_string(), std::fs::read(&path).unwrap())
    }

    fn ids(parsed: &Parsed) -> Vec<&str> {
        parsed.actions.iter().map(|a| a.id.as_str()).collect()
    }

    const SA: &str = "deployer@sigil-demo-405112.iam.gserviceaccount.com";

    fn check_impersonated(a: &CloudAction) {
        assert_eq!(a.provider, Provider::Gcp);
        assert_eq!(a.id, "1x9sigilfx01a");
        assert_eq!(a.time_unix, 1_795_442_709); // 2026-11-23T14:05:09.175812Z
        assert_eq!(a.action, "storage.objects.create");
        assert_eq!(a.service, "storage.googleapis.com");
        assert_eq!(a.region.as_deref(), Some("us-central1"));
        assert_eq!(a.principal.as_deref(), Some(SA));
        assert_eq!(a.principal_type.as_deref(), Some("service_account"));
        assert_eq!(a.access_key_id, None);
        assert_eq!(a.source_ip.as_deref(), Some("203.0.113.77"));
        assert!(a.user_agent.as_deref().unwrap().starts_with("google-cloud-sdk gcloud/498.0.0 "));
        assert_eq!(a.error_code, None, "empty status is success");
        assert_eq!(a.assumed, None);
        assert_eq!(a.delegation, ["alice@sigil.example", "ci-runner@sigil-demo-405112.iam.gserviceaccount.com"]);
        assert_eq!(serde_json::from_str::<Value>(&a.raw).unwrap()["logName"], "projects/sigil-demo-405112/logs/cloudaudit.googleapis.com%2Fdata_access");
    }

    fn check_denied(a: &CloudAction) {
        assert_eq!(a.id, "1x9sigilfx02b");
        assert_eq!(a.time_unix, 1_795_442_789); // 14:06:29.998102Z
        assert_eq!(a.action, "google.iam.admin.v1.CreateServiceAccountKey");
        assert_eq!(a.service, "iam.googleapis.com");
        assert_eq!(a.region, None);
        assert_eq!(a.principal.as_deref(), Some("bob@sigil.example"));
        assert_eq!(a.principal_type.as_deref(), Some("user"));
        assert_eq!(a.error_code.as_deref(), Some("7"));
        assert!(a.delegation.is_empty());
    }

    #[test]
    fn json_lines() {
        let (name, bytes) = read("audit.jsonl");
        let parsed = parse(&name, &bytes);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(ids(&parsed), ["1x9sigilfx01a", "1x9sigilfx02b", "-sigilfx03c"]);
        check_impersonated(&parsed.actions[0]);
        check_denied(&parsed.actions[1]);
        let key = &parsed.actions[2];
        assert_eq!(key.time_unix, 1_795_442_820); // 14:07:00.118Z
        assert_eq!(key.action, "v1.compute.instances.insert");
        assert_eq!(key.region, None, "zones are not regions");
        assert_eq!(
            key.access_key_id.as_deref(),
            Some(
                "//iam.googleapis.com/projects/sigil-demo-405112/serviceAccounts/deployer@sigil-demo-405112.iam.gserviceaccount.com/keys/0f3c9a1d2e4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d"
            )
        );
    }

    #[test]
    fn gcloud_json_array() {
        let (name, bytes) = read("gcloud_read.json");
        let parsed = parse(&name, &bytes);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.actions.len(), 2);
        check_impersonated(&parsed.actions[0]);
        check_denied(&parsed.actions[1]);
        // Cut inside the second entry: the first survives, the cut is located.
        let parsed = parse(&name, &bytes[..bytes.len() - 200]);
        assert_eq!(ids(&parsed), ["1x9sigilfx01a"]);
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(parsed.errors[0].source_name, name);
        assert!(parsed.errors[0].position.starts_with("byte "), "{:?}", parsed.errors[0]);
        assert!(parsed.errors[0].reason.contains("entry 2 starting here is incomplete"), "{:?}", parsed.errors[0]);
    }

    #[test]
    fn bad_lines_only_cost_themselves() {
        let (name, bytes) = read("bad.jsonl");
        let parsed = parse(&name, &bytes);
        assert_eq!(ids(&parsed), ["1x9sigilfx01a", "-sigilfx03c"]);
        let got: Vec<(&str, &str)> = parsed.errors.iter().map(|e| (e.position.as_str(), e.reason.as_str())).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(parsed.errors.iter().all(|e| e.source_name == name));
        assert_eq!(got[0].0, "line 2");
        assert!(got[0].1.starts_with("not JSON: EOF while parsing"), "{got:?}");
        assert_eq!(got[1], ("line 3", "missing field `insertId`"));
        assert_eq!(got[2], ("line 4", "field `protoPayload.status.code` is not an integer"));
        assert_eq!(got[3], ("line 5", "field `timestamp` is not an RFC 3339 timestamp: \"yesterday\""));
    }

    #[test]
    fn field_level_errors_and_variants() {
        let (_, bytes) = read("audit.jsonl");
        let first: Value = serde_json::from_slice(bytes.split(|&c| c == b'\n').next().unwrap()).unwrap();
        let cases: [(&str, Value, &str); 6] = [
            ("/protoPayload", "x".into(), "field `protoPayload` is not an object"),
            ("/protoPayload/methodName", Value::Null, "missing field `protoPayload.methodName`"),
            ("/protoPayload/serviceName", 1.into(), "field `protoPayload.serviceName` is not a string"),
            ("/protoPayload/requestMetadata/callerIp", true.into(), "field `protoPayload.requestMetadata.callerIp`"),
            ("/protoPayload/authenticationInfo/serviceAccountDelegationInfo", serde_json::json!({}), "serviceAccountDelegationInfo` is not an array"),
            (
                "/protoPayload/authenticationInfo/serviceAccountDelegationInfo/1/firstPartyPrincipal/principalEmail",
                5.into(),
                "field `protoPayload.authenticationInfo.serviceAccountDelegationInfo[1].firstPartyPrincipal.principalEmail` is not a string",
            ),
        ];
        for (pointer, replacement, reason) in cases {
            let mut entry = first.clone();
            *entry.pointer_mut(pointer).unwrap() = replacement;
            let parsed = parse("g", entry.to_string().as_bytes());
            assert!(parsed.actions.is_empty(), "{pointer}");
            assert_eq!(parsed.errors.len(), 1, "{pointer}");
            assert_eq!(parsed.errors[0].position, "line 1");
            assert!(parsed.errors[0].reason.contains(reason), "{pointer}: {}", parsed.errors[0].reason);
        }
        // Federated caller without email; third-party link in the chain.
        let mut entry = first.clone();
        let auth = &mut entry["protoPayload"]["authenticationInfo"];
        auth["principalEmail"] = Value::Null;
        auth["principalSubject"] = "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/subject/run-7734".into();
        auth["serviceAccountDelegationInfo"] = serde_json::json!([
            {"thirdPartyPrincipal": {"thirdPartyClaims": {"sub": "run-7734"}}},
            {"principalSubject": "serviceAccount:ci-runner@sigil-demo-405112.iam.gserviceaccount.com"},
            {}
        ]);
        let parsed = parse("g", entry.to_string().as_bytes());
        let a = &parsed.actions[0];
        assert_eq!(a.principal_type.as_deref(), Some("federated"));
        assert_eq!(a.delegation, ["{\"sub\":\"run-7734\"}", "serviceAccount:ci-runner@sigil-demo-405112.iam.gserviceaccount.com"]);
        // Offsets in timestamps.
        entry["timestamp"] = "2026-11-23T16:05:09+02:00".into();
        assert_eq!(parse("g", entry.to_string().as_bytes()).actions[0].time_unix, 1_795_442_709);
    }

    #[test]
    fn directory_walk() {
        let parsed = parse_path(&data("dir")).unwrap();
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        // Sorted by file name: activity shard, then the gzipped data_access shard.
        assert_eq!(ids(&parsed), ["1x9sigilfx02b", "1x9sigilfx01a", "-sigilfx03c"]);
        check_denied(&parsed.actions[0]);
        check_impersonated(&parsed.actions[1]);
        // The whole tree: bad.jsonl's errors are attributed to it.
        let parsed = parse_path(&data("")).unwrap();
        assert_eq!(parsed.errors.len(), 4);
        assert!(parsed.errors.iter().all(|e| e.source_name.ends_with("bad.jsonl")));
        assert_eq!(parsed.actions.len(), 2 + 3 + 3 + 2);
    }
}
