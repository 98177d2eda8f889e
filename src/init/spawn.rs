//! Starting a process inside the sandbox: the one launcher init uses for the worker and for
//! every `iii worker exec` command.
//!
//! Docker's rules: `args[0]` with a `/` is run as it is, a bare name is looked up in the
//! process's own `PATH` (else [`DEFAULT_PATH`]) like `execvp` (a "permission denied" anywhere
//! beats "not found"), and there is no shell. Everything the child needs is prepared before
//! the `fork`, so the child makes only async-signal-safe system calls (init has exec threads),
//! in a fixed order: default signal dispositions, its session, its stdio, the capability
//! bounding set (while still privileged), its user, the remaining capabilities, its working
//! directory, no_new_privs and seccomp last, then `execve`. A step that fails is reported back
//! over a close-on-exec pipe as (step, errno), so the parent tells "exec succeeded" (EOF) from
//! "failed, and why"; the failed child is reaped and the failure carries the exit code it
//! stands for, the protocol's ([`code`]): 127 not found, 126 not executable, 125 iii failed.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::harden::{capabilities, seccomp, Hardening};
use crate::protocol::exec::{code, spawn_failure_code};

/// `PATH` for a process whose environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a process did not start: the exit code that stands for it and a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    pub code: i32,
    pub message: String,
}

impl StartFailure {
    /// A failure of iii's own before anything was started (exit code 125).
    pub fn setup(message: impl std::fmt::Display) -> StartFailure {
        StartFailure {
            code: code::III_FAILED,
            message: message.to_string(),
        }
    }
}

/// How the new process stands towards sessions and terminals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// A session of its own, no terminal (the worker).
    New,
    /// A process group of its own, so signals reach all it starts (a piped exec).
    OwnGroup,
    /// A session of its own with its stdin (a pty slave) as controlling terminal.
    Terminal,
}

/// What to start.
pub struct Command<'a> {
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub cwd: &'a str,
    /// Switch to this uid, gid and supplementary groups (`None`: stay as init's user).
    pub user: Option<(u32, u32, &'a [u32])>,
    /// The worker's restrictions (`None` in a `vm` guest: the VM is the boundary).
    pub hardening: Option<&'a Hardening>,
    pub session: Session,
    /// Its stdin, stdout and stderr (`None`: init's own).
    pub stdio: Option<[OwnedFd; 3]>,
}

/// The step a child reports failing at.
#[repr(u32)]
#[derive(Clone, Copy)]
enum Step {
    Harden = 1,
    Session = 2,
    User = 3,
    Chdir = 4,
    Exec = 5,
}

fn cstring(s: &str, what: &str) -> Result<CString, StartFailure> {
    CString::new(s).map_err(|_| StartFailure::setup(format!("{what} contains a NUL byte")))
}

/// Where to look for `program`: itself when it has a `/`, else each `PATH` entry in order.
fn candidates(program: &str, path: Option<&str>) -> Vec<String> {
    if program.contains('/') {
        return vec![program.to_string()];
    }
    path.unwrap_or(DEFAULT_PATH)
        .split(':')
        .map(|d| if d.is_empty() { "." } else { d })
        .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
        .collect()
}

/// "No such file or directory (os error 2)" → "no such file or directory".
fn errno_text(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => s,
    }
}

