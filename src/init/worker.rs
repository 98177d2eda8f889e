//! The worker process: started by init from the `Start` message's process config with the
//! one launcher ([`super::spawn`]), in a session of its own, on init's stdio (the worker's
//! log), as the image's user, under the sandbox's hardening.

use super::spawn::{spawn, Command, Session, StartFailure};
use crate::harden::Hardening;
use crate::protocol::ProcessConfig;

/// Start the worker; returns its PID (in the sandbox's PID namespace).
pub fn start(p: &ProcessConfig, hardening: Option<&Hardening>) -> Result<i32, StartFailure> {
    let cwd = if p.cwd.is_empty() { "/" } else { &p.cwd };
    // Docker creates a missing WorkingDir.
    std::fs::create_dir_all(cwd).ok();
    spawn(Command {
        args: &p.args,
        env: &p.env,
        cwd,
        user: Some((p.uid, p.gid, &p.additional_gids)),
        hardening,
        session: Session::New,
        stdio: None,
    })
}
