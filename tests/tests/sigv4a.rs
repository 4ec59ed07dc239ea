#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! SigV4a end to end: boto3 with awscrt (the AWS Common Runtime's ECDSA signer) sends an
//! S3 Multi-Region Access Point request over real TLS to a real local server; the agent
//! records the algorithm, the key id and the region set, and never the secret key.

use std::fs;

use sigil_tests::*;

#[test]
fn boto3_sigv4a_request_is_recorded_with_its_algorithm_key_id_and_region_set() {
    let dir = scratch_dir();
    let state = dir.join("state");
    let agent = Agent::start(&["--state-dir", &state.display().to_string()]);
    agent.stderr.wait_line("TLS capture on libssl", |l| l.contains("TLS capture attached") && l.contains("libssl"));
    let server = LocalServer::start(Some(&dir));
    let cg = TestCgroup::create(&format!("trace.slice/{}.scope", unique("sigv4a")));
    let (key_id, secret) = ("AKIASIGILSIGV4A00001", "wJalrXUtnFEMI/K7MDENG/PLANTEDv4aSECRET01");
    let endpoint = format!("https://127.0.0.1:{}", server.port);
    let (code, out, err) = cg.run(&python(), &[&python_script("sigv4a_client.py").display().to_string(), &endpoint, key_id, secret, "eu-west-1,us-east-1"]);
    assert_eq!((code, out.as_str()), (0, "SENT"), "{err}");

    let ev = agent.wait_event("the SigV4a use", |v| {
        v["kind"] == "credential_use" && v["process"]["cgroup_path"] == cg.path.as_str() && v["identifiers"]["access_key_id"] == key_id
    });
    assert_eq!(ev["detector"], "aws_sigv4");
    assert_eq!(ev["class"], "static");
    assert_eq!(ev["identifiers"]["aws_algorithm"], "AWS4-ECDSA-P256-SHA256");
    assert_eq!(ev["identifiers"]["aws_region_set"], serde_json::json!(["eu-west-1", "us-east-1"]));
    assert_eq!(ev["identifiers"]["aws_service"], "s3");
    assert_eq!(ev["destination"]["host"], "mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com");
    assert_eq!(ev["destination"]["port"], server.port);
    assert_eq!(ev["method"], "GET");
    assert_eq!(ev["tls_library"], "openssl");
    assert_secret_absent(&agent, &[&state], &[], secret);
    let _ = fs::remove_dir_all(&dir);
}
