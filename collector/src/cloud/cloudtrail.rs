//! AWS CloudTrail: S3 log deliveries (`{"Records":[...]}`, usually gzipped) and the ad-hoc
//! shapes people export them in (one record, a bare array, JSON lines, `jq` output).

use std::path::Path;

use serde_json::Value;

use super::{
    AssumedRole, CloudAction, Emitter, Kind, Layout, Limits, Parsed, Position, Provider, Sink, get_path, opt_str, parse_document, parse_expiration,
    parse_path_with, req_str, req_time,
};

const LAYOUT: Layout = Layout { element: "record", records_key: Some("Records") };

/// How CloudTrail files are told from other files in a directory.
pub(crate) const KIND: Kind = Kind {
    name: "CloudTrail",
    markers: &["\"eventID\"", "\"eventSource\"", "\"eventName\"", "\"Records\""],
    not_events: &[
        ("\"digestStartTime\"", "CloudTrail digest file (an integrity manifest, not events)"),
        ("\"digestS3Object\"", "CloudTrail digest file (an integrity manifest, not events)"),
    ],
    skip_dirs: &[("CloudTrail-Digest", "directory of CloudTrail digest files (integrity manifests, not events)")],
    other: ("GCP audit log", &["\"protoPayload\"", "\"insertId\""], "sigil-collector ingest gcp-audit"),
};

/// The STS calls that mint temporary credentials: these are what tie a later call's
/// `ASIA…` key back to the identity (OIDC subject, SAML subject, or caller) that obtained it.
const ASSUME_ROLE_EVENTS: [&str; 3] = ["AssumeRole", "AssumeRoleWithWebIdentity", "AssumeRoleWithSAML"];

/// Parses one CloudTrail input (plain or gzip). Never fails as a whole: complete records are
/// returned even when others, or the document itself, are damaged.
pub fn parse(source_name: &str, bytes: &[u8]) -> Parsed {
    Parsed::of(source_name, bytes, parse_into)
}

/// [`parse`], handing each action and error to `sink` as it is read.
pub fn parse_into(source_name: &str, bytes: &[u8], limits: &Limits, sink: &mut dyn Sink) {
    parse_document(source_name, bytes, &LAYOUT, limits, sink, Some(|text| super::borrowed::action(text, &ASSUME_ROLE_EVENTS)), record);
}

/// Parses a file, or every CloudTrail file under a directory (recursively, sorted by path,
/// judged by content whatever the extension; `CloudTrail-Digest` directories and other
/// files are reported as skipped).
pub fn parse_path(path: &Path) -> Result<Parsed, std::io::Error> {
    Parsed::collect(|out| parse_path_into(path, &Limits::default(), out))
}

/// [`parse_path`], handing results to `sink` file by file.
pub fn parse_path_into(path: &Path, limits: &Limits, sink: &mut dyn Sink) -> std::io::Result<()> {
    parse_path_with(path, &KIND, limits, sink, parse_into)
}

/// Accepts a record, or a container of records where one was expected: a whole delivery
/// file inside an array, an EventBridge "AWS API Call via CloudTrail" event, or an
/// OpenSearch/Elasticsearch hit (`_source`) from a SIEM export.
fn record(position: Position, value: Value, out: &mut Emitter<'_>) {
    if let Value::Object(map) = &value
        && !map.contains_key("eventID")
    {
        if let Some(Value::Array(records)) = map.get("Records") {
            for (n, record) in records.iter().enumerate() {
                match to_action(record.clone()) {
                    Ok(action) => out.action(action),
                    Err(reason) => out.error(format_args!("{position} record {}", n + 1), reason),
                }
            }
            return;
        }
        if let Some(source @ Value::Object(_)) = map.get("_source") {
            match to_action(source.clone()) {
                Ok(action) => out.action(action),
                Err(reason) => out.error(position, format!("in OpenSearch `_source`: {reason}")),
            }
            return;
        }
        if let (Some(Value::String(kind)), Some(detail @ Value::Object(_))) = (map.get("detail-type"), map.get("detail"))
            && kind.ends_with("via CloudTrail")
        {
            match to_action(detail.clone()) {
                Ok(action) => out.action(action),
                Err(reason) => out.error(position, format!("in EventBridge `detail`: {reason}")),
            }
            return;
        }
    }
    match to_action(value) {
        Ok(action) => out.action(action),
        Err(reason) => out.error(position, reason),
    }
}

