//! Where a Go binary's functions are, from its `.gopclntab` (one job: function offsets).
//!
//! Go keeps a function table for its own stack unwinding in every binary: `-ldflags=-s -w`
//! strips the ELF symbol table and DWARF but never `.gopclntab` (in PIE builds the section
//! is `.data.rel.ro.gopclntab`). Reading it finds `crypto/tls.(*Conn).Write` in stripped
//! binaries that `nm` cannot. The layout parsed is Go 1.18+ (`pcHeader` magic 0xfffffff0,
//! 0xfffffff1 from Go 1.20); older binaries are refused with [`GoBinaryError::Version`].
//!
//! The offset returned is a file offset (what a uprobe is attached at), converted from the
//! function's virtual address through the program headers, so PIE binaries work the same.
//! It points past the function's stack-growth check when one is recognised: a goroutine
//! whose stack is too small runs `morestack` and re-enters the function from its first
//! instruction, so a probe there would see the same call twice.

use object::{Object, ObjectSection, ObjectSegment, ReadRef};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GoBinaryError {
    #[error("not an ELF file: {0}")]
    NotElf(String),
    #[error("unsupported architecture {0:?} (only x86_64 uses the register ABI the probe reads)")]
    Architecture(object::Architecture),
    #[error("no .gopclntab section (not a Go binary?)")]
    NoPclntab,
    #[error("Go function table is from an unsupported Go version (magic {0:#x}; Go 1.18+ is read)")]
    Version(u32),
    #[error("Go function table is malformed: {0}")]
    Malformed(&'static str),
    #[error("function {0} is not in this binary")]
    NotFound(String),
    #[error("function {0} at {1:#x} is in no loadable segment of the file")]
    NotMapped(String, u64),
}

/// Where to probe one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoFunction {
    /// Virtual address of the first instruction (as linked).
    pub address: u64,
    /// File offset of the first instruction.
    pub entry_offset: u64,
    /// File offset to attach a uprobe at: past the stack-growth check when there is one
    /// (the argument registers are untouched up to there), else `entry_offset`.
    pub probe_offset: u64,
}

const MAGIC_GO118: u32 = 0xffff_fff0;
const MAGIC_GO120: u32 = 0xffff_fff1;
/// `pcHeader`: magic, two pad bytes, minLC, ptrSize, then 8 pointer-sized words.
const HEADER_LEN: usize = 8 + 8 * 8;

/// Finds `name` (e.g. `crypto/tls.(*Conn).Write`) in the Go binary `data`.
pub fn find_function<'a, R: ReadRef<'a>>(data: R, name: &str) -> Result<GoFunction, GoBinaryError> {
    let elf = object::File::parse(data).map_err(|e| GoBinaryError::NotElf(e.to_string()))?;
    if elf.architecture() != object::Architecture::X86_64 {
        return Err(GoBinaryError::Architecture(elf.architecture()));
    }
    let section = elf.section_by_name(".gopclntab").or_else(|| elf.section_by_name(".data.rel.ro.gopclntab")).ok_or(GoBinaryError::NoPclntab)?;
    let pclntab = section.data().map_err(|_| GoBinaryError::Malformed("section data unreadable"))?;
    let text = elf.section_by_name(".text").map(|s| s.address());
    let address = function_address(pclntab, text, name)?;
    let entry_offset = file_offset(&elf, address).ok_or_else(|| GoBinaryError::NotMapped(name.into(), address))?;
    let head = data.read_bytes_at(entry_offset, PROLOGUE_MAX as u64).unwrap_or_default();
    Ok(GoFunction { address, entry_offset, probe_offset: entry_offset + stack_check_len(head) as u64 })
}

/// Virtual address of `name` from the raw `.gopclntab` bytes. `text` is the `.text`
/// section's address, used when the header's `textStart` is left for the dynamic loader
/// to fill in (0 in the file).
pub fn function_address(pclntab: &[u8], text: Option<u64>, name: &str) -> Result<u64, GoBinaryError> {
    let header = pclntab.get(..HEADER_LEN).ok_or(GoBinaryError::Malformed("header cut short"))?;
    let magic = u32::from_le_bytes(array(header, 0)?);
    if magic != MAGIC_GO118 && magic != MAGIC_GO120 {
        return Err(GoBinaryError::Version(magic));
    }
    if header[4] != 0 || header[5] != 0 || header[7] != 8 {
        return Err(GoBinaryError::Malformed("header padding or pointer size"));
    }
    let word = |i: usize| -> Result<u64, GoBinaryError> { Ok(u64::from_le_bytes(array(header, 8 + 8 * i)?)) };
    let nfunc = usize::try_from(word(0)?).map_err(|_| GoBinaryError::Malformed("function count"))?;
    let text_start = match word(2)? {
        0 => text.ok_or(GoBinaryError::Malformed("no text start"))?,
        t => t,
    };
    let funcnames = slice_from(pclntab, word(3)?)?;
    let functab = slice_from(pclntab, word(7)?)?;
    // nfunc + 1 (entryoff, funcoff) pairs; the last one only ends the table.
    let table_len = nfunc.checked_mul(8).ok_or(GoBinaryError::Malformed("function count"))?;
    if functab.len() < table_len {
        return Err(GoBinaryError::Malformed("function table beyond the section"));
    }
    let wanted = name.as_bytes();
    for i in 0..nfunc {
        let funcoff = u32::from_le_bytes(array(functab, i * 8 + 4)?) as usize;
        // _func: entryOff u32, nameOff i32, ...
        let entry_off = u32::from_le_bytes(array(functab, funcoff)?);
        let name_off = i32::from_le_bytes(array(functab, funcoff + 4)?);
        let Ok(name_off) = usize::try_from(name_off) else { continue };
        let candidate = funcnames.get(name_off..).ok_or(GoBinaryError::Malformed("name offset"))?;
        if candidate.starts_with(wanted) && candidate.get(wanted.len()) == Some(&0) {
            return Ok(text_start + u64::from(entry_off));
        }
    }
    Err(GoBinaryError::NotFound(name.into()))
}

