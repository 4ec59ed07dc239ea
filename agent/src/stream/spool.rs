//! On-disk, bounded spool for events the collector has not acknowledged yet.
//!
//! The collector can be unreachable for minutes or hours, and the agent can restart in the
//! meantime; events must neither pile up without bound nor vanish silently. So events are
//! appended to segment files, handed out in order by [`Spool::peek`], and only forgotten
//! once [`Spool::ack`] says the collector has them, or when the spool is full, in which case
//! the *oldest* are dropped and counted in [`SpoolStats::dropped_total`].
//!
//! Every event gets the id `<spool id>-<seq>` when it is spooled. The collector
//! de-duplicates by id, so resending after a lost acknowledgement is harmless; the flip side
//! is that an id must never be given to two different events, or the collector would
//! discard the second as a duplicate. Everything below about sequence numbers exists to
//! keep that promise across crashes.
//!
//! # Layout of the spool directory
//!
//! - `spool-id`: 16 lowercase hex characters, random, written once. It keeps ids from two
//!   nodes (or from a spool directory that was wiped and recreated) from colliding.
//! - `state.json`: `{"acked": <seq>, "next_seq": <seq>}`, replaced atomically (temp file,
//!   fsync, rename, fsync of the directory). `acked` is the highest acknowledged sequence;
//!   `next_seq` is a floor for the next sequence, written before any segment is deleted, so
//!   that deleting the segment holding the newest sequence cannot make a restart reuse it.
//! - `seg-<first seq, 20 digits>.log`: an 8-byte magic `SGLSPL01` followed by records.
//!   Sequences inside one segment are consecutive and start at the one in the file name
//!   (open verifies both, so a record that is internally valid but misplaced is caught).
//! - `lock`: held with an exclusive advisory lock while a [`Spool`] is open, because two
//!   writers interleaving records would corrupt both.
//!
//! A record is `[u32 LE body length][u32 LE CRC-32 (IEEE) of the body][body]`, and the body
//! is `[u64 LE seq][u16 LE kind length][kind, UTF-8][payload]`. The checksum is what lets
//! open tell a torn write (power loss mid-append) from data, since a torn tail can look like
//! a plausible length followed by zeros.
//!
//! # Durability
//!
//! Appends are a single `write_all` of the whole record to the segment file, with no
//! user-space buffer, but no fsync: an fsync per event would cap throughput at the disk's
//! flush rate, and a crash of the agent process alone loses nothing because the data is
//! already in the kernel. A power loss or kernel crash may lose the last few appended events;
//! it never corrupts earlier ones, because records are only ever appended and open truncates
//! a torn tail (counting it in [`SpoolStats::corrupt_records_total`]).
//!
//! fsync happens where losing data would break a promise rather than just lose recent
//! events: when a segment is sealed (so only the newest segment can ever have a torn tail),
//! on segment creation (the directory entry), on every state write, on the segments a
//! previous process left behind (at open), and in [`Spool::peek`] before events are handed
//! out. The last two mean an event is durable before the collector can have seen its id,
//! so an event lost to a power loss was never sent, and reusing its sequence after the
//! restart cannot be mistaken for a duplicate.
//!
//! A segment that is corrupt in the middle (bit rot, not a torn write) is truncated at the
//! first bad record; the records after it in that segment are lost and counted, because the
//! framing cannot be trusted past a bad length.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use thiserror::Error;

const MAGIC: &[u8; 8] = b"SGLSPL01";
const HEADER_LEN: u64 = MAGIC.len() as u64;
/// Length and checksum in front of every body.
const FRAME_LEN: u64 = 8;
/// Sequence and kind length at the start of every body.
const BODY_FIXED: usize = 10;
const ID_FILE: &str = "spool-id";
const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
/// Small enough that dropping a whole segment when full throws away little, large enough
/// that a busy agent does not create a file (and an fsync) every few events.
const MAX_SEGMENT_BYTES: u64 = 4 << 20;
const MIN_SEGMENT_BYTES: u64 = 4 << 10;

