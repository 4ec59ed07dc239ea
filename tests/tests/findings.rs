#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Misuse findings end to end: each misuse performed by real processes with real clients
//! (py-spiffe, curl, boto3) in real cgroups, seen by a real agent, derived by a real
//! collector, and asked for through `sigil findings --json`; each with a benign control
//! that must raise nothing. Every scenario runs on SQLite and on a real PostgreSQL.

use std::{fs, path::Path};

use serde_json::Value;
use sigil_tests::{
    postgres::{Backend, Db},
    *,
};

const AUDIENCE: &str = "https://payments.example";

/// A collector on `backend`, an agent reporting to it that issues tokens to python in
/// systemd unit `unit`, and a local TLS server.
struct Rig {
    dir: std::path::PathBuf,
    _db: Db,
    collector: Collector,
    agent: Agent,
    socket: std::path::PathBuf,
    server: LocalServer,
}

impl Rig {
    fn start(backend: Backend, unit: &str) -> Self {
        let dir = scratch_dir();
        let db = Db::new(backend, &dir);
        let collector = Collector::start(&db.arg);
        let python_real = fs::canonicalize(python()).unwrap();
        let selectors = [format!("systemd:unit:{unit}"), format!("unix:path:{}", python_real.display())];
        let Issuer { agent, socket, .. } = Issuer::start(&dir, "spiffe://sigil.test/victim", 300, &selectors, &["--collector", &collector.grpc]);
        agent.stderr.wait_line("TLS capture", |l| l.contains("TLS capture attached") && l.contains("libssl"));
        let server = LocalServer::start(Some(&dir));
        Self { dir, _db: db, collector, agent, socket, server }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/findings", self.server.port)
    }

    /// boto3 in `cg` signs an S3 call with `key`.
    fn boto3(&self, cg: &TestCgroup, key: &str, secret: &str, session: Option<&str>) {
        let script = python_script("aws_client.py").display().to_string();
        let endpoint = format!("https://127.0.0.1:{}", self.server.port);
        let mut args = vec![script.as_str(), endpoint.as_str(), key, secret];
        args.extend(session);
        let (_, out, err) = cg.run(&python(), &args);
        assert_eq!(out, "SENT", "{err}");
    }

    /// curl in `cg` presents `token` as a bearer token over TLS.
    fn curl_bearer(&self, cg: &TestCgroup, token: &str) {
        let (code, _, err) = cg.run(Path::new("/usr/bin/curl"), &["-sk", "-o", "/dev/null", &self.url(), "-H", &format!("Authorization: Bearer {token}")]);
        assert_eq!(code, 0, "curl: {err}");
    }

    /// Findings about `subject`.
    fn findings_about(&self, subject: &str) -> Vec<Value> {
        let all = self.collector.sigil(&["findings"]);
        all["findings"].as_array().unwrap().iter().filter(|f| f["subject"] == subject).cloned().collect()
    }

    /// Waits until the collector has stored `uses` uses of `credential` by the run whose
    /// id contains `run`.
    fn wait_stored(&self, credential: &str, run: &str, uses: u64) {
        self.collector.wait_for(&format!("{uses} uses of {credential} by {run}"), &["who-used", credential], |v| {
            v["runs"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["run_id"].as_str().is_some_and(|id| id.contains(run)) && r["uses"].as_u64() >= Some(uses)))
        });
    }

    /// Waits until the run whose id contains `run` and that used `credential` has ended
    /// in the store, then lets the clock pass that second: stored times are whole
    /// seconds, and a use in the very second a run ended is not judged late.
    fn wait_run_ended(&self, credential: &str, run: &str) {
        let used = self.collector.sigil(&["who-used", credential]);
        let run_id = used["runs"].as_array().unwrap().iter().filter_map(|r| r["run_id"].as_str()).find(|id| id.contains(run)).unwrap().to_owned();
        self.collector.wait_for(&format!("run {run_id} ended"), &["run", &run_id], |v| !v["run"]["ended"].is_null());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }

    /// The collector's /metrics text.
    fn metrics(&self) -> String {
        scrape_metrics(self.collector.http.trim_start_matches("http://"))
    }

    /// Waits for a finding of `kind` about `subject`, and for the collector's one notice of
    /// it in its log (written once the batch that found it has committed).
    fn wait_finding(&self, kind: &str, subject: &str) -> Value {
        let v = self
            .collector
            .wait_for(kind, &["findings", "--kind", kind], |v| v["findings"].as_array().is_some_and(|a| a.iter().any(|f| f["subject"] == subject)));
        let name = format!("FINDING_KIND_{}", kind.to_ascii_uppercase());
        let notice = |l: &str| l.contains("WARN") && l.contains(&name) && l.contains(subject);
        self.collector.log.wait_line(&format!("the collector's notice of {kind} about {subject}"), notice);
        let told = self.collector.log.snapshot().into_iter().filter(|l| notice(l)).count();
        assert_eq!(told, 1, "one notice per new finding");
        v["findings"].as_array().unwrap().iter().find(|f| f["subject"] == subject).cloned().unwrap()
    }
}

