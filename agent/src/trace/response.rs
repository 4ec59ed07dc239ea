//! Credentials handed out in the responses to credential exchanges.
//!
//! When a process trades one credential for another (see `body`), the response carries
//! what it obtained: an STS `AccessKeyId` and its expiration, an OAuth token and its
//! `expires_in`. This module recovers one HTTP/1 response from the bytes the client read
//! ([`ResponseStream`]: split reads, `Content-Length`, chunked transfer coding, gzip) and
//! reads the non-secret parts of it ([`read_body`]).
//!
//! What is kept: identifiers (access key id, role ARN, the obtained JWT's iss/sub/jti),
//! token type, scope and times. What is never kept: `SecretAccessKey` is skipped without
//! being decoded; `SessionToken`/`Token` and `access_token`/`accessToken` leave only as
//! a [`Secret`] to be fingerprinted (so later uses of the credential, which fingerprint
//! the same value, can be linked); `refresh_token` and `id_token` are never read.

use std::io::Read;

use quick_xml::{Reader, events::Event};
use serde_json::{Map, Value};
use thiserror::Error;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::chunked::ChunkError;
use super::detect::{Secret, decode_jwt};

/// Response bytes held per connection: the kernel copies no more after a POST
/// (`RESPONSE_BUDGET`), and a token response is far smaller.
pub const MAX_RESPONSE: usize = agent_common::RESPONSE_BUDGET as usize;
/// Bytes a gzip body may inflate to: bounds what a hostile server's "zip bomb" costs.
const MAX_DECODED: u64 = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// JSON nesting searched for a credentials object (AWS JSON responses nest it 3 deep).
const MAX_DEPTH: usize = 4;

/// Why a response yielded no credential. None of these carries response bytes.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("not an HTTP/1 response")]
    NotHttp,
    #[error("bytes of the response were not captured (a read larger than the capture)")]
    Truncated,
    #[error("response larger than {MAX_RESPONSE} bytes")]
    TooLarge,
    #[error("bad chunked transfer coding")]
    BadChunk,
    #[error("unsupported content encoding {0}")]
    Encoding(String),
    #[error("gzip body does not inflate (or inflates past {MAX_DECODED} bytes)")]
    BadGzip,
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("body is not a document we read")]
    BadDocument,
    #[error("the document holds no credential")]
    NoCredential,
}

/// The non-secret description of a credential a response handed out.
#[derive(Debug, Default)]
pub struct Obtained {
    /// `aws_sts_xml`, `aws_sts_json`, `aws_credentials_json`, `oauth2_token`,
    /// `gcp_access_token`.
    pub format: &'static str,
    /// An AWS access key id (ASIA...).
    pub identifier: Option<String>,
    /// The assumed role's ARN (STS `AssumedRoleUser/Arn`, container credentials `RoleArn`).
    pub principal: Option<String>,
    /// Unix seconds the credential expires at, when the response says so absolutely.
    pub expires_at: Option<i64>,
    /// Seconds of validity, when the response says so relatively (OAuth `expires_in`).
    pub expires_in: Option<i64>,
    pub token_type: Option<String>,
    pub scope: Option<String>,
    /// Claims of an obtained JWT (never the token).
    pub token_iss: Option<String>,
    pub token_sub: Option<String>,
    pub token_jti: Option<String>,
    pub token_exp: Option<i64>,
    /// What later uses of the credential present, to be fingerprinted: the AWS session
    /// token or the access token. `None` when the response carried none.
    pub secret: Option<Secret>,
}

/// One direction (server -> client) of a connection: bytes of the response being read.
#[derive(Default)]
pub struct ResponseStream {
    buf: Vec<u8>,
}

impl ResponseStream {
    /// Adds the bytes of one read (`captured` is its prefix, `true_len` its length).
    /// Returns the outcome once a whole response has been read; the stream then starts
    /// over with the bytes after it.
    pub fn feed(&mut self, captured: &[u8], true_len: usize) -> Option<Result<Obtained, ResponseError>> {
        if captured.len() < true_len {
            self.buf.clear();
            return Some(Err(ResponseError::Truncated));
        }
        self.buf.extend_from_slice(captured);
        match parse_response(&self.buf) {
            Ok(None) if self.buf.len() >= MAX_RESPONSE => {
                self.buf.clear();
                Some(Err(ResponseError::TooLarge))
            }
            Ok(None) => None,
            Ok(Some((consumed, outcome))) => {
                self.buf.drain(..consumed.min(self.buf.len()));
                Some(outcome)
            }
            Err(e) => {
                self.buf.clear();
                Some(Err(e))
            }
        }
    }
}