/// One spooled event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    /// `<spool id>-<seq>`; the collector de-duplicates by it, so a resend is harmless.
    pub id: String,
    pub seq: u64,
    pub kind: String,
    /// The event's typed (protobuf `Event`) encoding; the spool treats it as opaque bytes.
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpoolStats {
    /// Events stored and not acknowledged.
    pub depth_events: u64,
    /// Bytes the segment files occupy, including acknowledged records that share a segment
    /// with unacknowledged ones (space is reclaimed a whole segment at a time).
    pub depth_bytes: u64,
    /// Since this process started.
    pub appended_total: u64,
    /// Since this process started; only events that were still stored when acknowledged.
    pub acked_total: u64,
    /// Unacknowledged events thrown away because the spool was full; since this process
    /// started. Never silent: this is the only way the spool loses an event on purpose.
    pub dropped_total: u64,
    /// Records lost to torn or corrupt segments found at open. For a segment followed by
    /// another the exact number of lost sequences is known; for the newest segment the
    /// length of a torn tail is not, and it counts as one.
    pub corrupt_records_total: u64,
}

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("spool I/O at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spool {path} is open in another process")]
    Locked { path: PathBuf },
    /// The spool id or state file cannot be parsed. Not repaired automatically: guessing
    /// the acknowledged position or the sequence floor could reuse ids.
    #[error("spool state file {path} is unusable: {reason}")]
    State { path: PathBuf, reason: String },
    /// Refused rather than truncated, in case a newer agent wrote it and we are a rollback.
    #[error("spool segment {path} has an unknown format")]
    Format { path: PathBuf },
    /// A record that was intact at open (or written by this process) no longer is: the
    /// disk is failing. Reopening the spool truncates the segment there and continues.
    #[error("spool segment {path} is corrupt at byte {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: &'static str },
    /// Such an event could never be stored without exceeding the bound.
    #[error("event record of {len} bytes cannot fit in a spool bounded to {max} bytes")]
    TooLarge { len: u64, max: u64 },
    #[error("event kind is {len} bytes long; at most 65535 fit in a record")]
    KindTooLong { len: usize },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct State {
    acked: u64,
    next_seq: u64,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// One past the last sequence stored; equal to `first_seq` when the segment is empty.
    end_seq: u64,
    path: PathBuf,
    /// Bytes of magic and intact records; readers never look past it.
    valid_len: u64,
    /// Bytes the file occupies: `valid_len` plus any partial write that could not be undone.
    disk_len: u64,
    /// Offset of the first record above the acknowledged position, so that peek does not
    /// re-read acknowledged records of a partly acknowledged segment.
    read_offset: u64,
}

impl Segment {
    fn unacked(&self, acked: u64) -> u64 {
        self.end_seq.saturating_sub(self.first_seq.max(acked.saturating_add(1)))
    }
}

