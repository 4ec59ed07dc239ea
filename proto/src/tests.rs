//! Every kind survives typed -> protobuf -> typed and typed -> JSON -> typed unchanged, and
//! its JSON has the field names and enum spellings the agent has always written.

use prost::Message;
use serde_json::{Value, json};

use crate::{
    EventBody, KINDS,
    v1::{self, Event},
};

fn workload() -> v1::Workload {
    v1::Workload {
        kind: v1::WorkloadKind::KubernetesPod as i32,
        pod_uid: Some("0c3d2a4e-5b6f-4a1b-9c8d-7e6f5a4b3c2d".into()),
        qos_class: Some(v1::QosClass::BestEffort as i32),
        container_id: Some("ab".repeat(32)),
        runtime: Some(v1::ContainerRuntime::CriO as i32),
        unit: None,
        user_unit: None,
        user_uid: None,
    }
}

fn pod() -> v1::PodMeta {
    v1::PodMeta {
        namespace: Some("shop".into()),
        service_account: Some("checkout".into()),
        name: Some("checkout-1".into()),
        labels: [("app".to_owned(), "checkout".to_owned())].into(),
        owner: Some(v1::Owner {
            kind: "Deployment".into(),
            name: "checkout".into(),
            via: Some(Box::new(v1::Owner { kind: "ReplicaSet".into(), name: "checkout-5d8f7c9b4".into(), via: None })),
        }),
    }
}

fn process_ref() -> v1::ProcessRef {
    v1::ProcessRef {
        exec_id: "b:10:5:99".into(),
        process_id: "b:10:5".into(),
        pid: 10,
        binary_path: Some("/app/checkout".into()),
        binary_sha256: Some("9f".repeat(32)),
        cgroup_path: Some("/kubepods/pod".into()),
        workload: Some(workload()),
        pod: Some(pod()),
        run: Some("k8s/shop/deployment/checkout/checkout-1".into()),
    }
}

