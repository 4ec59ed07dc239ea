//! A real PostgreSQL server per test, from Debian's `postgresql` package (`cargo xtask
//! test` installs it): `initdb` under a fresh temporary directory owned by the `postgres`
//! system user (the server refuses to run as root), the server on a free loopback port
//! with its socket in that directory, one database; stopped and removed on drop.
//!
//! [`Db`] lets one acceptance test run against either backend.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{free_port, unique};

/// Debian's PostgreSQL binaries (not on PATH; never /usr/local).
const BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(Path::new(BIN).join(program));
    c
}

fn run_ok(mut c: Command) {
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{c:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

pub struct Postgres {
    dir: PathBuf,
    server: Child,
    pub port: u16,
    /// `postgres://sigil@127.0.0.1:<port>/sigil`
    pub url: String,
}

impl Postgres {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(unique("sigil-pg-"));
        fs::create_dir_all(&dir).unwrap();
        let mut chown = Command::new("chown");
        chown.args(["postgres:postgres"]).arg(&dir);
        run_ok(chown);
        let data = dir.join("data");
        let mut initdb = as_postgres("initdb");
        initdb.arg("-D").arg(&data).args(["-U", "sigil", "--auth=trust", "--locale=C", "--encoding=UTF8", "--no-sync"]);
        run_ok(initdb);
        let port = free_port();
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
            .unwrap();
        let pg = Self { dir, server, port, url: format!("postgres://sigil@127.0.0.1:{port}/sigil") };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(Path::new(BIN).join("pg_isready")).args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"]).status().unwrap();
            if ready.success() {
                break;
            }
            assert!(Instant::now() < deadline, "PostgreSQL on port {port} never became ready");
            thread::sleep(Duration::from_millis(100));
        }
        let mut createdb = Command::new(Path::new(BIN).join("createdb"));
        createdb.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "sigil", "sigil"]);
        run_ok(createdb);
        pg
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }

    /// Everything the database holds, as `pg_dump` writes it.
    pub fn dump(&self) -> Vec<u8> {
        let out = Command::new(Path::new(BIN).join("pg_dump")).args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "sigil", "sigil"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: fast shutdown (disconnect clients, stop).
        unsafe { libc::kill(self.server.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.server.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One test per backend: `<name>::sqlite` and `<name>::postgres` run `body(backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$body($crate::postgres::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$body($crate::postgres::Backend::Postgres)
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A collector store for one test: an SQLite file in `dir`, or a fresh PostgreSQL.
pub struct Db {
    /// What `sigil-collector --db` is given.
    pub arg: PathBuf,
    pub pg: Option<Postgres>,
}

impl Db {
    pub fn new(backend: Backend, dir: &Path) -> Self {
        match backend {
            Backend::Sqlite => Self { arg: dir.join(unique("collector-")).with_extension("db"), pg: None },
            Backend::Postgres => {
                let pg = Postgres::start();
                Self { arg: PathBuf::from(&pg.url), pg: Some(pg) }
            }
        }
    }

    /// The first row of a two-column integer query: `sqlite` on the file, `pg` on the
    /// database (each with one text parameter, `?1` / `$1`).
    pub fn pair(&self, sqlite: &str, pg: &str, arg: &str) -> (i64, i64) {
        match &self.pg {
            None => rusqlite::Connection::open(&self.arg).unwrap().query_row(sqlite, [arg], |r| Ok((r.get(0)?, r.get(1)?))).unwrap(),
            Some(p) => {
                let row = p.client().query_one(pg, &[&arg]).unwrap();
                (row.get(0), row.get(1))
            }
        }
    }

    /// Every byte the store holds (the file, or a dump of the database).
    pub fn bytes(&self) -> Vec<u8> {
        match &self.pg {
            None => fs::read(&self.arg).unwrap(),
            Some(p) => p.dump(),
        }
    }
}

/// Stored exec events of the processes in cgroup `path`, and the distinct execs among
/// them (each stored exec event refers to the process row it became: two events for one
/// exec would refer to one row).
pub fn stored_execs(db: &Db, path: &str) -> (i64, i64) {
    db.pair(
        "SELECT count(*), count(DISTINCT p.exec_id) FROM events e JOIN processes p ON p.rowid = e.ref
         WHERE e.kind = 10 AND p.cgroup_path = (SELECT id FROM strings WHERE s = ?1)",
        "SELECT count(*), count(DISTINCT p.exec_id) FROM events e JOIN processes p ON p.node_id = e.node_id AND p.event_id = e.stream
         WHERE e.kind = 10 AND p.cgroup_path = $1",
        path,
    )
}