pub struct Spool {
    dir: PathBuf,
    spool_id: String,
    max_bytes: u64,
    segment_target: u64,
    segments: VecDeque<Segment>,
    /// Append handle for `segments.back()`. `None` means the next append starts a new
    /// segment: after open (so a torn tail is never appended to), after a roll, or after a
    /// failed write whose partial bytes could not be removed.
    active: Option<File>,
    /// Bytes appended to `active` since its last fsync.
    unsynced: bool,
    next_seq: u64,
    acked: u64,
    appended_total: u64,
    acked_total: u64,
    dropped_total: u64,
    corrupt_records_total: u64,
    /// Holds the directory lock for as long as the spool is open.
    _lock: File,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, bounded to `max_bytes` of segment data.
    ///
    /// Repairs what a crash can leave behind: torn segment tails are truncated, segments
    /// that are empty or fully acknowledged are deleted, and if `max_bytes` shrank since
    /// the last run, the oldest segments are dropped (and counted) until it fits.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let target = (max_bytes / 8).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);
        Self::open_with(dir, max_bytes, target)
    }

    fn open_with(dir: &Path, max_bytes: u64, segment_target: u64) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io_at(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked { path: dir.to_path_buf() });
            }
            Err(TryLockError::Error(e)) => return Err(io_at(&lock_path)(e)),
        }
        for name in [ID_FILE, STATE_FILE] {
            remove_if_exists(&tmp_path(&dir.join(name)))?;
        }

        let spool_id = load_or_create_id(dir)?;
        let state = read_state(dir)?;
        let acked = state.map_or(0, |s| s.acked);
        let mut next_seq = state.map_or(1, |s| s.next_seq).max(acked.saturating_add(1));

        let mut scanned = Vec::new();
        for (first_seq, path) in list_segments(dir)? {
            scanned.push(scan_segment(path, first_seq, acked)?);
        }
        let mut corrupt = 0;
        for i in 0..scanned.len() {
            let (seg, torn) = &scanned[i];
            // The file name alone proves `first_seq` was handed out, even if its record is gone.
            next_seq = next_seq.max(seg.first_seq).max(seg.end_seq);
            if *torn {
                corrupt += match scanned.get(i + 1) {
                    Some((next, _)) => next.first_seq.saturating_sub(seg.end_seq).max(1),
                    None => 1,
                };
                truncate(&seg.path, seg.valid_len)?;
            }
        }

        let mut spool = Spool {
            dir: dir.to_path_buf(),
            spool_id,
            max_bytes,
            segment_target: segment_target.min(max_bytes),
            segments: VecDeque::new(),
            active: None,
            unsynced: false,
            next_seq,
            acked,
            appended_total: 0,
            acked_total: 0,
            dropped_total: 0,
            corrupt_records_total: corrupt,
            _lock: lock,
        };
        // The floor must be durable before any segment below is deleted.
        spool.write_state(acked)?;
        for (mut seg, _) in scanned {
            if seg.end_seq == seg.first_seq || seg.end_seq <= acked.saturating_add(1) {
                remove_if_exists(&seg.path)?;
            } else {
                seg.disk_len = seg.valid_len;
                spool.segments.push_back(seg);
            }
        }
        spool.make_room(0)?;
        Ok(spool)
    }

    /// Appends an event; returns its id. If this makes the spool exceed max_bytes, the oldest
    /// un-acked events are dropped (whole segments at a time) and counted.
    pub fn append(&mut self, kind: &str, payload: &[u8]) -> Result<String, SpoolError> {
        if kind.len() > usize::from(u16::MAX) {
            return Err(SpoolError::KindTooLong { len: kind.len() });
        }
        let seq = self.next_seq;
        let record = encode_record(seq, kind, payload)?;
        let rec_len = record.len() as u64;
        if HEADER_LEN + rec_len > self.max_bytes {
            return Err(SpoolError::TooLarge { len: rec_len, max: self.max_bytes });
        }
        if self.active.is_some()
            && let Some(back) = self.segments.back()
            && back.end_seq > back.first_seq
            && back.valid_len + rec_len > self.segment_target
        {
            self.seal_active()?;
        }
        let cost = rec_len + if self.active.is_none() { HEADER_LEN } else { 0 };
        self.make_room(cost)?;
        if self.active.is_none() {
            self.start_segment(seq)?;
        }
        self.write_record(seq, &record)?;
        self.next_seq = seq + 1;
        self.appended_total += 1;
        Ok(self.id_for(seq))
    }

    /// Up to `max` un-acked events in order, starting after the last acked one
    /// (does not remove them; repeated calls return the same events until acked).
    ///
    /// Takes `&mut self` because it makes pending appends durable first: see the module
    /// documentation for why an event must not leave the spool before it is on disk.
    pub fn peek(&mut self, max: usize) -> Result<Vec<Spooled>, SpoolError> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        self.sync_active()?;
        for seg in &self.segments {
            if out.len() >= max {
                break;
            }
            if seg.read_offset >= seg.valid_len {
                continue;
            }
            let mut reader = reader_at_read_offset(seg)?;
            let mut offset = seg.read_offset;
            while offset < seg.valid_len && out.len() < max {
                let (rec, len) = match read_record(&mut reader, seg.valid_len - offset) {
                    Ok(r) => r,
                    Err(ReadError::Io(e)) => return Err(io_at(&seg.path)(e)),
                    Err(ReadError::Corrupt(reason)) => {
                        return Err(SpoolError::Corrupt { path: seg.path.clone(), offset, reason });
                    }
                };
                offset += len;
                if rec.seq > self.acked {
                    out.push(Spooled { id: self.id_for(rec.seq), seq: rec.seq, kind: rec.kind, payload: rec.payload });
                }
            }
        }
        Ok(out)
    }

    /// Acknowledges every event with seq <= `through_seq`; their space is reclaimed
    /// (segments deleted when fully acked). The ack position is persisted so a restart does
    /// not resend acked events.
    ///
    /// A `through_seq` beyond the last appended event is clamped to it: otherwise the
    /// persisted position would acknowledge events that do not exist yet.
    pub fn ack(&mut self, through_seq: u64) -> Result<(), SpoolError> {
        let target = through_seq.min(self.next_seq - 1);
        if target <= self.acked {
            return Ok(());
        }
        let before = self.depth_events();
        self.write_state(target)?;
        self.acked = target;
        self.acked_total += before - self.depth_events();

        while let Some(front) = self.segments.front() {
            if front.unacked(target) > 0 {
                break;
            }
            if self.segments.len() == 1 {
                // The active segment itself is fully acknowledged; the next append starts afresh.
                self.active = None;
                self.unsynced = false;
            }
            remove_if_exists(&front.path)?;
            self.segments.pop_front();
        }
        if let Some(front) = self.segments.front_mut()
            && front.first_seq <= target
        {
            skip_acked(front, target)?;
        }
        Ok(())
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            depth_events: self.depth_events(),
            depth_bytes: self.segments.iter().map(|s| s.disk_len).sum(),
            appended_total: self.appended_total,
            acked_total: self.acked_total,
            dropped_total: self.dropped_total,
            corrupt_records_total: self.corrupt_records_total,
        }
    }

    fn depth_events(&self) -> u64 {
        self.segments.iter().map(|s| s.unacked(self.acked)).sum()
    }

    fn id_for(&self, seq: u64) -> String {
        format!("{}-{seq}", self.spool_id)
    }

    /// Deletes the oldest sealed segments until `incoming` more bytes fit under the bound.
    fn make_room(&mut self, incoming: u64) -> Result<(), SpoolError> {
        let sealed = self.segments.len() - usize::from(self.active.is_some());
        let mut total: u64 = self.segments.iter().map(|s| s.disk_len).sum();
        let mut victims = 0;
        while victims < sealed && total + incoming > self.max_bytes {
            total -= self.segments[victims].disk_len;
            victims += 1;
        }
        if victims == 0 {
            return Ok(());
        }
        // The victims may hold the newest sequence handed out (after open, or after an ack
        // deleted the active segment); the floor keeps a restart from reusing it.
        self.write_state(self.acked)?;
        for _ in 0..victims {
            if let Some(seg) = self.segments.front() {
                remove_if_exists(&seg.path)?;
                self.dropped_total += seg.unacked(self.acked);
                self.segments.pop_front();
            }
        }
        Ok(())
    }

    fn start_segment(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        let path = self.dir.join(segment_name(first_seq));
        let mut file = OpenOptions::new().append(true).create_new(true).open(&path).map_err(io_at(&path))?;
        if let Err(e) = file.write_all(MAGIC) {
            let _ = fs::remove_file(&path);
            return Err(io_at(&path)(e));
        }
        // Without this, a power loss could lose the whole file even after peek's fsync.
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment { first_seq, end_seq: first_seq, path, valid_len: HEADER_LEN, disk_len: HEADER_LEN, read_offset: HEADER_LEN });
        self.active = Some(file);
        self.unsynced = true;
        Ok(())
    }

    fn write_record(&mut self, seq: u64, record: &[u8]) -> Result<(), SpoolError> {
        let (Some(file), Some(seg)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Err(io_at(&self.dir)(io::Error::other("no active spool segment")));
        };
        let len = record.len() as u64;
        match file.write_all(record) {
            Ok(()) => {
                seg.valid_len += len;
                seg.disk_len += len;
                seg.end_seq = seq + 1;
                self.unsynced = true;
                Ok(())
            }
            Err(e) => {
                if file.set_len(seg.valid_len).is_err() {
                    // Partial bytes stay behind; appending after them would hide every later
                    // record from the next open, so this segment takes no more writes. The
                    // sequence is burned so the next segment's name cannot collide.
                    seg.disk_len += len;
                    self.active = None;
                    self.unsynced = false;
                    self.next_seq = seq + 1;
                }
                Err(io_at(&seg.path)(e))
            }
        }
    }

    fn sync_active(&mut self) -> Result<(), SpoolError> {
        if self.unsynced
            && let (Some(file), Some(seg)) = (&self.active, self.segments.back())
        {
            file.sync_data().map_err(io_at(&seg.path))?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Only the newest segment may have unsynced data, so only it can have a torn tail.
    fn seal_active(&mut self) -> Result<(), SpoolError> {
        self.sync_active()?;
        self.active = None;
        Ok(())
    }

    fn write_state(&self, acked: u64) -> Result<(), SpoolError> {
        let state = State { acked, next_seq: self.next_seq };
        let json = serde_json::to_vec(&state).map_err(|e| SpoolError::State { path: self.dir.join(STATE_FILE), reason: e.to_string() })?;
        write_atomic(&self.dir, STATE_FILE, &json)
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&seq| seq > 0)
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        if let Some(first_seq) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((first_seq, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(out)
}

/// Reads a segment up to its first bad record; the flag says whether there was one.
fn scan_segment(path: PathBuf, first_seq: u64, acked: u64) -> Result<(Segment, bool), SpoolError> {
    let file = File::open(&path).map_err(io_at(&path))?;
    let disk_len = file.metadata().map_err(io_at(&path))?.len();
    // A previous process may have exited with appends still only in the page cache; they
    // are about to be peeked, and peek promises that what it hands out is durable.
    file.sync_data().map_err(io_at(&path))?;
    let mut seg = Segment { first_seq, end_seq: first_seq, path, valid_len: 0, disk_len, read_offset: 0 };
    if disk_len < HEADER_LEN {
        // Torn while being created: it never held a record.
        return Ok((seg, false));
    }
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic).map_err(io_at(&seg.path))?;
    if &magic != MAGIC {
        return Err(SpoolError::Format { path: seg.path });
    }
    let mut offset = HEADER_LEN;
    let mut read_offset = None;
    let torn = loop {
        if offset == disk_len {
            break false;
        }
        match read_record(&mut reader, disk_len - offset) {
            Ok((rec, len)) if rec.seq == seg.end_seq => {
                if rec.seq > acked && read_offset.is_none() {
                    read_offset = Some(offset);
                }
                seg.end_seq += 1;
                offset += len;
            }
            Ok(_) | Err(ReadError::Corrupt(_)) => break true,
            Err(ReadError::Io(e)) => return Err(io_at(&seg.path)(e)),
        }
    };
    seg.valid_len = offset;
    seg.read_offset = read_offset.unwrap_or(offset);
    Ok((seg, torn))
}

/// A buffered reader on a segment, positioned at its first unread record.
fn reader_at_read_offset(seg: &Segment) -> Result<BufReader<File>, SpoolError> {
    let file = File::open(&seg.path).map_err(io_at(&seg.path))?;
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(seg.read_offset)).map_err(io_at(&seg.path))?;
    Ok(reader)
}

/// Moves `read_offset` past records at or below `acked` without decoding their bodies.
fn skip_acked(seg: &mut Segment, acked: u64) -> Result<(), SpoolError> {
    let mut reader = reader_at_read_offset(seg)?;
    let mut offset = seg.read_offset;
    while offset < seg.valid_len {
        // Every record within valid_len was verified and is longer than these 16 bytes.
        let mut head = [0u8; 16];
        reader.read_exact(&mut head).map_err(io_at(&seg.path))?;
        let body_len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let seq = u64::from_le_bytes([head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15]]);
        if seq > acked {
            break;
        }
        offset += FRAME_LEN + u64::from(body_len);
        reader.seek_relative(i64::from(body_len) - 8).map_err(io_at(&seg.path))?;
    }
    seg.read_offset = offset;
    Ok(())
}

