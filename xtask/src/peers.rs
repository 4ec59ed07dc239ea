//! Real peers the demo and the benchmark run against: a local HTTPS server (Python's
//! http.server behind OpenSSL, the same one the tests use) with a throwaway certificate.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{build, provision};

/// A child process stopped (SIGTERM, then reaped) on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// A self-signed P-256 certificate for 127.0.0.1 in `dir` (cert.pem, key.pem).
pub fn self_signed_cert(dir: &Path) -> Result<()> {
    provision::run(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stderr(Stdio::null()),
    )
}

/// tests/python/http_server.py over TLS on `port`, once it says it is ready.
pub fn https_server(python: &Path, dir: &Path, port: u16) -> Result<Guard> {
    self_signed_cert(dir)?;
    let mut child = Command::new(python)
        .arg(build::workspace_root().join("tests/python/http_server.py"))
        .arg(port.to_string())
        .arg(dir.join("cert.pem"))
        .arg(dir.join("key.pem"))
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the HTTPS peer")?;
    let stdout = child.stdout.take().context("HTTPS peer stdout")?;
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if !line.starts_with("READY") {
        bail!("the HTTPS peer did not start");
    }
    Ok(guard)
}
