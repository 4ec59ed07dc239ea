//! Timestamps as audit logs write them, parsed with the `time` crate: RFC 3339 event times,
//! and the credential-expiration formats CloudTrail has used over the years.

use time::{OffsetDateTime, PrimitiveDateTime, format_description::FormatItem, format_description::well_known::Rfc3339, macros::format_description};

/// Parses an RFC 3339 timestamp to Unix seconds (fractional part truncated). Impossible
/// dates are refused rather than wrapped into a plausible time.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s.trim(), &Rfc3339).ok().map(OffsetDateTime::unix_timestamp)
}

/// Offset-less ISO 8601, read as UTC: CloudTrail writes it in some response elements.
const ISO_LOCAL: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]");

/// `Nov 23 2026 3:02:11 PM` (after commas and Unicode spaces are normalised): the form older
/// CloudTrail records use for credential expirations, always UTC.
const LEGACY_SHORT: &[FormatItem<'static>] = format_description!(
    "[month repr:short case_sensitive:false] [day padding:none] [year] [hour repr:12 padding:none]:[minute]:[second] [period case_sensitive:false]"
);
const LEGACY_LONG: &[FormatItem<'static>] = format_description!(
    "[month repr:long case_sensitive:false] [day padding:none] [year] [hour repr:12 padding:none]:[minute]:[second] [period case_sensitive:false]"
);

fn parse_legacy(s: &str) -> Option<i64> {
    // Newer JDKs put U+202F before AM/PM, hence Unicode whitespace.
    let normalised = s.replace(',', " ").split_whitespace().collect::<Vec<_>>().join(" ");
    [LEGACY_SHORT, LEGACY_LONG].iter().find_map(|format| PrimitiveDateTime::parse(&normalised, format).ok()).map(|t| t.assume_utc().unix_timestamp())
}

/// Credential expirations as CloudTrail has written them over the years. None for anything
/// else: the expiry is informative and must not cost the record.
pub(crate) fn parse_expiration(s: &str) -> Option<i64> {
    let s = s.trim();
    parse_rfc3339(s).or_else(|| PrimitiveDateTime::parse(s, ISO_LOCAL).ok().map(|t| t.assume_utc().unix_timestamp())).or_else(|| parse_legacy(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_variants() {
        assert_eq!(parse_rfc3339("2026-11-23T14:02:11Z"), Some(1_795_442_531));
        assert_eq!(parse_rfc3339("2026-11-23T14:02:11.123456789Z"), Some(1_795_442_531));
        assert_eq!(parse_rfc3339("2026-11-23T15:02:11+01:00"), Some(1_795_442_531));
        assert_eq!(parse_rfc3339("2026-11-23T09:32:11.5-04:30"), Some(1_795_442_531));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        // Logstash/OpenSearch `@timestamp`: milliseconds, `Z`.
        assert_eq!(parse_rfc3339("2026-11-23T14:02:11.000Z"), Some(1_795_442_531));
        for bad in [
            "",
            "2026-11-23",
            "2026-11-23T14:02:11",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T14:02:11.Z",
            "2026-11-23T14:02:11Zjunk",
            "2026-11-23T14:02:11+1:00",
            "２０２６-11-23T14:02:11Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn expiration_formats() {
        assert_eq!(parse_expiration("Nov 23, 2026, 3:02:11 PM"), Some(1_795_446_131));
        assert_eq!(parse_expiration("Nov 23, 2026, 3:02:11\u{202f}PM"), Some(1_795_446_131));
        assert_eq!(parse_expiration("November 23, 2026, 3:02:11 pm"), Some(1_795_446_131));
        assert_eq!(parse_expiration("Nov 23, 2026 12:00:00 AM"), Some(1_795_392_000));
        assert_eq!(parse_expiration("2026-11-23T15:02:11Z"), Some(1_795_446_131));
        assert_eq!(parse_expiration("2026-11-23T15:02:11.000Z"), Some(1_795_446_131));
        assert_eq!(parse_expiration("2026-11-23T15:02:11"), Some(1_795_446_131));
        assert_eq!(parse_expiration("Foo 23, 2026, 3:02:11 PM"), None);
        assert_eq!(parse_expiration("Nov 31, 2026, 3:02:11 PM"), None);
        assert_eq!(parse_expiration("Nov 23, 2026, 13:02:11 PM"), None);
        assert_eq!(parse_expiration("tomorrow"), None);
    }
}
