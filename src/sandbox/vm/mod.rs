//! Our VMM: a small virtual machine monitor on raw KVM ioctls, and nothing else — it knows
//! nothing of images, workers or iii's protocol (the `vm` backend that uses it is
//! [`crate::sandbox::microvm`]).
//!
//! Layout (after Firecracker's `src/vmm`, code our own): [`kvm`] is the only module issuing
//! ioctls; [`memory`] maps guest RAM; [`boot`] loads ELF/PVH/bzImage kernels and sets the entry
//! CPU state; [`devices`] holds the serial port, the exit/progress ports and the virtio-mmio
//! transport with its devices (console for a byte stream to the guest, block for disks);
//! [`builder`] assembles a [`Vm`]; [`vcpu`] runs one thread per vCPU; [`spawner`] creates the
//! device threads; [`seccomp`] confines every vCPU and device thread to the system calls its
//! job needs; [`sys`] holds the few other system calls it makes; [`probe`] boots a kernel once
//! to learn whether a KVM device can run it at all.
//!
//! ```no_run
//! # use iii::sandbox::vm::{Vm, VmConfig};
//! let mut cfg = VmConfig::new("/path/to/kernel".into());
//! cfg.memory_mib = 64;
//! let mut vm = Vm::build(cfg)?;
//! let control = vm.take_control_stream(); // host end of the virtio-console byte stream
//! let exit = vm.run()?;
//! # Ok::<(), iii::Error>(())
//! ```

pub mod boot;
pub mod builder;
pub mod devices;
pub mod kvm;
pub mod memory;
pub mod probe;
pub mod seccomp;
pub mod spawner;
pub mod sys;
pub mod vcpu;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use crate::{err, Result};
use boot::BootSetup;
use devices::{Bus, ProgressLog};
use kvm::{Kvm, VcpuFd, VmFd};
use memory::GuestMemory;
use vcpu::RunState;

/// Smallest guest the VMM accepts (boot structures and stacks live below 1 MiB, kernels load
/// at 1 MiB and up).
pub const MIN_MEMORY_MIB: u64 = 2;
pub const MAX_DISKS: usize = 8;

/// Whether this host can run the `vm` backend at all: `kvm_device` (normally `/dev/kvm`) opens
/// read/write, speaks the KVM API and has every capability the VMM uses. For `sandbox: auto`;
/// the error says why not, in one line.
pub fn check_host(kvm_device: &std::path::Path) -> Result<()> {
    builder::open_kvm(kvm_device).map(|_| ())
}

/// Whether this host's KVM is the nested paravirtual kind (`kvm_pvm`): it runs small guests of
/// our own but an unmodified Linux kernel falls into instruction emulation and dies, so
/// `sandbox: auto` must not pick `vm` there.
pub fn paravirtual_kvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// A virtio-blk disk backed by a host file.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
}

/// What to run.
pub struct VmConfig {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// ELF (vmlinux, PVH, or a freestanding program) or bzImage.
    pub kernel: PathBuf,
    pub cmdline: String,
    pub initramfs: Option<PathBuf>,
    pub disks: Vec<DiskConfig>,
    /// Where the guest's serial console output goes.
    pub serial_out: Box<dyn Write + Send>,
    /// Add the virtio-console control channel (first virtio-mmio slot).
    pub control_channel: bool,
    /// The KVM device (normally `/dev/kvm`).
    pub kvm_device: PathBuf,
    /// Add a virtio-net NIC with this MTU (after the disks): its frames come out of
    /// [`Vm::take_nic`].
    pub nic_mtu: Option<u16>,
}

impl VmConfig {
    /// One vCPU, 512 MiB, serial console, control channel, no disks; output discarded.
    pub fn new(kernel: PathBuf) -> VmConfig {
        VmConfig {
            vcpus: 1,
            memory_mib: 512,
            kernel,
            cmdline: "console=ttyS0 reboot=k panic=-1".to_string(),
            initramfs: None,
            disks: Vec::new(),
            serial_out: Box::new(std::io::sink()),
            control_channel: true,
            kvm_device: PathBuf::from("/dev/kvm"),
            nic_mtu: None,
        }
    }
}

