//! One generated test vector per catalogue family, sent the way that family's clients
//! send it: every header, scheme, query parameter, cookie and URL path the catalogue
//! lists, and a bearer token for families with a documented prefix or distinctive shape.
//! Each must be detected with the family's name and class, and its secret must appear
//! neither in the identifiers nor anywhere in the serialized event.
//!
//! Vectors are built from each family's own pattern at test time (no real secrets are
//! stored here): the pattern is walked with `regex-syntax` and every repetition takes a
//! fixed count within its bounds.

use regex_syntax::hir::{Class, Hir, HirKind};

use super::{
    catalogue::{Family, catalogue},
    detect::{Credential, Detector, detect},
    events::{CredentialUse, Destination, set_class},
    fingerprint::Fingerprinter,
    http::{Protocol, Request},
    scrub::event_path,
};

/// A string that `pattern` matches. `seed` varies the characters drawn from classes so
/// that two vectors of one family differ.
pub(crate) fn generate(pattern: &str, seed: usize) -> String {
    let hir = regex_syntax::Parser::new().parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
    let mut out = String::new();
    let mut counter = seed;
    walk(&hir, &mut out, &mut counter);
    out
}

fn walk(hir: &Hir, out: &mut String, counter: &mut usize) {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(lit) => out.push_str(&String::from_utf8_lossy(&lit.0)),
        HirKind::Class(class) => {
            let chars: Vec<char> = match class {
                Class::Unicode(c) => c.ranges().iter().flat_map(|r| (r.start()..=r.end()).take(128)).collect(),
                Class::Bytes(c) => c.ranges().iter().flat_map(|r| (r.start()..=r.end()).map(char::from)).collect(),
            };
            // Prefer alphanumerics: they need no escaping in any placement.
            let nice: Vec<char> = chars.iter().copied().filter(char::is_ascii_alphanumeric).collect();
            let pool = if nice.is_empty() { &chars } else { &nice };
            // A 64-bit LCG (Knuth's MMIX constants); its high bits vary well enough.
            *counter = counter.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            if let Some(c) = pool.get((*counter >> 33) % pool.len().max(1)) {
                out.push(*c);
            }
        }
        HirKind::Repetition(rep) => {
            let count = 40u32.clamp(rep.min, rep.max.unwrap_or(u32::MAX));
            for _ in 0..count {
                walk(&rep.sub, out, counter);
            }
        }
        HirKind::Capture(cap) => walk(&cap.sub, out, counter),
        HirKind::Concat(items) => items.iter().for_each(|h| walk(h, out, counter)),
        HirKind::Alternation(items) => {
            if let Some(first) = items.first() {
                walk(first, out, counter);
            }
        }
    }
}

fn request(path: &str, headers: Vec<(String, String)>) -> Request {
    Request { protocol: Protocol::Http1, method: "POST".into(), path: path.into(), authority: Some("api.example.test".into()), headers }
}

/// The event the tracer would emit for `credential` found in `req`.
fn event(req: &Request, credential: &Credential, all: &[Credential]) -> String {
    let mut used = CredentialUse {
        time: "2026-01-01T00:00:00Z".into(),
        node: "node-a".into(),
        pid: 1,
        destination: Some(Destination { ip: None, port: None, host: req.authority.clone() }),
        transport: "tls".into(),
        tls_library: Some("openssl".into()),
        protocol: sigil_proto::v1::Protocol::from(req.protocol) as i32,
        method: req.method.clone(),
        path: event_path(&req.path, all),
        detector: sigil_proto::v1::Detector::from(credential.detector) as i32,
        fingerprint: Fingerprinter::new(&[7; 32]).fingerprint(&credential.secret),
        identifiers: Some(credential.identifiers.clone().into()),
        ..Default::default()
    };
    set_class(&mut used, &credential.class);
    serde_json::to_string(&used).expect("events serialize")
}

