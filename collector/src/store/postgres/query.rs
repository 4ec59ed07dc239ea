//! The facts the answers are built from ([`crate::store::answer`]), in PostgreSQL's SQL:
//! the views of schema.sql give rows the SQLite views' column names; `posture` and
//! `static-credentials` read the aggregate tables ingest keeps (see
//! [`super::aggregates`]), never the uses.

use postgres::{
    Row, Transaction,
    types::{ToSql, Type},
};
use serde_json::{Map, Value, json};

use crate::store::{
    StoreError,
    answer::{Arg, Fact, Facts, is_json_column},
};

/// Answers facts inside one transaction.
pub struct PgFacts<'a, 't>(pub &'a mut Transaction<'t>);

/// The SQL of each fact; `$1` is the first argument.
fn sql(fact: Fact) -> &'static str {
    match fact {
        Fact::Action => "SELECT id, provider, time, action, service, region, principal, principal_type, access_key_id, source_ip, user_agent, error_code, json AS raw
            FROM cloud_actions WHERE id = $1",
        Fact::Links => "SELECT run_id, exec_id, credential_use_id, jti, reason, confidence FROM links
            WHERE cloud_action_id = $1 AND ($2::int8 = 0 OR confidence < $3::float8 OR (confidence = $3::float8 AND (run_id, reason) > ($4::text, $5::text)))
            ORDER BY confidence DESC, run_id, reason LIMIT $6",
        Fact::LinkCount => "SELECT count(*) AS n FROM links
            WHERE cloud_action_id = $1 AND ($2::int8 = 0 OR confidence < $3::float8 OR (confidence = $3::float8 AND (run_id, reason) > ($4::text, $5::text)))",
        Fact::Run => "SELECT run_id, node, kind, pod_uid, container_id, unit, cgroup_path, started, last_seen, ended FROM runs WHERE run_id = $1",
        Fact::RunSummary => "SELECT r.processes, r.binaries,
                coalesce((SELECT uses FROM agg_runs WHERE rid = r.rid), 0) AS credential_uses,
                (SELECT count(DISTINCT l.cloud_action_id) FROM links l JOIN cloud_actions a ON a.id = l.cloud_action_id WHERE l.run_id = r.run_id) AS cloud_actions
            FROM runs r WHERE r.run_id = $1",
        Fact::RunSpan => "SELECT min(f) AS first, max(l) AS last FROM (
                SELECT min(time) AS f, max(time) AS l FROM processes WHERE rid = (SELECT rid FROM runs WHERE run_id = $1)
                UNION ALL SELECT NULL, max(exit_time) FROM processes WHERE rid = (SELECT rid FROM runs WHERE run_id = $1) AND exit_time IS NOT NULL
                UNION ALL SELECT min(time), max(time) FROM token_issuances WHERE rid = (SELECT rid FROM runs WHERE run_id = $1)
                UNION ALL SELECT min(time), max(time) FROM token_denials WHERE rid = (SELECT rid FROM runs WHERE run_id = $1)
                UNION ALL SELECT min(time), max(time) FROM credential_uses WHERE rid = (SELECT rid FROM runs WHERE run_id = $1)
                UNION ALL SELECT min(time), max(time) FROM credential_file_reads WHERE rid = (SELECT rid FROM runs WHERE run_id = $1)
                UNION ALL SELECT min(time), max(time) FROM credential_obtained WHERE rid = (SELECT rid FROM runs WHERE run_id = $1)
                UNION ALL SELECT min(a.time), max(a.time) FROM links l JOIN cloud_actions a ON a.id = l.cloud_action_id WHERE l.run_id = $1) x",
        Fact::Processes => "SELECT exec_id, pid, ppid, time, start_time, exit_time, binary_path, sha256, comm FROM processes_v
            WHERE rid = (SELECT rid FROM runs WHERE run_id = $1) ORDER BY time, row LIMIT $2",
        Fact::Process => "SELECT exec_id, pid, ppid, time, start_time, exit_time, binary_path, sha256, comm, ancestry FROM processes_v
            WHERE node_id IN (SELECT node_id FROM nodes) AND exec_id = $2 AND rid = (SELECT rid FROM runs WHERE run_id = $1) LIMIT 1",
        Fact::CredentialUse => "SELECT event_id, time, detector, class, lifetime, fingerprint, access_key_id, jwt_iss, jwt_sub, dest_ip, dest_port, host, method, path, exec_id, count, first_seen
            FROM credential_uses_v WHERE row = $1",
        Fact::Issuance => "SELECT jti, spiffe_id, audience, issued_at, expires_at, ttl, exec_id, run_id FROM token_issuances_v WHERE jti = $1",
        Fact::FileReads => "SELECT time, path, file_kind, via, exec_id FROM credential_file_reads_v WHERE rid = (SELECT rid FROM runs WHERE run_id = $1) ORDER BY time",
        Fact::Exchange => "SELECT event_id, time, host, dest_ip, dest_port, path, jwt_jti, exec_id FROM credential_uses_v
            WHERE rid = (SELECT rid FROM runs WHERE run_id = $1) AND detector = 'token_exchange' AND jwt_jti IS NOT NULL AND time <= $2 ORDER BY time DESC LIMIT 1",
        Fact::HandedOut => "SELECT time, exchange_kind, identifier, expires_at, principal, host, presented_jti, exec_id, run_id FROM credential_obtained_v
            WHERE identifier = $1 ORDER BY time LIMIT 1",
        Fact::UsesOf => "SELECT run_id, sum(count)::int8 AS uses, min(first_seen) AS first_seen, max(time) AS last_seen, max(detector) AS detector, max(class) AS class, fingerprint,
                max(access_key_id) AS access_key_id, string_agg(DISTINCT coalesce(host, dest_ip), ',') AS destinations, string_agg(DISTINCT exec_id, ',') AS exec_ids
            FROM credential_uses_v WHERE access_key_id = $1 OR fingerprint = $1 OR jwt_jti = $1
            GROUP BY run_id, fingerprint ORDER BY first_seen, run_id",
        Fact::ActionsOf => "SELECT a.id, a.time, a.action, a.service, a.principal, l.run_id, l.reason, l.confidence
            FROM cloud_actions a LEFT JOIN links l ON l.cloud_action_id = a.id
            WHERE a.access_key_id = $1 OR a.issued_access_key_id = $1 OR a.role_session_name = $1 ORDER BY a.time, a.id",
        Fact::RunExecs => "SELECT time, row, exec_id, pid, binary_path, sha256, exit_time FROM processes_v
            WHERE rid = (SELECT rid FROM runs WHERE run_id = $1) AND (time, row) > ($2, $3) ORDER BY time, row LIMIT $4",
        Fact::RunExits => "SELECT exit_time AS time, row, exec_id, pid FROM processes_v
            WHERE rid = (SELECT rid FROM runs WHERE run_id = $1) AND exit_time IS NOT NULL AND (exit_time, row) > ($2, $3) ORDER BY exit_time, row LIMIT $4",
        Fact::RunIssued => "SELECT time, row, jti, spiffe_id, audience, ttl, exec_id FROM token_issuances_v
            WHERE rid = (SELECT rid FROM runs WHERE run_id = $1) AND (time, row) > ($2, $3) ORDER BY time, row LIMIT $4",
        Fact::RunDenied => "SELECT time, row, reason, detail, spiffe_id, exec_id FROM token_denials_v
            WHERE rid = (SELECT rid FROM runs WHERE run_id = $1) AND (time, row) > ($2, $3) ORDER BY time, row LIMIT $4",
        Fact::RunUses => "SELECT time, row, detector, class, fingerprint, access_key_id, jwt_iss, jwt_sub, coalesce(host, dest_ip) AS destination, dest_port, method, path, exec_id, count
            FROM credential_uses_v WHERE rid = (SELECT rid FROM runs WHERE run_id = $1) AND (time, row) > ($2, $3) ORDER BY time, row LIMIT $4",
        Fact::RunFileReads => "SELECT time, row, path, file_kind, via, exec_id FROM credential_file_reads_v
            WHERE rid = (SELECT rid FROM runs WHERE run_id = $1) AND (time, row) > ($2, $3) ORDER BY time, row LIMIT $4",
        Fact::RunObtained => "SELECT time, row, exchange_kind, format, identifier, class, fingerprint, expires_at, principal, host, presented_jti, token_jti, exec_id
            FROM credential_obtained_v WHERE rid = (SELECT rid FROM runs WHERE run_id = $1) AND (time, row) > ($2, $3) ORDER BY time, row LIMIT $4",
        Fact::RunActions => "SELECT a.time, l.row, a.id, a.action, a.service, a.principal, l.reason, l.confidence
            FROM links l JOIN cloud_actions a ON a.id = l.cloud_action_id WHERE l.run_id = $1 AND (a.time, l.row) > ($2, $3) ORDER BY a.time, l.row LIMIT $4",
        Fact::RunCounts => "SELECT
                (SELECT count(*) FROM processes WHERE rid = r.rid AND (time, row) > ($2, $3)) AS \"exec\",
                (SELECT count(*) FROM processes WHERE rid = r.rid AND exit_time IS NOT NULL AND (exit_time, row) > ($2, $4)) AS \"exit\",
                (SELECT count(*) FROM token_issuances WHERE rid = r.rid AND (time, row) > ($2, $5)) AS token_issued,
                (SELECT count(*) FROM token_denials WHERE rid = r.rid AND (time, row) > ($2, $6)) AS token_denied,
                (SELECT count(*) FROM credential_uses WHERE rid = r.rid AND (time, row) > ($2, $7)) AS credential_use,
                (SELECT count(*) FROM credential_file_reads WHERE rid = r.rid AND (time, row) > ($2, $8)) AS credential_file_read,
                (SELECT count(*) FROM credential_obtained WHERE rid = r.rid AND (time, row) > ($2, $9)) AS credential_obtained,
                (SELECT count(*) FROM links l JOIN cloud_actions a ON a.id = l.cloud_action_id WHERE l.run_id = r.run_id AND (a.time, l.row) > ($2, $10)) AS cloud_action
            FROM runs r WHERE r.run_id = $1",
        Fact::StaticCredentials => "SELECT c.fingerprint, c.access_key_id, c.detector, c.token_family, c.runs, c.uses, c.first_seen, c.last_seen,
                (SELECT string_agg(r.run_id, ',' ORDER BY x.rid) FROM (SELECT cr.rid FROM agg_credential_runs cr WHERE cr.cred = c.id ORDER BY cr.rid LIMIT 20) x
                 JOIN runs r ON r.rid = x.rid) AS run_ids
            FROM agg_credentials c WHERE c.class = 'static'
              AND ($1::int8 = 0 OR c.runs < $2::int8 OR (c.runs = $2::int8 AND (c.uses < $3::int8 OR (c.uses = $3::int8 AND c.fingerprint > $4::text))))
            ORDER BY c.runs DESC, c.uses DESC, c.fingerprint LIMIT $5",
        Fact::StaticCount => "SELECT count(*) AS n FROM agg_credentials c WHERE c.class = 'static'
              AND ($1::int8 = 0 OR c.runs < $2::int8 OR (c.runs = $2::int8 AND (c.uses < $3::int8 OR (c.uses = $3::int8 AND c.fingerprint > $4::text))))",
        Fact::Unattributed => "SELECT id, provider, time, action, service, principal, access_key_id, source_ip, user_agent FROM cloud_actions a
            WHERE NOT EXISTS (SELECT 1 FROM links l WHERE l.cloud_action_id = a.id) ORDER BY time, id",
        Fact::PostureRuns => "SELECT count(*) AS runs_using_credentials, count(*) FILTER (WHERE long_uses = 0) AS runs_using_only_short_lived_credentials FROM agg_runs",
        Fact::LongLived => "SELECT fingerprint, access_key_id, runs FROM agg_credentials WHERE class = 'static' ORDER BY runs DESC, fingerprint LIMIT $1",
        Fact::Denials => "SELECT reason, sum(denials)::int8 AS count FROM agg_denials GROUP BY reason HAVING sum(denials) <> 0 ORDER BY count DESC, reason",
        Fact::Tokens => "SELECT coalesce(sum(tokens), 0)::int8 AS tokens_issued,
                CASE WHEN sum(ttl_count) > 0 THEN sum(ttl_sum)::float8 / sum(ttl_count)::float8 END AS mean_token_lifetime_seconds FROM agg_tokens",
        Fact::CloudActions => "SELECT (SELECT coalesce(sum(actions), 0)::int8 FROM agg_actions) AS cloud_actions,
            (SELECT coalesce(sum(actions), 0)::int8 FROM agg_delays) AS cloud_actions_attributed",
        Fact::Delays => "SELECT seconds AS d, actions AS n FROM agg_delays WHERE actions > 0 ORDER BY seconds",
        Fact::ActionsByProvider => "SELECT provider AS k, actions AS n FROM agg_actions WHERE actions > 0",
        Fact::LinksByReason => "SELECT reason AS k, links AS n FROM agg_links WHERE links > 0",
        Fact::Findings => "SELECT json FROM findings WHERE ($1::text = '' OR kind = $1) AND last_time >= $2 ORDER BY first_time, id",
        Fact::FindingsByKind => "SELECT kind AS k, count(*) AS n FROM findings GROUP BY kind",
        Fact::Agents => "SELECT count(*) AS n FROM nodes WHERE last_seen >= $1",
        Fact::EventsByKind => "SELECT kind::int8 AS kind, n FROM event_counts",
    }
}

