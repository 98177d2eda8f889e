//! The sandbox contract both backends keep, and the backends themselves.
//!
//! A sandbox runs one worker process from an extracted image tree, isolated in its own root
//! filesystem (read-only image under a persistent per-worker writable layer), process tree,
//! hostname, network and resource limits, with iii's own init as PID 1. The host-side process
//! that owns a sandbox (a worker's monitor, `supervisor::monitor`) uses only this module's
//! types, so the `namespace` and `vm` backends are interchangeable.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::Result;

pub mod channel;
pub mod microvm;
pub mod namespace;
pub mod nic;
pub mod vm;

/// The per-worker writable layer lives in `<worker_dir>/layer/` (both backends): `remove` deletes
/// it with the rest of the worker's state unless `--keep-data`.
pub const WRITABLE_LAYER_DIR: &str = "layer";

/// Which backend runs a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Namespace,
    Vm,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Namespace => "namespace",
            Backend::Vm => "vm",
        }
    }
}

/// The user a worker process runs as, resolved from the image's `/etc/passwd` and `/etc/group`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// The worker process: argv, environment and working directory, all already resolved with
/// docker semantics (Entrypoint + Cmd, image Env ← flattened config ← III_WORKER_NAME).
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub user: User,
}

impl From<&ProcessSpec> for crate::protocol::ProcessConfig {
    /// The worker process as init receives it over the control channel (either backend).
    fn from(p: &ProcessSpec) -> Self {
        crate::protocol::ProcessConfig {
            args: p.args.clone(),
            env: p.env.clone(),
            cwd: p.cwd.clone(),
            uid: p.user.uid,
            gid: p.user.gid,
            additional_gids: p.user.additional_gids.clone(),
        }
    }
}

/// Resource limits from `resources:` (cgroups in `namespace`, vCPUs/memory in `vm`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// CPUs (fractional allowed: quota in `namespace`, rounded up to vCPUs in `vm`).
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
}

/// The worker's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// Own network namespace (or VM) with loopback only, plus the engine link: init listens on
    /// `127.0.0.1:<engine port>` inside and tunnels each connection to `SandboxSpec::engine_addr`.
    Isolated,
    /// [`Network::Isolated`] plus one virtual NIC whose host side is the worker's user-mode
    /// network ([`crate::net`]): outbound TCP, UDP and DNS as the policy allows.
    Egress(Egress),
    /// `network: host`: share the host network.
    Host,
}

/// The egress policy of a [`Network::Egress`] sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    /// Only these destinations; `None`: anywhere but the host.
    pub allow: Option<Vec<crate::net::policy::Rule>>,
    /// Host loopback ports reachable at the gateway, beside the engine port.
    pub host_ports: Vec<u16>,
}

impl Network {
    /// Whether the sandbox has a network namespace (or VM network) of its own.
    pub fn own_namespace(&self) -> bool {
        !matches!(self, Network::Host)
    }
}

/// Everything a backend needs to start one worker.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Worker name: also the hostname.
    pub name: String,
    /// The extracted image tree in the store: read-only, shared between workers.
    pub image_root: PathBuf,
    /// `.iii/workers/<name>/`: the backend keeps the writable layer (and its own scratch) here.
    pub worker_dir: PathBuf,
    pub process: ProcessSpec,
    pub resources: Resources,
    pub network: Network,
    /// The host engine address the in-sandbox engine link tunnels to.
    pub engine_addr: SocketAddr,
    /// The engine's unix socket for engine links (`.iii/link.sock`), tried before
    /// `engine_addr`: there the engine knows, from the peer's PID, which worker a connection
    /// comes from (`iii worker list` shows it).
    pub engine_link: Option<PathBuf>,
}

impl SandboxSpec {
    /// What both backends refuse before touching anything: a name that cannot be a hostname,
    /// an image root that is not a directory.
    pub fn check(&self) -> Result<()> {
        let name = &self.name;
        if name.is_empty() || name.contains('/') || name.len() > 63 {
            return Err(crate::err!("worker name {name:?} cannot be a hostname"));
        }
        if !self.image_root.is_dir() {
            return Err(crate::err!(
                "worker {name}: image root {} is not a directory",
                self.image_root.display()
            ));
        }
        Ok(())
    }

    /// `<worker_dir>/layer/`: the worker's writable layer (kept across restarts).
    pub fn layer_dir(&self) -> PathBuf {
        self.worker_dir.join(WRITABLE_LAYER_DIR)
    }
}

/// Where the worker's stdout and stderr go (e.g. the write ends of pipes the log writer reads).
#[derive(Debug)]
pub struct Stdio {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// How the worker process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerExit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal (OOM kills show as SIGKILL with `oom_killed`).
    Signal { signal: i32, oom_killed: bool },
    /// The sandbox itself failed (guest crash, VMM error) with this description.
    SandboxFailed(String),
}

/// Delivers a signal to a sandbox's worker from any thread (a monitor's stop and control
/// threads), while the owning thread blocks in [`Sandbox::wait`].
pub type Signaller = std::sync::Arc<dyn Fn(i32) -> Result<()> + Send + Sync>;

/// A running sandbox, owned by one host-side process.
pub trait Sandbox: Send {
    fn backend(&self) -> Backend;
    /// Host PID of the sandbox's root process (init's host PID, or the VMM).
    fn pid(&self) -> u32;
    /// Deliver a signal to the worker process (init forwards it).
    fn signal(&self, signal: i32) -> Result<()>;
    /// Block until the worker process has exited and the sandbox is torn down (no process,
    /// mount or cgroup left behind).
    fn wait(&mut self) -> Result<WorkerExit>;
    /// For `iii worker exec`: what carries a client connection (past the monitor's
    /// handshake) into the sandbox as an exec stream; `None` where the backend cannot exec.
    fn exec_opener(&self) -> Option<ExecOpener> {
        None
    }
    /// A [`Signaller`] usable from other threads. By default: `kill` the root process (init
    /// forwards catchable signals to the worker; SIGKILL takes the whole sandbox).
    fn signaller(&self) -> Signaller {
        let pid = self.pid();
        std::sync::Arc::new(move |signal| {
            crate::sys::pid::kill(pid as i32, signal)
                .map_err(|e| crate::err!("sending signal {signal} to pid {pid}: {e}"))
        })
    }
}

/// Carries one `iii worker exec` client connection into a sandbox (see
/// [`channel::exec_opener`] and `namespace::door`).
pub type ExecOpener = Box<dyn Fn(std::os::unix::net::UnixStream) -> Result<()> + Send + Sync>;