/// Fork and exec `cmd`; returns its PID once `execve` succeeded.
pub fn spawn(cmd: Command<'_>) -> Result<libc::pid_t, StartFailure> {
    let Some(program) = cmd.args.first().filter(|p| !p.is_empty()) else {
        return Err(StartFailure {
            code: code::NOT_FOUND,
            message: "no command given".into(),
        });
    };
    let path = cmd
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let candidates = candidates(program, path)
        .iter()
        .map(|c| cstring(c, "the command's path"))
        .collect::<Result<Vec<_>, _>>()?;
    let argv_c = cmd
        .args
        .iter()
        .map(|a| cstring(a, "an argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp_c = cmd
        .env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}"), "an environment variable"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envp_c.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let cwd = cstring(cmd.cwd, "the working directory")?;
    let stdio: Option<[RawFd; 3]> = cmd
        .stdio
        .as_ref()
        .map(|f| [f[0].as_raw_fd(), f[1].as_raw_fd(), f[2].as_raw_fd()]);
    let (report_r, report_w) = crate::sys::fd::pipe().map_err(StartFailure::setup)?;
    let plan = Plan {
        session: cmd.session,
        stdio,
        hardening: cmd.hardening,
        user: cmd.user,
        cwd: &cwd,
        candidates: &candidates,
        argv: &argv,
        envp: &envp,
        report: report_w.as_raw_fd(),
    };

    // SAFETY: fork has no memory-safety preconditions; the child below only makes
    // async-signal-safe calls on data prepared above, and always ends in execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(StartFailure::setup(format!(
            "fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        // SAFETY: in the freshly forked child; `child` never returns.
        unsafe { child(&plan) }
    }
    drop(cmd.stdio);
    drop(report_w);
    // The child reports (step, errno) on failure; EOF (close-on-exec) means execve worked.
    let mut report = [0u8; 8];
    let mut got = 0;
    let mut reader = std::fs::File::from(report_r);
    while got < report.len() {
        match reader.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got == 0 {
        return Ok(pid);
    }
    // The child has _exit'ed; reap it unless init's reaper was faster (then ECHILD is fine).
    let _ = crate::sys::pid::wait(pid);
    let step = u32::from_ne_bytes(report[..4].try_into().expect("4 bytes"));
    let errno = i32::from_ne_bytes(report[4..].try_into().expect("4 bytes"));
    Err(failure(step, errno, program, cmd.cwd))
}

/// What a failed step means, in the protocol's exit codes.
fn failure(step: u32, errno: i32, program: &str, cwd: &str) -> StartFailure {
    let why = errno_text(errno);
    let (code, message) = match step {
        s if s == Step::Exec as u32 => {
            let code = spawn_failure_code(errno);
            if code == code::NOT_FOUND && !program.contains('/') {
                (
                    code,
                    format!("exec: {program:?}: executable file not found in $PATH"),
                )
            } else {
                (code, format!("exec: {program:?}: {why}"))
            }
        }
        s if s == Step::Chdir as u32 => (
            code::NOT_EXECUTABLE,
            format!("cannot enter working directory {cwd}: {why}"),
        ),
        s if s == Step::User as u32 => (
            code::III_FAILED,
            format!("switching to the worker's user: {why}"),
        ),
        s if s == Step::Session as u32 => (
            code::III_FAILED,
            format!("setting up the process's session and stdio: {why}"),
        ),
        _ => (
            code::III_FAILED,
            format!("applying the worker's restrictions: {why}"),
        ),
    };
    StartFailure { code, message }
}

/// Everything the child uses, prepared by the parent.
struct Plan<'a> {
    session: Session,
    stdio: Option<[RawFd; 3]>,
    hardening: Option<&'a Hardening>,
    user: Option<(u32, u32, &'a [u32])>,
    cwd: &'a CString,
    candidates: &'a [CString],
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    report: RawFd,
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The forked child: set up and exec, or report why not and `_exit(127)`.
///
/// # Safety
/// Must only be called in a freshly forked child; it never returns.
unsafe fn child(p: &Plan<'_>) -> ! {
    let fail = |step: Step, errno: i32| -> ! {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: writing 8 bytes from a valid buffer, then ending the child without running
        // any of the parent's destructors or atexit handlers.
        unsafe {
            libc::write(p.report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY: plain system calls on fds and C strings prepared by the parent (whole block).
    unsafe {
        // Init blocks or handles signals for itself; the process starts with defaults.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        match p.session {
            // A child of init is never a group leader: setsid cannot fail here.
            Session::New => {
                libc::setsid();
            }
            Session::OwnGroup => {
                if libc::setpgid(0, 0) != 0 {
                    fail(Step::Session, last_errno());
                }
            }
            Session::Terminal => {
                let tty = p.stdio.map_or(0, |f| f[0]);
                if libc::setsid() < 0 || libc::ioctl(tty, libc::TIOCSCTTY, 0) != 0 {
                    fail(Step::Session, last_errno());
                }
            }
        }
        if let Some(fds) = p.stdio {
            for (target, fd) in fds.iter().enumerate() {
                // dup2 clears close-on-exec on the new number.
                if libc::dup2(*fd, target as RawFd) < 0 {
                    fail(Step::Session, last_errno());
                }
            }
        }
        // Bounding set while still privileged, then the identity, then the remaining
        // capabilities, no_new_privs and seccomp last.
        let errno_of = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error());
        if let Some(h) = p.hardening {
            if let Some(e) = errno_of(capabilities::drop_bounding(h.last_cap)) {
                fail(Step::Harden, e);
            }
        }
        if let Some((uid, gid, groups)) = p.user {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                fail(Step::User, last_errno());
            }
        }
        if p.hardening.is_some() && libc::getuid() == 0 {
            if let Some(e) = errno_of(capabilities::limit_current()) {
                fail(Step::Harden, e);
            }
        }
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            fail(Step::Chdir, last_errno());
        }
        if let Some(h) = p.hardening {
            if let Some(e) = errno_of(seccomp::set_no_new_privs()) {
                fail(Step::Harden, e);
            }
            if let Some(e) = errno_of(seccomp::install(&h.seccomp)) {
                fail(Step::Harden, e);
            }
        }
        // Like execvp: try each candidate; "permission denied" anywhere beats "not found".
        let mut errno = libc::ENOENT;
        let mut denied = false;
        for c in p.candidates {
            libc::execve(c.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
            match last_errno() {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => denied = true,
                e => {
                    errno = e;
                    break;
                }
            }
        }
        if denied && errno == libc::ENOENT {
            errno = libc::EACCES;
        }
        fail(Step::Exec, errno)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)], cwd: &str) -> Result<libc::pid_t, StartFailure> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        spawn(Command {
            args: &args,
            env: &env,
            cwd,
            user: None,
            hardening: None,
            session: Session::OwnGroup,
            stdio: None,
        })
    }

    #[test]
    fn bare_names_are_looked_up_in_path_and_paths_are_taken_as_is() {
        assert_eq!(
            candidates("sh", Some("/nonexistent::/bin/")),
            ["/nonexistent/sh", "./sh", "/bin/sh"]
        );
        assert_eq!(candidates("./x", None), ["./x"]);
        assert_eq!(candidates("ls", None)[0], "/usr/local/sbin/ls");
    }

    #[test]
    fn failures_carry_the_protocols_codes() {
        let pid = run(
            &["sh", "-c", "exit 4"],
            &[("PATH", "/nonexistent:/bin")],
            "/",
        )
        .unwrap();
        assert_eq!(
            crate::sys::pid::wait(pid).unwrap(),
            crate::sys::pid::Status::Exited(4)
        );
        let e = run(&["no-such-cmd-iii"], &[("PATH", "/bin")], "/").unwrap_err();
        assert_eq!(e.code, code::NOT_FOUND);
        assert!(e.message.contains("not found in $PATH"), "{e:?}");
        let e = run(&["/etc/passwd"], &[], "/").unwrap_err();
        assert_eq!(e.code, code::NOT_EXECUTABLE, "{e:?}");
        let e = run(&["/bin/true"], &[], "/nonexistent-dir").unwrap_err();
        assert_eq!(e.code, code::NOT_EXECUTABLE);
        assert!(e.message.contains("working directory"), "{e:?}");
        assert_eq!(run(&[], &[], "/").unwrap_err().code, code::NOT_FOUND);
        let e = run(&["a\0b"], &[], "/").unwrap_err();
        assert_eq!(e.code, code::III_FAILED);
    }
}