/// When the call happened: `eventTime`, or `@timestamp` where Logstash's cloudtrail codec
/// (and SIEM exports built on it) moved it.
fn event_time(record: &Value) -> Result<i64, String> {
    match get_path(record, &["eventTime"])? {
        None if get_path(record, &["@timestamp"])?.is_some() => req_time(record, &["@timestamp"]),
        None => Err("missing field `eventTime` (or Logstash's `@timestamp`)".into()),
        Some(_) => req_time(record, &["eventTime"]),
    }
}

/// One CloudTrail record. Every field we read is type-checked, so a record that lies about
/// its shape is reported instead of being half-ingested with silently missing attribution.
fn to_action(record: Value) -> Result<CloudAction, String> {
    if !record.is_object() {
        return Err("record is not a JSON object".into());
    }
    let id = req_str(&record, &["eventID"])?;
    let time_unix = event_time(&record)?;
    let action = req_str(&record, &["eventName"])?;
    let service = req_str(&record, &["eventSource"])?;
    let region = opt_str(&record, &["awsRegion"])?;
    let principal = opt_str(&record, &["userIdentity", "arn"])?;
    let principal_type = opt_str(&record, &["userIdentity", "type"])?;
    let access_key_id = opt_str(&record, &["userIdentity", "accessKeyId"])?;
    let source_ip = opt_str(&record, &["sourceIPAddress"])?;
    let user_agent = opt_str(&record, &["userAgent"])?;
    let error_code = opt_str(&record, &["errorCode"])?;
    let raw = record.to_string();
    let assumed = if service == "sts.amazonaws.com" && ASSUME_ROLE_EVENTS.contains(&action.as_str()) {
        Some(assumed_role(&record, principal_type.as_deref())?)
    } else {
        None
    };
    Ok(CloudAction {
        provider: Provider::Aws,
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
        assumed,
        delegation: Vec::new(),
        raw,
    })
}

