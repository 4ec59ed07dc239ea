//! A parsed config file that follows its file on disk.
//!
//! Checked on every use (one `stat`), so a change takes effect on the very next request,
//! not after a poll interval. A file that fails to parse is refused and the last good
//! version stays in force: tightening a policy must never open it up by accident.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    Some(Stamp { ino: m.ino(), size: m.size(), mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(), ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec() })
}

/// The outcome of a check for changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh<E> {
    Unchanged,
    Reloaded,
    /// The new version was refused; the previous one stays in force.
    Rejected(E),
}

pub struct Watched<T, E> {
    path: PathBuf,
    parse: fn(&str) -> Result<T, E>,
    state: Mutex<(Arc<T>, Option<Stamp>)>,
}

impl<T, E: From<std::io::Error> + Clone> Watched<T, E> {
    /// Loads the file; an error here is fatal for the caller (there is nothing to fall
    /// back to).
    pub fn load(path: impl Into<PathBuf>, parse: fn(&str) -> Result<T, E>) -> Result<Self, E> {
        let path = path.into();
        let st = stamp(&path);
        let value = parse(&fs::read_to_string(&path)?)?;
        Ok(Self { path, parse, state: Mutex::new((Arc::new(value), st)) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value in force, after reloading the file if it changed.
    pub fn current(&self) -> (Arc<T>, Refresh<E>) {
        // Values are swapped whole, so even a poisoned lock holds a consistent value.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path);
        if now == state.1 {
            return (state.0.clone(), Refresh::Unchanged);
        }
        state.1 = now;
        let parsed = fs::read_to_string(&self.path).map_err(E::from).and_then(|t| (self.parse)(&t));
        match parsed {
            Ok(v) => {
                state.0 = Arc::new(v);
                (state.0.clone(), Refresh::Reloaded)
            }
            Err(e) => (state.0.clone(), Refresh::Rejected(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct E(String);
    impl From<std::io::Error> for E {
        fn from(e: std::io::Error) -> Self {
            E(e.to_string())
        }
    }
    fn parse(s: &str) -> Result<u32, E> {
        s.trim().parse().map_err(|_| E(format!("not a number: {s:?}")))
    }

    #[test]
    fn follows_changes_and_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("v");
        fs::write(&p, "1").expect("write");
        let w = Watched::load(&p, parse).expect("load");
        assert_eq!(*w.current().0, 1);
        assert_eq!(w.current().1, Refresh::Unchanged);
        fs::write(&p, "22").expect("write");
        let (v, r) = w.current();
        assert_eq!((*v, r), (22, Refresh::Reloaded));
        fs::write(&p, "garbage").expect("write");
        let (v, r) = w.current();
        assert_eq!(*v, 22, "old value stays in force");
        assert!(matches!(r, Refresh::Rejected(E(m)) if m.contains("garbage")));
        // Rejected once, not on every call.
        assert_eq!(w.current().1, Refresh::Unchanged);
        fs::remove_file(&p).expect("rm");
        assert!(matches!(w.current().1, Refresh::Rejected(_)));
        assert_eq!(*w.current().0, 22);
    }
}
