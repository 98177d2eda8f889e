//! The exec server inside a sandbox: runs one command per exec stream and pumps its stdin,
//! stdout and stderr (or its pseudo-terminal) with credit-based flow control (SPEC §7).
//!
//! Each [`ExecSession`] has its own thread with a `mio` loop over the command's pipes (or pty
//! master) and a waker for frames from the host. Init (or any owner of the byte stream) routes
//! the host's frames for the stream to [`ExecSession::deliver`] and sends what the session
//! emits through its [`Sink`] — or hands a whole byte stream to [`serve_connection`]. Init
//! reaps every child as PID 1 and passes exec commands' statuses to [`child_exited`]; an owner
//! that is not a reaper sets [`ExecContext::own_reaper`] instead.
//!
//! The command runs in its own process group (pipe mode) or its own session with the pty as
//! controlling terminal (TTY mode); signals go to that group, and when the host closes the
//! stream or goes away the group is killed, so no exec leaves orphans behind.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::harden::{capabilities, seccomp, Hardening};
use crate::protocol::exec::{
    code, encode, output_header, spawn_failure_code, Decoder, ExecFrame, ExecMessage, ExecRequest,
    ExecStatus, Output, Side, INITIAL_CREDIT, MAX_CHUNK, OUTPUT_HEADER_LEN,
};
use crate::protocol::mux::Mux;
use crate::protocol::{InitConfig, Setup};
use crate::sys::fd::{bytes_available, pipe};
use crate::sys::pid::Status;

/// Where an exec'd command runs and as whom: the worker's environment and user.
#[derive(Clone)]
pub struct ExecContext {
    /// The worker's environment; the request's `-e` values go on top.
    pub env: Vec<(String, String)>,
    /// Switch to this uid, gid and supplementary groups (`None`: stay as init's user).
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// The pty multiplexer of the sandbox's devpts.
    pub ptmx: String,
    /// Reap the command with a thread of our own (for owners that are not PID 1's reaper).
    pub own_reaper: bool,
    /// The worker's restrictions (capabilities, no_new_privs, seccomp), as `docker exec` runs
    /// a command under the container's profile.
    pub hardening: Option<Arc<Hardening>>,
}

impl ExecContext {
    /// Execs into the worker init runs: its environment, user and hardening, the sandbox's
    /// `/dev/ptmx`, and init's reaper reporting exits through [`reaped`].
    pub fn from_init(cfg: &InitConfig) -> Self {
        let p = &cfg.process;
        ExecContext {
            env: p.env.clone(),
            user: Some((p.uid, p.gid, p.additional_gids.clone())),
            hardening: match cfg.setup {
                Setup::Namespace { .. } => Some(Arc::new(Hardening::namespace_default())),
                // The VM is the boundary; the worker there runs without these, and so do execs.
                Setup::Vm => None,
            },
            ..Default::default()
        }
    }
}

/// For init's event loop: serve the exec stream the host opened as `stream` (on a thread of its
/// own), or refuse it when that cannot even start.
pub fn attach(mux: &mut Mux, registry: &mio::Registry, stream: u32, ctx: &ExecContext) {
    let r = serve_stream(ctx.clone()).and_then(|s| {
        s.set_nonblocking(true)?;
        mux.attach(
            registry,
            stream,
            Box::new(mio::net::UnixStream::from_std(s)),
        )
    });
    if let Err(e) = r {
        mux.reject(stream, format!("exec: {e}"));
    }
}

/// For init's reaper: a reaped child that is not the worker may be an exec command.
pub fn reaped(pid: i32, status: Status) {
    child_exited(pid, status.into());
}

impl Default for ExecContext {
    fn default() -> Self {
        ExecContext {
            env: Vec::new(),
            user: None,
            ptmx: "/dev/ptmx".into(),
            own_reaper: false,
            hardening: None,
        }
    }
}

/// Where a session's frames for the host go, encoded (see `protocol::exec`); `false` means the
/// host is gone.
pub type Sink = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// Why a command did not start: the exit code (125/126/127) and a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    pub code: i32,
    pub message: String,
}

enum Event {
    Frame(ExecFrame),
    Exited(ExecStatus),
}

