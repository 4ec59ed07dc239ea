//! From files to documents: bounds, gzip, and deciding which files of a directory are audit
//! data. Files are judged by content, not by name (S3 keys, `gcloud` redirects and SIEM
//! exports use any extension), and every file left out is named with the reason.

use std::{
    borrow::Cow,
    fs::File,
    io::Read,
    path::{Path, PathBuf},
};

use super::{Emitter, Sink, SkippedFile};

/// Bounds on what one input may make the collector hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest file read, and largest decompressed document: the whole document is held
    /// in memory while its records are streamed out of it.
    pub max_file_bytes: u64,
    /// Largest single record (CloudTrail and Cloud Logging cap entries at 256 KiB); a larger
    /// one is reported and skipped instead of being parsed into memory.
    pub max_record_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_file_bytes: 2 << 30, max_record_bytes: 1 << 20 }
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Decompresses gzip input (detected by magic, since object names are not trustworthy).
/// A damaged stream keeps what decompressed cleanly so the complete records in it can still
/// be recovered; the damage itself is reported once.
pub(crate) fn decode<'a>(bytes: &'a [u8], limits: &Limits, out: &mut Emitter<'_>) -> Cow<'a, [u8]> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Cow::Borrowed(bytes);
    }
    let max = limits.max_file_bytes;
    let mut decoded = Vec::new();
    let mut reader = flate2::read::MultiGzDecoder::new(bytes).take(max + 1);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => decoded.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                out.error(format_args!("byte {}", decoded.len()), format!("gzip stream is damaged after {} decompressed bytes: {e}", decoded.len()));
                break;
            }
        }
    }
    if decoded.len() as u64 > max {
        decoded.truncate(usize::try_from(max).unwrap_or(usize::MAX));
        out.error(format_args!("byte {max}"), format!("decompressed size exceeds {max} bytes; the rest is ignored"));
    }
    Cow::Owned(decoded)
}

/// What a provider's records look like, to tell its files from everything else.
pub(crate) struct Kind {
    /// "CloudTrail", "GCP audit log".
    pub name: &'static str,
    /// Member names only this provider's records have (with their quotes).
    pub markers: &'static [&'static str],
    /// Member names of files that look like this provider's but are not events.
    pub not_events: &'static [(&'static str, &'static str)],
    /// Directories that hold no events, and why (CloudTrail digest folders).
    pub skip_dirs: &'static [(&'static str, &'static str)],
    /// The other provider: its name, markers and the command that ingests it.
    pub other: (&'static str, &'static [&'static str], &'static str),
}

/// How much of a file is read to judge it.
const SNIFF_BYTES: usize = 64 * 1024;

/// Why a file's first bytes are not this provider's audit data; None when they are.
fn sniff(kind: &Kind, head: &[u8]) -> Option<String> {
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        // A multi-byte character cut by the sniff window is still text.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or(""),
        Err(_) => return Some("binary data (not UTF-8 text)".into()),
    };
    if text.trim().is_empty() {
        return Some("empty".into());
    }
    if text.contains('\0') {
        return Some("binary data (contains NUL bytes)".into());
    }
    if let Some((_, why)) = kind.not_events.iter().find(|(m, _)| text.contains(m)) {
        return Some((*why).into());
    }
    if kind.markers.iter().any(|m| text.contains(m)) {
        return None;
    }
    let (other, other_markers, command) = kind.other;
    if other_markers.iter().any(|m| text.contains(m)) {
        return Some(format!("{other} data, not {} (ingest it with `{command}`)", kind.name));
    }
    let json = matches!(text.trim_start_matches('\u{feff}').trim_start().as_bytes().first(), Some(b'{' | b'['));
    Some(if json {
        format!("JSON, but no {} fields ({}) in its first {} KiB", kind.name, kind.markers.join(", "), SNIFF_BYTES / 1024)
    } else {
        "text that is not JSON".into()
    })
}

/// The first bytes of a file's content (decompressed when it is gzip).
fn head_of(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(SNIFF_BYTES);
    File::open(path)?.take(SNIFF_BYTES as u64).read_to_end(&mut raw)?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let reader = flate2::read::MultiGzDecoder::new(File::open(path)?);
    // A damaged stream still shows what it decoded; the full parse reports the damage.
    let _ = reader.take(SNIFF_BYTES as u64).read_to_end(&mut head);
    Ok(head)
}

/// Reads a file within the size bound.
fn read_bounded(path: &Path, limits: &Limits) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read file: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > limits.max_file_bytes {
        return Err(format!("file is {} bytes, above the bound of {} bytes (split it, or raise --max-file-bytes)", meta.len(), limits.max_file_bytes));
    }
    std::fs::read(path).map_err(|e| format!("cannot read file: {e}"))
}

/// Collects the regular files under `dir`, sorted so ingestion order (and error order) is
/// reproducible. Symlinked directories are not followed, so a link cycle cannot loop us;
/// what is left out (unreadable directories, special files, `kind.skip_dirs`) is reported.
fn collect_files(dir: &Path, kind: &Kind, sink: &mut dyn Sink) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut skip = |path: &Path, reason: String| {
        sink.skipped(SkippedFile { path: path.display().to_string(), reason });
    };
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if d == dir => return Err(e),
            Err(e) => {
                skip(&d, format!("cannot read directory: {e}"));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    skip(&d, format!("cannot read a directory entry: {e}"));
                    continue;
                }
            };
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let file_type = match entry.file_type() {
                Ok(t) => t,
                Err(e) => {
                    skip(&path, format!("cannot stat: {e}"));
                    continue;
                }
            };
            if file_type.is_dir() {
                match kind.skip_dirs.iter().find(|(n, _)| *n == name) {
                    Some((_, why)) => skip(&path, (*why).into()),
                    None => stack.push(path),
                }
            } else if file_type.is_symlink() && path.is_dir() {
                skip(&path, "symbolic link to a directory (not followed)".into());
            } else if path.is_file() {
                files.push(path);
            } else {
                skip(&path, "not a regular file (FIFO, socket, device or dangling link)".into());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A file is parsed whatever its name and content (the caller chose it); a directory
/// contributes every file whose content is this provider's audit data, and names the others.
pub fn parse_path_with(path: &Path, kind: &Kind, limits: &Limits, sink: &mut dyn Sink, parse: fn(&str, &[u8], &Limits, &mut dyn Sink)) -> std::io::Result<()> {
    if !std::fs::metadata(path)?.is_dir() {
        let name = path.display().to_string();
        match read_bounded(path, limits) {
            Ok(bytes) => parse(&name, &bytes, limits, sink),
            Err(reason) => sink.skipped(SkippedFile { path: name, reason }),
        }
        return Ok(());
    }
    for file in collect_files(path, kind, sink)? {
        let name = file.display().to_string();
        let verdict = head_of(&file)
            .map_err(|e| format!("cannot read file: {e}"))
            .and_then(|head| sniff(kind, &head).map_or(Ok(()), Err))
            .and_then(|()| read_bounded(&file, limits));
        match verdict {
            Ok(bytes) => parse(&name, &bytes, limits, sink),
            Err(reason) => sink.skipped(SkippedFile { path: name, reason }),
        }
    }
    Ok(())
}
