//! The monitor: the one host-side process that owns a running worker's sandbox.
//!
//! `iii` re-executes itself as `iii __monitor <config> <name> <engine port> <restarts>` (the
//! engine's supervisor does, or `iii worker start` without an engine, detached). The monitor
//! builds the worker's [`SandboxSpec`], starts the sandbox, writes the worker's output into its
//! log, serves `.iii/workers/<name>/control.sock` (status, stop, signal), keeps `state.json`
//! current, and ends when the worker ends. It reports the start on its stdout, one line that
//! its parent reads: `ok <pid> <backend>` or `error <message>`.
//!
//! It stays small (a few threads with small stacks, no big buffers): there is one per worker.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::backend::{self, ImageInfo};
use super::control::{self, Reply, Request};
use super::logs;
use super::spec;
use super::state::{self, Status, WorkerState};
use crate::config::{Config, NetworkChoice};
use crate::file_lock::FileLock;
use crate::project::Project;
use crate::sandbox::{self, ProcessSpec, SandboxSpec, WorkerExit};
use crate::{Context, Result};

/// The hidden first argument that makes `iii` a monitor.
pub const ARG: &str = "__monitor";

/// Monitor exit status when the worker could not be started at all (config, image or sandbox
/// error): the supervisor does not retry those until asked again.
pub const EXIT_START_FAILED: i32 = 3;

/// Small stacks: these threads only shuffle bytes and short JSON lines.
const THREAD_STACK: usize = 128 * 1024;

/// Arguments of the hidden `__monitor` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub config: PathBuf,
    pub name: String,
    pub port: u16,
    pub restarts: u32,
}

impl Args {
    pub fn to_argv(&self) -> Vec<String> {
        vec![
            ARG.to_string(),
            self.config.display().to_string(),
            self.name.clone(),
            self.port.to_string(),
            self.restarts.to_string(),
        ]
    }

    fn parse(argv: &[String]) -> Result<Args> {
        match argv {
            [config, name, port, restarts] => Ok(Args {
                config: PathBuf::from(config),
                name: name.clone(),
                port: port.parse().context("monitor: bad engine port")?,
                restarts: restarts.parse().context("monitor: bad restart count")?,
            }),
            _ => Err(crate::err!(
                "{ARG} is internal to iii: expects CONFIG NAME PORT RESTARTS"
            )),
        }
    }
}

/// Entry point of the hidden `__monitor` command (`argv` after `__monitor`); returns the exit
/// status.
/// Run as a monitor if this process was started as one (first argument [`ARG`]); returns the
/// exit code then.
pub fn entry() -> Option<i32> {
    let args: Vec<String> = std::env::args().collect();
    (args.get(1).map(String::as_str) == Some(ARG)).then(|| main(&args[2..]))
}

fn main(argv: &[String]) -> i32 {
    let mut ready = Ready::take_stdout();
    let args = match Args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            if !ready.send(&format!("error {e}")) {
                crate::say!("error: {e}");
            }
            return 2;
        }
    };
    // The monitor outlives the shell that started it: keep no directory busy (paths it uses
    // are absolute).
    // A relative III_HOME is pinned first (still single-threaded here, so set_var is sound).
    if let Ok(home) = crate::project::store_home()
        .and_then(|h| std::path::absolute(&h).with_context(|| format!("resolving {}", h.display())))
    {
        std::env::set_var("III_HOME", home);
    }
    let _ = std::env::set_current_dir("/");
    match run(&args, &mut ready) {
        Ok(()) => 0,
        Err(e) => {
            // The parent prints a reported error; one nobody received goes to stderr.
            if !ready.send(&format!("error {e}")) {
                crate::say!("error: {e}");
            }
            EXIT_START_FAILED
        }
    }
}

/// The start report channel: the monitor's original stdout (a pipe its parent reads), used
/// for exactly one line; fd 1 itself is pointed at /dev/null so nothing else lands there.
struct Ready(Option<File>);

