//! The `vm` backend behind the sandbox contract: one microVM per worker, run by our VMM
//! ([`super::vm`], which knows nothing of images or workers) on threads of the calling
//! process, with iii's own init as the guest's PID 1. This module is the glue: it turns an
//! image tree into disks ([`ext2`]) and the iii binary into an initramfs ([`initramfs`]),
//! and keeps the [`Sandbox`] contract over the VM and its control channel.
//!
//! [`start`] prepares three files and boots the guest:
//! - the root disk: an ext2 image of the image tree, built once per image and cached beside
//!   the tree in the store (`<rootfs>.ext2`, written to a temporary and renamed, so concurrent
//!   starts never see half an image), attached read-only (`/dev/vda`) and shared by workers;
//! - the writable layer: `<worker_dir>/layer/disk.ext2` (`/dev/vdb`), created empty on the
//!   first start and kept across restarts (`remove` deletes it with `layer/`);
//! - the initramfs: the running (static) iii binary as `/init`, in `<worker_dir>/vm/`.
//!
//! The guest's serial console goes to the worker's stdout: the worker's own output lands in its
//! log, the kernel's messages do not ([`CMDLINE`] quiets them, all but an oops or panic); the
//! virtio-console is the control channel, served on the host by the same [`channel`] code as
//! the `namespace` backend's socketpair: the `Start` message, the worker's exit, signals,
//! streams opened with [`ControlHandle`], and the engine link.
//!
//! Lifetime: the VM ends when init reboots the guest after the worker exited, or when it is
//! stopped ([`Sandbox::signal`] with SIGKILL, or dropping the sandbox). [`Sandbox::wait`]
//! joins the VMM and channel threads; nothing but the writable layer stays.

mod console_tail;
pub mod ext2;
pub mod initramfs;

use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::vm::{DiskConfig, StopHandle, Vm, VmConfig, VmExit};
use crate::protocol::init::{LAYER_LABEL, ROOT_LABEL};
use crate::protocol::{
    encode_window, ExitStatus, InitConfig, Message, Setup, HEADER_LEN, SANDBOX_STREAM,
};
use crate::sandbox::channel::{self, Channel, ControlHandle, HostEnd};
use crate::sandbox::{Backend, Sandbox, SandboxSpec, Signaller, Stdio, WorkerExit};
use crate::{err, Context, Result};

/// Default guest memory and the least a Linux guest with iii as init gets.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
pub const MIN_GUEST_MEMORY_MIB: u64 = 64;
/// The writable layer's size (a sparse file: only what the guest writes takes host space)
/// and its inode budget.
pub const LAYER_BYTES: u64 = 4 << 30;
pub const LAYER_INODES: u64 = 65_536;
/// How long a guest may take from boot to init's announcement on the control channel.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Kernel command line: serial console (the worker's log), reset on reboot/panic (the VMM's
/// end of the guest), iii as init from the initramfs. `loglevel=1` keeps the kernel's own
/// messages off that console, and so out of the worker's log, except `KERN_EMERG` and an
/// oops or panic (which turn the console verbose, so the log says why the guest died before
/// the reset): `quiet` alone still lets `KERN_ERR` and worse through (a driver's failed probe).
pub const CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet loglevel=1 rdinit=/init";

/// Backend options beyond the [`SandboxSpec`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The guest kernel (vmlinux ELF or bzImage).
    pub kernel: PathBuf,
    /// The static iii binary to run as the guest's init (default: this process's executable).
    pub init_exe: Option<PathBuf>,
    /// The KVM device (normally `/dev/kvm`).
    pub kvm_device: PathBuf,
    /// Give up this process's capabilities once the VM is built (its disks, memory and KVM
    /// descriptors are all it needs from then on). For a worker's monitor, which is a process
    /// of its own with one thread at that point; never for a process hosting other work.
    pub drop_capabilities: bool,
}

impl Options {
    pub fn new(kernel: PathBuf) -> Options {
        Options {
            kernel,
            init_exe: None,
            kvm_device: PathBuf::from("/dev/kvm"),
            drop_capabilities: false,
        }
    }
}

/// A running `vm` sandbox.
pub struct VmSandbox {
    name: String,
    stop: StopHandle,
    killed: Arc<AtomicBool>,
    vmm: Option<JoinHandle<Result<VmExit>>>,
    /// The channel's host end, served by a thread of its own ([`channel`]).
    host: HostEnd,
    /// A second handle on the channel's host end: shut down if the channel thread outlives
    /// the VM (it must not be left behind).
    chan: std::os::unix::net::UnixStream,
    control: ControlHandle,
    exit: Option<WorkerExit>,
    /// The host side of the worker's NIC (`network: egress`); it stops when dropped.
    network: Option<crate::net::Network>,
    /// The end of the guest's console: a panic's reason when the guest dies unannounced.
    console_tail: console_tail::TailReader,
}

