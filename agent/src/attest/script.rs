//! The script an interpreter was started on.
//!
//! For an interpreted program `/proc/<pid>/exe` (and so `binary.sha256`) is the
//! interpreter: every Python program on a node has the same binary hash. What tells them
//! apart is the script, and the kernel knows it in one case only:
//!
//! - `exec`: the process exec'd a `#!` file. The kernel's exec filename (`bprm->filename`,
//!   reported by the exec tracepoint) is the script, and the kernel passes that same path
//!   to the interpreter as an argument. The path comes from the kernel, not the process.
//! - `argv`: the process exec'd the interpreter itself (`python3 /srv/app.py`). The
//!   script is then only the interpreter's first argument, read from /proc/<pid>/cmdline
//!   when the agent attests the exec. A process can rewrite its own argv, so this says
//!   what the process was started with only if the agent read it before the program did
//!   so; an interpreter option before it (`python3 -c code app.py`) means no script.
//!
//! Only absolute paths are bound: a relative one depends on a working directory the
//! process may have changed since. The file is hashed as it is when the agent looks,
//! which is not necessarily what the interpreter read: whoever can write the file (or
//! its directory) can swap it between the interpreter's read and the agent's. Hence
//! `unix:script-sha256` is only accepted together with `unix:script-path` (a path the
//! workload cannot write, e.g. a read-only image layer) and an interpreter selector, and
//! the issuer re-hashes the script before it signs.

use std::{
    fs,
    io::Read,
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
};

use serde::Serialize;

use super::hash::{HashCache, sha256_reader};

/// Files larger than this are not hashed as scripts (the record says so): every exec's
/// first argument is looked at, and a script is small.
pub const MAX_SCRIPT_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Script {
    pub path: String,
    /// `exec` (the kernel ran this `#!` file) or `argv` (the interpreter's first argument).
    pub source: &'static str,
    pub sha256: Option<String>,
    pub inode: Option<u64>,
    pub error: Option<String>,
}

impl From<&Script> for sigil_proto::v1::Script {
    fn from(s: &Script) -> Self {
        Self { path: s.path.clone(), source: s.source.to_owned(), sha256: s.sha256.clone(), inode: s.inode, error: s.error.clone() }
    }
}

/// Programs that take a script file as their first argument. Every exec's first argument
/// is not opened and hashed as a "script" (`cat /etc/passwd`, `cp big.iso ...`): only
/// these interpreters' (and any `#!` file's, whatever its interpreter).
const INTERPRETERS: &[&str] = &[
    "python", "pypy", "perl", "ruby", "jruby", "node", "nodejs", "deno", "bun", "bash", "sh", "dash", "zsh", "ksh", "mksh", "fish", "php", "lua", "luajit",
    "tclsh", "wish", "pwsh", "Rscript", "julia", "escript", "elixir", "groovy",
];

/// True for an interpreter's executable, versioned or not (`python3.11`, `php8.2`).
fn is_interpreter(exe_path: &str) -> bool {
    let name = exe_path.rsplit('/').next().unwrap_or(exe_path);
    let bare = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.contains(&bare)
}

/// Whether the process may have been started on a script, so its command line is worth
/// reading at all: an interpreter runs, or the kernel exec'd a file of another name than
/// the one that runs (a `#!` file; `/bin/true` running `/usr/bin/true` is not one). The
/// exec path is the agent's most frequent procfs read otherwise, for nothing.
pub fn may_have_script(exec_path: Option<&str>, exe_path: Option<&str>) -> bool {
    let base = |p: &str| p.trim_end_matches(" (deleted)").rsplit('/').next().unwrap_or(p).to_owned();
    exe_path.is_some_and(|e| is_interpreter(e.trim_end_matches(" (deleted)"))) || exec_path.is_some_and(|x| exe_path.is_none_or(|e| base(x) != base(e)))
}

/// Which argument names the script, if any: `exec_path` is the kernel's exec filename,
/// `exe_path` the file that runs (the interpreter, for a script).
fn script_arg<'a>(exec_path: Option<&str>, exe_path: Option<&str>, argv: &'a [String]) -> Option<(&'a str, &'static str)> {
    let first = argv.get(1)?;
    // `#!/usr/bin/python3 -u` puts the shebang's option before the script; the kernel ran
    // a file other than the one that runs.
    let shebang = exec_path.filter(|p| Some(*p) != exe_path).and_then(|p| argv.iter().skip(1).take(2).find(|a| a.as_str() == p));
    match shebang {
        Some(p) => Some((p.as_str(), "exec")),
        None if !first.starts_with('-') && exe_path.is_some_and(is_interpreter) => Some((first.as_str(), "argv")),
        None => None,
    }
}

/// The script of `pid`, started with `argv` (read by the caller between its checks of
/// the process's start time), or None for a process that was not started on one.
pub fn identify(pid: u32, argv: &[String], exec_path: Option<&str>, exe_path: Option<&str>, hashes: &HashCache) -> Option<Script> {
    let (path, source) = script_arg(exec_path, exe_path, argv)?;
    let mut s = Script { path: path.to_owned(), source, sha256: None, inode: None, error: None };
    if !path.starts_with('/') {
        s.error = Some("relative script path: run it by absolute path to bind it".into());
        return Some(s);
    }
    let digest = open_script(&format!("/proc/{pid}/root{path}")).and_then(|f| hashes.digest(&f).map_err(|e| e.to_string()));
    match digest {
        Ok(d) => {
            s.sha256 = Some(d.sha256);
            s.inode = Some(d.key.ino);
        }
        Err(e) => s.error = Some(e),
    }
    Some(s)
}

