//! Finding credentials in recovered requests.
//!
//! Detection only reads what the request itself says: JWTs are decoded without being
//! verified (we want to know what a credential claims to be, not whether it is valid),
//! and families are recognised by their documented prefixes. The secret is handed back
//! wrapped in [`Secret`] so that the only thing that can happen to it by accident is
//! fingerprinting, never logging.

use std::fmt;

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use super::catalogue::{Family, Placement, Verdict, catalogue};
use super::http::Request;
use super::redact::query_params;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    AwsSigv4,
    AwsSigv4Presigned,
    BearerJwt,
    BearerToken,
    ApiKey,
    BasicAuth,
    /// A credential traded at a token endpoint, found in the request body (see `body`).
    TokenExchange,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum Class {
    /// Long-lived: a leak stays exploitable until someone rotates it.
    Static,
    ShortLived {
        lifetime_seconds: Option<i64>,
        remaining_seconds: Option<i64>,
    },
    SigilIssued {
        lifetime_seconds: Option<i64>,
        remaining_seconds: Option<i64>,
    },
    Unknown,
    /// Signed like AWS (SigV4 algorithm and scope) with a key id that is not AWS-shaped:
    /// an S3-compatible store (MinIO, Ceph, R2) whose key lifetime we cannot tell.
    UnknownFormat,
}

/// Non-secret identifiers only: these are exported as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Identifiers {
    /// AWS key ids identify a credential without granting anything on their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_service: Option<String>,
    /// SigV4a: the regions the signature is valid in (`X-Amz-Region-Set`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_region_set: Option<Vec<String>>,
    /// `AWS4-HMAC-SHA256` (SigV4) or `AWS4-ECDSA-P256-SHA256` (SigV4a).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_aud: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_family: Option<String>,
    /// The non-secret identifier the family's credential carries (a Slack webhook's
    /// team/channel, a Telegram bot id), as the catalogue marks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Where the credential was found, e.g. "authorization" or "query:X-Amz-Credential".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// HTTP Basic user name (not secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// The secret part of a credential. It has no Display/Serialize, its Debug is redacted,
/// and its bytes are wiped on drop, so it can only leave the process as a fingerprint.
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Best-effort zeroing without unsafe: black_box keeps the stores from being elided.
/// (The request the secret came from still holds it; this only avoids adding copies.)
fn wipe(bytes: &mut [u8]) {
    bytes.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(bytes);
}

pub struct Credential {
    pub detector: Detector,
    pub class: Class,
    pub identifiers: Identifiers,
    pub secret: Secret,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("detector", &self.detector)
            .field("class", &self.class)
            .field("identifiers", &self.identifiers)
            .field("secret", &self.secret)
            .finish()
    }
}

/// Finds every credential in `req`. `now` is unix seconds; `sigil_issuers` are issuer
/// URLs (JWT `iss`) that mean "issued by Sigil".
pub fn detect(req: &Request, now: i64, sigil_issuers: &[String]) -> Vec<Credential> {
    let ctx = Context { req, now, sigil_issuers };
    let mut found = Vec::new();
    for (name, value) in &req.headers {
        let name = name.trim();
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let header = name.to_ascii_lowercase();
        if header == "authorization" || header == "proxy-authorization" {
            found.extend(ctx.authorization(&header, value));
        } else if header == "cookie" {
            found.extend(ctx.cookies(value));
        } else if let Some(verdict) = catalogue().classify(Placement::Header, &header, value) {
            // Vendor and generic API-key headers (`X-Vault-Token`, `DD-API-KEY`, ...), and
            // any header whose value has a family's full documented shape.
            found.push(ctx.named(Detector::ApiKey, &header, value, verdict));
        }
    }
    found.extend(ctx.query());
    found.extend(ctx.url_path());
    found.extend(ctx.presigned());
    found
}

/// Classifies one token found outside the headers (a request body field): a JWT's
/// claims, or its family by prefix. `field` names where it was found.
pub(crate) fn token_in(req: &Request, now: i64, sigil_issuers: &[String], detector: Detector, field: &str, token: &str) -> Credential {
    Context { req, now, sigil_issuers }.token(detector, field, token)
}

struct Context<'a> {
    req: &'a Request,
    now: i64,
    sigil_issuers: &'a [String],
}

