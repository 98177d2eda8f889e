//! `start`, `stop`, `restart` and `list` as the CLI (and `remove`) use them: through the
//! engine when one runs for the project, else directly — a detached monitor for `start`, the
//! worker's control socket (or its monitor's PID) for `stop`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::control::{self, Reply, Request};
use super::monitor::{self, StartReport};
use super::state::{self, Status, WorkerState};
use crate::config::{edit, Config};
use crate::project::Project;
use crate::{err, Context, Result};

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It ended within the grace period.
    Stopped,
    /// It ignored the stop signal and was killed after the grace period.
    Killed,
    /// Nothing was running.
    AlreadyStopped,
}

impl StopOutcome {
    pub fn message(self, name: &str) -> String {
        match self {
            StopOutcome::Stopped => format!("{name} stopped"),
            StopOutcome::Killed => format!("{name} stopped (killed after the grace period)"),
            StopOutcome::AlreadyStopped => format!("{name} is already stopped"),
        }
    }

    pub(crate) fn reply(self, name: &str) -> Reply {
        let mut r = Reply::ok(self.message(name));
        r.already_stopped = self == StopOutcome::AlreadyStopped;
        r.killed = self == StopOutcome::Killed;
        r
    }

    fn from_reply(r: &Reply) -> StopOutcome {
        if r.already_stopped {
            StopOutcome::AlreadyStopped
        } else if r.killed {
            StopOutcome::Killed
        } else {
            StopOutcome::Stopped
        }
    }
}

/// Ask the project's engine, if one runs; `Ok(None)` when none does.
fn ask_engine(project: &Project, req: &Request) -> Result<Option<Reply>> {
    control::call(&project.engine_socket(), req)
}

/// Stop worker `name`: its stop signal, `timeout` to end, then SIGKILL. Stopping a stopped
/// worker succeeds with [`StopOutcome::AlreadyStopped`].
pub fn stop_worker(project: &Project, name: &str, timeout: Duration) -> Result<StopOutcome> {
    let req = Request::Stop {
        name: Some(name.to_string()),
        timeout_s: timeout.as_secs(),
    };
    match ask_engine(project, &req)? {
        Some(r) if r.ok => Ok(StopOutcome::from_reply(&r)),
        Some(r) => Err(crate::Error::new(r.message)),
        None => stop_unsupervised(project, name, timeout),
    }
}

/// Stop a worker no engine supervises, through its own monitor.
pub fn stop_unsupervised(project: &Project, name: &str, timeout: Duration) -> Result<StopOutcome> {
    let dir = project.worker_dir(name);
    // An unreadable state file names no monitor we could stop.
    let st = state::read(&dir).unwrap_or_default();
    if !st.monitor_alive() {
        return Ok(StopOutcome::AlreadyStopped);
    }
    stop_monitor(&dir, &st, timeout)
}

