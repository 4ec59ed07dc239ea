//! `sigil-agent sign-bench`: what signing one token costs on this machine, so `cargo
//! xtask bench` can set the Workload API's latency against it in the same run (the goal:
//! a p50 within three ES256 signatures).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::{
    jwt::{self, Audience, Claims},
    keys::KeyManager,
};

/// Mean µs of one bare ES256 signature over a token's signing input, and of a whole
/// JWT-SVID (claims serialised, signed, encoded), over `repeat` of each.
pub fn measure(repeat: u32) -> Result<serde_json::Value> {
    let keys = KeyManager::new(Duration::from_secs(3600), Duration::from_secs(3600)).map_err(|e| anyhow!("{e}"))?;
    // The claims of a pod's token, as the issuer fills them.
    let claims = Claims {
        iss: "https://sigil.example.com".into(),
        sub: "spiffe://example.org/ns/payments/sa/checkout".into(),
        aud: Audience::from_list(vec!["sts.amazonaws.com".into()]),
        exp: 1_800_000_600,
        iat: 1_800_000_000,
        jti: "8f14e45fceea167a5a36dedd4bea2543".into(),
        sigil_node: "node-17".into(),
        sigil_exec_id: "a3f1c2d4e5b6978812345678".into(),
        sigil_cgroup: "/kubepods.slice/kubepods-pod8d1f.slice/cri-containerd-4c1e.scope".into(),
        sigil_pod_uid: Some("8d1f0c1e-6a2b-4c3d-9e8f-0a1b2c3d4e5f".into()),
        sigil_container_id: Some("4c1e9b7a".repeat(8)),
        sigil_binary_sha256: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into()),
        sigil_k8s_ns: Some("payments".into()),
        sigil_k8s_sa: Some("checkout".into()),
        sigil_k8s_pod: Some("checkout-7d9f8b6c5d-x2k4j".into()),
        sigil_run: Some("k8s/payments/deployment/checkout".into()),
    };
    let token = jwt::sign(&keys, &claims).map_err(|e| anyhow!("{e}"))?;
    let input = token.rsplit_once('.').map(|(input, _)| input.as_bytes().to_vec()).unwrap_or_default();
    let repeat = repeat.max(1);
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?;
        let started = Instant::now();
        for _ in 0..repeat {
            f()?;
        }
        Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(repeat))
    };
    let es256_us = time(&mut || keys.sign(&input).map(drop).map_err(|e| anyhow!("{e}")))?;
    let jwt_us = time(&mut || jwt::sign(&keys, &claims).map(drop).map_err(|e| anyhow!("{e}")))?;
    Ok(serde_json::json!({ "es256_us": es256_us, "jwt_us": jwt_us, "token_bytes": token.len() }))
}