impl Context<'_> {
    fn authorization(&self, header: &str, value: &str) -> Option<Credential> {
        let (scheme, rest) = match value.split_once(char::is_whitespace) {
            Some((scheme, rest)) => (scheme, rest.trim()),
            None => (value, ""),
        };
        let is = |s: &str| scheme.eq_ignore_ascii_case(s);
        if let Some(algorithm) = SIGV4_ALGORITHMS.iter().find(|a| is(a)) {
            let credential = rest
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter_map(|param| param.split_once('='))
                .find(|(key, _)| key.eq_ignore_ascii_case("Credential"))?
                .1;
            let signed = Signed { algorithm, region_set: self.header_value("x-amz-region-set") };
            return self.aws(Detector::AwsSigv4, header, credential, signed, || self.header_value("x-amz-security-token"));
        }
        if rest.is_empty() {
            // No scheme at all: some APIs take the raw key. Only trust known prefixes.
            return catalogue().by_prefix(value).map(|f| self.named(Detector::ApiKey, header, value, Verdict::Family(f)));
        }
        if is("Bearer") {
            Some(self.token(Detector::BearerToken, header, rest))
        } else if is("token") {
            Some(self.token(Detector::ApiKey, header, rest))
        } else if is("Basic") {
            basic(header, rest)
        } else {
            // Vendor schemes: `SSWS` (Okta), `Bot` (Discord), `Api-Token` (Dynatrace)...
            catalogue().classify(Placement::Scheme, scheme, rest).map(|verdict| self.named(Detector::ApiKey, header, rest, verdict))
        }
    }

    /// `Cookie: a=b; c=d`: cookies the catalogue lists, and any cookie whose value has
    /// a family's full shape.
    fn cookies(&self, value: &str) -> Vec<Credential> {
        value
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, v)| (name.trim(), v.trim().trim_matches('"')))
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(name, v)| {
                let verdict = catalogue().classify(Placement::Cookie, name, v)?;
                Some(self.named(Detector::ApiKey, &format!("cookie:{name}"), v, verdict))
            })
            .collect()
    }

    /// Credentials in query parameters (`?key=AIza...`, `?access_token=...`). AWS
    /// presigned parameters are left to [`Self::presigned`].
    fn query(&self) -> Vec<Credential> {
        query_params(&self.req.path)
            .filter(|(name, value)| !value.is_empty() && !name.to_ascii_lowercase().starts_with("x-amz-"))
            .filter_map(|(name, value)| {
                let verdict = catalogue().classify(Placement::Query, &name, &value)?;
                Some(self.named(Detector::ApiKey, &format!("query:{name}"), &value, verdict))
            })
            .collect()
    }

    /// Credentials that are part of the URL path itself (Slack, Discord webhooks).
    fn url_path(&self) -> Vec<Credential> {
        let path = self.req.path.split(['?', '#']).next().unwrap_or_default();
        catalogue()
            .in_path(path)
            .map(|found| Credential {
                detector: Detector::ApiKey,
                class: found.family.class(),
                identifiers: Identifiers {
                    token_family: Some(found.family.name().to_owned()),
                    key_id: found.id.map(str::to_owned),
                    header: Some("path".to_owned()),
                    ..Identifiers::default()
                },
                secret: Secret::new(found.secret.as_bytes()),
            })
            .collect()
    }

    fn header_value(&self, name: &str) -> Option<String> {
        self.req.headers.iter().find(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn presigned(&self) -> Option<Credential> {
        let mut credential = None;
        let mut token = None;
        let mut signed = Signed { algorithm: SIGV4_ALGORITHMS[0], region_set: None };
        for (name, value) in query_params(&self.req.path) {
            let is = |s: &str| name.eq_ignore_ascii_case(s);
            if is("X-Amz-Credential") {
                credential = Some(value);
            } else if is("X-Amz-Security-Token") && !value.is_empty() {
                token = Some(value.into_owned());
            } else if is("X-Amz-Region-Set") {
                signed.region_set = Some(value.into_owned());
            } else if is("X-Amz-Algorithm")
                && let Some(a) = SIGV4_ALGORITHMS.iter().find(|a| value.eq_ignore_ascii_case(a))
            {
                signed.algorithm = *a;
            }
        }
        let credential = credential?;
        self.aws(Detector::AwsSigv4Presigned, "query:X-Amz-Credential", &credential, signed, move || token)
    }

    /// `credential` is the SigV4 scope `<key id>/<date>/<region>/<service>/aws4_request`
    /// (SigV4a drops the region).
    fn aws(&self, detector: Detector, header: &str, credential: &str, signed: Signed, session_token: impl FnOnce() -> Option<String>) -> Option<Credential> {
        let parts: Vec<&str> = credential.trim().split('/').collect();
        let key_id = *parts.first()?;
        let (region, service) = match parts.as_slice() {
            [_, _, region, service, "aws4_request"] => (Some(*region), Some(*service)),
            [_, _, service, "aws4_request"] => (None, Some(*service)),
            _ => (None, None),
        };
        let aws_shaped = (16..=128).contains(&key_id.len()) && key_id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        // Any other key id (MinIO, Ceph, R2) is recognised by the signing algorithm plus
        // a well-formed scope: `<key>/<yyyymmdd>/[<region>/]<service>/aws4_request`.
        let scoped = service.is_some() && parts.get(1).is_some_and(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()));
        let other_key = (1..=128).contains(&key_id.len()) && key_id.bytes().all(|b| b.is_ascii_graphic() && !b"/,=\"".contains(&b));
        if !(aws_shaped || (scoped && other_key)) {
            return None;
        }
        let scope_word = |s: &&str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let (class, secret) = match key_id.get(..4) {
            Some("AKIA" | "ABIA" | "ACCA") => (Class::Static, key_id.to_owned()),
            // Temporary credentials: the session token is what actually identifies the
            // session (many sessions share nothing else), so it is what we fingerprint.
            Some("ASIA") => (Class::ShortLived { lifetime_seconds: None, remaining_seconds: None }, session_token().unwrap_or_else(|| key_id.to_owned())),
            _ => (Class::UnknownFormat, key_id.to_owned()),
        };
        let region_set =
            signed.region_set.map(|set| set.split(',').map(str::trim).filter(|r| *r == "*" || scope_word(r)).map(str::to_owned).collect::<Vec<_>>());
        Some(Credential {
            detector,
            class,
            identifiers: Identifiers {
                access_key_id: Some(key_id.to_owned()),
                aws_region: region.filter(scope_word).map(str::to_owned),
                aws_service: service.filter(scope_word).map(str::to_owned),
                aws_region_set: region_set.filter(|set| !set.is_empty()),
                aws_algorithm: Some(signed.algorithm.to_owned()),
                header: Some(header.to_owned()),
                ..Identifiers::default()
            },
            secret: Secret::new(secret),
        })
    }

    /// A bearer-style token: a JWT if it decodes as one, else classified by prefix.
    fn token(&self, detector: Detector, header: &str, token: &str) -> Credential {
        let verdict = catalogue().by_prefix(token).or_else(|| catalogue().by_shape(token)).map_or(Verdict::Generic, Verdict::Family);
        self.named(detector, header, token, verdict)
    }

    /// A token whose family (if any) the catalogue has already named.
    fn named(&self, detector: Detector, header: &str, token: &str, verdict: Verdict<'_>) -> Credential {
        let family: Option<&Family> = match verdict {
            Verdict::Family(f) => Some(f),
            Verdict::Generic => None,
        };
        let mut identifiers = Identifiers { header: Some(header.to_owned()), ..Identifiers::default() };
        let (detector, class) = match decode_jwt(token) {
            Some(claims) => {
                let class = self.jwt_class(&claims);
                claims.fill(&mut identifiers);
                identifiers.token_family = family.map(|f| f.name().to_owned());
                // A JWT in an API-key header is still an API key; we just know more.
                let detector = match detector {
                    Detector::BearerToken => Detector::BearerJwt,
                    other => other,
                };
                (detector, class)
            }
            None => {
                identifiers.token_family = Some(family.map_or("generic", |f| f.name()).to_owned());
                identifiers.key_id = family.and_then(|f| f.identifier_in(token));
                (detector, family.map_or(Class::Unknown, Family::class))
            }
        };
        Credential { detector, class, identifiers, secret: Secret::new(token.as_bytes()) }
    }

    fn jwt_class(&self, claims: &JwtClaims) -> Class {
        let lifetime_seconds = claims.exp.zip(claims.iat).map(|(exp, iat)| exp.saturating_sub(iat));
        let remaining_seconds = claims.exp.map(|exp| exp.saturating_sub(self.now));
        let sigil = claims.iss.as_deref().is_some_and(|iss| self.sigil_issuers.iter().any(|s| s.trim_end_matches('/') == iss.trim_end_matches('/')));
        if sigil {
            Class::SigilIssued { lifetime_seconds, remaining_seconds }
        } else if claims.exp.is_some() {
            Class::ShortLived { lifetime_seconds, remaining_seconds }
        } else {
            Class::Unknown
        }
    }
}