impl Ready {
    fn take_stdout() -> Ready {
        use std::os::fd::AsFd;
        let Ok(report) = crate::sys::fd::dup_above(std::io::stdout().as_fd(), 3) else {
            return Ready(None);
        };
        if let Ok(null) = File::options().write(true).open("/dev/null") {
            let _ = crate::sys::fd::redirect(null.as_fd(), 1);
        }
        Ready(Some(File::from(report)))
    }

    /// Send the report; false if there was no one to send it to.
    fn send(&mut self, line: &str) -> bool {
        match self.0.take() {
            Some(mut f) => writeln!(f, "{}", line.replace('\n', " ")).is_ok(),
            None => false,
        }
    }
}

/// What the control and signal threads share with the main thread.
struct Shared {
    live: Mutex<Live>,
    cv: Condvar,
    /// Delivers signals to the worker (through init, or the VMM for `vm`).
    signal: sandbox::Signaller,
    stop_signal: i32,
    /// Carries `iii worker exec` connections into the sandbox.
    exec: Option<sandbox::ExecOpener>,
}

struct Live {
    exited: bool,
    stop_requested: bool,
    /// Control connections still being answered: the monitor waits for them before exiting.
    busy: usize,
    state: WorkerState,
}

fn run(args: &Args, ready: &mut Ready) -> Result<()> {
    let project = Project::at(args.config.clone());
    project.ensure_state_dir()?;
    let dir = project.worker_dir(&args.name);
    state::ensure_worker_dir(&dir)?;
    // One monitor per worker, whoever started it: the lock dies with its holder.
    let _lock = match FileLock::try_acquire(&dir.join("monitor.lock"))? {
        Some(l) => l,
        None => {
            return Err(crate::err!("worker {} is already running", args.name));
        }
    };
    // Take SIGTERM/SIGINT from the start: a stop that arrives while the sandbox is being built
    // is honoured as soon as it runs, rather than killing the monitor half-way.
    let mut signals =
        signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
            .context("installing signal handlers")?;
    let me = std::process::id();
    let mut st = WorkerState {
        status: Status::Starting,
        monitor_pid: Some(me),
        monitor_start: state::process_start_time(me),
        restarts: args.restarts,
        ..Default::default()
    };
    state::write(&dir, &st)?;

    let started = prepare(&project, &dir, args).and_then(|(spec, image, backend_kind)| {
        let (rd, wr) = pipe()?;
        let wr2 = wr.try_clone().context("duplicating the log pipe")?;
        let sb = backend::start(
            &backend_kind,
            &spec,
            sandbox::Stdio {
                stdout: wr,
                stderr: wr2,
            },
        )
        .with_context(|| format!("worker {}: starting sandbox", args.name))?;
        Ok((sb, rd, image, backend_kind.note))
    });
    let (mut sb, log_read, image, sandbox_note) = match started {
        Ok(x) => x,
        Err(e) => {
            st.status = Status::Failed;
            st.error = Some(e.to_string());
            st.finished_at = Some(state::now_secs());
            state::write(&dir, &st)?;
            return Err(e);
        }
    };

    let pid = sb.pid();
    st.status = Status::Running;
    st.pid = Some(pid);
    st.started_at = Some(state::now_secs());
    st.sandbox = Some(sb.backend().as_str().to_string());
    st.sandbox_note = sandbox_note;
    st.image_digest = Some(image.manifest_digest.clone());
    state::write(&dir, &st)?;

    let pump = spawn_pump(&dir, log_read);
    let shared = Arc::new(Shared {
        live: Mutex::new(Live {
            exited: false,
            stop_requested: false,
            busy: 0,
            state: st.clone(),
        }),
        cv: Condvar::new(),
        signal: sb.signaller(),
        stop_signal: image
            .stop_signal
            .as_deref()
            .and_then(backend::parse_signal)
            .unwrap_or(libc::SIGTERM),
        exec: sb.exec_opener(),
    });
    let sock = dir.join("control.sock");
    match control::bind(&sock) {
        Ok(l) => spawn_control(l, shared.clone()),
        Err(e) => crate::say!("warning: worker {}: {e}", args.name),
    }
    {
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || {
                for sig in signals.forever() {
                    // A detached monitor has no terminal: a stray SIGHUP means nothing.
                    if sig == libc::SIGHUP {
                        continue;
                    }
                    // Whoever else signals the monitor means "stop this worker".
                    let sh = shared.clone();
                    let _ = std::thread::Builder::new()
                        .stack_size(THREAD_STACK)
                        .spawn(move || stop(&sh, Duration::from_secs(10)));
                }
            });
    }
    ready.send(&format!("ok {pid} {}", sb.backend().as_str()));
    trim_startup_code();

    let exit = sb.wait();
    drop(sb);
    // All write ends are gone with the sandbox: the pump sees EOF and has written everything.
    let _ = pump.recv_timeout(Duration::from_secs(5));

    let mut live = shared.live.lock().unwrap_or_else(|p| p.into_inner());
    let mut st = live.state.clone();
    st.finished_at = Some(state::now_secs());
    st.pid = None;
    match exit {
        Ok(_) if live.stop_requested => st.status = Status::Stopped,
        Ok(WorkerExit::Code(c)) => {
            st.status = Status::Exited;
            st.exit_code = Some(c);
        }
        Ok(WorkerExit::Signal { signal, oom_killed }) => {
            st.status = Status::Crashed;
            st.signal = Some(signal);
            st.error = oom_killed.then(|| "killed: out of memory".to_string());
        }
        Ok(WorkerExit::SandboxFailed(m)) => {
            st.status = Status::Crashed;
            st.error = Some(m);
        }
        Err(e) => {
            st.status = Status::Crashed;
            st.error = Some(e.to_string());
        }
    }
    let write_res = state::write(&dir, &st);
    live.state = st;
    live.exited = true;
    shared.cv.notify_all();
    // Let stop requests in flight answer before the process (and their socket) goes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.busy > 0 && Instant::now() < deadline {
        live = shared
            .cv
            .wait_timeout(live, Duration::from_millis(100))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    drop(live);
    let _ = std::fs::remove_file(&sock);
    write_res
}