/// Response elements are null when the call was denied; the request side (which role, which
/// session name) is still worth keeping because a denied assume is itself a signal.
fn assumed_role(record: &Value, principal_type: Option<&str>) -> Result<AssumedRole, String> {
    let federated = matches!(principal_type, Some("WebIdentityUser" | "SAMLUser"));
    let subject = match opt_str(record, &["responseElements", "subjectFromWebIdentityToken"])? {
        Some(s) => Some(s),
        // AssumeRoleWithSAML reports the assertion's subject under a different name.
        None => match opt_str(record, &["responseElements", "subject"])? {
            Some(s) => Some(s),
            None if federated => opt_str(record, &["userIdentity", "userName"])?,
            None => None,
        },
    };
    let provider = match opt_str(record, &["responseElements", "provider"])? {
        Some(p) => Some(p),
        None => match opt_str(record, &["responseElements", "issuer"])? {
            Some(p) => Some(p),
            None => opt_str(record, &["userIdentity", "identityProvider"])?,
        },
    };
    let expiration_unix = match get_path(record, &["responseElements", "credentials", "expiration"])? {
        None => None,
        Some(Value::String(s)) => parse_expiration(s),
        Some(_) => {
            return Err("field `responseElements.credentials.expiration` is not a string".into());
        }
    };
    Ok(AssumedRole {
        issued_access_key_id: opt_str(record, &["responseElements", "credentials", "accessKeyId"])?,
        role_arn: opt_str(record, &["requestParameters", "roleArn"])?,
        role_session_name: opt_str(record, &["requestParameters", "roleSessionName"])?,
        web_identity_subject: subject,
        web_identity_provider: provider,
        audience: opt_str(record, &["responseElements", "audience"])?,
        expiration_unix,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use super::*;
    use crate::cloud::RecordError;

    fn data(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cloudtrail").join(rel)
    }

    fn read(rel: &str) -> (String, Vec<u8>) {
        let path = data(rel);
        (path.display().to_string(), std::fs::read(&path).unwrap())
    }

    fn ids(parsed: &Parsed) -> Vec<&str> {
        parsed.actions.iter().map(|a| a.id.as_str()).collect()
    }

    fn assert_error(err: &RecordError, source: &str, position: &str, reason: &str) {
        assert_eq!(err.source_name, source, "{err}");
        assert_eq!(err.position, position, "{err}");
        assert!(err.reason.contains(reason), "reason {:?} lacks {reason:?}", err.reason);
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    const GETOBJECT_ID: &str = "3f6d2a10-8b1c-4e57-9d0a-5c1e7a000001";
    const WEBID_ID: &str = "9a4c1e77-2b3d-4f60-8a1b-6d2e8b000002";
    const PUTOBJECT_ID: &str = "c5e8f2d4-6a7b-4c3d-9e1f-0a2b3c000003";
    const ROLE_SESSION: &str = "arn:aws:sts::111122223333:assumed-role/sigil-ci-deploy/gha-run-7734";
    const SUBJECT: &str = "repo:sigil-dev/demo:ref:refs/heads/main";

    #[test]
    fn iam_user_get_object() {
        let (name, bytes) = read("iamuser_getobject.json");
        let parsed = parse(&name, &bytes);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.actions.len(), 1);
        let a = &parsed.actions[0];
        assert_eq!(a.provider, Provider::Aws);
        assert_eq!(a.id, GETOBJECT_ID);
        assert_eq!(a.time_unix, 1_795_442_140); // 2026-11-23T13:55:40Z
        assert_eq!(a.action, "GetObject");
        assert_eq!(a.service, "s3.amazonaws.com");
        assert_eq!(a.region.as_deref(), Some("us-east-1"));
        assert_eq!(a.principal.as_deref(), Some("arn:aws:iam::111122223333:user/build-bot"));
        assert_eq!(a.principal_type.as_deref(), Some("IAMUser"));
        assert_eq!(a.access_key_id.as_deref(), Some("AKIASIGILEXAMPLE0001"));
        assert_eq!(a.source_ip.as_deref(), Some("198.51.100.23"));
        assert!(a.user_agent.as_deref().unwrap().starts_with("[aws-cli/2.17.20 "));
        assert_eq!(a.error_code, None);
        assert_eq!(a.assumed, None);
        assert!(a.delegation.is_empty());
        assert_eq!(serde_json::from_str::<Value>(&a.raw).unwrap()["requestParameters"]["key"], "releases/v0.1.0/sigil-agent.tar.gz");
    }

    fn check_web_identity_flow(parsed: &Parsed) {
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(ids(parsed), [WEBID_ID, PUTOBJECT_ID]);

        let assume = &parsed.actions[0];
        assert_eq!(assume.time_unix, 1_795_442_531);
        assert_eq!(assume.action, "AssumeRoleWithWebIdentity");
        assert_eq!(assume.service, "sts.amazonaws.com");
        assert_eq!(assume.principal, None, "WebIdentityUser records carry no ARN");
        assert_eq!(assume.principal_type.as_deref(), Some("WebIdentityUser"));
        assert_eq!(assume.access_key_id, None);
        assert_eq!(assume.source_ip.as_deref(), Some("203.0.113.45"));
        assert_eq!(
            assume.assumed,
            Some(AssumedRole {
                issued_access_key_id: Some("ASIASIGILEXAMPLE0002".into()),
                role_arn: Some("arn:aws:iam::111122223333:role/sigil-ci-deploy".into()),
                role_session_name: Some("gha-run-7734".into()),
                web_identity_subject: Some(SUBJECT.into()),
                web_identity_provider: Some("arn:aws:iam::111122223333:oidc-provider/token.actions.githubusercontent.com".into()),
                audience: Some("sts.amazonaws.com".into()),
                expiration_unix: Some(1_795_446_131), // "Nov 23, 2026, 3:02:11 PM"
            })
        );

        let put = &parsed.actions[1];
        assert_eq!(put.time_unix, 1_795_442_607); // 14:03:27.512Z, fraction truncated
        assert_eq!(put.action, "PutObject");
        assert_eq!(put.principal.as_deref(), Some(ROLE_SESSION));
        assert_eq!(put.principal_type.as_deref(), Some("AssumedRole"));
        assert_eq!(put.access_key_id.as_deref(), Some("ASIASIGILEXAMPLE0002"));
        assert_eq!(put.assumed, None);
    }

    #[test]
    fn web_identity_flow_plain_and_gzipped() {
        let (name, bytes) = read("webidentity_flow.json");
        check_web_identity_flow(&parse(&name, &bytes));
        let (name, gz) = read("webidentity_flow.json.gz");
        assert_eq!(&gz[..2], [0x1f, 0x8b]);
        let parsed = parse(&name, &gz);
        check_web_identity_flow(&parsed);
        assert_eq!(parsed.actions, parse("x", &bytes).actions);
    }

    #[test]
    fn other_export_shapes() {
        let (_, bytes) = read("webidentity_flow.json");
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        let records = doc["Records"].as_array().unwrap();

        // A bare array.
        let parsed = parse("a", serde_json::to_string(records).unwrap().as_bytes());
        check_web_identity_flow(&parsed);
        // A single record object.
        let parsed = parse("s", serde_json::to_string_pretty(&records[0]).unwrap().as_bytes());
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(ids(&parsed), [WEBID_ID]);
        // `jq '.Records[]'`: concatenated pretty objects.
        let jq = records.iter().map(|r| serde_json::to_string_pretty(r).unwrap()).collect::<Vec<_>>().join("\n");
        check_web_identity_flow(&parse("jq", jq.as_bytes()));
        // Same, but damaged: the second object is cut short.
        let cut = &jq[..jq.len() - 40];
        let parsed = parse("jq", cut.as_bytes());
        assert_eq!(ids(&parsed), [WEBID_ID]);
        assert_eq!(parsed.errors.len(), 1);
        assert!(parsed.errors[0].reason.contains("truncated"), "{:?}", parsed.errors);
        // EventBridge envelope.
        let eb = serde_json::json!({
            "version": "0", "id": "sigil-eb-1", "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.sts", "detail": records[0],
        });
        let parsed = parse("eb", eb.to_string().as_bytes());
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(ids(&parsed), [WEBID_ID]);
        // BOM, CRLF and a batch line inside JSON lines.
        let batch = serde_json::to_string(&doc).unwrap();
        let lines = format!("\u{feff}{}\r\n{batch}\r\n", serde_json::to_string(&records[1]).unwrap());
        let parsed = parse("l", lines.as_bytes());
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(ids(&parsed), [PUTOBJECT_ID, WEBID_ID, PUTOBJECT_ID]);
        // Empty inputs are not errors.
        for empty in [&b""[..], b"  \n", b"{\"Records\":[]}", b"[]"] {
            let parsed = parse("e", empty);
            assert!(parsed.actions.is_empty() && parsed.errors.is_empty(), "{empty:?}: {:?}", parsed.errors);
        }
    }

    #[test]
    fn truncated_file_keeps_complete_records() {
        let (name, bytes) = read("truncated.json");
        let parsed = parse(&name, &bytes);
        assert_eq!(ids(&parsed), [GETOBJECT_ID, WEBID_ID]);
        assert_eq!(parsed.errors.len(), 1, "{:?}", parsed.errors);
        // The cut record starts right after the second record's closing brace and comma.
        let text = std::str::from_utf8(&bytes).unwrap();
        let third = text.rfind(",{\"eventVersion\"").unwrap() + 1;
        assert_error(&parsed.errors[0], &name, &format!("byte {third}"), "record 3 starting here is incomplete");
    }

    #[test]
    fn truncated_gzip_keeps_complete_records() {
        let (_, bytes) = read("iamuser_getobject.json");
        let record = std::str::from_utf8(&bytes).unwrap().trim_start_matches("{\"Records\":[").trim_end_matches("]}");
        let doc = format!("{{\"Records\":[{}]}}", vec![record; 200].join(","));
        let gz = gzip(doc.as_bytes());
        let parsed = parse("cut.json.gz", &gz[..gz.len() / 2]);
        assert!(!parsed.actions.is_empty() && parsed.actions.len() < 200, "{}", parsed.actions.len());
        assert_eq!(parsed.errors.len(), 2, "{:?}", parsed.errors);
        assert!(parsed.errors[0].reason.contains("gzip stream is damaged"), "{:?}", parsed.errors[0]);
        assert!(parsed.errors[1].reason.contains("truncated"), "{:?}", parsed.errors[1]);
    }

    #[test]
    fn wrong_types_only_cost_their_records() {
        let (name, bytes) = read("bad_types.json");
        let parsed = parse(&name, &bytes);
        assert_eq!(ids(&parsed), [WEBID_ID, PUTOBJECT_ID]);
        assert_eq!(parsed.errors.len(), 4, "{:?}", parsed.errors);
        assert_error(&parsed.errors[0], &name, "record 2", "field `eventTime` is not a string");
        assert_error(&parsed.errors[1], &name, "record 3", "field `userIdentity` is not an object");
        assert_error(&parsed.errors[2], &name, "record 4", "missing field `eventID`");
        assert_error(&parsed.errors[3], &name, "record 5", "field `sourceIPAddress` is not a string");
        assert_eq!(parsed.errors[0].to_string(), format!("{name}: record 2: field `eventTime` is not a string"));
    }

    #[test]
    fn field_level_errors() {
        let base: Value = serde_json::from_slice(&read("webidentity_flow.json").1).unwrap();
        let webid = &base["Records"][0];
        let cases: [(&str, Value, &str); 7] = [
            ("/eventTime", "23 Nov 2026".into(), "field `eventTime` is not an RFC 3339 timestamp"),
            ("/eventName", Value::Null, "missing field `eventName`"),
            ("/eventSource", 7.into(), "field `eventSource` is not a string"),
            ("/eventID", "".into(), "field `eventID` is empty"),
            ("/responseElements/credentials", "x".into(), "field `responseElements.credentials` is not an object"),
            ("/responseElements/credentials/expiration", 1.into(), "field `responseElements.credentials.expiration`"),
            ("/requestParameters/roleArn", serde_json::json!({}), "field `requestParameters.roleArn` is not a string"),
        ];
        for (pointer, replacement, reason) in cases {
            let mut record = webid.clone();
            *record.pointer_mut(pointer).unwrap() = replacement;
            let parsed = parse("f", serde_json::json!({ "Records": [record] }).to_string().as_bytes());
            assert!(parsed.actions.is_empty(), "{pointer}");
            assert_eq!(parsed.errors.len(), 1, "{pointer}");
            assert_error(&parsed.errors[0], "f", "record 1", reason);
        }
        // A non-object record, and an unparseable expiry which only loses the expiry.
        let parsed = parse("f", b"{\"Records\":[42]}");
        assert_error(&parsed.errors[0], "f", "record 1", "record is not a JSON object");
        let mut record = webid.clone();
        record["responseElements"]["credentials"]["expiration"] = "whenever".into();
        let parsed = parse("f", record.to_string().as_bytes());
        assert_eq!(parsed.actions[0].assumed.as_ref().unwrap().expiration_unix, None);
        // Denied assume: no response, request side kept, subject from userIdentity.
        let mut record = webid.clone();
        record["responseElements"] = Value::Null;
        record["errorCode"] = "AccessDenied".into();
        let parsed = parse("f", record.to_string().as_bytes());
        let a = &parsed.actions[0];
        assert_eq!(a.error_code.as_deref(), Some("AccessDenied"));
        let assumed = a.assumed.as_ref().unwrap();
        assert_eq!(assumed.issued_access_key_id, None);
        assert_eq!(assumed.role_session_name.as_deref(), Some("gha-run-7734"));
        assert_eq!(assumed.web_identity_subject.as_deref(), Some(SUBJECT));
        assert_eq!(assumed.web_identity_provider.as_deref(), Some("token.actions.githubusercontent.com"));
    }

    #[test]
    fn json_lines_bad_line_costs_only_itself() {
        let (name, bytes) = read("records.jsonl");
        let parsed = parse(&name, &bytes);
        assert_eq!(ids(&parsed), [GETOBJECT_ID, WEBID_ID, PUTOBJECT_ID]);
        assert_eq!(parsed.errors.len(), 1, "{:?}", parsed.errors);
        assert_error(&parsed.errors[0], &name, "line 2", "not JSON: expected ident at line 1 column 2");
        // Clean streams take the fast path; positions must still be the starting line.
        let lines = std::str::from_utf8(&bytes).unwrap().replace("this is not json\n", "\n{\"eventTime\":\"2026-11-23T14:02:11Z\"}\n");
        let parsed = parse(&name, lines.as_bytes());
        assert_eq!(ids(&parsed), [GETOBJECT_ID, WEBID_ID, PUTOBJECT_ID]);
        assert_eq!(parsed.errors.len(), 1, "{:?}", parsed.errors);
        assert_error(&parsed.errors[0], &name, "line 3", "missing field `eventID`");
    }

    #[test]
    fn directory_walk() {
        let dir = data("dir");
        let parsed = parse_path(&dir).unwrap();
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(ids(&parsed), [GETOBJECT_ID, WEBID_ID, PUTOBJECT_ID, "e1d2c3b4-a596-4877-8a9b-0c1d2e000004", "f2e3d4c5-b6a7-4988-9a0b-1c2d3e000005"]);
        let assume = &parsed.actions[3];
        assert_eq!(assume.action, "AssumeRole");
        assert_eq!(assume.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            assume.assumed,
            Some(AssumedRole {
                issued_access_key_id: Some("ASIASIGILEXAMPLE0004".into()),
                role_arn: Some("arn:aws:iam::111122223333:role/sigil-readonly".into()),
                role_session_name: Some("build-bot-audit".into()),
                web_identity_subject: None,
                web_identity_provider: None,
                audience: None,
                expiration_unix: Some(1_795_443_905), // 2026-11-23T14:25:05Z
            })
        );
        let denied = &parsed.actions[4];
        assert_eq!(denied.error_code.as_deref(), Some("AccessDenied"));
        assert_eq!(denied.access_key_id.as_deref(), Some("ASIASIGILEXAMPLE0004"));

        // Errors name the file they came from.
        let parsed = parse_path(&data("")).unwrap();
        assert!(parsed.errors.iter().any(|e| e.source_name.ends_with("truncated.json")));
        // Files are judged by content: the JSON-lines export is walked too, whatever its
        // extension, and what is not CloudTrail is named with the reason.
        assert!(parsed.errors.iter().any(|e| e.source_name.ends_with("records.jsonl") && e.position == "line 2"), "{:?}", parsed.errors);
        let skipped = parse_path(&dir).unwrap().skipped;
        let reasons: Vec<(&str, &str)> = skipped.iter().map(|s| (s.path.rsplit('/').next().unwrap(), s.reason.as_str())).collect();
        assert_eq!(
            reasons,
            [("CloudTrail-Digest", "directory of CloudTrail digest files (integrity manifests, not events)"), ("README.txt", "text that is not JSON"),]
        );
        // A single file is parsed whatever its name; a missing path is an I/O error.
        assert_eq!(parse_path(&data("records.jsonl")).unwrap().actions.len(), 3);
        assert!(parse_path(&data("does-not-exist")).is_err());
    }

    /// The same three calls as the S3 deliveries, as SIEM pipelines export them: Logstash's
    /// cloudtrail codec (`eventTime` moved to `@timestamp`) written as JSON lines to a
    /// `.log`, an OpenSearch/Elasticsearch dump of hits (`_source`), and the same events
    /// with nested fields flattened into dotted keys.
    #[test]
    fn siem_exports_carry_the_same_facts_as_deliveries() {
        let mut delivered = parse("d", &read("iamuser_getobject.json").1).actions;
        delivered.extend(parse("d", &read("webidentity_flow.json").1).actions);
        let facts = |a: &CloudAction| {
            let mut a = a.clone();
            a.raw = String::new();
            a
        };
        for file in ["siem/logstash-cloudtrail.log", "siem/opensearch-export.ndjson", "siem/flattened.json"] {
            let (name, bytes) = read(file);
            let parsed = parse(&name, &bytes);
            assert!(parsed.errors.is_empty(), "{file}: {:?}", parsed.errors);
            assert_eq!(ids(&parsed), [GETOBJECT_ID, WEBID_ID, PUTOBJECT_ID], "{file}");
            for (got, want) in parsed.actions.iter().zip(&delivered) {
                assert_eq!(facts(got), facts(want), "{file}");
            }
        }
        // A directory of them is ingested whatever the extensions.
        let parsed = parse_path(&data("siem")).unwrap();
        assert!(parsed.errors.is_empty() && parsed.skipped.is_empty(), "{parsed:?}");
        assert_eq!(parsed.actions.len(), 9);
        // Neither time field: the error names both.
        let parsed = parse("t", br#"{"eventID":"x","eventName":"GetObject","eventSource":"s3.amazonaws.com"}"#);
        assert_error(&parsed.errors[0], "t", "line 1", "missing field `eventTime` (or Logstash's `@timestamp`)");
        let parsed = parse("t", br#"{"eventID":"x","@timestamp":"yesterday","eventName":"GetObject","eventSource":"s3"}"#);
        assert_error(&parsed.errors[0], "t", "line 1", "field `@timestamp` is not an RFC 3339 timestamp");
        let parsed = parse("t", br#"{"_index":"i","_source":{"eventID":"x","eventName":"GetObject","eventSource":"s3"}}"#);
        assert_error(&parsed.errors[0], "t", "line 1", "in OpenSearch `_source`: missing field `eventTime`");
    }

    /// A responder points `ingest cloudtrail` at a folder of whatever was collected: audit
    /// data is ingested whatever its name, and every other file is named with the reason.
    #[test]
    fn directories_are_judged_by_content_and_every_skip_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (_, delivery) = read("webidentity_flow.json");
        std::fs::write(d.join("trail.log"), &delivery).unwrap();
        std::fs::write(d.join("export.txt.gz"), gzip(&read("iamuser_getobject.json").1)).unwrap();
        std::fs::write(d.join("image.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
        std::fs::write(d.join("notes.txt"), "collected from the incident bucket\n").unwrap();
        std::fs::write(d.join("empty.json"), "").unwrap();
        std::fs::write(d.join("other.json"), "{\"hello\": \"world\"}").unwrap();
        std::fs::write(
            d.join("digest.json"),
            r#"{"awsAccountId":"111122223333","digestStartTime":"2026-11-23T14:00:00Z","digestEndTime":"2026-11-23T15:00:00Z","logFiles":[]}"#,
        )
        .unwrap();
        let gcp = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gcp/audit.jsonl")).unwrap();
        std::fs::write(d.join("gcp.jsonl"), gcp).unwrap();
        let fifo = d.join("pipe.json");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let parsed = parse_path(d).unwrap();
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(ids(&parsed), [GETOBJECT_ID, WEBID_ID, PUTOBJECT_ID]);
        let reasons: Vec<(String, &str)> = parsed.skipped.iter().map(|s| (s.path.rsplit('/').next().unwrap().to_owned(), s.reason.as_str())).collect();
        let names: Vec<&str> = reasons.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["pipe.json", "digest.json", "empty.json", "gcp.jsonl", "image.png", "notes.txt", "other.json"], "{reasons:?}");
        let reason = |name: &str| reasons.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(reason("pipe.json").contains("not a regular file"));
        assert_eq!(reason("digest.json"), "CloudTrail digest file (an integrity manifest, not events)");
        assert_eq!(reason("empty.json"), "empty");
        assert!(reason("gcp.jsonl").contains("ingest it with `sigil-collector ingest gcp-audit`"));
        assert!(reason("image.png").starts_with("binary data"));
        assert_eq!(reason("notes.txt"), "text that is not JSON");
        assert!(reason("other.json").starts_with("JSON, but no CloudTrail fields"));
    }

    /// A record above the per-record bound is reported and skipped; its neighbours are kept.
    #[test]
    fn oversized_record_costs_only_itself() {
        let big = "x".repeat(4096);
        let doc = format!(
            r#"{{"Records":[{{"eventID":"a","eventTime":"2026-11-23T14:02:11Z","eventName":"X","eventSource":"y"}},{{"eventID":"big","pad":"{big}"}},{{"eventID":"c","eventTime":"2026-11-23T14:02:11Z","eventName":"X","eventSource":"y"}}]}}"#
        );
        let limits = Limits { max_record_bytes: 1024, ..Limits::default() };
        let mut parsed = Parsed::default();
        parse_into("o", doc.as_bytes(), &limits, &mut parsed);
        assert_eq!(ids(&parsed), ["a", "c"]);
        assert_error(&parsed.errors[0], "o", "record 2", "above the bound of 1024 bytes");
    }

    #[test]
    fn structural_damage_mid_array() {
        // Invalid JSON inside an element: the elements before it are kept, the damage is
        // located, and the rest of the array is skipped (its boundaries are guesses).
        let parsed = parse(
            "m",
            br#"{"Records":[{"eventID":"b","eventTime":"2026-11-23T14:02:11Z","eventName":"X","eventSource":"y"},{"eventID":tru},{"eventID":"c"}]}"#,
        );
        assert_eq!(ids(&parsed), ["b"]);
        assert_eq!(parsed.errors.len(), 1, "{:?}", parsed.errors);
        assert_error(&parsed.errors[0], "m", "byte 111", "malformed JSON in record 2: unexpected `}` (expected ident)");
        // Broken brackets: stop, and say where.
        let parsed = parse("m", br#"{"Records":[{"eventID":"a"]}"#);
        assert_eq!(parsed.errors.len(), 1);
        assert_error(&parsed.errors[0], "m", "byte 26", "unexpected `]`");
        // Cut between records and after the array.
        let parsed = parse("m", br#"{"Records":[{"eventID":"b","eventTime":"2026-11-23T14:02:11Z","eventName":"X","eventSource":"y"},"#);
        assert_eq!(ids(&parsed), ["b"]);
        assert!(parsed.errors[0].reason.contains("truncated"));
        let parsed = parse("m", br#"{"Records":[] , "#);
        assert!(parsed.errors[0].reason.contains("truncated"));
        let parsed = parse("m", br#"{"Records":{}}"#);
        assert_error(&parsed.errors[0], "m", "byte 11", "field `Records` is not an array");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x5151_9e37_79b9_7f4au64;
        let mut next = move || {
            // xorshift64*: deterministic, dependency-free.
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let (_, sample) = read("webidentity_flow.json");
        let alphabet = b"{}[]\":,\\ \n0123456789.eE+-truefalsnRecords\x1f\x8b\xff";
        for round in 0..2000 {
            let len = (next() % 512) as usize;
            let input: Vec<u8> = match round % 4 {
                0 => (0..len).map(|_| next() as u8).collect(),
                1 => (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect(),
                2 => {
                    // Real document with random bytes flipped and a random cut.
                    let mut v = sample.clone();
                    for _ in 0..1 + next() % 8 {
                        let at = (next() % v.len() as u64) as usize;
                        v[at] = next() as u8;
                    }
                    v.truncate((next() % v.len() as u64) as usize);
                    v
                }
                _ => {
                    let mut v = b"\x1f\x8b".to_vec();
                    v.extend((0..len).map(|_| next() as u8));
                    v
                }
            };
            let _ = parse("fuzz", &input);
            let _ = crate::cloud::gcp::parse("fuzz", &input);
        }
        // Huge numbers and deep nesting.
        let _ = parse("n", b"{\"Records\":[{\"eventID\":1e999999,\"eventTime\":-99999999999999999999999999}]}");
        let deep = format!("{{\"Records\":[{}{}]}}", "[".repeat(50_000), "]".repeat(50_000));
        let parsed = parse("d", deep.as_bytes());
        assert_eq!(parsed.errors.len(), 1);
    }

    /// The general path alone (no borrowed fast path): what every record must agree with.
    fn parse_general(source_name: &str, bytes: &[u8]) -> Parsed {
        let mut out = Parsed::default();
        parse_document(source_name, bytes, &LAYOUT, &Limits::default(), &mut out, None, record);
        out
    }

    /// Every file of the test corpus, and records built to sit on the fast path's edges
    /// (escapes, nulls, duplicates, wrong types, flattened keys, surrogates), come out of
    /// the fast path exactly as out of the general path: the same actions with the same
    /// facts and the same JSON, the same errors.
    #[test]
    fn the_borrowed_fast_path_reads_every_record_as_the_general_path_does() {
        fn files(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() { files(&p, out) } else { out.push(p) }
            }
        }
        let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
        let mut paths = Vec::new();
        files(&data(""), &mut paths);
        for p in paths {
            inputs.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
        let base = r#""eventID":"e1","eventTime":"2026-11-23T13:55:40Z","eventSource":"sts.amazonaws.com","eventName":"AssumeRoleWithWebIdentity""#;
        for extra in [
            r#""userIdentity":{"type":"WebIdentityUser","userName":"repo:a\/b","identityProvider":"idp"}"#,
            r#""userIdentity":null,"responseElements":null"#,
            r#""userIdentity":{"type":"IAMUser","accessKeyId":""},"awsRegion":"""#,
            r#""userIdentity":{"accessKeyId":"AKIA1"},"userIdentity":{"accessKeyId":"AKIA2"}"#,
            r#""userIdentity":{"accessKeyId":7}"#,
            r#""userIdentity":"someone""#,
            r#""userIdentity.accessKeyId":"AKIAFLAT""#,
            r#""responseElements":{"credentials.accessKeyId":"ASIAFLAT","provider":"p"}"#,
            r#""responseElements":{"credentials":{"accessKeyId":"ASIA1","expiration":7}}"#,
            r#""responseElements":{"credentials":{"accessKeyId":"ASIA1","expiration":"Nov 23, 2026, 3:02:11 PM"},"subject":"s"},"requestParameters":{"roleArn":"r","x.y":1}"#,
            r#""userAgent":"lone \ud800 surrogate""#,
            r#""userAgent":"pair \ud83d\ude00""#,
            r#""@timestamp":"2026-11-23T13:55:41Z""#,
        ] {
            inputs.push((extra.into(), format!("{{{base},{extra}}}").into_bytes()));
            inputs.push((extra.into(), format!("{{{},{extra}}}", base.replace("2026-11-23T13:55:40Z", "yesterday")).into_bytes()));
        }
        inputs.push(("no id".into(), br#"{"eventTime":"2026-11-23T13:55:40Z","eventSource":"s3.amazonaws.com","eventName":"GetObject"}"#.to_vec()));
        inputs.push(("empty id".into(), br#"{"eventID":"","eventTime":"2026-11-23T13:55:40Z","eventSource":"s","eventName":"n"}"#.to_vec()));
        // The fast path does answer for a plain record, and leaves flattened keys alone.
        let fast = |extra: &str| crate::cloud::borrowed::action(&format!("{{{base},{extra}}}"), &ASSUME_ROLE_EVENTS);
        assert_eq!(fast(r#""userIdentity":{"type":"WebIdentityUser","userName":"u"}"#).unwrap().assumed.unwrap().web_identity_subject.as_deref(), Some("u"));
        assert!(fast(r#""userIdentity.accessKeyId":"AKIAFLAT""#).is_none());
        for (name, bytes) in &inputs {
            let (fast, general) = (parse(name, bytes), parse_general(name, bytes));
            assert_eq!(fast.errors, general.errors, "{name}");
            assert_eq!(fast.actions.len(), general.actions.len(), "{name}");
            for (f, g) in fast.actions.iter().zip(&general.actions) {
                let json = |a: &CloudAction| serde_json::from_str::<Value>(&a.raw).unwrap();
                assert_eq!(json(f), json(g), "{name}");
                let facts = |a: &CloudAction| CloudAction { raw: String::new(), ..a.clone() };
                assert_eq!(facts(f), facts(g), "{name}");
            }
        }
    }
}
