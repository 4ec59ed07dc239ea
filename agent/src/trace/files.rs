//! Credential files: which names the kernel watches, and what a matched path is.

use serde::Serialize;

/// What the kernel's watch list holds: a base name, or `parent/base` for names that are
/// too common alone (every git checkout has a `config`).
pub const WATCHED: &[&str] = &[
    ".aws/credentials",
    ".aws/config",
    "application_default_credentials.json",
    "credentials.db",
    "access_tokens.db",
    "service-account.json",
    "service_account.json",
    ".kube/config",
    "kubeconfig",
    "serviceaccount/token",
    ".env",
    ".env.local",
    ".env.production",
    "id_rsa",
    "id_ecdsa",
    "id_ed25519",
    "id_dsa",
    ".netrc",
    ".git-credentials",
    ".docker/config.json",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    AwsSharedCredentials,
    AwsConfig,
    GcpApplicationDefaultCredentials,
    GcpCredentialStore,
    GcpServiceAccountKey,
    Kubeconfig,
    KubernetesServiceAccountToken,
    DotEnv,
    SshPrivateKey,
    Netrc,
    GitCredentials,
    DockerConfig,
}

/// Classifies a path the kernel reported (base name or parent/base on the watch list).
pub fn classify(path: &str) -> Option<FileKind> {
    let mut parts = path.rsplit('/');
    let base = parts.next()?;
    let parent = parts.next().unwrap_or("");
    Some(match (parent, base) {
        (".aws", "credentials") => FileKind::AwsSharedCredentials,
        (".aws", "config") => FileKind::AwsConfig,
        (_, "application_default_credentials.json") => FileKind::GcpApplicationDefaultCredentials,
        (_, "credentials.db" | "access_tokens.db") => FileKind::GcpCredentialStore,
        (_, "service-account.json" | "service_account.json") => FileKind::GcpServiceAccountKey,
        (".kube", "config") | (_, "kubeconfig") => FileKind::Kubeconfig,
        ("serviceaccount", "token") => FileKind::KubernetesServiceAccountToken,
        (_, ".env" | ".env.local" | ".env.production") => FileKind::DotEnv,
        (_, "id_rsa" | "id_ecdsa" | "id_ed25519" | "id_dsa") => FileKind::SshPrivateKey,
        (_, ".netrc") => FileKind::Netrc,
        (_, ".git-credentials") => FileKind::GitCredentials,
        (".docker", "config.json") => FileKind::DockerConfig,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every watched name fits the kernel's key and is classified (the loader refuses
    /// a name that does not fit rather than leaving it unwatched).
    #[test]
    fn every_watched_name_fits_the_kernel_key_and_is_classified() {
        for name in WATCHED {
            assert!((1..=agent_common::WATCH_NAME_LEN).contains(&name.len()), "{name} does not fit");
            assert!(classify(&format!("/home/u/{name}")).is_some(), "{name} is watched but not classified");
        }
    }

    #[test]
    fn classifies_watched_paths_and_rejects_lookalikes() {
        assert_eq!(classify("/root/.aws/credentials"), Some(FileKind::AwsSharedCredentials));
        assert_eq!(classify("/home/u/.aws/config"), Some(FileKind::AwsConfig));
        assert_eq!(classify("/repo/.git/config"), None);
        assert_eq!(classify("/var/run/secrets/kubernetes.io/serviceaccount/token"), Some(FileKind::KubernetesServiceAccountToken));
        assert_eq!(classify("/tmp/token"), None);
        assert_eq!(classify("/home/u/.config/gcloud/application_default_credentials.json"), Some(FileKind::GcpApplicationDefaultCredentials));
        assert_eq!(classify("/home/u/.ssh/id_ed25519"), Some(FileKind::SshPrivateKey));
        assert_eq!(classify("/home/u/.ssh/id_ed25519.pub"), None);
        assert_eq!(classify("/app/.env"), Some(FileKind::DotEnv));
        assert_eq!(classify(""), None);
        // Every watched name classifies (what the kernel reports is never dropped here).
        for w in WATCHED {
            assert!(classify(&format!("/x/{w}")).is_some(), "{w}");
        }
    }
}
