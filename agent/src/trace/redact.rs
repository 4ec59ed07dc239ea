//! Removing credentials from request targets before they leave the node.
//!
//! Request paths are useful evidence (which API a credential was used against), but
//! presigned URLs and OAuth-style callbacks carry the secret itself in the query string.
//! Events therefore only ever carry a target that went through [`strip_credential_params`].

use std::borrow::Cow;

/// Parameter names whose values are credentials (compared case-insensitively, after
/// percent-decoding, so `X-Amz-Signature` and `x%2Damz%2Dsignature` are both caught).
const CREDENTIAL_PARAMS: &[&str] = &[
    "x-amz-credential",
    "x-amz-signature",
    "x-amz-security-token",
    "x-goog-credential",
    "x-goog-signature",
    "x-goog-security-token",
    "access_token",
    "refresh_token",
    "private_token",
    "client_assertion",
    "id_token",
    "token",
    "api_key",
    "apikey",
    "key",
    "sig",
    "signature",
    "password",
    "secret",
    "client_secret",
    "code",
];

/// Returns `target` without the query parameters that carry credentials.
///
/// The path and the remaining parameters are kept byte for byte and in order, so the
/// result still says which endpoint was called. A fragment (never sent on the wire, but
/// OAuth implicit-flow URLs put `access_token` there) is filtered the same way.
pub fn strip_credential_params(target: &str) -> String {
    let (rest, fragment) = match target.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (target, None),
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(target.len());
    out.push_str(&filter_path(path));
    if let Some(query) = query.map(filter_params).filter(|q| !q.is_empty()) {
        out.push('?');
        out.push_str(&query);
    }
    if let Some(fragment) = fragment.map(filter_params).filter(|f| !f.is_empty()) {
        out.push('#');
        out.push_str(&fragment);
    }
    out
}

/// Keeps the parameters that are not credentials, with the separator (`&` or `;`, both
/// accepted by common servers) that came before each kept one.
fn filter_params(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for (separator, param) in split_params(query) {
        if param.is_empty() || is_credential_param(param) {
            continue;
        }
        if !out.is_empty() {
            out.push(separator.unwrap_or('&'));
        }
        out.push_str(param);
    }
    out
}

/// `a=1&b=2;c=3` -> `(None, "a=1")`, `(Some('&'), "b=2")`, `(Some(';'), "c=3")`.
fn split_params(query: &str) -> impl Iterator<Item = (Option<char>, &str)> {
    let mut rest = Some(query);
    let mut separator = None;
    std::iter::from_fn(move || {
        let current = rest?;
        let this_separator = separator;
        match current.find(['&', ';']) {
            Some(i) => {
                separator = current[i..].chars().next();
                rest = Some(&current[i + 1..]);
                Some((this_separator, &current[..i]))
            }
            None => {
                rest = None;
                Some((this_separator, current))
            }
        }
    })
}

/// Path segments may carry `;name=value` parameters (RFC 3986 matrix parameters, Java
/// servlets' `;jsessionid=`): credential ones are removed there too.
fn filter_path(path: &str) -> String {
    if !path.contains(';') {
        return path.to_owned();
    }
    let segments: Vec<String> = path
        .split('/')
        .map(|segment| match segment.split_once(';') {
            Some((name, params)) => {
                let kept = filter_params(params);
                if kept.is_empty() { name.to_owned() } else { format!("{name};{kept}") }
            }
            None => segment.to_owned(),
        })
        .collect();
    segments.join("/")
}

fn is_credential_param(param: &str) -> bool {
    let name = param.split_once('=').map_or(param, |(name, _)| name);
    let name = percent_decode(name);
    CREDENTIAL_PARAMS.iter().any(|known| name.eq_ignore_ascii_case(known))
}

/// Splits the query string of a request target into percent-decoded `(name, value)`
/// pairs. `+` is kept literally: AWS and most token-carrying APIs percent-encode spaces,
/// and turning `+` into a space would corrupt base64 tokens.
pub(crate) fn query_params(target: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    let query = target.split_once('?').map_or("", |(_, query)| query).split('#').next().unwrap_or("");
    split_params(query).map(|(_, param)| param).filter(|p| !p.is_empty()).map(|param| {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        (percent_decode(name), percent_decode(value))
    })
}