/// Everything needed to start the sandbox: config entry, environment, image, spec.
fn prepare(
    project: &Project,
    dir: &Path,
    args: &Args,
) -> Result<(SandboxSpec, ImageInfo, backend::Choice)> {
    let name = &args.name;
    let config = Config::load(&project.config_path)?;
    let entry = config.worker(name).with_context(|| {
        format!(
            "no worker named {name} in {}",
            project.config_path.display()
        )
    })?;
    let config_env = entry.environment(&|k| std::env::var(k).ok())?;
    let image = backend::lookup_worker(project, entry)?;
    // What the worker runs as, in messages: its image, or its pinned binary.
    let shown = entry
        .image
        .clone()
        .unwrap_or_else(|| format!("{name} (binary {})", image.manifest_digest));
    let url = spec::engine_url(args.port);
    let wrap = |e: crate::Error| crate::err!("worker {name}: {e}");
    let process = ProcessSpec {
        args: spec::process_args(&shown, &image.entrypoint, &image.cmd, &url).map_err(wrap)?,
        env: spec::environment(&image.env, &config_env, name, &url),
        cwd: spec::working_dir(image.working_dir.as_deref()),
        user: spec::resolve_user(&image.rootfs, &shown, image.user.as_deref()).map_err(wrap)?,
    };
    let spec = SandboxSpec {
        name: name.clone(),
        image_root: image.rootfs.clone(),
        worker_dir: dir.to_path_buf(),
        process,
        resources: sandbox::Resources {
            cpus: entry.resources.cpus,
            memory_bytes: entry.resources.memory,
            // The backend applies its own default pids limit.
            pids: None,
        },
        network: match &entry.network {
            NetworkChoice::None => sandbox::Network::Isolated,
            NetworkChoice::Host => sandbox::Network::Host,
            NetworkChoice::Egress(p) => sandbox::Network::Egress(sandbox::Egress {
                allow: match &p.allow {
                    None => None,
                    Some(rules) => Some(
                        rules
                            .iter()
                            .map(|r| crate::net::policy::Rule::parse(r))
                            .collect::<std::result::Result<_, _>>()
                            .map_err(|e| wrap(crate::err!("network.allow: {e}")))?,
                    ),
                },
                host_ports: p.host_ports.clone(),
            }),
        },
        engine_addr: SocketAddr::from(([127, 0, 0, 1], args.port)),
        engine_link: Some(project.engine_link()),
    };
    Ok((spec, image, backend::choose(entry.sandbox, &config.vm)))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    // std's pipe is close-on-exec on both ends, as the sandbox's stdio hand-off expects.
    let (rd, wr) = std::io::pipe().context("creating the log pipe")?;
    Ok((rd.into(), wr.into()))
}

