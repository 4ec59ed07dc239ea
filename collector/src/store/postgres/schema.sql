-- Sigil collector schema, version 4 (PostgreSQL): the SQLite layout's facts, for several
-- collector replicas sharing one database.
--
-- Every agent row is keyed by the node that sent it: events are unique on (node, event
-- id), processes on (node, exec id), issuances on (node, jti). The high-volume tables
-- (`events`, `credential_uses`) are range-partitioned by day of event time, so retention
-- drops whole partitions. A partitioned table's unique key must contain the partition
-- key: an event's time comes from its body, so a resent event has the same time and the
-- same key. Agent statistics (timed by arrival) are keyed in `stats_events` instead.
-- Cloud actions are retained by ingestion time: audit logs a responder imports for an
-- investigation are evidence, however old their records.

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS nodes (
    node_id BIGSERIAL PRIMARY KEY, node TEXT NOT NULL UNIQUE,
    first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, last_stats TEXT);

CREATE TABLE IF NOT EXISTS events (
    node_id BIGINT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL,
    kind INTEGER NOT NULL, time BIGINT NOT NULL, received BIGINT NOT NULL,
    PRIMARY KEY (node_id, stream, seq, time)) PARTITION BY RANGE (time);

CREATE TABLE IF NOT EXISTS stats_events (
    node_id BIGINT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, received BIGINT NOT NULL,
    PRIMARY KEY (node_id, stream, seq));
CREATE INDEX IF NOT EXISTS stats_events_received ON stats_events (received);

