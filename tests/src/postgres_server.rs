//! A throwaway PostgreSQL server from Debian's `postgresql` package: `initdb` under a
//! fresh directory owned by the `postgres` system user (the server refuses to run as
//! root), the server on a free loopback port with its socket in that directory, one
//! database `sigil`; stopped and removed on drop.
//!
//! Shared, by `#[path]`, between the integration tests ([`crate::postgres`]) and
//! `cargo xtask bench` (which has neither this crate nor a PostgreSQL client): it needs
//! only std, anyhow and [`crate::ports`].

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Debian's PostgreSQL binaries (not on PATH; never /usr/local).
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(Path::new(BIN).join(program));
    c
}

fn run_ok(mut c: Command) -> Result<()> {
    let out = c.stdin(Stdio::null()).output().with_context(|| format!("{c:?}"))?;
    if !out.status.success() {
        bail!("{c:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

pub struct Server {
    dir: PathBuf,
    server: Child,
    pub port: u16,
    /// `postgres://sigil@127.0.0.1:<port>/sigil`
    pub url: String,
}

impl Server {
    /// Initialises a cluster in `dir` (created; removed on drop) and starts it.
    pub fn start(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir)?;
        let mut chown = Command::new("chown");
        chown.args(["postgres:postgres"]).arg(&dir);
        run_ok(chown)?;
        let data = dir.join("data");
        let mut initdb = as_postgres("initdb");
        initdb.arg("-D").arg(&data).args(["-U", "sigil", "--auth=trust", "--locale=C", "--encoding=UTF8", "--no-sync"]);
        run_ok(initdb)?;
        let port = crate::ports::free_port()?;
        let server = as_postgres("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "max_connections=50"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting postgres")?;
        let pg = Self { dir, server, port, url: format!("postgres://sigil@127.0.0.1:{port}/sigil") };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(Path::new(BIN).join("pg_isready")).args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"]).status()?;
            if ready.success() {
                break;
            }
            if Instant::now() > deadline {
                bail!("PostgreSQL on port {port} never became ready");
            }
            thread::sleep(Duration::from_millis(100));
        }
        let mut createdb = Command::new(Path::new(BIN).join("createdb"));
        createdb.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "sigil", "sigil"]);
        run_ok(createdb)?;
        Ok(pg)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGINT: fast shutdown (disconnect clients, stop).
        let _ = Command::new("kill").arg("-INT").arg(self.server.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.server.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
