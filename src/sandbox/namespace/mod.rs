//! The `namespace` backend: Linux namespaces, overlayfs, pivot_root, cgroups, seccomp.
//!
//! [`start`] creates the sandbox's cgroups, clones a child into new PID, mount, UTS, IPC and
//! (unless `network: host`) network namespaces, and has it exec iii's init ([`crate::init`])
//! with one end of a socketpair as the control channel. Init builds the root filesystem from
//! the image (read-only overlay lower) and the worker's persistent writable layer
//! (`<worker_dir>/layer/{upper,work}`), pivots into it and starts the worker, hardened
//! (capabilities, no_new_privs, seccomp: [`crate::harden`]). The host end of the channel is
//! served by a thread owned by [`NamespaceSandbox`] ([`super::channel`]): it records the
//! worker's exit and carries engine-link connections to `SandboxSpec::engine_addr`; exec
//! clients' connections go to init directly, through the exec door ([`door`]).
//!
//! Lifetime: init dies with the thread that called [`start`] (PR_SET_PDEATHSIG) or when the
//! channel's host end closes (the owning process died), and every process of the worker dies
//! with init (it is PID 1 of their namespace). [`Sandbox::wait`] reaps init and removes the
//! cgroups; the mounts vanish with the mount namespace. Only the writable layer stays.

use std::fs::{self, File};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use super::channel::{self, Channel, ControlHandle, HostEnd};
use crate::protocol::{ExitStatus, InitConfig, Message, Setup};
use crate::sandbox::{Backend, Network, Sandbox, SandboxSpec, Stdio, WorkerExit};
use crate::{err, Context, Result};

pub mod cgroup;
pub mod clone;
pub mod door;

use crate::sys::pid::{self, Status};
use cgroup::Cgroup;

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
    host: HostEnd,
    /// Where exec clients' connections are handed to init ([`door`]).
    exec_door: Arc<std::os::fd::OwnedFd>,
    exit: Option<WorkerExit>,
    /// The host side of the worker's NIC (`network: egress`); it stops when dropped.
    network: Option<crate::net::Network>,
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
    let (door_host, door_init) = door::pair().context("creating the exec door")?;

    let engine_port = spec
        .network
        .own_namespace()
        .then_some(spec.engine_addr.port());
    let cfg = InitConfig {
        hostname: name.clone(),
        process: (&spec.process).into(),
        engine_port,
        setup: Setup::Namespace {
            lower: path_str(&spec.image_root)?,
            upper: path_str(&upper)?,
            work: path_str(&work)?,
            merged: path_str(&merged)?,
            loopback: spec.network.own_namespace(),
        },
        network: match &spec.network {
            Network::Egress(_) => Some(crate::sandbox::nic::init_config(name)),
            Network::Isolated | Network::Host => None,
        },
    };
    // Refused destinations are told in the worker's log (its stderr).
    let net_log = match spec.network {
        Network::Egress(_) => Some(
            stdio
                .stderr
                .try_clone()
                .context("duplicating the log pipe for the network")?,
        ),
        _ => None,
    };
    // Everything fallible that needs no child is done before the clone.
    let serving = Channel::new()?;
    let mut cgroup = Cgroup::create(name, &spec.resources)?;
    let mut flags =
        libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.network.own_namespace() {
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
    // The NIC exists before init starts the worker, which may connect out at once.
    let network = match (&spec.network, net_log) {
        (Network::Egress(egress), Some(log)) => match start_network(pid, egress, spec, log) {
            Ok(n) => Some(n),
            Err(e) => return Err(abort(&mut cgroup, err!("worker {name}: {}", e.message()))),
        },
        _ => None,
    };
    // Init builds the root filesystem while we move it into its cgroups.
    if let Err(e) = channel::send_blocking(&host_end, &Message::Start(Box::new(cfg))) {
        return Err(abort(&mut cgroup, e));
    }
    if let Err(e) = cgroup.add(pid as u32) {
        return Err(abort(&mut cgroup, e));
    }
    if let Err(e) = channel::send_blocking(&host_end, &Message::CgroupsReady) {
        return Err(abort(&mut cgroup, e));
    }
    let decoder = match channel::await_started(&host_end) {
        Ok(d) => d,
        Err(e) => return Err(abort(&mut cgroup, err!("worker {name}: {}", e.message()))),
    };

    let host = match serving.serve(
        format!("iii-ns-{name}"),
        host_end,
        decoder,
        crate::sandbox::channel::EngineTarget::of(spec),
    ) {
        Ok(h) => h,
        Err(e) => return Err(abort(&mut cgroup, err!("worker {name}: {}", e.message()))),
    };
    Ok(NamespaceSandbox {
        name: name.clone(),
        pid,
        cgroup,
        host,
        exec_door: Arc::new(door_host),
        exit: None,
        network,
    })
}

/// Give the sandbox of init `pid` its NIC: a TAP device `eth0` made and configured in its
/// network namespace, served by the worker's user-mode network in this process.
fn start_network(
    pid: libc::pid_t,
    egress: &crate::sandbox::Egress,
    spec: &SandboxSpec,
    log: std::os::fd::OwnedFd,
) -> Result<crate::net::Network> {
    use crate::net::link;
    let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let setup = crate::net::worker_setup();
    let tap = link::in_netns(&ns, move || {
        let fd = link::create_tap("eth0")?;
        link::configure("eth0", &setup)?;
        Ok(fd)
    })
    .map_err(|e| err!("network: egress: {e} (network: none needs no NIC)"))?;
    crate::sandbox::nic::serve(tap, egress, spec.engine_addr.port(), log)
}

fn path_str(p: &std::path::Path) -> Result<String> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| err!("path {} is not UTF-8", p.display()))
}

impl NamespaceSandbox {
    /// The host end of the control channel (for opening streams into the sandbox).
    pub fn control(&self) -> ControlHandle {
        self.host.control()
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
        self.host.join();
        // The NIC went with the namespace; stop its host side (its sockets close).
        drop(self.network.take());
        let oom = self.cgroup.oom_kills() > 0;
        let reported = self.host.exit();
        let exit = match (reported, status) {
            (Some(ExitStatus::Code(c)), _) => WorkerExit::Code(c),
            (Some(ExitStatus::OomKilled), _) => WorkerExit::Signal {
                signal: libc::SIGKILL,
                oom_killed: true,
            },
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
            door::send((*door).as_fd(), conn)
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