/// `Ok(None)`: incomplete. `Ok(Some((length, outcome)))`: one whole response of `length`
/// bytes. `Err`: the bytes cannot be a response (the stream is reset).
/// One whole response: its length and what was read from it.
type Whole = (usize, Result<Obtained, ResponseError>);

fn parse_response(buf: &[u8]) -> Result<Option<Whole>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ResponseError::NotHttp),
    };
    let status = res.code.unwrap_or(0);
    let header =
        |name: &str| res.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase());
    let rest = buf.get(head_len..).unwrap_or_default();
    let chunked = header("transfer-encoding").is_some_and(|te| te.rsplit(',').next().is_some_and(|c| c.trim() == "chunked"));
    let (body, body_len) = if chunked {
        match super::chunked::decode(rest, MAX_RESPONSE) {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(ChunkError::Bad) => return Err(ResponseError::BadChunk),
            Err(ChunkError::TooLarge) => return Err(ResponseError::TooLarge),
        }
    } else if let Some(length) = header("content-length") {
        let n: usize = length.parse().map_err(|_| ResponseError::NotHttp)?;
        match rest.get(..n) {
            Some(b) => (b.to_vec(), n),
            None if n > MAX_RESPONSE => return Err(ResponseError::TooLarge),
            None => return Ok(None),
        }
    } else {
        // Delimited by the connection's end, which reads do not show: the response is
        // whole once it reads as a whole document.
        match read_document(status, header("content-encoding").as_deref(), rest) {
            Err(ResponseError::BadDocument) => return Ok(None),
            outcome => return Ok(Some((buf.len(), outcome))),
        }
    };
    let outcome = read_document(status, header("content-encoding").as_deref(), &body);
    Ok(Some((head_len + body_len, outcome)))
}

fn read_document(status: u16, encoding: Option<&str>, body: &[u8]) -> Result<Obtained, ResponseError> {
    if !(200..300).contains(&status) {
        return Err(ResponseError::Status(status));
    }
    match encoding {
        None | Some("identity") => read_body(body),
        Some("gzip" | "x-gzip") => {
            let mut inflated = Vec::new();
            flate2::read::GzDecoder::new(body).take(MAX_DECODED + 1).read_to_end(&mut inflated).map_err(|_| ResponseError::BadGzip)?;
            if inflated.len() as u64 > MAX_DECODED {
                return Err(ResponseError::BadGzip);
            }
            read_body(&inflated)
        }
        Some(other) => Err(ResponseError::Encoding(other.chars().take(32).collect())),
    }
}

/// Reads a token endpoint's response body: STS XML, or JSON (STS, AWS container and
/// instance credentials, OAuth2 token responses, GCP STS and IAM Credentials).
pub fn read_body(body: &[u8]) -> Result<Obtained, ResponseError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'<') => read_sts_xml(body),
        Some(b'{') => {
            let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else { return Err(ResponseError::BadDocument) };
            read_json(&map)
        }
        _ => Err(ResponseError::BadDocument),
    }
}

