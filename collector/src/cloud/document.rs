//! From bytes to records: splits an audit-log document into its records with serde_json,
//! whatever shape it was exported in (a `{"Records":[...]}` batch, a bare array, one record,
//! JSON lines, concatenated pretty-printed objects).
//!
//! Every record is handed on as a borrowed [`RawValue`] the moment serde_json has read it,
//! so a 1 GB batch is never one value tree, and a document cut short still yields every
//! complete record before the cut. Each record carries its position (its index in the
//! array, or its line) so a bad one can be reported where it is.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{error::Category, value::RawValue};

/// How a provider names its elements and where its batch array lives.
pub(crate) struct Layout {
    /// Name of an element of a top-level (or `records_key`) array: "record", "entry".
    pub element: &'static str,
    /// Key of the batch array in an enclosing object (`Records` for CloudTrail).
    pub records_key: Option<&'static str>,
}

/// Where a record is, in the words an operator can use to find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    /// The n-th element (from 1) of an array; `line` names the line of the enclosing batch
    /// when the document holds more than one.
    Element { element: &'static str, line: Option<usize>, n: usize },
    /// A top-level value starting on this line (from 1).
    Line(usize),
    /// A byte offset: where the document broke.
    Byte(usize),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Element { element, line: None, n } => write!(f, "{element} {n}"),
            Position::Element { element, line: Some(line), n } => write!(f, "line {line} {element} {n}"),
            Position::Line(line) => write!(f, "line {line}"),
            Position::Byte(at) => write!(f, "byte {at}"),
        }
    }
}

/// One thing found in a document: a record as read, or why the document broke there.
#[derive(Debug)]
pub(crate) enum Item<'a> {
    Record { position: Position, raw: &'a RawValue },
    Error { position: Position, reason: String },
}

const BOM: &[u8] = b"\xef\xbb\xbf";

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

fn describe_byte(b: &[u8], i: usize) -> String {
    match b.get(i) {
        Some(c) if c.is_ascii_graphic() => format!("`{}`", *c as char),
        Some(c) => format!("byte 0x{c:02x}"),
        None => "the end of the document".into(),
    }
}

/// serde_json's message without its " at line L column C" suffix (we say where ourselves).
fn message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Byte offset in `b` of serde_json's (line, column) for a parse that started at `from`.
fn offset_of(b: &[u8], from: usize, e: &serde_json::Error) -> usize {
    let mut at = from;
    for _ in 1..e.line() {
        match b[at.min(b.len())..].iter().position(|&c| c == b'\n') {
            Some(nl) => at += nl + 1,
            None => return b.len(),
        }
    }
    (at + e.column().saturating_sub(1)).min(b.len())
}

/// Offset of the first byte of `raw` in `doc` (raw values borrow from the document).
fn offset_in(doc: &[u8], raw: &RawValue) -> usize {
    (raw.get().as_ptr() as usize).saturating_sub(doc.as_ptr() as usize)
}

/// Splits `doc` into records, in document order, calling `emit` for each record and for
/// each place the document broke.
pub(crate) fn split<'a>(doc: &'a [u8], layout: &Layout, emit: &mut dyn FnMut(Item<'a>)) {
    let start = if doc.starts_with(BOM) { BOM.len() } else { 0 };
    let i = skip_ws(doc, start);
    match doc.get(i) {
        None => {}
        Some(b'[') => {
            let mut array = Elements::new(doc, layout.element, None);
            let mut de = serde_json::Deserializer::from_slice(&doc[i..]);
            match de.deserialize_seq(ElementsVisitor { state: &mut array, emit }) {
                Ok(()) => {
                    if de.end().is_err() {
                        let after = skip_ws(doc, array.next_from);
                        let after = skip_ws(doc, after + usize::from(doc.get(after) == Some(&b']')));
                        emit(Item::Error {
                            position: Position::Byte(after),
                            reason: "unexpected data after the end of the JSON document; it is ignored".into(),
                        });
                    }
                }
                Err(e) => array.fail(&e, i, emit),
            }
        }
        Some(_) => split_values(doc, i, layout, emit),
    }
}

/// Progress through one array, kept outside the serde visitor so that what was read
/// survives the error that stops it.
struct Elements<'a> {
    doc: &'a [u8],
    element: &'static str,
    line: Option<usize>,
    /// Elements read so far.
    n: usize,
    /// Offset just after the last element read (0 before the first).
    next_from: usize,
    /// The array itself was read to its `]`: a later failure is outside it.
    closed: bool,
    /// The member of a batch object that holds the array.
    key: Option<&'static str>,
}

impl<'a> Elements<'a> {
    fn new(doc: &'a [u8], element: &'static str, line: Option<usize>) -> Self {
        Self { doc, element, line, n: 0, next_from: 0, closed: false, key: None }
    }

