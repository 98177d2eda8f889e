//! The VMM's threads are confined: a call outside a vCPU's or device's allow-list kills the
//! VMM's process with SIGSYS — never runs — while the calls the job needs still work. Each
//! case runs the filter in a child process (this test binary re-run on one ignored test), so
//! the kill is observed from outside, as the supervisor of a VM worker would see it.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use iii::sandbox::vm::seccomp::{confine, Role};

const CASE: &str = "III_TEST_CONFINED_CASE";

/// Run `case` in a child; returns its exit status and stdout.
fn run_case(case: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "confined_child", "--nocapture"])
        .env(CASE, case)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_device_thread_making_a_forbidden_call_kills_the_vmm_not_the_host() {
    let (status, out) = run_case("block-opens-a-file");
    assert!(
        out.contains("pread ok"),
        "the allowed calls ran first: {out}"
    );
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?} {out}");
    assert!(
        !out.contains("opened"),
        "the forbidden call must not run: {out}"
    );
    // The host (this process) is untouched: it can still open files.
    assert!(std::fs::File::open("/proc/self/status").is_ok());
}

#[test]
fn a_console_thread_cannot_create_a_socket() {
    let (status, out) = run_case("console-makes-a-socket");
    assert!(out.contains("poll ok"), "{out}");
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?} {out}");
}

#[test]
fn a_vcpu_thread_may_issue_only_its_own_ioctls() {
    let (status, out) = run_case("vcpu-other-ioctl");
    assert!(out.contains("fionbio ok"), "{out}");
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?} {out}");
}

#[test]
fn a_confined_thread_cannot_spawn_a_process() {
    let (status, out) = run_case("vcpu-execs");
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?} {out}");
    assert!(!out.contains("spawned"), "{out}");
}

/// The body of every case, in the child. Confinement is per thread: the case runs on a thread
/// of its own, as the VMM's threads do, and the main thread only waits for it.
#[test]
#[ignore = "run as a child process by the tests above"]
fn confined_child() {
    let case = std::env::var(CASE).expect("run by the tests above");
    let say = |s: &str| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{s}");
        let _ = o.flush();
    };
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    std::thread::spawn(move || match case.as_str() {
        "block-opens-a-file" => {
            confine(Role::BlockDevice).unwrap();
            let mut buf = [0u8; 4];
            file.read_at(&mut buf, 0).unwrap();
            assert_eq!(&buf, b"\x7fELF");
            say("pread ok");
            let f = std::fs::File::open("/etc/hostname");
            say(&format!("opened {f:?}"));
        }
        "console-makes-a-socket" => {
            confine(Role::ConsoleDevice).unwrap();
            let mut p = libc::pollfd {
                fd: a.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 1);
            say("poll ok");
            let s = std::net::TcpListener::bind("127.0.0.1:0");
            say(&format!("socket {s:?}"));
        }
        "vcpu-other-ioctl" => {
            confine(Role::Vcpu).unwrap();
            a.set_nonblocking(true).unwrap();
            say("fionbio ok");
            // SAFETY: winsize is plain integers; all-zero is a valid value.
            let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
            // SAFETY: TIOCGWINSZ fills a winsize (on a socket it would fail with ENOTTY).
            let r = unsafe { libc::ioctl(a.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
            say(&format!("ioctl returned {r}"));
        }
        "vcpu-execs" => {
            confine(Role::Vcpu).unwrap();
            let c = Command::new("/bin/true").status();
            say(&format!("spawned {c:?}"));
        }
        other => panic!("unknown case {other}"),
    })
    .join()
    .unwrap();
    say("the case returned: its forbidden call was allowed");
}
