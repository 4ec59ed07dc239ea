//! GCP workload identity federation: the external-account credential configuration that
//! Google's client libraries (google-auth, the Go, Java and Node auth libraries, gcloud)
//! read from `GOOGLE_APPLICATION_CREDENTIALS`, with a file-sourced subject token.
//!
//! Field names follow Google's "external_account" format: `type`, `audience`,
//! `subject_token_type`, `token_url`, `credential_source.file` with
//! `credential_source.format.type = "text"` (the file holds the bare JWT), and, when the
//! federated identity impersonates a service account, `service_account_impersonation_url`.

use std::path::Path;

use serde::Serialize;

/// Google's STS endpoint, the default `token_url`.
pub const DEFAULT_TOKEN_URL: &str = "https://sts.googleapis.com/v1/token";
/// The subject token is a JWT (an OIDC ID token style JWT-SVID).
pub const SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

#[derive(Debug, Serialize, PartialEq)]
pub struct ExternalAccount {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `//iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>`
    pub audience: String,
    pub subject_token_type: &'static str,
    pub token_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_impersonation_url: Option<String>,
    pub credential_source: CredentialSource,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct CredentialSource {
    pub file: String,
    pub format: Format,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Format {
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl ExternalAccount {
    pub fn new(audience: &str, token_url: &str, token_file: &Path, impersonation_url: Option<&str>) -> Self {
        Self {
            kind: "external_account",
            audience: audience.to_owned(),
            subject_token_type: SUBJECT_TOKEN_TYPE,
            token_url: token_url.to_owned(),
            service_account_impersonation_url: impersonation_url.map(str::to_owned),
            credential_source: CredentialSource { file: token_file.display().to_string(), format: Format { kind: "text" } },
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain strings cannot fail; keep the error path anyway.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
mod tests {
    use super::*;

    /// The shape google-auth's `external_account.Credentials.from_info` and
    /// `identity_pool.Credentials` read (field names from Google's documentation).
    #[test]
    fn configuration_has_the_fields_google_auth_reads() {
        let aud = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/sigil/providers/node";
        let imp = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken";
        let v: serde_json::Value =
            serde_json::from_str(&ExternalAccount::new(aud, DEFAULT_TOKEN_URL, Path::new("/var/run/sigil/gcp-token"), Some(imp)).to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "external_account",
                "audience": aud,
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": "https://sts.googleapis.com/v1/token",
                "service_account_impersonation_url": imp,
                "credential_source": {"file": "/var/run/sigil/gcp-token", "format": {"type": "text"}},
            })
        );
        let v: serde_json::Value = serde_json::from_str(&ExternalAccount::new(aud, DEFAULT_TOKEN_URL, Path::new("/t"), None).to_json()).unwrap();
        assert!(v.get("service_account_impersonation_url").is_none());
    }
}