/// Text of the elements an STS response names its credentials with.
fn read_sts_xml(body: &[u8]) -> Result<Obtained, ResponseError> {
    let mut reader = Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut root_seen = false;
    let mut texts: Vec<(&'static str, String)> = Vec::new();
    let mut session_token = String::new();
    loop {
        let event = reader.read_event().map_err(|_| ResponseError::BadDocument)?;
        // Which field the current element is (only inside `...Result`), if one we keep.
        let field = || -> Option<&'static str> {
            let name = path.last()?.as_slice();
            let parent = path.len().checked_sub(2).and_then(|i| path.get(i)).map(Vec::as_slice);
            match (parent, name) {
                (Some(b"Credentials"), b"AccessKeyId") => Some("AccessKeyId"),
                (Some(b"Credentials"), b"Expiration") => Some("Expiration"),
                (Some(b"Credentials"), b"SessionToken") => Some("SessionToken"),
                (Some(b"AssumedRoleUser" | b"FederatedUser"), b"Arn") => Some("Arn"),
                _ => None,
            }
        };
        match event {
            Event::Start(e) => {
                root_seen = true;
                path.push(e.local_name().as_ref().to_vec());
                if path.len() > 16 {
                    return Err(ResponseError::BadDocument);
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                if let Some(name) = field() {
                    let text = t.decode().map_err(|_| ResponseError::BadDocument)?;
                    append(&mut texts, &mut session_token, name, &text);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(name) = field() {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => match &*r {
                            b"amp" => "&".into(),
                            b"lt" => "<".into(),
                            b"gt" => ">".into(),
                            b"quot" => "\"".into(),
                            b"apos" => "'".into(),
                            _ => return Err(ResponseError::BadDocument),
                        },
                    };
                    append(&mut texts, &mut session_token, name, &resolved);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_seen || !path.is_empty() {
        // Cut short: the closing tags are missing.
        return Err(ResponseError::BadDocument);
    }
    let get = |name: &str| texts.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let identifier = get("AccessKeyId").filter(|id| is_key_id(id)).ok_or(ResponseError::NoCredential)?;
    Ok(Obtained {
        format: "aws_sts_xml",
        identifier: Some(identifier),
        principal: get("Arn"),
        expires_at: get("Expiration").as_deref().and_then(parse_time),
        secret: (!session_token.is_empty()).then(|| Secret::new(std::mem::take(&mut session_token))),
        ..Obtained::default()
    })
}

/// Collects a field's text; the session token goes to its own buffer, never `texts`.
fn append(texts: &mut Vec<(&'static str, String)>, session_token: &mut String, name: &'static str, text: &str) {
    if name == "SessionToken" {
        session_token.push_str(text);
        return;
    }
    match texts.iter_mut().find(|(n, _)| *n == name) {
        Some((_, v)) => v.push_str(text),
        None => texts.push((name, text.to_owned())),
    }
}

/// An AWS access key id: 16-128 upper-case letters and digits.
fn is_key_id(s: &str) -> bool {
    (16..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn parse_time(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s.trim(), &Rfc3339).ok().map(OffsetDateTime::unix_timestamp)
}

/// RFC 3339 text or epoch seconds (STS JSON writes a float).
fn time_value(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => parse_time(s),
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        _ => None,
    }
}

fn string(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)?.as_str().map(str::to_owned).filter(|s| !s.is_empty())
}

/// An object holding AWS credentials (`AccessKeyId`), searched a few levels down.
type Object = Map<String, Value>;

fn aws_credentials(map: &Object, depth: usize) -> Option<(&Object, Option<&Object>)> {
    if map.get("AccessKeyId").is_some_and(Value::is_string) {
        return Some((map, None));
    }
    if depth == 0 {
        return None;
    }
    for v in map.values() {
        if let Value::Object(inner) = v
            && let Some((creds, user)) = aws_credentials(inner, depth - 1)
        {
            // STS puts AssumedRoleUser next to Credentials.
            let here = ["AssumedRoleUser", "FederatedUser"].iter().find_map(|k| map.get(*k)?.as_object());
            return Some((creds, user.or(here)));
        }
    }
    None
}

fn read_json(map: &Map<String, Value>) -> Result<Obtained, ResponseError> {
    if let Some((creds, user)) = aws_credentials(map, MAX_DEPTH) {
        let identifier = string(creds, "AccessKeyId").filter(|id| is_key_id(id)).ok_or(ResponseError::NoCredential)?;
        let token = ["SessionToken", "Token"].iter().find_map(|k| creds.get(*k)?.as_str()).filter(|t| !t.is_empty());
        let nested = !std::ptr::eq(creds, map);
        return Ok(Obtained {
            format: if nested { "aws_sts_json" } else { "aws_credentials_json" },
            identifier: Some(identifier),
            principal: user.and_then(|u| string(u, "Arn")).or_else(|| string(creds, "RoleArn")),
            expires_at: creds.get("Expiration").and_then(time_value),
            secret: token.map(|t| Secret::new(t.as_bytes())),
            ..Obtained::default()
        });
    }
    // OAuth2 (RFC 6749 5.1, RFC 8693) and GCP STS use access_token; GCP IAM Credentials
    // generateAccessToken answers {"accessToken", "expireTime"}.
    let (format, token) = match (map.get("access_token"), map.get("accessToken")) {
        (Some(Value::String(t)), _) => ("oauth2_token", t),
        (_, Some(Value::String(t))) => ("gcp_access_token", t),
        _ => return Err(ResponseError::NoCredential),
    };
    if token.is_empty() {
        return Err(ResponseError::NoCredential);
    }
    let claims = decode_jwt(token).unwrap_or_default();
    let expires_in = match map.get("expires_in") {
        Some(Value::Number(n)) => n.as_i64(),
        // Some servers send it as a string.
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    Ok(Obtained {
        format,
        expires_at: map.get("expireTime").and_then(time_value),
        expires_in: expires_in.filter(|s| *s >= 0),
        token_type: string(map, "token_type").or_else(|| string(map, "issued_token_type")),
        scope: string(map, "scope"),
        token_iss: claims.iss,
        token_sub: claims.sub,
        token_jti: claims.jti,
        token_exp: claims.exp,
        secret: Some(Secret::new(token.as_bytes())),
        ..Obtained::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLANTEDKEY";
    const SESSION_TOKEN: &str = "FwoGZXIvYXdzEPLANTED//SESSION+TOKEN=";

    fn sts_xml() -> String {
        format!(
            r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>spiffe://cluster/ns/shop</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/checkout/session-1</Arn>
      <AssumedRoleId>AROA3XFRBF535PLBIFPI4:session-1</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{SESSION_TOKEN}</SessionToken>
      <SecretAccessKey>{SECRET_KEY}</SecretAccessKey>
      <Expiration>2026-11-24T02:00:00Z</Expiration>
      <AccessKeyId>ASIAPLANTEDKEYID0001</AccessKeyId>
    </Credentials>
    <Audience>sts.amazonaws.com</Audience>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#
        )
    }

    fn http(headers: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 200 OK\r\n{headers}\r\n").into_bytes();
        out.extend_from_slice(body);
        out
    }

    fn feed_all(reads: &[&[u8]]) -> Vec<Result<Obtained, ResponseError>> {
        let mut s = ResponseStream::default();
        reads.iter().filter_map(|r| s.feed(r, r.len())).collect()
    }

    fn jwt(claims: &str) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        format!("{h}.{}.c2ln", URL_SAFE_NO_PAD.encode(claims))
    }

    #[test]
    fn sts_xml_gives_the_key_id_role_and_expiry_but_never_the_secret_key() {
        let o = read_body(sts_xml().as_bytes()).expect("reads");
        assert_eq!(o.format, "aws_sts_xml");
        assert_eq!(o.identifier.as_deref(), Some("ASIAPLANTEDKEYID0001"));
        assert_eq!(o.principal.as_deref(), Some("arn:aws:sts::123456789012:assumed-role/checkout/session-1"));
        assert_eq!(o.expires_at, parse_time("2026-11-24T02:00:00Z"));
        assert_eq!(o.secret.as_ref().map(Secret::expose), Some(SESSION_TOKEN.as_bytes()));
        let shown = format!("{o:?}");
        assert!(!shown.contains(SECRET_KEY) && !shown.contains(SESSION_TOKEN), "{shown}");
    }

    #[test]
    fn sts_json_and_container_credentials_are_read() {
        let sts = format!(
            r#"{{"AssumeRoleResponse":{{"AssumeRoleResult":{{"AssumedRoleUser":{{"Arn":"arn:aws:sts::1:assumed-role/r/s"}},"Credentials":{{"AccessKeyId":"ASIAJSONKEYID00001","Expiration":1.7e9,"SecretAccessKey":"{SECRET_KEY}","SessionToken":"{SESSION_TOKEN}"}}}}}}}}"#
        );
        let o = read_body(sts.as_bytes()).expect("reads");
        assert_eq!((o.format, o.identifier.as_deref(), o.expires_at), ("aws_sts_json", Some("ASIAJSONKEYID00001"), Some(1_700_000_000)));
        assert_eq!(o.principal.as_deref(), Some("arn:aws:sts::1:assumed-role/r/s"));
        let container = format!(
            r#"{{"AccessKeyId":"ASIACONTAINERKEY001","SecretAccessKey":"{SECRET_KEY}","Token":"{SESSION_TOKEN}","Expiration":"2026-11-24T03:00:00Z","RoleArn":"arn:aws:iam::1:role/task"}}"#
        );
        let o = read_body(container.as_bytes()).expect("reads");
        assert_eq!(o.format, "aws_credentials_json");
        assert_eq!(o.principal.as_deref(), Some("arn:aws:iam::1:role/task"));
        assert_eq!(o.secret.as_ref().map(Secret::expose), Some(SESSION_TOKEN.as_bytes()));
    }

    #[test]
    fn oauth_and_gcp_token_responses_keep_times_and_jwt_claims_only() {
        let token = jwt(r#"{"iss":"https://idp","sub":"svc","jti":"tok-1","exp":1700003600}"#);
        let body = format!(
            r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3600,"scope":"read write","refresh_token":"rt-secret","id_token":"idt"}}"#
        );
        let o = read_body(body.as_bytes()).expect("reads");
        assert_eq!((o.format, o.expires_in, o.token_type.as_deref(), o.scope.as_deref()), ("oauth2_token", Some(3600), Some("Bearer"), Some("read write")));
        assert_eq!(
            (o.token_iss.as_deref(), o.token_sub.as_deref(), o.token_jti.as_deref(), o.token_exp),
            (Some("https://idp"), Some("svc"), Some("tok-1"), Some(1_700_003_600))
        );
        assert!(!format!("{o:?}").contains("rt-secret"));
        let gcp = read_body(br#"{"accessToken":"ya29.opaque","expireTime":"2026-11-24T02:00:00Z"}"#).expect("reads");
        assert_eq!((gcp.format, gcp.expires_at), ("gcp_access_token", parse_time("2026-11-24T02:00:00Z")));
        assert!(gcp.token_jti.is_none());
    }

    #[test]
    fn split_chunked_and_gzip_responses_are_reassembled() {
        let xml = sts_xml();
        let whole = http(&format!("Content-Type: text/xml\r\nContent-Length: {}\r\n", xml.len()), xml.as_bytes());
        let (a, b) = whole.split_at(40);
        let (b, c) = b.split_at(300);
        let out = feed_all(&[a, b, c]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().expect("reads").identifier.as_deref(), Some("ASIAPLANTEDKEYID0001"));

        let json = br#"{"access_token":"opaque-token","token_type":"Bearer","expires_in":60}"#;
        let mut chunked = Vec::new();
        for piece in json.chunks(10) {
            chunked.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
        let whole = http("Transfer-Encoding: chunked\r\n", &chunked);
        let reads: Vec<&[u8]> = whole.chunks(7).collect();
        let out = feed_all(&reads);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().expect("reads").expires_in, Some(60));

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, xml.as_bytes()).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let whole = http(&format!("Content-Encoding: gzip\r\nContent-Length: {}\r\n", gz.len()), &gz);
        let out = feed_all(&[&whole]);
        assert_eq!(out[0].as_ref().expect("reads").identifier.as_deref(), Some("ASIAPLANTEDKEYID0001"));

        // No length: whole once the document is.
        let no_len = http("Content-Type: application/json\r\n", json);
        let (a, b) = no_len.split_at(no_len.len() - 5);
        assert_eq!(feed_all(&[a, b]).len(), 1);
        let mut s = ResponseStream::default();
        assert!(s.feed(a, a.len()).is_none(), "half a document is not read");
    }

    #[test]
    fn errors_truncation_and_garbage_yield_no_made_up_fields() {
        let err = |reads: &[&[u8]]| feed_all(reads).into_iter().next().map(|r| r.expect_err("no credential"));
        let body = sts_xml();
        let denied = format!("HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        assert_eq!(err(&[denied.as_bytes()]), Some(ResponseError::Status(403)));
        assert_eq!(err(&[b"SSH-2.0-OpenSSH\r\n\r\n"]), Some(ResponseError::NotHttp));
        let mut s = ResponseStream::default();
        assert_eq!(s.feed(b"HTTP/1.1 200 OK\r\n", 5000).map(|r| r.expect_err("cut")), Some(ResponseError::Truncated));
        // A cut XML document (closing tags missing) is not read as complete.
        let cut = &body[..body.find("</Credentials>").expect("tag")];
        assert_eq!(read_body(cut.as_bytes()).expect_err("cut"), ResponseError::BadDocument);
        // A bad key id is not reported.
        assert_eq!(read_body(br#"{"AccessKeyId":"not a key","Token":"x"}"#).expect_err("bad id"), ResponseError::NoCredential);
        assert_eq!(read_body(br#"{"hello":"world"}"#).expect_err("none"), ResponseError::NoCredential);
        let bomb_like = http("Content-Encoding: gzip\r\nContent-Length: 4\r\n", b"\x1f\x8b\x08\x00");
        assert_eq!(err(&[&bomb_like]), Some(ResponseError::BadGzip));
        assert_eq!(err(&[&http("Content-Encoding: br\r\nContent-Length: 1\r\n", b"x")]), Some(ResponseError::Encoding("br".into())));
        assert_eq!(err(&[&http("Transfer-Encoding: chunked\r\n", b"zz\r\n")]), Some(ResponseError::BadChunk));
        for garbage in [&b"\x00\xff\xfe"[..], b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", b"<a><b>"] {
            let mut s = ResponseStream::default();
            let _ = s.feed(garbage, garbage.len());
            let _ = read_body(garbage);
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused() {
        let zeros = vec![0u8; (MAX_DECODED as usize) * 4];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &zeros).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let whole = http(&format!("Content-Encoding: gzip\r\nContent-Length: {}\r\n", gz.len()), &gz);
        assert_eq!(feed_all(&[&whole]).into_iter().next().map(|r| r.expect_err("bomb")), Some(ResponseError::BadGzip));
    }
}
