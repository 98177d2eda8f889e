//! A worker for exec tests: a busybox-static root filesystem in a temp dir, served on the
//! worker's `.iii/workers/<name>/control.sock` by iii's own exec server (`init::exec`).
//!
//! Until init and the monitor serve exec on main, the server runs in this test process and
//! each command enters the worker's root itself: a private mount namespace with `/proc`, the
//! host's `/dev/pts` and `/dev/null` mounted into the rootfs, then `chroot`. The CLI under test
//! is the real `iii` binary talking to the real socket.
//!
//! Every process started in the worker carries `III_EXEC_HARNESS=<unique id>` in its
//! environment, which is how tests find what still runs "inside", and how `Drop` kills
//! leftovers (by PID) before deleting the temp dir.

#![allow(dead_code)]

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iii::init::exec::{serve_connection, ExecContext};

pub const WORKER: &str = "w";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Worker {
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub config: PathBuf,
    pub marker: String,
    stop: Arc<AtomicBool>,
    sock: PathBuf,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// Why exec tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("exec tests need root (mount namespaces, chroot)".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox (Debian busybox-static) is not installed".into());
    }
    None
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

impl Worker {
    pub fn start() -> Worker {
        let id = format!(
            "{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let dir = std::env::temp_dir().join(format!("iii-exec-{id}"));
        let rootfs = dir.join("rootfs");
        for d in [
            "bin",
            "etc",
            "proc",
            "dev/pts",
            "tmp",
            "workspace",
            "root",
            "data",
        ] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
            }
        }
        std::fs::write(rootfs.join("dev/null"), b"").unwrap();
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
        // A file that exists but is not executable (126).
        std::fs::write(rootfs.join("data/notexec"), "#!/bin/sh\necho hi\n").unwrap();
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!("workers:\n  - name: {WORKER}\n    image: busybox\n  - name: stopped\n    image: busybox\n"),
        )
        .unwrap();
        let wdir = dir.join(".iii/workers").join(WORKER);
        std::fs::create_dir_all(&wdir).unwrap();
        let sock = wdir.join("control.sock");
        let listener = UnixListener::bind(&sock).unwrap();

        let marker = format!("III_EXEC_HARNESS={id}");
        let root_c = cpath(&rootfs);
        let proc_c = cpath(&rootfs.join("proc"));
        let pts_c = cpath(&rootfs.join("dev/pts"));
        let null_c = cpath(&rootfs.join("dev/null"));
        let enter = move || -> i32 {
            let none = std::ptr::null::<libc::c_char>();
            let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(1);
            // SAFETY: system calls on C strings owned by the closure; async-signal-safe.
            unsafe {
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        none,
                        c"/".as_ptr(),
                        none,
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    || libc::mount(
                        c"proc".as_ptr(),
                        proc_c.as_ptr(),
                        c"proc".as_ptr(),
                        0,
                        std::ptr::null(),
                    ) != 0
                    || libc::mount(
                        c"/dev/pts".as_ptr(),
                        pts_c.as_ptr(),
                        none,
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    || libc::mount(
                        c"/dev/null".as_ptr(),
                        null_c.as_ptr(),
                        none,
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    || libc::chroot(root_c.as_ptr()) != 0
                {
                    return errno();
                }
            }
            0
        };
        let (mk, mv) = marker.split_once('=').unwrap();
        let ctx = ExecContext {
            env: vec![
                ("PATH".into(), "/bin".into()),
                ("HOME".into(), "/root".into()),
                (mk.into(), mv.into()),
            ],
            user: None,
            ptmx: "/dev/ptmx".into(),
            own_reaper: true,
            enter: Some(Arc::new(enter)),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let ctx = ctx.clone();
                std::thread::spawn(move || {
                    // The monitor's handshake: one JSON request line, one JSON reply line.
                    let mut line = String::new();
                    let mut r = BufReader::new(&conn);
                    if r.read_line(&mut line).is_err() || !line.contains("\"exec\"") {
                        return;
                    }
                    drop(r);
                    let mut w = &conn;
                    if w.write_all(b"{\"ok\":true,\"message\":\"exec\"}\n")
                        .is_err()
                    {
                        return;
                    }
                    serve_connection(conn, &ctx);
                });
            }
        });
        Worker {
            dir,
            rootfs,
            config,
            marker,
            stop,
            sock,
            accept: Some(accept),
        }
    }

    /// `iii -c config.yaml worker exec <args…>` with stdin/stdout/stderr as given.
    pub fn exec_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iii"));
        c.arg("-c")
            .arg(&self.config)
            .args(["worker", "exec"])
            .args(args);
        c
    }

    /// Run an exec in pipe mode with `stdin` bytes; capture stdout and stderr.
    pub fn exec(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .exec_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        out
    }

    /// PIDs of processes running "inside" (carrying this worker's marker), optionally only
    /// those whose command line contains `needle`.
    pub fn processes(&self, needle: Option<&str>) -> Vec<i32> {
        let mut pids = Vec::new();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(env) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            if !env.split(|b| *b == 0).any(|v| v == self.marker.as_bytes()) {
                continue;
            }
            if let Some(n) = needle {
                let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                if !String::from_utf8_lossy(&cmd).contains(n) {
                    continue;
                }
            }
            // A zombie awaiting its reaper is not running anymore.
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
            {
                continue;
            }
            pids.push(pid);
        }
        pids
    }

    /// Wait until `cond` holds, up to `limit`.
    pub fn wait_until(&self, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cond()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::os::unix::net::UnixStream::connect(&self.sock);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for pid in self.processes(None) {
            // SAFETY: killing a process this worker started, by its PID.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.wait_until(Duration::from_secs(5), || self.processes(None).is_empty());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
