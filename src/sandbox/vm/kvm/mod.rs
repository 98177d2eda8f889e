//! The KVM layer: the only place in the VMM that issues ioctls. Each wrapper is small and typed;
//! everything above this module works with [`Kvm`], [`VmFd`], [`VcpuFd`] and [`EventFd`].

pub mod bindings;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use bindings::*;

use crate::{err, Result};

/// `ioctl` with an integer argument; returns the non-negative result or the OS error.
fn ioctl_val(fd: RawFd, req: u64, arg: u64) -> io::Result<i32> {
    // SAFETY: the requests passed here take an integer argument (or none), so the kernel does
    // not dereference `arg`; a bad fd or request only yields an error.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `ioctl` with a pointer to `T`, which the kernel reads and/or writes (`size_of::<T>()` is
/// encoded in `req` by [`bindings`], so the kernel never touches more than `*arg`).
fn ioctl_ptr<T>(fd: RawFd, req: u64, arg: *mut T) -> io::Result<i32> {
    // SAFETY: `arg` points to a live, properly sized `T` for the request (callers pass `&mut`
    // of a local or a buffer at least as large as the kernel's view of the struct).
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Turn an fd number returned by the kernel into an owned fd.
fn own(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful ioctl that creates a new descriptor, so we
    // are its only owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// An open `/dev/kvm`.
pub struct Kvm {
    file: File,
}

impl Kvm {
    /// Open the KVM device and check its API version.
    pub fn open(path: &Path) -> Result<Kvm> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    err!(
                        "{} not found: KVM is not available on this host",
                        path.display()
                    )
                }
                io::ErrorKind::PermissionDenied => err!(
                    "permission denied opening {} (need read/write access, e.g. the kvm group)",
                    path.display()
                ),
                _ => err!("opening {}: {e}", path.display()),
            })?;
        let version = ioctl_val(file.as_raw_fd(), KVM_GET_API_VERSION, 0)
            .map_err(|e| err!("{} is not a KVM device: {e}", path.display()))?;
        if version != KVM_API_VERSION {
            return Err(err!(
                "{}: KVM API version {version}, need {KVM_API_VERSION}",
                path.display()
            ));
        }
        Ok(Kvm { file })
    }

    pub fn check_extension(&self, cap: u64) -> bool {
        ioctl_val(self.file.as_raw_fd(), KVM_CHECK_EXTENSION, cap).is_ok_and(|v| v > 0)
    }

    /// Size of the shared `kvm_run` area each vCPU fd maps.
    pub fn vcpu_mmap_size(&self) -> Result<usize> {
        let n = ioctl_val(self.file.as_raw_fd(), KVM_GET_VCPU_MMAP_SIZE, 0)
            .map_err(|e| err!("KVM_GET_VCPU_MMAP_SIZE: {e}"))?;
        Ok(n as usize)
    }

    /// The CPUID leaves KVM can present to a guest on this host.
    pub fn supported_cpuid(&self) -> Result<Vec<KvmCpuidEntry2>> {
        const MAX: usize = 256;
        // The kernel reads `nent` as capacity and writes back the count: header then entries.
        let mut buf = CpuidBuf {
            header: KvmCpuid2Header {
                nent: MAX as u32,
                padding: 0,
            },
            entries: [KvmCpuidEntry2::default(); MAX],
        };
        ioctl_ptr(self.file.as_raw_fd(), KVM_GET_SUPPORTED_CPUID, &mut buf)
            .map_err(|e| err!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
        Ok(buf.entries[..buf.header.nent as usize].to_vec())
    }

    /// Create a VM (its own fd; the VM lives as long as the fd and its vCPU fds).
    pub fn create_vm(&self) -> Result<VmFd> {
        let fd = ioctl_val(self.file.as_raw_fd(), KVM_CREATE_VM, 0)
            .map_err(|e| err!("KVM_CREATE_VM: {e}"))?;
        Ok(VmFd { fd: own(fd) })
    }
}

#[repr(C)]
struct CpuidBuf<const N: usize> {
    header: KvmCpuid2Header,
    entries: [KvmCpuidEntry2; N],
}

/// A VM fd: memory slots, interrupt controller, eventfd wiring, vCPU creation.
pub struct VmFd {
    fd: OwnedFd,
}

