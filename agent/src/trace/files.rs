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

/// Where credential files usually live under a home directory: scanned at start, so a
/// file the kernel has not yet seen opened by its name is known by its inode too.
const IN_HOME: &[&str] = &[
    ".aws/credentials",
    ".aws/config",
    ".config/gcloud/application_default_credentials.json",
    ".config/gcloud/credentials.db",
    ".config/gcloud/access_tokens.db",
    ".kube/config",
    ".netrc",
    ".git-credentials",
    ".docker/config.json",
    ".ssh/id_rsa",
    ".ssh/id_ecdsa",
    ".ssh/id_ed25519",
    ".ssh/id_dsa",
];

/// A credential file's identity as the kernel encodes it: (`s_dev`, inode). The kernel's
/// internal device number has a 20-bit minor; `stat` reports the glibc encoding.
pub type FileId = (u64, u64);

pub fn kernel_file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    let dev = meta.dev();
    (u64::from(libc::major(dev)) << 20 | u64::from(libc::minor(dev)), meta.ino())
}

/// Credential files in this host's home directories (`/root`, `/home/*`) and the
/// host's service-account token, with their identities.
pub fn scan_well_known() -> Vec<(FileId, String, FileKind)> {
    let homes = std::fs::read_dir("/home").into_iter().flatten().filter_map(Result::ok).map(|e| e.path());
    let mut paths: Vec<String> = std::iter::once(std::path::PathBuf::from("/root"))
        .chain(homes)
        .flat_map(|home| IN_HOME.iter().map(move |name| home.join(name).display().to_string()))
        .collect();
    paths.push("/var/run/secrets/kubernetes.io/serviceaccount/token".into());
    paths
        .into_iter()
        .filter_map(|path| {
            let kind = classify(&path)?;
            let meta = std::fs::metadata(&path).ok().filter(std::fs::Metadata::is_file)?;
            Some((kernel_file_id(&meta), path, kind))
        })
        .collect()
}

/// The credential files known by identity, for opens the kernel matched by inode alone
/// (a link, a relative name): what each is. Bounded like the kernel's table.
#[derive(Debug, Default)]
pub struct KnownFiles(std::collections::HashMap<FileId, (String, FileKind)>);

impl KnownFiles {
    pub fn learn(&mut self, id: FileId, path: String, kind: FileKind) {
        if self.0.len() >= agent_common::WATCHED_INODES_ENTRIES as usize && !self.0.contains_key(&id) {
            return;
        }
        self.0.insert(id, (path, kind));
    }

    pub fn get(&self, id: &FileId) -> Option<&(String, FileKind)> {
        self.0.get(id)
    }
}

pub fn access_of(flags: i32) -> &'static str {
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => "write",
        libc::O_RDWR => "read_write",
        _ => "read",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scanned file's identity is encoded as the kernel encodes `s_dev`: decoding it
    /// the way the exec path decodes the kernel's (already checked against live execs)
    /// gives `stat`'s device back.
    #[test]
    fn a_scanned_identity_uses_the_kernels_device_encoding() {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata("/proc/self/exe").expect("stat");
        let (dev, ino) = kernel_file_id(&meta);
        let e = agent_common::ExeIdentity {
            ino,
            size: 0,
            mtime_sec: 0,
            ctime_sec: 0,
            mtime_nsec: 0,
            ctime_nsec: 0,
            dev: dev as u32,
            source: agent_common::ExeSource::Kernel as u32,
        };
        let (major, minor) = e.major_minor();
        assert_eq!(libc::makedev(major, minor), meta.dev());
    }

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