    /// Reports why reading stopped: a truncation (everything before it was emitted) or
    /// malformed JSON (element boundaries after it cannot be trusted, so the rest is skipped).
    fn fail(&self, e: &serde_json::Error, parse_start: usize, emit: &mut dyn FnMut(Item<'a>)) {
        let (doc, element, n) = (self.doc, self.element, self.n);
        let (position, reason) = match e.classify() {
            Category::Eof if self.closed => {
                (Position::Byte(doc.len()), format!("document is truncated: it ends inside the top-level object after {n} {element}s"))
            }
            Category::Eof if n == 0 => (Position::Byte(doc.len()), format!("document is truncated: it ends before {element} 1 is complete")),
            Category::Eof => {
                let mut at = skip_ws(doc, self.next_from);
                if doc.get(at) == Some(&b',') {
                    at = skip_ws(doc, at + 1);
                }
                if at >= doc.len() {
                    (Position::Byte(at), format!("document is truncated: it ends inside the array after {element} {n}"))
                } else {
                    (
                        Position::Byte(at),
                        format!("document is truncated: {element} {} starting here is incomplete (document ends at byte {})", n + 1, doc.len()),
                    )
                }
            }
            // The only type error a raw-value reader can meet: the batch member is no array.
            Category::Data => (
                // serde_json places type errors at the `:` before the value.
                Position::Byte({
                    let at = offset_of(doc, parse_start, e);
                    if doc.get(at) == Some(&b':') { skip_ws(doc, at + 1) } else { at }
                }),
                format!("field `{}` is not an array ({})", self.key.unwrap_or("the document"), message(e)),
            ),
            _ => {
                let at = offset_of(doc, parse_start, e);
                let whose = if self.closed { "after the array".to_owned() } else { format!("in {element} {}", n + 1) };
                (
                    Position::Byte(at),
                    format!("malformed JSON {whose}: unexpected {} ({}); the rest of the document is skipped", describe_byte(doc, at), message(e)),
                )
            }
        };
        emit(Item::Error { position, reason });
    }
}

/// Reads an array element by element, emitting each as soon as it is complete.
struct ElementsVisitor<'s, 'a> {
    state: &'s mut Elements<'a>,
    emit: &'s mut dyn FnMut(Item<'a>),
}

impl<'a> Visitor<'a> for ElementsVisitor<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'a RawValue>()? {
            let st = &mut *self.state;
            st.n += 1;
            st.next_from = offset_in(st.doc, raw) + raw.get().len();
            (self.emit)(Item::Record { position: Position::Element { element: st.element, line: st.line, n: st.n }, raw });
        }
        self.state.closed = true;
        Ok(())
    }
}

impl<'a> DeserializeSeed<'a> for ElementsVisitor<'_, 'a> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

/// Reads an object, streaming its `key` array when it has one (a batch); `seen` tells
/// whether it did.
struct BatchVisitor<'s, 'a> {
    state: &'s mut Elements<'a>,
    emit: &'s mut dyn FnMut(Item<'a>),
    key: &'static str,
    seen: &'s mut bool,
}

