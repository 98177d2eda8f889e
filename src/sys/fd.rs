//! File descriptors: duplicating above a floor, status and descriptor flags, pipes sized for
//! bulk data, and reads straight into a buffer's spare capacity.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A close-on-exec duplicate of `fd` numbered `min` or higher: a source the caller will
/// `dup2` onto low numbers (a child's stdio) can then never be one of the targets.
pub fn dup_above(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd or -1.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `fd` itself when it is above the stdio numbers, else a close-on-exec duplicate that is.
pub fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    dup_above(fd.as_fd(), 3)
}

/// A pipe (read end, write end), both close-on-exec and above the stdio numbers.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = std::io::pipe()?;
    Ok((above_stdio(r.into())?, above_stdio(w.into())?))
}

/// Grow a pipe's buffer to `bytes` (best effort: the limit is /proc/sys/fs/pipe-max-size):
/// fewer, larger reads and writes for bulk data.
pub fn set_pipe_size(fd: BorrowedFd<'_>, bytes: i32) {
    // SAFETY: F_SETPIPE_SZ on a valid fd; failure leaves the default size.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes) };
}

/// The file status flags (`O_NONBLOCK`, `O_APPEND`, …) of the open file description.
pub fn status_flags(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL takes no argument; a bad fd only yields EBADF.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl)
}

/// Replace the file status flags (see [`status_flags`]).
pub fn set_status_flags(fd: RawFd, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: F_SETFL with an integer argument; a bad fd only yields EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Turn `O_NONBLOCK` on or off.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    let fl = status_flags(fd)?;
    let want = if on {
        fl | libc::O_NONBLOCK
    } else {
        fl & !libc::O_NONBLOCK
    };
    set_status_flags(fd, want)
}

/// Mark `fd` close-on-exec.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD with an integer argument; a bad fd only yields EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Close every fd numbered `first` or above (fds this process inherited but must not hand on).
pub fn close_from(first: u32) {
    // SAFETY: close_range takes plain integers; it closes fds, which no Rust object here owns
    // (the caller's contract: it runs before anything opened them).
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
}

/// Bytes waiting to be read on a pipe, socket or pty master (an error counts as some).
pub fn bytes_available(fd: RawFd) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a valid pointer.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } != 0 {
        return 1;
    }
    n
}

/// `read(2)` of at most `max` bytes appended to `buf`, into its spare capacity (not zeroed
/// first: bulk data passes through here). Returns the bytes read; 0 is EOF.
pub fn read_append(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let old = buf.len();
    // SAFETY: after `reserve`, the spare capacity holds at least `max` bytes; read writes at
    // most `max` bytes there.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().add(old).cast(), max) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: read initialized exactly `n` bytes after the old length.
    unsafe { buf.set_len(old + n as usize) };
    Ok(n as usize)
}

/// `read(2)` on an fd the caller does not own as a Rust object (stdin, a borrowed pipe).
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reading into a buffer we own, at most its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `write(2)` on an fd the caller does not own as a Rust object (stdout, stderr).
pub fn write(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: writing from a slice we own, at most its length.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Point fd `target` (0–2: stdin, stdout, stderr) at `source`'s open file.
pub fn redirect(source: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 of a valid fd onto a number; it atomically replaces whatever was there,
    // which no Rust object owns (the standard streams are not closed by std).
    if unsafe { libc::dup2(source.as_raw_fd(), target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_are_above_stdio_and_reads_append() {
        let (r, w) = pipe().unwrap();
        assert!(r.as_raw_fd() > 2 && w.as_raw_fd() > 2);
        let high = dup_above(r.as_fd(), 100).unwrap();
        assert!(high.as_raw_fd() >= 100);
        set_pipe_size(w.as_fd(), 1 << 16);
        assert_eq!(write(w.as_raw_fd(), b"hello").unwrap(), 5);
        assert_eq!(bytes_available(r.as_raw_fd()), 5);
        let mut buf = b">".to_vec();
        assert_eq!(read_append(high.as_raw_fd(), &mut buf, 3).unwrap(), 3);
        assert_eq!(buf, b">hel");
        set_nonblocking(r.as_raw_fd(), true).unwrap();
        assert_ne!(status_flags(r.as_raw_fd()).unwrap() & libc::O_NONBLOCK, 0);
        let mut rest = [0u8; 8];
        assert_eq!(read(r.as_raw_fd(), &mut rest).unwrap(), 2);
        let e = read(r.as_raw_fd(), &mut rest).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(w);
        assert_eq!(read(r.as_raw_fd(), &mut rest).unwrap(), 0);
    }
}