/// One of every kind, every field set. The match makes a new kind fail to compile here
/// until it has a sample.
fn samples() -> Vec<EventBody> {
    let all = vec![
        EventBody::ProcessExec(v1::ProcessExec {
            source: v1::Source::ProcfsScan as i32,
            exec_id: "b:10:5:99".into(),
            process_id: "b:10:5".into(),
            node: "n1".into(),
            time: "2026-01-01T00:00:00Z".into(),
            pid: 10,
            ppid: 1,
            start_time: "2026-01-01T00:00:00Z".into(),
            start_ticks: 5,
            uid: 1000,
            gid: 1000,
            comm: "checkout".into(),
            binary: Some(v1::Binary {
                path: Some("/app/checkout".into()),
                exec_path: Some("/app/checkout".into()),
                sha256: Some("9f".repeat(32)),
                size: Some(4096),
                inode: Some(77),
                hash_cache: Some("miss".into()),
                hashed_from: Some("exe".into()),
                replaced_after_exec: true,
                error: Some("none".into()),
                hash_skipped: Some("time_budget".into()),
                hash_pending: false,
            }),
            cgroup: Some(v1::CgroupInfo { id: 7, path: Some("/kubepods/pod".into()) }),
            workload: Some(workload()),
            ancestry: vec![v1::Ancestor { pid: 1, exec_id: "b:1:1:1".into(), comm: "init".into(), binary_path: Some("/sbin/init".into()) }],
            script: Some(v1::Script { path: "/app/run.py".into(), source: "argv".into(), sha256: Some("ab".repeat(32)), inode: Some(9), error: None }),
            pod: Some(pod()),
            run: Some("k8s/shop/deployment/checkout/checkout-1".into()),
        }),
        EventBody::ProcessExit(v1::ProcessExit {
            exec_id: "b:10:5:99".into(),
            process_id: "b:10:5".into(),
            node: "n1".into(),
            time: "2026-01-01T00:00:01Z".into(),
            pid: 10,
        }),
        EventBody::TokenIssued(v1::TokenIssued {
            time: "t".into(),
            node: "n1".into(),
            jti: "j1".into(),
            spiffe_id: "spiffe://example.org/checkout".into(),
            audience: vec!["sts.amazonaws.com".into()],
            issuer: "https://n1".into(),
            kid: "k1".into(),
            issued_at: 100,
            expires_at: 400,
            ttl_seconds: 300,
            entry_line: 3,
            process: Some(process_ref()),
        }),
        EventBody::TokenDenied(v1::TokenDenied {
            time: "t".into(),
            node: "n1".into(),
            reason: v1::DenyReason::BinaryHashMismatch as i32,
            detail: "hash".into(),
            audience: vec!["a".into()],
            requested_spiffe_id: Some("spiffe://example.org/x".into()),
            peer_pid: 10,
            process: Some(process_ref()),
            audience_count: 60,
            source: Some("signer".into()),
        }),
        EventBody::CredentialUse(v1::CredentialUse {
            time: "t".into(),
            node: "n1".into(),
            pid: 10,
            process: Some(process_ref()),
            destination: Some(v1::Destination { ip: Some("10.0.0.1".into()), port: Some(443), host: Some("s3.amazonaws.com".into()) }),
            transport: "tls".into(),
            tls_library: Some("openssl".into()),
            protocol: v1::Protocol::Http2 as i32,
            method: "GET".into(),
            path: "/".into(),
            detector: v1::Detector::AwsSigv4Presigned as i32,
            class: v1::CredentialClass::ShortLived as i32,
            lifetime_seconds: Some(900),
            remaining_seconds: Some(600),
            fingerprint: "fp".into(),
            identifiers: Some(v1::Identifiers {
                access_key_id: Some("AKIAEXAMPLE".into()),
                aws_region: Some("us-east-1".into()),
                aws_service: Some("s3".into()),
                jwt_iss: Some("iss".into()),
                jwt_sub: Some("sub".into()),
                jwt_aud: vec!["aud".into()],
                jwt_jti: Some("j1".into()),
                jwt_exp: Some(400),
                jwt_iat: Some(100),
                token_family: Some("github".into()),
                header: Some("authorization".into()),
                username: Some("u".into()),
                aws_region_set: vec!["us-east-1".into(), "eu-west-1".into()],
                aws_algorithm: Some("AWS4-ECDSA-P256-SHA256".into()),
                key_id: Some("T0/B1".into()),
            }),
            exchange: Some(v1::Exchange {
                kind: "aws_sts_assume_role_with_web_identity".into(),
                role_arn: Some("arn:aws:iam::111122223333:role/checkout".into()),
                role_session_name: Some("s".into()),
                client_id: None,
                audience: Some("sts.amazonaws.com".into()),
            }),
            count: Some(42),
            first_seen: Some("t0".into()),
            last_seen: Some("t1".into()),
        }),
        EventBody::CredentialFileRead(v1::CredentialFileRead {
            time: "t".into(),
            node: "n1".into(),
            pid: 10,
            process: Some(process_ref()),
            path: "/root/.aws/credentials".into(),
            file_kind: v1::FileKind::AwsSharedCredentials as i32,
            access: "read".into(),
            via: "io_uring".into(),
        }),
        EventBody::AgentStats(v1::AgentStats {
            node: "n1".into(),
            hash: Some(v1::HashStats {
                cache_hits: 1,
                hashes_computed: 2,
                hash_errors: 3,
                hash_micros: 4,
                pending: 5,
                skipped_queue_full: 6,
                skipped_time_budget: 7,
                skipped_too_large: 8,
                skipped_not_regular_file: 9,
                skipped_shutdown: 10,
            }),
            ring_buffer_lost: Some(v1::LostByKind { exec: 1, exit: 2, connect: 3, data: 4, file_open: 5 }),
            decode_errors: 1,
            quiet_execs: 3,
            processes_tracked: 2,
            tokens: Some(v1::TokenStats { issued: 1, denied: [("unknown_process".to_owned(), 2)].into() }),
            trace: Some(v1::TraceStats {
                captures: 1,
                uses_by_class_detector: vec![v1::ClassDetectorCount { class: "static".into(), detector: "aws_sigv4".into(), count: 2 }],
                file_reads_by_kind: [("ssh_private_key".to_owned(), 1)].into(),
                uncovered: vec![v1::UncoveredClient { client: "go_crypto_tls".into(), binary: "/usr/bin/promtool".into(), execs: 2, reason: "r".into() }],
                uncovered_unchecked: 1,
                ..Default::default()
            }),
            export: Some(v1::ExportStats { batches_sent: 1, spool: Some(v1::SpoolStats { depth_events: 3, ..Default::default() }), ..Default::default() }),
            events: 9,
            emitted: [("process_exec".to_owned(), 9)].into(),
            kernel_drops: [("tls_call_lost".to_owned(), 2)].into(),
            cpu_by_kind: [("exec".to_owned(), v1::CpuCost { events: 2, cpu_us: 100, us_per_event: 50.0 })].into(),
        }),
        EventBody::ConfigChange(v1::ConfigChange {
            time: "t".into(),
            node: "n1".into(),
            path: "/etc/sigil/policy.toml".into(),
            outcome: "rejected".into(),
            error: Some("line 3".into()),
        }),
        EventBody::CredentialObtained(v1::CredentialObtained {
            time: "2026-11-24T01:00:00Z".into(),
            node: "n1".into(),
            pid: 10,
            process: Some(process_ref()),
            destination: Some(v1::Destination { ip: Some("10.0.0.1".into()), port: Some(443), host: Some("sts.amazonaws.com".into()) }),
            tls_library: Some("openssl".into()),
            exchange_kind: "aws_sts_assume_role_with_web_identity".into(),
            format: "aws_sts_xml".into(),
            identifier: Some("ASIAEXAMPLE".into()),
            class: v1::CredentialClass::ShortLived as i32,
            fingerprint: "hmac-sha256:00".into(),
            issued_at: "2026-11-24T01:00:00Z".into(),
            expires_at: Some("2026-11-24T02:00:00Z".into()),
            expires_in: Some(3600),
            principal: Some("arn:aws:sts::1:assumed-role/r/s".into()),
            token_type: Some("Bearer".into()),
            scope: Some("read".into()),
            token_iss: Some("https://idp".into()),
            token_sub: Some("svc".into()),
            token_jti: Some("t-1".into()),
            token_exp: Some(1_700_000_000),
            presented_jti: Some("sigil-jti".into()),
            presented_iss: Some("https://sigil".into()),
            presented_sub: Some("spiffe://c/ns/shop".into()),
            presented_fingerprint: Some("hmac-sha256:11".into()),
        }),
        EventBody::Finding(v1::Finding {
            id: "f1".into(),
            finding_kind: v1::FindingKind::TokenReplayed as i32,
            severity: v1::Severity::High as i32,
            subject: "j1".into(),
            subject_kind: "jti".into(),
            runs: vec!["cgroup:n1:/a".into(), "cgroup:n1:/b".into()],
            processes: vec!["b:10:5:99".into()],
            nodes: vec!["n1".into()],
            first_time: "2026-01-01T00:00:00Z".into(),
            last_time: "2026-01-01T00:00:05Z".into(),
            evidence: vec![v1::EventRef { node: "n1".into(), id: "s-1".into(), kind: "token_issued".into() }],
            summary: "token j1 issued to cgroup:n1:/a presented by cgroup:n1:/b".into(),
        }),
    ];
    for b in &all {
        match b {
            EventBody::ProcessExec(_)
            | EventBody::ProcessExit(_)
            | EventBody::TokenIssued(_)
            | EventBody::TokenDenied(_)
            | EventBody::CredentialUse(_)
            | EventBody::CredentialFileRead(_)
            | EventBody::AgentStats(_)
            | EventBody::ConfigChange(_)
            | EventBody::CredentialObtained(_)
            | EventBody::Finding(_) => {}
        }
    }
    all
}