impl<'a> Visitor<'a> for BatchVisitor<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<M: MapAccess<'a>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'a, str>>()? {
            if key == self.key && !*self.seen {
                *self.seen = true;
                self.state.key = Some(self.key);
                map.next_value_seed(ElementsVisitor { state: &mut *self.state, emit: &mut *self.emit })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Streams the `key` array of the batch object starting at `start`. Returns false (having
/// emitted nothing) when the object has no such array, so it is a record itself.
fn stream_batch<'a>(
    doc: &'a [u8],
    start: usize,
    key: &'static str,
    state: &mut Elements<'a>,
    emit: &mut dyn FnMut(Item<'a>),
) -> Result<bool, serde_json::Error> {
    let mut seen = false;
    let mut de = serde_json::Deserializer::from_slice(&doc[start..]);
    let result = de.deserialize_map(BatchVisitor { state, emit, key, seen: &mut seen });
    match result {
        Ok(()) => Ok(seen),
        Err(e) if seen => Err(e),
        Err(_) => Ok(false),
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
        self.line += self.b[self.pos..offset].iter().filter(|&&c| c == b'\n').count();
        self.pos = offset;
        self.line
    }
}

/// Offset of the start of the line after the one containing `at`.
fn next_line(b: &[u8], at: usize) -> usize {
    match b[at.min(b.len())..].iter().position(|&c| c == b'\n') {
        Some(nl) => at + nl + 1,
        None => b.len(),
    }
}

/// A sequence of top-level values: one object, JSON lines, or concatenated pretty-printed
/// objects (`jq '.Records[]'`). Positions are the line a value starts on. In JSON lines a
/// damaged line costs only itself; in pretty-printed streams value boundaries after damage
/// are guesses, so reading stops there.
fn split_values<'a>(doc: &'a [u8], start: usize, layout: &Layout, emit: &mut dyn FnMut(Item<'a>)) {
    // Pretty-printed documents open with a lone `{` on their first line; JSON lines do not.
    let pretty = doc[start..].split(|&c| c == b'\n').map(<[u8]>::trim_ascii).find(|l| !l.is_empty()) == Some(b"{".as_slice());
    let mut lines = LineCounter::new(doc);
    let mut from = start;
    let mut first = true;
    'restart: while from < doc.len() {
        let mut stream = serde_json::Deserializer::from_slice(&doc[from..]).into_iter::<&'a RawValue>();
        loop {
            let value_start = skip_ws(doc, from + stream.byte_offset());
            let Some(next) = stream.next() else {
                break 'restart;
            };
            let line = lines.line_at(value_start);
            // The first value of a document is named by index alone; later ones by line too.
            let batch_line = (!first).then_some(line);
            first = false;
            let is_object = doc.get(value_start) == Some(&b'{');
            match next {
                Ok(raw) => {
                    if let Some(key) = layout.records_key
                        && is_object
                        && raw.get().contains(key)
                    {
                        let mut batch = Elements::new(doc, layout.element, batch_line);
                        match stream_batch(doc, value_start, key, &mut batch, emit) {
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(e) => {
                                batch.fail(&e, value_start, emit);
                                continue;
                            }
                        }
                    }
                    emit(Item::Record { position: Position::Line(line), raw });
                }
                Err(e) => {
                    // A batch cut short or damaged: keep the records before the damage.
                    if let Some(key) = layout.records_key
                        && is_object
                    {
                        let mut batch = Elements::new(doc, layout.element, batch_line);
                        if let Err(e) = stream_batch(doc, value_start, key, &mut batch, emit) {
                            batch.fail(&e, value_start, emit);
                            if e.classify() == Category::Eof || pretty {
                                return;
                            }
                            from = next_line(doc, offset_of(doc, value_start, &e));
                            continue 'restart;
                        }
                    }
                    if pretty {
                        let reason = if e.classify() == Category::Eof {
                            format!("document is truncated: the value starting here (line {line}) is incomplete (document ends at byte {})", doc.len())
                        } else {
                            let at = offset_of(doc, from, &e);
                            format!(
                                "malformed JSON in the value starting at line {line}: unexpected {} ({}); the rest of the document is skipped",
                                describe_byte(doc, at),
                                message(&e)
                            )
                        };
                        emit(Item::Error { position: Position::Byte(value_start), reason });
                        return;
                    }
                    // JSON lines: judge the line alone, then go on with the next one.
                    let end = next_line(doc, value_start);
                    let text = doc[value_start..end].trim_ascii();
                    let reason = match serde_json::from_slice::<IgnoredAny>(text) {
                        Err(alone) => format!("not JSON: {alone}"),
                        Ok(_) => format!("not JSON: {e}"),
                    };
                    emit(Item::Error { position: Position::Line(line), reason });
                    from = end;
                    continue 'restart;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
mod tests {
    use super::*;

    const LAYOUT: Layout = Layout { element: "record", records_key: Some("Records") };

    fn items(doc: &[u8]) -> Vec<(String, Result<String, String>)> {
        let mut out = Vec::new();
        split(doc, &LAYOUT, &mut |item| match item {
            Item::Record { position, raw } => out.push((position.to_string(), Ok(raw.get().to_owned()))),
            Item::Error { position, reason } => out.push((position.to_string(), Err(reason))),
        });
        out
    }

    #[test]
    fn strings_and_escapes_do_not_split_records() {
        let got = items(br#"[{"a":"}]\"{["},{"b":[1,{"c":"\\"}]}]"#);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], ("record 1".into(), Ok(r#"{"a":"}]\"{["}"#.into())));
        assert_eq!(got[1].0, "record 2");
    }

    #[test]
    fn batch_key_anywhere_and_other_members_ignored() {
        let got = items(br#"{"x":{"Records":1},"Records":[{"a":1}],"y":[]}"#);
        assert_eq!(got, [("record 1".into(), Ok(r#"{"a":1}"#.into()))]);
        let got = items(br#"{"Records":{}}"#);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].1.as_ref().unwrap_err().contains("field `Records` is not an array"), "{got:?}");
    }

    #[test]
    fn deep_nesting_is_an_element_not_a_crash() {
        // serde_json skips raw values without recursing; the record's own parse refuses it.
        let mut doc = b"[".to_vec();
        doc.extend(std::iter::repeat_n(b'[', 100_000));
        doc.extend(std::iter::repeat_n(b']', 100_000));
        doc.push(b']');
        let got = items(&doc);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "record 1");
        let raw = got[0].1.as_ref().unwrap();
        let err = serde_json::from_str::<serde_json::Value>(raw).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }

    #[test]
    fn trailing_data_after_an_array_is_reported() {
        let got = items(b"[{\"a\":1}] x");
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1].0, "byte 10");
        assert!(got[1].1.as_ref().unwrap_err().contains("after the end"));
    }
}
