//! A local stand-in for kube-apiserver's pods list/watch (`GET /api/v1/pods`), for tests
//! on machines where no API server can be installed.
//!
//! It speaks the protocol the real one does, as described in the Kubernetes API reference
//! ("API Concepts": efficient detection of changes, watch bookmarks, 410 Gone):
//! - `GET /api/v1/pods[?fieldSelector=spec.nodeName=<node>]` answers a JSON `PodList` whose
//!   `metadata.resourceVersion` is the version the list is consistent with;
//! - `...&watch=true&resourceVersion=<rv>` answers a chunked stream of newline-separated
//!   `{"type":"ADDED"|"MODIFIED"|"DELETED","object":{...Pod...}}` events, every change after
//!   `<rv>`, then live ones, ending after `timeoutSeconds`;
//! - with `allowWatchBookmarks=true` it sends `{"type":"BOOKMARK","object":{"kind":"Pod",
//!   "apiVersion":"v1","metadata":{"resourceVersion":"<rv>"}}}` every half second;
//! - a resume from a version older than what it still remembers answers
//!   `{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired",...}}`, as
//!   after etcd compaction or an API server restart.
//!
//! [`FakeApiServer::start_tls`] serves HTTPS with a certificate from a fresh test CA and
//! demands a bearer token, as the in-cluster endpoint does; [`FakeApiServer::kubeconfig`]
//! writes the kubeconfig a client needs for it.
//!
//! Tests drive it: create, relabel and delete pods, end every open watch, forget history
//! and send 410 to open watches, or stop and restart the server on the same port (state
//! survives, as in etcd; the watch history does not, as in the API server's watch cache).
#![allow(clippy::unwrap_used)] // test server: a poisoned lock or a runtime failure should stop the test loudly

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};
use tokio_stream::wrappers::ReceiverStream;

/// What open watches are told.
#[derive(Clone, Debug)]
enum Msg {
    Event {
        rv: u64,
        kind: &'static str,
        pod: Value,
    },
    /// Send `410 Gone` and end (the history they would resume from is gone).
    Gone,
    /// End the stream, as a watch timeout or a load balancer would.
    Close,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// `namespace/name` -> Pod
    pods: BTreeMap<String, Value>,
    /// Every change, for watches that resume from an older version.
    history: Vec<(u64, &'static str, Value)>,
    /// Watches from a version before this one get 410 Gone.
    oldest: u64,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Msg>,
    lists: AtomicU64,
    watches: AtomicU64,
    /// The bearer token requests must carry (TLS mode).
    token: Option<String>,
}

/// HTTPS material of a TLS-mode server.
struct Tls {
    acceptor: TlsAcceptor,
    ca: PathBuf,
}

/// The running stand-in (its own Tokio runtime, so tests stay synchronous).
pub struct FakeApiServer {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    addr: SocketAddr,
    serving: Option<tokio::task::JoinHandle<()>>,
    tls: Option<Tls>,
}

fn node_of(pod: &Value) -> Option<&str> {
    pod["spec"]["nodeName"].as_str()
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn line(v: &Value) -> Result<String, Infallible> {
    Ok(format!("{v}\n"))
}

fn gone(from: u64, oldest: u64) -> Value {
    json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {from} ({oldest})"), "reason": "Expired", "code": 410}})
}

fn openssl(args: &[&str]) {
    let st = Command::new("openssl").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
    assert!(st.success(), "openssl {args:?}");
}

/// A test CA (`ca.crt`) and a server certificate for 127.0.0.1 it signed, in `dir`.
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(f).display().to_string();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=sigil test cluster CA",
                "-keyout",
                &p("ca.key"),
                "-out",
                &p("ca.crt"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        ]
        .concat(),
    );
    openssl(&[&["req"][..], &ec, &["-subj", "/CN=kube-apiserver", "-keyout", &p("tls.key"), "-out", &p("tls.csr")]].concat());
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("tls.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("tls.crt"),
    ]);
    (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"))
}

impl FakeApiServer {
    /// Plain HTTP, no authentication (`sigil-agent run --kube-api <url>`).
    pub fn start() -> Self {
        Self::launch(None, None)
    }

    /// HTTPS with a certificate from a fresh test CA in `dir`, requiring `Authorization:
    /// Bearer <token>` as the real API server does for a service account.
    pub fn start_tls(dir: &Path, token: &str) -> Self {
        let (ca, cert, key) = test_ca(dir);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Self::launch(Some(Tls { acceptor: TlsAcceptor::from(Arc::new(config)), ca }), Some(token.to_owned()))
    }

    fn launch(tls: Option<Tls>, token: Option<String>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let shared = Arc::new(Shared {
            store: Mutex::new(Store { rv: 100, ..Default::default() }),
            events: broadcast::channel(1024).0,
            lists: AtomicU64::new(0),
            watches: AtomicU64::new(0),
            token,
        });
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut me = Self { rt, shared, addr, serving: None, tls };
        me.serve(listener);
        me
    }

