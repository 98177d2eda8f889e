//! iii's own init: PID 1 inside every sandbox (namespace or VM).
//!
//! It is the iii binary re-executed with a hidden first argument ([`INIT_ARG`]), with the
//! control channel on fd 3. It reads the `Start` message, sets the sandbox up (for
//! `namespace`: overlay root, pivot_root, /proc, /dev, hostname, loopback), starts the worker,
//! then serves until the worker exits: it reaps every zombie in the sandbox, forwards signals
//! it receives (SIGTERM, SIGINT, …) to the worker, carries engine-link connections
//! (`127.0.0.1:<engine port>` inside → the host engine) over the channel, serves `iii worker
//! exec` (streams on the channel, or in `namespace` sandboxes the client's own connection,
//! handed over on the exec door, fd 4: see `sandbox::namespace::door`), and finally reports
//! the worker's exit status and exits with it. EOF on the channel means the host side died:
//! init exits at once, and the kernel kills every process of the sandbox with it.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::harden::{mounts, Hardening};
use crate::protocol::init::INIT_EXEC_DOOR_FD;
use crate::protocol::mux::{Mux, MuxEvent};
use crate::protocol::{
    encode_message, Decoder, ExitStatus, InitConfig, Message, Setup, SANDBOX_STREAM,
};
use crate::sys::pid::{self, Status};
use crate::{err, Result};

pub mod exec;
pub mod guest;
pub mod spawn;
pub mod worker;

pub use crate::protocol::init::{INIT_ARG, INIT_CONTROL_FD};

const SIGNALS: Token = Token(1);
const LISTENER: Token = Token(2);
const EXEC_DOOR: Token = Token(3);

/// Signals init forwards to the worker (SIGCHLD is init's own: reaping).
const FORWARDED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGCONT,
    libc::SIGWINCH,
];

/// Run as init if this process was started as one (first argument [`INIT_ARG`], or `/init` as
/// PID 1 of a `vm` guest); returns the exit code then. `main` calls this before parsing the
/// command line.
pub fn entry() -> Option<i32> {
    if guest::is_guest_init() {
        guest::run();
    }
    let mut args = std::env::args_os();
    args.next();
    if args.next()? != INIT_ARG {
        return None;
    }
    Some(run())
}

fn run() -> i32 {
    // Only fds 0–4 are ours; anything else leaked from the host side must not reach the worker.
    crate::sys::fd::close_from(5);
    // SAFETY: fd 3 is the control channel our parent set up; we take ownership of it.
    let chan = unsafe { UnixStream::from_raw_fd(INIT_CONTROL_FD) };
    // SAFETY: fd 4 is the exec door our parent set up; we take ownership of it.
    let door = unsafe { OwnedFd::from_raw_fd(INIT_EXEC_DOOR_FD) };
    // The worker must not inherit the channel or the door.
    for fd in [INIT_CONTROL_FD, INIT_EXEC_DOOR_FD] {
        let _ = crate::sys::fd::set_cloexec(fd);
    }
    run_on(chan, Some(door))
}

/// The init loop on a control channel `chan` (close-on-exec): read `Start`, set up, start the
/// worker, serve until it exits. Shared by both backends (only `namespace` has an exec door:
/// see `sandbox::namespace::door`); returns init's exit code.
fn run_on(chan: UnixStream, exec_door: Option<OwnedFd>) -> i32 {
    // As PID 1 of a namespace, a signal we neither handle nor block is dropped: block them
    // first, so a SIGTERM that arrives during setup still reaches the worker.
    let signals = match block_signals() {
        Ok(fd) => fd,
        Err(e) => return setup_failed(&chan, e),
    };
    let mut decoder = Decoder::new();
    let cfg = match read_until(&chan, &mut decoder, |m| match m {
        Message::Start(cfg) => Some(*cfg),
        _ => None,
    }) {
        Ok(x) => x,
        Err(e) => {
            crate::say!("iii-init: {e}");
            return 1;
        }
    };
    if let Err(e) = setup(&cfg, &chan, &mut decoder) {
        return setup_failed(&chan, e);
    }
    let hardening = match cfg.setup {
        Setup::Namespace { .. } => Some(Hardening::namespace_default()),
        // The VM is the isolation boundary; the guest kernel holds nothing else to protect.
        Setup::Vm => None,
    };
    let pid = match worker::start(&cfg.process, hardening.as_ref()) {
        Ok(pid) => pid,
        Err(f) => {
            // The worker's stderr is its log: that is where a user looks.
            crate::say!(
                "iii-init: cannot start worker {}: {}",
                cfg.hostname,
                f.message
            );
            return report_early_exit(&chan, f.code);
        }
    };
    match serve(chan, exec_door, decoder, signals, pid, &cfg) {
        Ok(code) => code,
        Err(e) => {
            crate::say!("iii-init: {e}");
            1
        }
    }
}