/// Where the cached root disk of the image tree `image_root` lives: beside it in the store.
pub fn root_disk_path(image_root: &Path) -> PathBuf {
    let mut p = image_root.as_os_str().to_owned();
    p.push(".ext2");
    PathBuf::from(p)
}

/// The root disk for `image_root`, built on first use.
pub fn ensure_root_disk(image_root: &Path) -> Result<PathBuf> {
    let disk = root_disk_path(image_root);
    if !disk.is_file() {
        ext2::build_image(image_root, &disk, ROOT_LABEL, 0, 0)
            .with_context(|| format!("building the root disk of {}", image_root.display()))?;
    }
    Ok(disk)
}

/// The worker's writable layer disk, created empty on first use.
pub fn ensure_layer_disk(worker_dir: &Path) -> Result<PathBuf> {
    let layer = worker_dir.join(crate::sandbox::WRITABLE_LAYER_DIR);
    fs::create_dir_all(&layer).with_context(|| format!("creating {}", layer.display()))?;
    let disk = layer.join("disk.ext2");
    if !disk.is_file() {
        let empty = layer.join(format!(".empty-{}", std::process::id()));
        fs::create_dir_all(&empty).with_context(|| format!("creating {}", empty.display()))?;
        let r = ext2::build_image(&empty, &disk, LAYER_LABEL, LAYER_BYTES, LAYER_INODES);
        let _ = fs::remove_dir(&empty);
        r.with_context(|| format!("creating the writable layer {}", disk.display()))?;
    }
    Ok(disk)
}

/// What a VM worker's monitor keeps once its VM is built: nothing, unless it runs as root in a
/// worker directory someone else owns (`sudo iii` in a user's project), where writing the
/// worker's state still needs `CAP_DAC_OVERRIDE`.
fn drop_capabilities(worker_dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let owner = fs::metadata(worker_dir)
        .with_context(|| format!("reading {}", worker_dir.display()))?
        .uid();
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let keep = if owner == euid {
        0
    } else {
        crate::harden::capabilities::DAC_OVERRIDE
    };
    crate::harden::capabilities::drop_process(keep).map_err(|e| err!("{e}"))
}

/// vCPUs and MiB of memory for `resources` (cpus rounded up, default 1 vCPU and
/// 512 MiB).
pub fn machine_size(res: &crate::sandbox::Resources) -> (u32, u64) {
    let vcpus = res.cpus.map_or(1, |c| c.ceil().max(1.0) as u32);
    let mib = res
        .memory_bytes
        .map_or(DEFAULT_MEMORY_MIB, |b| b.div_ceil(1 << 20))
        .max(MIN_GUEST_MEMORY_MIB);
    (vcpus, mib)
}

