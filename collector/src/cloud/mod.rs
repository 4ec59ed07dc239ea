//! Cloud audit-log parsers: turn AWS CloudTrail and GCP Cloud Audit Log exports into
//! [`CloudAction`]s that the collector can attribute to workload runs.
//!
//! Audit logs arrive from many places (S3 deliveries, `gcloud` output, hand-made exports,
//! partially copied files), so parsing is deliberately tolerant at the document level and
//! strict at the record level: one bad record never costs the others, and every bad record
//! is reported with where it was, instead of being silently dropped or half-read.

pub mod cloudtrail;
pub mod gcp;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Part of an action's identity: ids are only unique within one provider's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Aws,
    Gcp,
}

/// One API call recorded by a cloud provider's audit log, normalised across providers so
/// that attribution works on a single shape.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CloudAction {
    pub provider: Provider,
    /// CloudTrail eventID, GCP insertId: unique per record, used as primary key.
    pub id: String,
    pub time_unix: i64,
    pub action: String,
    pub service: String,
    pub region: Option<String>,
    pub principal: Option<String>,
    pub principal_type: Option<String>,
    /// The key is what links a call back to the credential an attested workload received.
    pub access_key_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// Denied calls matter as much as successful ones, so they are kept, with the code.
    pub error_code: Option<String>,
    /// AssumeRoleWithWebIdentity / AssumeRole: what the call handed out and to whom.
    pub assumed: Option<AssumedRole>,
    /// GCP: service-account impersonation chain (serviceAccountDelegationInfo principals).
    pub delegation: Vec<String>,
    /// The record as received (re-serialised compact JSON), for display.
    pub raw: serde_json::Value,
}

/// Credentials issued by an STS AssumeRole* call: the bridge from a workload's OIDC token
/// (subject, provider, audience) to the temporary access key that later calls are made with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AssumedRole {
    pub issued_access_key_id: Option<String>,
    pub role_arn: Option<String>,
    pub role_session_name: Option<String>,
    pub web_identity_subject: Option<String>,
    pub web_identity_provider: Option<String>,
    pub audience: Option<String>,
    /// None when CloudTrail wrote a date format we do not recognise: the expiry is
    /// informative only and must not cost the record.
    pub expiration_unix: Option<i64>,
}

/// A record that could not be ingested, located precisely enough for an operator to find it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{source_name}: {position}: {reason}")]
pub struct RecordError {
    pub source_name: String,
    pub position: String,
    pub reason: String,
}

/// What parsing one input produced: the good records and a clear error per bad one.
#[derive(Debug, Default)]
pub struct Parsed {
    pub actions: Vec<CloudAction>,
    pub errors: Vec<RecordError>,
}

impl Parsed {
    fn error(&mut self, source_name: &str, position: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(RecordError {
            source_name: source_name.to_owned(),
            position: position.into(),
            reason: reason.into(),
        });
    }

    fn extend(&mut self, other: Parsed) {
        self.actions.extend(other.actions);
        self.errors.extend(other.errors);
    }
}

// ---------------------------------------------------------------------------------------
// Input decoding
// ---------------------------------------------------------------------------------------

/// Bounds what a small malicious or corrupt .gz can make us allocate; real CloudTrail
/// files are a few MB and GCP exports are sharded well below this.
const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Decompresses gzip input (detected by magic, since S3 object names are not trustworthy).
/// A damaged stream keeps what decompressed cleanly so the record scanner can still recover
/// the complete records in it; the damage itself is reported once.
fn decode_input<'a>(
    source_name: &str,
    bytes: &'a [u8],
    out: &mut Parsed,
) -> std::borrow::Cow<'a, [u8]> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut decoded = Vec::new();
    let mut reader = flate2::read::MultiGzDecoder::new(bytes).take(MAX_DECOMPRESSED + 1);
    let mut buf = [0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => decoded.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                out.error(
                    source_name,
                    format!("byte {}", decoded.len()),
                    format!(
                        "gzip stream is damaged after {} decompressed bytes: {e}",
                        decoded.len()
                    ),
                );
                break;
            }
        }
    }
    if decoded.len() as u64 > MAX_DECOMPRESSED {
        decoded.truncate(MAX_DECOMPRESSED as usize);
        out.error(
            source_name,
            format!("byte {MAX_DECOMPRESSED}"),
            format!("decompressed size exceeds {MAX_DECOMPRESSED} bytes; the rest is ignored"),
        );
    }
    std::borrow::Cow::Owned(decoded)
}

