//! The fast path for the common CloudTrail record: read straight from the record's text
//! into borrowed fields (no `serde_json::Value` tree, no copy of strings without
//! escapes), skipping every field attribution does not use.
//!
//! It only ever answers for a record it reads exactly as the general path
//! ([`super::cloudtrail`]'s `to_action` over a `Value`) would: a plain record object with
//! its fields nested, non-empty and of the right types. Anything else (containers,
//! `@timestamp`, dotted keys where they could stand for a missing object, a wrong type,
//! an escape the general parser would refuse) returns `None`, and the general path
//! decides, with its precise error messages.

use std::{borrow::Cow, fmt, marker::PhantomData};

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{AssumedRole, CloudAction, Provider, parse_expiration, parse_rfc3339};

/// A string as serde_json hands it: borrowed from the record unless it had escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Absent, `null` and empty are all "not there" (as `opt_str` reads them).
fn opt(s: &Option<Str<'_>>) -> Option<String> {
    s.as_ref().map(|s| &*s.0).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Declares an object read field by field: named fields are kept (the last of duplicate
/// keys wins, as in a `Value`), others skipped; `dotted` tells whether a skipped key had
/// a `.` in it (a SIEM-flattened field).
macro_rules! object {
    ($name:ident { $($field:ident: $ty:ty = $key:literal),* $(,)? }) => {
        #[derive(Default)]
        struct $name<'a> {
            $($field: Option<$ty>,)*
            dotted: bool,
            _borrow: PhantomData<&'a str>,
        }

        impl<'de> Deserialize<'de> for $name<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name<'de>;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<Str<'de>>()? {
                            match &*key.0 {
                                $($key => out.$field = map.next_value()?,)*
                                other => {
                                    out.dotted |= other.contains('.');
                                    map.next_value::<IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(out)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

object!(Record {
    id: Str<'a> = "eventID",
    time: Str<'a> = "eventTime",
    name: Str<'a> = "eventName",
    source: Str<'a> = "eventSource",
    region: Str<'a> = "awsRegion",
    source_ip: Str<'a> = "sourceIPAddress",
    user_agent: Str<'a> = "userAgent",
    error_code: Str<'a> = "errorCode",
    identity: Identity<'a> = "userIdentity",
    request: Request<'a> = "requestParameters",
    response: Response<'a> = "responseElements",
});

object!(Identity {
    arn: Str<'a> = "arn",
    kind: Str<'a> = "type",
    access_key_id: Str<'a> = "accessKeyId",
    user_name: Str<'a> = "userName",
    identity_provider: Str<'a> = "identityProvider",
});

object!(Request {
    role_arn: Str<'a> = "roleArn",
    role_session_name: Str<'a> = "roleSessionName",
});

object!(Response {
    subject_from_token: Str<'a> = "subjectFromWebIdentityToken",
    subject: Str<'a> = "subject",
    provider: Str<'a> = "provider",
    issuer: Str<'a> = "issuer",
    audience: Str<'a> = "audience",
    credentials: Credentials<'a> = "credentials",
});

object!(Credentials {
    access_key_id: Str<'a> = "accessKeyId",
    expiration: Str<'a> = "expiration",
});

/// A required field: present, a string, not empty.
fn req<'s>(s: &'s Option<Str<'_>>) -> Option<&'s str> {
    s.as_ref().map(|s| &*s.0).filter(|s| !s.is_empty())
}

/// The action of a plain CloudTrail record, or `None` when the general path must decide.
/// `assume_role_events` are the calls whose response names issued credentials.
pub(super) fn action(text: &str, assume_role_events: &[&str]) -> Option<CloudAction> {
    // A `\u` escape of a surrogate may be one serde_json refuses to decode but skips
    // unread; let the general path judge it.
    if text.contains("\\ud") || text.contains("\\uD") {
        return None;
    }
    let r: Record<'_> = serde_json::from_str(text).ok()?;
    if r.dotted {
        return None;
    }
    let (id, name, source) = (req(&r.id)?, req(&r.name)?, req(&r.source)?);
    let time_unix = parse_rfc3339(req(&r.time)?)?;
    let identity = r.identity.unwrap_or_default();
    let principal_type = opt(&identity.kind);
    let assumed = if source == "sts.amazonaws.com" && assume_role_events.contains(&name) {
        let response = r.response.unwrap_or_default();
        let credentials = response.credentials.unwrap_or_default();
        if response.dotted {
            return None;
        }
        let request = r.request.unwrap_or_default();
        let federated = matches!(principal_type.as_deref(), Some("WebIdentityUser" | "SAMLUser"));
        let subject = opt(&response.subject_from_token).or_else(|| opt(&response.subject)).or_else(|| if federated { opt(&identity.user_name) } else { None });
        let provider = opt(&response.provider).or_else(|| opt(&response.issuer)).or_else(|| opt(&identity.identity_provider));
        Some(AssumedRole {
            issued_access_key_id: opt(&credentials.access_key_id),
            role_arn: opt(&request.role_arn),
            role_session_name: opt(&request.role_session_name),
            web_identity_subject: subject,
            web_identity_provider: provider,
            audience: opt(&response.audience),
            expiration_unix: credentials.expiration.as_ref().and_then(|s| parse_expiration(&s.0)),
        })
    } else {
        None
    };
    Some(CloudAction {
        provider: Provider::Aws,
        id: id.to_owned(),
        time_unix,
        action: name.to_owned(),
        service: source.to_owned(),
        region: opt(&r.region),
        principal: opt(&identity.arn),
        principal_type,
        access_key_id: opt(&identity.access_key_id),
        source_ip: opt(&r.source_ip),
        user_agent: opt(&r.user_agent),
        error_code: opt(&r.error_code),
        assumed,
        delegation: Vec::new(),
        raw: text.to_owned(),
    })
}