/// Stop the worker of the live monitor `st` names, and wait until that monitor has ended.
pub fn stop_monitor(dir: &Path, st: &WorkerState, timeout: Duration) -> Result<StopOutcome> {
    let req = Request::Stop {
        name: None,
        timeout_s: timeout.as_secs(),
    };
    let outcome = match control::call(&dir.join("control.sock"), &req)? {
        Some(r) if r.ok => StopOutcome::from_reply(&r),
        Some(r) => return Err(crate::Error::new(r.message)),
        None => {
            // No control socket (still starting): the monitor takes SIGTERM as "stop".
            if let Some(pid) = st.monitor_pid {
                // Liveness was checked with the PID's start time just before.
                let _ = crate::sys::pid::kill(pid as i32, libc::SIGTERM);
            }
            StopOutcome::Stopped
        }
    };
    // The reply comes just before the monitor exits; wait for it so the worker's lock and
    // state are final when we return (a `start` may follow at once).
    let deadline = Instant::now() + timeout + Duration::from_secs(10);
    while st.monitor_alive() {
        if Instant::now() >= deadline {
            if let Some(pid) = st.monitor_pid {
                // As above; the sandbox dies with its monitor.
                let _ = crate::sys::pid::kill(pid as i32, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(outcome)
}

/// Start worker `name` (a no-op if it runs); returns the sentence to print.
pub fn start_worker(project: &Project, name: &str) -> Result<String> {
    let req = Request::Start {
        name: name.to_string(),
    };
    if let Some(r) = ask_engine(project, &req)? {
        return if r.ok {
            Ok(r.message)
        } else {
            Err(crate::Error::new(r.message))
        };
    }
    let config = Config::load(&project.config_path)?;
    if config.worker(name).is_none() {
        return Err(crate::err!(
            "no worker named {name} in {}",
            project.config_path.display()
        ));
    }
    let dir = project.worker_dir(name);
    let st = state::read(&dir)?;
    if matches!(st.status, Status::Running | Status::Starting) && st.monitor_alive() {
        return Ok(format!("{name} is already running"));
    }
    project.ensure_state_dir()?;
    state::ensure_worker_dir(&dir)?;
    let config_path = std::path::absolute(&project.config_path)
        .with_context(|| format!("resolving {}", project.config_path.display()))?;
    let args = monitor::Args {
        config: config_path,
        name: name.to_string(),
        port: config.worker_port()?,
        restarts: 0,
    };
    let log_path = dir.join("monitor.log");
    let stderr = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut child = monitor::spawn_detached(&args, stderr)?;
    match monitor::read_ready(&mut child, name) {
        StartReport::Running { pid, backend } => {
            Ok(format!("{name} started (pid {pid}, {backend})"))
        }
        StartReport::Failed(m) => {
            let _ = child.wait();
            Err(crate::Error::new(m))
        }
    }
}

/// `restart`: stop (if running), then start.
pub fn restart_worker(project: &Project, name: &str, timeout: Duration) -> Result<String> {
    let req = Request::Restart {
        name: name.to_string(),
        timeout_s: timeout.as_secs(),
    };
    if let Some(r) = ask_engine(project, &req)? {
        return if r.ok {
            Ok(r.message)
        } else {
            Err(crate::Error::new(r.message))
        };
    }
    stop_unsupervised(project, name, timeout)?;
    start_worker(project, name)
}

/// One row of `iii worker list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListRow {
    pub name: String,
    pub image: String,
    pub status: String,
    pub sandbox: String,
    /// Why `sandbox: auto` runs (or would run) this worker in `namespace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_note: Option<String>,
    pub pid: Option<u32>,
    pub uptime_seconds: Option<u64>,
    pub restarts: u32,
    /// Whether the worker's SDK is connected to the engine (over its engine link); `None`
    /// when it is not running or no engine runs for this project.
    pub sdk_connected: Option<bool>,
    /// How many functions its connections serve (with `sdk_connected`).
    pub functions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The running engine's SDK connections that came over an engine link: (container worker,
/// functions served). `None` when no engine answers (the list still works without one).
fn engine_links(project: &Project) -> Option<Vec<(String, usize)>> {
    let reply = ask_engine(project, &Request::Connections).ok().flatten()?;
    let list = reply.connections?;
    Some(
        list.as_array()?
            .iter()
            .filter_map(|c| {
                let name = c.get("container")?.as_str()?.to_string();
                let functions = c.get("functions").and_then(|f| f.as_u64()).unwrap_or(0);
                Some((name, functions as usize))
            })
            .collect(),
    )
}

/// Every worker in config.yaml with its state, in file order; an entry that does not
/// validate is a row with status `invalid` and the reason in `error`.
pub fn list(project: &Project) -> Result<Vec<ListRow>> {
    let config = Config::load_lenient(&project.config_path)?;
    let now = state::now_secs();
    let links = engine_links(project);
    // A bare registry-managed entry shows what iii.lock pins for it.
    let lock = crate::lockfile::Lock::load(&project.lock_path())
        .ok()
        .flatten();
    let mut rows = Vec::new();
    for w in &config.workers {
        let st = state::read(&project.worker_dir(&w.name))
            .unwrap_or_default()
            .effective();
        let running = st.status == Status::Running;
        // What a start would choose now; a worker that ran says what its monitor chose.
        let (sandbox, sandbox_note) = match &st.sandbox {
            Some(s) => (s.clone(), st.sandbox_note.clone()),
            None => {
                let choice = super::backend::choose(w.sandbox, &config.vm);
                (choice.backend.as_str().to_string(), choice.note)
            }
        };
        rows.push(ListRow {
            name: w.name.clone(),
            image: w.image.clone().unwrap_or_else(|| {
                match lock.as_ref().and_then(|l| l.workers.get(&w.name)) {
                    Some(p) => format!("({} {})", p.kind.as_str(), p.version),
                    None => "(not pinned)".into(),
                }
            }),
            status: st.status_text(),
            sandbox,
            sandbox_note,
            pid: if running { st.pid } else { None },
            uptime_seconds: if running {
                st.started_at.map(|s| now.saturating_sub(s))
            } else {
                None
            },
            restarts: st.restarts,
            sdk_connected: links
                .as_ref()
                .filter(|_| running)
                .map(|l| l.iter().any(|(n, _)| *n == w.name)),
            functions: links
                .as_ref()
                .filter(|_| running)
                .map(|l| l.iter().filter(|(n, _)| *n == w.name).map(|(_, f)| f).sum()),
            exit_code: st.exit_code,
            error: st.error.clone(),
        });
    }
    // Valid rows fill the positions the invalid entries leave free.
    let mut ordered: Vec<(usize, ListRow)> = config.positions().into_iter().zip(rows).collect();
    for e in &config.invalid {
        ordered.push((
            e.index,
            ListRow {
                name: e
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("workers[{}]", e.index)),
                image: e.image.clone().unwrap_or_default(),
                status: "invalid".into(),
                sandbox: "-".into(),
                sandbox_note: None,
                pid: None,
                uptime_seconds: None,
                restarts: 0,
                sdk_connected: None,
                functions: None,
                exit_code: None,
                error: Some(e.error.clone()),
            },
        ));
    }
    ordered.sort_by_key(|(i, _)| *i);
    Ok(ordered.into_iter().map(|(_, r)| r).collect())
}

/// `iii worker remove NAME`: stop the worker if it runs (default grace period), take its entry
/// out of config.yaml and its pin out of iii.lock, and delete its state (all of it, or all but the writable layer).
pub fn remove(project: &Project, name: &str, keep_data: bool) -> Result<()> {
    let path = &project.config_path;
    // Lenient: an entry that does not validate can still be removed (and must not stop the
    // others from being removed).
    let config = Config::load_lenient(path)?;
    if config.worker(name).is_none() {
        if config
            .invalid
            .iter()
            .any(|e| e.name.as_deref() == Some(name))
        {
            // It never validated, so it never ran; and its name may not be a safe path
            // (`../../x`): only its lines in config.yaml go.
            return edit::update_file(path, |text, current| {
                Ok((edit::remove_entry(text, current, name)?, ()))
            });
        }
        return Err(err!("no worker named {name:?} in {}", path.display()));
    }
    stop_worker(project, name, Duration::from_secs(10))?;
    // Its pin goes with it (the artifacts stay in the store until `iii worker clear`).
    crate::install::commit(
        project,
        |text, current| Ok((edit::remove_entry(text, current, name)?, ())),
        |lock| {
            lock.workers.remove(name);
            Ok(())
        },
    )?;
    state::delete(&project.worker_dir(name), keep_data)
}