// ---------------------------------------------------------------------------------------
// Document splitting: from bytes to (position, JSON value) items
// ---------------------------------------------------------------------------------------

/// One element found in a document: either a parsed JSON value or why it could not be.
#[derive(Debug)]
enum Item {
    Value { position: String, value: Value },
    Error { position: String, reason: String },
}

/// How a provider names its elements and where its batch array lives.
struct Layout {
    /// Name of an element of a top-level (or `records_key`) array: "record", "entry".
    element: &'static str,
    /// Key of the batch array in an enclosing object (`Records` for CloudTrail).
    records_key: Option<&'static str>,
}

/// Splits a document into JSON values, accepting every shape audit logs are exported in:
/// a batch object (`{"Records":[...]}`), a bare array, concatenated pretty-printed objects,
/// or JSON lines. Arrays are walked element by element so that a truncated or damaged file
/// still yields every complete element before the damage.
fn split_document(bytes: &[u8], layout: &Layout) -> Vec<Item> {
    let mut items = Vec::new();
    let start = if bytes.starts_with(b"\xef\xbb\xbf") {
        3
    } else {
        0
    };
    let i = skip_ws(bytes, start);
    if i >= bytes.len() {
        return items;
    }
    match bytes[i] {
        b'[' => {
            if let Some(end) = walk_array(bytes, i, layout.element, &mut items) {
                check_trailing(bytes, end, &mut items);
            }
        }
        b'{' if layout
            .records_key
            .is_some_and(|key| first_key_is(bytes, i, key)) =>
        {
            walk_batch_object(bytes, i, layout, &mut items);
        }
        _ => split_values(bytes, start, &mut items),
    }
    items
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

fn check_trailing(b: &[u8], end: usize, items: &mut Vec<Item>) {
    let j = skip_ws(b, end);
    if j < b.len() {
        items.push(Item::Error {
            position: format!("byte {j}"),
            reason: "unexpected data after the end of the JSON document; it is ignored".into(),
        });
    }
}

/// Why the structural scanner stopped before the end of a value.
enum ScanError {
    /// The document ended inside the value: it was truncated.
    Eof,
    /// A closing bracket that does not match, at this offset: the structure is broken, so
    /// element boundaries after it cannot be trusted.
    Mismatch(usize),
}

/// Index just past the closing quote of the string starting at `i` (which is a `"`).
fn scan_string(b: &[u8], i: usize) -> Result<usize, ScanError> {
    let mut k = i + 1;
    while k < b.len() {
        match b[k] {
            b'\\' => k += 2,
            b'"' => return Ok(k + 1),
            _ => k += 1,
        }
    }
    Err(ScanError::Eof)
}

/// Finds where the JSON value starting at `i` ends, tracking only brackets and strings.
/// Iterative on purpose: nesting depth in hostile input must not grow our stack. Whether
/// the value is valid JSON is left to serde_json on the delimited slice.
fn scan_value(b: &[u8], i: usize) -> Result<usize, ScanError> {
    match b.get(i) {
        None => Err(ScanError::Eof),
        Some(b'"') => scan_string(b, i),
        Some(b'{' | b'[') => {
            let mut expected: Vec<u8> = Vec::new();
            let mut k = i;
            while k < b.len() {
                match b[k] {
                    b'"' => {
                        k = scan_string(b, k)?;
                        continue;
                    }
                    b'{' => expected.push(b'}'),
                    b'[' => expected.push(b']'),
                    c @ (b'}' | b']') => {
                        if expected.pop() != Some(c) {
                            return Err(ScanError::Mismatch(k));
                        }
                        if expected.is_empty() {
                            return Ok(k + 1);
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            Err(ScanError::Eof)
        }
        Some(b',' | b']' | b'}' | b':') => Err(ScanError::Mismatch(i)),
        Some(_) => {
            // A scalar (number, literal or garbage): up to the next delimiter.
            let mut k = i;
            while k < b.len() && !matches!(b[k], b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
            {
                k += 1;
            }
            Ok(k)
        }
    }
}

fn parse_slice(slice: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<Value>(slice).map_err(|e| format!("not JSON: {e}"))
}

fn describe_byte(b: &[u8], i: usize) -> String {
    match b.get(i) {
        Some(c) if c.is_ascii_graphic() => format!("`{}`", *c as char),
        Some(c) => format!("byte 0x{c:02x}"),
        None => "end of document".into(),
    }
}

/// Walks the array starting at `i` (a `[`), emitting one item per element. Returns the
/// offset after the closing `]`, or None when the document ended or broke inside it (the
/// reason has been pushed).
fn walk_array(b: &[u8], i: usize, element: &str, items: &mut Vec<Item>) -> Option<usize> {
    let mut i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b']') {
        return Some(i + 1);
    }
    let mut n = 0usize;
    loop {
        i = skip_ws(b, i);
        if i >= b.len() {
            items.push(Item::Error {
                position: format!("byte {i}"),
                reason: format!(
                    "document is truncated: it ends inside the array after {element} {n}"
                ),
            });
            return None;
        }
        n += 1;
        let start = i;
        match scan_value(b, start) {
            Ok(end) => {
                let position = format!("{element} {n}");
                match parse_slice(&b[start..end]) {
                    Ok(value) => items.push(Item::Value { position, value }),
                    Err(reason) => items.push(Item::Error { position, reason }),
                }
                i = skip_ws(b, end);
            }
            Err(ScanError::Eof) => {
                items.push(Item::Error {
                    position: format!("byte {start}"),
                    reason: format!(
                        "document is truncated: {element} {n} starting here is incomplete (document ends at byte {})",
                        b.len()
                    ),
                });
                return None;
            }
            Err(ScanError::Mismatch(at)) => {
                items.push(Item::Error {
                    position: format!("byte {at}"),
                    reason: format!(
                        "malformed JSON in {element} {n}: unexpected {}; the rest of the array is skipped",
                        describe_byte(b, at)
                    ),
                });
                return None;
            }
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b']') => return Some(i + 1),
            None => {
                items.push(Item::Error {
                    position: format!("byte {i}"),
                    reason: format!(
                        "document is truncated: it ends inside the array after {element} {n}"
                    ),
                });
                return None;
            }
            Some(_) => {
                items.push(Item::Error {
                    position: format!("byte {i}"),
                    reason: format!(
                        "malformed JSON after {element} {n}: expected `,` or `]`, found {}; the rest of the array is skipped",
                        describe_byte(b, i)
                    ),
                });
                return None;
            }
        }
    }
}

/// True when the object starting at `i` has `key` as its first member: the cheap signal that
/// this is a batch document even when the document as a whole does not parse.
fn first_key_is(b: &[u8], i: usize, key: &str) -> bool {
    let k = skip_ws(b, i + 1);
    if b.get(k) != Some(&b'"') {
        return false;
    }
    match scan_string(b, k) {
        Ok(end) => &b[k + 1..end - 1] == key.as_bytes(),
        Err(_) => false,
    }
}

/// Walks a `{"Records": [...], ...}` batch member by member so the records array can be
/// recovered element by element even when the object is cut short.
fn walk_batch_object(b: &[u8], i: usize, layout: &Layout, items: &mut Vec<Item>) {
    let key_wanted = layout.records_key.unwrap_or_default();
    let truncated = |at: usize, items: &mut Vec<Item>| {
        items.push(Item::Error {
            position: format!("byte {at}"),
            reason: "document is truncated: it ends inside the top-level object".into(),
        });
    };
    let malformed = |at: usize, what: &str, items: &mut Vec<Item>| {
        items.push(Item::Error {
            position: format!("byte {at}"),
            reason: format!(
                "malformed top-level object: expected {what}, found {}",
                describe_byte(b, at)
            ),
        });
    };
    let mut i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        check_trailing(b, i + 1, items);
        return;
    }
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            None => return truncated(i, items),
            Some(b'"') => {}
            Some(_) => return malformed(i, "a member name", items),
        }
        let key_end = match scan_string(b, i) {
            Ok(end) => end,
            Err(_) => return truncated(i, items),
        };
        let is_records = &b[i + 1..key_end - 1] == key_wanted.as_bytes();
        i = skip_ws(b, key_end);
        match b.get(i) {
            None => return truncated(i, items),
            Some(b':') => {}
            Some(_) => return malformed(i, "`:`", items),
        }
        i = skip_ws(b, i + 1);
        if i >= b.len() {
            return truncated(i, items);
        }
        if is_records && b[i] == b'[' {
            match walk_array(b, i, layout.element, items) {
                Some(end) => i = end,
                None => return,
            }
        } else {
            if is_records {
                items.push(Item::Error {
                    position: format!("byte {i}"),
                    reason: format!("field `{key_wanted}` is not an array"),
                });
            }
            match scan_value(b, i) {
                Ok(end) => i = end,
                Err(ScanError::Eof) => return truncated(i, items),
                Err(ScanError::Mismatch(at)) => return malformed(at, "a JSON value", items),
            }
        }
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return check_trailing(b, i + 1, items),
            None => return truncated(i, items),
            Some(_) => return malformed(i, "`,` or `}`", items),
        }
    }
}

