//! Advisory whole-file locks (`flock(2)`, through std's `File::lock`) that die with their
//! holder: the kernel releases them when the process ends, even by `kill -9`, so iii never
//! finds a stale lock. They guard one engine per project, one monitor per worker, one
//! install per image in the store, and each edit of a project's config.yaml.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{err, Context, Result};

/// A held lock; released when dropped or when the process ends.
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Block until the lock on `path` (created 0600 if missing) is ours.
    pub fn acquire(path: &Path) -> Result<FileLock> {
        let file = open(path)?;
        loop {
            match file.lock() {
                Ok(()) => return Ok(FileLock { file }),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(err!("locking {}: {e}", path.display())),
            }
        }
    }

    /// Block until the lock on the directory `dir` itself is ours: for guarding a file in a
    /// directory iii does not own (config.yaml in the user's project) without adding a lock
    /// file beside it.
    pub fn acquire_dir(dir: &Path) -> Result<FileLock> {
        let file = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
        loop {
            match file.lock() {
                Ok(()) => return Ok(FileLock { file }),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(err!("locking {}: {e}", dir.display())),
            }
        }
    }

    /// The lock on `path` if nobody holds it, else `None`.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(err!("locking {}: {e}", path.display())),
        }
    }

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

fn open(path: &Path) -> Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening lock {}", path.display()))
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
        let mut a = FileLock::try_acquire(&p).unwrap().expect("first lock");
        a.write_pid().unwrap();
        assert!(FileLock::try_acquire(&p).unwrap().is_none());
        assert_eq!(holder_pid(&p), Some(std::process::id()));
        drop(a);
        let b = FileLock::acquire(&p).unwrap();
        assert!(FileLock::try_acquire(&p).unwrap().is_none());
        drop(b);
        std::fs::remove_file(&p).unwrap();
    }
}
