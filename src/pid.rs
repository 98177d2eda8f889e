//! Processes by PID: sending signals and checking that a process exists — the one home of
//! `kill(2)` in iii.

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
}
