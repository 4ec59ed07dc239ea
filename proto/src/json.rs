//! JSON names for the contract's enums: an enum field is an `i32` in the generated code (as
//! prost represents open proto3 enums); in JSON it is the value's proto name without the
//! enum's prefix, lowercased (`SOURCE_PROCFS_SCAN` -> `"procfs_scan"`), which is what the
//! agent has always written. A value this build does not know (from a newer agent) stays
//! a number rather than being lost.

use serde::{Deserialize, Deserializer, Serializer};

/// The JSON name of an enum value, given its proto name and the enum's prefix.
pub fn json_name(proto_name: &str, prefix: &str) -> String {
    proto_name.strip_prefix(prefix).unwrap_or(proto_name).to_ascii_lowercase()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NameOrNumber {
    Name(String),
    Number(i32),
}

fn parse<E>(v: NameOrNumber, prefix: &str, from_name: impl Fn(&str) -> Option<i32>) -> Result<i32, E>
where
    E: serde::de::Error,
{
    match v {
        NameOrNumber::Number(n) => Ok(n),
        NameOrNumber::Name(s) => from_name(&format!("{prefix}{}", s.to_ascii_uppercase())).ok_or_else(|| E::custom(format!("unknown value {s:?}"))),
    }
}

macro_rules! json_enum {
    ($module:ident, $ty:ident, $prefix:literal) => {
        #[doc = concat!("JSON for `", stringify!($ty), "` fields (`serde(with)`).")]
        pub mod $module {
            use super::*;
            use crate::v1::$ty;

            pub fn name(v: i32) -> Option<String> {
                $ty::try_from(v).ok().map(|e| json_name(e.as_str_name(), $prefix))
            }

            pub fn serialize<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
                match name(*v) {
                    Some(n) => s.serialize_str(&n),
                    None => s.serialize_i32(*v),
                }
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
                parse(NameOrNumber::deserialize(d)?, $prefix, |n| $ty::from_str_name(n).map(i32::from))
            }

            /// For `optional` enum fields.
            pub mod option {
                use super::*;

                pub fn serialize<S: Serializer>(v: &Option<i32>, s: S) -> Result<S::Ok, S::Error> {
                    match v {
                        Some(v) => super::serialize(v, s),
                        None => s.serialize_none(),
                    }
                }

                pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
                    Option::<NameOrNumber>::deserialize(d)?.map(|v| parse(v, $prefix, |n| $ty::from_str_name(n).map(i32::from))).transpose()
                }
            }
        }
    };
}

json_enum!(source, Source, "SOURCE_");
json_enum!(workload_kind, WorkloadKind, "WORKLOAD_KIND_");
json_enum!(qos_class, QosClass, "QOS_CLASS_");
json_enum!(container_runtime, ContainerRuntime, "CONTAINER_RUNTIME_");
json_enum!(deny_reason, DenyReason, "DENY_REASON_");
json_enum!(protocol, Protocol, "PROTOCOL_");
json_enum!(detector, Detector, "DETECTOR_");
json_enum!(credential_class, CredentialClass, "CREDENTIAL_CLASS_");
json_enum!(file_kind, FileKind, "FILE_KIND_");
json_enum!(finding_kind, FindingKind, "FINDING_KIND_");
json_enum!(severity, Severity, "SEVERITY_");
