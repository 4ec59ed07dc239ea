-- Sigil collector schema, version 4 (SQLite).
--
-- One copy of each fact: repeated strings (paths, digests, exec ids, fingerprints, event
-- streams) live once in `strings` and rows refer to them by id; runs are numbered. Every
-- agent row is keyed by the node that sent it (the authenticated node), so no node can
-- shadow another's rows: events are unique on (node, event id), processes on (node, exec
-- id), issuances on (node, jti). Re-ingesting anything is a no-op.

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS strings (id INTEGER PRIMARY KEY, s TEXT NOT NULL UNIQUE);

CREATE TABLE IF NOT EXISTS nodes (
    node_id INTEGER PRIMARY KEY, node TEXT NOT NULL UNIQUE,
    first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, last_stats TEXT);

-- The high-volume tables (events, processes, credential_uses) have no index on time:
-- each index costs every insert, and retention is a periodic scan.

-- Every agent event once per node. The agent's id `<stream>-<seq>` is split so the
-- stream is interned; `kind` is the contract's kind id. Inserting the key is the
-- duplicate check.
CREATE TABLE IF NOT EXISTS events (
    node_id INTEGER NOT NULL, stream INTEGER NOT NULL, seq INTEGER NOT NULL,
    kind INTEGER NOT NULL, time INTEGER NOT NULL, received INTEGER NOT NULL,
    PRIMARY KEY (node_id, stream, seq)) WITHOUT ROWID;

-- Counts by kind, maintained per batch (metrics read these instead of scanning).
CREATE TABLE IF NOT EXISTS event_counts (kind INTEGER PRIMARY KEY, n INTEGER NOT NULL);

-- A workload run: one container instance, pod, systemd unit or plain cgroup on a node.
-- `live`: processes seen exec'ing and not yet exiting (the run ends when it drops to 0).
CREATE TABLE IF NOT EXISTS runs (
    rid INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, node TEXT NOT NULL, kind TEXT NOT NULL,
    pod_uid TEXT, container_id TEXT, unit TEXT, cgroup_path TEXT,
    started INTEGER NOT NULL, last_seen INTEGER NOT NULL, ended INTEGER, live INTEGER NOT NULL DEFAULT 0,
    -- Its processes and distinct binaries, kept per batch (a run's summary must not count
    -- a busy run's thousands of processes on every answer). Added after version 4
    -- shipped: `SqliteStore::open` adds and fills them in older files.
    processes INTEGER NOT NULL DEFAULT 0, binaries INTEGER NOT NULL DEFAULT 0);
-- The distinct binaries (interned paths) of each run: what `runs.binaries` counts.
CREATE TABLE IF NOT EXISTS run_binaries (
    rid INTEGER NOT NULL, binary_path INTEGER NOT NULL, PRIMARY KEY (rid, binary_path)) WITHOUT ROWID;

-- String columns hold `strings.id`.
CREATE TABLE IF NOT EXISTS processes (
    node_id INTEGER NOT NULL, exec_id TEXT NOT NULL, process_id TEXT NOT NULL, rid INTEGER NOT NULL,
    pid INTEGER NOT NULL, ppid INTEGER NOT NULL, time INTEGER NOT NULL, start_time TEXT,
    binary_path INTEGER, sha256 INTEGER, cgroup_path INTEGER, comm INTEGER, ancestry INTEGER, exit_time INTEGER,
    UNIQUE (node_id, exec_id));
-- A run's processes in time order (the binary too, so a run's distinct binaries are
-- counted from the index), and its exits (few processes have one while they run).
CREATE INDEX IF NOT EXISTS processes_run ON processes (rid, time, binary_path);
CREATE INDEX IF NOT EXISTS processes_exit ON processes (rid, exit_time) WHERE exit_time IS NOT NULL;

CREATE TABLE IF NOT EXISTS token_issuances (
    node_id INTEGER NOT NULL, jti TEXT NOT NULL, stream INTEGER NOT NULL, seq INTEGER NOT NULL, time INTEGER NOT NULL,
    spiffe_id TEXT NOT NULL, audience TEXT NOT NULL, issuer INTEGER, issued_at INTEGER, expires_at INTEGER,
    ttl INTEGER, exec_id INTEGER, rid INTEGER,
    UNIQUE (node_id, jti));
