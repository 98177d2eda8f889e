//! The few non-KVM syscalls the VMM needs, behind safe functions: `poll` for device threads and
//! the signal that kicks a vCPU thread out of `KVM_RUN`.

use std::io;
use std::os::fd::RawFd;
use std::sync::Once;

/// Wait until any of `fds` is readable (or hung up); returns one flag per fd. `timeout_ms` < 0
/// waits forever. EINTR counts as "nothing ready".
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` is a live, correctly sized array of pollfd for the duration of the call.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents != 0 && p.fd >= 0).collect())
}

/// Wait until `fd` is writable (true) or `stop` is readable (false).
pub fn wait_writable(fd: RawFd, stop: RawFd) -> io::Result<bool> {
    loop {
        let mut pfds = [
            libc::pollfd {
                fd: stop,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            },
        ];
        // SAFETY: `pfds` is a live array of two pollfd for the duration of the call.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if pfds[0].revents != 0 {
            return Ok(false);
        }
        if pfds[1].revents != 0 {
            return Ok(true);
        }
    }
}

/// The signal used to interrupt `KVM_RUN` in a vCPU thread.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int) {}

/// Install a handler for [`kick_signal`] that does nothing, so delivery interrupts the ioctl
/// (EINTR) instead of killing the process. Idempotent.
pub fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a valid handler address and an empty mask is a valid
        // argument; the handler is async-signal-safe (it does nothing). No SA_RESTART, so the
        // interrupted KVM_RUN returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = noop_handler as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

/// A thread's pthread handle, kept to signal it with [`kick_thread`].
#[derive(Clone, Copy)]
pub struct ThreadHandle(libc::pthread_t);

// SAFETY: a pthread_t is an opaque id (a pointer on musl, an integer on glibc) that iii only
// passes to pthread_kill; it carries no thread-local data, so moving or sharing it is sound.
unsafe impl Send for ThreadHandle {}
// SAFETY: as above; the handle is never dereferenced by iii.
unsafe impl Sync for ThreadHandle {}

/// The calling thread's pthread handle, for [`kick_thread`].
pub fn current_thread() -> ThreadHandle {
    // SAFETY: always safe to call.
    ThreadHandle(unsafe { libc::pthread_self() })
}

/// Send the kick signal to `thread`.
///
/// # Safety
/// `thread` must be a thread that has not been joined yet (its handle still valid).
pub unsafe fn kick_thread(thread: ThreadHandle) {
    // SAFETY: per the caller's contract the handle is valid; the signal has a no-op handler.
    unsafe { libc::pthread_kill(thread.0, kick_signal()) };
}