fn encode_record(seq: u64, kind: &str, payload: &[u8]) -> Result<Vec<u8>, SpoolError> {
    let body_len = BODY_FIXED + kind.len() + payload.len();
    let Ok(len32) = u32::try_from(body_len) else {
        return Err(SpoolError::TooLarge { len: body_len as u64, max: u64::from(u32::MAX) });
    };
    let mut buf = Vec::with_capacity(FRAME_LEN as usize + body_len);
    buf.extend_from_slice(&len32.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&seq.to_le_bytes());
    // The caller checked that the kind fits in u16.
    buf.extend_from_slice(&(kind.len() as u16).to_le_bytes());
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32(&buf[FRAME_LEN as usize..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// What [`decode_records`] found in a run of segment bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Intact records, in order.
    pub records: usize,
    /// Bytes those records occupy.
    pub consumed: usize,
    /// Why reading stopped before the end of the bytes, if it did.
    pub stopped: Option<&'static str>,
}

/// Reads the records in `bytes` (a segment's content after its magic) with the same
/// reader open and peek use, up to the first one that is not intact. For the fuzzer and
/// for tools that inspect a spool without opening (and locking) it.
pub fn decode_records(bytes: &[u8]) -> Decoded {
    let mut reader = bytes;
    let mut out = Decoded { records: 0, consumed: 0, stopped: None };
    while out.consumed < bytes.len() {
        match read_record(&mut reader, (bytes.len() - out.consumed) as u64) {
            Ok((_, len)) => {
                out.records += 1;
                out.consumed += len as usize;
            }
            Err(ReadError::Corrupt(reason)) => {
                out.stopped = Some(reason);
                break;
            }
            Err(ReadError::Io(_)) => {
                out.stopped = Some("unexpected end of the bytes");
                break;
            }
        }
    }
    out
}

struct Record {
    seq: u64,
    kind: String,
    payload: Vec<u8>,
}

enum ReadError {
    Io(io::Error),
    Corrupt(&'static str),
}

/// Reads the record at the reader's position, which has `remaining` bytes after it that may
/// belong to records; returns it and its length on disk.
fn read_record<R: Read>(reader: &mut R, remaining: u64) -> Result<(Record, u64), ReadError> {
    if remaining < FRAME_LEN {
        return Err(ReadError::Corrupt("truncated record frame"));
    }
    let mut frame = [0u8; FRAME_LEN as usize];
    reader.read_exact(&mut frame).map_err(ReadError::Io)?;
    let body_len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if (body_len as usize) < BODY_FIXED {
        return Err(ReadError::Corrupt("record length too small"));
    }
    if u64::from(body_len) > remaining - FRAME_LEN {
        return Err(ReadError::Corrupt("record extends past the end of the segment"));
    }
    let mut body = vec![0u8; body_len as usize];
    reader.read_exact(&mut body).map_err(ReadError::Io)?;
    if crc32(&body) != crc {
        return Err(ReadError::Corrupt("record checksum mismatch"));
    }
    let (seq_bytes, rest) = body.split_at(8);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(seq_bytes);
    let kind_len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
    let rest = &rest[2..];
    if kind_len > rest.len() {
        return Err(ReadError::Corrupt("record kind length exceeds the body"));
    }
    let (kind, payload) = rest.split_at(kind_len);
    let Ok(kind) = String::from_utf8(kind.to_vec()) else {
        return Err(ReadError::Corrupt("record kind is not UTF-8"));
    };
    Ok((Record { seq: u64::from_le_bytes(seq), kind, payload: payload.to_vec() }, FRAME_LEN + u64::from(body_len)))
}

/// A missing id file with segments present means the directory was tampered with; a new id
/// can then make the collector see resent events twice, which beats reusing ids and losing
/// events to de-duplication.
fn load_or_create_id(dir: &Path) -> Result<String, SpoolError> {
    let path = dir.join(ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                Ok(id.to_string())
            } else {
                Err(SpoolError::State { path, reason: "spool id is not 16 lowercase hex characters".into() })
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut raw = [0u8; 8];
            SystemRandom::new().fill(&mut raw).map_err(|_| io_at(&path)(io::Error::other("system random generator failed")))?;
            let id = hex::encode(raw);
            write_atomic(dir, ID_FILE, format!("{id}\n").as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(io_at(&path)(e)),
    }
}

fn read_state(dir: &Path) -> Result<Option<State>, SpoolError> {
    let path = dir.join(STATE_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| SpoolError::State { path, reason: e.to_string() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(&path)(e)),
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut os = path.as_os_str().to_owned();
    os.push(".tmp");
    PathBuf::from(os)
}

/// A reader sees either the old or the new contents, never a torn mix, even after a
/// power loss.
fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<(), SpoolError> {
    let path = dir.join(name);
    let tmp = tmp_path(&path);
    let mut file = File::create(&tmp).map_err(io_at(&tmp))?;
    file.write_all(contents).map_err(io_at(&tmp))?;
    file.sync_all().map_err(io_at(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_at(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))
}

fn truncate(path: &Path, len: u64) -> Result<(), SpoolError> {
    let file = OpenOptions::new().write(true).open(path).map_err(io_at(path))?;
    file.set_len(len).map_err(io_at(path))?;
    file.sync_all().map_err(io_at(path))
}

fn remove_if_exists(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path)(e)),
    }
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3), the same function as zlib's `crc32`, so segments can be checked
/// with ordinary tools.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
mod tests {
    use super::*;

    /// With kind "k" and this payload length a record is exactly 100 bytes, so a segment
    /// holding two records is 208 bytes with its magic.
    const PAYLOAD_100: usize = 100 - FRAME_LEN as usize - BODY_FIXED - 1;

    fn payload(i: u64) -> Vec<u8> {
        let mut p = format!("{{\"n\":{i}}}").into_bytes();
        p.resize(PAYLOAD_100, b' ');
        p
    }

    /// Two 100-byte records per segment, bounded to three full segments.
    fn small(dir: &Path) -> Spool {
        Spool::open_with(dir, 624, 208).unwrap()
    }

    fn seqs(events: &[Spooled]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
    }

    fn spool_id(dir: &Path) -> String {
        fs::read_to_string(dir.join(ID_FILE)).unwrap().trim().to_string()
    }

    fn append_n(spool: &mut Spool, n: u64) {
        for _ in 0..n {
            let seq = spool.next_seq;
            spool.append("k", &payload(seq)).unwrap();
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn append_peek_ack_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let id = spool_id(dir.path());
        assert_eq!(id.len(), 16);

        assert_eq!(spool.append("exec", b"{\"a\":1}").unwrap(), format!("{id}-1"));
        assert_eq!(spool.append("exit", b"{\"a\":2}").unwrap(), format!("{id}-2"));
        assert_eq!(spool.append("exec", b"{\"a\":3}").unwrap(), format!("{id}-3"));

        let first = spool.peek(10).unwrap();
        assert_eq!(first[1], Spooled { id: format!("{id}-2"), seq: 2, kind: "exit".into(), payload: b"{\"a\":2}".to_vec() });
        assert_eq!(seqs(&first), [1, 2, 3]);
        assert_eq!(spool.peek(10).unwrap(), first, "peek must not consume");

        spool.ack(2).unwrap();
        let rest = spool.peek(10).unwrap();
        assert_eq!(seqs(&rest), [3]);
        assert_eq!(rest[0].payload, b"{\"a\":3}");

        let stats = spool.stats();
        assert_eq!(stats.depth_events, 1);
        assert_eq!(stats.appended_total, 3);
        assert_eq!(stats.acked_total, 2);
        assert_eq!(stats.dropped_total, 0);
        assert_eq!(stats.corrupt_records_total, 0);
    }

    #[test]
    fn ids_are_stable_and_seq_continues_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        append_n(&mut spool, 3);
        let before = spool.peek(10).unwrap();
        drop(spool);

        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.peek(10).unwrap(), before);
        let id = spool.append("k", b"new").unwrap();
        assert_eq!(id, format!("{}-4", spool_id(dir.path())));
        assert_eq!(spool.stats().depth_events, 4);
        assert_eq!(spool.stats().appended_total, 1, "counters are per process");
    }

    #[test]
    fn acked_events_stay_acked_and_seqs_are_not_reused_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = small(dir.path());
        append_n(&mut spool, 5);
        spool.ack(3).unwrap();
        drop(spool);

        let mut spool = small(dir.path());
        assert_eq!(seqs(&spool.peek(10).unwrap()), [4, 5]);
        assert_eq!(spool.stats().depth_events, 2);
        spool.ack(5).unwrap();
        assert!(segment_files(dir.path()).is_empty(), "fully acked segments are deleted");
        drop(spool);

        // No segment is left to show which sequences were used; the state file must.
        let mut spool = small(dir.path());
        assert!(spool.peek(10).unwrap().is_empty());
        assert_eq!(spool.stats().depth_events, 0);
        let id = spool.append("k", b"x").unwrap();
        assert_eq!(id, format!("{}-6", spool_id(dir.path())));
    }

    #[test]
    fn full_spool_drops_oldest_segments_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = small(dir.path());
        append_n(&mut spool, 10);

        let stats = spool.stats();
        assert_eq!(stats.dropped_total, 4, "segments [1,2] and [3,4] dropped");
        assert_eq!(stats.depth_events, 6);
        assert_eq!(stats.depth_bytes, 624);
        assert_eq!(stats.appended_total, 10);
        let kept = spool.peek(100).unwrap();
        assert_eq!(seqs(&kept), [5, 6, 7, 8, 9, 10]);
        assert_eq!(kept[5].payload, payload(10));
        assert_eq!(segment_files(dir.path()).len(), 3);
        drop(spool);

        let mut spool = small(dir.path());
        assert_eq!(seqs(&spool.peek(100).unwrap()), [5, 6, 7, 8, 9, 10]);
        assert_eq!(spool.stats().dropped_total, 0);
    }

    #[test]
    fn dropping_counts_only_unacked_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = small(dir.path());
        append_n(&mut spool, 6);
        spool.ack(1).unwrap();
        append_n(&mut spool, 1);

        let stats = spool.stats();
        assert_eq!(stats.dropped_total, 1, "seq 1 was acked, only seq 2 was lost");
        assert_eq!(stats.acked_total, 1);
        assert_eq!(stats.depth_events, 5);
        assert_eq!(seqs(&spool.peek(100).unwrap()), [3, 4, 5, 6, 7]);
    }

    #[test]
    fn ack_reclaims_whole_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = small(dir.path());
        append_n(&mut spool, 6);
        assert_eq!(segment_files(dir.path()).len(), 3);

        spool.ack(3).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 2);
        assert_eq!(spool.stats().depth_bytes, 416, "seq 3 shares a segment with seq 4");
        assert_eq!(seqs(&spool.peek(100).unwrap()), [4, 5, 6]);

        spool.ack(6).unwrap();
        assert!(segment_files(dir.path()).is_empty());
        assert_eq!(spool.stats().depth_bytes, 0);
        append_n(&mut spool, 1);
        assert_eq!(segment_files(dir.path()), [dir.path().join("seg-00000000000000000007.log")]);
        assert_eq!(seqs(&spool.peek(100).unwrap()), [7]);
    }

    #[test]
    fn shrinking_the_bound_drops_oldest_at_open_without_reusing_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open_with(dir.path(), 1 << 20, 208).unwrap();
        append_n(&mut spool, 6);
        drop(spool);

        let mut spool = Spool::open_with(dir.path(), 300, 208).unwrap();
        assert_eq!(spool.stats().dropped_total, 4);
        assert_eq!(seqs(&spool.peek(100).unwrap()), [5, 6]);
        drop(spool);

        let spool = Spool::open_with(dir.path(), 100, 208).unwrap();
        assert_eq!(spool.stats().dropped_total, 2);
        assert_eq!(spool.stats().depth_events, 0);
        drop(spool);

        let mut spool = Spool::open_with(dir.path(), 1 << 20, 208).unwrap();
        let id = spool.append("k", b"x").unwrap();
        assert_eq!(id, format!("{}-7", spool_id(dir.path())));
    }

    #[test]
    fn torn_tail_is_truncated_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 1..=5u64 {
            spool.append("exec", format!("{{\"n\":{i}}}").as_bytes()).unwrap();
        }
        drop(spool);
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 1);
        let full = fs::metadata(&files[0]).unwrap().len();
        let file = OpenOptions::new().write(true).open(&files[0]).unwrap();
        file.set_len(full - 3).unwrap();
        drop(file);

        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.stats().corrupt_records_total, 1);
        assert_eq!(spool.stats().depth_events, 4);
        let events = spool.peek(10).unwrap();
        assert_eq!(seqs(&events), [1, 2, 3, 4]);
        assert_eq!(events[3].payload, b"{\"n\":4}");
        let record_len = FRAME_LEN + (BODY_FIXED + 4 + 7) as u64;
        assert_eq!(fs::metadata(&files[0]).unwrap().len(), full - record_len);
        // Seq 5 never left the spool (it was never peeked), so handing it out again is safe.
        spool.append("exec", b"again").unwrap();
        drop(spool);

        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.stats().corrupt_records_total, 0, "repaired once, not recounted");
        let events = spool.peek(10).unwrap();
        assert_eq!(seqs(&events), [1, 2, 3, 4, 5]);
        assert_eq!(events[4].payload, b"again");
    }

    #[test]
    fn garbage_after_the_last_record_is_truncated_and_counted() {
        // Random bytes, and zeros behind a plausible length (what a preallocated but
        // unwritten block looks like after a power loss).
        let mut zeros = vec![20, 0, 0, 0];
        zeros.resize(4 + 4 + 20, 0);
        let garbage: [Vec<u8>; 2] = [(0..37u8).map(|b| b.wrapping_mul(151) ^ 0x5a).collect(), zeros];
        for junk in garbage {
            let dir = tempfile::tempdir().unwrap();
            let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
            append_n(&mut spool, 3);
            drop(spool);
            let seg = &segment_files(dir.path())[0];
            let good_len = fs::metadata(seg).unwrap().len();
            let mut file = OpenOptions::new().append(true).open(seg).unwrap();
            file.write_all(&junk).unwrap();
            drop(file);

            let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(spool.stats().corrupt_records_total, 1);
            assert_eq!(seqs(&spool.peek(10).unwrap()), [1, 2, 3]);
            assert_eq!(fs::metadata(seg).unwrap().len(), good_len);
            assert_eq!(spool.append("k", b"x").unwrap(), format!("{}-4", spool_id(dir.path())));
            drop(spool);

            let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(spool.stats().corrupt_records_total, 0);
            assert_eq!(seqs(&spool.peek(10).unwrap()), [1, 2, 3, 4]);
        }
    }

    #[test]
    fn corruption_inside_an_older_segment_counts_the_lost_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open_with(dir.path(), 1 << 20, 208).unwrap();
        append_n(&mut spool, 6);
        drop(spool);
        let first = &segment_files(dir.path())[0];
        let mut bytes = fs::read(first).unwrap();
        bytes[8 + 100 + 50] ^= 0x01; // inside the payload of seq 2
        fs::write(first, &bytes).unwrap();

        let mut spool = Spool::open_with(dir.path(), 1 << 20, 208).unwrap();
        assert_eq!(spool.stats().corrupt_records_total, 1);
        assert_eq!(seqs(&spool.peek(10).unwrap()), [1, 3, 4, 5, 6]);
        assert_eq!(fs::metadata(first).unwrap().len(), 108);
    }

    #[test]
    fn arbitrary_payload_bytes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let all_bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        spool.append("kind-é∂", &all_bytes).unwrap();
        spool.append("", b"").unwrap();
        spool.append("k", &[0xff, 0x00, 0xfe, b'\n', 0x00]).unwrap();
        let events = spool.peek(10).unwrap();
        assert_eq!(events[0].kind, "kind-é∂");
        assert_eq!(events[0].payload, all_bytes);
        assert_eq!(events[1].kind, "");
        assert!(events[1].payload.is_empty());
        assert_eq!(events[2].payload, [0xff, 0x00, 0xfe, b'\n', 0x00]);
        drop(spool);

        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.peek(10).unwrap(), events);
    }

    #[test]
    fn peek_returns_at_most_max_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open_with(dir.path(), 1 << 20, 208).unwrap();
        append_n(&mut spool, 10);
        assert!(spool.peek(0).unwrap().is_empty());
        assert_eq!(seqs(&spool.peek(3).unwrap()), [1, 2, 3]);
        assert_eq!(seqs(&spool.peek(3).unwrap()), [1, 2, 3]);
        spool.ack(3).unwrap();
        assert_eq!(seqs(&spool.peek(3).unwrap()), [4, 5, 6]);
        assert_eq!(spool.peek(100).unwrap().len(), 7);
        assert_eq!(spool.peek(1).unwrap()[0].payload, payload(4));
    }

    #[test]
    fn ack_beyond_the_last_seq_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        append_n(&mut spool, 3);
        spool.ack(1000).unwrap();
        spool.ack(1000).unwrap();
        spool.ack(0).unwrap();
        assert!(spool.peek(10).unwrap().is_empty());
        assert_eq!(spool.stats().acked_total, 3);
        assert_eq!(spool.stats().depth_events, 0);

        // The clamp means seq 4 is not pre-acknowledged by the earlier ack(1000).
        append_n(&mut spool, 1);
        assert_eq!(seqs(&spool.peek(10).unwrap()), [4]);
        drop(spool);
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(seqs(&spool.peek(10).unwrap()), [4]);
        append_n(&mut spool, 1);
        assert_eq!(seqs(&spool.peek(10).unwrap()), [4, 5]);
    }

    #[test]
    fn oversized_events_are_rejected_without_burning_a_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open_with(dir.path(), 200, 100).unwrap();
        assert!(matches!(spool.append("k", &[0; 300]), Err(SpoolError::TooLarge { len: 319, max: 200 })));
        let long_kind = "k".repeat(70_000);
        assert!(matches!(spool.append(&long_kind, b""), Err(SpoolError::KindTooLong { len: 70_000 })));
        assert_eq!(spool.stats(), SpoolStats::default());
        assert_eq!(spool.append("k", b"ok").unwrap(), format!("{}-1", spool_id(dir.path())));
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(Spool::open(dir.path(), 1 << 20), Err(SpoolError::Locked { .. })));
        drop(spool);
        Spool::open(dir.path(), 1 << 20).unwrap();
    }

    #[test]
    fn unreadable_state_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        drop(Spool::open(dir.path(), 1 << 20).unwrap());
        fs::write(dir.path().join(STATE_FILE), b"{\"acked\":").unwrap();
        assert!(matches!(Spool::open(dir.path(), 1 << 20), Err(SpoolError::State { .. })));
    }

    #[test]
    fn decode_records_reads_intact_records_and_stops_at_a_bad_one() {
        let mut bytes = encode_record(7, "process_exec", b"{}").expect("encodes");
        let first = bytes.len();
        bytes.extend(encode_record(8, "credential_use", b"{\"a\":1}").expect("encodes"));
        assert_eq!(decode_records(&bytes), Decoded { records: 2, consumed: bytes.len(), stopped: None });
        let torn = &bytes[..bytes.len() - 1];
        let d = decode_records(torn);
        assert_eq!((d.records, d.consumed), (1, first));
        assert!(d.stopped.is_some());
        let mut rotten = bytes.clone();
        rotten[first + 12] ^= 1;
        assert_eq!(decode_records(&rotten).stopped, Some("record checksum mismatch"));
        assert_eq!(decode_records(&[]), Decoded { records: 0, consumed: 0, stopped: None });
    }
}
