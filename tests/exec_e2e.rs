//! `iii worker exec` the way a user runs it: a busybox image pushed to a real
//! `docker-registry`, `iii worker add`, `iii worker start` (a detached monitor owning a real
//! namespace sandbox), then execs through the monitor's control socket, and `stop`.
//!
//! The exhaustive exec behaviour is covered against a directly started sandbox (exec_pipe,
//! exec_tty); this test proves the whole path, monitor included.

#[path = "common/feed.rs"]
mod feed;
#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::image::{busybox_layer, Comp, Format, Image};
use support::registry::{Auth, Registry};
use support::TempDir;

struct Project {
    dir: TempDir,
    _registry: Registry,
}

impl Project {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iii"));
        c.arg("-c")
            .arg(self.dir.path().join("config.yaml"))
            .args(args)
            .current_dir(self.dir.path())
            .env("III_HOME", self.dir.path().join("store"))
            .env_remove("III_URL")
            .env_remove("III_CONFIG_PATH");
        c
    }

    fn iii(&self, args: &[&str], stdin: &[u8]) -> Output {
        feed::output_with_stdin(&mut self.command(args), stdin)
    }

    fn monitors(&self) -> Vec<i32> {
        let mut v = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.dir.path().join(".iii/workers")) else {
            return v;
        };
        for e in rd.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path().join("state.json")) else {
                continue;
            };
            if let Ok(s) = serde_json::from_str::<serde_json::Value>(&text) {
                if let Some(m) = s["monitor_pid"].as_u64() {
                    v.push(m as i32);
                }
            }
        }
        v
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.iii(&["worker", "stop", "w"], b"");
        // A monitor that did not stop: end it by PID, if it is still this project's monitor
        // (its sandbox dies with it).
        let path: PathBuf = self.dir.path().to_path_buf();
        for pid in self.monitors() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("__monitor") && cmdline.contains(&*path.to_string_lossy()) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn project() -> Option<Project> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip!("the namespace sandbox needs root");
        return None;
    }
    let registry = Registry::start(Auth::None)?;
    let dir = TempDir::new("exec-e2e");
    let mut img = Image::new(Format::Oci, vec![busybox_layer(Comp::Gzip)?]);
    img.run_config = serde_json::json!({
        "Env": ["PATH=/bin", "GREETING=from-image"],
        "Entrypoint": ["/bin/sleep"],
        "Cmd": ["1000000"],
    });
    img.push(&registry, "test/exec", Some("1"));
    std::fs::write(dir.path().join("config.yaml"), "workers: []\n").unwrap();
    let p = Project {
        dir,
        _registry: registry,
    };
    let image = format!("{}/test/exec:1", p._registry.host);
    let out = p.iii(&["worker", "add", "--name", "w", &image], b"");
    assert!(out.status.success(), "add: {}", text(&out.stderr));
    Some(p)
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn exec_through_a_started_worker() {
    let Some(p) = project() else { return };
    let exec = |args: &[&str], stdin: &[u8]| {
        let mut a = vec!["worker", "exec"];
        a.extend_from_slice(args);
        p.iii(&a, stdin)
    };

    // Not started yet: 125 with one line naming the worker.
    let out = exec(&["w", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("not running"),
        "{err}"
    );

    let out = p.iii(&["worker", "start", "w"], b"");
    assert!(out.status.success(), "start: {}", text(&out.stderr));
    assert!(
        wait_until(Duration::from_secs(20), || exec(&["w", "--", "true"], b"")
            .status
            .success()),
        "exec never worked after start"
    );

    let out = exec(&["w", "--", "sh", "-c", "exit 42"], b"");
    assert_eq!(out.status.code(), Some(42));
    let out = exec(&["w", "--", "no-such-command"], b"");
    assert_eq!(out.status.code(), Some(127));
    let out = exec(
        &[
            "w",
            "-e",
            "A=1",
            "--",
            "sh",
            "-c",
            "echo $GREETING $A; pwd; echo oops >&2",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from-image 1\n/workspace\n");
    assert_eq!(text(&out.stderr), "oops\n");
    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7 + i / 255) as u8).collect();
    let out = exec(&["w", "--", "cat"], &data);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == data, "1 MiB through cat differs");
    // Bulk both ways at full speed, a few times.
    let big: Vec<u8> = (0..(32 << 20))
        .map(|i: u32| (i ^ (i >> 11)) as u8)
        .collect();
    for round in 0..3 {
        let out = exec(&["w", "--", "cat"], &big);
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: {}",
            text(&out.stderr)
        );
        assert!(
            out.stdout == big,
            "round {round}: 32 MiB through cat differs"
        );
    }
    // A slow local reader: iii must not buffer what the command writes meanwhile (its peak
    // memory stays far below the 32 MiB that pass through), and nothing is lost.
    let mut child = p
        .command(&["worker", "exec", "w", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = big.clone();
    let feeder = std::thread::spawn(move || input.write_all(&data).unwrap());
    let mut output = child.stdout.take().unwrap();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut peak_kib = 0u64;
    loop {
        let n = std::io::Read::read(&mut output, &mut chunk).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
        if let Some(kib) = status.ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        }) {
            peak_kib = peak_kib.max(kib);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    feeder.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(got == big, "32 MiB through cat to a slow reader differs");
    assert!(
        peak_kib > 0 && peak_kib < 24 << 10,
        "iii peaked at {peak_kib} KiB"
    );
    let out = exec(&["w", "-t", "--", "busybox", "tty"], b"");
    assert!(
        text(&out.stdout).contains("/dev/pts/"),
        "{:?} {:?} {:?}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );

    // Stopped: 125 again.
    let out = p.iii(&["worker", "stop", "w"], b"");
    assert!(out.status.success(), "stop: {}", text(&out.stderr));
    let out = exec(&["w", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("not running"));
}