/// Line numbers for increasing offsets in one pass, so numbering every value of a large
/// JSON-lines file stays linear.
struct LineCounter<'a> {
    b: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, pos: 0, line: 1 }
    }

    fn line_at(&mut self, offset: usize) -> usize {
        let offset = offset.min(self.b.len());
        if offset < self.pos {
            *self = Self::new(self.b);
        }
        self.line += self.b[self.pos..offset]
            .iter()
            .filter(|&&c| c == b'\n')
            .count();
        self.pos = offset;
        self.line
    }
}

/// A sequence of top-level values: JSON lines, or concatenated pretty-printed objects
/// (`jq '.Records[]'` output). Positions are the line the value starts on.
fn split_values(b: &[u8], start: usize, items: &mut Vec<Item>) {
    // Fast path: the whole input is a clean stream of values.
    let mut clean = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(&b[start..]).into_iter::<Value>();
    let mut offset = start;
    let mut all_ok = true;
    let mut lines = LineCounter::new(b);
    while let Some(next) = stream.next() {
        let value_start = skip_ws(b, offset);
        match next {
            Ok(value) => clean.push(Item::Value {
                position: format!("line {}", lines.line_at(value_start)),
                value,
            }),
            Err(_) => {
                all_ok = false;
                break;
            }
        }
        offset = start + stream.byte_offset();
    }
    if all_ok {
        items.extend(clean);
        return;
    }
    // Pretty-printed documents open with a lone `{` on their first line; JSON lines do not.
    let first_line = b[start..]
        .split(|&c| c == b'\n')
        .map(<[u8]>::trim_ascii)
        .find(|l| !l.is_empty());
    if first_line == Some(b"{".as_slice()) {
        split_concatenated(b, start, items);
    } else {
        split_lines(b, start, items);
    }
}

