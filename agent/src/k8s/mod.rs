//! Pod identity from the cluster: who a pod is (namespace, service account, name, labels,
//! owner) for the pods of this node, so attestation, policy, events and tokens can name it.
//!
//! The cgroup path gives a pod's UID and nothing else. The rest comes from the API server
//! through kube-rs's `watcher` ([`watch`]): a list, then a watch from the list's
//! resourceVersion, restarted from the last resourceVersion (or bookmark) when it ends,
//! and relisted after a `410 Gone` or an API server restart. [`cache`] holds the result
//! and answers lookups, waiting a short, bounded time for a pod the watch has not
//! delivered yet. [`pod`] turns a `Pod` into what Sigil keeps about it, including its
//! owner and the run key.
//!
//! Why the API server and not the kubelet's pod list (SPIRE's k8s workload attestor reads
//! `/pods` on the kubelet's port 10250): the kubelet endpoint needs the `nodes/proxy`
//! permission, which grants far more than reading pods (exec into any pod on the node
//! through the kubelet API), and it has no watch, so it is polled. A field-selected watch
//! needs only `get/list/watch` on pods and delivers changes as they happen.
pub mod cache;
pub mod pod;
pub mod watch;

pub use cache::{Lookup, PodCache};
pub use pod::{Owner, PodMeta};
