//! AWS `credential_process`: trade a Sigil token for temporary AWS credentials at STS
//! (`AssumeRoleWithWebIdentity`), and print them in the format the SDKs read.
//!
//! The request is a plain form POST (the same bytes every SDK sends, so the agent's body
//! detector sees this exchange like any other); the XML answer is parsed with quick-xml.
//! The secret key and session token go to stdout only: never into an error, a log line
//! or a `Debug` rendering.

use std::{fmt, io::Read, path::PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::trace::detect::Secret;

/// The STS API version the form names.
const STS_VERSION: &str = "2011-06-15";
/// A response larger than this is not an STS answer.
const MAX_RESPONSE: u64 = 64 * 1024;

#[derive(Debug, Error)]
pub enum StsError {
    #[error("calling STS at {endpoint}: {source}")]
    Http { endpoint: String, source: Box<ureq::Error> },
    #[error("STS refused the exchange (HTTP {status}): {code}: {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("STS answered HTTP {status} with a body that is not an STS error document")]
    Status { status: u16 },
    #[error("the STS response is not an AssumeRoleWithWebIdentity result: {0}")]
    Malformed(String),
    #[error("reading the CA file {path}: {source}")]
    Ca { path: PathBuf, source: std::io::Error },
}

/// What to ask STS for.
pub struct Exchange<'a> {
    /// e.g. `https://sts.amazonaws.com` (a regional endpoint, or a local test server).
    pub endpoint: &'a str,
    pub role_arn: &'a str,
    pub session_name: &'a str,
    pub duration_seconds: Option<u32>,
    pub token: &'a Secret,
}

/// Temporary credentials. `Debug` shows the key id and expiry only.
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    pub expiration: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).field("expiration", &self.expiration).finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `credential_process` output (version 1), one JSON object.
    pub fn process_json(&self) -> String {
        serde_json::json!({
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": String::from_utf8_lossy(self.secret_access_key.expose()),
            "SessionToken": String::from_utf8_lossy(self.session_token.expose()),
            "Expiration": self.expiration,
        })
        .to_string()
    }
}

/// An HTTP client trusting the system's roots, or only `ca` when given.
pub fn http_client(ca: Option<&PathBuf>) -> Result<ureq::Agent, StsError> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let certs: Vec<Certificate<'static>> = match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| StsError::Ca { path: path.clone(), source })?;
            ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect()
        }
        None => rustls_native_certs::load_native_certs().certs.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned()).collect(),
    };
    let tls = TlsConfig::builder().root_certs(RootCerts::new_with_certs(&certs)).build();
    Ok(ureq::Agent::config_builder().http_status_as_error(false).tls_config(tls).build().new_agent())
}

/// Calls `AssumeRoleWithWebIdentity` (unsigned: the token is the authentication).
pub fn assume_role_with_web_identity(http: &ureq::Agent, x: &Exchange<'_>) -> Result<Credentials, StsError> {
    let token = String::from_utf8_lossy(x.token.expose()).into_owned();
    let duration = x.duration_seconds.map(|d| d.to_string());
    let mut form: Vec<(&str, &str)> = vec![
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", STS_VERSION),
        ("RoleArn", x.role_arn),
        ("RoleSessionName", x.session_name),
        ("WebIdentityToken", &token),
    ];
    if let Some(d) = &duration {
        form.push(("DurationSeconds", d));
    }
    let http_err = |e: ureq::Error| StsError::Http { endpoint: x.endpoint.to_owned(), source: Box::new(e) };
    let mut resp = http.post(x.endpoint).header("Accept", "application/xml").send_form(form).map_err(http_err)?;
    let status = resp.status().as_u16();
    let mut body = String::new();
    resp.body_mut().as_reader().take(MAX_RESPONSE).read_to_string(&mut body).map_err(|e| StsError::Malformed(e.to_string()))?;
    if status == 200 { parse_success(&body) } else { Err(parse_error(status, &body)) }
}