/// One value per line, each line judged alone, so a damaged line costs only itself.
fn split_lines(b: &[u8], start: usize, items: &mut Vec<Item>) {
    let first_line = LineCounter::new(b).line_at(start);
    for (n, line) in b[start..].split(|&c| c == b'\n').enumerate() {
        let trimmed = line.trim_ascii();
        if !trimmed.is_empty() {
            let position = format!("line {}", first_line + n);
            match parse_slice(trimmed) {
                Ok(value) => items.push(Item::Value { position, value }),
                Err(reason) => items.push(Item::Error { position, reason }),
            }
        }
    }
}

/// Concatenated multi-line values, delimited structurally; stops at the first structural
/// break since value boundaries after it are guesses.
fn split_concatenated(b: &[u8], start: usize, items: &mut Vec<Item>) {
    let mut i = start;
    let mut lines = LineCounter::new(b);
    loop {
        i = skip_ws(b, i);
        if i >= b.len() {
            return;
        }
        let position = format!("line {}", lines.line_at(i));
        match scan_value(b, i) {
            Ok(end) => {
                match parse_slice(&b[i..end]) {
                    Ok(value) => items.push(Item::Value { position, value }),
                    Err(reason) => items.push(Item::Error { position, reason }),
                }
                i = end;
            }
            Err(ScanError::Eof) => {
                items.push(Item::Error {
                    position: format!("byte {i}"),
                    reason: format!(
                        "document is truncated: the value starting here ({position}) is incomplete (document ends at byte {})",
                        b.len()
                    ),
                });
                return;
            }
            Err(ScanError::Mismatch(at)) => {
                items.push(Item::Error {
                    position: format!("byte {at}"),
                    reason: format!(
                        "malformed JSON in the value starting at {position}: unexpected {}; the rest of the document is skipped",
                        describe_byte(b, at)
                    ),
                });
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Typed field access with precise reasons
// ---------------------------------------------------------------------------------------

/// Looks up a dotted path. Absent and `null` are both "not there"; a non-object on the way
/// is a type error naming the offending prefix, so the operator sees which field is wrong.
fn get_path<'a>(root: &'a Value, path: &[&str]) -> Result<Option<&'a Value>, String> {
    let mut cur = root;
    for (n, key) in path.iter().enumerate() {
        let Value::Object(map) = cur else {
            return Err(format!("field `{}` is not an object", path[..n].join(".")));
        };
        match map.get(*key) {
            None | Some(Value::Null) => return Ok(None),
            Some(v) => cur = v,
        }
    }
    Ok(Some(cur))
}

fn req_str(root: &Value, path: &[&str]) -> Result<String, String> {
    match get_path(root, path)? {
        None => Err(format!("missing field `{}`", path.join("."))),
        Some(Value::String(s)) if s.is_empty() => {
            Err(format!("field `{}` is empty", path.join(".")))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field `{}` is not a string", path.join("."))),
    }
}

/// Empty strings count as absent: CloudTrail writes `"accessKeyId": ""` for some callers,
/// and an empty key must never match another record's empty key during attribution.
fn opt_str(root: &Value, path: &[&str]) -> Result<Option<String>, String> {
    match get_path(root, path)? {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("field `{}` is not a string", path.join("."))),
    }
}

fn req_time(root: &Value, path: &[&str]) -> Result<i64, String> {
    let s = req_str(root, path)?;
    parse_rfc3339(&s).ok_or_else(|| {
        format!(
            "field `{}` is not an RFC 3339 timestamp: {s:?}",
            path.join(".")
        )
    })
}

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Validated civil time to Unix seconds; None for impossible dates so that garbage is
/// reported rather than silently wrapped into a plausible time.
fn unix_from_parts(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60
    {
        return None;
    }
    Some(
        days_from_civil(y, mo, d) * 86_400
            + i64::from(h) * 3600
            + i64::from(mi) * 60
            + i64::from(s),
    )
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let part = b.get(at..at + n)?;
    part.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// RFC 3339 (`2026-11-23T14:02:11Z`, fractional seconds, `+hh:mm` offsets) to Unix seconds,
/// fractions truncated. `require_offset = false` additionally reads offset-less ISO 8601 as
/// UTC, which CloudTrail uses in some response elements.
fn parse_iso(s: &str, require_offset: bool) -> Option<i64> {
    let b = s.trim().as_bytes();
    let y = digits(b, 0, 4)?;
    let mo = digits(b, 5, 2)?;
    let d = digits(b, 8, 2)?;
    let h = digits(b, 11, 2)?;
    let mi = digits(b, 14, 2)?;
    let sec = digits(b, 17, 2)?;
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == frac_start {
            return None;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(b, i + 1, 2)?;
            let om = match (b.get(i + 3), b.len() - i) {
                (Some(b':'), 6) => digits(b, i + 4, 2)?,
                (Some(_), 5) => digits(b, i + 3, 2)?,
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = i64::from(oh * 3600 + om * 60);
            if sign == b'+' { secs } else { -secs }
        }
        None if !require_offset => 0,
        _ => return None,
    };
    Some(unix_from_parts(i64::from(y), mo, d, h, mi, sec)? - offset)
}

/// Parses an RFC 3339 timestamp to Unix seconds (fractional part truncated).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    parse_iso(s, true)
}

/// The `Nov 23, 2026, 3:02:11 PM` form older CloudTrail records use for credential
/// expirations (always UTC). Newer JDKs put U+202F before AM/PM, hence Unicode whitespace.
fn parse_cloudtrail_legacy_date(s: &str) -> Option<i64> {
    let cleaned = s.replace(',', " ");
    let mut parts = cleaned.split_whitespace();
    let month = parts.next()?;
    let day: u32 = parts.next()?.parse().ok()?;
    let year: i64 = parts.next()?.parse().ok()?;
    let clock = parts.next()?;
    let meridiem = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let lower = month.to_ascii_lowercase();
    let mo = MONTHS
        .iter()
        .position(|m| lower == *m || (lower.len() == 3 && m.starts_with(lower.as_str())))?;
    let mut hms = clock.split(':');
    let h12: u32 = hms.next()?.parse().ok()?;
    let mi: u32 = hms.next()?.parse().ok()?;
    let sec: u32 = hms.next().unwrap_or("0").parse().ok()?;
    if hms.next().is_some() || !(1..=12).contains(&h12) {
        return None;
    }
    let h = match meridiem.to_ascii_uppercase().as_str() {
        "AM" => h12 % 12,
        "PM" => h12 % 12 + 12,
        _ => return None,
    };
    if !(0..=9999).contains(&year) {
        return None;
    }
    unix_from_parts(year, u32::try_from(mo).ok()? + 1, day, h, mi, sec)
}

/// Credential expirations as CloudTrail has written them over the years.
fn parse_expiration(s: &str) -> Option<i64> {
    parse_iso(s, false).or_else(|| parse_cloudtrail_legacy_date(s))
}

// ---------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------

/// Collects matching files under `dir`, sorted so ingestion order (and error order) is
/// reproducible. Symlinked directories are not followed, so a link cycle cannot loop us;
/// CloudTrail digest files (integrity manifests, not events) are skipped.
fn collect_files(
    dir: &Path,
    suffixes: &[&str],
    files: &mut Vec<PathBuf>,
    out: &mut Parsed,
) -> std::io::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if d == dir => return Err(e),
            Err(e) => {
                out.error(
                    &d.display().to_string(),
                    "directory",
                    format!("cannot read directory: {e}"),
                );
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    out.error(
                        &d.display().to_string(),
                        "directory",
                        format!("cannot read directory entry: {e}"),
                    );
                    continue;
                }
            };
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            if file_type.is_dir() {
                if name != "CloudTrail-Digest" {
                    stack.push(path);
                }
            } else if suffixes.iter().any(|s| name.ends_with(s)) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(())
}

