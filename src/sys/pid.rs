//! Processes by PID: sending signals, checking that a process exists, waiting for a child —
//! the one home of `kill(2)` and `waitpid(2)` in iii.

use std::io;

/// Send `signal` to `pid` (a negative `pid` names a process group, as kill(2) does).
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a process `pid` exists (one we may not signal, EPERM, still exists).
pub fn exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match kill(pid, 0) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() != Some(libc::ESRCH),
    }
}

/// This process's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
}

impl Status {
    /// Decode a `waitpid` status word.
    pub fn from_wait_status(status: libc::c_int) -> Status {
        if libc::WIFSIGNALED(status) {
            Status::Signaled(libc::WTERMSIG(status))
        } else {
            Status::Exited(libc::WEXITSTATUS(status))
        }
    }
}

/// `waitpid(pid, flags)`, retried on EINTR: `Ok(None)` when WNOHANG found nothing ready.
fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<(libc::pid_t, Status)>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes into our local `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r > 0 {
            return Ok(Some((r, Status::from_wait_status(status))));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Block until child `pid` exits.
pub fn wait(pid: libc::pid_t) -> io::Result<Status> {
    match waitpid(pid, 0)? {
        Some((_, s)) => Ok(s),
        None => Err(io::Error::other("waitpid returned no child")),
    }
}

/// Reap child `pid` if it has exited, without blocking.
pub fn try_wait(pid: libc::pid_t) -> io::Result<Option<Status>> {
    Ok(waitpid(pid, libc::WNOHANG)?.map(|(_, s)| s))
}

/// Reap any exited child without blocking: `Some((pid, status))`, or `None` when none is ready
/// (or there are no children).
pub fn reap_any() -> Option<(libc::pid_t, Status)> {
    waitpid(-1, libc::WNOHANG).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_exists_and_a_reaped_child_does_not() {
        assert!(exists(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(!exists(pid));
        assert!(!exists(0) && !exists(-1));
        assert_eq!(kill(pid, 0).unwrap_err().raw_os_error(), Some(libc::ESRCH));
    }

    #[test]
    // These children are reaped by `wait`, not by std's `Child::wait`.
    #[allow(clippy::zombie_processes)]
    fn waiting_reports_codes_and_signals() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        assert_eq!(wait(child.id() as i32).unwrap(), Status::Exited(3));
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert_eq!(try_wait(pid).unwrap(), None);
        kill(pid, libc::SIGKILL).unwrap();
        assert_eq!(wait(pid).unwrap(), Status::Signaled(libc::SIGKILL));
        assert!(wait(pid).is_err(), "reaped once");
    }
}
