//! Advisory file locks (`flock`) that die with their holder: one engine per project, one
//! monitor per worker. `kill -9` releases them, so a fresh `iii` never finds a stale lock.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::{Context, Result};

/// A held lock; released when dropped or when the process ends.
#[derive(Debug)]
pub struct Lock {
    file: File,
}

impl Lock {
    /// Record the holder's PID in the lock file (for the message a second holder gets).
    pub fn write_pid(&mut self) -> Result<()> {
        let pid = std::process::id().to_string();
        self.file
            .set_len(0)
            .and_then(|_| self.file.rewind())
            .and_then(|_| self.file.write_all(pid.as_bytes()))
            .context("writing the lock holder's pid")
    }
}

/// Take the exclusive lock on `path` (created 0600 if missing) without waiting; `Ok(None)`
/// when another process holds it.
pub fn try_lock(path: &Path) -> Result<Option<Lock>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on an open descriptor has no memory-safety preconditions.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        return Err(crate::err!("locking {}: {e}", path.display()));
    }
    Ok(Some(Lock { file }))
}

/// The PID recorded in a lock file by its holder, if any.
pub fn holder_pid(path: &Path) -> Option<u32> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let p = std::env::temp_dir().join(format!("iii-lock-{}", std::process::id()));
        let mut a = try_lock(&p).unwrap().expect("first lock");
        a.write_pid().unwrap();
        assert!(try_lock(&p).unwrap().is_none());
        assert_eq!(holder_pid(&p), Some(std::process::id()));
        drop(a);
        assert!(try_lock(&p).unwrap().is_some());
        std::fs::remove_file(&p).unwrap();
    }
}
