//! Signals as file descriptors (`signalfd`), and a signal's disposition.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Block `signals` for the calling thread (and threads and children it creates later) and
/// return a non-blocking, close-on-exec signalfd that delivers them instead.
pub fn block_into_fd(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local, then sigprocmask/signalfd with it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Every signal waiting on a signalfd from [`block_into_fd`], in order.
pub fn drain(fd: RawFd) -> Vec<libc::c_int> {
    let mut out = Vec::new();
    loop {
        // SAFETY: signalfd_siginfo is plain data; read fills at most its size.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reading into the local struct of exactly `size` bytes.
        let n = unsafe { libc::read(fd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
        if n != size as isize {
            return out;
        }
        out.push(info.ssi_signo as libc::c_int);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_blocked_signal_arrives_on_the_fd() {
        // On a thread of its own: the mask stays there.
        std::thread::spawn(|| {
            let fd = block_into_fd(&[libc::SIGUSR2]).unwrap();
            assert!(drain(fd.as_raw_fd()).is_empty());
            // SAFETY: tgkill to this very thread, whose mask blocks the signal.
            unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    libc::getpid(),
                    libc::gettid(),
                    libc::SIGUSR2,
                )
            };
            assert_eq!(drain(fd.as_raw_fd()), [libc::SIGUSR2]);
        })
        .join()
        .unwrap();
    }
}
