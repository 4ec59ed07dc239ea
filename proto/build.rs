//! Generates Rust from the protos with a vendored protoc, so no system protoc is needed.
//!
//! The identity events (sigil/v1/events.proto) also get serde derives: their JSON (agent
//! `--stdout`, collector HTTP API) is derived from the same generated types, so a field
//! renamed in the proto is renamed everywhere and a stale use fails to compile.

/// Enum-typed fields and the module in `src/json.rs` that writes them as names.
const ENUM_FIELDS: &[(&str, &str)] = &[
    ("ProcessExec.source", "source"),
    ("Workload.kind", "workload_kind"),
    ("Workload.qos_class", "qos_class::option"),
    ("Workload.runtime", "container_runtime::option"),
    ("TokenDenied.reason", "deny_reason"),
    ("CredentialUse.protocol", "protocol"),
    ("CredentialUse.detector", "detector"),
    ("CredentialUse.class", "credential_class"),
    ("CredentialFileRead.file_kind", "file_kind"),
    ("Finding.finding_kind", "finding_kind"),
    ("Finding.severity", "severity"),
    ("CredentialObtained.class", "credential_class"),
];

/// Fields left out of JSON when absent, as the agent always wrote them.
const SKIP_IF_NONE: &[&str] = &[
    "CredentialUse.lifetime_seconds",
    "CredentialUse.remaining_seconds",
    "Identifiers.access_key_id",
    "Identifiers.aws_region",
    "Identifiers.aws_service",
    "Identifiers.jwt_iss",
    "Identifiers.jwt_sub",
    "Identifiers.jwt_jti",
    "Identifiers.jwt_exp",
    "Identifiers.jwt_iat",
    "Identifiers.token_family",
    "Identifiers.header",
    "Identifiers.username",
    "Identifiers.aws_algorithm",
    "Identifiers.key_id",
    "CredentialUse.exchange",
    "CredentialUse.count",
    "CredentialUse.first_seen",
    "CredentialUse.last_seen",
    "Exchange.role_arn",
    "Exchange.role_session_name",
    "Exchange.client_id",
    "Exchange.audience",
    "ProcessExec.pod",
    "ProcessExec.run",
    "ProcessRef.pod",
    "ProcessRef.run",
    "TokenDenied.source",
    "PodMeta.owner",
    "Owner.via",
    "CredentialObtained.tls_library",
    "CredentialObtained.identifier",
    "CredentialObtained.expires_at",
    "CredentialObtained.expires_in",
    "CredentialObtained.principal",
    "CredentialObtained.token_type",
    "CredentialObtained.scope",
    "CredentialObtained.token_iss",
    "CredentialObtained.token_sub",
    "CredentialObtained.token_jti",
    "CredentialObtained.token_exp",
    "CredentialObtained.presented_jti",
    "CredentialObtained.presented_iss",
    "CredentialObtained.presented_sub",
    "CredentialObtained.presented_fingerprint",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY (edition 2024 set_var): build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    let mut b = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .btree_map(".sigil.v1")
        .type_attribute(".sigil.v1", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".sigil.v1", "#[serde(default)]")
        .type_attribute(".sigil.v1.Event.body", "#[serde(tag = \"kind\", rename_all = \"snake_case\")]")
        .field_attribute(".sigil.v1.Identifiers.jwt_aud", "#[serde(skip_serializing_if = \"Vec::is_empty\")]")
        .field_attribute(".sigil.v1.Identifiers.aws_region_set", "#[serde(skip_serializing_if = \"Vec::is_empty\")]")
        .field_attribute(".sigil.v1.PodMeta.labels", "#[serde(skip_serializing_if = \"std::collections::BTreeMap::is_empty\")]")
        // Only io_uring opens say how the file was opened.
        .field_attribute(".sigil.v1.CredentialFileRead.via", "#[serde(skip_serializing_if = \"String::is_empty\")]");
    for (field, module) in ENUM_FIELDS {
        b = b.field_attribute(format!(".sigil.v1.{field}"), format!("#[serde(with = \"crate::json::{module}\")]"));
    }
    for field in SKIP_IF_NONE {
        b = b.field_attribute(format!(".sigil.v1.{field}"), "#[serde(skip_serializing_if = \"Option::is_none\")]");
    }
    b.compile_protos(&["spiffe/workload.proto", "sigil/v1/sigil.proto", "sigil/v1/signer.proto"], &["."])?;
    println!("cargo:rerun-if-changed=spiffe");
    println!("cargo:rerun-if-changed=sigil");
    Ok(())
}
