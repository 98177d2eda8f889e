//! A worker's runtime state, `.iii/workers/<name>/state.json`, written atomically by its
//! monitor (and by the engine for a worker that could not start) and read by `list`.
//!
//! A state that says "running" is only believed while the monitor process it names is alive:
//! the PID is checked together with the process start time, so a recycled PID is not mistaken
//! for the monitor after `kill -9`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Context, Result};

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Never started, or stopped on request.
    #[default]
    Stopped,
    /// The monitor is preparing the sandbox.
    Starting,
    Running,
    /// The worker process exited by itself with a code (see `exit_code`).
    Exited,
    /// Killed by a signal, the sandbox failed, or its monitor vanished.
    Crashed,
    /// It could not be started at all (config, image or sandbox error; see `error`).
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerState {
    #[serde(default)]
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Host PID of the sandbox's root process (init, or the VMM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The monitor that owns the sandbox, and its start time (clock ticks since boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_start: Option<u64>,
    /// Unix seconds when the worker process started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// Restarts by the supervisor since the engine (or the last explicit start) began it.
    #[serde(default)]
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Why `sandbox: auto` fell back to `namespace`, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

impl WorkerState {
    /// STATUS as `list` prints it: `running`, `stopped`, `starting`, `crashed`, `exited N`,
    /// `failed`.
    pub fn status_text(&self) -> String {
        match self.status {
            Status::Exited => format!("exited {}", self.exit_code.unwrap_or(0)),
            Status::Running => "running".into(),
            Status::Stopped => "stopped".into(),
            Status::Starting => "starting".into(),
            Status::Crashed => "crashed".into(),
            Status::Failed => "failed".into(),
        }
    }

    /// Whether the monitor this state names is alive (for `starting`/`running` states).
    pub fn monitor_alive(&self) -> bool {
        match (self.monitor_pid, self.monitor_start) {
            (Some(pid), Some(start)) => process_start_time(pid) == Some(start),
            _ => false,
        }
    }

    /// The state as `list` should believe it: `starting`/`running` with a dead monitor is a
    /// crash (e.g. `kill -9`), whatever the file says.
    pub fn effective(mut self) -> WorkerState {
        if matches!(self.status, Status::Starting | Status::Running) && !self.monitor_alive() {
            self.status = Status::Crashed;
        }
        self
    }
}

pub fn path(worker_dir: &Path) -> PathBuf {
    worker_dir.join("state.json")
}

/// The stored state, or the default (`stopped`) when there is none yet.
pub fn read(worker_dir: &Path) -> Result<WorkerState> {
    let p = path(worker_dir);
    match std::fs::read(&p) {
        Ok(data) => {
            serde_json::from_slice(&data).with_context(|| format!("parsing {}", p.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WorkerState::default()),
        Err(e) => Err(crate::err!("reading {}: {e}", p.display())),
    }
}

/// Replace the state file atomically (temp file, fsync, rename): a reader sees the old or the
/// new state, never half of one.
pub fn write(worker_dir: &Path, state: &WorkerState) -> Result<()> {
    let p = path(worker_dir);
    let tmp = worker_dir.join(format!(".state.json.{}", std::process::id()));
    let data = serde_json::to_vec(state).context("encoding worker state")?;
    let res = (|| -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {}", p.display()))
}

/// Create `.iii/workers/<name>/` (0700) if needed.
/// Delete a worker's directory (`.iii/workers/<name>/`), or everything in it but the writable
/// layer (`remove --keep-data`). A directory that does not exist is already deleted.
pub fn delete(worker_dir: &Path, keep_data: bool) -> Result<()> {
    let entries = match std::fs::read_dir(worker_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(crate::err!("reading {}: {e}", worker_dir.display())),
    };
    if !keep_data {
        return std::fs::remove_dir_all(worker_dir)
            .with_context(|| format!("removing {}", worker_dir.display()));
    }
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", worker_dir.display()))?;
        if entry.file_name() == crate::sandbox::WRITABLE_LAYER_DIR {
            continue;
        }
        let p = entry.path();
        let r = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

pub fn ensure_worker_dir(worker_dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(worker_dir)
        .with_context(|| format!("creating {}", worker_dir.display()))
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`), or
/// `None` when it does not exist (or is a zombie awaiting its parent).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and ')': fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); start time is field 22.
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_and_effective() {
        let mut s = WorkerState {
            status: Status::Exited,
            exit_code: Some(3),
            ..Default::default()
        };
        assert_eq!(s.status_text(), "exited 3");
        s.status = Status::Running;
        s.monitor_pid = Some(std::process::id());
        s.monitor_start = process_start_time(std::process::id());
        assert!(s.monitor_start.is_some());
        assert_eq!(s.clone().effective().status, Status::Running);
        // Same PID, other start time: a recycled PID is not our monitor.
        s.monitor_start = Some(s.monitor_start.unwrap() + 1);
        assert_eq!(s.clone().effective().status, Status::Crashed);
        s.monitor_pid = None;
        assert_eq!(s.effective().status_text(), "crashed");
    }

    #[test]
    fn write_then_read_round_trips() {
        let d = std::env::temp_dir().join(format!("iii-state-{}", std::process::id()));
        ensure_worker_dir(&d).unwrap();
        assert_eq!(read(&d).unwrap(), WorkerState::default());
        let s = WorkerState {
            status: Status::Running,
            pid: Some(42),
            restarts: 2,
            started_at: Some(now_secs()),
            sandbox: Some("namespace".into()),
            ..Default::default()
        };
        write(&d, &s).unwrap();
        assert_eq!(read(&d).unwrap(), s);
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
