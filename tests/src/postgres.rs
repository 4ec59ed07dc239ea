//! A real PostgreSQL server per test, from Debian's `postgresql` package (`cargo xtask
//! test` installs it), started by [`crate::postgres_server`] under a fresh temporary
//! directory; stopped and removed on drop.
//!
//! [`Db`] lets one acceptance test run against either backend.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    postgres_server::{BIN, Server},
    unique,
};

pub struct Postgres {
    pub port: u16,
    /// `postgres://sigil@127.0.0.1:<port>/sigil`
    pub url: String,
    _server: Server,
}

impl Postgres {
    pub fn start() -> Self {
        let server = Server::start(std::env::temp_dir().join(unique("sigil-pg-"))).unwrap();
        Self { port: server.port, url: server.url.clone(), _server: server }
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }

    /// Everything the database holds, as `pg_dump` writes it.
    pub fn dump(&self) -> Vec<u8> {
        let out =
            Command::new(Path::new(BIN).join("pg_dump")).args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "sigil", "sigil"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
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
/// them (two events for one exec would be one process row). PostgreSQL's process rows
/// name their event; SQLite's do not (the key is not repeated per row), so there the
/// cgroup's exec events are all stored exec events less the process rows of every other
/// cgroup: only exec events make process rows, one each, so an event stored twice
/// anywhere still shows as more events than execs.
pub fn stored_execs(db: &Db, path: &str) -> (i64, i64) {
    db.pair(
        "SELECT (SELECT count(*) FROM events WHERE kind = 10)
                - (SELECT count(*) FROM processes WHERE cgroup_path IS NOT (SELECT id FROM strings WHERE s = ?1)),
                (SELECT count(*) FROM processes WHERE cgroup_path = (SELECT id FROM strings WHERE s = ?1))",
        "SELECT count(*), count(DISTINCT p.exec_id) FROM events e JOIN processes p ON p.node_id = e.node_id AND p.event_id = e.stream
         WHERE e.kind = 10 AND p.cgroup_path = $1",
        path,
    )
}
