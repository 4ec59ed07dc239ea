//! Credential exchanges carried in request bodies.
//!
//! The moment a workload trades one credential for another (a web identity token for AWS
//! keys at STS, a federated token for a GCP access token, a client secret for an OAuth
//! token) the credential travels in a form or JSON body, not a header. This module
//! decides which bodies are worth keeping ([`wants_body`]: small, form or JSON, with a
//! `Content-Length`), and finds the credentials in one once it is complete
//! ([`detect_body`]). The HTTP/1 recovery in `http` holds at most [`MAX_BODY`] bytes per
//! stream while a body arrives across writes.
//!
//! Only non-secret identifiers of the exchange are kept (role ARN, session name, client
//! id, audience); every secret field leaves as a [`Credential`] to be fingerprinted.

use serde::Serialize;
use serde_json::Value;

use super::detect::{Class, Credential, Detector, token_in};
use super::http::Request;
use super::redact::query_params;

/// Bodies larger than this are skipped, never buffered: token requests are small (a JWT
/// plus a few parameters), and it bounds the memory held per stream.
pub const MAX_BODY: u64 = 8 * 1024;

/// What kind of exchange a body credential was presented to, with its non-secret
/// parameters. Exported as the `exchange` object of a `credential_use`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Exchange {
    /// e.g. `aws_sts_assume_role_with_web_identity`, `gcp_sts_token_exchange`,
    /// `oauth_client_credentials`, `oauth_refresh_token`, `azure_ad_client_assertion`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_session_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Encodings whose fields we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Form,
    Json,
}

fn encoding(req: &Request) -> Option<Encoding> {
    let ctype = req.headers.iter().find(|(n, _)| n == "content-type")?.1.to_ascii_lowercase();
    let mime = ctype.split(';').next().unwrap_or("").trim();
    if mime == "application/x-www-form-urlencoded" {
        Some(Encoding::Form)
    } else if mime == "application/json" || mime.ends_with("+json") {
        Some(Encoding::Json)
    } else {
        None
    }
}

/// Should the body of `req` (of `length` bytes) be kept for [`detect_body`]?
pub fn wants_body(req: &Request, length: u64) -> bool {
    length > 0 && length <= MAX_BODY && req.method.eq_ignore_ascii_case("POST") && encoding(req).is_some()
}

/// One body field: the name as sent and its value.
struct Field {
    name: String,
    /// Lower-cased with `_` and `-` removed, so `subject_token` and `subjectToken` match.
    key: String,
    value: String,
}

