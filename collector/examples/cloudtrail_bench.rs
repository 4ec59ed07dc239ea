//! Inputs and probes for `cargo xtask bench` (CloudTrail at scale), kept next to the code
//! they exercise so they build against the collector's own types:
//!
//! - `generate N FILE`: N realistic CloudTrail records (the mix a busy account delivers:
//!   S3 data events under assumed roles, EC2/KMS/DynamoDB calls, web-identity role
//!   assumptions, denied IAM calls) as one `{"Records":[...]}` delivery document.
//! - `correlate-cost DIR K...`: for each K, stores K cloud actions nobody can attribute,
//!   then times the correlation pass that every agent push triggers; prints JSON.
#![allow(clippy::unwrap_used)] // a benchmark driver: a failed step should stop it loudly

use std::{
    io::{BufWriter, Write},
    path::Path,
    time::Instant,
};

use sigil_collector::{
    cloud::cloudtrail,
    store::{Store, sqlite::SqliteStore},
};

const BASE_TIME: i64 = 1_795_392_000; // 2026-11-23T00:00:00Z

fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Records span less than a day from BASE_TIME in every use here.
    assert_eq!(days, BASE_TIME / 86_400, "generator time range");
    format!("2026-11-23T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// One record, varied by `i` the way a real account's traffic varies.
fn record(i: u64, id_prefix: &str) -> String {
    let time = rfc3339(BASE_TIME + (i / 16) as i64 % 86_000);
    let id = format!("{id_prefix}{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", i as u32, (i >> 32) as u16, i % 4096, (i / 7) % 4096, i * 2_654_435_761 % (1 << 48));
    let req = format!("SIGILBENCH{:016X}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // As in a real account, every role assumption hands out its own temporary key, used
    // by the calls that follow it (a block of 320 records shares one session).
    let session = i / 320;
    let role = session % 64;
    let assumed = format!(
        r#"{{"type":"AssumedRole","principalId":"AROASIGILBENCHROLE{role:02}:ci-{session}","arn":"arn:aws:sts::111122223333:assumed-role/sigil-bench-{role}/ci-{session}","accountId":"111122223333","accessKeyId":"ASIASIGILBENCH{session:06}","sessionContext":{{"sessionIssuer":{{"type":"Role","principalId":"AROASIGILBENCHROLE{role:02}","arn":"arn:aws:iam::111122223333:role/sigil-bench-{role}","accountId":"111122223333","userName":"sigil-bench-{role}"}},"attributes":{{"creationDate":"{time}","mfaAuthenticated":"false"}}}}}}"#
    );
    let user = i % 16;
    let iam_user = format!(
        r#"{{"type":"IAMUser","principalId":"AIDASIGILBENCHUSER{user:02}","arn":"arn:aws:iam::111122223333:user/bench-{user}","accountId":"111122223333","accessKeyId":"AKIASIGILBENCH{user:06}","userName":"bench-{user}"}}"#
    );
    let tls =
        r#""tlsDetails":{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"sigil-bench.s3.us-east-1.amazonaws.com"}"#;
    let agent = "[aws-cli/2.17.20 md/awscrt#0.20.11 ua/2.0 os/linux#6.8.0 md/arch#x86_64 lang/python#3.11.9 md/pyimpl#CPython cfg/retry-mode#standard]";
    let head = format!(
        r#""eventVersion":"1.10","eventTime":"{time}","awsRegion":"us-east-1","sourceIPAddress":"10.{}.{}.{}","userAgent":"{agent}","requestID":"{req}","eventID":"{id}""#,
        i % 200,
        i / 200 % 250,
        i % 250 + 1
    );
    let tail = r#""recipientAccountId":"111122223333""#;
    match i % 20 {
        0..=9 => {
            let (name, read) = if i.is_multiple_of(3) { ("PutObject", false) } else { ("GetObject", true) };
            format!(
                r#"{{{head},"userIdentity":{assumed},"eventSource":"s3.amazonaws.com","eventName":"{name}","requestParameters":{{"bucketName":"sigil-bench","Host":"sigil-bench.s3.us-east-1.amazonaws.com","key":"builds/{i}/artifact.tar.gz"}},"responseElements":null,"additionalEventData":{{"SignatureVersion":"SigV4","CipherSuite":"TLS_AES_128_GCM_SHA256","bytesTransferredIn":0,"AuthenticationMethod":"AuthHeader","bytesTransferredOut":{}}},"resources":[{{"type":"AWS::S3::Object","ARN":"arn:aws:s3:::sigil-bench/builds/{i}/artifact.tar.gz"}},{{"accountId":"111122223333","type":"AWS::S3::Bucket","ARN":"arn:aws:s3:::sigil-bench"}}],"eventType":"AwsApiCall","managementEvent":false,"readOnly":{read},"eventCategory":"Data",{tls},{tail}}}"#,
                i * 37 % 900_000
            )
        }
        10..=13 => format!(
            r#"{{{head},"userIdentity":{iam_user},"eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","requestParameters":{{"instancesSet":{{}},"filterSet":{{"items":[{{"name":"tag:team","valueSet":{{"items":[{{"value":"bench"}}]}}}}]}}}},"responseElements":null,"readOnly":true,"eventType":"AwsApiCall","managementEvent":true,"eventCategory":"Management",{tail}}}"#
        ),
        14 | 15 => format!(
            r#"{{{head},"userIdentity":{assumed},"eventSource":"kms.amazonaws.com","eventName":"Decrypt","requestParameters":{{"encryptionAlgorithm":"SYMMETRIC_DEFAULT","encryptionContext":{{"aws:s3:arn":"arn:aws:s3:::sigil-bench/builds/{i}/artifact.tar.gz"}}}},"responseElements":null,"resources":[{{"accountId":"111122223333","type":"AWS::KMS::Key","ARN":"arn:aws:kms:us-east-1:111122223333:key/5e1b0000-bench-4000-8000-00000000{:04}"}}],"readOnly":true,"eventType":"AwsApiCall","managementEvent":true,"eventCategory":"Management",{tail}}}"#,
            i % 10_000
        ),
        16 => format!(
            r#"{{{head},"userIdentity":{{"type":"WebIdentityUser","principalId":"arn:aws:iam::111122223333:oidc-provider/token.actions.githubusercontent.com:sts.amazonaws.com:repo:sigil-dev/bench:ref:refs/heads/main","userName":"repo:sigil-dev/bench:ref:refs/heads/main","identityProvider":"token.actions.githubusercontent.com"}},"eventSource":"sts.amazonaws.com","eventName":"AssumeRoleWithWebIdentity","requestParameters":{{"roleArn":"arn:aws:iam::111122223333:role/sigil-bench-{role}","roleSessionName":"gha-run-{i}","durationSeconds":3600}},"responseElements":{{"credentials":{{"accessKeyId":"ASIASIGILBENCH{session:06}","sessionToken":"redacted","expiration":"Nov 23, 2026, 11:59:59 PM"}},"subjectFromWebIdentityToken":"repo:sigil-dev/bench:ref:refs/heads/main","assumedRoleUser":{{"assumedRoleId":"AROASIGILBENCHROLE{role:02}:gha-run-{i}","arn":"arn:aws:sts::111122223333:assumed-role/sigil-bench-{role}/gha-run-{i}"}},"provider":"arn:aws:iam::111122223333:oidc-provider/token.actions.githubusercontent.com","audience":"sts.amazonaws.com"}},"readOnly":true,"eventType":"AwsApiCall","managementEvent":true,"eventCategory":"Management",{tail}}}"#
        ),
        17 => format!(
            r#"{{{head},"userIdentity":{iam_user},"eventSource":"iam.amazonaws.com","eventName":"ListRoles","errorCode":"AccessDenied","errorMessage":"User: arn:aws:iam::111122223333:user/bench-{user} is not authorized to perform: iam:ListRoles on resource: arn:aws:iam::111122223333:role/ because no identity-based policy allows the iam:ListRoles action","requestParameters":null,"responseElements":null,"readOnly":true,"eventType":"AwsApiCall","managementEvent":true,"eventCategory":"Management",{tail}}}"#
        ),
        _ => format!(
            r#"{{{head},"userIdentity":{assumed},"eventSource":"dynamodb.amazonaws.com","eventName":"GetItem","requestParameters":{{"tableName":"sigil-bench","key":{{"pk":"run#{i}"}},"consistentRead":false}},"responseElements":null,"resources":[{{"accountId":"111122223333","type":"AWS::DynamoDB::Table","ARN":"arn:aws:dynamodb:us-east-1:111122223333:table/sigil-bench"}}],"readOnly":true,"eventType":"AwsApiCall","managementEvent":false,"eventCategory":"Data",{tls},{tail}}}"#
        ),
    }
}

/// Writes `n` records as one delivery document.
fn generate(n: u64, path: &Path, id_prefix: &str) -> u64 {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    out.write_all(b"{\"Records\":[").unwrap();
    let mut bytes = 0;
    for i in 0..n {
        if i > 0 {
            out.write_all(b",").unwrap();
        }
        let r = record(i, id_prefix);
        bytes += r.len() as u64;
        out.write_all(r.as_bytes()).unwrap();
    }
    out.write_all(b"]}").unwrap();
    out.flush().unwrap();
    bytes
}

/// Median seconds of the correlation pass with `k` unattributed actions stored.
fn correlate_cost(dir: &Path, ks: &[u64]) -> serde_json::Value {
    let store = SqliteStore::open(&dir.join("correlate.db")).unwrap();
    let mut stored = 0;
    let mut figures = serde_json::Map::new();
    for &k in ks {
        // Top up to k unattributed actions, in delivery-sized batches.
        while stored < k {
            let batch = (k - stored).min(20_000);
            let file = dir.join("batch.json");
            generate(batch, &file, &format!("k{stored}-"));
            let parsed = cloudtrail::parse("batch", &std::fs::read(&file).unwrap());
            assert!(parsed.errors.is_empty(), "{:?}", parsed.errors.first());
            stored += u64::from(store.ingest_cloud(&parsed.actions).unwrap().stored);
        }
        // The first pass settles what can be settled; the ones after it are what each
        // further agent push pays while the unattributed actions stay.
        store.correlate().unwrap();
        let mut times: Vec<f64> = (0..3)
            .map(|_| {
                let start = Instant::now();
                store.correlate().unwrap();
                start.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        figures.insert(k.to_string(), serde_json::json!((times[1] * 100.0).round() / 100.0));
    }
    serde_json::Value::Object(figures)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["generate", n, file] => {
            let bytes = generate(n.parse().unwrap(), Path::new(file), "");
            println!("{}", serde_json::json!({"records": n.parse::<u64>().unwrap(), "record_bytes": bytes}));
        }
        ["correlate-cost", dir, ks @ ..] => {
            let ks: Vec<u64> = ks.iter().map(|k| k.parse().unwrap()).collect();
            println!("{}", correlate_cost(Path::new(dir), &ks));
        }
        _ => {
            eprintln!("usage: cloudtrail_bench generate N FILE | correlate-cost DIR K...");
            std::process::exit(64);
        }
    }
}