fn basic(header: &str, encoded: &str) -> Option<Credential> {
    let mut decoded = B64_STANDARD_LENIENT.decode(encoded.trim()).ok()?;
    let credential = basic_from_decoded(header, &decoded);
    wipe(&mut decoded);
    credential
}

fn basic_from_decoded(header: &str, decoded: &[u8]) -> Option<Credential> {
    let (user, password) = match decoded.iter().position(|&b| b == b':') {
        Some(i) => (decoded.get(..i)?, decoded.get(i + 1..)?),
        None => (decoded, &[][..]),
    };
    // Either half may be the credential: GitHub takes `<token>:x-oauth-basic`, GitHub Apps
    // `x-access-token:<token>`, Stripe `<key>:`. A half that looks like a token is the
    // secret, and a secret is never reported as the user name.
    let user_text = std::str::from_utf8(user).ok();
    let user_family = user_text.and_then(family);
    let password_family = std::str::from_utf8(password).ok().and_then(family);
    // A user name we cannot read, or one that looks machine-generated, may be a secret.
    let user_is_secret = user_family.is_some() || user_text.is_none_or(looks_like_secret);
    let in_password = password_family.is_some() || (user_family.is_none() && !password.is_empty() && !(user_is_secret && is_placeholder(password)));
    let (secret, family) = if in_password { (password, password_family) } else { (user, user_family) };
    if secret.is_empty() {
        return None;
    }
    let username = (in_password && !user_is_secret && !user.is_empty()).then(|| String::from_utf8_lossy(user).into_owned());
    let class = match &family {
        Some((_, class)) => class.clone(),
        // A password: long-lived until someone changes it.
        None if in_password => Class::Static,
        // A key sent as the user name, with no family we know.
        None => Class::Unknown,
    };
    Some(Credential {
        detector: Detector::BasicAuth,
        class,
        identifiers: Identifiers { header: Some(header.to_owned()), username, token_family: family.map(|(name, _)| name.to_owned()), ..Identifiers::default() },
        secret: Secret::new(secret),
    })
}