/// A cell as JSON; columns holding JSON documents come back as JSON.
fn cell(r: &Row, i: usize, name: &str) -> Value {
    let ty = r.columns()[i].type_();
    if *ty == Type::INT8 {
        r.get::<_, Option<i64>>(i).map_or(Value::Null, |n| json!(n))
    } else if *ty == Type::INT4 {
        r.get::<_, Option<i32>>(i).map_or(Value::Null, |n| json!(n))
    } else if *ty == Type::FLOAT8 {
        r.get::<_, Option<f64>>(i).map_or(Value::Null, |f| json!(f))
    } else if *ty == Type::BOOL {
        r.get::<_, Option<bool>>(i).map_or(Value::Null, |b| json!(b as i64))
    } else {
        match r.try_get::<_, Option<String>>(i) {
            Ok(Some(s)) if is_json_column(name) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
            Ok(Some(s)) => Value::String(s),
            _ => Value::Null,
        }
    }
}

/// Rows as JSON objects keyed by column name.
pub fn to_json(rows: &[Row]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            let mut obj = Map::new();
            for (i, c) in r.columns().iter().enumerate() {
                obj.insert(c.name().to_owned(), cell(r, i, c.name()));
            }
            Value::Object(obj)
        })
        .collect()
}

impl Facts for PgFacts<'_, '_> {
    fn rows(&mut self, fact: Fact, args: &[Arg<'_>]) -> Result<Vec<Value>, StoreError> {
        let args: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| match a {
                Arg::Text(s) => s as &(dyn ToSql + Sync),
                Arg::Int(n) => n as &(dyn ToSql + Sync),
                Arg::Real(f) => f as &(dyn ToSql + Sync),
            })
            .collect();
        Ok(to_json(&self.0.query(sql(fact), &args)?))
    }
}
