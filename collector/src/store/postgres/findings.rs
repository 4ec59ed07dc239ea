//! The finding rules' lookups and the findings table in PostgreSQL, in a fixed handful of
//! round trips per batch whatever its size.
//!
//! The rules ask one question at a time (an issuance by jti, a key's first use, a run's
//! end, the facts noted about a fingerprint), which cost a round trip each: most of a
//! batch's time. So [`PgFindings::prefetch`] asks each kind of question once for every
//! subject the batch's events name (arrays and `LATERAL` probes, each still an index
//! probe per subject), and the rules are answered from memory. What a batch notes and
//! the findings it stores are kept in memory too (later questions of the same batch see
//! them) and written by [`PgFindings::flush`] in one statement per table. A question not
//! prefetched is asked on its own, so the answers never depend on the prefetch guessing
//! right.
//!
//! Replicas: findings a batch will update are locked (`FOR UPDATE`) when first read; a
//! new finding is inserted with `ON CONFLICT DO NOTHING`, and one another replica stored
//! first is merged into its row, so no evidence is lost.

use std::collections::{HashMap, HashSet};

use postgres::{Row, Transaction};
use sigil_proto::{EventBody, json, v1};

use super::Stmts;
use crate::{
    findings::{Fact, FindingLookups, Seen, from_json, kind_name, merge, run_of, to_json, workload_of},
    store::{AgentEvent, StoreError},
};

/// Columns: run_id, node, exec_id, event_id, time.
fn seen(r: &Row, kind: &str) -> Seen {
    Seen { run_id: r.get(0), node: r.get(1), exec_id: r.get(2), event_id: r.get(3), kind: kind.to_owned(), time: r.get(4) }
}

const ISSUANCES: &str = "SELECT r.run_id, n.node, t.exec_id, t.stream, t.time, t.jti FROM token_issuances t JOIN runs r ON r.rid = t.rid
    JOIN nodes n ON n.node_id = t.node_id WHERE t.jti = ANY($1)";
const FIRST_USES: &str = "SELECT x.run_id, x.node, x.exec_id, x.stream, x.time, k.key FROM unnest($1::text[]) AS k(key) CROSS JOIN LATERAL (
        SELECT r.run_id, n.node, u.exec_id, u.stream, u.time FROM credential_uses u JOIN runs r ON r.rid = u.rid
        JOIN nodes n ON n.node_id = u.node_id WHERE u.access_key_id = k.key ORDER BY u.time, u.row LIMIT 1) x";
/// Per key: the earliest credential response that handed it to a known run.
const FIRST_OBTAINED: &str = "SELECT x.run_id, x.node, x.exec_id, x.stream, x.time, k.key FROM unnest($1::text[]) AS k(key) CROSS JOIN LATERAL (
        SELECT r.run_id, n.node, o.exec_id, o.stream, o.time FROM credential_obtained o JOIN runs r ON r.rid = o.rid
        JOIN nodes n ON n.node_id = o.node_id WHERE o.identifier = k.key AND o.stream IS NOT NULL ORDER BY o.time, o.row LIMIT 1) x";