/// The log thread: worker output → `log`. Returns a receiver that yields when it is done.
fn spawn_pump(dir: &Path, rd: OwnedFd) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    let res = std::thread::Builder::new()
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let res = logs::LogWriter::open(&dir, logs::max_bytes_from_env())
                .and_then(|mut w| logs::pump(rd, &mut w));
            if let Err(e) = res {
                crate::say!("warning: {}: {e}", dir.display());
            }
            let _ = tx.send(());
        });
    if let Err(e) = res {
        crate::say!("warning: starting the log thread: {e}");
    }
    rx
}

fn spawn_control(listener: std::os::unix::net::UnixListener, shared: Arc<Shared>) {
    let _ = std::thread::Builder::new()
        .stack_size(THREAD_STACK)
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                if !control::peer_allowed(&stream) {
                    continue;
                }
                let sh = shared.clone();
                let _ = std::thread::Builder::new()
                    .stack_size(THREAD_STACK)
                    .spawn(move || serve(&stream, &sh));
            }
        });
}

fn serve(stream: &std::os::unix::net::UnixStream, sh: &Shared) {
    let reply = match control::read_request(stream) {
        Err(e) => Reply::fail(e.to_string()),
        Ok(Request::Exec) => match (&sh.exec, stream.try_clone()) {
            (Some(open), Ok(conn)) => {
                control::write_reply(stream, &Reply::ok("exec"));
                if let Err(e) = open(conn) {
                    crate::say!("warning: exec: {e}");
                }
                return;
            }
            (None, _) => Reply::fail("this worker's sandbox cannot run exec"),
            (_, Err(e)) => Reply::fail(format!("exec: {e}")),
        },
        Ok(Request::Status) => {
            let live = sh.live.lock().unwrap_or_else(|p| p.into_inner());
            Reply {
                ok: true,
                message: live.state.status_text(),
                state: Some(live.state.clone()),
                ..Default::default()
            }
        }
        Ok(Request::Stop { timeout_s, .. }) => stop(sh, Duration::from_secs(timeout_s)),
        Ok(Request::Signal { signal }) => match (sh.signal)(signal) {
            Ok(()) => Reply::ok(format!("sent signal {signal}")),
            Err(e) => Reply::fail(e.to_string()),
        },
        Ok(other) => Reply::fail(format!("a worker monitor does not handle {other:?}")),
    };
    control::write_reply(stream, &reply);
}