CREATE INDEX IF NOT EXISTS issuances_jti ON token_issuances (jti);
CREATE INDEX IF NOT EXISTS issuances_sub ON token_issuances (spiffe_id, issued_at);
CREATE INDEX IF NOT EXISTS issuances_run ON token_issuances (rid);
CREATE INDEX IF NOT EXISTS issuances_time ON token_issuances (time);

CREATE TABLE IF NOT EXISTS token_denials (
    node_id INTEGER NOT NULL, time INTEGER NOT NULL, reason TEXT NOT NULL,
    detail TEXT, spiffe_id TEXT, exec_id INTEGER, rid INTEGER);
CREATE INDEX IF NOT EXISTS denials_run ON token_denials (rid);
CREATE INDEX IF NOT EXISTS denials_time ON token_denials (time);

-- What `posture` counts of issuance, kept by the triggers below wherever rows come and go
-- (ingest, retention), so no answer scans the token tables: per node, tokens issued and
-- their lifetimes (sum and count of the known ones), and denials per reason. Per node, so
-- PostgreSQL replicas writing different nodes' batches never wait on one row. Rows
-- counted down to 0 stay. `open` fills them in for a database from before them.
CREATE TABLE IF NOT EXISTS agg_tokens (node_id INTEGER PRIMARY KEY, tokens INTEGER NOT NULL, ttl_sum INTEGER NOT NULL, ttl_count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS agg_denials (node_id INTEGER NOT NULL, reason TEXT NOT NULL, denials INTEGER NOT NULL, PRIMARY KEY (node_id, reason));
CREATE TRIGGER IF NOT EXISTS agg_token_in AFTER INSERT ON token_issuances BEGIN
    INSERT OR IGNORE INTO agg_tokens (node_id, tokens, ttl_sum, ttl_count) VALUES (NEW.node_id, 0, 0, 0);
    UPDATE agg_tokens SET tokens = tokens + 1, ttl_sum = ttl_sum + coalesce(NEW.ttl, 0), ttl_count = ttl_count + (NEW.ttl IS NOT NULL)
        WHERE node_id = NEW.node_id;
END;
CREATE TRIGGER IF NOT EXISTS agg_token_out AFTER DELETE ON token_issuances BEGIN
    UPDATE agg_tokens SET tokens = tokens - 1, ttl_sum = ttl_sum - coalesce(OLD.ttl, 0), ttl_count = ttl_count - (OLD.ttl IS NOT NULL)
        WHERE node_id = OLD.node_id;
END;
CREATE TRIGGER IF NOT EXISTS agg_denial_in AFTER INSERT ON token_denials BEGIN
    INSERT OR IGNORE INTO agg_denials (node_id, reason, denials) VALUES (NEW.node_id, NEW.reason, 0);
    UPDATE agg_denials SET denials = denials + 1 WHERE node_id = NEW.node_id AND reason = NEW.reason;
END;
CREATE TRIGGER IF NOT EXISTS agg_denial_out AFTER DELETE ON token_denials BEGIN
    UPDATE agg_denials SET denials = denials - 1 WHERE node_id = OLD.node_id AND reason = OLD.reason;
END;

-- String columns (exec_id .. token_family) hold `strings.id` (detector and class their
-- JSON names). One row per event: an aggregated event (the agent folds repeated uses of
-- a credential) stands for `count` uses from `first_seen` (NULL: the event's own time)
-- to `time`, its last use.
CREATE TABLE IF NOT EXISTS credential_uses (
    node_id INTEGER NOT NULL, stream INTEGER NOT NULL, seq INTEGER NOT NULL, time INTEGER NOT NULL,
    exec_id INTEGER, rid INTEGER, dest_ip INTEGER, dest_port INTEGER, host INTEGER, method INTEGER, path INTEGER,
    detector INTEGER NOT NULL, class INTEGER NOT NULL, lifetime INTEGER, fingerprint INTEGER NOT NULL,
    access_key_id INTEGER, jwt_iss INTEGER, jwt_sub INTEGER, jwt_jti INTEGER, token_family INTEGER,
    count INTEGER NOT NULL DEFAULT 1, first_seen INTEGER);
CREATE INDEX IF NOT EXISTS uses_key ON credential_uses (access_key_id, time) WHERE access_key_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS uses_fingerprint ON credential_uses (fingerprint, class);
CREATE INDEX IF NOT EXISTS uses_run ON credential_uses (rid, time);
CREATE INDEX IF NOT EXISTS uses_jti ON credential_uses (jwt_jti) WHERE jwt_jti IS NOT NULL;
-- A run's token exchanges by time (how a trace explains a run's temporary key): only
-- uses that carry a jti have an entry, and without it the answer would walk every use
-- of the run.
CREATE INDEX IF NOT EXISTS uses_run_exchange ON credential_uses (rid, detector, time) WHERE jwt_jti IS NOT NULL;
CREATE INDEX IF NOT EXISTS uses_iss ON credential_uses (jwt_iss, time) WHERE jwt_iss IS NOT NULL;
CREATE INDEX IF NOT EXISTS uses_sub ON credential_uses (jwt_sub, time) WHERE jwt_sub IS NOT NULL;

CREATE TABLE IF NOT EXISTS credential_file_reads (
    node_id INTEGER NOT NULL, time INTEGER NOT NULL, exec_id INTEGER, rid INTEGER,
    path TEXT NOT NULL, file_kind TEXT NOT NULL, via TEXT);
CREATE INDEX IF NOT EXISTS file_reads_run ON credential_file_reads (rid);
CREATE INDEX IF NOT EXISTS file_reads_time ON credential_file_reads (time);

-- Credentials obtained in exchange responses (kind 18): identifiers and times only.
CREATE TABLE IF NOT EXISTS credential_obtained (
    node_id INTEGER NOT NULL, time INTEGER NOT NULL, exec_id INTEGER, rid INTEGER,
    exchange_kind TEXT NOT NULL, format TEXT NOT NULL, identifier TEXT, class TEXT NOT NULL,
    fingerprint TEXT NOT NULL, expires_at TEXT, principal TEXT, host TEXT, presented_jti TEXT, token_jti TEXT,
    -- The agent's event id (see events): the evidence a finding cites. Added after
    -- version 4 shipped; `SqliteStore::open` adds it to older files.
    stream INTEGER, seq INTEGER);
CREATE INDEX IF NOT EXISTS obtained_run ON credential_obtained (rid);
CREATE INDEX IF NOT EXISTS obtained_identifier ON credential_obtained (identifier) WHERE identifier IS NOT NULL;
CREATE INDEX IF NOT EXISTS obtained_time ON credential_obtained (time);

CREATE TABLE IF NOT EXISTS cloud_actions (
    id TEXT PRIMARY KEY, provider TEXT NOT NULL, time INTEGER NOT NULL, ingested INTEGER NOT NULL,
    action TEXT NOT NULL, service TEXT NOT NULL, region TEXT, principal TEXT, principal_type TEXT,
    access_key_id TEXT, source_ip TEXT, user_agent TEXT, error_code TEXT,
    issued_access_key_id TEXT, role_session_name TEXT, web_identity_subject TEXT,
    delegation TEXT, json TEXT NOT NULL,
    -- When its first link was made (NULL: not attributed); kept by the triggers below.
    linked INTEGER);
CREATE INDEX IF NOT EXISTS actions_key ON cloud_actions (access_key_id, time);
CREATE INDEX IF NOT EXISTS actions_issued ON cloud_actions (issued_access_key_id);
CREATE INDEX IF NOT EXISTS actions_time ON cloud_actions (time);
CREATE INDEX IF NOT EXISTS actions_session ON cloud_actions (role_session_name) WHERE role_session_name IS NOT NULL;
CREATE INDEX IF NOT EXISTS actions_subject ON cloud_actions (web_identity_subject) WHERE web_identity_subject IS NOT NULL;
CREATE INDEX IF NOT EXISTS actions_principal ON cloud_actions (principal) WHERE principal IS NOT NULL;

-- Why a cloud action is attributed to a run, and how sure we are.
CREATE TABLE IF NOT EXISTS links (
    cloud_action_id TEXT NOT NULL, run_id TEXT NOT NULL, exec_id TEXT, credential_use_id INTEGER,
    jti TEXT, reason TEXT NOT NULL, confidence REAL NOT NULL, created INTEGER NOT NULL,
    PRIMARY KEY (cloud_action_id, run_id, reason));
CREATE INDEX IF NOT EXISTS links_run ON links (run_id);

-- What `posture` and the metrics count of cloud actions and their links, kept by the
-- triggers below wherever rows come and go (import, correlation, retention), so no
-- answer scans `cloud_actions` or `links`: actions per provider, links per reason, and
-- per delay (seconds from an action's ingestion to its first link) how many attributed
-- actions had it, for the median time to attribute. Rows counted down to 0 stay.
CREATE TABLE IF NOT EXISTS agg_actions (provider TEXT PRIMARY KEY, actions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS agg_links (reason TEXT PRIMARY KEY, links INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS agg_delays (seconds INTEGER PRIMARY KEY, actions INTEGER NOT NULL);

CREATE TRIGGER IF NOT EXISTS agg_action_in AFTER INSERT ON cloud_actions BEGIN
    INSERT OR IGNORE INTO agg_actions (provider, actions) VALUES (NEW.provider, 0);
    UPDATE agg_actions SET actions = actions + 1 WHERE provider = NEW.provider;
END;
-- Links stored before their action (not done today, but cheap to get right).
CREATE TRIGGER IF NOT EXISTS agg_action_in_linked AFTER INSERT ON cloud_actions
    WHEN EXISTS (SELECT 1 FROM links WHERE cloud_action_id = NEW.id) BEGIN
    UPDATE cloud_actions SET linked = (SELECT min(created) FROM links WHERE cloud_action_id = NEW.id) WHERE id = NEW.id;
    INSERT OR IGNORE INTO agg_delays (seconds, actions) SELECT linked - ingested, 0 FROM cloud_actions WHERE id = NEW.id;
    UPDATE agg_delays SET actions = actions + 1 WHERE seconds = (SELECT linked - ingested FROM cloud_actions WHERE id = NEW.id);
END;
CREATE TRIGGER IF NOT EXISTS agg_action_out AFTER DELETE ON cloud_actions BEGIN
    UPDATE agg_actions SET actions = actions - 1 WHERE provider = OLD.provider;
    UPDATE agg_delays SET actions = actions - 1 WHERE seconds = OLD.linked - OLD.ingested;
END;
CREATE TRIGGER IF NOT EXISTS agg_link_in AFTER INSERT ON links BEGIN
    INSERT OR IGNORE INTO agg_links (reason, links) VALUES (NEW.reason, 0);
    UPDATE agg_links SET links = links + 1 WHERE reason = NEW.reason;
END;
-- A link earlier than the action's first: the action's delay moves (or it is new).
CREATE TRIGGER IF NOT EXISTS agg_link_first AFTER INSERT ON links
    WHEN (SELECT linked IS NULL OR linked > NEW.created FROM cloud_actions WHERE id = NEW.cloud_action_id) BEGIN
    UPDATE agg_delays SET actions = actions - 1 WHERE seconds = (SELECT linked - ingested FROM cloud_actions WHERE id = NEW.cloud_action_id);
    UPDATE cloud_actions SET linked = NEW.created WHERE id = NEW.cloud_action_id;
    INSERT OR IGNORE INTO agg_delays (seconds, actions) SELECT NEW.created - ingested, 0 FROM cloud_actions WHERE id = NEW.cloud_action_id;
    UPDATE agg_delays SET actions = actions + 1 WHERE seconds = (SELECT NEW.created - ingested FROM cloud_actions WHERE id = NEW.cloud_action_id);
END;
CREATE TRIGGER IF NOT EXISTS agg_link_out AFTER DELETE ON links BEGIN
    UPDATE agg_links SET links = links - 1 WHERE reason = OLD.reason;
END;
-- The action's first link deleted (its action still stored): the next one is its first.
CREATE TRIGGER IF NOT EXISTS agg_link_first_out AFTER DELETE ON links
    WHEN (SELECT linked = OLD.created FROM cloud_actions WHERE id = OLD.cloud_action_id) BEGIN
    UPDATE agg_delays SET actions = actions - 1 WHERE seconds = (SELECT linked - ingested FROM cloud_actions WHERE id = OLD.cloud_action_id);
    UPDATE cloud_actions SET linked = (SELECT min(created) FROM links WHERE cloud_action_id = OLD.cloud_action_id) WHERE id = OLD.cloud_action_id;
    INSERT OR IGNORE INTO agg_delays (seconds, actions) SELECT linked - ingested, 0 FROM cloud_actions WHERE id = OLD.cloud_action_id AND linked IS NOT NULL;
    UPDATE agg_delays SET actions = actions + 1 WHERE seconds = (SELECT linked - ingested FROM cloud_actions WHERE id = OLD.cloud_action_id);
END;

-- Aggregates `posture` and `static-credentials` read instead of scanning the uses, kept
-- up to date in each batch's transaction (newly stored uses only, so a replayed batch
-- counts once) and by retention. Per credential (class and fingerprint, interned ids;
-- the names are the largest seen, as SQL's max), per credential and run, per run (uses of
-- credentials other than short-lived or Sigil-issued ones in `long_uses`).
CREATE TABLE IF NOT EXISTS agg_credentials (
    id INTEGER PRIMARY KEY, class INTEGER NOT NULL, fingerprint INTEGER NOT NULL,
    detector TEXT, access_key_id TEXT, token_family TEXT,
    runs INTEGER NOT NULL DEFAULT 0, uses INTEGER NOT NULL, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,
    UNIQUE (class, fingerprint));
CREATE TABLE IF NOT EXISTS agg_credential_runs (
    cred INTEGER NOT NULL, rid INTEGER NOT NULL, uses INTEGER NOT NULL, PRIMARY KEY (cred, rid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agg_runs (rid INTEGER PRIMARY KEY, uses INTEGER NOT NULL, long_uses INTEGER NOT NULL);

-- What the next correlation pass must look at: new cloud actions, and the identifiers new
-- agent rows carry (access keys, JWT principals, jtis, SPIFFE IDs). Written in the batch's
-- transaction, drained by correlation, so a crash in between loses no candidate.
CREATE TABLE IF NOT EXISTS correlate_queue (what TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (what, value)) WITHOUT ROWID;

-- The old column shapes, with strings resolved, for the queries.
CREATE VIEW IF NOT EXISTS processes_v AS
    SELECT p.rowid AS row, p.node_id, p.exec_id, p.process_id, p.rid, r.run_id, p.pid, p.ppid, p.time, p.start_time, p.exit_time,
           b.s AS binary_path, h.s AS sha256, c.s AS cgroup_path, m.s AS comm, a.s AS ancestry
    FROM processes p JOIN runs r ON r.rid = p.rid
    LEFT JOIN strings b ON b.id = p.binary_path LEFT JOIN strings h ON h.id = p.sha256
    LEFT JOIN strings c ON c.id = p.cgroup_path LEFT JOIN strings m ON m.id = p.comm LEFT JOIN strings a ON a.id = p.ancestry;

CREATE VIEW IF NOT EXISTS credential_uses_v AS
    SELECT u.rowid AS row, u.node_id, st.s || '-' || u.seq AS event_id, u.time, x.s AS exec_id, u.rid, r.run_id,
           di.s AS dest_ip, u.dest_port, ho.s AS host, me.s AS method, pa.s AS path, de.s AS detector, cl.s AS class, u.class AS class_sid,
           u.lifetime, fp.s AS fingerprint, u.fingerprint AS fingerprint_sid, ak.s AS access_key_id, u.access_key_id AS access_key_sid,
           ji.s AS jwt_iss, u.jwt_iss AS jwt_iss_sid, js.s AS jwt_sub, u.jwt_sub AS jwt_sub_sid, jj.s AS jwt_jti, u.jwt_jti AS jwt_jti_sid, tf.s AS token_family,
           u.count, coalesce(u.first_seen, u.time) AS first_seen
    FROM credential_uses u JOIN strings st ON st.id = u.stream LEFT JOIN runs r ON r.rid = u.rid
    LEFT JOIN strings x ON x.id = u.exec_id LEFT JOIN strings di ON di.id = u.dest_ip LEFT JOIN strings ho ON ho.id = u.host
    LEFT JOIN strings me ON me.id = u.method LEFT JOIN strings pa ON pa.id = u.path LEFT JOIN strings fp ON fp.id = u.fingerprint
    LEFT JOIN strings ak ON ak.id = u.access_key_id LEFT JOIN strings ji ON ji.id = u.jwt_iss LEFT JOIN strings js ON js.id = u.jwt_sub
    LEFT JOIN strings jj ON jj.id = u.jwt_jti LEFT JOIN strings tf ON tf.id = u.token_family
    LEFT JOIN strings de ON de.id = u.detector LEFT JOIN strings cl ON cl.id = u.class;

CREATE VIEW IF NOT EXISTS token_issuances_v AS
    SELECT t.rowid AS row, t.node_id, t.jti, st.s || '-' || t.seq AS event_id, t.time, t.spiffe_id, t.audience, i.s AS issuer, t.issued_at, t.expires_at,
           t.ttl, x.s AS exec_id, t.rid, r.run_id
    FROM token_issuances t JOIN strings st ON st.id = t.stream LEFT JOIN strings i ON i.id = t.issuer
    LEFT JOIN strings x ON x.id = t.exec_id LEFT JOIN runs r ON r.rid = t.rid;

CREATE VIEW IF NOT EXISTS token_denials_v AS
    SELECT d.rowid AS row, d.time, d.reason, d.detail, d.spiffe_id, x.s AS exec_id, d.rid, r.run_id
    FROM token_denials d LEFT JOIN strings x ON x.id = d.exec_id LEFT JOIN runs r ON r.rid = d.rid;

CREATE VIEW IF NOT EXISTS credential_obtained_v AS
    SELECT o.rowid AS row, o.time, o.exchange_kind, o.format, o.identifier, o.class, o.fingerprint, o.expires_at, o.principal, o.host,
           o.presented_jti, o.token_jti, x.s AS exec_id, o.rid, r.run_id
    FROM credential_obtained o LEFT JOIN strings x ON x.id = o.exec_id LEFT JOIN runs r ON r.rid = o.rid;

-- credential_file_reads_v is created by the store after its upgrades (it names `via`,
-- a column older stores gain then): sqlite/mod.rs, FILE_READS_VIEW.

-- Misuse findings (collector/src/findings.rs): one row per finding kind, subject and
-- runs (the id digests them); later evidence widens the times and grows the JSON.
CREATE TABLE IF NOT EXISTS findings (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL,
    first_time INTEGER NOT NULL, last_time INTEGER NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS findings_last ON findings (last_time);
CREATE INDEX IF NOT EXISTS findings_kind ON findings (kind, last_time);

-- What the finding rules remember between batches: a long-lived credential's first use
-- per (fingerprint, workload, run), a run's first read of each credential file.
CREATE TABLE IF NOT EXISTS finding_facts (
    fact TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL, run_id TEXT NOT NULL,
    node TEXT NOT NULL, exec_id TEXT, event_id TEXT NOT NULL, kind TEXT NOT NULL, time INTEGER NOT NULL,
    PRIMARY KEY (fact, subject, detail, run_id));
CREATE INDEX IF NOT EXISTS finding_facts_time ON finding_facts (fact, subject, time);