impl VmFd {
    /// Map `size` bytes of host memory at `host_addr` into the guest at `guest_addr`.
    ///
    /// # Safety
    /// `host_addr..host_addr+size` must stay mapped for as long as the VM fd exists (the guest
    /// reads and writes it behind Rust's back).
    pub unsafe fn set_user_memory_region(
        &self,
        slot: u32,
        guest_addr: u64,
        size: u64,
        host_addr: u64,
    ) -> Result<()> {
        let mut region = KvmUserspaceMemoryRegion {
            slot,
            flags: 0,
            guest_phys_addr: guest_addr,
            memory_size: size,
            userspace_addr: host_addr,
        };
        ioctl_ptr(self.fd.as_raw_fd(), KVM_SET_USER_MEMORY_REGION, &mut region)
            .map_err(|e| err!("KVM_SET_USER_MEMORY_REGION slot {slot} at {guest_addr:#x}: {e}"))?;
        Ok(())
    }

    /// Where KVM may put the three pages of its real-mode TSS (Intel VMX needs it).
    pub fn set_tss_addr(&self, addr: u64) -> Result<()> {
        ioctl_val(self.fd.as_raw_fd(), KVM_SET_TSS_ADDR, addr)
            .map_err(|e| err!("KVM_SET_TSS_ADDR: {e}"))?;
        Ok(())
    }

    pub fn set_identity_map_addr(&self, addr: u64) -> Result<()> {
        let mut a = addr;
        ioctl_ptr(self.fd.as_raw_fd(), KVM_SET_IDENTITY_MAP_ADDR, &mut a)
            .map_err(|e| err!("KVM_SET_IDENTITY_MAP_ADDR: {e}"))?;
        Ok(())
    }

    /// In-kernel PIC + IOAPIC + local APICs.
    pub fn create_irqchip(&self) -> Result<()> {
        ioctl_val(self.fd.as_raw_fd(), KVM_CREATE_IRQCHIP, 0)
            .map_err(|e| err!("KVM_CREATE_IRQCHIP: {e}"))?;
        Ok(())
    }

    /// In-kernel i8254 timer (Linux calibrates against it).
    pub fn create_pit2(&self) -> Result<()> {
        let mut cfg = KvmPitConfig {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        ioctl_ptr(self.fd.as_raw_fd(), KVM_CREATE_PIT2, &mut cfg)
            .map_err(|e| err!("KVM_CREATE_PIT2: {e}"))?;
        Ok(())
    }

    /// Signalling `evt` raises interrupt line `gsi` (edge) without a VM exit.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()> {
        let mut irqfd = KvmIrqfd {
            fd: evt.as_raw_fd() as u32,
            gsi,
            ..Default::default()
        };
        ioctl_ptr(self.fd.as_raw_fd(), KVM_IRQFD, &mut irqfd)
            .map_err(|e| err!("KVM_IRQFD gsi {gsi}: {e}"))?;
        Ok(())
    }

    /// A guest write of `datamatch` (`len` bytes) to MMIO `addr` signals `evt` in the kernel,
    /// with no exit to this process.
    pub fn register_ioeventfd(
        &self,
        evt: &EventFd,
        addr: u64,
        len: u32,
        datamatch: u64,
    ) -> Result<()> {
        let mut ioev = KvmIoeventfd {
            datamatch,
            addr,
            len,
            fd: evt.as_raw_fd(),
            flags: KVM_IOEVENTFD_FLAG_DATAMATCH,
            pad: [0; 36],
        };
        ioctl_ptr(self.fd.as_raw_fd(), KVM_IOEVENTFD, &mut ioev)
            .map_err(|e| err!("KVM_IOEVENTFD at {addr:#x}: {e}"))?;
        Ok(())
    }

    pub fn create_vcpu(&self, id: u32, mmap_size: usize) -> Result<VcpuFd> {
        let fd = ioctl_val(self.fd.as_raw_fd(), KVM_CREATE_VCPU, id as u64)
            .map_err(|e| err!("KVM_CREATE_VCPU {id}: {e}"))?;
        let fd = own(fd);
        // SAFETY: mapping the vCPU fd's shared run area, of the size KVM reported; the result is
        // checked, and unmapped exactly once in `RunArea::drop`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mmap_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(err!(
                "mapping kvm_run of vCPU {id}: {}",
                io::Error::last_os_error()
            ));
        }
        Ok(VcpuFd {
            run: RunArea {
                ptr: ptr.cast(),
                size: mmap_size,
            },
            fd,
            id,
        })
    }
}

/// The `kvm_run` page shared with the kernel for one vCPU.
struct RunArea {
    ptr: *mut u8,
    size: usize,
}

// SAFETY: the area belongs to one vCPU fd, used by one thread at a time (`VcpuFd` is not
// `Sync`); only the immediate-exit byte is written from another thread, via `VcpuKicker`.
unsafe impl Send for RunArea {}

