//! Storage behind a trait: the collector's logic (ingest, correlation, queries) talks to
//! [`Store`]; SQLite ([`sqlite::SqliteStore`]) is the embedded default that needs no setup,
//! PostgreSQL ([`postgres::PostgresStore`]) the shared store of several collector replicas.

pub mod aggregate;
pub mod answer;
pub mod postgres;
pub mod sqlite;

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::cloud::CloudAction;

/// How a run got temporary cloud credentials when the agent saw it exchange a
/// Sigil-issued token for them (`sigil trace`'s `obtained.how`).
pub const EXCHANGED_SIGIL_TOKEN: &str = "temporary credentials from a Sigil-issued token this run exchanged (the exchange was seen on the node)";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("database lock poisoned")]
    Poisoned,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadArgument(String),
    /// A failure shared by every batch of one group commit (each gets a copy).
    #[error("{0}")]
    Shared(String),
    /// An aggregate table disagrees with the rows it summarises.
    #[error("aggregate out of step: {0}")]
    Inconsistent(String),
}

/// One agent event to store: its id (unique per node) and its typed contract body.
#[derive(Debug, Clone)]
pub struct AgentEvent {
    pub id: String,
    pub body: sigil_proto::EventBody,
}

/// What happened to a batch. Counts add up to the batch size.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct IngestOutcome {
    pub stored: u32,
    pub duplicates: u32,
    pub rejected: u32,
    pub errors: Vec<String>,
    /// Findings the batch stored first, to be logged by the caller once the batch has
    /// committed: a batch rolled back (or written again alone after its group failed)
    /// must not have logged them.
    #[serde(skip)]
    pub new_findings: Vec<NewFinding>,
}

/// What the log says of a new finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFinding {
    pub kind: &'static str,
    pub subject: String,
    pub runs: Vec<String>,
    pub summary: String,
}

impl From<&sigil_proto::v1::Finding> for NewFinding {
    fn from(f: &sigil_proto::v1::Finding) -> Self {
        Self { kind: f.finding_kind().as_str_name(), subject: f.subject.clone(), runs: f.runs.clone(), summary: f.summary.clone() }
    }
}

impl IngestOutcome {
    pub fn reject(&mut self, why: String) {
        self.rejected += 1;
        self.errors.push(why);
    }

    /// Adds the counts of a later stage of the same batch.
    pub fn merge(&mut self, other: IngestOutcome) {
        self.stored += other.stored;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.errors.extend(other.errors);
        self.new_findings.extend(other.new_findings);
    }
}

/// The most entries one page of a long list may hold (`--limit`).
pub const MAX_PAGE: usize = 1000;

/// Which part of a long, ordered list one answer holds: at most `limit` entries (the
/// verb's default when `None`), after the `after` cursor a previous answer's `next` gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub limit: Option<usize>,
    pub after: Option<String>,
}

impl Page {
    /// A page from a request's `limit` and `after` (absent, 0 or empty: not given).
    pub fn new(limit: Option<u64>, after: Option<&str>) -> Result<Self, StoreError> {
        let limit = match limit.filter(|n| *n > 0) {
            Some(n) if n > MAX_PAGE as u64 => return Err(StoreError::BadArgument(format!("limit {n} is more than {MAX_PAGE}"))),
            other => other.map(|n| n as usize),
        };
        Ok(Self { limit, after: after.filter(|a| !a.is_empty()).map(str::to_owned) })
    }

    pub fn is_default(&self) -> bool {
        self.limit.is_none() && self.after.is_none()
    }
}

/// The questions incident responders ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A cloud action id (CloudTrail eventID, GCP insertId); the page is over its links.
    Trace(String, Page),
    /// An access key id, a fingerprint or a jti.
    WhoUsed(String),
    /// A run id; the page is over its timeline.
    Run(String, Page),
    /// Long-lived credentials in use; the page is over them, most shared first.
    StaticCredentials(Page),
    Unattributed,
    Posture,
    /// Misuse findings, optionally of one kind and with a misuse at or after `since`.
    Findings {
        kind: Option<String>,
        since: Option<i64>,
    },
}

