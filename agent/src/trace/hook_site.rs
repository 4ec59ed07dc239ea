//! Where a TLS library's uprobes go, so that a hit costs one trap instead of a
//! single-step.
//!
//! The kernel runs most probed instructions out of line: it traps on the breakpoint, runs
//! the programs, then single-steps a copy of the instruction and traps a second time. A
//! few instructions it emulates instead, with one trap: a push of a register, a direct
//! call or jump, a conditional jump, a nop. On this project's VMs the difference is about
//! 9 µs against 0.5 µs per hit (a probe on `sub $8,%rsp` against one on `push %rbx`; see
//! the README's figures), and a TLS keep-alive client makes several hooked calls per
//! request. A return probe must sit on a function's first instruction.
//!
//! OpenSSL 1.1.1 to 3.1 build `SSL_write_ex` and `SSL_read_ex` as a stack adjustment and
//! a call to an internal function that `SSL_write` and `SSL_read` call too, and that
//! internal function opens with pushes. When the code proves exactly that, the agent hooks
//! the internal function once, with the `_ex` programs (its arguments are the `_ex`
//! arguments, passed through untouched), instead of the two exported functions. Anything
//! the decoder cannot prove keeps the exported hooks: the placement changes the cost,
//! never what is captured.

use std::ops::Range;

use object::ReadRef;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess, OpKind, Register};

/// Instructions walked before giving up: a pass-through prologue is a handful.
const MAX_PROLOGUE: usize = 24;
/// Bytes read at a function's start for that walk (x86 instructions are at most 15).
const PROLOGUE_BYTES: usize = MAX_PROLOGUE * 15;
/// The first four integer arguments in the System V AMD64 ABI (s, buf, num, written).
const ARGUMENTS: [Register; 4] = [Register::RDI, Register::RSI, Register::RDX, Register::RCX];

/// An exported pair hooked at the internal function both of them call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    pub plain: &'static str,
    pub ex: &'static str,
    /// File offset of the internal function.
    pub target: u64,
}

/// The machine code of a file: the file, read on demand, and the file ranges of its
/// executable segments (relative calls are followed in file offsets, within one segment).
pub struct MachineCode<R> {
    pub data: R,
    pub executable: Vec<Range<u64>>,
}

impl<'a, R: ReadRef<'a>> MachineCode<R> {
    /// Up to `len` bytes at `offset`, cut at the end of the executable segment holding it.
    fn at(&self, offset: u64, len: usize) -> Option<&'a [u8]> {
        let seg = self.executable.iter().find(|r| r.contains(&offset))?;
        let end = seg.end.min(offset.saturating_add(len as u64));
        self.data.read_bytes_at(offset, end - offset).ok()
    }

    fn decoder(&self, offset: u64, len: usize) -> Option<Decoder<'a>> {
        Some(Decoder::with_ip(64, self.at(offset, len)?, offset, DecoderOptions::NONE))
    }

    /// The first instruction at `offset`.
    fn first(&self, offset: u64) -> Option<Instruction> {
        let insn = self.decoder(offset, 15)?.decode();
        (!insn.is_invalid()).then_some(insn)
    }
}

/// Rewrites `hooks` (symbol, file offset) so that each of `pairs` (plain, ex) whose
/// functions share a cheaper site is hooked there once, under the `ex` symbol's programs.
/// Returns the pairs rewritten.
pub fn share_sites<'a>(code: &MachineCode<impl ReadRef<'a>>, hooks: &mut Vec<(&'static str, u64)>, pairs: &[(&'static str, &'static str)]) -> Vec<Shared> {
    let mut shared = Vec::new();
    for &(plain, ex) in pairs {
        let offset_of = |name: &str| hooks.iter().find(|(s, _)| *s == name).map(|(_, o)| *o);
        let (Some(plain_at), Some(ex_at)) = (offset_of(plain), offset_of(ex)) else { continue };
        let Some(target) = shared_target(code, plain_at, ex_at) else { continue };
        hooks.retain(|(s, _)| *s != plain && *s != ex);
        hooks.push((ex, target));
        shared.push(Shared { plain, ex, target });
    }
    shared
}

/// The internal function both `plain` and `ex` call, when hooking it is proven equivalent
/// and cheaper: `ex` passes its arguments to it untouched, `plain` calls it first on its
/// straight path, it opens with an instruction the kernel emulates, and `ex` does not.
fn shared_target<'a>(code: &MachineCode<impl ReadRef<'a>>, plain_at: u64, ex_at: u64) -> Option<u64> {
    if code.first(ex_at).is_none_or(|i| kernel_emulates(&i)) {
        return None;
    }
    let target = pass_through_call(code, ex_at)?;
    if target == plain_at || target == ex_at || first_call(code, plain_at)? != target {
        return None;
    }
    code.first(target).filter(kernel_emulates).map(|_| target)
}