/// One running exec: a command and the thread that pumps its streams.
pub struct ExecSession {
    pid: i32,
    tx: mpsc::Sender<Event>,
    waker: Arc<Waker>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ExecSession {
    /// Start `req` in `ctx`. On success the session has already sent `Started` through `sink`.
    pub fn start(
        ctx: &ExecContext,
        req: &ExecRequest,
        mut sink: Sink,
    ) -> Result<ExecSession, StartFailure> {
        let poll = Poll::new().map_err(setup_failure)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(setup_failure)?);
        let (tx, rx) = mpsc::channel();
        // Held from before the fork until the PID is registered, so the reaper's
        // `child_exited` cannot look for the PID before it is there.
        let mut registry = (!ctx.own_reaper).then(lock_registry);
        let spawned = spawn(ctx, req)?;
        let pid = spawned.pid;
        if let Some(r) = registry.as_mut() {
            r.push((pid, tx.clone(), waker.clone()));
        }
        drop(registry);
        if ctx.own_reaper {
            let tx = tx.clone();
            let waker = waker.clone();
            std::thread::spawn(move || {
                let status = wait_for(pid);
                let _ = tx.send(Event::Exited(status));
                let _ = waker.wake();
            });
        }
        let mut started = Vec::new();
        encode(
            &mut started,
            &ExecFrame::Message(ExecMessage::Started { pid: pid as u32 }),
        );
        sink(&started);
        let pump = Pump::new(spawned, poll, rx, sink).map_err(setup_failure)?;
        let thread = std::thread::Builder::new()
            .name(format!("exec-{pid}"))
            .spawn(move || pump.run())
            .map_err(setup_failure)?;
        Ok(ExecSession {
            pid,
            tx,
            waker,
            thread: Some(thread),
        })
    }

    /// The command's PID (in the sandbox's PID namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A frame from the host for this stream.
    pub fn deliver(&self, frame: ExecFrame) {
        let _ = self.tx.send(Event::Frame(frame));
        let _ = self.waker.wake();
    }

    /// Whether the session has sent its last frame.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Wait until the session has sent its last frame.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // Dropped without joining: the owner lost interest, which means the host is gone.
            self.deliver(ExecFrame::Close);
        }
    }
}

/// Exec commands whose exit init's reaper reports: (PID, session channel, session waker).
type Registry = Vec<(i32, mpsc::Sender<Event>, Arc<Waker>)>;
static REGISTRY: std::sync::Mutex<Registry> = std::sync::Mutex::new(Vec::new());

fn lock_registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// For init's reaper (PID 1 reaps every child): hand how `pid` ended to its exec session.
/// Returns whether `pid` was an exec command.
pub fn child_exited(pid: i32, status: ExecStatus) -> bool {
    let mut r = lock_registry();
    let Some(i) = r.iter().position(|(p, _, _)| *p == pid) else {
        return false;
    };
    let (_, tx, waker) = r.swap_remove(i);
    let _ = tx.send(Event::Exited(status));
    let _ = waker.wake();
    true
}

fn setup_failure(e: impl std::fmt::Display) -> StartFailure {
    StartFailure {
        code: code::III_FAILED,
        message: format!("setting up the exec session: {e}"),
    }
}

/// Block until `pid` has exited; used only by an owner that is not the sandbox's reaper.
fn wait_for(pid: i32) -> ExecStatus {
    match crate::sys::pid::wait(pid) {
        Ok(status) => status.into(),
        // Reaped elsewhere: nothing to report but that it is gone.
        Err(_) => ExecStatus::Signal(libc::SIGKILL),
    }
}

// ---------------------------------------------------------------------------------------------
// Spawning

/// A started command and our ends of its stdio.
struct Spawned {
    pid: i32,
    /// Pipe mode: stdin write end, stdout and stderr read ends.
    /// TTY mode: `input` is the pty master, `stdout`/`stderr` are `None`.
    input: OwnedFd,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    tty: bool,
}

/// What the child reports through its close-on-exec error pipe before `_exit`.
#[repr(u32)]
#[derive(Clone, Copy)]
enum Stage {
    Harden = 1,
    Terminal = 2,
    User = 3,
    Chdir = 4,
    Exec = 5,
}

const PIPE_SIZE: libc::c_int = 1 << 20;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn cstring(s: &str, what: &str) -> Result<CString, StartFailure> {
    CString::new(s).map_err(|_| StartFailure {
        code: code::III_FAILED,
        message: format!("{what} contains a NUL byte"),
    })
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errno_text(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    // "No such file or directory (os error 2)" → "no such file or directory"
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => s,
    }
}