/// The first-event lookups by access key, with the evidence kind each finds.
const FIRSTS: [(&str, &str); 2] = [(FIRST_OBTAINED, "credential_obtained"), (FIRST_USES, "credential_use")];
const RUNS_ENDED: &str = "SELECT run_id, ended FROM runs WHERE run_id = ANY($1)";
/// Per (fact, subject, limit): the facts noted, earliest first (`C` order, as SQLite and
/// Rust compare strings).
const NOTED: &str = "SELECT x.run_id, x.node, x.exec_id, x.event_id, x.time, x.kind, x.detail, q.fact, q.subject, q.lim
    FROM unnest($1::text[], $2::text[], $3::int8[]) AS q(fact, subject, lim) CROSS JOIN LATERAL (
        SELECT run_id, node, exec_id, event_id, time, kind, detail FROM finding_facts f WHERE f.fact = q.fact AND f.subject = q.subject
        ORDER BY time, event_id COLLATE \"C\" LIMIT q.lim) x";
const NOTE_KEYS: &str = "SELECT f.fact, f.subject, f.detail, f.run_id FROM finding_facts f
    JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS k(fact, subject, detail, run_id)
    ON f.fact = k.fact AND f.subject = k.subject AND f.detail = k.detail AND f.run_id = k.run_id";
const FINDINGS: &str = "SELECT id, json FROM findings WHERE id = ANY($1) ORDER BY id FOR UPDATE";

/// A noted fact's key: fact, subject, detail, run.
type NoteKey = (&'static str, String, String, String);
/// Facts noted about a subject (fact, subject, at most this many), earliest first.
type NotedLists = HashMap<(&'static str, String, usize), Vec<(String, Seen)>>;
/// `finding_facts` columns, one vector each (the row's `NoteKey` first).
type FactColumns<'r> = (Vec<&'r str>, Vec<&'r str>, Vec<&'r str>, Vec<&'r str>, Vec<&'r str>, Vec<Option<&'r str>>, Vec<&'r str>, Vec<&'r str>, Vec<i64>);
/// `findings` columns: id, kind, subject, first and last time, JSON.
type FindingColumns<'r> = (Vec<&'r str>, Vec<String>, Vec<&'r str>, Vec<i64>, Vec<i64>, Vec<String>);

/// A finding as this batch leaves it, and whether it is new (to insert) or stored.
struct Pending {
    f: v1::Finding,
    first: i64,
    last: i64,
    new: bool,
    /// Changed by this batch (else only read).
    dirty: bool,
}

pub struct PgFindings<'a, 't> {
    tx: &'a mut Transaction<'t>,
    stmts: &'a mut Stmts,
    issuances: HashMap<String, Vec<Seen>>,
    /// Per (evidence kind, access key): the earliest `credential_obtained` response that
    /// handed the key out, or the earliest `credential_use` of it.
    firsts: HashMap<(&'static str, String), Option<Seen>>,
    ended: HashMap<String, Option<i64>>,
    /// Per (fact, subject, limit): the facts noted, earliest first, this batch's included.
    noted: NotedLists,
    /// Note keys known to exist (stored or noted by this batch) or known not to.
    note_keys: HashMap<NoteKey, bool>,
    /// Facts this batch noted, in order.
    new_notes: Vec<(NoteKey, Seen)>,
    /// Findings read (locked) or written by this batch; `None`: not stored.
    findings: HashMap<String, Option<Pending>>,
}

impl<'a, 't> PgFindings<'a, 't> {
    pub fn new(tx: &'a mut Transaction<'t>, stmts: &'a mut Stmts) -> Self {
        Self {
            tx,
            stmts,
            issuances: HashMap::new(),
            firsts: HashMap::new(),
            ended: HashMap::new(),
            noted: HashMap::new(),
            note_keys: HashMap::new(),
            new_notes: Vec::new(),
            findings: HashMap::new(),
        }
    }

    /// The first `kind` event about access key `key` (prefetched, or asked now).
    fn first(&mut self, (sql, kind): (&'static str, &'static str), key: &str) -> Result<Option<Seen>, StoreError> {
        if let Some(v) = self.firsts.get(&(kind, key.to_owned())) {
            return Ok(v.clone());
        }
        let found = self.query(sql, &[&vec![key]])?.first().map(|r| seen(r, kind));
        self.firsts.insert((kind, key.to_owned()), found.clone());
        Ok(found)
    }

    fn query(&mut self, sql: &'static str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let st = self.stmts.get(self.tx, sql)?;
        Ok(self.tx.query(&st, params)?)
    }

    /// Asks, in one statement per kind of question, what the rules will ask about the
    /// batch's events (see the module doc).
    pub fn prefetch(&mut self, node: &str, events: &[AgentEvent]) -> Result<(), StoreError> {
        let (mut jtis, mut keys, mut notes, mut lists) = (HashSet::new(), HashSet::new(), HashSet::new(), HashSet::new());
        for ev in events {
            match &ev.body {
                EventBody::CredentialUse(v) => {
                    let ids = v.identifiers.as_ref();
                    match v.class() {
                        v1::CredentialClass::SigilIssued => jtis.extend(ids.and_then(|i| i.jwt_jti.clone()).filter(|j| !j.is_empty())),
                        v1::CredentialClass::ShortLived => keys.extend(ids.and_then(|i| i.access_key_id.clone()).filter(|k| k.starts_with("ASIA"))),
                        v1::CredentialClass::Static => {
                            let Some(p) = v.process.as_ref() else { continue };
                            let Some(run) = run_of(node, p) else { continue };
                            if v.fingerprint.is_empty() {
                                continue;
                            }
                            notes.insert((Fact::StaticUse.as_str(), v.fingerprint.clone(), workload_of(node, p), run.clone()));
                            lists.insert((Fact::StaticUse.as_str(), v.fingerprint.clone(), crate::findings::ORIGINS));
                            lists.insert((Fact::FileRead.as_str(), run, crate::findings::MAX_EVIDENCE));
                        }
                        _ => {}
                    }
                }
                EventBody::CredentialFileRead(v) => {
                    if let Some(run) = v.process.as_ref().and_then(|p| run_of(node, p)) {
                        let kind = json::file_kind::name(v.file_kind).unwrap_or_else(|| "unknown".into());
                        notes.insert((Fact::FileRead.as_str(), run.clone(), format!("{kind} {}", v.path), run));
                    }
                }
                _ => {}
            }
        }
        let mut runs = HashSet::new();
        if !jtis.is_empty() {
            let jtis: Vec<String> = jtis.into_iter().collect();
            for r in self.query(ISSUANCES, &[&jtis])? {
                let s = seen(&r, "token_issued");
                runs.insert(s.run_id.clone());
                self.issuances.entry(r.get(5)).or_default().push(s);
            }
            for j in jtis {
                self.issuances.entry(j).or_default();
            }
        }
        if !keys.is_empty() {
            let keys: Vec<String> = keys.into_iter().collect();
            for (sql, kind) in FIRSTS {
                for r in self.query(sql, &[&keys])? {
                    let s = seen(&r, kind);
                    runs.insert(s.run_id.clone());
                    self.firsts.insert((kind, r.get(5)), Some(s));
                }
                for k in &keys {
                    self.firsts.entry((kind, k.clone())).or_insert(None);
                }
            }
        }
        if !runs.is_empty() {
            let runs: Vec<String> = runs.into_iter().collect();
            for r in self.query(RUNS_ENDED, &[&runs])? {
                self.ended.insert(r.get(0), r.get(1));
            }
            for run in runs {
                self.ended.entry(run).or_insert(None);
            }
        }
        if !lists.is_empty() {
            let (mut fact, mut subject, mut limit) = (Vec::new(), Vec::new(), Vec::new());
            for (f, s, l) in &lists {
                fact.push(*f);
                subject.push(s.as_str());
                limit.push(*l as i64);
            }
            let rows = self.query(NOTED, &[&fact, &subject, &limit])?;
            for (f, s, l) in lists {
                self.noted.insert((f, s, l), Vec::new());
            }
            for r in rows {
                let (f, s, l): (String, String, i64) = (r.get(7), r.get(8), r.get(9));
                let key = (if f == Fact::StaticUse.as_str() { Fact::StaticUse.as_str() } else { Fact::FileRead.as_str() }, s, l as usize);
                let kind: String = r.get(5);
                if let Some(list) = self.noted.get_mut(&key) {
                    list.push((r.get(6), seen(&r, &kind)));
                }
            }
        }
        if !notes.is_empty() {
            let (mut fact, mut subject, mut detail, mut run) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (f, s, d, r) in &notes {
                fact.push(*f);
                subject.push(s.as_str());
                detail.push(d.as_str());
                run.push(r.as_str());
            }
            let found: HashSet<(String, String, String, String)> =
                self.query(NOTE_KEYS, &[&fact, &subject, &detail, &run])?.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
            for (f, s, d, r) in notes {
                let stored = found.contains(&(f.to_owned(), s.clone(), d.clone(), r.clone()));
                self.note_keys.insert((f, s, d, r), stored);
            }
        }
        Ok(())
    }

    /// Writes what the batch noted and the findings it made or changed.
    pub fn flush(mut self) -> Result<(), StoreError> {
        if !self.new_notes.is_empty() {
            let notes = std::mem::take(&mut self.new_notes);
            let mut c: FactColumns<'_> = Default::default();
            for ((f, s, d, r), seen) in &notes {
                c.0.push(f);
                c.1.push(s);
                c.2.push(d);
                c.3.push(r);
                c.4.push(&seen.node);
                c.5.push(seen.exec_id.as_deref());
                c.6.push(&seen.event_id);
                c.7.push(&seen.kind);
                c.8.push(seen.time);
            }
            let st = self.stmts.get(
                self.tx,
                "INSERT INTO finding_facts (fact, subject, detail, run_id, node, exec_id, event_id, kind, time)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int8[])
                 ON CONFLICT DO NOTHING",
            )?;
            self.tx.execute(&st, &[&c.0, &c.1, &c.2, &c.3, &c.4, &c.5, &c.6, &c.7, &c.8])?;
        }
        let (mut new, mut changed) = (Vec::new(), Vec::new());
        for p in std::mem::take(&mut self.findings).into_values().flatten().filter(|p| p.dirty) {
            if p.new { new.push(p) } else { changed.push(p) }
        }
        new.sort_by(|a, b| a.f.id.cmp(&b.f.id));
        if !new.is_empty() {
            let c = columns(&new)?;
            let st = self.stmts.get(
                self.tx,
                "INSERT INTO findings (id, kind, subject, first_time, last_time, json)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[]) ON CONFLICT DO NOTHING RETURNING id",
            )?;
            let inserted: HashSet<String> = self.tx.query(&st, &[&c.0, &c.1, &c.2, &c.3, &c.4, &c.5])?.iter().map(|r| r.get(0)).collect();
            // Stored meanwhile by another replica (it committed after our read): merged
            // into its row.
            for p in new.into_iter().filter(|p| !inserted.contains(&p.f.id)) {
                let row = self.tx.query_one("SELECT json FROM findings WHERE id = $1 FOR UPDATE", &[&p.f.id])?;
                let merged = merge(from_json(&row.get::<_, String>(0))?, &p.f);
                let (first, last) = times(&merged, p.first, p.last);
                changed.push(Pending { f: merged, first, last, new: false, dirty: true });
            }
        }
        if !changed.is_empty() {
            let c = columns(&changed)?;
            let st = self.stmts.get(
                self.tx,
                "UPDATE findings f SET first_time = u.first, last_time = u.last, json = u.json
                 FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[]) AS u(id, first, last, json) WHERE f.id = u.id",
            )?;
            self.tx.execute(&st, &[&c.0, &c.3, &c.4, &c.5])?;
        }
        Ok(())
    }
}

/// The `findings` columns of `pending`, one vector each.
fn columns(pending: &[Pending]) -> Result<FindingColumns<'_>, StoreError> {
    let mut c: FindingColumns<'_> = Default::default();
    for p in pending {
        c.0.push(&p.f.id);
        c.1.push(kind_name(&p.f));
        c.2.push(&p.f.subject);
        c.3.push(p.first);
        c.4.push(p.last);
        c.5.push(to_json(&p.f)?);
    }
    Ok(c)
}

/// A finding's times as Unix seconds (`first`/`last` where its text does not parse).
fn times(f: &v1::Finding, first: i64, last: i64) -> (i64, i64) {
    (crate::cloud::parse_rfc3339(&f.first_time).unwrap_or(first), crate::cloud::parse_rfc3339(&f.last_time).unwrap_or(last))
}

impl FindingLookups for PgFindings<'_, '_> {
    fn issuances(&mut self, jti: &str) -> Result<Vec<Seen>, StoreError> {
        if let Some(v) = self.issuances.get(jti) {
            return Ok(v.clone());
        }
        let found: Vec<Seen> = self.query(ISSUANCES, &[&vec![jti]])?.iter().map(|r| seen(r, "token_issued")).collect();
        self.issuances.insert(jti.to_owned(), found.clone());
        Ok(found)
    }

    fn run_ended(&mut self, run_id: &str) -> Result<Option<i64>, StoreError> {
        if let Some(v) = self.ended.get(run_id) {
            return Ok(*v);
        }
        let ended = self.query(RUNS_ENDED, &[&vec![run_id]])?.first().and_then(|r| r.get::<_, Option<i64>>(1));
        self.ended.insert(run_id.to_owned(), ended);
        Ok(ended)
    }

    fn first_obtained(&mut self, key: &str) -> Result<Option<Seen>, StoreError> {
        self.first(FIRSTS[0], key)
    }

    fn first_use_of_key(&mut self, key: &str) -> Result<Option<Seen>, StoreError> {
        self.first(FIRSTS[1], key)
    }

    fn note(&mut self, fact: Fact, subject: &str, detail: &str, s: &Seen) -> Result<bool, StoreError> {
        let key: NoteKey = (fact.as_str(), subject.to_owned(), detail.to_owned(), s.run_id.clone());
        let known = match self.note_keys.get(&key) {
            Some(k) => *k,
            None => !self.query(NOTE_KEYS, &[&vec![key.0], &vec![subject], &vec![detail], &vec![s.run_id.as_str()]])?.is_empty(),
        };
        if known {
            self.note_keys.insert(key, true);
            return Ok(false);
        }
        // Every list of this subject's facts gains it, in order, within its bound.
        for ((f, subj, limit), list) in &mut self.noted {
            if *f == key.0 && subj == subject {
                let at = list.partition_point(|(_, x)| (x.time, x.event_id.as_bytes()) <= (s.time, s.event_id.as_bytes()));
                list.insert(at, (detail.to_owned(), s.clone()));
                list.truncate(*limit);
            }
        }
        self.note_keys.insert(key.clone(), true);
        self.new_notes.push((key, s.clone()));
        Ok(true)
    }

    fn noted(&mut self, fact: Fact, subject: &str, limit: usize) -> Result<Vec<(String, Seen)>, StoreError> {
        let key = (fact.as_str(), subject.to_owned(), limit);
        if let Some(v) = self.noted.get(&key) {
            return Ok(v.clone());
        }
        // Not prefetched: read, with this batch's notes (not yet written) merged in.
        let mut list: Vec<(String, Seen)> = self
            .query(NOTED, &[&vec![fact.as_str()], &vec![subject], &vec![limit as i64]])?
            .iter()
            .map(|r| (r.get(6), seen(r, &r.get::<_, String>(5))))
            .collect();
        for ((f, subj, detail, _), s) in &self.new_notes {
            if *f == key.0 && subj == subject {
                list.push((detail.clone(), s.clone()));
            }
        }
        list.sort_by(|(_, a), (_, b)| (a.time, a.event_id.as_bytes()).cmp(&(b.time, b.event_id.as_bytes())));
        list.truncate(limit);
        self.noted.insert(key, list.clone());
        Ok(list)
    }

    fn will_store(&mut self, ids: &[&str]) -> Result<(), StoreError> {
        let ids: Vec<&str> = ids.iter().copied().filter(|id| !self.findings.contains_key(*id)).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut found: HashMap<String, String> = self.query(FINDINGS, &[&ids])?.iter().map(|r| (r.get(0), r.get(1))).collect();
        for id in ids {
            let stored = match found.remove(id) {
                Some(json) => {
                    let f = from_json(&json)?;
                    let (first, last) = times(&f, 0, 0);
                    Some(Pending { f, first, last, new: false, dirty: false })
                }
                None => None,
            };
            self.findings.insert(id.to_owned(), stored);
        }
        Ok(())
    }

    fn stored_finding(&mut self, id: &str) -> Result<Option<v1::Finding>, StoreError> {
        if !self.findings.contains_key(id) {
            self.will_store(&[id])?;
        }
        Ok(self.findings.get(id).and_then(|p| p.as_ref().map(|p| p.f.clone())))
    }

    fn insert_finding(&mut self, f: &v1::Finding, first: i64, last: i64) -> Result<bool, StoreError> {
        if let Some(Some(_)) = self.findings.get(&f.id) {
            return Ok(false);
        }
        self.findings.insert(f.id.clone(), Some(Pending { f: f.clone(), first, last, new: true, dirty: true }));
        Ok(true)
    }

    fn update_finding(&mut self, f: &v1::Finding, first: i64, last: i64) -> Result<(), StoreError> {
        let new = matches!(self.findings.get(&f.id), Some(Some(p)) if p.new);
        self.findings.insert(f.id.clone(), Some(Pending { f: f.clone(), first, last, new, dirty: true }));
        Ok(())
    }
}
