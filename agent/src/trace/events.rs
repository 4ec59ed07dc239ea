//! Credential-use identity events, as the contract defines them (sigil-proto,
//! sigil/v1/events.proto). They carry fingerprints and non-secret identifiers, never a
//! secret: the secret is dropped as soon as it has been fingerprinted. The detectors'
//! own types are converted here, at the boundary.

use sigil_proto::v1;
pub use sigil_proto::v1::{CredentialFileRead, CredentialUse, Destination};

use super::{
    body::Exchange,
    detect::{Class, Detector, Identifiers},
    files::FileKind,
    http::Protocol,
};

impl From<Detector> for v1::Detector {
    fn from(d: Detector) -> Self {
        match d {
            Detector::AwsSigv4 => Self::AwsSigv4,
            Detector::AwsSigv4Presigned => Self::AwsSigv4Presigned,
            Detector::BearerJwt => Self::BearerJwt,
            Detector::BearerToken => Self::BearerToken,
            Detector::ApiKey => Self::ApiKey,
            Detector::BasicAuth => Self::BasicAuth,
            Detector::TokenExchange => Self::TokenExchange,
        }
    }
}

impl From<Protocol> for v1::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Http1 => Self::Http1,
            Protocol::Http2 => Self::Http2,
        }
    }
}

impl From<FileKind> for v1::FileKind {
    fn from(k: FileKind) -> Self {
        match k {
            FileKind::AwsSharedCredentials => Self::AwsSharedCredentials,
            FileKind::AwsConfig => Self::AwsConfig,
            FileKind::GcpApplicationDefaultCredentials => Self::GcpApplicationDefaultCredentials,
            FileKind::GcpCredentialStore => Self::GcpCredentialStore,
            FileKind::GcpServiceAccountKey => Self::GcpServiceAccountKey,
            FileKind::Kubeconfig => Self::Kubeconfig,
            FileKind::KubernetesServiceAccountToken => Self::KubernetesServiceAccountToken,
            FileKind::DotEnv => Self::DotEnv,
            FileKind::SshPrivateKey => Self::SshPrivateKey,
            FileKind::Netrc => Self::Netrc,
            FileKind::GitCredentials => Self::GitCredentials,
            FileKind::DockerConfig => Self::DockerConfig,
        }
    }
}

impl From<Identifiers> for v1::Identifiers {
    fn from(i: Identifiers) -> Self {
        Self {
            access_key_id: i.access_key_id,
            aws_region: i.aws_region,
            aws_service: i.aws_service,
            jwt_iss: i.jwt_iss,
            jwt_sub: i.jwt_sub,
            jwt_aud: i.jwt_aud.unwrap_or_default(),
            jwt_jti: i.jwt_jti,
            jwt_exp: i.jwt_exp,
            jwt_iat: i.jwt_iat,
            token_family: i.token_family,
            aws_region_set: i.aws_region_set.unwrap_or_default(),
            aws_algorithm: i.aws_algorithm,
            key_id: i.key_id,
            header: i.header,
            username: i.username,
        }
    }
}

/// Sets `class` and, where known, the lifetime fields of a credential use.
pub fn set_class(used: &mut CredentialUse, class: &Class) {
    let (c, lifetime, remaining) = match class {
        Class::Static => (v1::CredentialClass::Static, None, None),
        Class::ShortLived { lifetime_seconds, remaining_seconds } => (v1::CredentialClass::ShortLived, *lifetime_seconds, *remaining_seconds),
        Class::SigilIssued { lifetime_seconds, remaining_seconds } => (v1::CredentialClass::SigilIssued, *lifetime_seconds, *remaining_seconds),
        Class::Unknown => (v1::CredentialClass::Unknown, None, None),
        Class::UnknownFormat => (v1::CredentialClass::UnknownFormat, None, None),
    };
    used.class = c as i32;
    used.lifetime_seconds = lifetime;
    used.remaining_seconds = remaining;
}

impl From<Exchange> for v1::Exchange {
    fn from(e: Exchange) -> Self {
        Self { kind: e.kind.to_owned(), role_arn: e.role_arn, role_session_name: e.role_session_name, client_id: e.client_id, audience: e.audience }
    }
}