/// Fork and exec the command. Everything the child needs is prepared here, before `fork`, so
/// the child only makes async-signal-safe system calls (init may have other threads).
fn spawn(ctx: &ExecContext, req: &ExecRequest) -> Result<Spawned, StartFailure> {
    let Some(program) = req.args.first() else {
        return Err(StartFailure {
            code: code::III_FAILED,
            message: "no command given".into(),
        });
    };
    // Environment: worker ← request, later values win; TTY mode gets a TERM like docker -t.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    };
    for (k, v) in &ctx.env {
        set(k, v);
    }
    if req.tty.is_some() && !req.env.iter().any(|(k, _)| k == "TERM") {
        set("TERM", "xterm");
    }
    for (k, v) in &req.env {
        set(k, v);
    }
    let envp_c: Vec<CString> = env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}"), "an environment variable"))
        .collect::<Result<_, _>>()?;
    let argv_c: Vec<CString> = req
        .args
        .iter()
        .map(|a| cstring(a, "an argument"))
        .collect::<Result<_, _>>()?;
    // Candidate paths for argv[0], in PATH order (a name with a slash is used as it is).
    let candidates: Vec<CString> = if program.contains('/') {
        vec![cstring(program, "the command")?]
    } else {
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| cstring(&format!("{}/{program}", d.trim_end_matches('/')), "PATH"))
            .collect::<Result<_, _>>()?
    };
    let cwd_c = cstring(&req.cwd, "the working directory")?;
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envp_c.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let groups: Vec<libc::gid_t> = ctx.user.as_ref().map(|u| u.2.clone()).unwrap_or_default();

    let io = |e: std::io::Error| setup_failure(e);
    // Our ends and the child's ends of its stdio.
    let (input, stdout, stderr, child_fds): (
        OwnedFd,
        Option<OwnedFd>,
        Option<OwnedFd>,
        [OwnedFd; 3],
    ) = match req.tty {
        Some(size) => {
            let size = crate::sys::pty::WinSize {
                rows: size.rows,
                cols: size.cols,
            };
            let (master, slave) =
                crate::sys::pty::open_pair(&ctx.ptmx, size).map_err(|e| StartFailure {
                    code: code::III_FAILED,
                    message: format!("allocating a pseudo-terminal from {}: {e}", ctx.ptmx),
                })?;
            let s1 = slave.try_clone().map_err(io)?;
            let s2 = slave.try_clone().map_err(io)?;
            (master, None, None, [slave, s1, s2])
        }
        None => {
            let (in_r, in_w) = pipe().map_err(io)?;
            let (out_r, out_w) = pipe().map_err(io)?;
            let (err_r, err_w) = pipe().map_err(io)?;
            // Bigger pipes: fewer, larger reads and writes for bulk data.
            for fd in [&in_w, &out_r] {
                crate::sys::fd::set_pipe_size(fd.as_fd(), PIPE_SIZE);
            }
            (in_w, Some(out_r), Some(err_r), [in_r, out_w, err_w])
        }
    };
    let (report_r, report_w) = pipe().map_err(io)?;
    let tty = req.tty.is_some();
    let child_raw: [RawFd; 3] = [
        child_fds[0].as_raw_fd(),
        child_fds[1].as_raw_fd(),
        child_fds[2].as_raw_fd(),
    ];
    let report_fd = report_w.as_raw_fd();
    let hardening = ctx.hardening.clone();
    let user = ctx.user.clone();

    // SAFETY: fork has no memory-safety preconditions; the child below only makes
    // async-signal-safe calls on data prepared above, and always ends in execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(setup_failure(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the child; see `child` for what it does.
        unsafe {
            child(ChildPlan {
                hardening: hardening.as_deref(),
                tty,
                fds: child_raw,
                user: user.as_ref().map(|u| (u.0, u.1)),
                groups: &groups,
                cwd: &cwd_c,
                candidates: &candidates,
                argv: &argv,
                envp: &envp,
                report: report_fd,
            })
        }
    }
    drop(child_fds);
    drop(report_w);
    // The child reports (stage, errno) on failure; EOF (close-on-exec) means execve worked.
    let mut report = [0u8; 8];
    let mut got = 0;
    let mut reader = std::fs::File::from(report_r);
    while got < 8 {
        match reader.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got == 0 {
        return Ok(Spawned {
            pid,
            input,
            stdout,
            stderr,
            tty,
        });
    }
    // The child has _exit'ed; reap it unless init's reaper is faster (then ECHILD is fine).
    let _ = crate::sys::pid::wait(pid);
    let stage = u32::from_ne_bytes(report[..4].try_into().expect("4 bytes"));
    let errno = i32::from_ne_bytes(report[4..].try_into().expect("4 bytes"));
    let why = errno_text(errno);
    Err(match stage {
        s if s == Stage::Exec as u32 => {
            let code = spawn_failure_code(errno);
            let message = if code == code::NOT_FOUND && !program.contains('/') {
                format!("exec: {program:?}: executable file not found in $PATH")
            } else {
                format!("exec: {program:?}: {why}")
            };
            StartFailure { code, message }
        }
        s if s == Stage::Chdir as u32 => StartFailure {
            code: code::NOT_EXECUTABLE,
            message: format!("cannot enter working directory {}: {why}", req.cwd),
        },
        s if s == Stage::User as u32 => StartFailure {
            code: code::III_FAILED,
            message: format!("switching to the worker's user: {why}"),
        },
        s if s == Stage::Terminal as u32 => StartFailure {
            code: code::III_FAILED,
            message: format!("making the pseudo-terminal the controlling terminal: {why}"),
        },
        _ => StartFailure {
            code: code::III_FAILED,
            message: format!("applying the worker's restrictions: {why}"),
        },
    })
}

