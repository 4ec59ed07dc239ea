//! Request bounds on every network ingest path, against the real `sigil-collector serve`
//! process: an oversized request is refused with a clear error, and what was accepted
//! before it stays stored.
#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sigil_proto::v1::{PushRequest, QueryRequest, ingest_client::IngestClient, query_client::QueryClient};

const LIMIT: usize = 64 * 1024;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn data(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cloudtrail").join(rel)).unwrap()
}

/// One `sigil-collector serve` on free loopback ports, killed on drop.
struct Collector {
    child: Child,
    http: u16,
    grpc: u16,
    _dir: tempfile::TempDir,
}

impl Collector {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (http, grpc) = (free_port(), free_port());
        let db: PathBuf = dir.path().join("c.db");
        let child = Command::new(env!("CARGO_BIN_EXE_sigil-collector"))
            .arg("--db")
            .arg(&db)
            .args(["serve", "--retention-days", "0"])
            .args(["--http-listen", &format!("127.0.0.1:{http}"), "--grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args(["--max-ingest-body-bytes", &LIMIT.to_string(), "--max-grpc-message-bytes", &LIMIT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let c = Self { child, http, grpc, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.request("GET", "/healthz", b"").0 != 200 {
            assert!(Instant::now() < deadline, "collector did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// A plain HTTP/1.1 exchange; (0, "") when the server is not answering yet.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.http)) else { return (0, String::new()) };
        let head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        // The server may refuse before reading the whole body; its answer is what counts.
        let _ = s.write_all(head.as_bytes()).and_then(|()| s.write_all(body));
        let mut response = Vec::new();
        let _ = s.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A valid CloudTrail batch of `n` records with fresh ids, built from a real record.
fn batch(n: usize, prefix: &str) -> Vec<u8> {
    let doc: Value = serde_json::from_slice(&data("iamuser_getobject.json")).unwrap();
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let mut r = doc["Records"][0].clone();
            r["eventID"] = json!(format!("{prefix}-{i}"));
            r
        })
        .collect();
    serde_json::to_vec(&json!({ "Records": records })).unwrap()
}

/// A network peer uploads an audit log larger than the limit: it is refused whole with a
/// 413 that says why, nothing of it is stored, and what was uploaded before (and after)
/// is kept.
#[test]
fn a_network_peer_uploading_an_oversized_audit_log_is_refused_and_nothing_accepted_is_lost() {
    let c = Collector::start();
    let (status, body) = c.request("POST", "/v1/ingest/cloudtrail", &data("webidentity_flow.json"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["stored"], 2);

    let big = batch(200, "oversized");
    assert!(big.len() > LIMIT);
    let (status, body) = c.request("POST", "/v1/ingest/cloudtrail", &big);
    assert_eq!(status, 413, "{body}");
    let error = serde_json::from_str::<Value>(&body).unwrap()["error"].as_str().unwrap().to_owned();
    assert!(error.contains(&format!("larger than {LIMIT} bytes")) && error.contains("nothing from it was stored"), "{error}");
    let (status, _) = c.request("POST", "/v1/ingest/gcp-audit", &big);
    assert_eq!(status, 413);

    assert_eq!(c.request("GET", "/v1/query/trace/9a4c1e77-2b3d-4f60-8a1b-6d2e8b000002", b"").0, 200);
    assert_eq!(c.request("GET", "/v1/query/trace/oversized-0", b"").0, 404);
    let (status, body) = c.request("POST", "/v1/ingest/cloudtrail", &batch(3, "after"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["stored"], 3);
}

/// A network peer sends gRPC messages larger than the limit to Ingest and Query: each is
/// refused with OUT_OF_RANGE naming the limit, and the collector keeps serving.
#[test]
fn a_network_peer_sending_an_oversized_grpc_message_is_refused_with_a_clear_status() {
    let c = Collector::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let url = format!("http://127.0.0.1:{}", c.grpc);
        let mut ingest = IngestClient::connect(url.clone()).await.unwrap();
        let status = ingest.push(PushRequest { node: "n".repeat(LIMIT * 2), ..Default::default() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
        assert!(status.message().contains(&LIMIT.to_string()), "{status:?}");

        let mut query = QueryClient::connect(url).await.unwrap();
        let status = query.ask(QueryRequest { name: "trace".into(), argument: "x".repeat(LIMIT * 2), ..Default::default() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
        let answer = query.ask(QueryRequest { name: "posture".into(), ..Default::default() }).await.unwrap();
        assert!(serde_json::from_slice::<Value>(&answer.into_inner().json).unwrap().is_object());
    });
}