/// How a VM ended (guest crashes and VMM failures are `Err`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmExit {
    /// The guest wrote this code to the debug-exit port.
    Exited(u32),
    /// The guest asked for a reboot: the i8042 reset pulse (Linux `reboot=k`) or a KVM reset
    /// system event. A triple fault is not this: it is reported as an error (a crash).
    Reset,
    /// Stopped from the host through a [`StopHandle`].
    Stopped,
}

/// Ends a running VM from another thread.
#[derive(Clone)]
pub struct StopHandle {
    state: Arc<RunState>,
}

impl StopHandle {
    pub fn stop(&self) {
        self.state.finish(Ok(VmExit::Stopped));
    }
}

/// A built, not yet running VM. Field order is drop order: vCPUs and devices before the VM fd,
/// the VM fd before the memory it maps.
pub struct Vm {
    vcpus: Vec<VcpuFd>,
    bus: Arc<Bus>,
    /// Held only to keep the VM alive (and to close it before `_mem` is unmapped).
    _vm_fd: VmFd,
    _kvm: Kvm,
    /// Held so guest RAM stays mapped until the VM fd (and every vCPU) is closed.
    _mem: Arc<GuestMemory>,
    control: Option<UnixStream>,
    nic: Option<std::os::unix::net::UnixDatagram>,
    state: Arc<RunState>,
    /// Device activations (on vCPU threads) queue here; served while the VM runs.
    spawn_queue: Option<spawner::SpawnerQueue>,
    progress: ProgressLog,
    boot: BootSetup,
}

impl Vm {
    pub fn build(cfg: VmConfig) -> Result<Vm> {
        builder::build(cfg)
    }

    /// The host end of the control channel (virtio-console), once.
    pub fn take_control_stream(&mut self) -> Option<UnixStream> {
        self.control.take()
    }

    /// The host end of the NIC ([`VmConfig::nic_mtu`]): one Ethernet frame per datagram.
    pub fn take_nic(&mut self) -> Option<std::os::unix::net::UnixDatagram> {
        self.nic.take()
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            state: self.state.clone(),
        }
    }

    /// Timestamped writes to the progress port (filled while the VM runs).
    pub fn progress(&self) -> ProgressLog {
        self.progress.clone()
    }

    pub fn boot_setup(&self) -> BootSetup {
        self.boot
    }

    /// Run until the guest exits, resets or crashes, or a [`StopHandle`] stops it. Every vCPU
    /// and device thread is joined before this returns. vCPU and device threads run confined
    /// ([`seccomp`]); the calling thread does not.
    pub fn run(mut self) -> Result<VmExit> {
        sys::install_kick_handler();
        let spawner = match self.spawn_queue.take() {
            Some(q) => q.serve()?,
            None => return Err(err!("vm: run twice")),
        };
        let mut threads = Vec::new();
        let runnable_aps = self.boot.aps == boot::ApStart::SameEntry;
        for vcpu in self.vcpus.drain(..) {
            let (bus, state) = (self.bus.clone(), self.state.clone());
            let start_runnable = vcpu.id() != 0 && runnable_aps;
            let name = format!("vcpu{}", vcpu.id());
            match std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || vcpu::run_vcpu(vcpu, bus, state, start_runnable))
            {
                Ok(t) => threads.push(t),
                Err(e) => {
                    self.state.finish(Err(err!("spawning {name} thread: {e}")));
                    break;
                }
            }
        }
        let outcome = self.state.wait();
        self.state.finish(Ok(VmExit::Stopped));
        // SAFETY: none of the vCPU threads has been joined yet.
        unsafe { self.state.kick_all() };
        for t in threads {
            let _ = t.join();
        }
        self.bus.shutdown();
        drop(spawner);
        outcome
    }
}