struct ChildPlan<'a> {
    hardening: Option<&'a Hardening>,
    tty: bool,
    fds: [RawFd; 3],
    user: Option<(u32, u32)>,
    groups: &'a [libc::gid_t],
    cwd: &'a CString,
    candidates: &'a [CString],
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    report: RawFd,
}

/// The forked child: set up and exec, or report why not and `_exit(127)`.
///
/// # Safety
/// Must only be called in a freshly forked child; it never returns.
unsafe fn child(p: ChildPlan<'_>) -> ! {
    let fail = |stage: Stage, errno: i32| -> ! {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: writing 8 bytes from a valid buffer, then ending the child without running
        // any of the parent's destructors or atexit handlers.
        unsafe {
            libc::write(p.report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY: plain system calls on fds and C strings prepared by the parent (whole block).
    unsafe {
        // Init may block or ignore signals for itself; the command starts with defaults.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        if p.tty {
            if libc::setsid() < 0 {
                fail(Stage::Terminal, last_errno());
            }
            if libc::ioctl(p.fds[0], libc::TIOCSCTTY, 0) != 0 {
                fail(Stage::Terminal, last_errno());
            }
        } else if libc::setpgid(0, 0) != 0 {
            fail(Stage::Terminal, last_errno());
        }
        for (target, fd) in p.fds.iter().enumerate() {
            // dup2 clears close-on-exec on the new number.
            if libc::dup2(*fd, target as RawFd) < 0 {
                fail(Stage::Terminal, last_errno());
            }
        }
        // The same order as the worker's own start: bounding set while still privileged,
        // then the identity, then the remaining capabilities, no_new_privs and seccomp last.
        let errno_of = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error());
        if let Some(h) = p.hardening {
            if let Some(e) = errno_of(capabilities::drop_bounding(h.last_cap)) {
                fail(Stage::Harden, e);
            }
        }
        if let Some((uid, gid)) = p.user {
            if libc::setgroups(p.groups.len(), p.groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                fail(Stage::User, last_errno());
            }
        }
        if p.hardening.is_some() && libc::getuid() == 0 {
            if let Some(e) = errno_of(capabilities::limit_current()) {
                fail(Stage::Harden, e);
            }
        }
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            fail(Stage::Chdir, last_errno());
        }
        if let Some(h) = p.hardening {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                fail(Stage::Harden, last_errno());
            }
            if let Some(e) = errno_of(seccomp::install(&h.seccomp)) {
                fail(Stage::Harden, e);
            }
        }
        // Like execvp: try each PATH candidate; "permission denied" anywhere beats "not found".
        let mut errno = libc::ENOENT;
        let mut denied = false;
        for c in p.candidates {
            libc::execve(c.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
            let e = last_errno();
            match e {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => denied = true,
                _ => {
                    errno = e;
                    break;
                }
            }
        }
        if denied && errno == libc::ENOENT {
            errno = libc::EACCES;
        }
        fail(Stage::Exec, errno)
    }
}

// ---------------------------------------------------------------------------------------------
// Pumping

const WAKER: Token = Token(0);
const INPUT: Token = Token(1);
const STDOUT: Token = Token(2);
const STDERR: Token = Token(3);

/// After the command exits, how long to wait for its output streams to reach EOF (a
/// background process may hold them open) before reporting the exit.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// How long a finished exec connection waits for the client to close its end.
const LINGER: Duration = Duration::from_secs(30);

