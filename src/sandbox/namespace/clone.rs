//! Cloning init into fresh namespaces: the one unsafe process primitive of the `namespace`
//! backend (the worker itself is started by init: see `init::spawn`).
//!
//! Why init is a re-exec of the iii binary rather than Rust code running after `clone`: the
//! host process (the engine's monitor) is multi-threaded, and after a raw `clone` the child may
//! only make async-signal-safe calls — another thread may have held the allocator's lock at the
//! moment of the clone. Init needs much more than that (an event loop, JSON, allocation), so
//! the child does only `prctl`, `dup2` and `execveat` on things prepared before the clone, and
//! init starts as a fresh single-threaded process with a clean heap. The same init binary is
//! what a `vm` guest runs as PID 1.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::protocol::init::{INIT_ARG, INIT_CONTROL_FD, INIT_EXEC_DOOR_FD};
use crate::sys::fd::dup_above;

/// The fds init starts with: the control channel as fd 3, the exec door as fd 4, and its
/// stdio.
pub struct InitFds<'a> {
    pub control: &'a OwnedFd,
    pub exec_door: &'a OwnedFd,
    pub stdin: &'a OwnedFd,
    pub stdout: &'a OwnedFd,
    pub stderr: &'a OwnedFd,
}

/// Clone a child into new namespaces (`flags`: CLONE_NEW*) that immediately execs `exe` as
/// init. Returns the child's host PID. The child gets SIGKILL when the calling *thread* exits
/// (PR_SET_PDEATHSIG follows the thread that cloned it).
pub fn clone_init(exe: &File, flags: libc::c_int, fds: InitFds<'_>) -> io::Result<libc::pid_t> {
    // Everything the child touches is prepared here, before the clone.
    // Each source at a number ≥ 10, so the child's dup2 onto 0–4 never overwrites one it
    // still needs; the binary too.
    let high = |fd: &OwnedFd| dup_above(fd.as_fd(), 10);
    let control = high(fds.control)?;
    let door = high(fds.exec_door)?;
    let stdin = high(fds.stdin)?;
    let stdout = high(fds.stdout)?;
    let stderr = high(fds.stderr)?;
    let exe_high = dup_above(exe.as_fd(), 10)?;
    let exe_fd = exe_high.as_raw_fd();
    let arg0 = CString::new("iii-init").expect("no NUL");
    let arg1 = CString::new(INIT_ARG).expect("no NUL");
    let argv: [*const libc::c_char; 3] = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let empty = CString::new("").expect("no NUL");
    let (c, d, i, o, e) = (
        control.as_raw_fd(),
        door.as_raw_fd(),
        stdin.as_raw_fd(),
        stdout.as_raw_fd(),
        stderr.as_raw_fd(),
    );

    // SAFETY: a fork-like clone (no new stack: the child continues on a copy of ours). The
    // child only makes raw syscalls on values prepared above, then execs or _exits; it never
    // returns into Rust code that could touch locks held by other threads at clone time.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: child side, async-signal-safe syscalls only (see above).
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            // In a new PID namespace getppid() is 0, so the usual "did the parent die before
            // prctl" check cannot work here; init instead treats EOF on the control channel
            // (the monitor's end closes when it dies) as the monitor's death.
            if libc::dup2(c, INIT_CONTROL_FD) < 0
                || libc::dup2(d, INIT_EXEC_DOOR_FD) < 0
                || libc::dup2(i, 0) < 0
                || libc::dup2(o, 1) < 0
                || libc::dup2(e, 2) < 0
            {
                libc::_exit(126);
            }
            libc::syscall(
                libc::SYS_execveat,
                exe_fd,
                empty.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            // Say why on the worker's stderr (its log): the host only sees init vanish.
            let msg = b"iii: cannot execute init\n";
            libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
            libc::_exit(127);
        }
    }
    Ok(pid as libc::pid_t)
}