/// Start a `vm` sandbox for `spec`: returns once init in the guest reports the worker started
/// (or its exec failed, which `wait` then reports as exit 127/126).
///
/// The caller's contract is the `namespace` backend's: keep the sandbox until `wait` returns
/// or drop it (which stops the VM).
pub fn start(spec: &SandboxSpec, stdio: Stdio, opts: &Options) -> Result<VmSandbox> {
    spec.check()?;
    let name = &spec.name;
    let wrap = |e: crate::Error| err!("worker {name}: {}", e.message());
    super::vm::check_host(&opts.kvm_device).map_err(wrap)?;
    if !opts.kernel.is_file() {
        return Err(err!(
            "worker {name}: vm: kernel {} not found or not a file",
            opts.kernel.display()
        ));
    }
    let root_disk = ensure_root_disk(&spec.image_root).map_err(wrap)?;
    let layer_disk = ensure_layer_disk(&spec.worker_dir).map_err(wrap)?;
    let vm_dir = spec.worker_dir.join("vm");
    fs::create_dir_all(&vm_dir).with_context(|| format!("creating {}", vm_dir.display()))?;
    let initrd = vm_dir.join("initramfs.cpio");
    let exe = opts
        .init_exe
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    initramfs::build(&exe, &initrd).map_err(wrap)?;

    let (vcpus, memory_mib) = machine_size(&spec.resources);
    let mut cfg = VmConfig::new(opts.kernel.clone());
    cfg.vcpus = vcpus;
    cfg.memory_mib = memory_mib;
    cfg.cmdline = CMDLINE.to_string();
    cfg.initramfs = Some(initrd);
    cfg.kvm_device = opts.kvm_device.clone();
    let (console, console_tail) =
        console_tail::ConsoleTail::new(Box::new(File::from(stdio.stdout)));
    cfg.serial_out = Box::new(console);
    // `egress`: a virtio-net NIC, served by the worker's user-mode network once the VM is
    // built (its log, the worker's stderr, tells refused destinations).
    let net_log = match &spec.network {
        crate::sandbox::Network::Egress(_) => {
            cfg.nic_mtu = Some(crate::net::MTU as u16);
            Some(stdio.stderr)
        }
        _ => {
            drop(stdio.stderr);
            None
        }
    };
    cfg.disks = vec![
        DiskConfig {
            path: root_disk,
            read_only: true,
        },
        DiskConfig {
            path: layer_disk,
            read_only: false,
        },
    ];
    let mut vm = Vm::build(cfg).map_err(wrap)?;
    if opts.drop_capabilities {
        drop_capabilities(&spec.worker_dir)
            .with_context(|| format!("worker {name}: dropping the monitor's capabilities"))?;
    }
    // After the capability drop, which needs the process single-threaded: the network runs
    // threads of its own (and needs no privilege: its NIC is a socket it already holds).
    let network = match (&spec.network, net_log, vm.take_nic()) {
        (crate::sandbox::Network::Egress(egress), Some(log), Some(nic)) => Some(
            crate::sandbox::nic::serve(OwnedFd::from(nic), egress, spec.engine_addr.port(), log)
                .map_err(wrap)?,
        ),
        _ => None,
    };
    let chan = vm
        .take_control_stream()
        .ok_or_else(|| err!("worker {name}: the VM has no control channel"))?;
    let chan_ctl = chan
        .try_clone()
        .with_context(|| format!("worker {name}: duplicating the control channel"))?;
    let serving = Channel::new()?;
    let stop = vm.stop_handle();
    let vmm = std::thread::Builder::new()
        .name(format!("iii-vmm-{name}"))
        .spawn(move || vm.run())
        .with_context(|| format!("worker {name}: spawning the VMM thread"))?;

    // From here a failure must stop the VM and join its thread.
    let abort = |vmm: JoinHandle<Result<VmExit>>, e: crate::Error| -> crate::Error {
        stop.stop();
        match vmm.join() {
            Ok(Err(vm_err)) => err!("worker {name}: {} ({})", e.message(), vm_err.message()),
            _ => err!("worker {name}: {}", e.message()),
        }
    };
    let engine_port = Some(spec.engine_addr.port());
    let cfg = InitConfig {
        hostname: name.clone(),
        process: (&spec.process).into(),
        // A guest has no host network to share: the engine link always carries it.
        engine_port,
        setup: Setup::Vm,
        network: network
            .as_ref()
            .map(|_| crate::sandbox::nic::init_config(name)),
    };
    if let Err(e) = await_guest_ready(&chan) {
        return Err(abort(vmm, e));
    }
    if let Err(e) = channel::send_blocking(&chan, &Message::Start(Box::new(cfg))) {
        return Err(abort(vmm, e));
    }
    let decoder = match channel::await_started(&chan) {
        Ok(d) => d,
        Err(e) => return Err(abort(vmm, e)),
    };
    let host = match serving.serve(
        format!("iii-vm-{name}"),
        chan,
        decoder,
        crate::sandbox::channel::EngineTarget::of(spec),
    ) {
        Ok(h) => h,
        Err(e) => return Err(abort(vmm, e)),
    };
    Ok(VmSandbox {
        name: name.clone(),
        stop,
        killed: Arc::new(AtomicBool::new(false)),
        vmm: Some(vmm),
        control: host.control(),
        host,
        chan: chan_ctl,
        exit: None,
        network,
        console_tail,
    })
}

/// Wait for init's announcement (a `Window` frame of 0 credit on stream 0): the guest's
/// console is in raw mode and `Start` may be sent.
fn await_guest_ready(chan: &std::os::unix::net::UnixStream) -> Result<()> {
    use std::io::Read;
    chan.set_read_timeout(Some(BOOT_TIMEOUT)).ok();
    let mut frame = [0u8; HEADER_LEN + 4];
    let r = (&*chan).read_exact(&mut frame);
    chan.set_read_timeout(None).ok();
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(err!(
                "the guest ended before its init started (see the worker's log)"
            ))
        }
        Err(e) => return Err(err!("waiting for the guest's init to start: {e}")),
    }
    let mut expected = Vec::new();
    encode_window(&mut expected, SANDBOX_STREAM, 0);
    if frame[..] != expected[..] {
        return Err(err!(
            "the guest's control channel did not start with init's announcement"
        ));
    }
    Ok(())
}

impl VmSandbox {
    /// The host end of the control channel (for opening streams into the sandbox).
    pub fn control(&self) -> ControlHandle {
        self.control.clone()
    }

