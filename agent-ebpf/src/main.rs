//! Sigil's kernel-resident programs.
//!
//! Programs stay small: they copy what only the kernel knows at that instant (who is
//! running, in which cgroup, what was exec'd) into a ring buffer and leave everything else
//! (hashing, cgroup path resolution, policy) to user space.
#![no_std]
#![no_main]

mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Never reached: the verifier rejects any program with a reachable panic path.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