/// Shared `parse_path`: a file is parsed whatever its name (the caller chose it); a
/// directory contributes only files with the provider's suffixes.
fn parse_path_with(
    path: &Path,
    suffixes: &[&str],
    parse: fn(&str, &[u8]) -> Parsed,
) -> std::io::Result<Parsed> {
    if !std::fs::metadata(path)?.is_dir() {
        let bytes = std::fs::read(path)?;
        return Ok(parse(&path.display().to_string(), &bytes));
    }
    let mut out = Parsed::default();
    let mut files = Vec::new();
    collect_files(path, suffixes, &mut files, &mut out)?;
    for file in files {
        let name = file.display().to_string();
        match std::fs::read(&file) {
            Ok(bytes) => out.extend(parse(&name, &bytes)),
            Err(e) => out.error(&name, "file", format!("cannot read file: {e}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
mod tests {
    use super::*;

    #[test]
    fn rfc3339_variants() {
        assert_eq!(parse_rfc3339("2026-11-23T14:02:11Z"), Some(1_795_442_531));
        assert_eq!(
            parse_rfc3339("2026-11-23T14:02:11.123456789Z"),
            Some(1_795_442_531)
        );
        assert_eq!(
            parse_rfc3339("2026-11-23T15:02:11+01:00"),
            Some(1_795_442_531)
        );
        assert_eq!(
            parse_rfc3339("2026-11-23T09:32:11.5-04:30"),
            Some(1_795_442_531)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
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
        assert_eq!(
            parse_expiration("Nov 23, 2026, 3:02:11 PM"),
            Some(1_795_446_131)
        );
        assert_eq!(
            parse_expiration("Nov 23, 2026, 3:02:11\u{202f}PM"),
            Some(1_795_446_131)
        );
        assert_eq!(
            parse_expiration("Nov 23, 2026 12:00:00 AM"),
            Some(1_795_392_000)
        );
        assert_eq!(
            parse_expiration("2026-11-23T15:02:11Z"),
            Some(1_795_446_131)
        );
        assert_eq!(
            parse_expiration("2026-11-23T15:02:11.000Z"),
            Some(1_795_446_131)
        );
        assert_eq!(parse_expiration("2026-11-23T15:02:11"), Some(1_795_446_131));
        assert_eq!(parse_expiration("Foo 23, 2026, 3:02:11 PM"), None);
        assert_eq!(parse_expiration("Nov 31, 2026, 3:02:11 PM"), None);
        assert_eq!(parse_expiration("Nov 23, 2026, 13:02:11 PM"), None);
        assert_eq!(parse_expiration("tomorrow"), None);
    }

    #[test]
    fn scanner_respects_strings_and_escapes() {
        let doc = br#"[{"a":"}]\"{["},{"b":[1,{"c":"\\"}]}]"#;
        let items = split_document(
            doc,
            &Layout {
                element: "record",
                records_key: None,
            },
        );
        assert_eq!(items.len(), 2);
        assert!(
            items.iter().all(|i| matches!(i, Item::Value { .. })),
            "{items:?}"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut doc = b"[".to_vec();
        doc.extend(std::iter::repeat_n(b'[', 100_000));
        doc.extend(std::iter::repeat_n(b']', 100_000));
        doc.push(b']');
        let items = split_document(
            &doc,
            &Layout {
                element: "record",
                records_key: None,
            },
        );
        assert_eq!(items.len(), 1);
        match &items[0] {
            Item::Error { position, reason } => {
                assert_eq!(position, "record 1");
                assert!(reason.contains("recursion limit"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
