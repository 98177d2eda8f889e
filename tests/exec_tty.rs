//! `iii worker exec` in TTY mode: the CLI runs on a real pseudo-terminal opened by the test
//! (its controlling terminal), the command gets a pty inside the worker.

#[path = "common/feed.rs"]
mod feed;
#[macro_use]
#[path = "common/skip.rs"]
mod skip;

mod exec_harness;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exec_harness::{skip_reason, Worker, WORKER};

macro_rules! worker {
    () => {
        match skip_reason() {
            Some(why) => {
                skip!("{why}");
                return;
            }
            None => Worker::start(),
        }
    };
}

/// The CLI on the slave side of a pty; the test holds the master like a terminal emulator.
struct Term {
    master: std::fs::File,
    slave: OwnedFd,
    /// The slave's settings before iii started on it.
    initial: libc::termios,
    output: Arc<Mutex<Vec<u8>>>,
    child: Child,
}

fn termios(fd: i32) -> libc::termios {
    // SAFETY: plain data, filled by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a termios.
    assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0);
    t
}

fn set_size(fd: i32, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize through a valid pointer.
    assert_eq!(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) }, 0);
}

impl Term {
    fn start(w: &Worker, args: &[&str], rows: u16, cols: u16) -> Term {
        let (mut m, mut s) = (-1, -1);
        // SAFETY: openpty writes two fds; the other pointers may be null.
        let r = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: both fds are fresh and ours.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        set_size(master.as_raw_fd(), rows, cols);
        let initial = termios(slave.as_raw_fd());
        let mut cmd = w.exec_cmd(args);
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        // SAFETY: setsid and TIOCSCTTY are async-signal-safe; fd 0 is the pty slave here.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let master = std::fs::File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, out) = (master.try_clone().unwrap(), output.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once every slave fd is closed (the test drops its own at the end).
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Term {
            master,
            slave,
            initial,
            output,
            child,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, needle: &str) {
        let t = Instant::now();
        while !self.text().contains(needle) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no {needle:?} in {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_bytes(&mut self, b: &[u8]) {
        self.master.write_all(b).unwrap();
    }

    fn wait(&mut self) -> i32 {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().expect("exited normally");
            }
            if t.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                panic!("iii did not exit; output {:?}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn tty_is_a_pts_and_has_the_local_size() {
    let w = worker!();
    let mut t = Term::start(&w, &[WORKER, "--", "tty"], 37, 123);
    assert_eq!(t.wait(), 0, "{}", t.text());
    t.wait_for("/dev/pts/");

    let mut t = Term::start(&w, &[WORKER, "--", "stty", "size"], 37, 123);
    assert_eq!(t.wait(), 0, "{}", t.text());
    t.wait_for("37 123");

    // The command has its own session with the pty as controlling terminal.
    let mut t = Term::start(
        &w,
        &[WORKER, "--", "sh", "-c", "[ $$ = $(ps -o sid= -p $$ 2>/dev/null || cut -d' ' -f6 /proc/$$/stat) ] && echo leader"],
        24,
        80,
    );
    assert_eq!(t.wait(), 0, "{}", t.text());
    t.wait_for("leader");
}

#[test]
fn a_resize_reaches_the_command() {
    let w = worker!();
    let mut t = Term::start(
        &w,
        &[WORKER, "--", "sh", "-c", "echo ready; read x; stty size"],
        24,
        80,
    );
    t.wait_for("ready");
    // Resizing the local terminal sends SIGWINCH to the CLI, which forwards the new size.
    set_size(t.master.as_raw_fd(), 50, 150);
    std::thread::sleep(Duration::from_millis(300));
    t.type_bytes(b"\r");
    assert_eq!(t.wait(), 0, "{}", t.text());
    t.wait_for("50 150");
}

#[test]
fn ctrl_c_once_interrupts_sleep_with_130() {
    let w = worker!();
    let mut t = Term::start(
        &w,
        &[WORKER, "--", "sh", "-c", "echo go; exec sleep 30"],
        24,
        80,
    );
    t.wait_for("go");
    let start = Instant::now();
    t.type_bytes(&[3]);
    assert_eq!(t.wait(), 130, "{}", t.text());
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn ctrl_c_twice_kills_a_command_that_ignores_sigint() {
    let w = worker!();
    let mut t = Term::start(
        &w,
        &[
            WORKER,
            "--",
            "sh",
            "-c",
            "trap '' INT; echo go; while :; do sleep 1; done",
        ],
        24,
        80,
    );
    t.wait_for("go");
    t.type_bytes(&[3]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        t.child.try_wait().unwrap().is_none(),
        "one Ctrl-C must not end it"
    );
    let start = Instant::now();
    t.type_bytes(&[3]);
    assert_eq!(t.wait(), 130, "{}", t.text());
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(w.wait_until(Duration::from_secs(3), || w.processes(None).is_empty()));
}

#[test]
fn the_local_terminal_mode_is_restored() {
    let w = worker!();
    let mut t = Term::start(
        &w,
        &[WORKER, "--", "sh", "-c", "echo go; read x; exit 7"],
        24,
        80,
    );
    let before = t.initial;
    t.wait_for("go");
    // While the exec runs, the local terminal is raw.
    let during = termios(t.slave.as_raw_fd());
    assert_eq!(during.c_lflag & (libc::ECHO | libc::ICANON | libc::ISIG), 0);
    t.type_bytes(b"\r");
    assert_eq!(t.wait(), 7, "{}", t.text());
    let after = termios(t.slave.as_raw_fd());
    assert_eq!(
        (after.c_iflag, after.c_oflag, after.c_cflag, after.c_lflag),
        (
            before.c_iflag,
            before.c_oflag,
            before.c_cflag,
            before.c_lflag
        )
    );

    // Also when iii is told to go away (SIGTERM) mid-command.
    let mut t = Term::start(
        &w,
        &[WORKER, "--", "sh", "-c", "echo go; exec sleep 30"],
        24,
        80,
    );
    let before = t.initial;
    t.wait_for("go");
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(t.child.id() as i32, libc::SIGTERM) };
    assert_eq!(t.wait(), 128 + libc::SIGTERM);
    let after = termios(t.slave.as_raw_fd());
    assert_eq!(after.c_lflag, before.c_lflag);
    assert!(w.wait_until(Duration::from_secs(3), || w.processes(None).is_empty()));
}

#[test]
fn forced_and_disabled_tty() {
    let w = worker!();
    // -t without a local terminal: the command still gets one.
    let out = w.exec(&[WORKER, "-t", "--", "sh", "-c", "tty; exit 3"], b"");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"));
    // --no-tty in a terminal: pipes.
    let mut t = Term::start(&w, &[WORKER, "--no-tty", "--", "tty"], 24, 80);
    assert_eq!(t.wait(), 1, "{}", t.text());
    t.wait_for("not a tty");
    let out = w.exec(&[WORKER, "-t", "--no-tty", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(2));
}
