//! Tracepoint record layouts, read from tracefs so no offset is hard-coded.

use std::{fs, io, path::Path};

use agent_common::TracepointOffsets;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum FormatError {
    #[error("reading tracepoint format {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("tracepoint {tracepoint} has no field `{field}` (kernel layout not supported)")]
    MissingField { tracepoint: String, field: &'static str },
}

/// Offset of `field` in a tracefs `format` file, e.g. from
/// `\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;`.
pub fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let decl = parts.next()?.trim().strip_prefix("field:")?;
        // The declaration ends with the name, possibly followed by an array suffix.
        let name = decl.rsplit(' ').next()?.split('[').next()?;
        if name != field {
            return None;
        }
        parts.find_map(|p| p.trim().strip_prefix("offset:")?.parse().ok())
    })
}

fn offset(tracefs: &Path, tracepoint: &str, field: &'static str) -> Result<u32, FormatError> {
    let path = tracefs.join("events").join(tracepoint).join("format");
    let text = fs::read_to_string(&path).map_err(|source| FormatError::Read { path: path.display().to_string(), source })?;
    field_offset(&text, field).ok_or(FormatError::MissingField { tracepoint: tracepoint.to_owned(), field })
}

/// Reads the offsets the process-lifecycle programs need from this kernel.
pub fn process_offsets(tracefs: &Path) -> Result<TracepointOffsets, FormatError> {
    Ok(TracepointOffsets {
        valid: 1,
        exec_filename: offset(tracefs, "sched/sched_process_exec", "filename")?,
        fork_child_pid: offset(tracefs, "sched/sched_process_fork", "child_pid")?,
        exit_group_dead: offset(tracefs, "sched/sched_process_exit", "group_dead")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORK_6_18: &str = "name: sched_process_fork
ID: 366
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;
";
    /// Before 6.x the comms were inline arrays, which moves `child_pid`.
    const FORK_5_15: &str = "format:
\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;
";

    #[test]
    fn finds_offsets_in_both_fork_layouts() {
        assert_eq!(field_offset(FORK_6_18, "child_pid"), Some(20));
        assert_eq!(field_offset(FORK_6_18, "parent_comm"), Some(8));
        assert_eq!(field_offset(FORK_5_15, "child_pid"), Some(44));
        assert_eq!(field_offset(FORK_5_15, "child_comm"), Some(28));
    }

    #[test]
    fn missing_or_garbled_fields_are_none() {
        assert_eq!(field_offset(FORK_6_18, "nope"), None);
        assert_eq!(field_offset("field:int x;\toffset:abc;", "x"), None);
        assert_eq!(field_offset("", "x"), None);
    }
}
