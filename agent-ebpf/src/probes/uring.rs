//! The io_uring submission tracepoint (`io_uring/io_uring_submit_req`), which the open
//! and network programs both read requests from: it fires after a request's
//! preparation, so its per-opcode data (`io_kiocb.cmd`) holds what the request names.

use aya_ebpf::programs::TracePointContext;
use sigil_agent_common::UringOffsets;

use crate::maps::URING_OFFSETS;

/// Fields of the tracepoint's record, checked against tracefs by the loader.
const URING_REQ: usize = 16;
const URING_OPCODE: usize = 32;
const URING_FLAGS: usize = 40;

/// One request being submitted.
pub struct Request {
    pub opcode: u8,
    /// The `struct io_kiocb`.
    pub req: u64,
    /// Its per-opcode data (`io_open`, `io_sr_msg`, `io_rw`, `io_connect`, `io_close`).
    pub cmd: u64,
    /// Where those keep their fields, from this kernel's BTF.
    pub off: UringOffsets,
}

/// The request being submitted, when `wanted` takes its opcode and the agent found where
/// requests keep their data; None otherwise.
#[inline(always)]
pub fn submitted(ctx: &TracePointContext, wanted: impl Fn(u8) -> bool) -> Result<Option<Request>, i64> {
    // SAFETY: layout checked by the loader against this kernel's tracefs format.
    let opcode: u8 = unsafe { ctx.read_at(URING_OPCODE) }.map_err(|e| e as i64)?;
    if !wanted(opcode) {
        return Ok(None);
    }
    let off = URING_OFFSETS.load();
    if off.valid == 0 {
        return Ok(None);
    }
    // SAFETY: as above.
    let req: u64 = unsafe { ctx.read_at(URING_REQ) }.map_err(|e| e as i64)?;
    if req == 0 {
        return Ok(None);
    }
    Ok(Some(Request { opcode, req, cmd: req + u64::from(off.kiocb_cmd), off }))
}

/// The request's flags (`REQ_F_*`).
#[inline(always)]
pub fn flags(ctx: &TracePointContext) -> Result<u64, i64> {
    // SAFETY: as above.
    unsafe { ctx.read_at(URING_FLAGS) }.map_err(|e| e as i64)
}