struct Pump {
    pid: i32,
    tty: bool,
    poll: Poll,
    rx: mpsc::Receiver<Event>,
    sink: Sink,
    input: Option<OwnedFd>,
    input_writable: bool,
    stdin_buf: VecDeque<u8>,
    stdin_eof: bool,
    /// The command closed its stdin: further input is dropped (and credited).
    stdin_broken: bool,
    /// Readers: stdout (or the pty master) and stderr.
    outputs: [Option<OwnedFd>; 2],
    readable: [bool; 2],
    /// Output bytes the host still accepts.
    credit: u64,
    exited: Option<ExecStatus>,
    drain_deadline: Option<Instant>,
    host_gone: bool,
    /// Where frames are encoded; output is read straight into it after the header.
    frame_buf: Vec<u8>,
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    crate::sys::fd::set_nonblocking(fd, true)
}

impl Pump {
    fn new(s: Spawned, poll: Poll, rx: mpsc::Receiver<Event>, sink: Sink) -> std::io::Result<Pump> {
        let input_fd = s.input.as_raw_fd();
        set_nonblocking(input_fd)?;
        if s.tty {
            // One fd for both directions.
            poll.registry().register(
                &mut SourceFd(&input_fd),
                STDOUT,
                Interest::READABLE | Interest::WRITABLE,
            )?;
        } else {
            poll.registry()
                .register(&mut SourceFd(&input_fd), INPUT, Interest::WRITABLE)?;
        }
        for (fd, token) in [(&s.stdout, STDOUT), (&s.stderr, STDERR)] {
            if let Some(fd) = fd {
                set_nonblocking(fd.as_raw_fd())?;
                poll.registry().register(
                    &mut SourceFd(&fd.as_raw_fd()),
                    token,
                    Interest::READABLE,
                )?;
            }
        }
        let outputs = if s.tty {
            [Some(s.input.try_clone()?), None]
        } else {
            [s.stdout, s.stderr]
        };
        Ok(Pump {
            pid: s.pid,
            tty: s.tty,
            poll,
            rx,
            sink,
            input: Some(s.input),
            input_writable: false,
            stdin_buf: VecDeque::new(),
            stdin_eof: false,
            stdin_broken: false,
            outputs,
            readable: [false; 2],
            credit: INITIAL_CREDIT as u64,
            exited: None,
            drain_deadline: None,
            host_gone: false,
            frame_buf: Vec::with_capacity(OUTPUT_HEADER_LEN + MAX_CHUNK),
        })
    }

    fn send(&mut self, frame: ExecFrame) {
        if self.host_gone {
            return;
        }
        let mut bytes = std::mem::take(&mut self.frame_buf);
        bytes.clear();
        encode(&mut bytes, &frame);
        if !(self.sink)(&bytes) {
            self.host_lost();
        }
        self.frame_buf = bytes;
    }

    /// The host closed the stream or vanished: kill the command's whole group.
    fn host_lost(&mut self) {
        if !self.host_gone {
            self.host_gone = true;
            self.kill_group(libc::SIGKILL);
        }
    }

    fn kill_group(&self, signal: i32) {
        if self.exited.is_none() {
            // The group is the command's own (it is its process group leader).
            let _ = crate::sys::pid::kill(-self.pid, signal);
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(16);
        loop {
            let timeout = self
                .drain_deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.host_lost();
                    break;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    INPUT => self.input_writable = true,
                    STDOUT => {
                        if self.tty && ev.is_writable() {
                            self.input_writable = true;
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.readable[0] = true;
                        }
                    }
                    STDERR => self.readable[1] = true,
                    _ => {}
                }
            }
            while let Ok(event) = self.rx.try_recv() {
                self.handle(event);
            }
            self.pump_stdin();
            self.pump_outputs();
            if self.finished() {
                break;
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Exited(status) => {
                self.exited = Some(status);
                self.drain_deadline = Some(Instant::now() + DRAIN_GRACE);
            }
            Event::Frame(ExecFrame::Stdin(bytes)) => {
                if self.stdin_broken || self.stdin_eof {
                    let n = bytes.len() as u32;
                    self.send(ExecFrame::Window(n));
                } else {
                    self.stdin_buf.extend(bytes);
                }
            }
            Event::Frame(ExecFrame::StdinEof) => self.stdin_eof = true,
            Event::Frame(ExecFrame::Window(n)) => self.credit += n as u64,
            Event::Frame(ExecFrame::Message(ExecMessage::Signal { signal })) => {
                self.kill_group(signal)
            }
            Event::Frame(ExecFrame::Message(ExecMessage::Resize(size))) => {
                if let (true, Some(m)) = (self.tty, &self.input) {
                    let size = crate::sys::pty::WinSize {
                        rows: size.rows,
                        cols: size.cols,
                    };
                    let _ = crate::sys::pty::set_window_size(m.as_fd(), size);
                }
            }
            Event::Frame(ExecFrame::Close) => self.host_lost(),
            // Nothing else is meaningful from the host once the stream is open.
            Event::Frame(_) => {}
        }
    }

