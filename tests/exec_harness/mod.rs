//! A worker for exec tests: a busybox-static root filesystem in a temp dir, run as a real
//! `namespace` sandbox (iii's init as PID 1, overlay root, pid/mount/net namespaces, cgroups,
//! seccomp), with `.iii/workers/<name>/control.sock` served the way the worker's monitor serves
//! it: the `{"op":"exec"}` line, an `ok` reply, then the connection is carried into the
//! sandbox as an exec stream (`iii::sandbox::channel::exec_opener`, as for a `vm` worker). The CLI under test is the real `iii`
//! binary.
//!
//! Every exec the tests run carries `III_EXEC_HARNESS=<unique id>` in its environment (added
//! by [`Worker::exec_cmd`]), which is how tests find what still runs inside, and how `Drop`
//! kills leftovers (by PID) before stopping the sandbox and deleting the temp dir.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iii::sandbox::namespace::{self, NamespaceSandbox, Options};
use iii::sandbox::{Network, ProcessSpec, Resources, Sandbox, SandboxSpec, User};

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
    sandbox: Option<NamespaceSandbox>,
}

/// Why exec tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("exec tests need root (namespaces, cgroups, overlayfs)".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox (Debian busybox-static) is not installed".into());
    }
    None
}

impl Worker {
    pub fn start() -> Worker {
        Worker::start_as(User::default())
    }

    /// A worker whose process runs as `user` (execs then run as that user too).
    pub fn start_as(user: User) -> Worker {
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
        // Removes the temp dir if anything below panics before the Worker owns it.
        let mut guard = DirGuard(Some(dir.clone()));
        let rootfs = dir.join("rootfs");
        for d in ["bin", "etc", "tmp", "workspace", "root", "data"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
            }
        }
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nworker:x:1000:1000::/workspace:/bin/sh\n",
        )
        .unwrap();
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

        let spec = SandboxSpec {
            name: WORKER.into(),
            image_root: rootfs.clone(),
            worker_dir: wdir.clone(),
            process: ProcessSpec {
                args: vec!["/bin/sleep".into(), "1000000".into()],
                env: vec![
                    ("PATH".into(), "/bin".into()),
                    ("HOME".into(), "/root".into()),
                ],
                cwd: "/".into(),
                user,
            },
            resources: Resources::default(),
            network: Network::Isolated,
            engine_addr: "127.0.0.1:9".parse().unwrap(),
            engine_link: None,
        };
        // The worker's (and init's) output, kept for a failure message.
        let log = dir.join("worker.log");
        let out = std::fs::File::create(&log).unwrap();
        let stdio = iii::sandbox::Stdio {
            stdout: out.try_clone().unwrap().into(),
            stderr: out.into(),
        };
        let opts = Options {
            init_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_iii"))),
        };
        let sandbox = namespace::start_with(&spec, stdio, &opts).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("starting the sandbox: {e}; its output: {log:?}")
        });
        let open = iii::sandbox::channel::exec_opener(sandbox.control());

        let sock = wdir.join("control.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                // The monitor's handshake: one JSON request line, one JSON reply line.
                let mut line = String::new();
                let mut r = BufReader::new(&conn);
                if r.read_line(&mut line).is_err() || !line.contains("\"exec\"") {
                    continue;
                }
                drop(r);
                let mut w = &conn;
                if w.write_all(b"{\"ok\":true,\"message\":\"exec\"}\n")
                    .is_err()
                {
                    continue;
                }
                if let Err(e) = open(conn) {
                    eprintln!("harness: {e}");
                }
            }
        });
        guard.0 = None;
        Worker {
            dir,
            rootfs,
            config,
            marker: format!("III_EXEC_HARNESS={id}"),
            stop,
            sock,
            accept: Some(accept),
            sandbox: Some(sandbox),
        }
    }

    /// `iii -c config.yaml worker exec <args…>` with stdin/stdout/stderr as given.
    pub fn exec_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iii"));
        c.arg("-c")
            .arg(&self.config)
            .args(["worker", "exec", "-e", &self.marker])
            .args(args);
        c
    }

    /// Run an exec in pipe mode with `stdin` bytes; capture stdout and stderr.
    pub fn exec(&self, args: &[&str], stdin: &[u8]) -> Output {
        crate::feed::output_with_stdin(&mut self.exec_cmd(args), stdin)
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

    /// Host PID of the worker process (init's child).
    pub fn worker_pid(&self) -> i32 {
        let init = self.sandbox.as_ref().unwrap().pid();
        let children =
            std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).unwrap();
        children.split_whitespace().next().unwrap().parse().unwrap()
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

struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
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
        if let Some(mut sb) = self.sandbox.take() {
            let _ = sb.signal(libc::SIGKILL);
            let _ = sb.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
