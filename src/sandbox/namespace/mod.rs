//! The `namespace` backend: Linux namespaces, overlayfs, pivot_root, cgroups, seccomp.
//!
//! [`start`] creates the sandbox's cgroups, clones a child into new PID, mount, UTS, IPC and
//! (unless `network: host`) network namespaces, and has it exec iii's init ([`crate::init`])
//! with one end of a socketpair as the control channel. Init builds the root filesystem from
//! the image (read-only overlay lower) and the worker's persistent writable layer
//! (`<worker_dir>/layer/{upper,work}`), pivots into it and starts the worker, hardened
//! (capabilities, no_new_privs, seccomp: [`crate::harden`]). The host end of the channel is served by a thread
//! owned by [`NamespaceSandbox`]: it records the worker's exit and carries engine-link
//! connections to `SandboxSpec::engine_addr`.
//!
//! Lifetime: init dies with the thread that called [`start`] (PR_SET_PDEATHSIG) or when the
//! channel's host end closes (the owning process died), and every process of the worker dies
//! with init (it is PID 1 of their namespace). [`Sandbox::wait`] reaps init and removes the
//! cgroups; the mounts vanish with the mount namespace. Only the writable layer stays.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Events, Poll, Token, Waker};

use crate::protocol::mux::{Endpoint, Mux, MuxEvent};
use crate::protocol::{
    encode_message, Decoder, ExitStatus, InitConfig, Message, OpenRequest, Setup, SANDBOX_STREAM,
};
use crate::sandbox::{Backend, Network, Sandbox, SandboxSpec, Stdio, WorkerExit};
use crate::{err, Context, Result};

pub mod cgroup;
pub mod clone;
pub mod user;

use crate::sys::pid::{self, Status};
use cgroup::Cgroup;

/// How long [`start`] waits for init to report the worker started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const WAKER: Token = Token(1);

/// Backend options beyond the [`SandboxSpec`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The iii binary to run as init (default: this process's own executable, which is right
    /// whenever the caller is the `iii` binary; tests pass `CARGO_BIN_EXE_iii`).
    pub init_exe: Option<PathBuf>,
}

/// A running `namespace` sandbox.
pub struct NamespaceSandbox {
    name: String,
    pid: libc::pid_t,
    cgroup: Cgroup,
    shared: Arc<Mutex<HostState>>,
    thread: Option<JoinHandle<()>>,
    control: ControlHandle,
    /// Where exec clients' connections are handed to init (`crate::exec::door`).
    exec_door: Arc<std::os::fd::OwnedFd>,
    exit: Option<WorkerExit>,
}

/// What the channel thread learned.
#[derive(Default)]
pub(crate) struct HostState {
    pub(crate) exit: Option<ExitStatus>,
}

/// Requests to the channel thread from other threads.
pub(crate) enum Command {
    Open {
        request: OpenRequest,
        endpoint: Box<dyn Endpoint>,
        messages: mpsc::Sender<Message>,
        reply: mpsc::Sender<io::Result<u32>>,
    },
    Send {
        stream: u32,
        message: Message,
    },
}

/// A handle on the host end of the control channel, for opening streams into the sandbox
/// (`exec` builds on this). Cloneable and usable from any thread.
#[derive(Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
}

impl ControlHandle {
    /// A handle feeding `tx` to the channel thread that [`host_loop`] runs, woken by `waker`.
    pub(crate) fn new(tx: mpsc::Sender<Command>, waker: Arc<Waker>) -> ControlHandle {
        ControlHandle { tx, waker }
    }

    fn submit(&self, cmd: Command) -> Result<()> {
        self.tx
            .send(cmd)
            .map_err(|_| err!("the sandbox's control channel is closed"))?;
        self.waker
            .wake()
            .map_err(|e| err!("waking the control channel thread: {e}"))
    }

    /// Open a stream to init carrying `endpoint`'s bytes both ways; messages init sends on
    /// the stream (e.g. an exec's exit status) arrive on the returned receiver.
    pub fn open(
        &self,
        request: OpenRequest,
        endpoint: Box<dyn Endpoint>,
    ) -> Result<(u32, mpsc::Receiver<Message>)> {
        let (mtx, mrx) = mpsc::channel();
        let (rtx, rrx) = mpsc::channel();
        self.submit(Command::Open {
            request,
            endpoint,
            messages: mtx,
            reply: rtx,
        })?;
        let id = rrx
            .recv()
            .map_err(|_| err!("the sandbox's control channel is closed"))?
            .map_err(|e| err!("opening a stream into the sandbox: {e}"))?;
        Ok((id, mrx))
    }