fn normalise(name: &str) -> String {
    name.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

fn fields(enc: Encoding, body: &[u8]) -> Vec<Field> {
    let field = |name: &str, value: String| Field { key: normalise(name), name: name.to_owned(), value };
    match enc {
        Encoding::Form => {
            let Ok(text) = std::str::from_utf8(body) else { return Vec::new() };
            // Form encoding writes spaces as '+'; a literal '+' arrives as %2B.
            let target = format!("?{}", text.replace('+', "%20"));
            query_params(&target).map(|(n, v)| field(&n, v.into_owned())).collect()
        }
        Encoding::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map
                .into_iter()
                .filter_map(|(n, v)| match v {
                    Value::String(s) => Some(field(&n, s)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        },
    }
}

/// Exchanges whose credential travels in a header and whose endpoint says what is
/// traded: GCP IAM Credentials minting a service account's token
/// (`POST .../serviceAccounts/<email>:generateAccessToken`, `:generateIdToken`,
/// `:signJwt`). The service account is kept as `client_id`.
pub fn header_exchange(req: &Request) -> Option<Exchange> {
    if !req.method.eq_ignore_ascii_case("POST") {
        return None;
    }
    let path = req.path.split('?').next().unwrap_or("");
    let (account, verb) = path.rsplit_once("/serviceAccounts/")?.1.split_once(':')?;
    let kind = match verb {
        "generateAccessToken" => "gcp_iam_generate_access_token",
        "generateIdToken" => "gcp_iam_generate_id_token",
        "signJwt" => "gcp_iam_sign_jwt",
        _ => return None,
    };
    let account = super::redact::percent_decode(account).into_owned();
    Some(Exchange { kind, client_id: Some(account), ..Exchange::default() })
}

/// A POST to what is by its name a token endpoint (`.../token`, `.../oauth2/v2.0/token`,
/// an STS host): its response is read even when the request carried no credential Sigil
/// recognises (a client authenticating with mTLS, say).
pub fn token_endpoint(req: &Request) -> bool {
    if !req.method.eq_ignore_ascii_case("POST") {
        return false;
    }
    let path = req.path.split('?').next().unwrap_or("").trim_end_matches('/');
    let host = req.authority.as_deref().unwrap_or("").to_ascii_lowercase();
    path.rsplit('/').next().is_some_and(|last| last.eq_ignore_ascii_case("token")) || host.starts_with("sts.") || host.contains(".sts.")
}

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Finds the credentials presented in a complete request body.
pub fn detect_body(req: &Request, body: &[u8], now: i64, sigil_issuers: &[String]) -> Vec<(Credential, Exchange)> {
    let Some(enc) = encoding(req) else { return Vec::new() };
    let fields = fields(enc, body);
    let get = |key: &str| fields.iter().find(|f| f.key == key).map(|f| f.value.as_str()).filter(|v| !v.is_empty());
    let host = req.authority.as_deref().unwrap_or("").to_ascii_lowercase();
    let ids = |kind| Exchange {
        kind,
        role_arn: get("rolearn").map(str::to_owned),
        role_session_name: get("rolesessionname").map(str::to_owned),
        client_id: get("clientid").map(str::to_owned),
        audience: get("audience").map(str::to_owned),
    };

    // (secret field key, exchange kind, class override for secrets that are long-lived)
    let mut secrets: Vec<(&str, &'static str, Option<Class>)> = Vec::new();
    match get("action") {
        Some("AssumeRoleWithWebIdentity") => secrets.push(("webidentitytoken", "aws_sts_assume_role_with_web_identity", None)),
        Some("AssumeRoleWithSAML") => secrets.push(("samlassertion", "aws_sts_assume_role_with_saml", None)),
        _ => {}
    }
    match get("granttype") {
        Some(TOKEN_EXCHANGE) => {
            let kind = if host.starts_with("sts.googleapis.com") { "gcp_sts_token_exchange" } else { "oauth_token_exchange" };
            secrets.push(("subjecttoken", kind, None));
            secrets.push(("actortoken", kind, None));
        }
        Some(JWT_BEARER) => secrets.push(("assertion", "oauth_jwt_bearer", None)),
        Some("refresh_token") => secrets.push(("refreshtoken", "oauth_refresh_token", None)),
        _ => {}
    }
    if get("granttype").is_some() {
        let assertion = if host.starts_with("login.microsoftonline.com") { "azure_ad_client_assertion" } else { "oauth_client_assertion" };
        secrets.push(("clientassertion", assertion, None));
        let with_secret = match get("granttype") {
            Some("client_credentials") => "oauth_client_credentials",
            Some("refresh_token") => "oauth_refresh_token",
            Some("authorization_code") => "oauth_authorization_code",
            _ => "oauth_token_request",
        };
        secrets.push(("clientsecret", with_secret, Some(Class::Static)));
    }

    secrets
        .into_iter()
        .filter_map(|(key, kind, class)| {
            let field = fields.iter().find(|f| f.key == key && !f.value.is_empty())?;
            let mut cred = token_in(req, now, sigil_issuers, Detector::TokenExchange, &format!("body:{}", field.name), &field.value);
            if let Some(class) = class {
                cred.class = class;
                cred.identifiers.token_family = None;
            }
            Some((cred, ids(kind)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::http::Protocol;
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    const NOW: i64 = 1_700_000_000;

    fn post(host: &str, ctype: &str) -> Request {
        Request {
            protocol: Protocol::Http1,
            method: "POST".into(),
            path: "/".into(),
            authority: Some(host.into()),
            headers: vec![("content-type".into(), ctype.into())],
        }
    }

    fn jwt(claims: &str) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        format!("{h}.{}.c2lnbmF0dXJl", URL_SAFE_NO_PAD.encode(claims))
    }

    #[test]
    fn sts_assume_role_with_web_identity_form() {
        let token = jwt(r#"{"iss":"https://sigil.test","sub":"spiffe://x/w","jti":"j-1","exp":1700000600,"iat":1700000000}"#);
        let body = format!(
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fdemo&RoleSessionName=run+1&WebIdentityToken={token}"
        );
        let found =
            detect_body(&post("sts.amazonaws.com", "application/x-www-form-urlencoded; charset=utf-8"), body.as_bytes(), NOW, &["https://sigil.test".into()]);
        assert_eq!(found.len(), 1);
        let (cred, ex) = &found[0];
        assert_eq!(cred.detector, Detector::TokenExchange);
        assert!(matches!(cred.class, Class::SigilIssued { lifetime_seconds: Some(600), .. }));
        assert_eq!(cred.identifiers.jwt_jti.as_deref(), Some("j-1"));
        assert_eq!(cred.identifiers.jwt_sub.as_deref(), Some("spiffe://x/w"));
        assert_eq!(cred.identifiers.header.as_deref(), Some("body:WebIdentityToken"));
        assert_eq!(cred.secret.expose(), token.as_bytes());
        assert_eq!(ex.kind, "aws_sts_assume_role_with_web_identity");
        assert_eq!(ex.role_arn.as_deref(), Some("arn:aws:iam::123456789012:role/demo"));
        assert_eq!(ex.role_session_name.as_deref(), Some("run 1"));
    }

    #[test]
    fn gcp_sts_json_and_form_token_exchange() {
        let token = jwt(r#"{"iss":"https://issuer","sub":"w","jti":"g-1"}"#);
        let json = format!(
            r#"{{"grantType":"{TOKEN_EXCHANGE}","subjectToken":"{token}","subjectTokenType":"urn:ietf:params:oauth:token-type:jwt","audience":"//iam.googleapis.com/pool"}}"#
        );
        let form = format!("grant_type={TOKEN_EXCHANGE}&subject_token={token}&audience=%2F%2Fiam.googleapis.com%2Fpool");
        for (ctype, body) in [("application/json", json), ("application/x-www-form-urlencoded", form)] {
            let found = detect_body(&post("sts.googleapis.com", ctype), body.as_bytes(), NOW, &[]);
            assert_eq!(found.len(), 1, "{ctype}");
            assert_eq!(found[0].1.kind, "gcp_sts_token_exchange");
            assert_eq!(found[0].1.audience.as_deref(), Some("//iam.googleapis.com/pool"));
            assert_eq!(found[0].0.identifiers.jwt_jti.as_deref(), Some("g-1"));
        }
    }

    #[test]
    fn oauth_grants_each_yield_their_secrets() {
        let form = |b: &str| detect_body(&post("idp.example", "application/x-www-form-urlencoded"), b.as_bytes(), NOW, &[]);
        let cc = form("grant_type=client_credentials&client_id=app-1&client_secret=s3cr%2Bt");
        assert_eq!(cc.len(), 1);
        assert_eq!(cc[0].1.kind, "oauth_client_credentials");
        assert_eq!(cc[0].1.client_id.as_deref(), Some("app-1"));
        assert_eq!(cc[0].0.class, Class::Static);
        assert_eq!(cc[0].0.secret.expose(), b"s3cr+t");

        let rt = form("grant_type=refresh_token&refresh_token=rt-123&client_id=a&client_secret=cs");
        let kinds: Vec<_> = rt.iter().map(|(c, e)| (c.identifiers.header.clone().unwrap_or_default(), e.kind)).collect();
        assert_eq!(kinds, [("body:refresh_token".into(), "oauth_refresh_token"), ("body:client_secret".into(), "oauth_refresh_token")]);

        let jb = form(&format!("grant_type={JWT_BEARER}&assertion={}", jwt(r#"{"iss":"sa@x","jti":"jb"}"#)));
        assert_eq!(jb[0].1.kind, "oauth_jwt_bearer");
        assert_eq!(jb[0].0.identifiers.jwt_jti.as_deref(), Some("jb"));

        let az = detect_body(
            &post("login.microsoftonline.com", "application/x-www-form-urlencoded"),
            format!(
                "grant_type=client_credentials&client_id=c&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={}",
                jwt(r#"{"iss":"c","sub":"c","jti":"az"}"#)
            )
            .as_bytes(),
            NOW,
            &[],
        );
        assert_eq!(az.len(), 1);
        assert_eq!(az[0].1.kind, "azure_ad_client_assertion");
        assert_eq!(az[0].0.identifiers.jwt_jti.as_deref(), Some("az"));
    }

    #[test]
    fn ordinary_bodies_and_bad_input_yield_nothing() {
        let form = post("h", "application/x-www-form-urlencoded");
        let json = post("h", "application/json");
        for (req, body) in [
            (&form, b"q=search&page=2".as_slice()),
            (&form, b"\xff\xfe=\x00"),
            (&json, b"{\"grantType\": 5}"),
            (&json, b"[1,2,3]"),
            (&json, b"{\"subjectToken\":\"x\""),
            (&form, b"client_secret=orphan"),
        ] {
            assert!(detect_body(req, body, NOW, &[]).is_empty(), "{body:?}");
        }
        assert!(detect_body(&post("h", "text/plain"), b"grant_type=client_credentials&client_secret=x", NOW, &[]).is_empty());
    }

    #[test]
    fn a_body_split_across_writes_is_reassembled_and_held_requests_keep_order() {
        use crate::trace::http::HttpStream;
        let body = b"grant_type=client_credentials&client_id=a&client_secret=split-secret";
        let head = format!("POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n", body.len());
        let mut s = HttpStream::new();
        let mut first = head.into_bytes();
        first.extend_from_slice(&body[..20]);
        let (heads, bodies) = s.feed_with_bodies(&first, first.len());
        assert_eq!(heads.len(), 1, "the head is reported at once");
        assert!(bodies.is_empty(), "the body is not complete yet");
        let mut rest = body[20..].to_vec();
        rest.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        let (heads, bodies) = s.feed_with_bodies(&rest, rest.len());
        assert_eq!(heads.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/next"]);
        assert_eq!(bodies.len(), 1);
        assert_eq!((bodies[0].0.path.as_str(), bodies[0].1.as_slice()), ("/token", body.as_slice()));
    }

    /// A workload sending its STS exchange with `Transfer-Encoding: chunked` (split across
    /// writes, with an extension and a trailer) is still seen trading its token; the
    /// request after it on the keep-alive connection is still recovered.
    #[test]
    fn an_sts_exchange_sent_chunked_is_still_detected() {
        use crate::trace::http::HttpStream;
        let token = jwt(r#"{"iss":"https://sigil.test","sub":"spiffe://sigil.test/a","jti":"chunked-1"}"#);
        let form =
            format!("Action=AssumeRoleWithWebIdentity&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&RoleSessionName=s&WebIdentityToken={token}&Version=2011-06-15");
        let mut wire =
            b"POST / HTTP/1.1\r\nHost: sts.amazonaws.com\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for (i, piece) in form.as_bytes().chunks(50).enumerate() {
            wire.extend_from_slice(format!("{:x}{}\r\n", piece.len(), if i == 0 { ";ext=1" } else { "" }).as_bytes());
            wire.extend_from_slice(piece);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n");
        let mut s = HttpStream::new();
        let (mut heads, mut bodies) = (Vec::new(), Vec::new());
        for write in wire.chunks(37) {
            let (h, b) = s.feed_with_bodies(write, write.len());
            heads.extend(h);
            bodies.extend(b);
        }
        assert_eq!(heads.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/", "/after"]);
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies[0].1, form.as_bytes());
        let found = detect_body(&bodies[0].0, &bodies[0].1, NOW, &[]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1.kind, "aws_sts_assume_role_with_web_identity");
        assert_eq!(found[0].0.identifiers.jwt_jti.as_deref(), Some("chunked-1"));

        // Chunked together with Content-Length (a smuggling shape) is not followed.
        let mut s = HttpStream::new();
        let bad = b"POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\na=b\r\n0\r\n\r\n";
        assert!(s.feed_with_bodies(bad, bad.len()).1.is_empty());
        // A chunked body whose bytes were not all captured is dropped, not guessed.
        let mut s = HttpStream::new();
        let head = b"POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n";
        let _ = s.feed_with_bodies(head, head.len());
        let (_, b) = s.feed_with_bodies(b"ff\r\nabc", 300);
        assert!(b.is_empty());
        let (_, b) = s.feed_with_bodies(b"0\r\n\r\n", 5);
        assert!(b.is_empty());
    }

    #[test]
    fn a_body_cut_by_capture_truncation_is_not_guessed() {
        use crate::trace::http::HttpStream;
        let head = "POST /token HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 6000\r\n\r\n";
        let mut write = head.as_bytes().to_vec();
        write.resize(4096, b'x');
        let mut s = HttpStream::new();
        let (heads, bodies) = s.feed_with_bodies(&write, head.len() + 6000);
        assert_eq!((heads.len(), bodies.len()), (1, 0), "a body over MAX_BODY is never held");
        let head = "POST /t HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n";
        let mut write = head.as_bytes().to_vec();
        write.resize(4096, b'x');
        let mut s = HttpStream::new();
        let (heads, bodies) = s.feed_with_bodies(&write, head.len() + 5000);
        assert_eq!(heads.len(), 1);
        let rest = vec![b'x'; 5000 - (4096 - head.len())];
        let (more, bodies2) = s.feed_with_bodies(&rest, rest.len());
        assert!(more.is_empty() && bodies.is_empty() && bodies2.is_empty(), "a half-captured body is dropped, not guessed");
    }

    #[test]
    fn gcp_iam_credentials_calls_are_exchanges_by_path() {
        let mut req = post("iamcredentials.googleapis.com", "application/json");
        req.path = "/v1/projects/-/serviceAccounts/etl%40p.iam.gserviceaccount.com:generateAccessToken".into();
        let ex = header_exchange(&req).expect("an exchange");
        assert_eq!(ex.kind, "gcp_iam_generate_access_token");
        assert_eq!(ex.client_id.as_deref(), Some("etl@p.iam.gserviceaccount.com"));
        req.path = "/v1/projects/-/serviceAccounts/a@b:getIamPolicy".into();
        assert!(header_exchange(&req).is_none());
        req.path = "/v1/projects/-/serviceAccounts/a@b:signJwt".into();
        req.method = "GET".into();
        assert!(header_exchange(&req).is_none());
    }

    #[test]
    fn only_small_form_or_json_posts_are_kept() {
        let form = post("h", "application/x-www-form-urlencoded");
        assert!(wants_body(&form, 100));
        assert!(!wants_body(&form, MAX_BODY + 1));
        assert!(!wants_body(&form, 0));
        assert!(wants_body(&post("h", "application/jwt-bundle+json"), 10));
        assert!(!wants_body(&post("h", "application/octet-stream"), 10));
        let mut get = form.clone();
        get.method = "GET".into();
        assert!(!wants_body(&get, 10));
    }
}