    fn pump_stdin(&mut self) {
        let Some(fd) = &self.input else { return };
        let mut written = 0u64;
        let mut file = std::mem::ManuallyDrop::new(
            // SAFETY: a borrowed view of our own fd, never closed through this File.
            unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) },
        );
        while self.input_writable && !self.stdin_buf.is_empty() {
            let (a, _) = self.stdin_buf.as_slices();
            match file.write(a) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                    written += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.input_writable = false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The command closed its stdin (EPIPE): drop what is left, credit it.
                    written += self.stdin_buf.len() as u64;
                    self.stdin_buf.clear();
                    self.stdin_broken = true;
                }
            }
        }
        if written > 0 {
            self.send(ExecFrame::Window(written as u32));
        }
        if self.stdin_eof && self.stdin_buf.is_empty() {
            if self.tty {
                // A terminal has no half-close: end-of-input is the EOF character (^D).
                if self.input_writable {
                    let _ = file.write(&[4]);
                    self.stdin_eof = false;
                    self.stdin_broken = true;
                }
            } else if let Some(fd) = self.input.take() {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&fd.as_raw_fd()));
                drop(fd);
            }
        }
    }

    fn pump_outputs(&mut self) {
        let mut buf = std::mem::take(&mut self.frame_buf);
        for i in 0..2 {
            let which = if i == 0 {
                Output::Stdout
            } else {
                Output::Stderr
            };
            while self.readable[i] {
                let Some(fd) = &self.outputs[i] else { break };
                if self.credit == 0 && !self.host_gone && bytes_available(fd.as_raw_fd()) != 0 {
                    // Data waits and the host has no room: leave it in the pipe. (With nothing
                    // waiting, the read below still finds EOF without taking any data.)
                    break;
                }
                let want = (self.credit as usize).clamp(1, MAX_CHUNK);
                // The payload is read straight into the frame buffer, after room for the header.
                buf.clear();
                buf.extend_from_slice(&[0; OUTPUT_HEADER_LEN]);
                let read = crate::sys::fd::read_append(fd.as_raw_fd(), &mut buf, want);
                if let Ok(n @ 1..) = read {
                    if !self.host_gone {
                        // At most one byte beyond the credit, when data raced the check above.
                        self.credit = self.credit.saturating_sub(n as u64);
                        buf[..OUTPUT_HEADER_LEN].copy_from_slice(&output_header(which, n));
                        if !(self.sink)(&buf) {
                            self.host_lost();
                        }
                    }
                    continue;
                }
                let errno = read.err().and_then(|e| e.raw_os_error());
                if errno == Some(libc::EAGAIN) {
                    self.readable[i] = false;
                } else if errno == Some(libc::EINTR) {
                    continue;
                } else {
                    // EOF on a pipe, or EIO on a pty master whose slave is closed everywhere.
                    if let Some(fd) = self.outputs[i].take() {
                        if !self.tty {
                            let _ = self
                                .poll
                                .registry()
                                .deregister(&mut SourceFd(&fd.as_raw_fd()));
                        }
                    }
                    self.readable[i] = false;
                }
            }
        }
        self.frame_buf = buf;
    }

    /// Whether the session is over: the command exited and its output was sent (or the grace
    /// for late output ran out while nothing was waiting on credit).
    fn finished(&mut self) -> bool {
        let Some(status) = self.exited else {
            return false;
        };
        let drained = self.outputs.iter().all(Option::is_none);
        let blocked_on_credit = self.readable.iter().any(|r| *r) && self.credit == 0;
        let late = self.drain_deadline.is_some_and(|d| Instant::now() >= d);
        if !(self.host_gone || drained || (late && !blocked_on_credit)) {
            return false;
        }
        self.send(ExecFrame::Message(ExecMessage::Exited(status)));
        self.send(ExecFrame::Close);
        true
    }
}

// ---------------------------------------------------------------------------------------------
// A whole connection

