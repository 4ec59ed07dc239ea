-- Sigil collector schema (SQLite). Every table is keyed by an id that the source already
-- makes unique (event id, jti, CloudTrail eventID), so re-ingesting anything is a no-op.

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- Every agent event as received: the source of truth the typed tables are built from.
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY, node TEXT NOT NULL, kind TEXT NOT NULL,
    time INTEGER NOT NULL, received INTEGER NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, time);

CREATE TABLE IF NOT EXISTS nodes (
    node TEXT PRIMARY KEY, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, last_stats TEXT);

-- A workload run: one container instance, pod, systemd unit or plain cgroup on a node.
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, node TEXT NOT NULL, kind TEXT NOT NULL,
    pod_uid TEXT, container_id TEXT, unit TEXT, cgroup_path TEXT,
    started INTEGER NOT NULL, last_seen INTEGER NOT NULL, ended INTEGER);

CREATE TABLE IF NOT EXISTS processes (
    exec_id TEXT PRIMARY KEY, process_id TEXT NOT NULL, run_id TEXT NOT NULL, node TEXT NOT NULL,
    pid INTEGER NOT NULL, ppid INTEGER NOT NULL, time INTEGER NOT NULL, start_time TEXT,
    binary_path TEXT, sha256 TEXT, cgroup_path TEXT, comm TEXT, exit_time INTEGER, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS processes_run ON processes (run_id, time);
CREATE INDEX IF NOT EXISTS processes_process ON processes (process_id);

CREATE TABLE IF NOT EXISTS token_issuances (
    jti TEXT PRIMARY KEY, event_id TEXT NOT NULL, node TEXT NOT NULL, time INTEGER NOT NULL,
    spiffe_id TEXT NOT NULL, audience TEXT NOT NULL, issuer TEXT, issued_at INTEGER, expires_at INTEGER,
    ttl INTEGER, exec_id TEXT, run_id TEXT);
CREATE INDEX IF NOT EXISTS issuances_sub ON token_issuances (spiffe_id, issued_at);
CREATE INDEX IF NOT EXISTS issuances_run ON token_issuances (run_id);

CREATE TABLE IF NOT EXISTS token_denials (
    event_id TEXT PRIMARY KEY, node TEXT NOT NULL, time INTEGER NOT NULL, reason TEXT NOT NULL,
    detail TEXT, spiffe_id TEXT, exec_id TEXT, run_id TEXT);
CREATE INDEX IF NOT EXISTS denials_run ON token_denials (run_id);

CREATE TABLE IF NOT EXISTS credential_uses (
    event_id TEXT PRIMARY KEY, node TEXT NOT NULL, time INTEGER NOT NULL, exec_id TEXT, run_id TEXT,
    dest_ip TEXT, dest_port INTEGER, host TEXT, method TEXT, path TEXT,
    detector TEXT NOT NULL, class TEXT NOT NULL, lifetime INTEGER, fingerprint TEXT NOT NULL,
    access_key_id TEXT, jwt_iss TEXT, jwt_sub TEXT, jwt_jti TEXT, token_family TEXT);
CREATE INDEX IF NOT EXISTS uses_key ON credential_uses (access_key_id, time);
CREATE INDEX IF NOT EXISTS uses_fingerprint ON credential_uses (fingerprint);
CREATE INDEX IF NOT EXISTS uses_run ON credential_uses (run_id, time);
CREATE INDEX IF NOT EXISTS uses_jti ON credential_uses (jwt_jti);
CREATE INDEX IF NOT EXISTS uses_sub ON credential_uses (jwt_sub, time);

CREATE TABLE IF NOT EXISTS credential_file_reads (
    event_id TEXT PRIMARY KEY, node TEXT NOT NULL, time INTEGER NOT NULL, exec_id TEXT, run_id TEXT,
    path TEXT NOT NULL, file_kind TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS file_reads_run ON credential_file_reads (run_id);

CREATE TABLE IF NOT EXISTS cloud_actions (
    id TEXT PRIMARY KEY, provider TEXT NOT NULL, time INTEGER NOT NULL, ingested INTEGER NOT NULL,
    action TEXT NOT NULL, service TEXT NOT NULL, region TEXT, principal TEXT, principal_type TEXT,
    access_key_id TEXT, source_ip TEXT, user_agent TEXT, error_code TEXT,
    issued_access_key_id TEXT, role_session_name TEXT, web_identity_subject TEXT,
    delegation TEXT, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS actions_key ON cloud_actions (access_key_id, time);
CREATE INDEX IF NOT EXISTS actions_issued ON cloud_actions (issued_access_key_id);
CREATE INDEX IF NOT EXISTS actions_time ON cloud_actions (time);

-- Why a cloud action is attributed to a run, and how sure we are.
CREATE TABLE IF NOT EXISTS links (
    cloud_action_id TEXT NOT NULL, run_id TEXT NOT NULL, exec_id TEXT, credential_use_id TEXT,
    jti TEXT, reason TEXT NOT NULL, confidence REAL NOT NULL, created INTEGER NOT NULL,
    PRIMARY KEY (cloud_action_id, run_id, reason));
CREATE INDEX IF NOT EXISTS links_run ON links (run_id);