fn unit_cgroup(prefix: &str) -> (String, TestCgroup) {
    let unit = format!("{}.service", unique(prefix));
    let cg = TestCgroup::create(&format!("system.slice/{unit}"));
    (unit, cg)
}

/// An AWS-shaped access key id (20 characters) unique to this call.
fn test_key(prefix: &str) -> String {
    let tag = unique("").to_ascii_uppercase();
    format!("{prefix}{:0>12}", &tag[tag.len().saturating_sub(12)..])
}

fn runs(f: &Value) -> Vec<String> {
    f["runs"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect()
}

/// The finding names no secret: only ids and fingerprints.
fn assert_no_secret(r: &Rig, secrets: &[&str]) {
    let all = r.collector.sigil(&["findings"]).to_string();
    let text = r.collector.sigil_text(&["findings"]);
    let metrics = r.metrics();
    for s in secrets {
        assert!(!all.contains(s) && !text.contains(s) && !metrics.contains(s), "a planted secret appears in findings or metrics");
    }
}

on_both_backends!(a_stolen_token_replayed_by_another_workload_after_its_run_ended_is_found, token_replayed);
/// The attacker: a workload in another pod (here another systemd unit's cgroup) that stole
/// the victim's Sigil token (py-spiffe fetched it in the victim's run) and sends it with
/// curl to a TLS service, after the victim's run has ended. The control: the victim's
/// own run presenting its token raises nothing.
fn token_replayed(backend: Backend) {
    let (unit, victim) = unit_cgroup("findings-victim-");
    let r = Rig::start(backend, &unit);
    let (code, out, err) = victim.run(&python(), &[&python_script("spiffe_client.py").display().to_string(), &r.socket.display().to_string(), AUDIENCE]);
    assert_eq!(code, 0, "py-spiffe: {err}");
    let token = serde_json::from_str::<Value>(&out).unwrap()["token"].as_str().unwrap().to_owned();
    let issued = r.agent.wait_event("token issued", |v| v["kind"] == "token_issued");
    let jti = issued["jti"].as_str().unwrap().to_owned();

    // Control: the victim's run uses its own token.
    r.curl_bearer(&victim, &token);
    r.agent
        .wait_event("the victim's own use", |v| v["kind"] == "credential_use" && v["identifiers"]["jwt_jti"] == jti.as_str() && v["class"] == "sigil_issued");
    r.wait_stored(&jti, &unit, 1);
    assert_eq!(r.findings_about(&jti), Vec::<Value>::new(), "a token used by its own run is no finding");

    // The attack, after every process of the victim's run has exited.
    r.wait_run_ended(&jti, &unit);
    let (_, attacker_cg) = unit_cgroup("findings-attacker-");
    r.curl_bearer(&attacker_cg, &token);
    let f = r.wait_finding("token_replayed", &jti);
    assert_eq!(f["kind"], "finding");
    assert_eq!(f["subject_kind"], "jti");
    let involved = runs(&f);
    assert_eq!(involved.len(), 2, "{f}");
    assert!(involved[0].contains(&unit), "the token's own run first: {involved:?}");
    assert!(involved[1].contains(attacker_cg.leaf.file_name().unwrap().to_str().unwrap()), "{involved:?}");
    assert!(f["evidence"].as_array().unwrap().iter().any(|e| e["kind"] == "token_issued"), "{f}");
    let late = r.wait_finding("token_used_after_run_ended", &jti);
    assert_eq!(runs(&late), involved);
    assert!(r.metrics().contains("sigil_collector_findings_total{kind=\"token_replayed\""));
    assert_no_secret(&r, &[&token, token.rsplit('.').next().unwrap()]);
    let _ = fs::remove_dir_all(&r.dir);
}

on_both_backends!(temporary_credentials_obtained_by_one_run_and_used_by_another_are_found, outlived);
/// The attacker: a workload in another pod (here another unit's cgroup) that copied the
/// temporary AWS credentials (ASIA key, secret, session token) run A obtained, and signs
/// with them through boto3 after A ended. The control: run A signing twice raises nothing.
fn outlived(backend: Backend) {
    let key = test_key("ASIAFIND");
    let (secret, session) = ("PLANTEDoutlivedSECRET00000000000000000001", "PLANTEDoutlivedSESSIONtoken");
    let (unit, a) = unit_cgroup("findings-obtainer-");
    let r = Rig::start(backend, &unit);
    r.boto3(&a, &key, secret, Some(session));
    r.boto3(&a, &key, secret, Some(session));
    r.wait_stored(&key, &unit, 2);
    assert_eq!(r.findings_about(&key), Vec::<Value>::new(), "temporary keys used by the run that obtained them are no finding");

    let (_, b) = unit_cgroup("findings-thief-");
    r.boto3(&b, &key, secret, Some(session));
    let f = r.wait_finding("credential_outlived_run", &key);
    assert_eq!(f["subject_kind"], "access_key_id");
    let involved = runs(&f);
    assert!(involved.len() == 2 && involved[0].contains(&unit) && involved[1].contains(b.leaf.file_name().unwrap().to_str().unwrap()), "{involved:?}");
    assert_no_secret(&r, &[secret, session]);
    let _ = fs::remove_dir_all(&r.dir);
}

on_both_backends!(a_long_lived_key_shared_by_two_workloads_and_a_credential_file_leaking_to_egress_are_found, static_rules);
/// The attacker: a workload in another pod (here another unit's cgroup) that reads the
/// AWS credentials file a first workload also uses, and signs with its long-lived key
/// through boto3: the key is now shared by two workloads, and it went from a credential
/// file to that workload's egress. The control: two processes of one workload using the
/// key are not "shared", and that workload never read the file.
fn static_rules(backend: Backend) {
    let key = test_key("AKIAFIND");
    let secret = "PLANTEDstaticSHAREDsecret000000000000001";
    let (unit, owner) = unit_cgroup("findings-owner-");
    let r = Rig::start(backend, &unit);
    r.boto3(&owner, &key, secret, None);
    r.boto3(&owner, &key, secret, None);
    r.wait_stored(&key, &unit, 2);
    let fingerprint =
        r.agent.events().iter().find(|v| v["kind"] == "credential_use" && v["identifiers"]["access_key_id"] == key.as_str()).unwrap()["fingerprint"]
            .as_str()
            .unwrap()
            .to_owned();
    assert_eq!(r.findings_about(&fingerprint), Vec::<Value>::new(), "one workload's processes are not sharing");

    let (_, thief) = unit_cgroup("findings-reader-");
    let aws = r.dir.join("home/.aws");
    fs::create_dir_all(&aws).unwrap();
    fs::write(aws.join("credentials"), format!("[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")).unwrap();
    let (code, _, err) = thief.run(Path::new("/bin/cat"), &[&aws.join("credentials").display().to_string()]);
    assert_eq!(code, 0, "{err}");
    r.agent.wait_event("the file read", |v| v["kind"] == "credential_file_read" && v["path"].as_str().is_some_and(|p| p.ends_with("/.aws/credentials")));
    r.boto3(&thief, &key, secret, None);
    let thief_name = thief.leaf.file_name().unwrap().to_str().unwrap().to_owned();

    let shared = r.wait_finding("static_credential_shared", &fingerprint);
    let involved = runs(&shared);
    assert!(involved.len() == 2 && involved[0].contains(&unit) && involved[1].contains(&thief_name), "{involved:?}");
    let leaked = r.wait_finding("credential_file_to_egress", &fingerprint);
    assert!(runs(&leaked).len() == 1 && runs(&leaked)[0].contains(&thief_name), "{leaked}");
    let kinds: Vec<&str> = leaked["evidence"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["credential_file_read", "credential_use"], "{leaked}");
    // The owner never read the file: no file-to-egress finding names its run.
    let about = r.findings_about(&fingerprint);
    assert!(!about.iter().any(|f| f["finding_kind"] == "credential_file_to_egress" && runs(f).iter().any(|x| x.contains(&unit))), "{about:?}");
    assert_no_secret(&r, &[secret]);
    let _ = fs::remove_dir_all(&r.dir);
}
