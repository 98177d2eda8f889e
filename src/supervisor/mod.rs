//! The supervisor of container workers: one thread per worker runs its monitor (the host-side
//! process that owns the worker's sandbox) and restarts it when the worker ends by itself, with
//! backoff (1 s doubling to 30 s, back to 1 s after 60 s of healthy running). A stop — from the
//! CLI, SIGHUP reload or shutdown — clears the worker's "wanted" flag first, so the supervisor
//! never undoes it. It also serves `.iii/engine.sock`, the CLI's door into a running engine.
//!
//! - [`monitor`]: the host-side process that owns one running worker's sandbox.
//! - [`lifecycle`]: start/stop/restart/list as the CLI uses them, with or without an engine.
//! - [`spec`]: the worker process (argv, env, user) from image and config, backend-independent.
//! - [`backend`]: which sandbox backend runs a worker.
//! - [`logs`], [`state`], [`control`]: the files and sockets under `.iii/`.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use control::{Reply, Request};
use monitor::StartReport;

use crate::config::{Config, WorkerEntry};
use crate::project::Project;

pub mod backend;
pub mod control;
pub mod lifecycle;
pub mod logs;
pub mod monitor;
pub mod spec;
pub mod state;

pub use lifecycle::{stop_worker, StopOutcome};

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Running this long counts as healthy: the next crash restarts after the first backoff again.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// Grace period of a shutdown or reload stop (as `iii worker stop`'s default).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One worker under supervision.
struct Slot {
    name: String,
    ctl: Mutex<Ctl>,
    cv: Condvar,
}

struct Ctl {
    entry: WorkerEntry,
    /// Whether the worker should be running; only start/stop requests change it (and a start
    /// that fails for a reason a retry will not fix).
    want: bool,
    /// The slot is being removed (worker gone from config, or engine shutdown).
    retired: bool,
    /// PID of the current monitor.
    monitor: Option<u32>,
    restarts: u32,
    /// Start attempts completed, and the latest one's report, for a waiting `start` request.
    starts: u64,
    last: Option<StartReport>,
}

