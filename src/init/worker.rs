//! Starting the worker process from init: resolve the executable (docker semantics: a bare
//! name is looked up in the worker's `PATH`), fork, drop to the worker's identity and
//! hardening, and `execve` directly (no shell). A failure after the fork is reported back over
//! a close-on-exec pipe, so init can tell "exec succeeded" from "exec failed, and why".

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::harden::{capabilities, seccomp, Hardening};
use crate::protocol::ProcessConfig;

/// Exit code when the command is not found (docker, shells).
pub const NOT_FOUND: i32 = 127;
/// Exit code when the command cannot be executed.
pub const NOT_EXECUTABLE: i32 = 126;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the worker could not be started: its exit code and a one-line reason.
#[derive(Debug)]
pub struct StartFailure {
    pub code: i32,
    pub message: String,
}

fn fail(code: i32, message: String) -> StartFailure {
    StartFailure { code, message }
}

fn cstring(s: &str, what: &str) -> Result<CString, StartFailure> {
    CString::new(s).map_err(|_| fail(NOT_EXECUTABLE, format!("{what} contains a NUL byte")))
}

/// Find the program to run: `args[0]` itself when it has a `/`, else the first executable
/// regular file of that name in `PATH`.
fn resolve(args0: &str, path_var: Option<&str>) -> Result<PathBuf, StartFailure> {
    if args0.is_empty() {
        return Err(fail(
            NOT_FOUND,
            "no command given (empty Entrypoint and Cmd)".into(),
        ));
    }
    if args0.contains('/') {
        return Ok(PathBuf::from(args0));
    }
    for dir in path_var.unwrap_or(DEFAULT_PATH).split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(args0);
        if let Ok(m) = std::fs::metadata(&p) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(fail(
        NOT_FOUND,
        format!("{args0}: executable file not found in $PATH"),
    ))
}

/// Fork and exec the worker. Returns its PID; when the exec itself failed the child has
/// already exited with 126/127 and the reason comes back as well.
pub fn spawn(
    p: &ProcessConfig,
    hardening: Option<&Hardening>,
) -> Result<(libc::pid_t, Option<StartFailure>), StartFailure> {
    let path_var = p
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let prog = resolve(p.args.first().map_or("", String::as_str), path_var)?;
    let prog_c = CString::new(prog.as_os_str().as_bytes())
        .map_err(|_| fail(NOT_EXECUTABLE, "command contains a NUL byte".into()))?;
    let argv_c = p
        .args
        .iter()
        .map(|a| cstring(a, "an argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp_c = p
        .env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}"), "an environment variable"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envp_c.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let cwd = if p.cwd.is_empty() { "/" } else { &p.cwd };
    // Docker creates a missing WorkingDir.
    std::fs::create_dir_all(cwd).ok();
    let cwd_c = cstring(cwd, "the working directory")?;
    let groups: Vec<libc::gid_t> = p.additional_gids.clone();
    let (uid, gid) = (p.uid, p.gid);

    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(fail(
            NOT_EXECUTABLE,
            format!("pipe: {}", io::Error::last_os_error()),
        ));
    }
    // SAFETY: both fds are fresh and ours.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let wr_fd = wr.as_raw_fd();

    // SAFETY: init is single-threaded, so the child may run any code; it still only makes
    // raw syscalls on data prepared above and ends in execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(fail(
            NOT_EXECUTABLE,
            format!("fork: {}", io::Error::last_os_error()),
        ));
    }
    if pid == 0 {
        // SAFETY: child side; see above.
        unsafe {
            let report = |step: u8| report_and_exit(wr_fd, step);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            for sig in 1..32 {
                libc::signal(sig, libc::SIG_DFL);
            }
            libc::setsid();
            if let Some(h) = hardening {
                if capabilities::drop_bounding(h.last_cap).is_err() {
                    report(STEP_CAPS);
                }
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) < 0 {
                report(STEP_GROUPS);
            }
            if libc::setgid(gid) < 0 {
                report(STEP_GID);
            }
            if libc::setuid(uid) < 0 {
                report(STEP_UID);
            }
            if hardening.is_some() && uid == 0 && capabilities::limit_current().is_err() {
                report(STEP_CAPS);
            }
            if libc::chdir(cwd_c.as_ptr()) < 0 {
                report(STEP_CWD);
            }
            if let Some(h) = hardening {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                    report(STEP_NNP);
                }
                if seccomp::install(&h.seccomp).is_err() {
                    report(STEP_SECCOMP);
                }
            }
            libc::execve(prog_c.as_ptr(), argv.as_ptr(), envp.as_ptr());
            report(STEP_EXEC);
        }
    }
    drop(wr);
    let mut buf = Vec::new();
    let mut rd = std::fs::File::from(rd);
    while let Err(e) = rd.read_to_end(&mut buf) {
        if e.kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    if buf.len() < 5 {
        return Ok((pid, None));
    }
    let errno = i32::from_le_bytes(buf[1..5].try_into().expect("4 bytes"));
    let err = io::Error::from_raw_os_error(errno);
    let (code, message) = match buf[0] {
        STEP_EXEC if errno == libc::ENOENT => (NOT_FOUND, format!("{}: {err}", prog.display())),
        STEP_EXEC => (NOT_EXECUTABLE, format!("{}: {err}", prog.display())),
        STEP_CWD => (NOT_EXECUTABLE, format!("working directory {cwd}: {err}")),
        STEP_GROUPS | STEP_GID => (NOT_EXECUTABLE, format!("switching to gid {gid}: {err}")),
        STEP_UID => (NOT_EXECUTABLE, format!("switching to uid {uid}: {err}")),
        STEP_CAPS => (NOT_EXECUTABLE, format!("dropping capabilities: {err}")),
        STEP_NNP => (NOT_EXECUTABLE, format!("setting no_new_privs: {err}")),
        _ => (
            NOT_EXECUTABLE,
            format!("installing the seccomp filter: {err}"),
        ),
    };
    Ok((pid, Some(fail(code, message))))
}

/// Child side: send (step, errno) up the pipe and exit with 126/127. Async-signal-safe.
fn report_and_exit(wr_fd: libc::c_int, step: u8) -> ! {
    // SAFETY: reading errno and writing a stack buffer to our pipe, then _exit.
    unsafe {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 5];
        msg[0] = step;
        msg[1..].copy_from_slice(&errno.to_le_bytes());
        libc::write(wr_fd, msg.as_ptr() as *const libc::c_void, 5);
        let code = if step == STEP_EXEC && errno == libc::ENOENT {
            NOT_FOUND
        } else {
            NOT_EXECUTABLE
        };
        libc::_exit(code)
    }
}

const STEP_EXEC: u8 = 1;
const STEP_CWD: u8 = 2;
const STEP_GROUPS: u8 = 3;
const STEP_GID: u8 = 4;
const STEP_UID: u8 = 5;
const STEP_CAPS: u8 = 6;
const STEP_NNP: u8 = 7;
const STEP_SECCOMP: u8 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_are_looked_up_in_path_and_paths_are_taken_as_is() {
        assert_eq!(
            resolve("sh", Some("/nonexistent:/bin")).unwrap(),
            Path::new("/bin/sh")
        );
        assert_eq!(resolve("./x", None).unwrap(), Path::new("./x"));
        let e = resolve("no-such-cmd-iii", Some("/bin")).unwrap_err();
        assert_eq!(e.code, NOT_FOUND);
        assert!(e.message.contains("not found in $PATH"));
        assert_eq!(resolve("", None).unwrap_err().code, NOT_FOUND);
    }
}