/// Serve an exec stream on a new thread; returns the other end of the byte stream, for the
/// owner to attach to the control channel's multiplexer (`OpenRequest::Exec`).
pub fn serve_stream(ctx: ExecContext) -> std::io::Result<UnixStream> {
    let (ours, theirs) = UnixStream::pair()?;
    serve_stream_on(ours, ctx)?;
    Ok(theirs)
}

/// Serve the exec connection `conn` (blocking) on a new thread.
pub fn serve_stream_on(conn: UnixStream, ctx: ExecContext) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("exec".into())
        .spawn(move || serve_connection(conn, &ctx))?;
    Ok(())
}

/// Serve one exec connection that carries one exec stream: read the `Open`, run the command,
/// pump frames both ways until it ends. Used where the exec server owns the byte stream
/// itself (no multiplexer in between).
pub fn serve_connection(conn: UnixStream, ctx: &ExecContext) {
    let mut reader = match conn.try_clone() {
        Ok(r) => r,
        Err(_) => return,
    };
    crate::protocol::exec::widen_send_buffer(conn.as_fd());
    let mut writer = conn;
    let mut decoder = Decoder::new(Side::Server);
    let mut buf = vec![0u8; 64 << 10];
    let req = loop {
        match decoder.next_frame() {
            Ok(Some(ExecFrame::Message(ExecMessage::Open(req)))) => break req,
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => {}
        }
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => decoder.feed(&buf[..n]),
        }
    };
    let mut out = writer.try_clone().ok();
    let sink: Sink = Box::new(move |bytes| match out.as_mut() {
        Some(w) => w.write_all(bytes).is_ok(),
        None => false,
    });
    let session = match ExecSession::start(ctx, &req, sink) {
        Ok(s) => s,
        Err(f) => {
            let mut bytes = Vec::new();
            encode(
                &mut bytes,
                &ExecFrame::Message(ExecMessage::Failed {
                    code: f.code,
                    message: f.message,
                }),
            );
            encode(&mut bytes, &ExecFrame::Close);
            let _ = writer.write_all(&bytes);
            linger(&writer, &mut reader, &mut buf);
            return;
        }
    };
    // Frames already decoded after the Open, then the rest of the connection.
    loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => session.deliver(f),
                Ok(None) => break,
                Err(_) => {
                    session.deliver(ExecFrame::Close);
                    session.join();
                    return;
                }
            }
        }
        if session.is_finished() {
            break;
        }
        // Straight into the decoder's buffer: stdin can be bulk data too.
        match decoder.read_from(reader.as_fd(), 1 << 20) {
            Ok(0) => {
                session.deliver(ExecFrame::Close);
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                session.deliver(ExecFrame::Close);
                break;
            }
        }
    }
    session.join();
    linger(&writer, &mut reader, &mut buf);
}

