//! Command-line arguments of the bridge commands (`token-file`, `credential-process`).

use std::path::PathBuf;

use clap::Args;

use crate::cli::DEFAULT_SOCKET;

/// Where the token comes from: the local agent's Workload API.
#[derive(Args, Debug)]
pub struct Source {
    /// Workload API socket.
    #[arg(long, env = "SIGIL_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Only this SPIFFE ID (default: the first this process is entitled to).
    #[arg(long)]
    pub spiffe_id: Option<String>,
}

#[derive(Args, Debug)]
pub struct TokenFileArgs {
    /// Audience of the token (AWS: `sts.amazonaws.com`; GCP: the provider's allowed audience).
    #[arg(long)]
    pub audience: String,
    /// The token file to keep fresh (replaced atomically, mode 0600).
    #[arg(long)]
    pub path: PathBuf,
    #[command(flatten)]
    pub source: Source,
    /// AWS: the role to assume; printed as `AWS_ROLE_ARN` next to `AWS_WEB_IDENTITY_TOKEN_FILE`.
    #[arg(long)]
    pub aws_role_arn: Option<String>,
    /// GCP: write an external-account credential configuration here (for
    /// `GOOGLE_APPLICATION_CREDENTIALS`) whose `credential_source.file` is the token file.
    #[arg(long, requires = "gcp_audience")]
    pub gcp_config: Option<PathBuf>,
    /// GCP: the workload identity provider,
    /// `//iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>`.
    #[arg(long, requires = "gcp_config")]
    pub gcp_audience: Option<String>,
    /// GCP: the STS token endpoint.
    #[arg(long, default_value = super::gcp::DEFAULT_TOKEN_URL)]
    pub gcp_token_url: String,
    /// GCP: impersonate a service account through this `generateAccessToken` URL.
    #[arg(long, requires = "gcp_config")]
    pub gcp_impersonation_url: Option<String>,
    /// Write the file once and exit (init containers, scripts); default: keep it fresh.
    #[arg(long)]
    pub once: bool,
}

#[derive(Args, Debug)]
pub struct CredentialProcessArgs {
    /// The role to assume with the workload's token.
    #[arg(long)]
    pub role_arn: String,
    /// STS endpoint (the SDKs' `AWS_ENDPOINT_URL_STS` is honoured).
    #[arg(long, env = "AWS_ENDPOINT_URL_STS", default_value = "https://sts.amazonaws.com")]
    pub sts_endpoint: String,
    /// Audience of the token STS is given.
    #[arg(long, default_value = "sts.amazonaws.com")]
    pub audience: String,
    #[command(flatten)]
    pub source: Source,
    /// Role session name (CloudTrail shows it; attribution does not depend on it).
    #[arg(long)]
    pub session_name: Option<String>,
    /// Lifetime of the temporary credentials (STS default when absent).
    #[arg(long)]
    pub duration_seconds: Option<u32>,
    /// Trust only this CA (PEM) for the STS endpoint instead of the system's roots.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}