    /// Send a control message on `stream` (0: the sandbox).
    pub fn send(&self, stream: u32, message: Message) -> Result<()> {
        self.submit(Command::Send { stream, message })
    }
}

/// Start a sandbox for `spec`: returns once the worker process is running (or its exec failed,
/// which `wait` then reports as exit 127/126, with the reason on the worker's stderr).
///
/// The caller's contract:
/// - call it from a thread that lives as long as the sandbox: init is killed when that
///   thread exits (PR_SET_PDEATHSIG follows the thread);
/// - run as the `iii` binary (init is `/proc/self/exe`), or name it in [`Options::init_exe`];
/// - end with [`Sandbox::wait`] or by dropping the sandbox (which kills it): that removes the
///   cgroups. If the process dies first, the next start of the same worker sweeps them;
/// - do not reap init yourself (`waitpid(-1)`): `wait` needs its status.
pub fn start(spec: &SandboxSpec, stdio: Stdio) -> Result<NamespaceSandbox> {
    start_with(spec, stdio, &Options::default())
}

/// [`start`] with backend options.
pub fn start_with(spec: &SandboxSpec, stdio: Stdio, opts: &Options) -> Result<NamespaceSandbox> {
    spec.check()?;
    let name = &spec.name;
    let layer = spec.layer_dir();
    let (upper, work, merged) = (
        layer.join("upper"),
        layer.join("work"),
        layer.join("merged"),
    );
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let exe_path = opts
        .init_exe
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let exe = File::open(&exe_path)
        .with_context(|| format!("opening the init binary {}", exe_path.display()))?;
    let devnull = File::open("/dev/null").context("opening /dev/null")?;
    let (host_end, init_end) = UnixStream::pair().context("creating the control channel")?;
    let (door_host, door_init) = crate::exec::door::pair().context("creating the exec door")?;

    let engine_port = (spec.network == Network::Isolated).then_some(spec.engine_addr.port());
    let cfg = InitConfig {
        hostname: name.clone(),
        process: (&spec.process).into(),
        engine_port,
        setup: Setup::Namespace {
            lower: path_str(&spec.image_root)?,
            upper: path_str(&upper)?,
            work: path_str(&work)?,
            merged: path_str(&merged)?,
            loopback: spec.network == Network::Isolated,
        },
    };
    // Everything fallible that needs no child is done before the clone.
    let poll = Poll::new().context("creating a poll")?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("creating a waker")?);
    let mut cgroup = Cgroup::create(name, &spec.resources)?;
    let mut flags =
        libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.network == Network::Isolated {
        flags |= libc::CLONE_NEWNET;
    }
    let init_fd = std::os::fd::OwnedFd::from(init_end);
    let stdin_fd = std::os::fd::OwnedFd::from(devnull);
    let pid = clone::clone_init(
        &exe,
        flags,
        clone::InitFds {
            control: &init_fd,
            exec_door: &door_init,
            stdin: &stdin_fd,
            stdout: &stdio.stdout,
            stderr: &stdio.stderr,
        },
    )
    .with_context(|| format!("worker {name}: creating the sandbox's namespaces"))?;
    drop(init_fd);
    drop(door_init);
    drop(stdio);

    // From here a failure must not leave init behind.
    let abort = |cgroup: &mut Cgroup, e: crate::Error| -> crate::Error {
        pid::kill(pid, libc::SIGKILL).ok();
        let status = pid::wait(pid);
        cgroup.remove().ok();
        match status {
            Ok(Status::Exited(c)) => err!("{} (init exited with status {c})", e.message()),
            Ok(Status::Signaled(s)) if s != libc::SIGKILL => {
                err!("{} (init was killed by signal {s})", e.message())
            }
            _ => e,
        }
    };
    // Init builds the root filesystem while we move it into its cgroups.
    if let Err(e) = send_message(&host_end, &Message::Start(Box::new(cfg))) {
        return Err(abort(&mut cgroup, e));
    }
    if let Err(e) = cgroup.add(pid as u32) {
        return Err(abort(&mut cgroup, e));
    }
    if let Err(e) = send_message(&host_end, &Message::CgroupsReady) {
        return Err(abort(&mut cgroup, e));
    }
    let decoder = match await_started(&host_end) {
        Ok(d) => d,
        Err(e) => return Err(abort(&mut cgroup, err!("worker {name}: {}", e.message()))),
    };

    let shared = Arc::new(Mutex::new(HostState::default()));
    let (tx, rx) = mpsc::channel();
    let thread_shared = shared.clone();
    let engine = spec.engine_addr;
    let thread = std::thread::Builder::new()
        .name(format!("iii-ns-{name}"))
        .spawn(move || host_loop(poll, host_end, decoder, engine, thread_shared, rx));
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            return Err(abort(
                &mut cgroup,
                err!("worker {name}: spawning a thread: {e}"),
            ))
        }
    };
    Ok(NamespaceSandbox {
        name: name.clone(),
        pid,
        cgroup,
        shared,
        thread: Some(thread),
        control: ControlHandle { tx, waker },
        exec_door: Arc::new(door_host),
        exit: None,
    })
}

