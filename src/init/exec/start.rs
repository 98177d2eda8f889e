//! Starting an exec's command: its environment (the worker's, then the request's), its stdio
//! (three pipes, or a pseudo-terminal from the sandbox's own devpts), then init's one
//! launcher ([`crate::init::spawn`]) in a process group or terminal session of its own.

use std::os::fd::{AsFd, OwnedFd};

use super::ExecContext;
use crate::init::spawn::{self, Command, Session, StartFailure};
use crate::protocol::exec::ExecRequest;
use crate::sys::fd::pipe;

/// Pipes this big: fewer, larger reads and writes for bulk data.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// A started command and our ends of its stdio.
pub(super) struct Spawned {
    pub pid: i32,
    /// Pipe mode: stdin write end, stdout and stderr read ends.
    /// TTY mode: `input` is the pty master, `stdout`/`stderr` are `None`.
    pub input: OwnedFd,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub tty: bool,
}

pub(super) fn setup_failure(e: impl std::fmt::Display) -> StartFailure {
    StartFailure::setup(format!("setting up the exec session: {e}"))
}

/// Start `req` in `ctx`.
pub(super) fn start(ctx: &ExecContext, req: &ExecRequest) -> Result<Spawned, StartFailure> {
    // Environment: worker ← request, later values win; TTY mode gets a TERM like docker -t.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    };
    for (k, v) in &ctx.env {
        set(k, v);
    }
    if req.tty.is_some() && !req.env.iter().any(|(k, _)| k == "TERM") {
        set("TERM", "xterm");
    }
    for (k, v) in &req.env {
        set(k, v);
    }
    let io = |e: std::io::Error| setup_failure(e);
    // Our ends and the child's ends of its stdio.
    let (input, stdout, stderr, child_fds) = match req.tty {
        Some(size) => {
            let size = crate::sys::pty::WinSize {
                rows: size.rows,
                cols: size.cols,
            };
            let (master, slave) = crate::sys::pty::open_pair(&ctx.ptmx, size).map_err(|e| {
                StartFailure::setup(format!(
                    "allocating a pseudo-terminal from {}: {e}",
                    ctx.ptmx
                ))
            })?;
            let s1 = slave.try_clone().map_err(io)?;
            let s2 = slave.try_clone().map_err(io)?;
            (master, None, None, [slave, s1, s2])
        }
        None => {
            let (in_r, in_w) = pipe().map_err(io)?;
            let (out_r, out_w) = pipe().map_err(io)?;
            let (err_r, err_w) = pipe().map_err(io)?;
            for fd in [&in_w, &out_r] {
                crate::sys::fd::set_pipe_size(fd.as_fd(), PIPE_SIZE);
            }
            (in_w, Some(out_r), Some(err_r), [in_r, out_w, err_w])
        }
    };
    let tty = req.tty.is_some();
    let pid = spawn::spawn(Command {
        args: &req.args,
        env: &env,
        cwd: &req.cwd,
        user: ctx.user.as_ref().map(|u| (u.0, u.1, u.2.as_slice())),
        hardening: ctx.hardening.as_deref(),
        session: if tty {
            Session::Terminal
        } else {
            Session::OwnGroup
        },
        stdio: Some(child_fds),
    })?;
    Ok(Spawned {
        pid,
        input,
        stdout,
        stderr,
        tty,
    })
}
