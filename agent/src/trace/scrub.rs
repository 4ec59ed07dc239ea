//! The request target an event carries: credential parameters removed
//! ([`strip_credential_params`]), and then every secret this request was found to carry
//! removed wherever it still appears (a token in an unlisted query parameter, a webhook
//! secret in the path). The second step is the safety net that makes "a detected secret
//! never leaves the node" hold whatever placement the catalogue names next.

use super::{
    detect::Credential,
    redact::{percent_decode, strip_credential_params},
};

/// What replaces a secret inside a path segment.
const REDACTED: &str = "REDACTED";

/// `target` as it may appear in an event, given the credentials found in its request.
pub fn event_path<'a>(target: &str, credentials: impl IntoIterator<Item = &'a Credential>) -> String {
    let stripped = strip_credential_params(target);
    let secrets: Vec<&str> = credentials.into_iter().filter_map(|c| std::str::from_utf8(c.secret.expose()).ok()).filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return stripped;
    }
    let (path, query) = match stripped.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (stripped.as_str(), None),
    };
    let mut out = redact_in(path, &secrets);
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|param| {
                let value = param.split_once('=').map_or("", |(_, v)| v);
                let decoded = percent_decode(value);
                !secrets.iter().any(|s| decoded.contains(s) || param.contains(s))
            })
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

/// Replaces every occurrence of each secret, raw or percent-decoded, in a path.
fn redact_in(path: &str, secrets: &[&str]) -> String {
    let decoded = percent_decode(path);
    let mut out = if secrets.iter().any(|s| !path.contains(s) && decoded.contains(s)) {
        // Only an encoded form carries it: keep the decoded path, which we can redact.
        decoded.into_owned()
    } else {
        path.to_owned()
    };
    for secret in secrets {
        out = out.replace(secret, REDACTED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{
        detect::detect,
        http::{Protocol, Request},
    };

    fn path_of(target: &str) -> String {
        path_with(target, &[])
    }

    fn path_with(target: &str, headers: &[(&str, &str)]) -> String {
        let req = Request {
            protocol: Protocol::Http1,
            method: "POST".into(),
            path: target.into(),
            authority: None,
            headers: headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
        };
        event_path(target, &detect(&req, 0, &[]))
    }

    #[test]
    fn webhook_secrets_leave_the_path_and_the_ids_stay() {
        let secret = "AbCdEfGhIjKlMnOpQrStUvWx";
        let path = path_of(&format!("/services/T0123ABCD/B0123ABCD/{secret}"));
        assert_eq!(path, "/services/T0123ABCD/B0123ABCD/REDACTED");
    }

    #[test]
    fn a_token_in_an_unlisted_parameter_is_dropped_with_its_name() {
        let token = format!("ghp_{}", "x1Y2".repeat(9));
        let path = path_of(&format!("/api?page=2&gh={token}&q=a"));
        assert_eq!(path, "/api?page=2&q=a");
        // A secret found in a header that the client also put, percent-encoded, in
        // the path: decoded, then redacted.
        let encoded = token.replace('_', "%5F");
        let bearer = format!("Bearer {token}");
        let path = path_with(&format!("/mirror/{encoded}/x"), &[("authorization", &bearer)]);
        assert_eq!(path, "/mirror/REDACTED/x");
        assert!(!path.contains(&token) && !path.contains(&encoded), "{path}");
    }

    #[test]
    fn nothing_found_means_only_the_usual_stripping() {
        assert_eq!(path_of("/a?b=1&token=x"), "/a?b=1");
    }
}