fn path_str(p: &std::path::Path) -> Result<String> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| err!("path {} is not UTF-8", p.display()))
}

/// Send one control message, blocking (before the channel thread takes over).
pub(crate) fn send_message(chan: &UnixStream, msg: &Message) -> Result<()> {
    let mut out = Vec::new();
    encode_message(&mut out, SANDBOX_STREAM, msg);
    (&*chan)
        .write_all(&out)
        .context("sending the sandbox's configuration to init")
}

/// Read until `Started` (or `Failed`); returns the decoder holding any bytes that followed.
pub(crate) fn await_started(chan: &UnixStream) -> Result<Decoder> {
    chan.set_read_timeout(Some(START_TIMEOUT)).ok();
    let mut dec = Decoder::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        while let Some(f) = dec.next_frame()? {
            if f.stream != SANDBOX_STREAM {
                continue;
            }
            match f.message()? {
                Message::Started { .. } => {
                    chan.set_read_timeout(None).ok();
                    return Ok(dec);
                }
                Message::Failed { message } => return Err(err!("{message}")),
                _ => {}
            }
        }
        match (&*chan).read(&mut buf) {
            Ok(0) => {
                return Err(err!(
                    "init exited during sandbox setup (see the worker's log)"
                ))
            }
            Ok(n) => dec.feed(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err!("waiting for init to start the worker: {e}")),
        }
    }
}

/// The channel thread: serves the host end until init is gone.
pub(crate) fn host_loop(
    mut poll: Poll,
    chan: UnixStream,
    decoder: Decoder,
    engine: SocketAddr,
    shared: Arc<Mutex<HostState>>,
    commands: mpsc::Receiver<Command>,
) {
    let Ok(mut mux) = Mux::new(chan, decoder, false, poll.registry()) else {
        return;
    };
    let mut routes: std::collections::HashMap<u32, mpsc::Sender<Message>> = Default::default();
    let mut events = Events::with_capacity(64);
    let mut pending = mux.drain_decoded(poll.registry());
    loop {
        for ev in pending.drain(..) {
            match ev {
                MuxEvent::Message {
                    stream: SANDBOX_STREAM,
                    message: Message::Exited(status),
                } => {
                    if let Ok(mut s) = shared.lock() {
                        s.exit = Some(status);
                    }
                }
                MuxEvent::Message { stream, message } => {
                    let last = matches!(message, Message::OpenFailed { .. });
                    if let Some(tx) = routes.get(&stream) {
                        tx.send(message).ok();
                    }
                    if last {
                        routes.remove(&stream);
                    }
                }
                MuxEvent::Open {
                    stream,
                    request: OpenRequest::EngineLink,
                } => match connect_engine(engine) {
                    Ok(s) => {
                        if let Err(e) = mux.attach(poll.registry(), stream, Box::new(s)) {
                            mux.reject(stream, format!("engine link: {e}"));
                        }
                    }
                    Err(e) => mux.reject(stream, format!("engine link to {engine}: {e}")),
                },
                MuxEvent::Open {
                    stream,
                    request: OpenRequest::Exec,
                } => mux.reject(stream, "the host runs no exec for init".into()),
                MuxEvent::ChannelClosed => return,
            }
        }
        if mux.is_closed() {
            return;
        }
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        for e in events.iter() {
            if e.token() == WAKER {
                while let Ok(cmd) = commands.try_recv() {
                    match cmd {
                        Command::Open {
                            request,
                            endpoint,
                            messages,
                            reply,
                        } => {
                            let r = mux.open(poll.registry(), request, endpoint);
                            if let Ok(id) = r {
                                routes.insert(id, messages);
                            }
                            reply.send(r).ok();
                        }
                        Command::Send { stream, message } => mux.send(stream, &message),
                    }
                }
            } else {
                pending.extend(mux.handle(poll.registry(), e.token()));
            }
        }
    }
}

