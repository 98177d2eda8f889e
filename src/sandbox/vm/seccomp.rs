//! What each of the VMM's threads may ask of the host kernel, enforced with seccomp as
//! Firecracker does for its own: the vCPU and device threads are the code that reads
//! guest-controlled data (exit data, virtqueues, descriptors), so each installs an allow-list
//! of the calls its job needs before it touches any, and any other call kills the whole VMM
//! process (`SECCOMP_RET_KILL_PROCESS`) — a guest that found a bug in a device could then
//! crash its own monitor, never open a file, a socket or a process on the host.
//!
//! None of these threads opens files, creates sockets or spawns threads: descriptors are
//! opened before the VM runs (a device's stop eventfd aside), and device threads are born on an unconfined spawner thread
//! ([`super::spawner`]) that reads no guest data. The lists below are what the threads do
//! under glibc and musl: memory management and futexes (allocation, locks, thread exit), their
//! own I/O on descriptors they were handed, and for a vCPU the few KVM ioctls of its loop.

use std::io;

use super::kvm::bindings::{KVM_GET_REGS, KVM_RUN, KVM_SET_MP_STATE};
use crate::harden::seccomp::{self, Allow};

/// A confined thread's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs one vCPU: `KVM_RUN` and the device bus (serial output, mmio registers).
    Vcpu,
    /// Serves a virtio-blk queue: positioned reads and writes on its disk file.
    BlockDevice,
    /// Serves the virtio-console queues: reads and writes on its socket.
    ConsoleDevice,
    /// Serves the virtio-net queues: frames to and from its datagram socket.
    NetDevice,
}

/// Every confined thread: memory, locks, signals (the vCPU kick), time, thread exit, and
/// reads/writes/polls/closes of the descriptors it holds.
const COMMON: &[Allow] = &[
    Allow::call(libc::SYS_read),
    Allow::call(libc::SYS_write),
    Allow::call(libc::SYS_writev),
    Allow::call(libc::SYS_close),
    // Descriptor flags: Rust checks a descriptor is open before closing it (F_GETFD, debug
    // builds), duplicating one is F_DUPFD_CLOEXEC — which musl follows with F_SETFD on the new
    // descriptor (for kernels that ignored the flag): found when the static build's vCPU died
    // activating the console (audit: syscall=72).
    Allow::with_arg(
        libc::SYS_fcntl,
        1,
        &[
            libc::F_GETFD as u32,
            libc::F_SETFD as u32,
            libc::F_GETFL as u32,
            libc::F_SETFL as u32,
            libc::F_DUPFD_CLOEXEC as u32,
        ],
    ),
    Allow::call(libc::SYS_poll),
    Allow::call(libc::SYS_ppoll),
    Allow::call(libc::SYS_futex),
    Allow::call(libc::SYS_mmap),
    Allow::call(libc::SYS_munmap),
    Allow::call(libc::SYS_mremap),
    Allow::call(libc::SYS_madvise),
    Allow::call(libc::SYS_mprotect),
    Allow::call(libc::SYS_brk),
    Allow::call(libc::SYS_rt_sigprocmask),
    Allow::call(libc::SYS_rt_sigreturn),
    Allow::call(libc::SYS_sigaltstack),
    Allow::call(libc::SYS_sched_yield),
    Allow::call(libc::SYS_gettid),
    Allow::call(libc::SYS_getpid),
    Allow::call(libc::SYS_clock_gettime),
    Allow::call(libc::SYS_clock_nanosleep),
    Allow::call(libc::SYS_nanosleep),
    Allow::call(libc::SYS_restart_syscall),
    Allow::call(libc::SYS_exit),
    Allow::call(libc::SYS_exit_group),
];

/// `FIONBIO`: the console's activation (on the vCPU thread) makes its stream non-blocking.
const FIONBIO: u32 = libc::FIONBIO as u32;

const VCPU: &[Allow] = &[
    Allow::with_arg(
        libc::SYS_ioctl,
        1,
        &[
            KVM_RUN as u32,
            KVM_GET_REGS as u32,
            KVM_SET_MP_STATE as u32,
            FIONBIO,
        ],
    ),
    // Activating a device makes its stop eventfd and duplicates the console stream
    // (F_DUPFD_CLOEXEC): descriptors that reach nothing outside the VMM.
    Allow::call(libc::SYS_eventfd2),
];

const BLOCK: &[Allow] = &[
    Allow::call(libc::SYS_pread64),
    Allow::call(libc::SYS_pwrite64),
    Allow::call(libc::SYS_preadv),
    Allow::call(libc::SYS_pwritev),
    Allow::call(libc::SYS_fdatasync),
    Allow::call(libc::SYS_fsync),
];

const CONSOLE: &[Allow] = &[
    Allow::call(libc::SYS_recvfrom),
    Allow::call(libc::SYS_sendto),
];

/// The filter program for `role`.
pub fn program(role: Role) -> Vec<libc::sock_filter> {
    let extra = match role {
        Role::Vcpu => VCPU,
        Role::BlockDevice => BLOCK,
        // Both move bytes between the guest and one host socket they were handed.
        Role::ConsoleDevice | Role::NetDevice => CONSOLE,
    };
    let rules: Vec<Allow> = COMMON.iter().chain(extra).copied().collect();
    seccomp::allow_list(&rules, libc::SECCOMP_RET_KILL_PROCESS)
}

/// Confine the calling thread to `role` for the rest of its life (and that of any thread it
/// would create). Sets no_new_privs on this thread first, which seccomp needs without
/// CAP_SYS_ADMIN; other threads of the process are unaffected.
pub fn confine(role: Role) -> io::Result<()> {
    keep_malloc_off_the_filesystem();
    seccomp::set_no_new_privs()?;
    seccomp::install(&program(role))
}

/// glibc's malloc, the first time it shrinks a thread arena's heap (a free that leaves a big
/// top chunk: a device thread freeing its frame buffers as it ends, say), opens
/// /proc/sys/vm/overcommit_memory — an `openat` the filter kills, taking the whole monitor
/// with it at the end of every VM with a NIC (found by the NIC tests; audit: syscall=257). A
/// trim threshold above the largest thread heap (64 MiB) means it never shrinks one that way;
/// heaps still go away whole, by munmap. musl's malloc opens nothing.
fn keep_malloc_off_the_filesystem() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a tuning parameter of the allocator; it is safe to call from
    // any thread at any time.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}