/// Every way `family`'s clients send `token`, as (description, request, secret).
fn placements(family: &Family, token: &str) -> Vec<(String, Request, String)> {
    let spec = &family.spec;
    let mut out = Vec::new();
    for header in &spec.headers {
        out.push((format!("header {header}"), request("/v1/things", vec![(header.to_ascii_lowercase(), token.to_owned())]), token.to_owned()));
    }
    for scheme in &spec.schemes {
        out.push((format!("scheme {scheme}"), request("/v1/things", vec![("authorization".into(), format!("{scheme} {token}"))]), token.to_owned()));
    }
    for name in &spec.query {
        let encoded: String = token
            .bytes()
            .map(|b| match b {
                b'+' | b'/' | b'=' | b'%' | b':' | b'&' | b'#' => format!("%{b:02X}"),
                _ => char::from(b).to_string(),
            })
            .collect();
        out.push((format!("query {name}"), request(&format!("/v1/things?page=2&{name}={encoded}&q=x"), Vec::new()), token.to_owned()));
    }
    for name in &spec.cookies {
        out.push((format!("cookie {name}"), request("/", vec![("cookie".into(), format!("theme=dark; {name}={token}; lang=en"))]), token.to_owned()));
    }
    if let Some(path) = family.path_pattern() {
        let url = generate(path.as_str(), 3);
        let secret = path
            .captures(&url)
            .and_then(|c| c.name("secret"))
            .map(|m| m.as_str().to_owned())
            .unwrap_or_else(|| panic!("{}: generated path {url} has no secret", spec.name));
        out.push((format!("path {url}"), request(&url, Vec::new()), secret));
    }
    if !spec.prefixes.is_empty() || spec.anywhere {
        out.push(("bearer".into(), request("/v1/things", vec![("authorization".into(), format!("Bearer {token}"))]), token.to_owned()));
    }
    out
}

#[test]
fn every_family_is_detected_where_its_clients_put_it() {
    let families = catalogue().families();
    assert!(families.len() >= 100, "{} families", families.len());
    let mut exercised = 0;
    for family in families.iter().filter(|f| f.spec.detector.is_none()) {
        let name = family.name();
        let token = generate(family.pattern().as_str(), name.len());
        assert!(family.pattern().is_match(&token), "{name}: vector {token} does not match");
        if !family.spec.prefixes.is_empty() {
            assert!(family.spec.prefixes.iter().any(|p| token.starts_with(p.as_str())), "{name}: {token} does not start with a documented prefix");
        }
        let cases = placements(family, &token);
        assert!(!cases.is_empty(), "{name}: no placement and no prefix, so it can never be named");
        for (how, req, secret) in cases {
            let found = detect(&req, 1_700_000_000, &[]);
            let [credential] = found.as_slice() else {
                panic!("{name} via {how}: expected one credential, got {found:?}");
            };
            let detector = if how == "bearer" { Detector::BearerToken } else { Detector::ApiKey };
            assert_eq!(credential.detector, detector, "{name} via {how}");
            assert_eq!(credential.identifiers.token_family.as_deref(), Some(name), "{name} via {how}: {credential:?}");
            assert_eq!(credential.class, family.class(), "{name} via {how}");
            assert_eq!(credential.secret.expose(), secret.as_bytes(), "{name} via {how}");
            let ids = serde_json::to_string(&credential.identifiers).expect("serializes");
            assert!(!ids.contains(&secret), "{name} via {how}: secret in identifiers {ids}");
            if family.spec.identifier.is_some() {
                let id = credential.identifiers.key_id.as_deref().unwrap_or_default();
                assert!(!id.is_empty() && !secret.contains(id) || token.contains(id), "{name} via {how}: id {id:?}");
            }
            let event = event(&req, credential, &found);
            assert!(!event.contains(&secret), "{name} via {how}: secret in event {event}");
            exercised += 1;
        }
    }
    assert!(exercised >= 150, "only {exercised} placements exercised");
}

