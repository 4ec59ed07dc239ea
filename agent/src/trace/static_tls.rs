//! OpenSSL compiled into an executable: where its write functions are in the file.
//!
//! Official Node.js builds link OpenSSL statically (and export its symbols from the node
//! executable, for native addons); so do static builds of curl and others. Such a process
//! maps no libssl, so [`super::libs`] finds nothing to attach to by name. The functions
//! are looked up in the executable's own symbol tables instead: the dynamic one first
//! (it survives `strip`, and node exports OpenSSL there), then `.symtab` (a fully static
//! binary has only that, unless stripped, in which case there is nothing to find).
//!
//! A uprobe is placed at a file offset. A symbol holds a virtual address, which is
//! converted through the loadable segment (program header) that contains it: right for
//! fixed-address executables and for PIE ones alike, whatever the sections' layout.

use std::ops::Range;

use object::{
    Endianness, Object, ObjectSegment, elf,
    read::elf::{ElfFile64, FileHeader, ProgramHeader, SectionHeader, Sym},
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StaticTlsError {
    #[error("not a 64-bit ELF file the agent can read: {0}")]
    Parse(#[from] object::Error),
    #[error("symbol {symbol} at {address:#x} lies in no loadable segment of the file")]
    NoSegment { symbol: &'static str, address: u64 },
}

/// File offsets of those of `names` that the executable defines as functions, in the
/// order of `names`. Empty when it defines none (the usual case: most executables get
/// OpenSSL, if at all, from libssl, where the symbol is undefined here).
///
/// Generic over [`object::ReadRef`] so a file is read on demand, never whole: node is
/// over 100 MiB, most of it code and debug info. Each table costs two reads (its string
/// table, searched for the names, and its symbols, matched by name offset), never one per
/// symbol name: this runs when a process is exec'd, before its first request.
pub fn find_functions<'a, R: object::ReadRef<'a>>(data: R, names: &[&'static str]) -> Result<Vec<(&'static str, u64)>, StaticTlsError> {
    let file = ElfFile64::<Endianness, R>::parse(data)?;
    let endian = file.endian();
    let mut addresses: Vec<Option<u64>> = vec![None; names.len()];
    for table in [file.elf_dynamic_symbol_table(), file.elf_symbol_table()] {
        if table.is_empty() || addresses.iter().all(Option::is_some) {
            continue;
        }
        let strings = file.elf_section_table().section(table.string_section())?.data(endian, data)?;
        for (name, found) in names.iter().zip(addresses.iter_mut()).filter(|(_, f)| f.is_none()) {
            // Every place the name's bytes end a string: a symbol names it by one of these
            // offsets (linkers share tails, so it may sit inside a longer name).
            let needle = [name.as_bytes(), b"\0"].concat();
            let at: Vec<u64> = memchr::memmem::find_iter(strings, &needle).map(|i| i as u64).collect();
            if at.is_empty() {
                continue;
            }
            *found = table
                .symbols()
                .iter()
                .find(|s| at.contains(&u64::from(s.st_name(endian))) && s.st_type() == elf::STT_FUNC && !s.is_undefined(endian) && s.st_value(endian) != 0)
                .map(|s| s.st_value(endian));
        }
    }
    names
        .iter()
        .zip(addresses)
        .filter_map(|(name, address)| address.map(|a| (*name, a)))
        .map(|(symbol, address)| file_offset(&file, address).ok_or(StaticTlsError::NoSegment { symbol, address }).map(|o| (symbol, o)))
        .collect()
}

/// The file ranges of the segments mapped executable: where [`super::hook_site`] may
/// read and follow code. None for a file of another architecture than x86-64 (its code is
/// not decoded).
pub fn executable_ranges<'a, R: object::ReadRef<'a>>(data: R) -> Result<Vec<Range<u64>>, StaticTlsError> {
    let file = ElfFile64::<Endianness, R>::parse(data)?;
    let endian = file.endian();
    if file.elf_header().e_machine(endian) != elf::EM_X86_64 {
        return Ok(Vec::new());
    }
    Ok(file
        .elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD && ph.p_flags(endian) & elf::PF_X != 0)
        .map(|ph| {
            let start = ph.p_offset(endian);
            start..start.saturating_add(ph.p_filesz(endian))
        })
        .collect())
}

/// The file offset of a virtual address, through the loadable segment that maps it.
fn file_offset<'a, R: object::ReadRef<'a>>(file: &ElfFile64<'a, Endianness, R>, address: u64) -> Option<u64> {
    file.segments().find_map(|seg| {
        let (offset, file_size) = seg.file_range();
        let delta = address.checked_sub(seg.address())?;
        (delta < file_size).then_some(offset + delta)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
mod tests {
    use std::{fs, path::Path};

    use object::{ObjectSection, ObjectSymbol, ReadCache};

    use super::*;

    const OPENSSL: [&str; 2] = ["SSL_write", "SSL_write_ex"];

    fn find(path: &str) -> Option<Vec<(&'static str, u64)>> {
        let file = fs::File::open(path).ok()?;
        Some(find_functions(&ReadCache::new(file), &OPENSSL).expect("a readable ELF file"))
    }

    /// The offset as the section headers give it (aya's own way): an independent check of
    /// the segment arithmetic.
    fn section_offset(path: &str, symbol: &str) -> u64 {
        let data = fs::read(path).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let sym = elf.dynamic_symbols().chain(elf.symbols()).find(|s| s.name() == Ok(symbol) && s.is_definition()).unwrap();
        let section = elf.section_by_index(sym.section_index().unwrap()).unwrap();
        sym.address() - section.address() + section.file_range().unwrap().0
    }

    #[test]
    fn finds_openssl_in_a_shared_libssl_at_the_offsets_the_sections_give() {
        let lib = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
        let Some(found) = find(lib) else { return };
        assert_eq!(found.iter().map(|(s, _)| *s).collect::<Vec<_>>(), OPENSSL);
        for (symbol, offset) in found {
            assert_eq!(offset, section_offset(lib, symbol), "{symbol}");
        }
    }

    #[test]
    fn finds_openssl_inside_a_statically_linked_node() {
        // The machine's node (NodeSource's build of the official sources) links OpenSSL
        // statically; the official build's tests are in tests/tests/node_tls.rs.
        let node = "/usr/bin/node";
        if !Path::new(node).exists() {
            return;
        }
        let found = find(node).unwrap();
        assert_eq!(found.len(), 2, "node exports SSL_write and SSL_write_ex: {found:?}");
        for (symbol, offset) in found {
            assert_eq!(offset, section_offset(node, symbol), "{symbol}");
        }
    }

    #[test]
    fn dynamically_linked_clients_define_no_openssl_of_their_own() {
        // curl's OpenSSL is in libssl (via libcurl); /bin/sh has none at all.
        for exe in ["/usr/bin/curl", "/bin/sh", "/usr/bin/openssl"] {
            if let Some(found) = find(exe) {
                assert!(found.is_empty(), "{exe}: {found:?}");
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(find_functions(&b""[..], &OPENSSL).is_err());
        assert!(find_functions(&b"\x7fELF\x02\x01\x01 truncated"[..], &OPENSSL).is_err());
        assert!(find_functions(&b"#!/bin/sh\nSSL_write\n"[..], &OPENSSL).is_err());
    }
}
