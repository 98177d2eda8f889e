//! Exec commands' exits: init reaps every child as PID 1 and hands an exec command's status
//! to its session here; an owner that is not the sandbox's reaper waits for its own command.

use std::sync::{mpsc, Arc};

use mio::Waker;

use super::Event;
use crate::protocol::exec::ExecStatus;
use crate::sys::pid::Status;

/// Exec commands whose exit init's reaper reports: (PID, session channel, session waker).
pub(super) type Registry = Vec<(i32, mpsc::Sender<Event>, Arc<Waker>)>;
static REGISTRY: std::sync::Mutex<Registry> = std::sync::Mutex::new(Vec::new());

/// The registry, held from before a command's fork until its PID is in it, so that the
/// reaper cannot look for a PID before it is there.
pub(super) fn lock_registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// For init's reaper (PID 1 reaps every child): hand how `pid` ended to its exec session.
/// Returns whether `pid` was an exec command.
pub fn child_exited(pid: i32, status: ExecStatus) -> bool {
    let mut r = lock_registry();
    let Some(i) = r.iter().position(|(p, _, _)| *p == pid) else {
        return false;
    };
    let (_, tx, waker) = r.swap_remove(i);
    let _ = tx.send(Event::Exited(status));
    let _ = waker.wake();
    true
}

/// For init's reaper: a reaped child that is not the worker may be an exec command.
pub fn reaped(pid: i32, status: Status) {
    child_exited(pid, status.into());
}

/// Report `pid`'s exit to its session from a thread of its own: for an owner that is not
/// the sandbox's reaper ([`super::ExecContext::own_reaper`]).
pub(super) fn watch(pid: i32, tx: mpsc::Sender<Event>, waker: Arc<Waker>) {
    std::thread::spawn(move || {
        let status = match crate::sys::pid::wait(pid) {
            Ok(status) => status.into(),
            // Reaped elsewhere: nothing to report but that it is gone.
            Err(_) => ExecStatus::Signal(libc::SIGKILL),
        };
        let _ = tx.send(Event::Exited(status));
        let _ = waker.wake();
    });
}