    /// The worker name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn reap(&mut self) -> Result<WorkerExit> {
        let vm_result = match self.vmm.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(err!("the VMM thread panicked"))),
            None => Err(err!("the VMM thread is gone")),
        };
        // The VM is gone, and with it the device end of the channel: the channel thread sees
        // EOF once it has read what init wrote last. Should it not, end it.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.host.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !self.host.is_finished() {
            let _ = self.chan.shutdown(std::net::Shutdown::Both);
        }
        self.host.join();
        // No NIC any more: its network (threads, host sockets) goes too.
        drop(self.network.take());
        let reported = self.host.exit();
        let killed = self.killed.load(Ordering::SeqCst);
        let panic = self.console_tail.kernel_panic();
        let exit = match (reported, vm_result) {
            (Some(ExitStatus::Code(c)), _) => WorkerExit::Code(c),
            (Some(ExitStatus::Signal(s)), _) => WorkerExit::Signal {
                signal: s,
                oom_killed: false,
            },
            (Some(ExitStatus::OomKilled), _) => WorkerExit::Signal {
                signal: libc::SIGKILL,
                oom_killed: true,
            },
            (None, Ok(VmExit::Stopped)) if killed => WorkerExit::Signal {
                signal: libc::SIGKILL,
                oom_killed: false,
            },
            (None, Ok(VmExit::Reset)) if panic.is_some() => WorkerExit::SandboxFailed(format!(
                "worker {}: the guest kernel panicked: {} (see the worker's log)",
                self.name,
                panic.as_deref().unwrap_or_default()
            )),
            (None, Ok(how)) => WorkerExit::SandboxFailed(format!(
                "worker {}: the VM ended ({how:?}) without reporting the worker's exit \
                 (see the worker's log)",
                self.name
            )),
            (None, Err(e)) => {
                WorkerExit::SandboxFailed(format!("worker {}: the VM failed: {e}", self.name))
            }
        };
        self.exit = Some(exit.clone());
        Ok(exit)
    }
}

/// Signal delivery shared by [`Sandbox::signal`] and [`Sandbox::signaller`]: SIGKILL stops
/// the VM at once (a guest kernel cannot be trusted to act on it), any other signal goes to
/// init as a protocol message and init forwards it to the worker.
fn deliver(
    control: &ControlHandle,
    stop: &StopHandle,
    killed: &AtomicBool,
    signal: i32,
) -> Result<()> {
    if signal == libc::SIGKILL {
        killed.store(true, Ordering::SeqCst);
        stop.stop();
        return Ok(());
    }
    control.send(SANDBOX_STREAM, Message::Signal { signal })
}

impl Sandbox for VmSandbox {
    fn backend(&self) -> Backend {
        Backend::Vm
    }

    /// The VMM runs in this process.
    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn signal(&self, signal: i32) -> Result<()> {
        if self.exit.is_some() {
            return Err(err!("worker {} is not running", self.name));
        }
        deliver(&self.control, &self.stop, &self.killed, signal)
            .with_context(|| format!("signalling worker {}", self.name))
    }

    fn wait(&mut self) -> Result<WorkerExit> {
        match &self.exit {
            Some(e) => Ok(e.clone()),
            None => self.reap(),
        }
    }

    /// Exec streams travel the virtio-console channel to the guest's init, like every other
    /// stream; inside the guest they run as the worker does (the VM is the isolation).
    fn exec_opener(&self) -> Option<crate::sandbox::ExecOpener> {
        Some(channel::exec_opener(self.control.clone()))
    }

    fn signaller(&self) -> Signaller {
        let (control, stop, killed) =
            (self.control.clone(), self.stop.clone(), self.killed.clone());
        let name = self.name.clone();
        Arc::new(move |signal| {
            deliver(&control, &stop, &killed, signal)
                .with_context(|| format!("signalling worker {name}"))
        })
    }
}

impl Drop for VmSandbox {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.killed.store(true, Ordering::SeqCst);
            self.stop.stop();
            self.reap().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Resources;

    #[test]
    fn machine_size_follows_resources() {
        assert_eq!(machine_size(&Resources::default()), (1, 512));
        let r = Resources {
            cpus: Some(1.5),
            memory_bytes: Some(256 << 20),
            pids: None,
        };
        assert_eq!(machine_size(&r), (2, 256));
        let tiny = Resources {
            cpus: Some(0.1),
            memory_bytes: Some(1 << 20),
            pids: None,
        };
        assert_eq!(machine_size(&tiny), (1, MIN_GUEST_MEMORY_MIB));
    }

    #[test]
    fn root_disk_sits_beside_the_tree() {
        assert_eq!(
            root_disk_path(Path::new("/s/blobs/x/rootfs")),
            Path::new("/s/blobs/x/rootfs.ext2")
        );
    }
}