    /// `http(s)://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Writes a kubeconfig for this server (its CA and token in TLS mode) to `path`.
    pub fn kubeconfig(&self, path: &Path) {
        let ca = self.tls.as_ref().map(|t| format!("\n    certificate-authority: {}", t.ca.display())).unwrap_or_default();
        let token = self.shared.token.as_ref().map(|t| format!("\n    token: {t}")).unwrap_or_default();
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: test\n  cluster:\n    server: {}{ca}\n\
             users:\n- name: agent\n  user:{token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: agent\n",
            self.url()
        );
        std::fs::write(path, text).unwrap();
    }

    /// Lists answered so far (each relist by a client is one more).
    pub fn lists(&self) -> u64 {
        self.shared.lists.load(Ordering::Relaxed)
    }

    /// Watches opened so far.
    pub fn watches(&self) -> u64 {
        self.shared.watches.load(Ordering::Relaxed)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new().route("/api/v1/pods", get(pods)).with_state(self.shared.clone());
        let tls = self.tls.as_ref().map(|t| t.acceptor.clone());
        self.serving = Some(self.rt.spawn(async move {
            // Connections live in this set: aborting the accept loop drops them all, as a
            // killed API server would.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let svc = TowerToHyperService::new(app.clone());
                let tls = tls.clone();
                conns.spawn(async move {
                    let http = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        }));
    }

    /// Kills the server: every connection and watch ends, nothing answers on the port.
    pub fn stop(&mut self) {
        let _ = self.shared.events.send(Msg::Close);
        if let Some(h) = self.serving.take() {
            h.abort();
            let _ = self.rt.block_on(h);
        }
    }

    /// Starts again on the same port. Pods and resource versions survive (they live in
    /// etcd); the watch history does not, so clients resuming from before get 410.
    pub fn restart(&mut self) {
        {
            let mut st = self.shared.store.lock().unwrap();
            st.oldest = st.rv;
            st.history.clear();
        }
        let listener = self.rt.block_on(tokio::net::TcpListener::bind(self.addr)).unwrap();
        self.serve(listener);
    }

    /// Ends every open watch normally (clients resume from their last version).
    pub fn end_watches(&self) {
        let _ = self.shared.events.send(Msg::Close);
    }

    /// Forgets the watch history and sends 410 Gone to open watches: clients must relist.
    pub fn expire_history(&self) {
        {
            let mut st = self.shared.store.lock().unwrap();
            st.oldest = st.rv;
            st.history.clear();
        }
        let _ = self.shared.events.send(Msg::Gone);
    }

    /// A Pod object as the API server returns it.
    pub fn pod(spec: &PodSpec<'_>) -> Value {
        let mut meta = json!({
            "name": spec.name, "namespace": spec.namespace, "uid": spec.uid,
            "creationTimestamp": "2026-11-23T12:00:00Z", "labels": spec.labels,
        });
        if let Some((kind, name)) = spec.owner {
            let api_version = if kind == "Job" { "batch/v1" } else { "apps/v1" };
            meta["ownerReferences"] = json!([{ "apiVersion": api_version, "kind": kind, "name": name,
                "uid": "00000000-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true }]);
        }
        json!({
            "kind": "Pod", "apiVersion": "v1", "metadata": meta,
            "spec": { "nodeName": spec.node, "serviceAccountName": spec.service_account,
                      "containers": [{"name": "app", "image": "registry.example/app:1"}] },
            "status": { "phase": "Running" },
        })
    }

    /// Creates or replaces a pod (ADDED or MODIFIED to watchers).
    pub fn put_pod(&self, pod: Value) {
        self.change(|st| {
            let k = key(pod["metadata"]["namespace"].as_str().unwrap(), pod["metadata"]["name"].as_str().unwrap());
            let kind = if st.pods.contains_key(&k) { "MODIFIED" } else { "ADDED" };
            Some((k, kind, pod))
        });
    }

    /// Replaces a pod's labels (MODIFIED to watchers).
    pub fn relabel(&self, namespace: &str, name: &str, labels: Value) {
        self.change(|st| {
            let k = key(namespace, name);
            let mut pod = st.pods.get(&k).cloned().expect("relabelling a pod that exists");
            pod["metadata"]["labels"] = labels;
            Some((k, "MODIFIED", pod))
        });
    }

    /// Replaces a pod's labels without telling watchers or keeping the change in the watch
    /// history, as when a watch cache loses events: only a relist can reveal it.
    pub fn relabel_unannounced(&self, namespace: &str, name: &str, labels: Value) {
        let mut st = self.shared.store.lock().unwrap();
        st.rv += 1;
        let rv = st.rv.to_string();
        let pod = st.pods.get_mut(&key(namespace, name)).expect("relabelling a pod that exists");
        pod["metadata"]["labels"] = labels;
        pod["metadata"]["resourceVersion"] = json!(rv);
    }

    /// Deletes a pod (DELETED with its last state to watchers).
    pub fn delete(&self, namespace: &str, name: &str) {
        self.change(|st| {
            let k = key(namespace, name);
            let pod = st.pods.get(&k).cloned().expect("deleting a pod that exists");
            Some((k, "DELETED", pod))
        });
    }

    /// Applies one change under a new resource version, records it and tells watchers.
    fn change(&self, f: impl FnOnce(&Store) -> Option<(String, &'static str, Value)>) {
        let mut st = self.shared.store.lock().unwrap();
        let Some((k, kind, mut pod)) = f(&st) else { return };
        st.rv += 1;
        let rv = st.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        if kind == "DELETED" {
            st.pods.remove(&k);
        } else {
            st.pods.insert(k, pod.clone());
        }
        st.history.push((rv, kind, pod.clone()));
        // Sent under the lock, so a watch that subscribes under it misses nothing.
        let _ = self.shared.events.send(Msg::Event { rv, kind, pod });
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a test pod looks like.
pub struct PodSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub node: &'a str,
    pub service_account: &'a str,
    pub labels: Value,
    /// (kind, name) of the controlling owner reference.
    pub owner: Option<(&'a str, &'a str)>,
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn pods(State(sh): State<Arc<Shared>>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(token) = &sh.token {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given != Some(format!("Bearer {token}").as_str()) {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized".into());
        }
    }
    let node = match q.get("fieldSelector").map(String::as_str) {
        None | Some("") => None,
        Some(f) => match f.strip_prefix("spec.nodeName=") {
            Some(n) if !n.contains(',') => Some(n.to_owned()),
            _ => return status(StatusCode::BAD_REQUEST, "BadRequest", format!("unsupported field selector {f:?}")),
        },
    };
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") { watch(sh, &q, node) } else { list(&sh, node.as_deref()) }
}

fn list(sh: &Shared, node: Option<&str>) -> Response {
    sh.lists.fetch_add(1, Ordering::Relaxed);
    let st = sh.store.lock().unwrap();
    let items: Vec<Value> = st
        .pods
        .values()
        .filter(|p| node.is_none_or(|n| node_of(p) == Some(n)))
        .map(|p| {
            // List items carry no kind/apiVersion; the list does.
            let mut p = p.clone();
            if let Some(o) = p.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            p
        })
        .collect();
    let body = json!({"kind": "PodList", "apiVersion": "v1",
                      "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn watch(sh: Arc<Shared>, q: &HashMap<String, String>, node: Option<String>) -> Response {
    sh.watches.fetch_add(1, Ordering::Relaxed);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = Duration::from_secs(q.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800));
    let (tx, rx) = mpsc::channel::<Result<String, Infallible>>(256);
    let matches = move |pod: &Value| node.as_deref().is_none_or(|n| node_of(pod) == Some(n));
    // Under the lock: what to replay, and a subscription to everything after it.
    let (from, backlog, live, expired) = {
        let st = sh.store.lock().unwrap();
        let from = match q.get("resourceVersion").map(String::as_str) {
            // "" or "0": start from the current state.
            None | Some("") | Some("0") => st.rv,
            Some(v) => match v.parse::<u64>() {
                Ok(v) => v,
                Err(_) => return status(StatusCode::BAD_REQUEST, "BadRequest", format!("invalid resourceVersion {v:?}")),
            },
        };
        let expired = (from < st.oldest).then_some(st.oldest);
        let backlog: Vec<(u64, &'static str, Value)> = st.history.iter().filter(|(rv, _, p)| *rv > from && matches(p)).cloned().collect();
        (from, backlog, sh.events.subscribe(), expired)
    };
    tokio::spawn(async move {
        if let Some(oldest) = expired {
            let _ = tx.send(line(&gone(from, oldest))).await;
            return;
        }
        let mut live = live;
        let mut last = from;
        for (rv, kind, pod) in backlog {
            if tx.send(line(&json!({"type": kind, "object": pod}))).await.is_err() {
                return;
            }
            last = rv;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let out = tokio::select! {
                () = &mut deadline => return,
                _ = tick.tick(), if bookmarks => json!({"type": "BOOKMARK", "object": {
                    "kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": last.to_string()}}}),
                msg = live.recv() => match msg {
                    Ok(Msg::Event { rv, kind, pod }) if rv > last && matches(&pod) => {
                        last = rv;
                        json!({"type": kind, "object": pod})
                    }
                    Ok(Msg::Event { .. }) => continue,
                    // Fell behind the broadcast: this stream cannot be complete any more.
                    Ok(Msg::Gone) | Err(broadcast::error::RecvError::Lagged(_)) => gone(last, last + 1),
                    Ok(Msg::Close) | Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            let end = out["type"] == "ERROR";
            if tx.send(line(&out)).await.is_err() || end {
                return;
            }
        }
    });
    ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(ReceiverStream::new(rx))).into_response()
}
