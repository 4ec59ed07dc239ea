//! A raw Workload API client for negative tests: it can leave out the security header
//! or add metadata a caller might hope would change who it is.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use sigil_proto::spiffe::{JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest, spiffe_workload_api_client::SpiffeWorkloadApiClient};
use tokio::net::UnixStream;
use tonic::{Request, Status, metadata::MetadataValue, transport::Endpoint};

pub struct Call<'a> {
    pub audience: Vec<String>,
    pub spiffe_id: String,
    pub header: bool,
    pub metadata: Vec<(&'static str, &'a str)>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn connect(socket: &Path) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    let path: PathBuf = socket.to_owned();
    let channel = Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap();
    SpiffeWorkloadApiClient::new(channel)
}

fn with_meta<T>(body: T, header: bool, metadata: &[(&'static str, &str)]) -> Request<T> {
    let mut req = Request::new(body);
    if header {
        req.metadata_mut().insert("workload.spiffe.io", MetadataValue::from_static("true"));
    }
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    req
}

/// FetchJWTSVID from this process; Ok(tokens) or the gRPC status.
pub fn fetch(socket: &Path, call: Call<'_>) -> Result<Vec<String>, Status> {
    runtime().block_on(async {
        let mut c = connect(socket).await;
        let req = with_meta(JwtsvidRequest { audience: call.audience, spiffe_id: call.spiffe_id }, call.header, &call.metadata);
        c.fetch_jwtsvid(req).await.map(|r| r.into_inner().svids.into_iter().map(|s| s.svid).collect())
    })
}

/// ValidateJWTSVID; Ok(spiffe id) or the gRPC status.
pub fn validate(socket: &Path, token: &str, audience: &str) -> Result<String, Status> {
    runtime().block_on(async {
        let mut c = connect(socket).await;
        let req = with_meta(ValidateJwtsvidRequest { audience: audience.into(), svid: token.into() }, true, &[]);
        c.validate_jwtsvid(req).await.map(|r| r.into_inner().spiffe_id)
    })
}

// === raw HTTP/2 ===
//
// Tests that hand a connection to another process (fork, exec, SCM_RIGHTS) need the
// request as bytes that any process can write, and the answer decoded from bytes.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One HTTP/2 frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The client preface and an empty SETTINGS frame.
pub fn preface() -> Vec<u8> {
    let mut v = PREFACE.to_vec();
    v.extend(frame(0x4, 0, 0, &[]));
    v
}

/// The header block of a FetchJWTSVID request (with the security header), encoded with
/// `enc` (one encoder per connection: later blocks refer to its table).
pub fn fetch_headers(enc: &mut loona_hpack::Encoder<'static>) -> Vec<u8> {
    enc.encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", b"/SpiffeWorkloadAPI/FetchJWTSVID"),
        (b":authority", b"localhost"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"workload.spiffe.io", b"true"),
    ])
}

/// FetchJWTSVID for `audience` on stream 1, with the security header: the bytes that
/// follow the preface.
pub fn fetch_request(audience: &[&str]) -> Vec<u8> {
    use prost::Message;
    let block = fetch_headers(&mut loona_hpack::Encoder::new());
    let body = JwtsvidRequest { audience: audience.iter().map(|a| a.to_string()).collect(), spiffe_id: String::new() }.encode_to_vec();
    let mut msg = vec![0u8];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes());
    msg.extend(body);
    let mut out = frame(HEADERS, END_HEADERS, 1, &block);
    let chunks: Vec<&[u8]> = msg.chunks(16_384).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend(frame(DATA, if i + 1 == chunks.len() { END_STREAM } else { 0 }, 1, chunk));
    }
    out
}

/// What the agent answered on stream 1: the tokens, or (gRPC status code, message).
pub fn decode_answer(bytes: &[u8]) -> Result<Vec<String>, (i32, String)> {
    use prost::Message;
    let mut dec = loona_hpack::Decoder::new();
    let (mut status, mut message, mut data) = (None, String::new(), Vec::new());
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let (kind, stream) = (rest[3], u32::from_be_bytes([rest[5] & 0x7f, rest[6], rest[7], rest[8]]));
        let Some(payload) = rest.get(9..9 + len) else { break };
        if kind == HEADERS {
            for (n, v) in dec.decode(payload).map_err(|e| (-1, format!("undecodable headers: {e:?}")))? {
                match n.as_slice() {
                    b"grpc-status" => status = String::from_utf8_lossy(&v).parse::<i32>().ok(),
                    b"grpc-message" => message = String::from_utf8_lossy(&v).replace("%20", " ").replace("%27", "'"),
                    _ => {}
                }
            }
        } else if kind == DATA && stream == 1 {
            data.extend_from_slice(payload);
        }
        rest = &rest[9 + len..];
    }
    match status {
        Some(0) => {
            let resp = JwtsvidResponse::decode(data.get(5..).unwrap_or_default()).map_err(|e| (-1, e.to_string()))?;
            Ok(resp.svids.into_iter().map(|s| s.svid).collect())
        }
        Some(code) => Err((code, message)),
        None => Err((-1, format!("no gRPC status in {} bytes", bytes.len()))),
    }
}
