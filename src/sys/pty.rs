//! Terminals: terminal settings (raw mode), window sizes, and opening a pseudo-terminal pair
//! from a given `ptmx` (a sandbox's own devpts instance).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A terminal window size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// The window size of the terminal on `fd`, if it is one and reports a size.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<WinSize> {
    // SAFETY: winsize is plain data.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the valid pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some(WinSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Set the window size of the terminal (or pty master) on `fd`; the kernel sends SIGWINCH to
/// its foreground process group.
pub fn set_window_size(fd: BorrowedFd<'_>, size: WinSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize through the valid pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A terminal's settings, as `tcgetattr` reads them.
#[derive(Clone, Copy)]
pub struct Termios(libc::termios);

impl Termios {
    /// The settings of the terminal on `fd`.
    pub fn get(fd: RawFd) -> io::Result<Termios> {
        // SAFETY: termios is plain data; tcgetattr fills it completely on success.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid, writable termios.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Termios(t))
    }

    /// Apply these settings to the terminal on `fd` at once.
    pub fn set(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: `self.0` is a valid termios (read by tcgetattr, maybe edited by us).
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &self.0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// These settings in raw mode: no echo, no line editing, no signal keys, no byte
    /// translation either way.
    pub fn raw(mut self) -> Termios {
        // SAFETY: cfmakeraw edits the valid termios in place.
        unsafe { libc::cfmakeraw(&mut self.0) };
        self
    }

    /// These settings without output post-processing (`\n` stays `\n`, not `\r\n`).
    pub fn without_output_processing(mut self) -> Termios {
        self.0.c_oflag &= !libc::OPOST;
        self
    }

    /// The local-mode flags (`ECHO`, `ICANON`, `ISIG`, …).
    pub fn local_flags(&self) -> libc::tcflag_t {
        self.0.c_lflag
    }
}

/// Wait until everything written to the terminal on `fd` has been sent.
pub fn drain_output(fd: RawFd) {
    // SAFETY: tcdrain on an fd; a bad fd only yields an error, which changes nothing here.
    unsafe { libc::tcdrain(fd) };
}

/// Open a pseudo-terminal pair from the multiplexer `ptmx`: (master, slave), both
/// close-on-exec and above the stdio numbers, the slave sized `size`. The slave is opened
/// from the master itself (TIOCGPTPEER), whatever path its devpts is mounted at.
pub fn open_pair(ptmx: &str, size: WinSize) -> io::Result<(OwnedFd, OwnedFd)> {
    let path = CString::new(ptmx).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: a valid C string path; the returned fd is checked.
    let m = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `m` is a fresh fd we own.
    let master = crate::sys::fd::above_stdio(unsafe { OwnedFd::from_raw_fd(m) })?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int through a valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd, checked below.
    let s = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` is a fresh fd we own.
    let slave = crate::sys::fd::above_stdio(unsafe { OwnedFd::from_raw_fd(s) })?;
    set_window_size(master.as_fd(), size)?;
    Ok((master, slave))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_from_ptmx_is_a_terminal_of_the_given_size_and_goes_raw() {
        let (master, slave) = open_pair(
            "/dev/ptmx",
            WinSize {
                rows: 33,
                cols: 101,
            },
        )
        .unwrap();
        assert_eq!(
            window_size(slave.as_fd()),
            Some(WinSize {
                rows: 33,
                cols: 101
            })
        );
        let cooked = Termios::get(slave.as_raw_fd()).unwrap();
        assert_ne!(cooked.local_flags() & libc::ECHO, 0);
        cooked.raw().set(slave.as_raw_fd()).unwrap();
        let now = Termios::get(slave.as_raw_fd()).unwrap().local_flags();
        assert_eq!(now & (libc::ECHO | libc::ICANON | libc::ISIG), 0);
        set_window_size(master.as_fd(), WinSize { rows: 5, cols: 6 }).unwrap();
        assert_eq!(
            window_size(slave.as_fd()),
            Some(WinSize { rows: 5, cols: 6 })
        );
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(Termios::get(null.as_raw_fd()).is_err());
        assert_eq!(window_size(null.as_fd()), None);
    }
}