/// Fixed passwords that services document for "the token is in the user name".
fn is_placeholder(password: &[u8]) -> bool {
    const PLACEHOLDERS: &[&[u8]] = &[b"x-oauth-basic", b"x-oauth-token", b"x", b"X", b"api_token", b"api"];
    PLACEHOLDERS.contains(&password)
}

/// Could this user name be a secret rather than a name? Machine-generated tokens are long,
/// mix letters and digits, and have high per-character entropy; names, e-mail addresses and
/// service-account ids do not (an `@` means an address, which is not secret).
pub(crate) fn looks_like_secret(s: &str) -> bool {
    if s.len() < 20 || s.contains('@') || s.contains(char::is_whitespace) {
        return false;
    }
    let has_digit = s.bytes().any(|b| b.is_ascii_digit());
    let has_alpha = s.bytes().any(|b| b.is_ascii_alphabetic());
    has_digit && has_alpha && shannon_bits_per_char(s.as_bytes()) >= 3.5
}

fn shannon_bits_per_char(bytes: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// The family a token belongs to by its documented prefix (see `families.toml`).
fn family(token: &str) -> Option<(&'static str, Class)> {
    catalogue().by_prefix(token).map(|f| (f.name(), f.class()))
}

/// SigV4 and SigV4a signing algorithms, as sent in `Authorization` and `X-Amz-Algorithm`.
const SIGV4_ALGORITHMS: [&str; 2] = ["AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"];

/// What the request says about how it was signed, beyond the credential scope.
struct Signed {
    algorithm: &'static str,
    /// SigV4a `X-Amz-Region-Set`, comma-separated as sent.
    region_set: Option<String>,
}

const B64_STANDARD_LENIENT: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));

const B64_URL_LENIENT: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::URL_SAFE, GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent));

#[derive(Default)]
pub(crate) struct JwtClaims {
    pub(crate) iss: Option<String>,
    pub(crate) sub: Option<String>,
    aud: Option<Vec<String>>,
    pub(crate) jti: Option<String>,
    pub(crate) exp: Option<i64>,
    iat: Option<i64>,
}

impl JwtClaims {
    fn fill(self, ids: &mut Identifiers) {
        ids.jwt_iss = self.iss;
        ids.jwt_sub = self.sub;
        ids.jwt_aud = self.aud;
        ids.jwt_jti = self.jti;
        ids.jwt_exp = self.exp;
        ids.jwt_iat = self.iat;
    }
}

/// The `exp` claim of a JWS compact token (not verified: for a token the caller was just
/// handed by a trusted source, e.g. the local agent).
pub fn jwt_expiry(token: &str) -> Option<i64> {
    decode_jwt(token)?.exp
}