/// The AWS families belong to the SigV4 detector: a signed request with a generated key
/// id is recorded with the key id as identifier and the family's lifetime.
#[test]
fn aws_families_are_recognised_by_their_signatures() {
    for family in catalogue().families().iter().filter(|f| f.spec.detector.as_deref() == Some("sigv4")) {
        let key_id = generate(family.pattern().as_str(), 1);
        for scheme in &family.spec.schemes {
            let auth = format!("{scheme} Credential={key_id}/20260101/us-east-1/s3/aws4_request, Signature=00");
            let req = request("/bucket", vec![("authorization".into(), auth)]);
            let found = detect(&req, 0, &[]);
            let [credential] = found.as_slice() else { panic!("{}: {found:?}", family.name()) };
            assert_eq!(credential.class, family.class(), "{}", family.name());
            assert_eq!(credential.identifiers.access_key_id.as_deref(), Some(key_id.as_str()));
            assert_eq!(credential.identifiers.aws_algorithm.as_deref(), Some(scheme.as_str()));
        }
    }
}

#[test]
fn generator_honours_bounds_and_alternatives() {
    assert_eq!(generate("ab[0-9]{3}", 0).len(), 5);
    assert_eq!(generate("x{2,4}", 0), "xxxx");
    assert!(generate("(?:foo|bar)-[a-f]+", 0).starts_with("foo-"));
    assert!(regex::Regex::new("^[^/]+$").expect("valid").is_match(&generate("[^/]+", 5)));
}