/// End our side of an exec connection without losing the end of what we sent: half-close,
/// then keep reading (and dropping) until the peer closes too. Closing outright, or refusing
/// further input, while the relay still holds our last output unsent (waiting for credit)
/// makes it fail the stream and drop that output.
fn linger(writer: &UnixStream, reader: &mut UnixStream, buf: &mut [u8]) {
    let _ = writer.shutdown(std::net::Shutdown::Write);
    // The client closes as soon as it has read the exit status; do not wait on a stuck one.
    let _ = reader.set_read_timeout(Some(LINGER));
    while let Ok(n) = reader.read(buf) {
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(ctx: &ExecContext, args: &[&str]) -> (ExecSession, mpsc::Receiver<ExecFrame>) {
        let (tx, rx) = mpsc::channel();
        let mut decoder = Decoder::new(Side::Client);
        let sink: Sink = Box::new(move |bytes| {
            decoder.feed(bytes);
            while let Some(f) = decoder.next_frame().unwrap() {
                if tx.send(f).is_err() {
                    return false;
                }
            }
            true
        });
        let req = ExecRequest {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: "/".into(),
            tty: None,
        };
        let s = ExecSession::start(ctx, &req, sink).unwrap();
        (s, rx)
    }

    fn next(rx: &mpsc::Receiver<ExecFrame>) -> ExecFrame {
        rx.recv_timeout(Duration::from_secs(10)).expect("a frame")
    }

    #[test]
    fn init_reaper_hands_the_status_over() {
        let ctx = ExecContext {
            env: vec![("PATH".into(), "/bin:/usr/bin".into())],
            ..Default::default()
        };
        let (s, rx) = session(&ctx, &["sh", "-c", "exit 5"]);
        assert!(matches!(
            next(&rx),
            ExecFrame::Message(ExecMessage::Started { .. })
        ));
        // Play init's reaper for this one child.
        let mut status = 0;
        // SAFETY: waiting for our own child by PID.
        assert_eq!(unsafe { libc::waitpid(s.pid(), &mut status, 0) }, s.pid());
        let status = ExecStatus::from_wait_status(status);
        assert!(child_exited(s.pid(), status));
        assert!(!child_exited(s.pid(), status), "handed over once");
        assert_eq!(
            next(&rx),
            ExecFrame::Message(ExecMessage::Exited(ExecStatus::Code(5)))
        );
        assert_eq!(next(&rx), ExecFrame::Close);
        s.join();
    }

    #[test]
    fn output_stops_at_the_granted_credit() {
        let ctx = ExecContext {
            env: vec![("PATH".into(), "/bin:/usr/bin".into())],
            own_reaper: true,
            ..Default::default()
        };
        let total = 3 * INITIAL_CREDIT as usize;
        let (s, rx) = session(&ctx, &["head", "-c", &total.to_string(), "/dev/zero"]);
        let mut got = 0usize;
        let mut frames = 0;
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(ExecFrame::Output(Output::Stdout, b)) => {
                    got += b.len();
                    frames += 1;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        assert_eq!(got, INITIAL_CREDIT as usize, "sent beyond the credit");
        assert!(frames > 1);
        // Granting credit lets the rest through, then the exit.
        s.deliver(ExecFrame::Window((total - got) as u32));
        let mut exited = None;
        while exited.is_none() {
            match next(&rx) {
                ExecFrame::Output(_, b) => got += b.len(),
                ExecFrame::Message(ExecMessage::Exited(st)) => exited = Some(st),
                _ => {}
            }
        }
        assert_eq!(got, total);
        assert_eq!(exited, Some(ExecStatus::Code(0)));
        s.join();
    }

    #[test]
    fn closing_the_stream_kills_the_group() {
        let ctx = ExecContext {
            env: vec![("PATH".into(), "/bin:/usr/bin".into())],
            own_reaper: true,
            ..Default::default()
        };
        let (s, rx) = session(&ctx, &["sleep", "60"]);
        assert!(matches!(
            next(&rx),
            ExecFrame::Message(ExecMessage::Started { .. })
        ));
        let pid = s.pid();
        let t = Instant::now();
        s.deliver(ExecFrame::Close);
        s.join();
        assert!(t.elapsed() < Duration::from_secs(5));
        // Reaped by now: probing the PID finds nothing.
        // SAFETY: signal 0 only checks for existence.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1);
        assert!(rx.try_iter().all(|f| !matches!(f, ExecFrame::Output(..))));
    }

    #[test]
    fn a_stream_served_on_a_socket_pair_runs_the_command() {
        let ctx = ExecContext {
            env: vec![("PATH".into(), "/bin:/usr/bin".into())],
            own_reaper: true,
            ..Default::default()
        };
        let mut host = serve_stream(ctx).unwrap();
        let mut wire = Vec::new();
        let req = ExecRequest {
            args: vec!["sh".into(), "-c".into(), "cat; echo err >&2; exit 3".into()],
            env: vec![],
            cwd: "/".into(),
            tty: None,
        };
        encode(&mut wire, &ExecFrame::Message(ExecMessage::Open(req)));
        encode(&mut wire, &ExecFrame::Stdin(b"in\0put".to_vec()));
        encode(&mut wire, &ExecFrame::StdinEof);
        host.write_all(&wire).unwrap();
        let mut d = Decoder::new(Side::Client);
        let (mut out, mut err, mut exit) = (Vec::new(), Vec::new(), None);
        let mut buf = [0u8; 4096];
        'read: loop {
            let n = host.read(&mut buf).unwrap();
            assert!(n > 0, "stream ended early");
            d.feed(&buf[..n]);
            while let Some(f) = d.next_frame().unwrap() {
                match f {
                    ExecFrame::Output(Output::Stdout, b) => out.extend(b),
                    ExecFrame::Output(Output::Stderr, b) => err.extend(b),
                    ExecFrame::Message(ExecMessage::Exited(st)) => exit = Some(st),
                    ExecFrame::Close => break 'read,
                    _ => {}
                }
            }
        }
        assert_eq!(out, b"in\0put");
        assert_eq!(err, b"err\n");
        assert_eq!(exit, Some(ExecStatus::Code(3)));
    }
}
