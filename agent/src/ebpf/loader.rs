//! Loads the embedded object, configures it for this kernel and attaches its programs.

use std::io;

use agent_common::TracepointOffsets;
use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, TracePoint},
};
use thiserror::Error;

/// The object built by `cargo xtask build-ebpf`, embedded at compile time (see build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sigil.bpf.o"));

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("this sigil-agent was built without its eBPF programs; build it with `cargo xtask build`")]
    NoObject,
    #[error("the kernel refused to load eBPF programs ({0}): run as root or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN")]
    PermissionDenied(String),
    #[error("loading the eBPF object: {0}")]
    Load(#[source] EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program { name: &'static str, source: ProgramError },
    #[error("eBPF map {name}: {source}")]
    Map { name: &'static str, source: MapError },
    #[error("eBPF object has no {0}")]
    Missing(&'static str),
}

impl LoadError {
    /// True when the failure is the kernel saying no to this caller (not a bug in us).
    pub fn is_permission(&self) -> bool {
        matches!(self, LoadError::PermissionDenied(_))
    }
}

/// If any error in the chain is EPERM/EACCES, the kernel refused us for lack of privilege.
fn permission_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(ioe) = err.downcast_ref::<io::Error>()
            && matches!(ioe.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return Some(ioe.to_string());
            }
        cur = err.source();
    }
    None
}

fn program_error(name: &'static str, source: ProgramError) -> LoadError {
    match permission_cause(&source) {
        Some(why) => LoadError::PermissionDenied(why),
        None => LoadError::Program { name, source },
    }
}

/// The loaded programs and the maps user space reads.
pub struct Probes {
    ebpf: Ebpf,
    lost: PerCpuArray<MapData, u64>,
    /// Names of attached programs, in attach order, for the start-up log line.
    pub attached: Vec<&'static str>,
}

/// (program, tracepoint category, tracepoint name)
const PROCESS_PROGRAMS: [(&str, &str, &str); 3] = [
    // fork first: an exec right after start-up then already knows its parent.
    ("sigil_fork", "sched", "sched_process_fork"),
    ("sigil_exec", "sched", "sched_process_exec"),
    ("sigil_exit", "sched", "sched_process_exit"),
];

impl Probes {
    pub fn load(offsets: TracepointOffsets, ring_buffer_bytes: u32) -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        let mut ebpf = EbpfLoader::new()
            .override_global("TP_OFFSETS", &offsets, true)
            .map_max_entries("EVENTS", ring_buffer_bytes)
            .load(OBJECT)
            .map_err(|e| match permission_cause(&e) {
                Some(why) => LoadError::PermissionDenied(why),
                None => LoadError::Load(e),
            })?;
        let lost = ebpf.take_map("LOST").ok_or(LoadError::Missing("map LOST"))?;
        let lost = PerCpuArray::try_from(lost).map_err(|source| LoadError::Map { name: "LOST", source })?;
        Ok(Self { ebpf, lost, attached: Vec::new() })
    }

    /// Attaches fork, exec and exit tracepoints.
    pub fn attach_process_lifecycle(&mut self) -> Result<(), LoadError> {
        for (name, category, tracepoint) in PROCESS_PROGRAMS {
            let prog: &mut TracePoint = self
                .ebpf
                .program_mut(name)
                .ok_or(LoadError::Missing("process program"))?
                .try_into()
                .map_err(|e| program_error(name, e))?;
            prog.load().map_err(|e| program_error(name, e))?;
            prog.attach(category, tracepoint).map_err(|e| program_error(name, e))?;
            self.attached.push(name);
        }
        Ok(())
    }

    /// Takes the event ring buffer (once) for the reader task.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self.ebpf.take_map("EVENTS").ok_or(LoadError::Missing("map EVENTS"))?;
        RingBuf::try_from(map).map_err(|source| LoadError::Map { name: "EVENTS", source })
    }

    /// Events the kernel side could not queue, per event kind id, summed over CPUs.
    pub fn lost(&self) -> Result<Vec<u64>, LoadError> {
        (0..8u32)
            .map(|i| {
                self.lost
                    .get(&i, 0)
                    .map(|v| v.iter().sum())
                    .map_err(|source| LoadError::Map { name: "LOST", source })
            })
            .collect()
    }
}