/// The target of the first call in the function at `at`, when every instruction before it
/// runs straight through and leaves the argument registers as the caller set them.
fn pass_through_call<'a>(code: &MachineCode<impl ReadRef<'a>>, at: u64) -> Option<u64> {
    let mut decoder = code.decoder(at, PROLOGUE_BYTES)?;
    let mut info = InstructionInfoFactory::new();
    for _ in 0..MAX_PROLOGUE {
        let insn = decoder.decode();
        match insn.flow_control() {
            _ if insn.is_invalid() => return None,
            FlowControl::Call => return direct_target(&insn),
            FlowControl::Next if !writes_arguments(&mut info, &insn) => {}
            _ => return None,
        }
    }
    None
}

/// The target of the first call on the fall-through path of the function at `at`
/// (conditional branches are not taken: they lead to the argument checks' error returns).
fn first_call<'a>(code: &MachineCode<impl ReadRef<'a>>, at: u64) -> Option<u64> {
    let mut decoder = code.decoder(at, PROLOGUE_BYTES)?;
    for _ in 0..MAX_PROLOGUE {
        let insn = decoder.decode();
        match insn.flow_control() {
            _ if insn.is_invalid() => return None,
            FlowControl::Call => return direct_target(&insn),
            FlowControl::Next | FlowControl::ConditionalBranch => {}
            _ => return None,
        }
    }
    None
}

fn direct_target(insn: &Instruction) -> Option<u64> {
    (insn.code() == Code::Call_rel32_64 && insn.op0_kind() == OpKind::NearBranch64).then(|| insn.near_branch_target())
}

fn writes_arguments(info: &mut InstructionInfoFactory, insn: &Instruction) -> bool {
    info.info(insn).used_registers().iter().any(|r| {
        ARGUMENTS.contains(&r.register().full_register())
            && matches!(r.access(), OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite)
    })
}