#[test]
fn every_kind_round_trips_through_protobuf_and_json() {
    let samples = samples();
    let ids: Vec<u32> = samples.iter().map(EventBody::kind_id).collect();
    assert_eq!(ids, KINDS.iter().map(|(id, _)| *id).collect::<Vec<_>>(), "one sample per kind, in id order");
    for body in samples {
        let spooled = body.encode_event();
        let event = Event::decode(spooled.as_slice()).expect("decodes as an Event");
        assert_eq!(event.body.as_ref(), Some(&body), "protobuf round trip of {}", body.kind());

        let json = body.to_json().expect("serializes");
        let v: Value = serde_json::from_slice(&json).expect("valid JSON");
        assert_eq!(v["kind"], body.kind(), "JSON names its kind");
        assert!(json.starts_with(format!(r#"{{"kind":"{}""#, body.kind()).as_bytes()), "kind first");
        assert_eq!(EventBody::from_json(&json).expect("reads back"), body, "JSON round trip of {}", body.kind());
    }
}

#[test]
fn json_keeps_the_field_names_and_enum_spellings_the_agent_always_wrote() {
    let by_kind = |k: &str| {
        let b = samples().into_iter().find(|b| b.kind() == k).expect("sample");
        serde_json::from_slice::<Value>(&b.to_json().expect("serializes")).expect("JSON")
    };
    let exec = by_kind("process_exec");
    assert_eq!(exec["source"], "procfs_scan");
    assert_eq!(exec["binary"]["path"], "/app/checkout");
    assert_eq!(exec["cgroup"]["path"], "/kubepods/pod");
    assert_eq!(
        exec["workload"],
        json!({
            "kind": "kubernetes_pod", "pod_uid": "0c3d2a4e-5b6f-4a1b-9c8d-7e6f5a4b3c2d", "qos_class": "best_effort",
            "container_id": "ab".repeat(32), "runtime": "cri_o", "unit": null, "user_unit": null, "user_uid": null
        })
    );
    assert_eq!(exec["binary"]["hash_skipped"], "time_budget");
    assert_eq!(exec["binary"]["hash_pending"], false);
    assert_eq!(exec["script"]["source"], "argv");
    assert_eq!(exec["pod"]["owner"]["via"]["name"], "checkout-5d8f7c9b4");
    assert_eq!(exec["pod"]["labels"]["app"], "checkout");
    assert_eq!(exec["run"], "k8s/shop/deployment/checkout/checkout-1");
    let denied = by_kind("token_denied");
    assert_eq!((denied["audience_count"].as_u64(), denied["source"].as_str()), (Some(60), Some("signer")));
    assert_eq!(denied["process"]["pod"]["namespace"], "shop");
    let stats = by_kind("agent_stats");
    assert_eq!((stats["hash"]["pending"].as_u64(), stats["hash"]["skipped_shutdown"].as_u64()), (Some(5), Some(10)));
    assert_eq!(stats["kernel_drops"]["tls_call_lost"], 2);
    // Outside pods (and for the agent's own refusals) pod, run and source are left out.
    let plain: Value = serde_json::from_slice(
        &EventBody::TokenDenied(v1::TokenDenied { process: Some(v1::ProcessRef::default()), ..Default::default() }).to_json().expect("serializes"),
    )
    .expect("JSON");
    assert!(plain.get("source").is_none() && plain["process"].get("pod").is_none() && plain["process"].get("run").is_none(), "{plain}");
    assert_eq!(exec["ancestry"][0]["binary_path"], "/sbin/init");
    let used = by_kind("credential_use");
    assert_eq!(
        (used["class"].as_str(), used["detector"].as_str(), used["protocol"].as_str()),
        (Some("short_lived"), Some("aws_sigv4_presigned"), Some("http2"))
    );
    assert_eq!(used["lifetime_seconds"], 900);
    assert_eq!(used["identifiers"]["access_key_id"], "AKIAEXAMPLE");
    assert_eq!(by_kind("token_denied")["reason"], "binary_hash_mismatch");
    assert_eq!(by_kind("credential_file_read")["file_kind"], "aws_shared_credentials");
    assert_eq!(by_kind("agent_stats")["trace"]["uses_by_class_detector"][0]["class"], "static");
    assert_eq!(used["exchange"]["kind"], "aws_sts_assume_role_with_web_identity");
    assert_eq!((used["count"].as_u64(), used["first_seen"].as_str(), used["last_seen"].as_str()), (Some(42), Some("t0"), Some("t1")));
    assert_eq!(used["identifiers"]["aws_region_set"], json!(["us-east-1", "eu-west-1"]));
    assert_eq!(used["identifiers"]["key_id"], "T0/B1");
    assert_eq!(stats["trace"]["uncovered"][0]["client"], "go_crypto_tls");
    assert_eq!(stats["cpu_by_kind"]["exec"]["us_per_event"], 50.0);
    let finding = by_kind("finding");
    assert_eq!((finding["finding_kind"].as_str(), finding["severity"].as_str()), (Some("token_replayed"), Some("high")));
    assert_eq!(finding["evidence"][0], json!({"node": "n1", "id": "s-1", "kind": "token_issued"}));
    let obtained = by_kind("credential_obtained");
    assert_eq!((obtained["class"].as_str(), obtained["identifier"].as_str()), (Some("short_lived"), Some("ASIAEXAMPLE")));
    assert_eq!((obtained["expires_at"].as_str(), obtained["expires_in"].as_i64()), (Some("2026-11-24T02:00:00Z"), Some(3600)));
    assert_eq!(obtained["presented_jti"], "sigil-jti");
    let bare: Value = serde_json::from_slice(&EventBody::CredentialObtained(Default::default()).to_json().expect("serializes")).expect("JSON");
    assert!(bare.get("identifier").is_none() && bare.get("expires_at").is_none() && bare.get("token_jti").is_none(), "{bare}");

    // Absent identifiers and lifetimes are left out, as before.
    let mut bare = v1::CredentialUse { class: v1::CredentialClass::Static as i32, identifiers: Some(Default::default()), ..Default::default() };
    bare.detector = v1::Detector::ApiKey as i32;
    let v: Value = serde_json::from_slice(&EventBody::CredentialUse(bare).to_json().expect("serializes")).expect("JSON");
    assert_eq!(v["identifiers"], json!({}));
    assert!(v.get("lifetime_seconds").is_none());
    assert!(v.get("exchange").is_none() && v.get("count").is_none() && v.get("first_seen").is_none(), "{v}");
}

#[test]
fn an_unknown_enum_value_from_a_newer_agent_stays_a_number_and_a_bad_name_is_an_error() {
    let body = EventBody::TokenDenied(v1::TokenDenied { reason: 99, ..Default::default() });
    let json = body.to_json().expect("serializes");
    let v: Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(v["reason"], 99);
    assert_eq!(EventBody::from_json(&json).expect("reads back"), body);
    let err = EventBody::from_json(br#"{"kind":"token_denied","reason":"bribed"}"#).expect_err("unknown name");
    assert!(err.to_string().contains("bribed"), "{err}");
    assert!(EventBody::from_json(br#"{"kind":"nonsense"}"#).is_err());
}