/// Stop the worker: its stop signal, then SIGKILL after `timeout`; returns once it is gone.
fn stop(sh: &Shared, timeout: Duration) -> Reply {
    let mut live = sh.live.lock().unwrap_or_else(|p| p.into_inner());
    if live.exited {
        let mut r = Reply::ok("already stopped");
        r.already_stopped = true;
        r.state = Some(live.state.clone());
        return r;
    }
    live.stop_requested = true;
    live.busy += 1;
    drop(live);
    let _ = (sh.signal)(sh.stop_signal);
    let mut killed = false;
    let deadline = Instant::now() + timeout;
    let mut live = sh.live.lock().unwrap_or_else(|p| p.into_inner());
    while !live.exited {
        let now = Instant::now();
        if now >= deadline {
            if !killed {
                killed = true;
                let _ = (sh.signal)(libc::SIGKILL);
            }
            live = sh
                .cv
                .wait_timeout(live, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        } else {
            live = sh
                .cv
                .wait_timeout(live, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
    live.busy -= 1;
    sh.cv.notify_all();
    Reply {
        ok: true,
        message: if killed {
            "stopped (killed after timeout)".into()
        } else {
            "stopped".into()
        },
        state: Some(live.state.clone()),
        killed,
        ..Default::default()
    }
}

/// Drop the executable pages the start left mapped (config parsing, image lookup, sandbox
/// setup): from here on the monitor idles for the worker's whole life, and one stays resident
/// per worker. Only clean, read-only, file-backed code is dropped; what is needed again (a
/// stop, a log line) is faulted back in from the page cache.
fn trim_startup_code() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let path = f.nth(3).unwrap_or("");
        if perms != "r-xp" || !path.starts_with('/') {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        else {
            continue;
        };
        // SAFETY: the range is a private, read-only, executable mapping of a file as the
        // kernel lists it; its pages are never written, so MADV_DONTNEED only unmaps them and
        // the next access reads the same bytes back from the file. No Rust object lives there.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// How a monitor's start went, as it reported on its stdout.
#[derive(Debug, Clone, PartialEq)]
pub enum StartReport {
    Running { pid: u32, backend: String },
    Failed(String),
}

/// Start a monitor under the engine: its own process group (a terminal's Ctrl-C reaches the
/// engine, which stops workers gracefully, not the monitors), and killed by the kernel if the
/// engine thread that started it dies (`kill -9 iii` leaves no orphan).
pub fn spawn_supervised(args: &Args) -> Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    let mut cmd = monitor_command(args);
    cmd.stderr(std::process::Stdio::inherit());
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (setpgid, prctl, getppid, _exit) with no allocation.
    unsafe {
        cmd.pre_exec(move || {
            libc::setpgid(0, 0);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The engine may have died before the death signal was armed.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn().context("starting the worker monitor")
}

/// Start a monitor with no engine: its own session, nothing tying it to the CLI that started
/// it (the CLI exits right after the start report, and the monitor is reparented). Its stderr
/// goes to `.iii/workers/<name>/monitor.log`.
pub fn spawn_detached(args: &Args, stderr: File) -> Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = monitor_command(args);
    cmd.stderr(stderr);
    // SAFETY: the closure runs between fork and exec and only calls setsid, which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().context("starting the worker monitor")
}

fn monitor_command(args: &Args) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    // /proc/self/exe is this very binary even if the file on disk was replaced since.
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg0("iii")
        .args(args.to_argv())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    cmd
}

/// Read the start report of a monitor just spawned (blocks until it has started the worker,
/// failed, or died).
pub fn read_ready(child: &mut std::process::Child, name: &str) -> StartReport {
    use std::io::BufRead;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    let line = line.trim_end();
    if let Some(rest) = line.strip_prefix("ok ") {
        let mut it = rest.split_whitespace();
        if let (Some(Ok(pid)), Some(backend)) = (it.next().map(str::parse), it.next()) {
            return StartReport::Running {
                pid,
                backend: backend.to_string(),
            };
        }
    }
    match line.strip_prefix("error ") {
        Some(msg) => StartReport::Failed(msg.to_string()),
        None => StartReport::Failed(format!(
            "worker {name}: its monitor ended before reporting a start"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let a = Args {
            config: PathBuf::from("/p/config.yaml"),
            name: "w".into(),
            port: 49134,
            restarts: 3,
        };
        let argv = a.to_argv();
        assert_eq!(argv[0], ARG);
        assert_eq!(Args::parse(&argv[1..]).unwrap(), a);
        assert!(Args::parse(&argv[2..]).is_err());
    }
}
