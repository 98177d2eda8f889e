//! The local terminal in TTY mode: raw mode that is restored on every exit path, and window
//! sizes.
//!
//! [`RawMode`] restores the saved settings when dropped (normal return, `?` errors, unwinding).
//! The saved settings are also kept in a process-wide slot that a panic hook restores from, so
//! a panic that aborts instead of unwinding still leaves a usable terminal; fatal signals
//! (SIGTERM, SIGHUP, SIGQUIT) reach the client's event loop through a self-pipe and end it
//! through the same drop.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::{Mutex, Once};

use crate::{err, Result};

/// A terminal window size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// Settings to put back: the terminal's fd and its termios before raw mode.
static SAVED: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);
static PANIC_HOOK: Once = Once::new();

fn restore_saved() {
    // A poisoned lock still holds the settings; restoring them matters more than the poison.
    let mut slot = SAVED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((fd, termios)) = slot.take() {
        // SAFETY: `termios` is a valid termios read from this fd by tcgetattr; a stale fd
        // makes tcsetattr fail harmlessly.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &termios) };
    }
}

/// The terminal on `fd` in raw mode until dropped.
pub struct RawMode {
    _private: (),
}

impl RawMode {
    /// Put the terminal on `fd` into raw mode (no echo, no line editing, no signal keys, no
    /// output processing), remembering its settings.
    pub fn enable(fd: BorrowedFd<'_>) -> Result<RawMode> {
        let raw_fd = fd.as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it completely on success.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable termios.
        if unsafe { libc::tcgetattr(raw_fd, &mut saved) } != 0 {
            return Err(err!(
                "reading terminal settings: {}",
                std::io::Error::last_os_error()
            ));
        }
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_saved();
                previous(info);
            }));
        });
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some((raw_fd, saved));
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios derived from the terminal's own settings.
        if unsafe { libc::tcsetattr(raw_fd, libc::TCSANOW, &raw) } != 0 {
            let e = std::io::Error::last_os_error();
            restore_saved();
            return Err(err!("putting the terminal into raw mode: {e}"));
        }
        Ok(RawMode { _private: () })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_saved();
    }
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
pub fn set_window_size(fd: BorrowedFd<'_>, size: WinSize) -> Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize through the valid pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(err!(
            "setting the terminal size: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    fn openpty() -> (OwnedFd, OwnedFd) {
        let (mut m, mut s) = (-1, -1);
        // SAFETY: openpty writes two fds; the name, termios and winsize pointers may be null.
        let r = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both fds were just opened and are owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
    }

    fn lflag(fd: BorrowedFd<'_>) -> libc::tcflag_t {
        // SAFETY: plain data, filled by tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer.
        assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
        t.c_lflag
    }

    #[test]
    fn raw_mode_is_restored_on_drop_and_sizes_round_trip() {
        let (master, slave) = openpty();
        let before = lflag(slave.as_fd());
        assert_ne!(before & libc::ECHO, 0);
        {
            let _raw = RawMode::enable(slave.as_fd()).unwrap();
            let during = lflag(slave.as_fd());
            assert_eq!(during & (libc::ECHO | libc::ICANON | libc::ISIG), 0);
        }
        assert_eq!(lflag(slave.as_fd()), before);
        set_window_size(
            master.as_fd(),
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
    }

    #[test]
    fn raw_mode_on_a_non_terminal_is_an_error() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(RawMode::enable(f.as_fd()).is_err());
        assert_eq!(window_size(f.as_fd()), None);
    }
}
