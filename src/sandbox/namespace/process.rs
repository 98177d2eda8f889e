//! The few unsafe process primitives of the `namespace` backend: cloning init into fresh
//! namespaces (host side), and forking and exec'ing the worker (init side).
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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The control channel's fd number in init.
pub const INIT_CONTROL_FD: RawFd = 3;
/// The exec door's fd number in init (see `crate::exec::door`).
pub const INIT_EXEC_DOOR_FD: RawFd = 4;

/// The first argument that makes the iii binary run as init.
pub const INIT_ARG: &str = "__iii_init";

/// Duplicate `fd` to a number ≥ 10, close-on-exec, so that the child's `dup2` onto 0–4 can
/// never overwrite a source it still needs.
fn dup_high(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd we own or -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

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
    let control = dup_high(fds.control.as_raw_fd())?;
    let door = dup_high(fds.exec_door.as_raw_fd())?;
    let stdin = dup_high(fds.stdin.as_raw_fd())?;
    let stdout = dup_high(fds.stdout.as_raw_fd())?;
    let stderr = dup_high(fds.stderr.as_raw_fd())?;
    // The binary too: at a low number it could be one of the dup2 targets below.
    let exe_high = dup_high(exe.as_raw_fd())?;
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

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
}

/// Decode a `waitpid` status word.
pub fn decode_status(status: libc::c_int) -> Status {
    if libc::WIFSIGNALED(status) {
        Status::Signaled(libc::WTERMSIG(status))
    } else {
        Status::Exited(libc::WEXITSTATUS(status))
    }
}

/// Block until child `pid` exits (retrying on EINTR).
pub fn wait_pid(pid: libc::pid_t) -> io::Result<Status> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes into our local `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(decode_status(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reap any exited child without blocking: `Some((pid, status))`, or `None` when none is ready.
pub fn reap_any() -> Option<(libc::pid_t, Status)> {
    let mut status = 0;
    // SAFETY: waitpid writes into our local `status`.
    let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (r > 0).then(|| (r, decode_status(status)))
}

pub use crate::pid::kill;
