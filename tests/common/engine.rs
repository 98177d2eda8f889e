//! `Engine`: an `iii` engine process a test started, with its stderr in a log file; on drop it
//! gets SIGTERM, then SIGKILL if it has not exited within 20 s.
//!
//! Include it in a test crate: `#[path = "common/engine.rs"] mod engine;`

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Engine {
    child: Option<Child>,
    log: PathBuf,
}

#[allow(dead_code)]
impl Engine {
    /// Start `cmd` (the engine: `iii -c …` with no subcommand), stderr into `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Engine {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("starting the engine");
        Engine {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the engine's stderr contains `needle`; the stderr so far.
    pub fn wait_stderr(&self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.stderr();
            if s.contains(needle) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "engine never said {needle:?}: {s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        // The child is not reaped yet, so its PID is still ours.
        let _ = iii::sys::pid::kill(self.pid() as i32, sig);
    }

    pub fn wait_exit_after(&mut self, sig: i32, secs: u64) -> ExitStatus {
        self.signal(sig);
        self.wait_exit(secs)
    }

    /// Wait for the engine to exit (after a signal); its exit status.
    pub fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "engine did not exit: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status (`None` if it had to be SIGKILLed after 20 s).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = iii::sys::pid::kill(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.terminate();
    }
}