#[derive(Deserialize)]
struct SuccessDoc {
    #[serde(rename = "AssumeRoleWithWebIdentityResult")]
    result: ResultDoc,
}

#[derive(Deserialize)]
struct ResultDoc {
    #[serde(rename = "Credentials")]
    credentials: CredentialsDoc,
}

#[derive(Deserialize)]
struct CredentialsDoc {
    #[serde(rename = "AccessKeyId")]
    access_key_id: String,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: String,
    #[serde(rename = "SessionToken")]
    session_token: String,
    #[serde(rename = "Expiration")]
    expiration: String,
}

#[derive(Deserialize)]
struct ErrorDoc {
    #[serde(rename = "Error")]
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "Code", default)]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

/// Parses a successful `AssumeRoleWithWebIdentityResponse`.
pub fn parse_success(xml: &str) -> Result<Credentials, StsError> {
    // quick-xml's messages name the element, never its text, so they carry no secret.
    let doc: SuccessDoc = quick_xml::de::from_str(xml).map_err(|e| StsError::Malformed(e.to_string()))?;
    let c = doc.result.credentials;
    if c.access_key_id.is_empty() || c.secret_access_key.is_empty() || c.session_token.is_empty() || c.expiration.is_empty() {
        return Err(StsError::Malformed("empty credential field".into()));
    }
    Ok(Credentials {
        access_key_id: c.access_key_id,
        secret_access_key: Secret::new(c.secret_access_key.into_bytes()),
        session_token: Secret::new(c.session_token.into_bytes()),
        expiration: c.expiration,
    })
}

fn parse_error(status: u16, xml: &str) -> StsError {
    match quick_xml::de::from_str::<ErrorDoc>(xml) {
        Ok(doc) => StsError::Refused { status, code: doc.error.code, message: doc.error.message },
        Err(_) => StsError::Status { status },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
mod tests {
    use super::*;

    const OK: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>spiffe://sigil.test/checkout</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <SessionToken>PLANTED-session-token</SessionToken>
      <SecretAccessKey>PLANTED-secret-key</SecretAccessKey>
      <Expiration>2026-11-24T02:00:00Z</Expiration>
      <AccessKeyId>ASIAEXAMPLE000000001</AccessKeyId>
    </Credentials>
    <Provider>www.example.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;

    #[test]
    fn a_real_shaped_response_becomes_credential_process_json() {
        let c = parse_success(OK).unwrap();
        let v: serde_json::Value = serde_json::from_str(&c.process_json()).unwrap();
        assert_eq!(v["Version"], 1);
        assert_eq!(v["AccessKeyId"], "ASIAEXAMPLE000000001");
        assert_eq!(v["SecretAccessKey"], "PLANTED-secret-key");
        assert_eq!(v["SessionToken"], "PLANTED-session-token");
        assert_eq!(v["Expiration"], "2026-11-24T02:00:00Z");
    }

    #[test]
    fn debug_never_shows_the_secret_parts() {
        let shown = format!("{:?}", parse_success(OK).unwrap());
        assert!(shown.contains("ASIAEXAMPLE000000001"));
        assert!(!shown.contains("PLANTED"), "{shown}");
    }

    #[test]
    fn an_sts_error_document_is_a_clear_error() {
        let xml = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Couldn't retrieve verification key</Message></Error><RequestId>x</RequestId></ErrorResponse>"#;
        let e = parse_error(400, xml).to_string();
        assert!(e.contains("InvalidIdentityToken") && e.contains("HTTP 400"), "{e}");
        assert!(matches!(parse_error(502, "<html>bad gateway</html>"), StsError::Status { status: 502 }));
    }

    #[test]
    fn truncated_or_incomplete_responses_are_errors_without_secrets() {
        for bad in ["", "<AssumeRoleWithWebIdentityResponse>", &OK[..OK.len() / 2], &OK.replace("<AccessKeyId>ASIAEXAMPLE000000001</AccessKeyId>", "")] {
            let e = parse_success(bad).expect_err("must not parse").to_string();
            assert!(!e.contains("PLANTED"), "{e}");
        }
    }
}