fn connect_engine(addr: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true).ok();
    s.set_nonblocking(true)?;
    Ok(mio::net::TcpStream::from_std(s))
}

impl NamespaceSandbox {
    /// The host end of the control channel (for opening streams into the sandbox).
    pub fn control(&self) -> ControlHandle {
        self.control.clone()
    }

    /// The sandbox's cgroup directories (they are removed by `wait`).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.cgroup.dirs().to_vec()
    }

    /// The worker name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn reap(&mut self) -> Result<WorkerExit> {
        let status = match pid::wait(self.pid) {
            Ok(s) => Some(s),
            // Someone else reaped init (an owner's waitpid(-1)): it is gone all the same, and
            // the channel still tells how the worker ended.
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => None,
            Err(e) => return Err(err!("worker {}: waiting for init: {e}", self.name)),
        };
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
        let oom = self.cgroup.oom_kills() > 0;
        let reported = self.shared.lock().ok().and_then(|s| s.exit);
        let exit = match (reported, status) {
            (Some(ExitStatus::Code(c)), _) => WorkerExit::Code(c),
            (Some(ExitStatus::Signal(s)), _) | (None, Some(Status::Signaled(s))) => {
                WorkerExit::Signal {
                    signal: s,
                    oom_killed: s == libc::SIGKILL && oom,
                }
            }
            (None, Some(Status::Exited(c))) => WorkerExit::SandboxFailed(format!(
                "init of worker {} exited with status {c} without reporting the worker's exit",
                self.name
            )),
            (None, None) => WorkerExit::SandboxFailed(format!(
                "init of worker {} was reaped elsewhere before reporting the worker's exit",
                self.name
            )),
        };
        self.exit = Some(exit.clone());
        self.cgroup
            .remove()
            .with_context(|| format!("worker {}: tearing down", self.name))?;
        Ok(exit)
    }
}

impl Sandbox for NamespaceSandbox {
    fn backend(&self) -> Backend {
        Backend::Namespace
    }

    fn exec_opener(&self) -> Option<crate::sandbox::ExecOpener> {
        // Init serves the client's connection itself: no relay through this process.
        let door = self.exec_door.clone();
        Some(Box::new(move |conn| {
            use std::os::fd::AsFd;
            crate::exec::door::send((*door).as_fd(), conn)
                .map_err(|e| crate::err!("exec: handing the connection to the sandbox: {e}"))
        }))
    }

    fn pid(&self) -> u32 {
        self.pid as u32
    }

    fn signal(&self, signal: i32) -> Result<()> {
        if self.exit.is_some() {
            return Err(err!("worker {} is not running", self.name));
        }
        // Init forwards every catchable signal to the worker; SIGKILL takes the whole
        // sandbox down at once.
        pid::kill(self.pid, signal).with_context(|| format!("signalling worker {}", self.name))
    }

    fn wait(&mut self) -> Result<WorkerExit> {
        match &self.exit {
            Some(e) => Ok(e.clone()),
            None => self.reap(),
        }
    }
}

impl Drop for NamespaceSandbox {
    fn drop(&mut self) {
        if self.exit.is_none() {
            pid::kill(self.pid, libc::SIGKILL).ok();
            self.reap().ok();
        }
    }
}