/// Instructions the x86 uprobe code emulates rather than single-steps (arch/x86/kernel/
/// uprobes.c: branches, nops and, since 6.10, pushes of a register), in their plain
/// encodings. On an older kernel a push is single-stepped: slower, never wrong.
pub fn kernel_emulates(insn: &Instruction) -> bool {
    match insn.code() {
        Code::Push_r64 => insn.len() <= 2,
        Code::Call_rel32_64 | Code::Jmp_rel32_64 => insn.len() == 5,
        Code::Jmp_rel8_64 => insn.len() == 2,
        Code::Nopd => insn.len() == 1,
        Code::Nop_rm32 => true,
        _ => insn.is_jcc_short_or_near() && matches!(insn.len(), 2 | 6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12's libssl.so.3 (OpenSSL 3.0.19), as objdump shows it: `SSL_read` at 0,
    /// `SSL_read_ex` at 0x90, the internal read function at 0x100 (the layout is
    /// compacted, the instructions and relative targets are the library's).
    fn openssl_30() -> (Vec<u8>, u64, u64, u64) {
        let mut code = vec![0xccu8; 0x140];
        let plain: &[u8] = &[
            0x48, 0x83, 0xec, 0x18, // sub $0x18,%rsp
            0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00, // mov %fs:0x28,%rax
            0x48, 0x89, 0x44, 0x24, 0x08, // mov %rax,0x8(%rsp)
            0x31, 0xc0, // xor %eax,%eax
            0x85, 0xd2, // test %edx,%edx
            0x78, 0x2f, // js +0x2f
            0x48, 0x89, 0xe1, // mov %rsp,%rcx
            0x48, 0x63, 0xd2, // movslq %edx,%rdx
        ];
        code[..plain.len()].copy_from_slice(plain);
        let call_at = plain.len();
        put_call(&mut code, call_at, 0x100);
        let ex: &[u8] = &[0x48, 0x83, 0xec, 0x08]; // sub $0x8,%rsp
        code[0x90..0x94].copy_from_slice(ex);
        put_call(&mut code, 0x94, 0x100);
        code[0x100..0x105].copy_from_slice(&[0x41, 0x55, 0x41, 0x54, 0x55]); // push %r13; push %r12; push %rbp
        (code, 0, 0x90, 0x100)
    }

    /// One executable segment over the whole buffer.
    fn whole(len: usize) -> Vec<Range<u64>> {
        std::iter::once(0..len as u64).collect()
    }

    fn put_call(code: &mut [u8], at: usize, target: usize) {
        let rel = (target as i64 - (at as i64 + 5)) as i32;
        code[at] = 0xe8;
        code[at + 1..at + 5].copy_from_slice(&rel.to_le_bytes());
    }

    fn sites(code: &[u8], plain: u64, ex: u64) -> (Vec<(&'static str, u64)>, Vec<Shared>) {
        let code = MachineCode { data: code, executable: whole(code.len()) };
        let mut hooks = vec![("SSL_read", plain), ("SSL_read_ex", ex), ("SSL_write", 0x200)];
        let shared = share_sites(&code, &mut hooks, &[("SSL_read", "SSL_read_ex")]);
        (hooks, shared)
    }

    #[test]
    fn openssl_30_reads_are_hooked_once_at_their_shared_internal_function() {
        let (code, plain, ex, internal) = openssl_30();
        let (hooks, shared) = sites(&code, plain, ex);
        assert_eq!(shared, vec![Shared { plain: "SSL_read", ex: "SSL_read_ex", target: internal }]);
        assert_eq!(hooks, vec![("SSL_write", 0x200), ("SSL_read_ex", internal)]);
    }

    #[test]
    fn an_ex_function_that_changes_an_argument_keeps_its_own_hooks() {
        // OpenSSL 3.2's SSL_write_ex passes a flags argument: `xor %ecx,%ecx` before its call.
        let (mut code, plain, ex, _) = openssl_30();
        code[0x90..0x92].copy_from_slice(&[0x31, 0xc9]);
        code[0x92..0x94].copy_from_slice(&[0x90, 0x90]);
        let (hooks, shared) = sites(&code, plain, ex);
        assert!(shared.is_empty());
        assert_eq!(hooks.len(), 3);
    }

    #[test]
    fn a_plain_function_calling_elsewhere_first_keeps_both_hooks() {
        let (mut code, plain, ex, _) = openssl_30();
        put_call(&mut code, 30, 0x120);
        code[0x120] = 0x53; // push %rbx: cheap, but not the function SSL_read_ex calls
        let (_, shared) = sites(&code, plain, ex);
        assert!(shared.is_empty());
    }

    #[test]
    fn an_internal_function_opening_with_a_stepped_instruction_is_no_cheaper() {
        let (mut code, plain, ex, _) = openssl_30();
        code[0x100..0x104].copy_from_slice(&[0xf3, 0x0f, 0x1e, 0xfa]); // endbr64
        let (_, shared) = sites(&code, plain, ex);
        assert!(shared.is_empty());
    }

    #[test]
    fn an_ex_function_the_kernel_already_emulates_keeps_its_own_hooks() {
        let (mut code, plain, ex, _) = openssl_30();
        code[0x90..0x94].copy_from_slice(&[0x53, 0x90, 0x90, 0x90]); // push %rbx
        let (_, shared) = sites(&code, plain, ex);
        assert!(shared.is_empty());
    }

    #[test]
    fn a_call_outside_the_executable_segment_is_not_followed() {
        let (mut code, plain, ex, _) = openssl_30();
        put_call(&mut code, 30, 0x1000);
        put_call(&mut code, 0x94, 0x1000);
        let (_, shared) = sites(&code, plain, ex);
        assert!(shared.is_empty());
    }

    #[test]
    fn truncated_or_garbage_code_is_no_site() {
        let code = MachineCode { data: &[0x48u8, 0x83][..], executable: whole(2) };
        assert_eq!(pass_through_call(&code, 0), None);
        let garbage = [0x0fu8, 0x0b, 0xff, 0xff];
        let code = MachineCode { data: &garbage[..], executable: whole(4) };
        assert_eq!(first_call(&code, 0), None);
        assert_eq!(code.first(10), None);
    }

    #[test]
    fn the_kernel_emulates_pushes_branches_and_nops_only() {
        let first = |bytes: &[u8]| Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE).decode();
        for emulated in [&[0x53][..], &[0x41, 0x55], &[0xe8, 0, 0, 0, 0], &[0xeb, 0], &[0x74, 0], &[0x0f, 0x85, 0, 0, 0, 0], &[0x90], &[0x0f, 0x1f, 0x44, 0, 0]]
        {
            assert!(kernel_emulates(&first(emulated)), "{emulated:x?}");
        }
        for stepped in [&[0x48, 0x83, 0xec, 0x08][..], &[0xf3, 0x0f, 0x1e, 0xfa], &[0x31, 0xc0], &[0xc3]] {
            assert!(!kernel_emulates(&first(stepped)), "{stepped:x?}");
        }
    }
}