/// Read frames (blocking) until `pick` accepts a stream-0 message; frames before it are
/// dropped (the host sends nothing else before the worker runs).
fn read_until<T>(
    mut chan: &UnixStream,
    dec: &mut Decoder,
    pick: impl Fn(Message) -> Option<T>,
) -> Result<T> {
    let mut buf = [0u8; 16 << 10];
    loop {
        while let Some(f) = dec.next_frame()? {
            if f.stream == SANDBOX_STREAM {
                if let Some(t) = pick(f.message()?) {
                    return Ok(t);
                }
            }
        }
        let n = match chan.read(&mut buf) {
            Ok(0) => return Err(err!("control channel closed during sandbox setup")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err!("reading the control channel: {e}")),
        };
        dec.feed(&buf[..n]);
    }
}

fn send_blocking(mut chan: &UnixStream, msg: &Message) {
    let mut out = Vec::new();
    encode_message(&mut out, SANDBOX_STREAM, msg);
    chan.write_all(&out).ok();
}

fn setup_failed(chan: &UnixStream, e: crate::Error) -> i32 {
    crate::say!("iii-init: {e}");
    send_blocking(
        chan,
        &Message::Failed {
            message: e.to_string(),
        },
    );
    1
}

/// The worker did not start: report it as started-and-exited with `code`.
fn report_early_exit(chan: &UnixStream, code: i32) -> i32 {
    send_blocking(chan, &Message::Started { pid: 0 });
    send_blocking(chan, &Message::Exited(ExitStatus::Code(code)));
    code
}

/// Block the signals init handles and return a signalfd that delivers them. Blocked before
/// the worker exists so none is lost; the worker unblocks them before exec.
fn block_signals() -> Result<OwnedFd> {
    let mut set = vec![libc::SIGCHLD];
    set.extend_from_slice(FORWARDED);
    crate::sys::signal::block_into_fd(&set).map_err(|e| err!("blocking signals: {e}"))
}

fn setup(cfg: &InitConfig, chan: &UnixStream, dec: &mut Decoder) -> Result<()> {
    match &cfg.setup {
        Setup::Namespace {
            lower,
            upper,
            work,
            merged,
            loopback,
        } => {
            mounts::build_root(
                &mounts::Layers {
                    lower,
                    upper,
                    work,
                    merged,
                },
                &cfg.hostname,
                !*loopback,
                cfg.network.as_ref(),
            )?;
            mounts::set_hostname(&cfg.hostname)?;
            if *loopback {
                mounts::loopback_up()?;
            }
            // The host moves us into the sandbox's cgroups while we build the root (on cgroup
            // v1 that move costs an RCU grace period, ~10 ms); the worker must start inside
            // them, and the cgroup namespace must be rooted there.
            read_until(chan, dec, |m| {
                matches!(m, Message::CgroupsReady).then_some(())
            })?;
            mounts::unshare_cgroup()?;
        }
        Setup::Vm => {
            mounts::set_hostname(&cfg.hostname)?;
            mounts::loopback_up()?;
            if let Some(net) = &cfg.network {
                crate::init::guest::nic_up()?;
                // On the guest's devtmpfs: in memory, gone with the VM, never in the layer.
                mounts::bind_network_files(
                    std::path::Path::new("/"),
                    std::path::Path::new("/dev/.iii-net"),
                    net,
                )?;
            }
        }
    }
    Ok(())
}

