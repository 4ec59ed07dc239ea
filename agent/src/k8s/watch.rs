//! The pod watch: kube-rs's `watcher` over this node's pods, feeding [`PodCache`].
//!
//! `watcher` lists (`GET /api/v1/pods?fieldSelector=spec.nodeName=<node>`), then watches
//! from the list's resourceVersion with bookmarks on. A watch that ends is resumed from
//! the last resourceVersion or bookmark; a `410 Gone` (that version was compacted) or a
//! failed resume after an API server restart starts over with a fresh list, which
//! replaces the cache as a whole ([`PodCache::replace_all`]). Errors are retried with
//! client-go's backoff (0.8 s doubling to 30 s, with jitter).

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt,
        watcher::{self, Event, watcher},
    },
};
use thiserror::Error;
use tokio_stream::StreamExt;
use tracing::{info, warn};

use super::{
    cache::PodCache,
    pod::{PodMeta, cgroup_uids},
};

/// Where the API server is and how to authenticate to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSource {
    /// The pod's service account token and CA (`/var/run/secrets/kubernetes.io/serviceaccount`)
    /// and `KUBERNETES_SERVICE_HOST`/`_PORT`: what a DaemonSet uses.
    InCluster,
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// A bare URL without credentials (a local test server, `kubectl proxy`).
    Url(String),
}

/// `sigil-agent run --kubernetes`: where the API server is, and how long an issuance
/// request waits for a pod the watch has not delivered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    pub api: ApiSource,
    pub pod_wait: Duration,
}

/// How long start-up waits for the first list before attesting running processes (they
/// are attested either way; with the list, their records name their pods).
const FIRST_LIST: Duration = Duration::from_secs(5);

/// Connects (a bad kubeconfig or missing in-cluster credentials fail here, at start-up),
/// spawns the watch on `rt`, and waits a little for the first list.
pub fn start(
    cfg: &WatchConfig,
    node: &str,
    rt: &tokio::runtime::Handle,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<Arc<PodCache>, ClientError> {
    let client = rt.block_on(client(&cfg.api))?;
    let cache = Arc::new(PodCache::new(cfg.pod_wait));
    rt.spawn(run(client, node.to_owned(), cache.clone(), stop));
    if !cache.wait_synced(FIRST_LIST) {
        warn!("pod watch: no list of node {node}'s pods within {FIRST_LIST:?}; pod processes are refused tokens until it arrives");
    }
    Ok(cache)
}

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("in-cluster Kubernetes configuration: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    #[error("--kube-api {0:?} is not a URL")]
    Url(String),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client for `source`. Needs a Tokio runtime (the TLS connector is built on it).
pub async fn client(source: &ApiSource) -> Result<Client, ClientError> {
    let config = match source {
        ApiSource::InCluster => kube::Config::incluster()?,
        ApiSource::Kubeconfig(path) => {
            let bad = |reason: String| ClientError::Kubeconfig { path: path.clone(), reason };
            let kc = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.map_err(|e| bad(e.to_string()))?
        }
        ApiSource::Url(url) => kube::Config::new(url.parse().map_err(|_| ClientError::Url(url.clone()))?),
    };
    Ok(Client::try_from(config)?)
}

/// Keeps `cache` in step with the pods bound to `node` until `stop` resolves.
pub async fn run(client: Client, node: String, cache: Arc<PodCache>, stop: impl Future<Output = ()>) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let events = watcher(api, config).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut stop = std::pin::pin!(stop);
    // A list in progress: applied only once complete, so a relist never shows a half-empty node.
    let mut listing: Vec<(Vec<String>, PodMeta)> = Vec::new();
    let mut failing = false;
    loop {
        let event = tokio::select! {
            () = &mut stop => return,
            event = events.next() => event,
        };
        let Some(event) = event else { return };
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(pod)) => listing.push((cgroup_uids(&pod), PodMeta::from(&pod))),
            Ok(Event::InitDone) => {
                let listed = std::mem::take(&mut listing);
                let n = listed.len();
                cache.replace_all(listed);
                let relists = cache.stats().relists;
                info!("pod watch: listed {n} pods bound to node {node} (list #{relists})");
                failing = false;
            }
            Ok(Event::Apply(pod)) => {
                cache.apply(cgroup_uids(&pod), PodMeta::from(&pod));
                failing = false;
            }
            Ok(Event::Delete(pod)) => cache.remove(cgroup_uids(&pod)),
            Err(e) => {
                // 410 Gone is routine (the watcher relists); anything else may persist
                // (RBAC, network): say so once per episode, then quietly retry.
                let gone = matches!(&e, watcher::Error::WatchError(s) if s.code == 410);
                if gone {
                    info!("pod watch: {e}; relisting");
                } else if !failing {
                    warn!("pod watch: {e}; retrying with backoff (answers come from the last list until then)");
                    failing = true;
                }
            }
        }
    }
}