impl Drop for RunArea {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`size` are exactly what mmap returned in `create_vcpu`; unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.size) };
    }
}

/// Why `KVM_RUN` returned.
#[derive(Debug)]
pub enum VcpuExit<'a> {
    /// `out` to `port`; `data` is `size * count` bytes (string I/O repeats `count` times).
    IoOut {
        port: u16,
        size: usize,
        data: &'a [u8],
    },
    /// `in` from `port`: fill `data` (`size * count` bytes).
    IoIn {
        port: u16,
        size: usize,
        data: &'a mut [u8],
    },
    MmioRead {
        addr: u64,
        data: &'a mut [u8],
    },
    MmioWrite {
        addr: u64,
        data: &'a [u8],
    },
    Hlt,
    /// Triple fault or similar: the guest CPU cannot continue.
    Shutdown,
    FailEntry(u64),
    InternalError {
        suberror: u32,
    },
    SystemEvent {
        kind: u32,
    },
    /// Interrupted by a signal (or `immediate_exit`) before or during guest execution.
    Interrupted,
    Other(u32),
}

/// A vCPU fd and its run area.
pub struct VcpuFd {
    run: RunArea,
    fd: OwnedFd,
    id: u32,
}

impl VcpuFd {
    pub fn id(&self) -> u32 {
        self.id
    }

    fn get<T: Default>(&self, req: u64, what: &str) -> Result<T> {
        let mut v = T::default();
        ioctl_ptr(self.fd.as_raw_fd(), req, &mut v)
            .map_err(|e| err!("{what} on vCPU {}: {e}", self.id))?;
        Ok(v)
    }

    fn set<T: Copy>(&self, req: u64, v: &T, what: &str) -> Result<()> {
        let mut copy = *v;
        ioctl_ptr(self.fd.as_raw_fd(), req, &mut copy)
            .map_err(|e| err!("{what} on vCPU {}: {e}", self.id))?;
        Ok(())
    }

    pub fn get_regs(&self) -> Result<KvmRegs> {
        self.get(KVM_GET_REGS, "KVM_GET_REGS")
    }
    pub fn set_regs(&self, regs: &KvmRegs) -> Result<()> {
        self.set(KVM_SET_REGS, regs, "KVM_SET_REGS")
    }
    pub fn get_sregs(&self) -> Result<KvmSregs> {
        self.get(KVM_GET_SREGS, "KVM_GET_SREGS")
    }
    pub fn set_sregs(&self, sregs: &KvmSregs) -> Result<()> {
        self.set(KVM_SET_SREGS, sregs, "KVM_SET_SREGS")
    }
    pub fn set_fpu(&self, fpu: &KvmFpu) -> Result<()> {
        self.set(KVM_SET_FPU, fpu, "KVM_SET_FPU")
    }
    pub fn set_mp_state(&self, state: u32) -> Result<()> {
        self.set(KVM_SET_MP_STATE, &state, "KVM_SET_MP_STATE")
    }

    pub fn set_cpuid(&self, entries: &[KvmCpuidEntry2]) -> Result<()> {
        const MAX: usize = 256;
        if entries.len() > MAX {
            return Err(err!("too many CPUID entries ({})", entries.len()));
        }
        let mut buf = CpuidBuf {
            header: KvmCpuid2Header {
                nent: entries.len() as u32,
                padding: 0,
            },
            entries: [KvmCpuidEntry2::default(); MAX],
        };
        buf.entries[..entries.len()].copy_from_slice(entries);
        ioctl_ptr(self.fd.as_raw_fd(), KVM_SET_CPUID2, &mut buf)
            .map_err(|e| err!("KVM_SET_CPUID2 on vCPU {}: {e}", self.id))?;
        Ok(())
    }

    /// A handle another thread uses to make this vCPU's `KVM_RUN` return promptly.
    pub fn kicker(&self) -> VcpuKicker {
        VcpuKicker {
            immediate_exit: self.run.ptr as usize + run_offsets::IMMEDIATE_EXIT,
        }
    }