/// Serve until the worker exits; returns init's exit code (the worker's, or 128+signal).
fn serve(
    chan: UnixStream,
    exec_door: Option<OwnedFd>,
    decoder: Decoder,
    signals: OwnedFd,
    worker: libc::pid_t,
    cfg: &InitConfig,
) -> Result<i32> {
    let mut poll = Poll::new().map_err(|e| err!("init: creating poll: {e}"))?;
    let mut mux = Mux::new(chan, decoder, true, poll.registry())
        .map_err(|e| err!("init: control channel: {e}"))?;
    mux.send(SANDBOX_STREAM, &Message::Started { pid: worker as u32 });
    let sigfd = signals.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&sigfd), SIGNALS, Interest::READABLE)
        .map_err(|e| err!("init: registering signals: {e}"))?;
    let mut listener = match cfg.engine_port {
        Some(port) => match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => {
                l.set_nonblocking(true).ok();
                let mut l = mio::net::TcpListener::from_std(l);
                poll.registry()
                    .register(&mut l, LISTENER, Interest::READABLE)
                    .map_err(|e| err!("init: registering the engine link: {e}"))?;
                Some(l)
            }
            Err(e) => {
                crate::say!("iii-init: engine link: listening on 127.0.0.1:{port}: {e}");
                None
            }
        },
        None => None,
    };
    let exec_ctx = exec::ExecContext::from_init(cfg);
    let mut exec_door = exec_door;
    if let Some(door) = &exec_door {
        let fd = door.as_raw_fd();
        crate::sys::fd::set_nonblocking(fd, true).map_err(|e| err!("init: the exec door: {e}"))?;
        poll.registry()
            .register(&mut SourceFd(&fd), EXEC_DOOR, Interest::READABLE)
            .map_err(|e| err!("init: registering the exec door: {e}"))?;
    }
    let mut worker_status: Option<Status> = None;
    let mut events = Events::with_capacity(64);
    let initial = mux.drain_decoded(poll.registry());
    let mut pending: Vec<MuxEvent> = initial;
    loop {
        if mux.is_closed() {
            // The host side is gone: take the whole sandbox down with us.
            return Ok(137);
        }
        for ev in pending.drain(..) {
            match ev {
                MuxEvent::Message {
                    stream: SANDBOX_STREAM,
                    message: Message::Signal { signal },
                } => {
                    pid::kill(worker, signal).ok();
                }
                MuxEvent::Message { .. } => {}
                MuxEvent::Open {
                    stream,
                    request: crate::protocol::OpenRequest::Exec,
                } => exec::attach(&mut mux, poll.registry(), stream, &exec_ctx),
                MuxEvent::Open { stream, .. } => {
                    mux.reject(stream, "init serves no such stream".into());
                }
                MuxEvent::ChannelClosed => {
                    // The host side is gone: take the whole sandbox down with us.
                    return Ok(137);
                }
            }
        }
        while let Some((child, status)) = pid::reap_any() {
            if child == worker {
                worker_status = Some(status);
            } else {
                exec::reaped(child, status);
            }
        }
        if let Some(status) = worker_status {
            let (msg, code) = match status {
                Status::Exited(c) => (ExitStatus::Code(c), c),
                // The guest is the worker's memory limit: its kernel's OOM killer is the one
                // that struck, and only its log says so.
                Status::Signaled(s)
                    if s == libc::SIGKILL
                        && matches!(cfg.setup, Setup::Vm)
                        && crate::init::guest::oom_kill_logged() =>
                {
                    (ExitStatus::OomKilled, 128 + s)
                }
                Status::Signaled(s) => (ExitStatus::Signal(s), 128 + s),
            };
            mux.send(SANDBOX_STREAM, &Message::Exited(msg));
            mux.flush_blocking().ok();
            return Ok(code);
        }
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err!("init: poll: {e}")),
        }
        for e in events.iter() {
            match e.token() {
                SIGNALS => {
                    for sig in crate::sys::signal::drain(sigfd) {
                        if sig != libc::SIGCHLD {
                            pid::kill(worker, sig).ok();
                        }
                    }
                }
                LISTENER => {
                    let Some(l) = listener.as_mut() else { continue };
                    loop {
                        match l.accept() {
                            Ok((stream, _)) => {
                                let r = mux.open(
                                    poll.registry(),
                                    crate::protocol::OpenRequest::EngineLink,
                                    Box::new(stream),
                                );
                                if let Err(e) = r {
                                    crate::say!("iii-init: engine link: {e}");
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                crate::say!("iii-init: engine link: accept: {e}");
                                break;
                            }
                        }
                    }
                }
                EXEC_DOOR => {
                    if !take_exec_clients(exec_door.as_ref(), &exec_ctx) {
                        // The host closed its end (it keeps it as long as the sandbox runs).
                        if let Some(door) = exec_door.take() {
                            let _ = poll.registry().deregister(&mut SourceFd(&door.as_raw_fd()));
                        }
                    }
                }
                t => pending.extend(mux.handle(poll.registry(), t)),
            }
        }
    }
}

/// Serve every exec client connection waiting at the door, each on a thread of its own
/// talking exec frames with the client directly. Returns `false` once the door is closed.
fn take_exec_clients(door: Option<&OwnedFd>, ctx: &exec::ExecContext) -> bool {
    use std::os::fd::AsFd;
    let Some(door) = door else { return false };
    loop {
        match crate::sys::socket::recv_fd(door.as_fd()) {
            Ok(Some(conn)) => {
                let conn = UnixStream::from(conn);
                // The host's accepted socket may carry its non-blocking flag; the exec server
                // reads and writes it blocking (a slow client then holds the command back).
                if conn.set_nonblocking(false).is_err() {
                    continue;
                }
                if let Err(e) = exec::serve_stream_on(conn, ctx.clone()) {
                    crate::say!("iii-init: exec: starting a thread: {e}");
                }
            }
            Ok(None) => return true,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return false,
            Err(e) => {
                crate::say!("iii-init: exec door: {e}");
                return false;
            }
        }
    }
}