fn one(path: &str, headers: &[(&str, &str)]) -> Credential {
    let req = request(path, headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect());
    let mut found = detect(&req, 0, &[]);
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

/// S3-compatible stores: the algorithm and a well-formed scope are enough, whatever the
/// key id looks like; the key id is the identifier and what is fingerprinted.
#[test]
fn sigv4_with_minio_ceph_and_r2_key_ids_is_unknown_format() {
    use super::detect::Class;
    for key in ["minioadmin", "0555b35654ad1656d804", "3f1c7a9e0b2d4c6e8f0a1b2c3d4e5f60", "sigil-minio-1x2"] {
        let auth = format!("AWS4-HMAC-SHA256 Credential={key}/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=ab");
        let c = one("/bucket/key", &[("authorization", &auth)]);
        assert_eq!((c.detector, &c.class), (Detector::AwsSigv4, &Class::UnknownFormat), "{key}");
        assert_eq!(c.identifiers.access_key_id.as_deref(), Some(key));
        assert_eq!(c.secret.expose(), key.as_bytes());
        assert_eq!(c.identifiers.aws_region.as_deref(), Some("us-east-1"));
    }
    let json = serde_json::to_string(&Class::UnknownFormat).expect("serializes");
    assert_eq!(json, r#"{"class":"unknown_format"}"#);
    // Presigned URLs from the same stores too.
    let c = one("/b/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=minioadmin%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=00", &[]);
    assert_eq!((c.detector, c.class), (Detector::AwsSigv4Presigned, Class::UnknownFormat));
}

#[test]
fn sigv4a_reports_its_algorithm_and_region_set() {
    let auth = "AWS4-ECDSA-P256-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/s3/aws4_request, SignedHeaders=host;x-amz-region-set, Signature=3045";
    let c = one("/", &[("authorization", auth), ("X-Amz-Region-Set", "us-east-1, us-west-2,bad region")]);
    let ids = &c.identifiers;
    assert_eq!(ids.aws_algorithm.as_deref(), Some("AWS4-ECDSA-P256-SHA256"));
    assert_eq!(ids.aws_region_set, Some(vec!["us-east-1".to_owned(), "us-west-2".to_owned()]));
    assert_eq!((ids.aws_region.as_deref(), ids.aws_service.as_deref()), (None, Some("s3")));
    let c = one("/", &[("authorization", auth), ("x-amz-region-set", "*")]);
    assert_eq!(c.identifiers.aws_region_set, Some(vec!["*".to_owned()]));
    // Presigned SigV4a carries the algorithm and region set as parameters.
    let c = one(
        "/o?X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256&X-Amz-Credential=ASIAQEXAMPLEEXAMPLE1%2F20260101%2Fs3%2Faws4_request&X-Amz-Region-Set=eu-west-1%2Ceu-central-1",
        &[],
    );
    assert_eq!(c.identifiers.aws_algorithm.as_deref(), Some("AWS4-ECDSA-P256-SHA256"));
    assert_eq!(c.identifiers.aws_region_set, Some(vec!["eu-west-1".to_owned(), "eu-central-1".to_owned()]));
}

/// The placements issue 14 names, one by one, with values as their clients send them.
#[test]
fn vendor_headers_schemes_bare_values_query_and_cookies() {
    let hex32 = "0123456789abcdef0123456789abcdef";
    /// (request target, headers, expected family, expected place)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("/", vec![("X-Vault-Token", format!("hvs.{}", "Ab1".repeat(32)))], "hashicorp_vault_token", "x-vault-token"),
        ("/", vec![("DD-API-KEY", hex32.to_owned())], "datadog_api_key", "dd-api-key"),
        ("/", vec![("X-Shopify-Access-Token", format!("shpat_{hex32}"))], "shopify_access_token", "x-shopify-access-token"),
        ("/", vec![("Fastly-Key", "odd-shaped-but-a-fastly-key".to_owned())], "fastly_api_token", "fastly-key"),
        ("/", vec![("JOB-TOKEN", "legacy-job-token-value".to_owned())], "gitlab_cicd_job_token", "job-token"),
        ("/", vec![("X-JFrog-Art-Api", format!("AKCp{}", "x9".repeat(35)[..69].to_owned()))], "jfrog_api_key", "x-jfrog-art-api"),
        ("/", vec![("authorization", format!("SSWS 00{}", "a".repeat(40)))], "okta_api_token", "authorization"),
        ("/", vec![("authorization", format!("Bot M{}.{}.{}", "A".repeat(23), "b".repeat(6), "c".repeat(27)))], "discord_bot_token", "authorization"),
        ("/", vec![("authorization", format!("Api-Token dt0c01.{}.{}", "A".repeat(24), "B".repeat(64)))], "dynatrace_token", "authorization"),
        ("/", vec![("authorization", format!("OAuth y0_{}", "z".repeat(55)))], "yandex_oauth_token", "authorization"),
        ("/", vec![("authorization", format!("AccessKey {}", "k".repeat(25)))], "messagebird_access_key", "authorization"),
        ("/", vec![("authorization", format!("rubygems_{}", "0a".repeat(24)))], "rubygems_api_key", "authorization"),
        ("/", vec![("authorization", format!("lin_api_{}", "Q".repeat(40)))], "linear_api_key", "authorization"),
        ("/maps?key=AIzaSyA-PLANTED-0123456789abcdefghijklm", vec![], "google_api_key", "query:key"),
        ("/feed?access_token=opaque-but-named-by-place", vec![], "generic", "query:access_token"),
        ("/", vec![("cookie", format!("a=b; _gitlab_session={hex32}"))], "gitlab_session_cookie", "cookie:_gitlab_session"),
    ];
    for (path, headers, family, place) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let c = one(path, &headers);
        assert_eq!(c.identifiers.token_family.as_deref(), Some(family), "{headers:?} {path}");
        assert_eq!(c.identifiers.header.as_deref(), Some(place), "{headers:?} {path}");
    }
    // A scheme nobody uses and a raw value with no known prefix are not credentials.
    let req = request("/", vec![("authorization".into(), "Frobnicate abc".into())]);
    assert!(detect(&req, 0, &[]).is_empty());
    let req = request("/", vec![("authorization".into(), "opaque-raw-value".into())]);
    assert!(detect(&req, 0, &[]).is_empty());
    let req = request("/?key=not-a-google-key&page=1", Vec::new());
    assert!(detect(&req, 0, &[]).is_empty(), "`key` alone is too common a name");
}