/// Decodes a JWS compact token's claims without verifying it. Anything that is not
/// three base64url parts with a JSON header carrying "alg" and a JSON object payload is
/// not treated as a JWT.
pub(crate) fn decode_jwt(token: &str) -> Option<JwtClaims> {
    let mut parts = token.split('.');
    let (header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header = json_object(header)?;
    header.get("alg")?.as_str()?;
    let claims = json_object(payload)?;
    let string = |key: &str| claims.get(key)?.as_str().map(str::to_owned);
    let aud = match claims.get("aud") {
        Some(Value::String(aud)) => Some(vec![aud.clone()]),
        Some(Value::Array(auds)) => Some(auds.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect()),
        _ => None,
    };
    Some(JwtClaims {
        iss: string("iss"),
        sub: string("sub"),
        aud,
        jti: string("jti"),
        exp: claims.get("exp").and_then(numeric_date),
        iat: claims.get("iat").and_then(numeric_date),
    })
}

fn json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = B64_URL_LENIENT.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// RFC 7519 NumericDate may be fractional; out-of-range floats saturate.
fn numeric_date(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::http::Protocol;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    const NOW: i64 = 1_700_000_000;

    fn req(path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            protocol: Protocol::Http1,
            method: "GET".into(),
            path: path.into(),
            authority: Some("example.com".into()),
            headers: headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
        }
    }

    fn one(headers: &[(&str, &str)]) -> Credential {
        let mut found = detect(&req("/", headers), NOW, &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        found.remove(0)
    }

    fn jwt(claims: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(claims);
        format!("{header}.{claims}.c2lnbmF0dXJl")
    }

    const SIGV4: &str = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024";

    #[test]
    fn sigv4_static_key() {
        let c = one(&[("Authorization", SIGV4)]);
        assert_eq!(c.detector, Detector::AwsSigv4);
        assert_eq!(c.class, Class::Static);
        assert_eq!(c.identifiers.access_key_id.as_deref(), Some("AKIAIOSFODNN7EXAMPLE"));
        assert_eq!(c.identifiers.aws_region.as_deref(), Some("us-east-1"));
        assert_eq!(c.identifiers.aws_service.as_deref(), Some("s3"));
        assert_eq!(c.identifiers.header.as_deref(), Some("authorization"));
        assert_eq!(c.secret.expose(), b"AKIAIOSFODNN7EXAMPLE");
    }

    #[test]
    fn sigv4_temporary_credentials_use_the_session_token() {
        let auth = "AWS4-HMAC-SHA256 Credential=ASIAXXXXXXXXXXXXXXXX/20240101/eu-west-3/sts/aws4_request,SignedHeaders=host,Signature=00";
        let c = one(&[("authorization", auth), ("X-Amz-Security-Token", " IQoJb3JpZ2luX2VjE/session+token= ")]);
        assert_eq!(c.detector, Detector::AwsSigv4);
        assert_eq!(c.class, Class::ShortLived { lifetime_seconds: None, remaining_seconds: None });
        assert_eq!(c.identifiers.access_key_id.as_deref(), Some("ASIAXXXXXXXXXXXXXXXX"));
        assert_eq!(c.identifiers.aws_region.as_deref(), Some("eu-west-3"));
        assert_eq!(c.identifiers.aws_service.as_deref(), Some("sts"));
        assert_eq!(c.secret.expose(), b"IQoJb3JpZ2luX2VjE/session+token=");

        // Without the token header the key id is all there is.
        let c = one(&[("authorization", auth)]);
        assert_eq!(c.secret.expose(), b"ASIAXXXXXXXXXXXXXXXX");
    }

    #[test]
    fn sigv4_other_key_prefixes_and_sigv4a() {
        for (key, class) in [("ABIAXXXXXXXXXXXXXXXX", Class::Static), ("ACCAXXXXXXXXXXXXXXXX", Class::Static), ("AIDAXXXXXXXXXXXXXXXX", Class::UnknownFormat)] {
            let auth = format!("AWS4-HMAC-SHA256 Credential={key}/20240101/us-east-1/s3/aws4_request");
            assert_eq!(one(&[("authorization", &auth)]).class, class, "{key}");
        }
        let c = one(&[("authorization", "AWS4-ECDSA-P256-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/s3/aws4_request, Signature=1")]);
        assert_eq!(c.identifiers.aws_region, None);
        assert_eq!(c.identifiers.aws_service.as_deref(), Some("s3"));
    }

    #[test]
    fn sigv4_malformed_yields_nothing() {
        for auth in [
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=",
            "AWS4-HMAC-SHA256 Credential=akia-lower/x",
            // A key id that is not AWS-shaped needs a well-formed scope.
            "AWS4-HMAC-SHA256 Credential=SHORT/2024-01-01/us-east-1/s3/aws4_request",
            "AWS4-HMAC-SHA256 Credential=SHORT/20240101/us-east-1/s3/other",
            "AWS4-HMAC-SHA256 Credential=SH\"ORT/20240101/us-east-1/s3/aws4_request",
        ] {
            assert!(detect(&req("/", &[("authorization", auth)]), NOW, &[]).is_empty(), "{auth}");
        }
        // Garbage scope parts are not reported as region/service.
        let c = one(&[("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/d/US EAST/<s3>/aws4_request")]);
        assert_eq!((c.identifiers.aws_region, c.identifiers.aws_service), (None, None));
    }

    #[test]
    fn presigned_url() {
        let path = "/bucket/obj?X-Amz-Algorithm=AWS4-HMAC-SHA256\
            &X-Amz-Credential=ASIAQEXAMPLEEXAMPLE1%2F20240101%2Fap-south-1%2Fs3%2Faws4_request\
            &X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host\
            &X-Amz-Security-Token=FwoGZXIvYXdzEBc%2Fsecret%2Btoken%3D&X-Amz-Signature=abc";
        let found = detect(&req(path, &[("host", "bucket.s3.amazonaws.com")]), NOW, &[]);
        assert_eq!(found.len(), 1);
        let c = &found[0];
        assert_eq!(c.detector, Detector::AwsSigv4Presigned);
        assert_eq!(c.class, Class::ShortLived { lifetime_seconds: None, remaining_seconds: None });
        assert_eq!(c.identifiers.access_key_id.as_deref(), Some("ASIAQEXAMPLEEXAMPLE1"));
        assert_eq!(c.identifiers.aws_region.as_deref(), Some("ap-south-1"));
        assert_eq!(c.identifiers.aws_service.as_deref(), Some("s3"));
        assert_eq!(c.identifiers.header.as_deref(), Some("query:X-Amz-Credential"));
        assert_eq!(c.secret.expose(), b"FwoGZXIvYXdzEBc/secret+token=");

        let path = "/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request";
        let found = detect(&req(path, &[]), NOW, &[]);
        assert_eq!(found[0].class, Class::Static);
        assert_eq!(found[0].secret.expose(), b"AKIAIOSFODNN7EXAMPLE");
    }

    #[test]
    fn jwt_bearer_with_lifetime_and_remaining() {
        let token = jwt(r#"{"iss":"https://accounts.google.com","sub":"svc-1","aud":["a","b"],"jti":"id-7","iat":1699999000,"exp":1700002600}"#);
        let c = one(&[("Authorization", &format!("Bearer {token}"))]);
        assert_eq!(c.detector, Detector::BearerJwt);
        assert_eq!(c.class, Class::ShortLived { lifetime_seconds: Some(3600), remaining_seconds: Some(2600) });
        let ids = &c.identifiers;
        assert_eq!(ids.jwt_iss.as_deref(), Some("https://accounts.google.com"));
        assert_eq!(ids.jwt_sub.as_deref(), Some("svc-1"));
        assert_eq!(ids.jwt_aud, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(ids.jwt_jti.as_deref(), Some("id-7"));
        assert_eq!((ids.jwt_iat, ids.jwt_exp), (Some(1_699_999_000), Some(1_700_002_600)));
        assert_eq!(ids.token_family, None);
        assert_eq!(c.secret.expose(), token.as_bytes());
    }

    #[test]
    fn jwt_variants() {
        // Expired, no iat, string aud, fractional exp.
        let c = one(&[("authorization", &format!("bearer {}", jwt(r#"{"aud":"x","exp":1699999999.9}"#)))]);
        assert_eq!(c.class, Class::ShortLived { lifetime_seconds: None, remaining_seconds: Some(-1) });
        assert_eq!(c.identifiers.jwt_aud, Some(vec!["x".to_owned()]));
        // No exp: nothing to say about its lifetime.
        let c = one(&[("authorization", &format!("Bearer {}", jwt(r#"{"sub":"s"}"#)))]);
        assert_eq!((c.detector, c.class), (Detector::BearerJwt, Class::Unknown));
        // Claims that are not an object make it an opaque token.
        let c = one(&[("authorization", &format!("Bearer {}", jwt("[1,2]")))]);
        assert_eq!((c.detector, c.class), (Detector::BearerToken, Class::Unknown));
        assert_eq!(c.identifiers.token_family.as_deref(), Some("generic"));
        // A header without "alg" is not a JWT header.
        let no_alg = format!("{}.{}.x", URL_SAFE_NO_PAD.encode("{}"), URL_SAFE_NO_PAD.encode("{}"));
        assert_eq!(one(&[("authorization", &format!("Bearer {no_alg}"))]).detector, Detector::BearerToken);
    }

    #[test]
    fn sigil_issued_jwt() {
        let token = jwt(r#"{"iss":"https://sigil.example/cluster-a","sub":"spiffe://c/ns/x","iat":1699999900,"exp":1700000200}"#);
        let issuers = vec!["https://sigil.example/cluster-a/".to_owned()];
        let found = detect(&req("/", &[("authorization", &format!("Bearer {token}"))]), NOW, &issuers);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].class, Class::SigilIssued { lifetime_seconds: Some(300), remaining_seconds: Some(200) });
        assert_eq!(found[0].identifiers.jwt_sub.as_deref(), Some("spiffe://c/ns/x"));
    }

    #[test]
    fn bearer_token_families() {
        let short = Class::ShortLived { lifetime_seconds: None, remaining_seconds: None };
        let cases = [
            ("ya29.a0AfH6SMBx", "gcp_oauth", short.clone()),
            ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "github_pat", Class::Static),
            ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "github_oauth", Class::Static),
            ("ghu_16C7e42F292c6912E7710c838347Ae178B4a", "github_user_to_server", short.clone()),
            ("ghs_16C7e42F292c6912E7710c838347Ae178B4a", "github_server_to_server", short.clone()),
            ("github_pat_11ABCDEFG0123456789_abcdef", "github_fine_grained_pat", Class::Static),
            ("glpat-xxxxxxxxxxxxxxxxxxxx", "gitlab_pat", Class::Static),
            ("xoxb-123-456-abc", "slack", Class::Static),
            ("xoxp-123-456-abc", "slack", Class::Static),
            ("xoxa-2-abc", "slack", Class::Static),
            ("xoxs-abc", "slack", Class::Static),
            ("xoxr-abc", "slack", Class::Static),
            ("sk-ant-api03-abcdef", "anthropic", Class::Static),
            ("sk-proj-abcdef", "openai", Class::Static),
            ("opaque-session-123", "generic", Class::Unknown),
        ];
        for (token, family, class) in cases {
            let c = one(&[("Authorization", &format!("Bearer  {token} "))]);
            assert_eq!(c.detector, Detector::BearerToken, "{token}");
            assert_eq!(c.identifiers.token_family.as_deref(), Some(family), "{token}");
            assert_eq!(c.class, class, "{token}");
            assert_eq!(c.secret.expose(), token.as_bytes());
        }
    }

    #[test]
    fn github_token_scheme_and_raw_authorization() {
        let c = one(&[("authorization", "token ghp_abcdefabcdef")]);
        assert_eq!(c.detector, Detector::ApiKey);
        assert_eq!(c.identifiers.token_family.as_deref(), Some("github_pat"));
        assert_eq!(c.class, Class::Static);
        assert_eq!(c.identifiers.header.as_deref(), Some("authorization"));
        // A raw key with no scheme is only trusted with a known prefix.
        let c = one(&[("authorization", "sk-ant-api03-xyz")]);
        assert_eq!(c.identifiers.token_family.as_deref(), Some("anthropic"));
        assert!(detect(&req("/", &[("authorization", "opaque")]), NOW, &[]).is_empty());
        assert!(detect(&req("/", &[("authorization", "Bearer")]), NOW, &[]).is_empty());
        assert!(detect(&req("/", &[("authorization", "Digest username=\"u\", response=\"r\"")]), NOW, &[]).is_empty());
    }

    #[test]
    fn api_key_headers() {
        let c = one(&[("X-Api-Key", "  3f9a8b7c6d5e  ")]);
        assert_eq!(c.detector, Detector::ApiKey);
        assert_eq!(c.class, Class::Unknown);
        assert_eq!(c.identifiers.token_family.as_deref(), Some("generic"));
        assert_eq!(c.identifiers.header.as_deref(), Some("x-api-key"));
        assert_eq!(c.secret.expose(), b"3f9a8b7c6d5e");

        let c = one(&[("x-api-key", "sk-ant-api03-abc")]);
        assert_eq!((c.class, c.identifiers.token_family.as_deref()), (Class::Static, Some("anthropic")));

        for header in ["api-key", "x-goog-api-key", "PRIVATE-TOKEN", "x-auth-token", "apikey"] {
            let c = one(&[(header, "glpat-abcdef")]);
            assert_eq!(c.detector, Detector::ApiKey);
            assert_eq!(c.identifiers.header, Some(header.to_ascii_lowercase()));
            assert_eq!(c.identifiers.token_family.as_deref(), Some("gitlab_pat"));
        }
        // An API key that is a JWT keeps its detector but gains the claims.
        let c = one(&[("apikey", &jwt(r#"{"iss":"supabase","exp":1700000100}"#))]);
        assert_eq!(c.detector, Detector::ApiKey);
        assert_eq!(c.identifiers.jwt_iss.as_deref(), Some("supabase"));
        assert_eq!(c.class, Class::ShortLived { lifetime_seconds: None, remaining_seconds: Some(100) });
        // Empty values are not credentials.
        assert!(detect(&req("/", &[("x-api-key", "  ")]), NOW, &[]).is_empty());
    }

    #[test]
    fn basic_auth() {
        let value = format!("Basic {}", STANDARD.encode("alice:s3cr3t:with:colons"));
        let c = one(&[("Authorization", &value)]);
        assert_eq!(c.detector, Detector::BasicAuth);
        assert_eq!(c.class, Class::Static);
        assert_eq!(c.identifiers.username.as_deref(), Some("alice"));
        assert_eq!(c.secret.expose(), b"s3cr3t:with:colons");

        // Unpadded base64 is accepted.
        let c = one(&[("authorization", "Basic dTpw")]);
        assert_eq!((c.identifiers.username.as_deref(), c.secret.expose()), (Some("u"), &b"p"[..]));

        // Key-as-username: the user name is the secret and is not reported.
        let value = format!("Basic {}", STANDARD.encode("sk-live-abcdef:"));
        let c = one(&[("authorization", &value)]);
        assert_eq!(c.identifiers.username, None);
        assert_eq!(c.secret.expose(), b"sk-live-abcdef");
        assert_eq!(c.class, Class::Static);

        for bad in ["Basic", "Basic !!!", "Basic Og==", "Basic "] {
            assert!(detect(&req("/", &[("authorization", bad)]), NOW, &[]).is_empty(), "{bad}");
        }
    }

    /// A workload sends a GitHub token the way git does (`<token>:x-oauth-basic`): the
    /// token is the credential and no identifier may carry it.
    #[test]
    fn github_token_as_basic_user_name_is_the_secret_not_the_user_name() {
        let token = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
        for password in ["x-oauth-basic", "", "x"] {
            let value = format!("Basic {}", STANDARD.encode(format!("{token}:{password}")));
            let c = one(&[("Authorization", &value)]);
            assert_eq!(c.detector, Detector::BasicAuth);
            assert_eq!(c.identifiers.username, None, "{password:?}");
            assert_eq!(c.identifiers.token_family.as_deref(), Some("github_pat"));
            assert_eq!(c.class, Class::Static);
            assert_eq!(c.secret.expose(), token.as_bytes());
            let ids = serde_json::to_string(&c.identifiers).expect("serializes");
            assert!(!ids.contains(token) && !ids.contains("16C7e42F"), "{ids}");
        }
        // A GitHub App installation token in the password, with the documented user name.
        let ghs = "ghs_16C7e42F292c6912E7710c838347Ae178B4a";
        let value = format!("Basic {}", STANDARD.encode(format!("x-access-token:{ghs}")));
        let c = one(&[("Authorization", &value)]);
        assert_eq!(c.identifiers.username.as_deref(), Some("x-access-token"));
        assert_eq!(c.identifiers.token_family.as_deref(), Some("github_server_to_server"));
        assert_eq!(c.secret.expose(), ghs.as_bytes());
    }

    /// A random API key as the user name (no known prefix) with a placeholder or a real
    /// password: the user name is never reported.
    #[test]
    fn high_entropy_basic_user_names_are_never_identifiers() {
        let key = "q8Zt3VwX1nR7pL0sK4mB9yHc2Fd6Ju5A";
        let value = format!("Basic {}", STANDARD.encode(format!("{key}:x-oauth-basic")));
        let c = one(&[("authorization", &value)]);
        assert_eq!(c.identifiers.username, None);
        assert_eq!(c.secret.expose(), key.as_bytes());
        assert_eq!(c.class, Class::Unknown);
        let value = format!("Basic {}", STANDARD.encode(format!("{key}:hunter2")));
        let c = one(&[("authorization", &value)]);
        assert_eq!((c.identifiers.username, c.secret.expose()), (None, &b"hunter2"[..]));
        // Names stay names: people, bots, e-mail addresses, service accounts.
        for user in ["alice", "deploy-bot", "jenkins", "svc-ci@example-project.iam.gserviceaccount.com", "x-access-token"] {
            let value = format!("Basic {}", STANDARD.encode(format!("{user}:pw")));
            assert_eq!(one(&[("authorization", &value)]).identifiers.username.as_deref(), Some(user));
        }
        // A user name that is not UTF-8 could be anything: not reported.
        let value = format!("Basic {}", STANDARD.encode(b"\xff\xfe:pw"));
        assert_eq!(one(&[("authorization", &value)]).identifiers.username, None);
    }

    #[test]
    fn looks_like_secret_separates_tokens_from_names() {
        assert!(looks_like_secret("q8Zt3VwX1nR7pL0sK4mB9yHc2Fd6Ju5A"));
        assert!(looks_like_secret("AKIAIOSFODNN7EXAMPLE"));
        for name in ["alice", "aaaaaaaaaaaaaaaaaaaaaaaa1", "first.last@example.com", "a very long name 123456"] {
            assert!(!looks_like_secret(name), "{name}");
        }
    }

    #[test]
    fn several_credentials_in_one_request() {
        let found = detect(&req("/", &[("authorization", SIGV4), ("x-api-key", "k"), ("proxy-authorization", "Basic dTpw")]), NOW, &[]);
        let detectors: Vec<_> = found.iter().map(|c| c.detector).collect();
        assert_eq!(detectors, [Detector::AwsSigv4, Detector::ApiKey, Detector::BasicAuth]);
        assert_eq!(found[2].identifiers.header.as_deref(), Some("proxy-authorization"));
    }

    #[test]
    fn nothing_in_a_plain_request() {
        assert!(detect(&req("/index.html?q=1", &[("accept", "*/*"), ("cookie", "a=b")]), NOW, &[]).is_empty());
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let c = one(&[("authorization", "Bearer ghp_SUPERSECRETVALUE123")]);
        let debug = format!("{c:?}");
        assert!(!debug.contains("SUPERSECRETVALUE"), "{debug}");
        assert!(debug.contains("Secret(<redacted>)"));
        assert!(debug.contains("github_pat"));
        let basic = one(&[("authorization", &format!("Basic {}", STANDARD.encode("bob:hunter2")))]);
        let debug = format!("{basic:?}");
        assert!(!debug.contains("hunter2") && debug.contains("bob"), "{debug}");
    }

    #[test]
    fn serialization_shapes() {
        let ids = Identifiers { token_family: Some("slack".into()), ..Identifiers::default() };
        assert_eq!(serde_json::to_string(&ids).expect("serializes"), r#"{"token_family":"slack"}"#);
        let class = Class::ShortLived { lifetime_seconds: Some(60), remaining_seconds: None };
        assert_eq!(serde_json::to_string(&class).expect("serializes"), r#"{"class":"short_lived","lifetime_seconds":60,"remaining_seconds":null}"#);
        assert_eq!(serde_json::to_string(&Class::Static).expect("serializes"), r#"{"class":"static"}"#);
        assert_eq!(serde_json::to_string(&Detector::AwsSigv4Presigned).expect("serializes"), r#""aws_sigv4_presigned""#);
    }

    #[test]
    fn garbage_never_panics() {
        let values = [
            "",
            " ",
            "Bearer ...",
            "Bearer a.b.c.d",
            "Bearer \u{0}.\u{ffff}.x",
            "Basic ====",
            "AWS4-HMAC-SHA256 Credential=////",
            "AWS4-HMAC-SHA256 ,,,,Credential",
            "token",
            "Bearer eyJhbGciOiJub25lIn0.eyJleHAiOjFlMzAwfQ.",
            "Bearer eyJhbGciOiJub25lIn0.bnVsbA.",
        ];
        for v in values {
            for name in ["authorization", "x-api-key", "AUTHORIZATION"] {
                let _ = detect(&req(v, &[(name, v)]), i64::MIN, &[v.to_owned()]);
                let _ = detect(&req(v, &[(name, v)]), i64::MAX, &[]);
            }
        }
        let _ = detect(&req("/?X-Amz-Credential=%&X-Amz-Credential", &[]), 0, &[]);
    }
}