/// SHA-256 and inode of the script file as it is now, bypassing any cache (the issuer
/// re-checks the script with it before signing).
pub fn hash_file(path: &str) -> Result<(String, u64), String> {
    let file = open_script(path)?;
    let ino = file.metadata().map_err(|e| e.to_string())?.ino();
    let sha = sha256_reader(file.take(MAX_SCRIPT_BYTES)).map_err(|e| e.to_string())?;
    Ok((sha, ino))
}

/// Opens a regular file of bounded size. The path is the process's first argument, so
/// it may name anything: it is first opened as O_PATH (which opens no device, FIFO or
/// socket) and only reopened for reading once that very inode is a regular file.
fn open_script(path: &str) -> Result<fs::File, String> {
    let handle = fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH).open(path).map_err(|e| format!("opening the script: {e}"))?;
    let meta = handle.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("the script is not a regular file".into());
    }
    if meta.size() > MAX_SCRIPT_BYTES {
        return Err(format!("the script is larger than {MAX_SCRIPT_BYTES} bytes; not hashed"));
    }
    fs::File::open(format!("/proc/self/fd/{}", handle.as_raw_fd())).map_err(|e| format!("opening the script: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_script_argument_is_found_only_where_an_interpreter_takes_it() {
        let py = Some("/usr/bin/python3.11");
        // `#!` file run directly: the kernel's exec filename is the script.
        assert_eq!(script_arg(Some("/srv/app.py"), py, &argv(&["/usr/bin/python3", "/srv/app.py", "x"])), Some(("/srv/app.py", "exec")));
        assert_eq!(script_arg(Some("/srv/app.py"), py, &argv(&["/usr/bin/python3", "-u", "/srv/app.py"])), Some(("/srv/app.py", "exec")));
        // The interpreter run by hand.
        assert_eq!(script_arg(py, py, &argv(&["python3", "/srv/app.py"])), Some(("/srv/app.py", "argv")));
        assert_eq!(script_arg(Some("/bin/sh"), Some("/usr/bin/dash"), &argv(&["sh", "/srv/job.sh"])), Some(("/srv/job.sh", "argv")));
        // Code that is not a script file: no script, so no script selector can match.
        assert_eq!(script_arg(py, py, &argv(&["python3", "-c", "evil", "/srv/app.py"])), None);
        assert_eq!(script_arg(None, py, &argv(&["python3"])), None);
        // Not an interpreter: its first argument is data, not a program.
        assert_eq!(script_arg(Some("/usr/bin/cat"), Some("/usr/bin/cat"), &argv(&["cat", "/etc/passwd"])), None);
        assert_eq!(script_arg(Some("/usr/bin/cat"), Some("/usr/bin/cat"), &argv(&["cat", "/usr/bin/cat"])), None);
        assert_eq!(script_arg(Some("/usr/bin/sha256sum"), None, &argv(&["sha256sum", "/srv/app.py"])), None);
    }

    #[test]
    fn the_command_line_is_read_only_where_a_script_can_be() {
        assert!(may_have_script(Some("/srv/app.py"), Some("/usr/bin/python3.11")), "a #! file");
        assert!(may_have_script(Some("/srv/job"), Some("/usr/bin/mytool")), "a #! file of a program we do not know");
        assert!(may_have_script(Some("/usr/bin/python3"), Some("/usr/bin/python3.11")), "an interpreter");
        assert!(may_have_script(None, Some("/usr/bin/perl")), "an interpreter found by a scan");
        assert!(!may_have_script(Some("/bin/true"), Some("/usr/bin/true")), "merged /usr");
        assert!(!may_have_script(Some("/usr/bin/cat"), Some("/usr/bin/cat")));
        assert!(!may_have_script(None, Some("/usr/bin/cat")));
    }

    #[test]
    fn interpreters_are_known_by_name_whatever_their_version() {
        for exe in ["/usr/bin/python3.11", "/usr/bin/python3", "/usr/bin/perl5.36.0", "/usr/bin/php8.2", "/usr/bin/bash", "/usr/bin/node"] {
            assert!(is_interpreter(exe), "{exe}");
        }
        for exe in ["/usr/bin/cat", "/usr/bin/pythonista", "/usr/bin/sha256sum", "/usr/local/bin/curl"] {
            assert!(!is_interpreter(exe), "{exe}");
        }
    }

    #[test]
    fn only_regular_files_are_hashed() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("app.py");
        fs::write(&f, "print('hi')\n").expect("write");
        let (sha, _) = hash_file(&f.display().to_string()).expect("hash");
        assert_eq!(sha, sha256_reader(&b"print('hi')\n"[..]).expect("sha"));
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.display().to_string()).expect("c");
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(hash_file(&fifo.display().to_string()).expect_err("a FIFO").contains("not a regular file"));
        // A device is never opened for reading (a watchdog or tape device acts on open).
        assert!(hash_file("/dev/null").expect_err("a device").contains("not a regular file"));
    }
}
