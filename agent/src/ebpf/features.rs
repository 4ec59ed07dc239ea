//! Start-up probe of what this kernel lets us load, and the hook each capability runs on.
//!
//! Production kernels differ (LSM and fentry are often there; on these CI machines they are
//! refused), so the agent asks the kernel instead of assuming, and says in one line what it
//! runs with and what it fell back from.

use std::fmt;

use aya::{
    maps::MapType,
    programs::{LsmAttachType, ProgramType},
    sys::{is_map_supported, is_program_supported},
};

/// Answer of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    Yes,
    No,
    /// The probe itself failed (EPERM, ...): treated as unavailable.
    Error(String),
}

impl Support {
    pub fn available(&self) -> bool {
        matches!(self, Support::Yes)
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Support::Yes => f.write_str("yes"),
            Support::No => f.write_str("no"),
            Support::Error(e) => write!(f, "no ({e})"),
        }
    }
}

/// What the kernel accepts, probed by loading trivial programs and maps.
#[derive(Debug, Clone)]
pub struct KernelFeatures {
    pub tracepoint: Support,
    pub uprobe: Support,
    pub cgroup_sock_addr: Support,
    pub lsm: Support,
    pub fentry: Support,
    pub ring_buffer: Support,
}

fn program(t: ProgramType) -> Support {
    match is_program_supported(t) {
        Ok(true) => Support::Yes,
        Ok(false) => Support::No,
        Err(e) => Support::Error(root_cause(&e)),
    }
}

/// The innermost error message, which is the one that says what the kernel refused.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl KernelFeatures {
    pub fn probe() -> Self {
        Self {
            tracepoint: program(ProgramType::TracePoint),
            // uprobes are kprobe-type programs attached to a uprobe perf event.
            uprobe: program(ProgramType::KProbe),
            cgroup_sock_addr: program(ProgramType::CgroupSockAddr),
            lsm: program(ProgramType::Lsm(LsmAttachType::Mac)),
            fentry: program(ProgramType::Tracing),
            ring_buffer: match is_map_supported(MapType::RingBuf) {
                Ok(true) => Support::Yes,
                Ok(false) => Support::No,
                Err(e) => Support::Error(root_cause(&e)),
            },
        }
    }

    /// The hook for exec attestation, best first. Only the tracepoint variant ships today;
    /// a kernel that offers LSM or fentry is still reported so operators see what a future
    /// hook would gain (blocking, and a stable file reference instead of a path).
    pub fn exec_hook(&self) -> ExecHook {
        ExecHook {
            running: "tracepoint sched/sched_process_exec",
            fell_back_from: [("lsm bprm_check_security", &self.lsm), ("fentry security_bprm_check", &self.fentry)]
                .into_iter()
                .map(|(hook, s)| {
                    let why = if s.available() { "no program for it in this build".to_owned() } else { format!("kernel: {s}") };
                    format!("{hook} ({why})")
                })
                .collect(),
        }
    }
}

impl fmt::Display for KernelFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tracepoint={} uprobe={} cgroup_sock_addr={} lsm={} fentry={} ring_buffer={}",
            self.tracepoint, self.uprobe, self.cgroup_sock_addr, self.lsm, self.fentry, self.ring_buffer
        )
    }
}

#[derive(Debug, Clone)]
pub struct ExecHook {
    pub running: &'static str,
    pub fell_back_from: Vec<String>,
}
