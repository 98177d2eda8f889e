//! Virtio: the device model shared by all virtio devices ([`VirtioDevice`]), the mmio transport
//! ([`mmio`]), the split virtqueue ([`queue`]), and the devices themselves.
//!
//! Notifications: the guest's QueueNotify writes are turned into eventfd signals by KVM
//! (ioeventfd), so they never exit to the VMM; each activated device runs one worker thread
//! that polls its queue eventfds. Interrupts go the other way through irqfd (edge-triggered
//! GSI on the in-kernel IOAPIC/PIC), after InterruptStatus is updated.

pub mod block;
pub mod console;
pub mod mmio;
pub mod net;
pub mod queue;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::sandbox::vm::kvm::EventFd;
use crate::sandbox::vm::memory::GuestMemory;
use crate::sandbox::vm::seccomp::{self, Role};
use crate::sandbox::vm::spawner::Spawner;
use crate::Result;
use queue::Queue;

pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_CONSOLE: u32 = 3;

/// InterruptStatus bit: a used buffer was returned.
pub const INT_VRING: u32 = 1;
/// InterruptStatus bit: the configuration (here: the device status) changed.
pub const INT_CONFIG: u32 = 2;

/// The device→driver interrupt: the InterruptStatus register and the irqfd behind it.
#[derive(Clone)]
pub struct Interrupt {
    status: Arc<AtomicU32>,
    irqfd: Arc<EventFd>,
    /// Set when the device gave up on what the driver handed it (malformed descriptors, rings
    /// outside memory); the transport then reports DEVICE_NEEDS_RESET.
    failed: Arc<AtomicBool>,
}

impl Interrupt {
    pub fn new(irqfd: Arc<EventFd>) -> Interrupt {
        Interrupt {
            status: Arc::new(AtomicU32::new(0)),
            irqfd,
            failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The device stopped processing because of the driver's input: tell the driver
    /// (DEVICE_NEEDS_RESET plus a configuration-change interrupt), never the VMM's stderr.
    pub fn device_failed(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.status.fetch_or(INT_CONFIG, Ordering::SeqCst);
        let _ = self.irqfd.write(1);
    }

    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    pub fn clear_failure(&self) {
        self.failed.store(false, Ordering::SeqCst);
    }

    pub fn signal_used(&self) {
        self.status.fetch_or(INT_VRING, Ordering::SeqCst);
        let _ = self.irqfd.write(1);
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// What an activated device gets: memory, its queues as the driver set them up, the eventfd
/// KVM signals for each queue's notify, its interrupt, and where its thread is born.
pub struct Activation {
    pub mem: Arc<GuestMemory>,
    pub queues: Vec<Queue>,
    pub queue_evts: Vec<Arc<EventFd>>,
    pub interrupt: Interrupt,
    pub spawner: Spawner,
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// Feature bits offered (VIRTIO_F_VERSION_1 is required and added by the transport).
    fn features(&self) -> u64;
    /// Maximum size of each queue (their count is the device's queue count).
    fn queue_max_sizes(&self) -> Vec<u16>;
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Start processing (the driver set DRIVER_OK): typically spawns a worker thread, which
    /// calls [`Interrupt::device_failed`] if it has to stop on bad driver input.
    fn activate(&mut self, act: Activation) -> Result<()>;
    /// Stop processing and forget queue state (driver reset, or VM teardown).
    fn reset(&mut self);
}

/// Copy at most this much per step between guest memory and a host file or socket, so a
/// guest-chosen length never sizes a host allocation.
pub const COPY_CHUNK: usize = 64 * 1024;

/// Copy a little-endian config struct's bytes at `offset` into `data` (short reads past the
/// end read as zero).
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = config.get(offset as usize + i).copied().unwrap_or(0);
    }
}

/// A device's worker thread and the eventfd that stops it.
pub struct DeviceWorker {
    stop: Arc<EventFd>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl DeviceWorker {
    /// Serve an activated device: run `body(act, stop)` on a new thread named `name`, confined
    /// to `role` before it reads anything the guest wrote. `body` must return soon after
    /// `stop` becomes readable; if it fails (bad driver input, a host I/O error) or the thread
    /// cannot be confined, the device is marked as needing a reset instead of taking the VMM
    /// down.
    ///
    /// Runs on the vCPU thread whose register write started the device: the thread itself
    /// comes from the VM's spawner, the stop eventfd is made here.
    pub fn spawn(
        name: &str,
        role: Role,
        act: Activation,
        body: impl FnOnce(Activation, &EventFd) -> Result<()> + Send + 'static,
    ) -> Result<DeviceWorker> {
        let stop = Arc::new(EventFd::new()?);
        let s = stop.clone();
        let spawner = act.spawner.clone();
        let handle = spawner.spawn(name, move || {
            let interrupt = act.interrupt.clone();
            if seccomp::confine(role).is_err() || body(act, &s).is_err() {
                interrupt.device_failed();
            }
        })?;
        Ok(DeviceWorker {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for DeviceWorker {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
