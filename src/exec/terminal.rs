//! The local terminal in TTY mode: raw mode that is restored on every exit path (window
//! sizes are [`crate::sys::pty`]'s).
//!
//! [`RawMode`] restores the saved settings when dropped (normal return, `?` errors, unwinding).
//! The saved settings are also kept in a process-wide slot that a panic hook restores from, so
//! a panic that aborts instead of unwinding still leaves a usable terminal; fatal signals
//! (SIGTERM, SIGHUP, SIGQUIT) reach the client's event loop through a self-pipe and end it
//! through the same drop.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::{Mutex, Once};

use crate::sys::pty::Termios;
use crate::{err, Result};

/// Settings to put back: the terminal's fd and its settings before raw mode.
static SAVED: Mutex<Option<(RawFd, Termios)>> = Mutex::new(None);
static PANIC_HOOK: Once = Once::new();

fn restore_saved() {
    // A poisoned lock still holds the settings; restoring them matters more than the poison.
    let mut slot = SAVED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((fd, termios)) = slot.take() {
        // A stale fd makes this fail harmlessly.
        let _ = termios.set(fd);
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
        let saved = Termios::get(raw_fd).map_err(|e| err!("reading terminal settings: {e}"))?;
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_saved();
                previous(info);
            }));
        });
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some((raw_fd, saved));
        if let Err(e) = saved.raw().set(raw_fd) {
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
        Termios::get(fd.as_raw_fd()).unwrap().local_flags()
    }

    #[test]
    fn raw_mode_is_restored_on_drop() {
        let (_master, slave) = openpty();
        let before = lflag(slave.as_fd());
        assert_ne!(before & libc::ECHO, 0);
        {
            let _raw = RawMode::enable(slave.as_fd()).unwrap();
            let during = lflag(slave.as_fd());
            assert_eq!(during & (libc::ECHO | libc::ICANON | libc::ISIG), 0);
        }
        assert_eq!(lflag(slave.as_fd()), before);
    }

    #[test]
    fn raw_mode_on_a_non_terminal_is_an_error() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(RawMode::enable(f.as_fd()).is_err());
    }
}