fn array<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], GoBinaryError> {
    b.get(at..at.saturating_add(N)).and_then(|s| s.try_into().ok()).ok_or(GoBinaryError::Malformed("read past the section"))
}

fn slice_from(b: &[u8], at: u64) -> Result<&[u8], GoBinaryError> {
    usize::try_from(at).ok().and_then(|at| b.get(at..)).ok_or(GoBinaryError::Malformed("table offset beyond the section"))
}

/// File offset of a virtual address, through the loadable segments (program headers).
fn file_offset<'a, R: ReadRef<'a>>(elf: &object::File<'a, R>, address: u64) -> Option<u64> {
    elf.segments().find_map(|seg| {
        let (off, size) = seg.file_range();
        let start = seg.address();
        (address >= start && address - start < size).then(|| off + (address - start))
    })
}

/// Longest prologue recognised: LEAQ -disp32(SP), R12; CMPQ 16(R14), R12; JBE rel32.
const PROLOGUE_MAX: usize = 8 + 4 + 6;

/// Length of the amd64 stack-growth check a function starts with (Go 1.17+, g in R14),
/// or 0 when the bytes are not one (a leaf function without it, an unknown compiler).
///
/// `CMPQ SP, 16(R14)` (`49 3b 66 10`), or for larger frames `LEAQ -n(SP), R12`
/// (`4c 8d 64 24 n8` / `4c 8d a4 24 n32`) then `CMPQ R12, 16(R14)` (`4d 3b 66 10`),
/// followed by `JBE` (`76 rel8` / `0f 86 rel32`). None of these writes a register.
pub fn stack_check_len(code: &[u8]) -> usize {
    let lea = if code.starts_with(&[0x4c, 0x8d, 0x64, 0x24]) {
        5
    } else if code.starts_with(&[0x4c, 0x8d, 0xa4, 0x24]) {
        8
    } else {
        0
    };
    let cmp: &[u8] = if lea == 0 { &[0x49, 0x3b, 0x66, 0x10] } else { &[0x4d, 0x3b, 0x66, 0x10] };
    let Some(rest) = code.get(lea..).filter(|r| r.starts_with(cmp)).map(|r| &r[cmp.len()..]) else { return 0 };
    match rest {
        [0x76, _, ..] => lea + cmp.len() + 2,
        [0x0f, 0x86, _, _, _, _, ..] => lea + cmp.len() + 6,
        _ => 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
mod tests {
    use super::*;
    use std::{fs, path::Path, process::Command};

    const WRITE: &str = "crypto/tls.(*Conn).Write";

    /// Builds a small TLS client with Debian's golang-go in `dir` with extra `go build`
    /// flags (`cargo xtask test` installs golang-go).
    fn build(dir: &Path, out: &str, flags: &[&str]) -> Vec<u8> {
        let go = "go";
        fs::write(dir.join("go.mod"), "module gotest\n\ngo 1.18\n").unwrap();
        fs::write(
            dir.join("main.go"),
            "package main\nimport (\"crypto/tls\"; \"fmt\")\nfunc main() { c, err := tls.Dial(\"tcp\", \"127.0.0.1:1\", nil); fmt.Println(c, err) }\n",
        )
        .unwrap();
        let st = Command::new(go)
            .current_dir(dir)
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"))
            .env("GOFLAGS", "")
            .args(["build", "-o", out])
            .args(flags)
            .arg(".")
            .status()
            .expect("running go: install golang-go (`cargo xtask test` does)");
        assert!(st.success(), "go build {flags:?}");
        fs::read(dir.join(out)).unwrap()
    }

    /// The address the Go toolchain itself reports for the function (`go tool nm`).
    fn nm_address(dir: &Path, bin: &str) -> u64 {
        let out = Command::new("go").current_dir(dir).args(["tool", "nm", bin]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.ends_with(&format!(" T {WRITE}"))).expect("nm lists the function");
        u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
    }

    #[test]
    fn finds_tls_write_in_plain_stripped_and_pie_go_binaries() {
        let dir = tempfile::tempdir().unwrap();
        let plain = build(dir.path(), "plain", &[]);
        let stripped = build(dir.path(), "stripped", &["-ldflags=-s -w"]);
        let pie = build(dir.path(), "pie", &["-buildmode=pie"]);
        let expected = nm_address(dir.path(), "plain");

        let f = find_function(&plain[..], WRITE).unwrap();
        assert_eq!(f.address, expected, "same address as go tool nm");
        let s = find_function(&stripped[..], WRITE).unwrap();
        assert!(object::File::parse(&stripped[..]).unwrap().symbols().next().is_none(), "really stripped");
        assert_eq!(s.address, expected, "stripped: only the pclntab names it");
        let p = find_function(&pie[..], WRITE).unwrap();
        assert_eq!(p.address, nm_address(dir.path(), "pie"));
        assert_eq!(object::File::parse(&pie[..]).unwrap().kind(), object::ObjectKind::Dynamic, "a position-independent executable");
        for (bin, f) in [(&plain, f), (&stripped, s), (&pie, p)] {
            // The file offset holds the function's first instruction: Go 1.19's
            // `crypto/tls.(*Conn).Write` has a large frame, so LEAQ ..(SP), R12 first.
            let at = usize::try_from(f.entry_offset).unwrap();
            assert_eq!(&bin[at..at + 4], &[0x4c, 0x8d, 0x64, 0x24]);
            assert!(f.probe_offset > f.entry_offset, "the stack check is skipped");
            assert_eq!(f.probe_offset - f.entry_offset, stack_check_len(&bin[at..]) as u64);
        }
        assert_eq!(find_function(&plain[..], "crypto/tls.(*Conn).NoSuchMethod"), Err(GoBinaryError::NotFound("crypto/tls.(*Conn).NoSuchMethod".into())));
        // A prefix of a real name is not that name.
        assert!(matches!(find_function(&plain[..], "crypto/tls.(*Conn).Writ"), Err(GoBinaryError::NotFound(_))));
    }

    #[test]
    fn non_go_and_garbage_inputs_are_clear_errors() {
        let curl = fs::read("/usr/bin/curl").unwrap();
        assert_eq!(find_function(&curl[..], WRITE), Err(GoBinaryError::NoPclntab));
        assert!(matches!(find_function(&b"#!/bin/sh\n"[..], WRITE), Err(GoBinaryError::NotElf(_))));
        let mut table = vec![0u8; HEADER_LEN];
        assert_eq!(function_address(&table, None, WRITE), Err(GoBinaryError::Version(0)));
        table[..4].copy_from_slice(&0xffff_fffbu32.to_le_bytes());
        assert_eq!(function_address(&table, None, WRITE), Err(GoBinaryError::Version(0xffff_fffb)), "Go 1.16/1.17 layout");
        table[..4].copy_from_slice(&MAGIC_GO120.to_le_bytes());
        table[7] = 8;
        // A huge function count or offsets past the end are refused, not followed.
        table[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(function_address(&table, Some(0x1000), WRITE), Err(GoBinaryError::Malformed(_))));
        table[8..16].copy_from_slice(&1u64.to_le_bytes());
        table[8 + 7 * 8..].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(function_address(&table, Some(0x1000), WRITE), Err(GoBinaryError::Malformed(_))));
        assert!(matches!(function_address(&table[..10], None, WRITE), Err(GoBinaryError::Malformed(_))));
    }

    #[test]
    fn recognises_the_amd64_stack_checks() {
        assert_eq!(stack_check_len(&[0x49, 0x3b, 0x66, 0x10, 0x76, 0x20, 0x55]), 6);
        assert_eq!(stack_check_len(&[0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 1, 2, 3, 4]), 10);
        assert_eq!(stack_check_len(&[0x4c, 0x8d, 0x64, 0x24, 0x98, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 1, 2, 3, 4]), 15);
        assert_eq!(stack_check_len(&[0x4c, 0x8d, 0xa4, 0x24, 0, 0xf0, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x76, 9]), 14);
        assert_eq!(stack_check_len(&[0x55, 0x48, 0x89, 0xe5]), 0, "a C prologue");
        assert_eq!(stack_check_len(&[0x49, 0x3b, 0x66, 0x10]), 0, "cut short");
        assert_eq!(stack_check_len(&[0x4c, 0x8d, 0x64, 0x24, 0x98, 0x49, 0x3b, 0x66, 0x10, 0x76, 1]), 0, "compares the wrong register");
        assert_eq!(stack_check_len(&[]), 0);
    }
}
