#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! `sigil-agent families` as a user runs it: the real binary, both output forms.

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sigil-agent")).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn families_lists_the_catalogue_for_people_and_scripts() {
    let table = run(&["families"]);
    assert!(table.starts_with("FAMILY"), "{table}");
    for family in ["google_api_key", "hashicorp_vault_token", "okta_api_token", "slack_webhook", "aws_session"] {
        assert!(table.lines().any(|l| l.starts_with(family)), "{family} missing");
    }
    let json = run(&["families", "--json"]);
    let families: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(families.len() >= 100, "{}", families.len());
    let vault = families.iter().find(|f| f["name"] == "hashicorp_vault_token").unwrap();
    assert_eq!(vault["headers"][0], "X-Vault-Token");
    assert_eq!(vault["lifetime"], "short_lived");
}