pub struct Supervisor {
    project: Project,
    port: u16,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A worker started by `iii worker start` before the engine ran is stopped first, so the
/// engine starts it again under its own supervision.
fn adopt_detached(dir: &std::path::Path, name: &str) {
    let Ok(st) = state::read(dir) else { return };
    if matches!(st.status, state::Status::Running | state::Status::Starting) && st.monitor_alive() {
        crate::say!("{name}: running without an engine; restarting it under the engine");
        if let Err(e) = lifecycle::stop_monitor(dir, &st, STOP_TIMEOUT) {
            crate::say!("error: worker {name}: {e}");
        }
    }
}

impl Supervisor {
    /// A supervisor for `project`'s workers; `port` is the engine port their links reach.
    pub fn new(project: Project, port: u16) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            project,
            port,
            slots: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
        })
    }

    /// Start every container worker of `config` under supervision.
    pub fn start_all(self: &Arc<Self>, config: &Config) {
        for entry in &config.workers {
            self.add(entry.clone(), true);
        }
    }

    /// Serve `.iii/engine.sock` (start/stop/restart/status requests from the CLI) on a thread;
    /// `other` answers the requests that are not about container workers.
    pub fn serve_control(
        self: &Arc<Self>,
        listener: std::os::unix::net::UnixListener,
        other: OtherRequests,
    ) {
        let me = self.clone();
        let other: Arc<OtherHandler> = Arc::from(other);
        std::thread::Builder::new()
            .name("engine.sock".into())
            .spawn(move || serve(&me, listener, other))
            .expect("spawning the engine.sock thread");
    }

    /// The container worker whose monitor has PID `pid`, if it is one of ours.
    pub fn worker_of_monitor(&self, pid: u32) -> Option<String> {
        guard(&self.slots)
            .values()
            .find(|s| guard(&s.ctl).monitor == Some(pid))
            .map(|s| s.name.clone())
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        guard(&self.slots).get(name).cloned()
    }

    /// Put a worker under supervision (its thread waits until it is wanted).
    fn add(self: &Arc<Self>, entry: WorkerEntry, want: bool) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            name: entry.name.clone(),
            ctl: Mutex::new(Ctl {
                entry,
                want,
                retired: false,
                monitor: None,
                restarts: 0,
                starts: 0,
                last: None,
            }),
            cv: Condvar::new(),
        });
        guard(&self.slots).insert(slot.name.clone(), slot.clone());
        let (engine, s) = (self.clone(), slot.clone());
        let handle = std::thread::Builder::new()
            .name(format!("supervise {}", slot.name))
            .spawn(move || engine.supervise(&s))
            .expect("spawning a supervisor thread");
        guard(&self.threads).push(handle);
        slot
    }

    /// The supervisor loop of one worker.
    fn supervise(&self, slot: &Slot) {
        let dir = self.project.worker_dir(&slot.name);
        adopt_detached(&dir, &slot.name);
        let mut backoff = BACKOFF_FIRST;
        loop {
            let restarts = {
                let mut c = guard(&slot.ctl);
                while !c.want && !c.retired {
                    c = slot.cv.wait(c).unwrap_or_else(|p| p.into_inner());
                }
                if c.retired {
                    return;
                }
                c.restarts
            };
            let args = monitor::Args {
                config: self.project.config_path.clone(),
                name: slot.name.clone(),
                port: self.port,
                restarts,
            };
            let mut child = match monitor::spawn_supervised(&args) {
                Ok(c) => c,
                Err(e) => {
                    let msg = format!("worker {}: {e}", slot.name);
                    crate::say!("error: {msg}");
                    let mut c = guard(&slot.ctl);
                    c.want = false;
                    c.starts += 1;
                    c.last = Some(StartReport::Failed(msg));
                    slot.cv.notify_all();
                    continue;
                }
            };
            guard(&slot.ctl).monitor = Some(child.id());
            let report = monitor::read_ready(&mut child, &slot.name);
            match &report {
                StartReport::Running { pid, backend } => {
                    crate::say!("{}: running (pid {pid}, {backend})", slot.name)
                }
                StartReport::Failed(m) => crate::say!("error: {m}"),
            }
            {
                let mut c = guard(&slot.ctl);
                c.starts += 1;
                c.last = Some(report.clone());
                slot.cv.notify_all();
            }
            let started = Instant::now();
            let status = child.wait();
            let mut c = guard(&slot.ctl);
            c.monitor = None;
            slot.cv.notify_all();
            let start_failed = matches!(report, StartReport::Failed(_))
                || matches!(&status, Ok(s) if s.code() == Some(monitor::EXIT_START_FAILED));
            if start_failed {
                // Config, image or sandbox errors: retrying cannot help until someone acts.
                c.want = false;
                continue;
            }
            if !c.want || c.retired {
                continue;
            }
            // The worker ended by itself (or its monitor died): restart after the backoff.
            if started.elapsed() >= HEALTHY_AFTER {
                backoff = BACKOFF_FIRST;
            }
            // Why it ended, when the monitor knows more than the status ("killed: out of
            // memory", "the guest kernel panicked: …").
            let what = state::read(&dir)
                .map(|s| {
                    let s = s.effective();
                    match &s.error {
                        Some(e) => format!("{} ({e})", s.status_text()),
                        None => s.status_text(),
                    }
                })
                .unwrap_or_else(|_| "ended".into());
            crate::say!(
                "{}: {what}; restarting in {}s",
                slot.name,
                backoff.as_secs()
            );
            let deadline = Instant::now() + backoff;
            while c.want && !c.retired {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                c = slot
                    .cv
                    .wait_timeout(c, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if c.want && !c.retired {
                c.restarts += 1;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// `start`: want the worker running and wait for its start report.
    fn start(self: &Arc<Self>, name: &str) -> Reply {
        let slot = match self.slot(name) {
            Some(s) => s,
            // A worker added to config.yaml while the engine runs can be started by name.
            None => match Config::load(&self.project.config_path) {
                Ok(cfg) => match cfg.worker(name) {
                    Some(entry) => self.add(entry.clone(), false),
                    None => {
                        return Reply::fail(format!(
                            "no worker named {name} in {}",
                            self.project.config_path.display()
                        ))
                    }
                },
                Err(e) => return Reply::fail(e.to_string()),
            },
        };
        let mut c = guard(&slot.ctl);
        if c.want {
            return Reply::ok(if c.monitor.is_some() {
                format!("{name} is already running")
            } else {
                format!("{name} is already running (restarting after an exit)")
            });
        }
        c.want = true;
        c.restarts = 0;
        let before = c.starts;
        slot.cv.notify_all();
        let deadline = Instant::now() + Duration::from_secs(300);
        while c.starts == before && Instant::now() < deadline {
            c = slot
                .cv
                .wait_timeout(c, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        match &c.last {
            Some(StartReport::Running { pid, backend }) if c.starts > before => {
                Reply::ok(format!("{name} started (pid {pid}, {backend})"))
            }
            Some(StartReport::Failed(m)) if c.starts > before => Reply::fail(m.clone()),
            _ => Reply::fail(format!("worker {name}: no start report from its monitor")),
        }
    }

    /// `stop`: no longer wanted, then stop the monitor (and so the worker) if one runs.
    fn stop(&self, name: &str, timeout: Duration) -> Reply {
        let Some(slot) = self.slot(name) else {
            // Not supervised (e.g. removed from config): it may still run detached.
            return match lifecycle::stop_unsupervised(&self.project, name, timeout) {
                Ok(o) => o.reply(name),
                Err(e) => Reply::fail(e.to_string()),
            };
        };
        let dir = self.project.worker_dir(name);
        let (mon, was_wanted) = {
            let mut c = guard(&slot.ctl);
            let was_wanted = c.want;
            c.want = false;
            slot.cv.notify_all();
            (c.monitor, was_wanted)
        };
        let Some(mon) = mon else {
            if was_wanted {
                // Waiting out a restart backoff: no process, but the stop cancels the restart,
                // and `list` should say so rather than show the last exit.
                mark_stopped(&dir);
                return lifecycle::StopOutcome::Stopped.reply(name);
            }
            return lifecycle::StopOutcome::AlreadyStopped.reply(name);
        };
        let outcome = match control::call(
            &dir.join("control.sock"),
            &Request::Stop {
                name: None,
                timeout_s: timeout.as_secs(),
            },
        ) {
            Ok(Some(r)) if r.already_stopped => lifecycle::StopOutcome::Stopped,
            Ok(Some(r)) if r.killed => lifecycle::StopOutcome::Killed,
            Ok(Some(_)) => lifecycle::StopOutcome::Stopped,
            // Still starting (no socket yet) or ending: the monitor takes SIGTERM as "stop".
            _ => {
                let _ = crate::sys::pid::kill(mon as i32, libc::SIGTERM);
                lifecycle::StopOutcome::Stopped
            }
        };
        // Wait for the supervisor to reap the monitor, so a following start is clean.
        let deadline = Instant::now() + timeout + Duration::from_secs(15);
        let mut c = guard(&slot.ctl);
        while c.monitor == Some(mon) {
            if Instant::now() >= deadline {
                // `mon` is our unreaped child, so its PID cannot have been reused.
                let _ = crate::sys::pid::kill(mon as i32, libc::SIGKILL);
            }
            c = slot
                .cv
                .wait_timeout(c, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        outcome.reply(name)
    }

    /// Remove a worker from supervision (after stopping it).
    fn retire(&self, name: &str) {
        if let Some(slot) = guard(&self.slots).remove(name) {
            guard(&slot.ctl).retired = true;
            slot.cv.notify_all();
        }
    }

    /// SIGHUP: re-read config.yaml; start new workers, stop removed ones, restart changed ones.
    pub fn reload(self: &Arc<Self>) {
        let config = match Config::load(&self.project.config_path) {
            Ok(c) => c,
            Err(e) => {
                crate::say!("error: reload: {e} (keeping the running workers as they are)");
                return;
            }
        };
        crate::say!(
            "iii engine: reloading {}",
            self.project.config_path.display()
        );
        let current: Vec<Arc<Slot>> = guard(&self.slots).values().cloned().collect();
        let mut jobs = Vec::new();
        for slot in current {
            let name = slot.name.clone();
            let new_entry = config.worker(&name).cloned();
            let old_entry = guard(&slot.ctl).entry.clone();
            let engine = self.clone();
            match new_entry {
                None => jobs.push(std::thread::spawn(move || {
                    crate::say!("{name}: removed from config; stopping");
                    engine.stop(&name, STOP_TIMEOUT);
                    engine.retire(&name);
                })),
                Some(e) if e != old_entry => jobs.push(std::thread::spawn(move || {
                    crate::say!("{name}: entry changed; restarting");
                    let was_wanted = guard(&slot.ctl).want;
                    engine.stop(&name, STOP_TIMEOUT);
                    guard(&slot.ctl).entry = e;
                    if was_wanted {
                        let r = engine.start(&name);
                        if !r.ok {
                            crate::say!("error: {}", r.message);
                        }
                    }
                })),
                Some(_) => {}
            }
        }
        for entry in &config.workers {
            if self.slot(&entry.name).is_none() {
                crate::say!("{}: added to config; starting", entry.name);
                self.add(entry.clone(), true);
            }
        }
        for j in jobs {
            let _ = j.join();
        }
    }

    /// SIGINT/SIGTERM: stop every worker in parallel, then end every supervisor thread.
    pub fn shutdown(self: &Arc<Self>) {
        let names: Vec<String> = guard(&self.slots).keys().cloned().collect();
        let jobs: Vec<_> = names
            .into_iter()
            .map(|n| {
                let engine = self.clone();
                std::thread::spawn(move || {
                    let r = engine.stop(&n, STOP_TIMEOUT);
                    if !r.ok {
                        crate::say!("error: {}", r.message);
                    }
                    engine.retire(&n);
                })
            })
            .collect();
        for j in jobs {
            let _ = j.join();
        }
        let threads: Vec<_> = guard(&self.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Record that a worker between runs is now stopped (its last exit details stay).
fn mark_stopped(dir: &std::path::Path) {
    if let Ok(mut st) = state::read(dir) {
        let ended = matches!(st.status, state::Status::Exited | state::Status::Crashed)
            || (matches!(st.status, state::Status::Running | state::Status::Starting)
                && !st.monitor_alive());
        if ended {
            st.status = state::Status::Stopped;
            if let Err(e) = state::write(dir, &st) {
                crate::say!("warning: {e}");
            }
        }
    }
}

/// Answers engine.sock requests the supervisor does not handle itself.
pub type OtherRequests = Box<OtherHandler>;
type OtherHandler = dyn Fn(&Request) -> Option<Reply> + Send + Sync;

/// The engine.sock server: a thread per request (a stop may take its whole grace period).
fn serve(
    engine: &Arc<Supervisor>,
    listener: std::os::unix::net::UnixListener,
    other: Arc<OtherHandler>,
) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        if !control::peer_allowed(&stream) {
            continue;
        }
        let engine = engine.clone();
        let other = other.clone();
        std::thread::spawn(move || {
            let reply = match control::read_request(&stream) {
                Err(e) => Reply::fail(e.to_string()),
                Ok(Request::Status) => {
                    let mut r = Reply::ok(format!("engine pid {}", std::process::id()));
                    r.port = Some(engine.port);
                    r
                }
                Ok(Request::Start { name }) => engine.start(&name),
                Ok(Request::Stop {
                    name: Some(name),
                    timeout_s,
                }) => engine.stop(&name, Duration::from_secs(timeout_s)),
                Ok(Request::Restart { name, timeout_s }) => {
                    let r = engine.stop(&name, Duration::from_secs(timeout_s));
                    if r.ok {
                        engine.start(&name)
                    } else {
                        r
                    }
                }
                Ok(req) => other(&req)
                    .unwrap_or_else(|| Reply::fail(format!("the engine does not handle {req:?}"))),
            };
            control::write_reply(&stream, &reply);
        });
    }
}