/// Decodes `%XX` escapes; malformed escapes are kept as they are rather than rejected,
/// because a garbled parameter must still be recognisable by name.
pub(crate) fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex_value(hi).zip(hex_value(lo)),
            _ => None,
        };
        match escaped {
            Some((hi, lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_presigned_aws_parameters_and_keeps_the_rest_in_order() {
        let target = "/bucket/key.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
            &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request\
            &X-Amz-Date=20240101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
            &X-Amz-Security-Token=FQoGZXIvYXdzE%2Bsecret&X-Amz-Signature=abcdef0123";
        assert_eq!(
            strip_credential_params(target),
            "/bucket/key.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20240101T000000Z\
             &X-Amz-Expires=900&X-Amz-SignedHeaders=host"
        );
    }

    #[test]
    fn parameter_names_are_case_insensitive_and_percent_decoded() {
        assert_eq!(strip_credential_params("/a?x-amz-signature=1&b=2"), "/a?b=2");
        assert_eq!(strip_credential_params("/a?X%2DAmz%2DSignature=1&b=2"), "/a?b=2");
        assert_eq!(strip_credential_params("/a?ACCESS_TOKEN=1&b=2"), "/a?b=2");
    }

    #[test]
    fn strips_every_common_credential_parameter() {
        for name in ["access_token", "id_token", "token", "api_key", "apikey", "key", "sig", "signature", "password", "secret", "client_secret", "code"] {
            let target = format!("/p?keep=1&{name}=s3cr3t&also=2");
            assert_eq!(strip_credential_params(&target), "/p?keep=1&also=2", "{name}");
        }
    }

    /// A GCS V4 signed URL as `gsutil signurl` / the client libraries produce it: the
    /// signature is a bearer capability and the credential names the signing account.
    #[test]
    fn strips_gcs_v4_signed_url_parameters() {
        let target = "/my-bucket/report.csv?X-Goog-Algorithm=GOOG4-RSA-SHA256\
            &X-Goog-Credential=signer%40proj.iam.gserviceaccount.com%2F20240101%2Fauto%2Fstorage%2Fgoog4_request\
            &X-Goog-Date=20240101T000000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host\
            &X-Goog-Signature=5a1b2c3d4e5f60718293a4b5c6d7e8f9";
        assert_eq!(
            strip_credential_params(target),
            "/my-bucket/report.csv?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Date=20240101T000000Z\
             &X-Goog-Expires=900&X-Goog-SignedHeaders=host"
        );
    }

    #[test]
    fn strips_oauth_and_gitlab_token_parameters() {
        for name in ["X-Goog-Signature", "x-goog-credential", "private_token", "refresh_token", "client_assertion", "client_secret"] {
            let target = format!("/p?keep=1&{name}=s3cr3t&also=2");
            assert_eq!(strip_credential_params(&target), "/p?keep=1&also=2", "{name}");
        }
        assert_eq!(
            strip_credential_params("/oauth/token?grant_type=client_credentials&client_assertion_type=urn%3Aietf&client_assertion=eyJ.x.y"),
            "/oauth/token?grant_type=client_credentials&client_assertion_type=urn%3Aietf"
        );
    }

    /// `;` separates parameters for many servers (and in HTML 4's recommendation): a
    /// secret behind one must not survive as part of its neighbour.
    #[test]
    fn semicolon_separated_parameters_are_filtered_and_separators_kept() {
        assert_eq!(strip_credential_params("/a?x=1;token=s3cr3t;y=2"), "/a?x=1;y=2");
        assert_eq!(strip_credential_params("/a?token=s3cr3t;y=2&z=3"), "/a?y=2&z=3");
        assert_eq!(strip_credential_params("/a?x=1&private_token=s;refresh_token=t"), "/a?x=1");
        assert_eq!(strip_credential_params("/cb#state=1;access_token=abc"), "/cb#state=1");
        // Path (matrix) parameters.
        assert_eq!(strip_credential_params("/app;jsessionid=1;token=abc/x?y=1"), "/app;jsessionid=1/x?y=1");
        assert_eq!(strip_credential_params("/app;access_token=abc"), "/app");
        // Detection reads `;`-separated parameters the same way.
        let names: Vec<String> = query_params("/a?x=1;X-Amz-Credential=K").map(|(n, _)| n.into_owned()).collect();
        assert_eq!(names, ["x", "X-Amz-Credential"]);
    }

    #[test]
    fn no_trailing_question_mark_when_nothing_is_left() {
        assert_eq!(strip_credential_params("/cb?code=abc&token=x"), "/cb");
        assert_eq!(strip_credential_params("/cb?"), "/cb");
        assert_eq!(strip_credential_params("/cb?&&"), "/cb");
    }

    #[test]
    fn keeps_targets_without_credentials_unchanged() {
        assert_eq!(strip_credential_params("/"), "/");
        assert_eq!(strip_credential_params("/a/b?x=1&y=2"), "/a/b?x=1&y=2");
        assert_eq!(strip_credential_params("*"), "*");
        assert_eq!(strip_credential_params(""), "");
        // Names that merely contain a credential word are not credentials.
        assert_eq!(strip_credential_params("/a?monkey=1&tokens=2"), "/a?monkey=1&tokens=2");
    }

    #[test]
    fn valueless_and_empty_named_parameters() {
        assert_eq!(strip_credential_params("/a?token&x"), "/a?x");
        assert_eq!(strip_credential_params("/a?=v&key="), "/a?=v");
    }

    #[test]
    fn fragment_is_filtered_too() {
        assert_eq!(strip_credential_params("/cb?state=1#access_token=abc&token_type=bearer"), "/cb?state=1#token_type=bearer");
        assert_eq!(strip_credential_params("/cb#id_token=abc"), "/cb");
    }

    #[test]
    fn garbage_does_not_panic() {
        for target in ["%", "?%", "?%zz=1", "?a=%e2%82", "?\u{0}=\u{ffff}", "??&=&?#?#", "?%%%"] {
            let _ = strip_credential_params(target);
        }
        assert_eq!(strip_credential_params("/a?%zz=1"), "/a?%zz=1");
    }

    #[test]
    fn query_params_decode_names_and_values() {
        let params: Vec<_> = query_params("/x?a=1&b=%2F%2b+&c&%zz=%").map(|(n, v)| (n.into_owned(), v.into_owned())).collect();
        assert_eq!(params, [("a".into(), "1".into()), ("b".into(), "/++".into()), ("c".into(), String::new()), ("%zz".into(), "%".into()),]);
        assert_eq!(query_params("/no-query").count(), 0);
    }
}