impl Query {
    pub fn parse(name: &str, arg: &str) -> Result<Self, StoreError> {
        let need = |what: &str| -> Result<String, StoreError> {
            if arg.is_empty() { Err(StoreError::BadArgument(format!("{name} needs {what}"))) } else { Ok(arg.to_owned()) }
        };
        Ok(match name {
            "trace" => Query::Trace(need("a cloud event id")?, Page::default()),
            "who-used" => Query::WhoUsed(need("an access key id, fingerprint or jti")?),
            "run" => Query::Run(need("a run id")?, Page::default()),
            "static-credentials" => Query::StaticCredentials(Page::default()),
            "unattributed" => Query::Unattributed,
            "posture" => Query::Posture,
            "findings" => findings_filter(arg)?,
            other => return Err(StoreError::BadArgument(format!("unknown query {other:?}"))),
        })
    }

    /// [`Query::parse`], answering one page of the verbs that page (`trace`, `run`,
    /// `static-credentials`); a
    /// page asked of another verb is refused rather than ignored.
    pub fn parse_paged(name: &str, arg: &str, page: Page) -> Result<Self, StoreError> {
        Ok(match Self::parse(name, arg)? {
            Query::Trace(id, _) => Query::Trace(id, page),
            Query::Run(id, _) => Query::Run(id, page),
            Query::StaticCredentials(_) => Query::StaticCredentials(page),
            _ if !page.is_default() => {
                return Err(StoreError::BadArgument(format!("{name} answers in one piece: --limit and --after are for trace, run and static-credentials")));
            }
            q => q,
        })
    }
}

/// `findings` takes `kind=<kind>&since=<RFC 3339 or Unix seconds>`, both optional.
fn findings_filter(arg: &str) -> Result<Query, StoreError> {
    let (mut kind, mut since) = (None, None);
    for part in arg.split('&').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("kind", k)) => {
                if !crate::findings::KIND_NAMES.contains(&k) {
                    return Err(StoreError::BadArgument(format!("unknown finding kind {k:?} ({})", crate::findings::KIND_NAMES.join(", "))));
                }
                kind = Some(k.to_owned());
            }
            Some(("since", t)) => {
                let parsed = t.parse::<i64>().ok().or_else(|| crate::cloud::parse_rfc3339(t));
                since = Some(parsed.ok_or_else(|| StoreError::BadArgument(format!("since {t:?} is neither RFC 3339 nor Unix seconds")))?);
            }
            _ => return Err(StoreError::BadArgument(format!("findings filter {part:?}: expected kind=<kind> or since=<time>"))),
        }
    }
    Ok(Query::Findings { kind, since })
}

pub trait Store: Send + Sync {
    /// Stores a batch; what it may make attributable is queued for [`Store::correlate`].
    fn ingest_events(&self, node: &str, events: &[AgentEvent]) -> Result<IngestOutcome, StoreError>;
    /// Stores a batch and links what it made attributable: in the batch's own transaction
    /// where the backend can, else one after the other.
    /// Takes the batch by value: a backend may hand it to the writer of a group commit.
    fn ingest_and_correlate(&self, node: String, events: Vec<AgentEvent>) -> Result<(IngestOutcome, Vec<crate::correlate::NewLink>), StoreError> {
        let out = self.ingest_events(&node, &events)?;
        let links = if out.stored > 0 { self.correlate()? } else { Vec::new() };
        Ok((out, links))
    }
    fn ingest_cloud(&self, actions: &[CloudAction]) -> Result<IngestOutcome, StoreError>;
    /// Links unattributed cloud actions to runs; returns the links created.
    fn correlate(&self) -> Result<Vec<crate::correlate::NewLink>, StoreError>;
    fn query(&self, q: &Query) -> Result<Value, StoreError>;
    /// Aggregates for metrics: events by kind, cloud actions by provider, links by
    /// reason, agents seen recently, and the posture figures.
    fn metrics(&self) -> Result<Value, StoreError>;
    /// Deletes what is older than `before` (unix seconds); returns rows deleted.
    fn retain(&self, before: i64) -> Result<usize, StoreError>;
    /// Checks every aggregate table against the same figures computed from scratch from
    /// the rows they summarise.
    fn verify_aggregates(&self) -> Result<(), StoreError>;
}

/// Opens the store `db` names: a `postgres://` URL, else the path of the SQLite file.
pub fn open(db: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(if postgres::is_url(db) {
        std::sync::Arc::new(postgres::PostgresStore::connect(db)?)
    } else {
        std::sync::Arc::new(sqlite::SqliteStore::open(std::path::Path::new(db))?)
    })
}