CREATE TABLE IF NOT EXISTS event_counts (kind INTEGER PRIMARY KEY, n BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS runs (
    rid BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, node TEXT NOT NULL, kind TEXT NOT NULL,
    pod_uid TEXT, container_id TEXT, unit TEXT, cgroup_path TEXT,
    started BIGINT NOT NULL, last_seen BIGINT NOT NULL, ended BIGINT, live BIGINT NOT NULL DEFAULT 0);
-- Its processes and distinct binaries, kept per batch (a run's summary must not count a
-- busy run's thousands of processes on every answer). Added after version 4 shipped:
-- `PostgresStore::connect` fills them in for older databases.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS processes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS binaries BIGINT NOT NULL DEFAULT 0;
-- The distinct binaries of each run: what `runs.binaries` counts.
CREATE TABLE IF NOT EXISTS run_binaries (rid BIGINT NOT NULL, binary_path TEXT NOT NULL, PRIMARY KEY (rid, binary_path));

CREATE TABLE IF NOT EXISTS processes (
    node_id BIGINT NOT NULL, exec_id TEXT NOT NULL, process_id TEXT NOT NULL, rid BIGINT NOT NULL, event_id TEXT NOT NULL,
    pid BIGINT NOT NULL, ppid BIGINT NOT NULL, time BIGINT NOT NULL, start_time TEXT,
    binary_path TEXT, sha256 TEXT, cgroup_path TEXT, comm TEXT, ancestry TEXT, exit_time BIGINT,
    row BIGSERIAL, UNIQUE (node_id, exec_id));
-- `row` (here and in the tables below) orders rows of one second in a run's timeline,
-- as SQLite's rowid does: a run's processes in (time, row) order, and its exits.
CREATE INDEX IF NOT EXISTS processes_run ON processes (rid, time, row);
CREATE INDEX IF NOT EXISTS processes_exit ON processes (rid, exit_time, row) WHERE exit_time IS NOT NULL;
CREATE INDEX IF NOT EXISTS processes_time ON processes (time);

CREATE TABLE IF NOT EXISTS token_issuances (
    node_id BIGINT NOT NULL, jti TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, time BIGINT NOT NULL,
    spiffe_id TEXT NOT NULL, audience TEXT NOT NULL, issuer TEXT, issued_at BIGINT, expires_at BIGINT,
    ttl BIGINT, exec_id TEXT, rid BIGINT, row BIGSERIAL,
    UNIQUE (node_id, jti));
CREATE INDEX IF NOT EXISTS issuances_jti ON token_issuances (jti);
CREATE INDEX IF NOT EXISTS issuances_sub ON token_issuances (spiffe_id, issued_at);
CREATE INDEX IF NOT EXISTS issuances_run ON token_issuances (rid);
CREATE INDEX IF NOT EXISTS issuances_time ON token_issuances (time);

CREATE TABLE IF NOT EXISTS token_denials (
    node_id BIGINT NOT NULL, time BIGINT NOT NULL, reason TEXT NOT NULL,
    detail TEXT, spiffe_id TEXT, exec_id TEXT, rid BIGINT, row BIGSERIAL);
CREATE INDEX IF NOT EXISTS denials_run ON token_denials (rid);
CREATE INDEX IF NOT EXISTS denials_time ON token_denials (time);

-- What `posture` counts of issuance, kept by the triggers below wherever rows come and go
-- (ingest, retention), so no answer scans the token tables: per node, tokens issued and
-- their lifetimes (sum and count of the known ones), and denials per reason. Per node, so
-- replicas writing different nodes' batches never wait on one row. Rows counted down to
-- 0 stay. `PostgresStore::connect` fills them in for a database from before them.
CREATE TABLE IF NOT EXISTS agg_tokens (node_id BIGINT PRIMARY KEY, tokens BIGINT NOT NULL, ttl_sum BIGINT NOT NULL, ttl_count BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS agg_denials (node_id BIGINT NOT NULL, reason TEXT NOT NULL, denials BIGINT NOT NULL, PRIMARY KEY (node_id, reason));
CREATE OR REPLACE FUNCTION agg_token_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO agg_tokens (node_id, tokens, ttl_sum, ttl_count) VALUES (NEW.node_id, 1, coalesce(NEW.ttl, 0), (NEW.ttl IS NOT NULL)::int)
        ON CONFLICT (node_id) DO UPDATE SET tokens = agg_tokens.tokens + 1, ttl_sum = agg_tokens.ttl_sum + EXCLUDED.ttl_sum,
            ttl_count = agg_tokens.ttl_count + EXCLUDED.ttl_count;
        RETURN NEW;
    END IF;
    UPDATE agg_tokens SET tokens = tokens - 1, ttl_sum = ttl_sum - coalesce(OLD.ttl, 0), ttl_count = ttl_count - (OLD.ttl IS NOT NULL)::int
        WHERE node_id = OLD.node_id;
    RETURN OLD;
END $$;
CREATE OR REPLACE TRIGGER agg_token AFTER INSERT OR DELETE ON token_issuances FOR EACH ROW EXECUTE FUNCTION agg_token_changed();
CREATE OR REPLACE FUNCTION agg_denial_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO agg_denials (node_id, reason, denials) VALUES (NEW.node_id, NEW.reason, 1)
        ON CONFLICT (node_id, reason) DO UPDATE SET denials = agg_denials.denials + 1;
        RETURN NEW;
    END IF;
    UPDATE agg_denials SET denials = denials - 1 WHERE node_id = OLD.node_id AND reason = OLD.reason;
    RETURN OLD;
END $$;
CREATE OR REPLACE TRIGGER agg_denial AFTER INSERT OR DELETE ON token_denials FOR EACH ROW EXECUTE FUNCTION agg_denial_changed();

CREATE TABLE IF NOT EXISTS credential_uses (
    row BIGSERIAL, node_id BIGINT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, time BIGINT NOT NULL,
    exec_id TEXT, rid BIGINT, dest_ip TEXT, dest_port BIGINT, host TEXT, method TEXT, path TEXT,
    detector TEXT NOT NULL, class TEXT NOT NULL, lifetime BIGINT, fingerprint TEXT NOT NULL,
    access_key_id TEXT, jwt_iss TEXT, jwt_sub TEXT, jwt_jti TEXT, token_family TEXT,
    count BIGINT NOT NULL DEFAULT 1, first_seen BIGINT) PARTITION BY RANGE (time);
CREATE INDEX IF NOT EXISTS uses_row ON credential_uses (row);
CREATE INDEX IF NOT EXISTS uses_key ON credential_uses (access_key_id, time) WHERE access_key_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS uses_fingerprint ON credential_uses (fingerprint, class);
CREATE INDEX IF NOT EXISTS uses_run ON credential_uses (rid, time, row);
CREATE INDEX IF NOT EXISTS uses_jti ON credential_uses (jwt_jti) WHERE jwt_jti IS NOT NULL;
-- A run's token exchanges by time (how a trace explains a run's temporary key): without
-- it the answer would walk every use of the run.
CREATE INDEX IF NOT EXISTS uses_run_exchange ON credential_uses (rid, time) WHERE detector = 'token_exchange' AND jwt_jti IS NOT NULL;
CREATE INDEX IF NOT EXISTS uses_iss ON credential_uses (jwt_iss, time) WHERE jwt_iss IS NOT NULL;
CREATE INDEX IF NOT EXISTS uses_sub ON credential_uses (jwt_sub, time) WHERE jwt_sub IS NOT NULL;

-- Aggregates `posture` and `static-credentials` read instead of scanning the uses (the
-- SQLite schema's, with names as text): kept in each batch's transaction from the uses
-- it newly stored, rebuilt for the keys of partitions retention drops.
CREATE TABLE IF NOT EXISTS agg_credentials (
    id BIGSERIAL PRIMARY KEY, class TEXT NOT NULL, fingerprint TEXT NOT NULL, detector TEXT, access_key_id TEXT, token_family TEXT,
    runs BIGINT NOT NULL DEFAULT 0, uses BIGINT NOT NULL, first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL,
    UNIQUE (class, fingerprint));
CREATE TABLE IF NOT EXISTS agg_credential_runs (cred BIGINT NOT NULL, rid BIGINT NOT NULL, uses BIGINT NOT NULL, PRIMARY KEY (cred, rid));
CREATE TABLE IF NOT EXISTS agg_runs (rid BIGINT PRIMARY KEY, uses BIGINT NOT NULL, long_uses BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS credential_file_reads (
    node_id BIGINT NOT NULL, time BIGINT NOT NULL, exec_id TEXT, rid BIGINT,
    path TEXT NOT NULL, file_kind TEXT NOT NULL, row BIGSERIAL);
-- How the file was opened (`io_uring`; NULL for an open system call): added after version 4.
ALTER TABLE credential_file_reads ADD COLUMN IF NOT EXISTS via TEXT;
CREATE INDEX IF NOT EXISTS file_reads_run ON credential_file_reads (rid);
CREATE INDEX IF NOT EXISTS file_reads_time ON credential_file_reads (time);

-- Credentials obtained in exchange responses (kind 18): identifiers and times only.
CREATE TABLE IF NOT EXISTS credential_obtained (
    node_id BIGINT NOT NULL, time BIGINT NOT NULL, exec_id TEXT, rid BIGINT,
    exchange_kind TEXT NOT NULL, format TEXT NOT NULL, identifier TEXT, class TEXT NOT NULL,
    fingerprint TEXT NOT NULL, expires_at TEXT, principal TEXT, host TEXT, presented_jti TEXT, token_jti TEXT, row BIGSERIAL);
-- The agent's event id: the evidence a finding cites (added after version 4 shipped).
ALTER TABLE credential_obtained ADD COLUMN IF NOT EXISTS stream TEXT;
CREATE INDEX IF NOT EXISTS obtained_run ON credential_obtained (rid);
CREATE INDEX IF NOT EXISTS obtained_identifier ON credential_obtained (identifier) WHERE identifier IS NOT NULL;
CREATE INDEX IF NOT EXISTS obtained_time ON credential_obtained (time);

CREATE TABLE IF NOT EXISTS cloud_actions (
    id TEXT PRIMARY KEY, provider TEXT NOT NULL, time BIGINT NOT NULL, ingested BIGINT NOT NULL,
    action TEXT NOT NULL, service TEXT NOT NULL, region TEXT, principal TEXT, principal_type TEXT,
    access_key_id TEXT, source_ip TEXT, user_agent TEXT, error_code TEXT,
    issued_access_key_id TEXT, role_session_name TEXT, web_identity_subject TEXT,
    delegation TEXT, json TEXT NOT NULL,
    -- When its first link was made (NULL: not attributed); kept by the triggers below.
    linked BIGINT);
CREATE INDEX IF NOT EXISTS actions_key ON cloud_actions (access_key_id, time);
CREATE INDEX IF NOT EXISTS actions_issued ON cloud_actions (issued_access_key_id);
CREATE INDEX IF NOT EXISTS actions_time ON cloud_actions (time);
CREATE INDEX IF NOT EXISTS actions_ingested ON cloud_actions (ingested);
CREATE INDEX IF NOT EXISTS actions_session ON cloud_actions (role_session_name) WHERE role_session_name IS NOT NULL;
CREATE INDEX IF NOT EXISTS actions_subject ON cloud_actions (web_identity_subject) WHERE web_identity_subject IS NOT NULL;
CREATE INDEX IF NOT EXISTS actions_principal ON cloud_actions (principal) WHERE principal IS NOT NULL;

CREATE TABLE IF NOT EXISTS links (
    cloud_action_id TEXT NOT NULL, run_id TEXT NOT NULL, exec_id TEXT, credential_use_id BIGINT,
    jti TEXT, reason TEXT NOT NULL, confidence DOUBLE PRECISION NOT NULL, created BIGINT NOT NULL, row BIGSERIAL,
    PRIMARY KEY (cloud_action_id, run_id, reason));
CREATE INDEX IF NOT EXISTS links_run ON links (run_id);

-- What `posture` and the metrics count of cloud actions and their links (the SQLite
-- schema's tables), kept by the triggers below wherever rows come and go (import,
-- correlation, retention): actions per provider, links per reason, and per delay
-- (seconds from an action's ingestion to its first link) how many attributed actions
-- had it. Rows counted down to 0 stay.
CREATE TABLE IF NOT EXISTS agg_actions (provider TEXT PRIMARY KEY, actions BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS agg_links (reason TEXT PRIMARY KEY, links BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS agg_delays (seconds BIGINT PRIMARY KEY, actions BIGINT NOT NULL);

CREATE OR REPLACE FUNCTION agg_delay(secs BIGINT, n BIGINT) RETURNS void LANGUAGE sql AS $$
    INSERT INTO agg_delays (seconds, actions) VALUES (secs, n)
    ON CONFLICT (seconds) DO UPDATE SET actions = agg_delays.actions + EXCLUDED.actions $$;

-- Lock order, so replicas never deadlock on these rows: an action's provider row, then
-- (transaction advisory lock 5334810) the delay and reason rows, which only holders of
-- that lock touch (correlation and retention, briefly).
CREATE OR REPLACE FUNCTION agg_action_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE first_link BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO agg_actions (provider, actions) VALUES (NEW.provider, 1)
        ON CONFLICT (provider) DO UPDATE SET actions = agg_actions.actions + 1;
        -- Links stored before their action (not done today, but cheap to get right).
        SELECT min(created) INTO first_link FROM links WHERE cloud_action_id = NEW.id;
        IF first_link IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(5334810);
            UPDATE cloud_actions SET linked = first_link WHERE id = NEW.id;
            PERFORM agg_delay(first_link - NEW.ingested, 1);
        END IF;
        RETURN NEW;
    END IF;
    UPDATE agg_actions SET actions = actions - 1 WHERE provider = OLD.provider;
    IF OLD.linked IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(5334810);
        PERFORM agg_delay(OLD.linked - OLD.ingested, -1);
    END IF;
    RETURN OLD;
END $$;
CREATE OR REPLACE TRIGGER agg_action AFTER INSERT OR DELETE ON cloud_actions FOR EACH ROW EXECUTE FUNCTION agg_action_changed();

CREATE OR REPLACE FUNCTION agg_link_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE a RECORD; first_link BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(5334810);
    IF TG_OP = 'INSERT' THEN
        INSERT INTO agg_links (reason, links) VALUES (NEW.reason, 1)
        ON CONFLICT (reason) DO UPDATE SET links = agg_links.links + 1;
        SELECT ingested, linked INTO a FROM cloud_actions WHERE id = NEW.cloud_action_id;
        -- A link earlier than the action's first: the action's delay moves (or it is new).
        IF FOUND AND (a.linked IS NULL OR a.linked > NEW.created) THEN
            IF a.linked IS NOT NULL THEN
                PERFORM agg_delay(a.linked - a.ingested, -1);
            END IF;
            UPDATE cloud_actions SET linked = NEW.created WHERE id = NEW.cloud_action_id;
            PERFORM agg_delay(NEW.created - a.ingested, 1);
        END IF;
        RETURN NEW;
    END IF;
    UPDATE agg_links SET links = links - 1 WHERE reason = OLD.reason;
    SELECT ingested, linked INTO a FROM cloud_actions WHERE id = OLD.cloud_action_id;
    -- The action's first link deleted (its action still stored): the next one is its first.
    IF FOUND AND a.linked = OLD.created THEN
        SELECT min(created) INTO first_link FROM links WHERE cloud_action_id = OLD.cloud_action_id;
        IF first_link IS DISTINCT FROM a.linked THEN
            PERFORM agg_delay(a.linked - a.ingested, -1);
            UPDATE cloud_actions SET linked = first_link WHERE id = OLD.cloud_action_id;
            IF first_link IS NOT NULL THEN
                PERFORM agg_delay(first_link - a.ingested, 1);
            END IF;
        END IF;
    END IF;
    RETURN OLD;
END $$;
CREATE OR REPLACE TRIGGER agg_link AFTER INSERT OR DELETE ON links FOR EACH ROW EXECUTE FUNCTION agg_link_changed();

CREATE TABLE IF NOT EXISTS correlate_queue (what TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (what, value));

-- Misuse findings (collector/src/findings.rs): one row per finding kind, subject and
-- runs (the id digests them); later evidence widens the times and grows the JSON.
CREATE TABLE IF NOT EXISTS findings (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL,
    first_time BIGINT NOT NULL, last_time BIGINT NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS findings_last ON findings (last_time);
CREATE INDEX IF NOT EXISTS findings_kind ON findings (kind, last_time);

-- What the finding rules remember between batches: a long-lived credential's first use
-- per (fingerprint, workload, run), a run's first read of each credential file.
CREATE TABLE IF NOT EXISTS finding_facts (
    fact TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL, run_id TEXT NOT NULL,
    node TEXT NOT NULL, exec_id TEXT, event_id TEXT NOT NULL, kind TEXT NOT NULL, time BIGINT NOT NULL,
    PRIMARY KEY (fact, subject, detail, run_id));
CREATE INDEX IF NOT EXISTS finding_facts_time ON finding_facts (fact, subject, time);

-- The same view names and columns as the SQLite schema, for the queries.
CREATE OR REPLACE VIEW processes_v AS
    SELECT p.node_id, p.exec_id, p.process_id, p.rid, r.run_id, p.pid, p.ppid, p.time, p.start_time, p.exit_time,
           p.binary_path, p.sha256, p.cgroup_path, p.comm, p.ancestry, p.row
    FROM processes p JOIN runs r ON r.rid = p.rid;

CREATE OR REPLACE VIEW credential_uses_v AS
    SELECT u.row, u.node_id, u.stream AS event_id, u.time, u.exec_id, u.rid, r.run_id,
           u.dest_ip, u.dest_port, u.host, u.method, u.path, u.detector, u.class, u.lifetime, u.fingerprint, u.access_key_id,
           u.jwt_iss, u.jwt_sub, u.jwt_jti, u.token_family, u.count, coalesce(u.first_seen, u.time) AS first_seen
    FROM credential_uses u LEFT JOIN runs r ON r.rid = u.rid;

CREATE OR REPLACE VIEW token_issuances_v AS
    SELECT t.node_id, t.jti, t.stream AS event_id, t.time, t.spiffe_id, t.audience, t.issuer, t.issued_at, t.expires_at,
           t.ttl, t.exec_id, t.rid, r.run_id, t.row
    FROM token_issuances t LEFT JOIN runs r ON r.rid = t.rid;

CREATE OR REPLACE VIEW token_denials_v AS
    SELECT d.time, d.reason, d.detail, d.spiffe_id, d.exec_id, d.rid, r.run_id, d.row
    FROM token_denials d LEFT JOIN runs r ON r.rid = d.rid;

CREATE OR REPLACE VIEW credential_obtained_v AS
    SELECT o.time, o.exchange_kind, o.format, o.identifier, o.class, o.fingerprint, o.expires_at, o.principal, o.host,
           o.presented_jti, o.token_jti, o.exec_id, o.rid, r.run_id, o.row
    FROM credential_obtained o LEFT JOIN runs r ON r.rid = o.rid;

CREATE OR REPLACE VIEW credential_file_reads_v AS
    SELECT f.time, f.path, f.file_kind, f.exec_id, f.rid, r.run_id, f.row, f.via
    FROM credential_file_reads f LEFT JOIN runs r ON r.rid = f.rid;