    /// Enter the guest until the next exit this process must handle.
    pub fn run(&mut self) -> Result<VcpuExit<'_>> {
        if let Err(e) = ioctl_val(self.fd.as_raw_fd(), KVM_RUN, 0) {
            return match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) => Ok(VcpuExit::Interrupted),
                _ => Err(err!("KVM_RUN on vCPU {}: {e}", self.id)),
            };
        }
        let base = self.run.ptr;
        let rd_u32 = |off: usize| {
            // SAFETY: offsets come from `struct kvm_run` in <linux/kvm.h> and lie within the
            // first page of the run area; KVM_RUN has returned, so the kernel is not writing it.
            unsafe { std::ptr::read_unaligned(base.add(off) as *const u32) }
        };
        let rd_u64 = |off: usize| {
            // SAFETY: as for `rd_u32`.
            unsafe { std::ptr::read_unaligned(base.add(off) as *const u64) }
        };
        let u = run_offsets::UNION;
        let reason = rd_u32(run_offsets::EXIT_REASON);
        Ok(match reason {
            KVM_EXIT_IO => {
                // SAFETY: one-byte fields of `kvm_run.io`, inside the run area (see `rd_u32`).
                let (direction, size) = unsafe { (*base.add(u), *base.add(u + 1) as usize) };
                // SAFETY: `kvm_run.io.port`, inside the run area (see `rd_u32`).
                let port = unsafe { std::ptr::read_unaligned(base.add(u + 2) as *const u16) };
                let count = rd_u32(u + 4) as usize;
                let data_offset = rd_u64(u + 8) as usize;
                let len = size * count;
                if data_offset + len > self.run.size {
                    return Err(err!("KVM_EXIT_IO data outside kvm_run on vCPU {}", self.id));
                }
                // SAFETY: the data bytes lie inside the run area (checked just above) and are
                // borrowed for as long as `self` is mutably borrowed.
                let data = unsafe { std::slice::from_raw_parts_mut(base.add(data_offset), len) };
                if direction == KVM_EXIT_IO_IN {
                    VcpuExit::IoIn { port, size, data }
                } else {
                    VcpuExit::IoOut { port, size, data }
                }
            }
            KVM_EXIT_MMIO => {
                let addr = rd_u64(u);
                let len = (rd_u32(u + 16) as usize).min(8);
                // SAFETY: `kvm_run.mmio.is_write`, inside the run area (see `rd_u32`).
                let is_write = unsafe { *base.add(u + 20) } != 0;
                // SAFETY: `data[8]` lies inside the run area; borrowed with `self`.
                let data = unsafe { std::slice::from_raw_parts_mut(base.add(u + 8), len) };
                if is_write {
                    VcpuExit::MmioWrite { addr, data }
                } else {
                    VcpuExit::MmioRead { addr, data }
                }
            }
            KVM_EXIT_HLT => VcpuExit::Hlt,
            KVM_EXIT_SHUTDOWN => VcpuExit::Shutdown,
            KVM_EXIT_FAIL_ENTRY => VcpuExit::FailEntry(rd_u64(u)),
            KVM_EXIT_INTERNAL_ERROR => VcpuExit::InternalError {
                suberror: rd_u32(u),
            },
            KVM_EXIT_SYSTEM_EVENT => VcpuExit::SystemEvent { kind: rd_u32(u) },
            KVM_EXIT_INTR => VcpuExit::Interrupted,
            KVM_EXIT_UNKNOWN | KVM_EXIT_EXCEPTION => VcpuExit::Other(reason),
            other => VcpuExit::Other(other),
        })
    }
}

/// Sets a vCPU's `immediate_exit` byte from another thread. Paired with a signal to the vCPU
/// thread (see `vcpu`), this makes `KVM_RUN` return whether the thread is inside it or about to
/// enter it.
#[derive(Clone, Copy)]
pub struct VcpuKicker {
    immediate_exit: usize,
}

impl VcpuKicker {
    /// # Safety
    /// The vCPU's run area must still be mapped (the owner joins vCPU threads before dropping
    /// their `VcpuFd`s).
    pub unsafe fn kick(&self) {
        // SAFETY: per the caller's contract the byte is mapped; a racy byte store is what the
        // kernel ABI expects for `immediate_exit`.
        unsafe { std::ptr::write_volatile(self.immediate_exit as *mut u8, 1) };
    }
}

/// A Linux eventfd: the doorbell between KVM (ioeventfd/irqfd) and device threads.
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> Result<EventFd> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(err!("eventfd: {}", io::Error::last_os_error()));
        }
        Ok(EventFd { fd: own(fd) })
    }

    pub fn write(&self, v: u64) -> Result<()> {
        let buf = v.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local buffer to our own fd.
        let r = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), 8) };
        if r != 8 {
            return Err(err!("eventfd write: {}", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Read and reset the counter; `None` when it was zero (non-blocking fd).
    pub fn read(&self) -> Option<u64> {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local buffer from our own fd.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        (r == 8).then(|| u64::from_ne_bytes(buf))
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
