//! `sigil`: ask the collector which workload run did what.
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;

#[cfg(test)]
mod tests {
    #[test]
    fn formats_unix_times_as_utc() {
        assert_eq!(super::when(&serde_json::json!(0)), "1970-01-01 00:00:00");
        assert_eq!(super::when(&serde_json::json!(1_795_445_122)), "2026-11-23 14:45:22");
        assert_eq!(super::when(&serde_json::json!(951_782_400)), "2000-02-29 00:00:00");
        assert_eq!(super::when(&serde_json::Value::Null), "-");
    }
}

#[derive(Parser)]
#[command(name = "sigil", version, about = "Query Sigil: which workload run made this cloud call, with which credential?")]
struct Cli {
    /// Collector HTTP address.
    #[arg(long, env = "SIGIL_COLLECTOR", default_value = "http://127.0.0.1:8080", global = true)]
    collector: String,
    /// Print the JSON document instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// CA certificate (PEM) of an https:// collector.
    #[arg(long, env = "SIGIL_CA", global = true)]
    ca: Option<PathBuf>,
    /// Operator client certificate and key (PEM) for an https:// collector.
    #[arg(long, env = "SIGIL_CERT", global = true, requires = "key")]
    cert: Option<PathBuf>,
    #[arg(long, env = "SIGIL_KEY", global = true, requires = "cert")]
    key: Option<PathBuf>,
    /// File holding the bearer token of the collector's HTTP API.
    #[arg(long, env = "SIGIL_HTTP_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The run, pod, container, binary, ancestry and credential behind a cloud event:
    /// a page of its linked runs (most confident first), each with a summary.
    Trace {
        cloud_event_id: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Every run that used an access key id, credential fingerprint or token jti.
    WhoUsed { credential: String },
    /// Everything a run did: a summary, then its timeline a page at a time.
    Run {
        run_id: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Runs still using long-lived credentials, shared credentials first, a page at a time.
    StaticCredentials {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Cloud actions no run could be tied to.
    Unattributed,
    /// Migration figures: short-lived share, long-lived in use, token lifetimes, denials.
    Posture,
    /// Misuse found in what agents reported: replayed tokens, credentials outliving their
    /// run, shared long-lived credentials, credential files leaking to egress.
    Findings {
        /// Only this kind (token_replayed, token_used_after_run_ended,
        /// credential_outlived_run, static_credential_shared, credential_file_to_egress).
        #[arg(long)]
        kind: Option<String>,
        /// Only findings with a misuse at or after this time (RFC 3339 or Unix seconds).
        #[arg(long)]
        since: Option<String>,
    },
}

/// Which page of a long answer to show.
#[derive(clap::Args)]
struct PageArgs {
    /// At most this many entries (linked runs for trace, timeline entries for run,
    /// credentials for static-credentials; up to 1000). Default: 5, 100, 50.
    #[arg(long)]
    limit: Option<u32>,
    /// Start after this cursor (the `next` of the previous page, which the command
    /// printed at the end).
    #[arg(long)]
    after: Option<String>,
}

impl PageArgs {
    /// `?limit=..&after=..` (empty when neither is given).
    fn query(&self) -> String {
        let parts: Vec<String> =
            [self.limit.map(|n| format!("limit={n}")), self.after.as_deref().map(|a| format!("after={}", percent(a)))].into_iter().flatten().collect();
        if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
    }

    /// The same command for the page after `next`.
    fn next_command(&self, verb: &str, arg: &str, next: &str) -> String {
        let mut words = vec!["sigil".to_owned(), verb.to_owned()];
        words.extend((!arg.is_empty()).then(|| shell_word(arg)));
        words.extend(self.limit.map(|n| format!("--limit {n}")));
        words.push(format!("--after {}", shell_word(next)));
        words.join(" ")
    }
}

/// `s` as one shell word.
fn shell_word(s: &str) -> String {
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/=@+,".contains(&b)) { s.to_owned() } else { format!("'{}'", s.replace('\'', "'\\''")) }
}

/// The HTTP client with the operator's credentials: a CA and client certificate for an
/// https:// collector, and/or the API's bearer token.
fn client(cli: &Cli) -> Result<(ureq::Agent, Option<String>)> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut tls = TlsConfig::builder();
    if let Some(ca) = &cli.ca {
        tls = tls.root_certs(RootCerts::new_with_certs(&[Certificate::from_pem(&read(ca)?).context("CA certificate")?]));
    }
    if let (Some(cert), Some(key)) = (&cli.cert, &cli.key) {
        let chain = [Certificate::from_pem(&read(cert)?).context("client certificate")?];
        let key = PrivateKey::from_pem(&read(key)?).context("client key")?;
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    let agent = ureq::Agent::config_builder().http_status_as_error(false).tls_config(tls.build()).build().new_agent();
    let token = match &cli.token_file {
        Some(p) => Some(String::from_utf8(read(p)?).context("token file")?.trim().to_owned()),
        None => None,
    };
    Ok((agent, token))
}

fn get(cli: &Cli, name: &str, arg: Option<&str>, query: &str) -> Result<Value> {
    let (agent, token) = client(cli)?;
    let mut url = format!("{}/v1/query/{name}", cli.collector.trim_end_matches('/'));
    if let Some(a) = arg {
        url.push('/');
        url.push_str(&percent(a));
    }
    url.push_str(query);
    let mut req = agent.get(&url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = req.call().with_context(|| format!("asking {url}"))?;
    let status = resp.status();
    let body = resp.body_mut().read_to_string().context("reading the collector's answer")?;
    let v: Value = serde_json::from_str(&body).with_context(|| format!("collector answered {status} with non-JSON"))?;
    if !status.is_success() {
        bail!("{}", v["error"].as_str().unwrap_or(&body));
    }
    Ok(v)
}

fn percent(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Unix seconds as UTC `YYYY-MM-DD HH:MM:SS` (civil-from-days, Howard Hinnant's method).
fn when(v: &Value) -> String {
    let Some(t) = v.as_i64() else { return text(v) };
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Cell text: time columns as dates, the rest as they are.
fn cell(key: &str, v: &Value) -> String {
    if matches!(key, "time" | "first_seen" | "last_seen" | "started" | "ended" | "issued_at" | "expires_at") { when(v) } else { text(v) }
}

/// A left-aligned table of `cols` from `rows`.
fn table(rows: &[Value], cols: &[(&str, &str)]) {
    if rows.is_empty() {
        println!("  (none)");
        return;
    }
    let cells: Vec<Vec<String>> = rows.iter().map(|r| cols.iter().map(|(k, _)| cell(k, &r[*k])).collect()).collect();
    let widths: Vec<usize> =
        cols.iter().enumerate().map(|(i, (_, h))| cells.iter().map(|c| c[i].chars().count()).max().unwrap_or(0).max(h.len()).min(70)).collect();
    let line = |vals: Vec<String>| {
        let parts: Vec<String> = vals.iter().zip(&widths).map(|(v, w)| format!("{:<w$}", v.chars().take(*w).collect::<String>(), w = *w)).collect();
        println!("  {}", parts.join("  ").trim_end());
    };
    line(cols.iter().map(|(_, h)| (*h).to_owned()).collect());
    for c in cells {
        line(c);
    }
}

/// "obtained ASIA... from sts.example (aws_sts_assume_role_with_web_identity), valid until t".
fn obtained_line(d: &Value) -> String {
    let what = d["identifier"].as_str().map_or_else(|| format!("a {} token", text(&d["format"])), str::to_owned);
    let mut line = format!("obtained {what} from {} ({}), valid until {}", text(&d["host"]), text(&d["exchange_kind"]), text(&d["expires_at"]));
    if let Some(jti) = d["presented_jti"].as_str() {
        line.push_str(&format!(", for token jti {jti}"));
    }
    line
}

/// "… N more ...: <command>" when a page left entries out.
fn left_out(v: &Value, what: &str, verb: &str, arg: &str, page: &PageArgs) {
    let left = v["left_out"].as_i64().unwrap_or(0);
    if let (true, Some(next)) = (left > 0, v["next"].as_str()) {
        println!("\n  ... {left} more {what} not shown; next page: {}", page.next_command(verb, arg, next));
    }
}

fn print_trace(v: &Value, id: &str, page: &PageArgs) {
    let a = &v["action"];
    println!("cloud action {} {} {} at {} by {}", text(&a["id"]), text(&a["service"]), text(&a["action"]), when(&a["time"]), text(&a["principal"]));
    if !v["attributed"].as_bool().unwrap_or(false) {
        println!("  NOT ATTRIBUTED: no workload run could be tied to it (access key {})", text(&a["access_key_id"]));
        return;
    }
    println!("  linked to {} run(s)", text(&v["links"]));
    for at in v["attribution"].as_array().into_iter().flatten() {
        let run = &at["run"];
        let s = &at["summary"];
        println!("\n  run {}  ({} confidence {})", text(&run["run_id"]), text(&at["reason"]), text(&at["confidence"]));
        println!("    node {}  pod {}  container {}  unit {}", text(&run["node"]), text(&run["pod_uid"]), text(&run["container_id"]), text(&run["unit"]));
        println!(
            "    {} processes ({} binaries), {} credential uses, {} cloud actions, from {} to {}",
            text(&s["processes"]),
            text(&s["binaries"]),
            text(&s["credential_uses"]),
            text(&s["cloud_actions"]),
            when(&s["first"]),
            when(&s["last"])
        );
        let c = &at["credential"];
        if !c.is_null() {
            println!("    credential {} {} key {} fingerprint {}", text(&c["detector"]), text(&c["class"]), text(&c["access_key_id"]), text(&c["fingerprint"]));
        }
        println!("    obtained: {}", text(&at["obtained"]["how"]));
        if let Some(r) = at["obtained"].get("response").filter(|r| !r.is_null()) {
            println!("      run {} {}", text(&r["run_id"]), obtained_line(r));
        }
        if let Some(t) = at["obtained"].get("token").filter(|t| !t.is_null()) {
            println!("      token jti {} for {} (ttl {} s)", text(&t["jti"]), text(&t["spiffe_id"]), text(&t["ttl"]));
        }
        let p = &at["process"];
        if !p.is_null() {
            println!("    process: pid {} {} sha256 {} (exec {})", text(&p["pid"]), text(&p["binary_path"]), text(&p["sha256"]), text(&p["exec_id"]));
            let chain: Vec<String> = p["ancestry"].as_array().into_iter().flatten().map(|a| format!("{}({})", text(&a["comm"]), text(&a["pid"]))).collect();
            if !chain.is_empty() {
                println!("    ancestry: {}", chain.join(" <- "));
            }
        }
        println!("    first processes of the run:");
        table(
            at["processes"].as_array().map(Vec::as_slice).unwrap_or(&[]),
            &[("pid", "PID"), ("binary_path", "BINARY"), ("sha256", "SHA256"), ("exec_id", "EXEC")],
        );
        let more = at["processes_left_out"].as_i64().unwrap_or(0);
        if more > 0 {
            println!("    ... {more} more processes not shown; all of them: sigil run {}", shell_word(run["run_id"].as_str().unwrap_or("")));
        }
    }
    left_out(v, "linked runs", "trace", id, page);
}

fn print_run(v: &Value, id: &str, page: &PageArgs) {
    let r = &v["run"];
    let s = &v["summary"];
    println!("run {} on {} ({}), started {}, ended {}", text(&r["run_id"]), text(&r["node"]), text(&r["kind"]), when(&r["started"]), when(&r["ended"]));
    println!(
        "  {} processes ({} binaries), {} credential uses, {} cloud actions, from {} to {}; {} timeline entries",
        text(&s["processes"]),
        text(&s["binaries"]),
        text(&s["credential_uses"]),
        text(&s["cloud_actions"]),
        when(&s["first"]),
        when(&s["last"]),
        text(&v["timeline_entries"])
    );
    for e in v["timeline"].as_array().into_iter().flatten() {
        let d = &e["detail"];
        let what = match e["what"].as_str().unwrap_or("") {
            "exec" => format!("exec pid {} {} sha256 {}", text(&d["pid"]), text(&d["binary_path"]), text(&d["sha256"])),
            "exit" => format!("exit pid {}", text(&d["pid"])),
            "token_issued" => format!("token issued {} jti {} ttl {}", text(&d["spiffe_id"]), text(&d["jti"]), text(&d["ttl"])),
            "token_denied" => format!("token denied: {} ({})", text(&d["reason"]), text(&d["detail"])),
            "credential_use" => format!(
                "used {} {} {} -> {} {} {}",
                text(&d["class"]),
                text(&d["detector"]),
                text(&d["access_key_id"]),
                text(&d["destination"]),
                text(&d["method"]),
                text(&d["path"])
            ),
            "credential_file_read" => match d["via"].as_str() {
                Some(via) => format!("read {} ({}) via {via}", text(&d["path"]), text(&d["file_kind"])),
                None => format!("read {} ({})", text(&d["path"]), text(&d["file_kind"])),
            },
            "credential_obtained" => obtained_line(d),
            "cloud_action" => format!("cloud {} {} [{}]", text(&d["service"]), text(&d["action"]), text(&d["id"])),
            other => other.to_owned(),
        };
        println!("  {}  {what}", when(&e["time"]));
    }
    left_out(v, "timeline entries", "run", id, page);
}

fn render(cmd: &Cmd, v: &Value) {
    match cmd {
        Cmd::Trace { cloud_event_id, page } => print_trace(v, cloud_event_id, page),
        Cmd::WhoUsed { credential } => {
            println!("runs that used {credential}:");
            table(
                v["runs"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                &[("run_id", "RUN"), ("class", "CLASS"), ("uses", "USES"), ("first_seen", "FIRST"), ("last_seen", "LAST"), ("destinations", "DESTINATIONS")],
            );
            println!("cloud actions with it:");
            table(
                v["cloud_actions"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                &[("id", "EVENT"), ("action", "ACTION"), ("run_id", "RUN"), ("reason", "REASON")],
            );
        }
        Cmd::Run { run_id, page } => print_run(v, run_id, page),
        Cmd::StaticCredentials { page } => {
            println!("{} long-lived credentials in use (shared first):", text(&v["credentials"]));
            table(
                v["static_credentials"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                &[
                    ("access_key_id", "KEY ID"),
                    ("token_family", "FAMILY"),
                    ("detector", "DETECTOR"),
                    ("runs", "RUNS"),
                    ("uses", "USES"),
                    ("fingerprint", "FINGERPRINT"),
                    ("run_ids", "RUN IDS"),
                ],
            );
            left_out(v, "credentials", "static-credentials", "", page);
        }
        Cmd::Unattributed => {
            println!("cloud actions no run could be tied to:");
            table(
                v["unattributed"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                &[
                    ("id", "EVENT"),
                    ("time", "TIME"),
                    ("service", "SERVICE"),
                    ("action", "ACTION"),
                    ("principal", "PRINCIPAL"),
                    ("access_key_id", "KEY ID"),
                    ("source_ip", "SOURCE IP"),
                ],
            );
        }
        Cmd::Findings { .. } => {
            println!("misuse findings:");
            table(
                v["findings"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                &[
                    ("finding_kind", "KIND"),
                    ("severity", "SEVERITY"),
                    ("subject", "SUBJECT"),
                    ("runs", "RUNS"),
                    ("first_time", "FIRST"),
                    ("last_time", "LAST"),
                    ("summary", "SUMMARY"),
                ],
            );
        }
        Cmd::Posture => {
            for (k, label) in [
                ("share_of_runs_short_lived_only", "share of runs using only short-lived credentials"),
                ("runs_using_credentials", "runs using credentials"),
                ("long_lived_credentials_in_use", "long-lived credentials in use"),
                ("tokens_issued", "tokens issued"),
                ("mean_token_lifetime_seconds", "mean token lifetime (s)"),
                ("cloud_actions", "cloud actions"),
                ("cloud_actions_attributed", "cloud actions attributed"),
                ("median_seconds_to_attribute", "median time to attribute (s)"),
            ] {
                println!("  {label:<52} {}", text(&v[k]));
            }
            println!("  long-lived credentials shared by most runs (all of them: sigil static-credentials):");
            table(
                v["long_lived_credentials"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                &[("access_key_id", "KEY ID"), ("fingerprint", "FINGERPRINT"), ("runs", "RUNS")],
            );
            println!("  token denials by reason:");
            table(v["denials_by_reason"].as_array().map(Vec::as_slice).unwrap_or(&[]), &[("reason", "REASON"), ("count", "COUNT")]);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match &cli.cmd {
        Cmd::Findings { kind, since } => {
            let parts: Vec<String> = [kind.as_ref().map(|k| format!("kind={k}")), since.as_ref().map(|t| format!("since={t}"))].into_iter().flatten().collect();
            Some(parts.join("&")).filter(|f| !f.is_empty())
        }
        _ => None,
    };
    let query = match &cli.cmd {
        Cmd::Trace { page, .. } | Cmd::Run { page, .. } | Cmd::StaticCredentials { page } => page.query(),
        _ => String::new(),
    };
    let (name, arg) = match &cli.cmd {
        Cmd::Trace { cloud_event_id, .. } => ("trace", Some(cloud_event_id.as_str())),
        Cmd::WhoUsed { credential } => ("who-used", Some(credential.as_str())),
        Cmd::Run { run_id, .. } => ("run", Some(run_id.as_str())),
        Cmd::StaticCredentials { .. } => ("static-credentials", None),
        Cmd::Unattributed => ("unattributed", None),
        Cmd::Posture => ("posture", None),
        Cmd::Findings { .. } => ("findings", filter.as_deref()),
    };
    match get(&cli, name, arg, &query) {
        Ok(v) => {
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                render(&cli.cmd, &v);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sigil: {e:#}");
            ExitCode::FAILURE
        }
    }
}
