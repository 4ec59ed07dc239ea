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
    events::{CredentialUse, Destination},
    fingerprint::Fingerprinter,
    http::{Protocol, Request},
    scrub::event_path,
};

/// A string that `pattern` matches. `seed` varies the characters drawn from classes so
/// that two vectors of one family differ.
pub(crate) fn generate(pattern: &str, seed: usize) -> String {
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .unwrap_or_else(|e| panic!("{pattern}: {e}"));
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
                Class::Unicode(c) => c
                    .ranges()
                    .iter()
                    .flat_map(|r| (r.start()..=r.end()).take(128))
                    .collect(),
                Class::Bytes(c) => c
                    .ranges()
                    .iter()
                    .flat_map(|r| (r.start()..=r.end()).map(char::from))
                    .collect(),
            };
            // Prefer alphanumerics: they need no escaping in any placement.
            let nice: Vec<char> = chars.iter().copied().filter(char::is_ascii_alphanumeric).collect();
            let pool = if nice.is_empty() { &chars } else { &nice };
            // A 64-bit LCG (Knuth's MMIX constants); its high bits vary well enough.
            *counter = counter
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
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
    Request {
        protocol: Protocol::Http1,
        method: "POST".into(),
        path: path.into(),
        authority: Some("api.example.test".into()),
        headers,
    }
}

/// The event the tracer would emit for `credential` found in `req`.
fn event(req: &Request, credential: &Credential, all: &[Credential]) -> String {
    let used = CredentialUse {
        kind: "credential_use",
        time: "2026-01-01T00:00:00Z".into(),
        node: "node-a".into(),
        pid: 1,
        process: None,
        destination: Destination {
            ip: None,
            port: None,
            host: req.authority.clone(),
        },
        transport: "tls",
        tls_library: Some("openssl"),
        protocol: req.protocol,
        method: req.method.clone(),
        path: event_path(&req.path, all),
        detector: credential.detector,
        class: credential.class.clone(),
        fingerprint: Fingerprinter::new(&[7; 32]).fingerprint(&credential.secret),
        identifiers: credential.identifiers.clone(),
    };
    serde_json::to_string(&used).expect("events serialize")
}

/// Every way `family`'s clients send `token`, as (description, request, secret).
fn placements(family: &Family, token: &str) -> Vec<(String, Request, String)> {
    let spec = &family.spec;
    let mut out = Vec::new();
    for header in &spec.headers {
        out.push((
            format!("header {header}"),
            request("/v1/things", vec![(header.to_ascii_lowercase(), token.to_owned())]),
            token.to_owned(),
        ));
    }
    for scheme in &spec.schemes {
        out.push((
            format!("scheme {scheme}"),
            request("/v1/things", vec![("authorization".into(), format!("{scheme} {token}"))]),
            token.to_owned(),
        ));
    }
    for name in &spec.query {
        let encoded: String = token
            .bytes()
            .map(|b| match b {
                b'+' | b'/' | b'=' | b'%' | b':' | b'&' | b'#' => format!("%{b:02X}"),
                _ => char::from(b).to_string(),
            })
            .collect();
        out.push((
            format!("query {name}"),
            request(&format!("/v1/things?page=2&{name}={encoded}&q=x"), Vec::new()),
            token.to_owned(),
        ));
    }
    for name in &spec.cookies {
        out.push((
            format!("cookie {name}"),
            request("/", vec![("cookie".into(), format!("theme=dark; {name}={token}; lang=en"))]),
            token.to_owned(),
        ));
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
        out.push((
            "bearer".into(),
            request("/v1/things", vec![("authorization".into(), format!("Bearer {token}"))]),
            token.to_owned(),
        ));
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
            assert!(
                family.spec.prefixes.iter().any(|p| token.starts_with(p.as_str())),
                "{name}: {token} does not start with a documented prefix"
            );
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
            assert_eq!(
                credential.identifiers.token_family.as_deref(),
                Some(name),
                "{name} via {how}: {credential:?}"
            );
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
