//! End to end: the engine (`iii`) and `iii worker start|stop|restart|list|logs` with real
//! busybox workers pulled from a real `docker-registry` and run in real sandboxes.
//!
//! Every process a test starts is ended by PID in a Drop guard: the engine (SIGTERM, then
//! SIGKILL), and every monitor recorded under the project's `.iii/` (a worker's sandbox dies
//! with its monitor).

#[path = "common/engine.rs"]
mod engine;
#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::image::{busybox_layer, Comp, Format, Image};
use support::registry::{Auth, Registry};
use support::TempDir;

use engine::Engine;

/// A worker that greets, then ticks five times a second, forever.
const TICKER: &str =
    "echo hello from $III_WORKER_NAME; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done";
/// A worker that exits with code 7 after a short while.
const CRASHER: &str = "echo crashing soon; sleep 0.3; exit 7";
/// A worker that writes as fast as it can (log rotation).
const FLOOD: &str =
    "while true; do echo 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghij; done";

/// Skip (with the reason printed) where this machine cannot run sandboxes.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip!("the namespace sandbox needs root");
        return false;
    }
    true
}

/// A project: temp dir with config.yaml, its own image store, images pushed to a registry.
struct Project {
    dir: TempDir,
    registry: Registry,
}

impl Project {
    /// A registry holding one image per `(tag, shell command)`, a store with all of them
    /// pulled, and `config.yaml` with `workers` (name, tag) plus `extra` YAML per worker.
    fn new(images: &[(&str, &str)]) -> Option<Project> {
        if !can_run() {
            return None;
        }
        let registry = Registry::start(Auth::None)?;
        let dir = TempDir::new("engine");
        let p = Project { dir, registry };
        for (tag, script) in images {
            let mut img = Image::new(Format::Oci, vec![busybox_layer(Comp::Gzip)?]);
            img.run_config = serde_json::json!({
                "Env": ["PATH=/bin", "FROM_IMAGE=yes"],
                "Entrypoint": ["/bin/sh", "-c"],
                "Cmd": [script],
            });
            img.push(&p.registry, "test/worker", Some(tag));
            let out = p.iii(&["worker", "add", "--name", "tmp", &p.image(tag)]);
            assert!(out.status.success(), "add {tag}: {}", stderr(&out));
            let out = p.iii(&["worker", "remove", "tmp"]);
            assert!(out.status.success(), "remove: {}", stderr(&out));
        }
        Some(p)
    }

    fn image(&self, tag: &str) -> String {
        format!("{}/test/worker:{tag}", self.registry.host)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        self.path().join("config.yaml")
    }

    /// Write config.yaml: `engine: {port: 0}` and one entry per (name, tag, extra lines).
    fn write_config(&self, workers: &[(&str, &str, &str)]) {
        let mut y = String::from("engine: {port: 0}\nworkers:\n");
        for (name, tag, extra) in workers {
            y.push_str(&format!(
                "  - name: {name}\n    image: {}\n",
                self.image(tag)
            ));
            for line in extra.lines() {
                y.push_str(&format!("    {line}\n"));
            }
        }
        std::fs::write(self.config(), y).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iii"));
        c.arg("-c")
            .arg(self.config())
            .args(args)
            .current_dir(self.path())
            .env("III_HOME", self.path().join("store"))
            .env_remove("III_URL")
            .env_remove("III_CONFIG_PATH");
        c
    }

    fn iii(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("running iii")
    }

    fn list(&self) -> Vec<Value> {
        let out = self.iii(&["worker", "list", "--json"]);
        assert!(out.status.success(), "list: {}", stderr(&out));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("list --json is a JSON array")
    }

    fn row(&self, name: &str) -> Value {
        self.list()
            .into_iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in list"))
    }

    fn logs(&self, args: &[&str]) -> String {
        let mut a = vec!["worker", "logs"];
        a.extend_from_slice(args);
        let out = self.iii(&a);
        assert!(out.status.success(), "logs: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Wait until `name`'s row satisfies `f`; panics with the last row after `secs`.
    fn wait_row(&self, name: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.row(name);
            if f(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {name}: {r}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_running(&self, name: &str) -> u32 {
        let r = self.wait_row(name, 30, |r| r["status"] == "running");
        r["pid"].as_u64().expect("a running worker has a pid") as u32
    }

    /// PIDs recorded for every worker: (monitor, sandbox root).
    fn recorded_pids(&self) -> Vec<(u32, Option<u32>)> {
        let mut v = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.path().join(".iii/workers")) else {
            return v;
        };
        for e in rd.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path().join("state.json")) else {
                continue;
            };
            let Ok(s) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if let Some(m) = s["monitor_pid"].as_u64() {
                v.push((m as u32, s["pid"].as_u64().map(|p| p as u32)));
            }
        }
        v
    }

    fn engine(&self) -> Engine {
        self.engine_with(&[])
    }

    fn engine_with(&self, env: &[(&str, &str)]) -> Engine {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.path().join(format!("engine-{n}.log"));
        let mut c = self.command(&[]);
        for (k, v) in env {
            c.env(k, v);
        }
        Engine::spawn(c, log)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // Monitors this test started (detached, or left by a killed engine): end them by
        // PID, checking each PID still belongs to a monitor of this project.
        for (monitor, _) in self.recorded_pids() {
            let cmdline = std::fs::read(format!("/proc/{monitor}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("__monitor") && cmdline.contains(&*self.path().to_string_lossy()) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(monitor as i32, libc::SIGKILL) };
            }
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").split_whitespace().next();
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

fn wait_dead(pids: &[u32], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "still alive: {:?}",
            pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn all_pids(p: &Project) -> Vec<u32> {
    p.recorded_pids()
        .into_iter()
        .flat_map(|(m, s)| std::iter::once(m).chain(s))
        .collect()
}

#[test]
fn engine_runs_workers_and_serves_start_stop_restart() {
    let Some(p) = Project::new(&[("ticker", TICKER)]) else {
        return;
    };
    p.write_config(&[
        ("a", "ticker", ""),
        ("b", "ticker", "config: {GREETING: hi}"),
    ]);
    let mut engine = p.engine();
    let pid_a = p.wait_running("a");
    let pid_b = p.wait_running("b");
    assert_ne!(pid_a, pid_b);
    for r in p.list() {
        assert_eq!(r["status"], "running", "{r}");
        assert_eq!(r["restarts"], 0, "{r}");
        assert!(r["sandbox"] == "namespace" || r["sandbox"] == "vm", "{r}");
    }
    let table = String::from_utf8(p.iii(&["worker", "list"]).stdout).unwrap();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains(&pid_a.to_string()) && table.contains(&pid_b.to_string()));

    // Their output lands in their logs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.logs(&["a"]).contains("tick 2") || !p.logs(&["b"]).contains("tick 2") {
        assert!(Instant::now() < deadline, "no ticks in logs");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(p.logs(&["a"]).starts_with("hello from a\n"));
    assert!(p.logs(&["b"]).starts_with("hello from b\n"));

    // stop while the engine runs: stays stopped (the supervisor does not undo it).
    let out = p.iii(&["worker", "stop", "a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("a stopped"), "{}", stderr(&out));
    assert_eq!(p.row("a")["status"], "stopped");
    wait_dead(&[pid_a], 5);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(p.row("a")["status"], "stopped");
    assert_eq!(p.row("b")["status"], "running");
    let out = p.iii(&["worker", "stop", "a"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("already stopped"), "{}", stderr(&out));

    // start and restart through the engine.
    let out = p.iii(&["worker", "start", "a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid_a2 = p.wait_running("a");
    assert_ne!(pid_a2, pid_a);
    let out = p.iii(&["worker", "restart", "b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid_b2 = p.wait_running("b");
    assert_ne!(pid_b2, pid_b);
    wait_dead(&[pid_b], 5);

    // SIGTERM: every worker stops, the engine exits 0, no process of any worker is left.
    let pids = all_pids(&p);
    assert!(pids.len() >= 4, "{pids:?}");
    engine.signal(libc::SIGTERM);
    let st = engine.wait_exit(30);
    assert_eq!(st.code(), Some(0), "{}", engine.stderr());
    wait_dead(&pids, 5);
    for r in p.list() {
        assert_eq!(r["status"], "stopped", "{r}");
    }
}

#[test]
fn exiting_worker_is_restarted_with_backoff() {
    let Some(p) = Project::new(&[("crasher", CRASHER), ("ticker", TICKER)]) else {
        return;
    };
    p.write_config(&[("c", "crasher", ""), ("t", "ticker", "")]);
    let engine = p.engine();
    let t0 = Instant::now();
    let r = p.wait_row("c", 30, |r| r["restarts"].as_u64() >= Some(2));
    // Backoff 1 s then 2 s: a second restart cannot come before ~3 s.
    assert!(
        t0.elapsed() >= Duration::from_millis(2900),
        "{:?}",
        t0.elapsed()
    );
    let status = r["status"].as_str().unwrap();
    assert!(["starting", "running", "exited 7"].contains(&status), "{r}");
    let log = engine.wait_stderr("restarting in 2s", 10);
    assert!(log.contains("c: exited 7; restarting in 1s"), "{log}");
    let out = String::from_utf8(p.iii(&["worker", "list"]).stdout).unwrap();
    let line = out.lines().find(|l| l.starts_with("c ")).unwrap();
    let col = out.lines().next().unwrap().find("RESTARTS").unwrap();
    let restarts = line[col..].split_whitespace().next().unwrap();
    assert!(restarts.parse::<u32>().is_ok_and(|n| n >= 2), "{out}");
    // The logs keep every run's output (the third run may still be writing its first line).
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.logs(&["c"]).matches("crashing soon").count() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = p.logs(&["c"]);
    assert!(logs.matches("crashing soon").count() >= 3, "{logs}");
    assert_eq!(p.row("t")["status"], "running");
    // A stop, even between runs, is not undone by the supervisor.
    let out = p.iii(&["worker", "stop", "c"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restarts = p.row("c")["restarts"].clone();
    assert_eq!(p.row("c")["status"], "stopped");
    std::thread::sleep(Duration::from_secs(5));
    let r = p.row("c");
    assert_eq!(r["status"], "stopped", "{r}");
    assert_eq!(r["restarts"], restarts, "{r}");
}

#[test]
fn kill_9_of_the_engine_leaves_no_orphan_and_a_fresh_engine_starts() {
    let Some(p) = Project::new(&[("ticker", TICKER)]) else {
        return;
    };
    p.write_config(&[("a", "ticker", ""), ("b", "ticker", "")]);
    let mut engine = p.engine();
    p.wait_running("a");
    p.wait_running("b");
    let pids = all_pids(&p);
    assert_eq!(pids.len(), 4, "{pids:?}");
    engine.signal(libc::SIGKILL);
    engine.wait_exit(5);
    wait_dead(&pids, 5);
    for r in p.list() {
        assert_eq!(r["status"], "crashed", "{r}");
    }
    let mut engine2 = p.engine();
    let a = p.wait_running("a");
    p.wait_running("b");
    assert!(!pids.contains(&a));
    assert_eq!(engine2.wait_exit_after(libc::SIGTERM, 30).code(), Some(0));
    // The killed monitors could not remove their sandboxes' cgroups; the backend sweeps
    // them at a later start once they are empty. Leave none behind here.
    remove_cgroups_of(&pids);
}

/// Remove the (empty) cgroups `iii-<name>-<pid>-<n>` created by the monitors `pids`, waiting
/// for the kernel to finish with their processes.
fn remove_cgroups_of(pids: &[u32]) {
    fn walk(dir: &Path, depth: u32, pids: &[u32], found: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let mut parts = name.rsplitn(3, '-');
            let (_, pid) = (parts.next(), parts.next());
            if name.starts_with("iii-")
                && pid
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_some_and(|p| pids.contains(&p))
            {
                found.push(e.path());
            } else if depth > 0 {
                walk(&e.path(), depth - 1, pids, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 6, pids, &mut found);
    let deadline = Instant::now() + Duration::from_secs(10);
    for d in found {
        while d.exists() && std::fs::remove_dir(&d).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!d.exists(), "cgroup {} stays busy", d.display());
    }
}

#[test]
fn start_and_stop_without_an_engine() {
    let Some(p) = Project::new(&[("ticker", TICKER)]) else {
        return;
    };
    p.write_config(&[("a", "ticker", "")]);
    let out = p.iii(&["worker", "start", "a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("a started"), "{}", stderr(&out));
    let pid = p.wait_running("a");
    let out = p.iii(&["worker", "start", "a"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));
    let pids = all_pids(&p);
    let out = p.iii(&["worker", "stop", "-t", "5", "a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_dead(&pids, 5);
    assert!(!alive(pid));
    assert_eq!(p.row("a")["status"], "stopped");
    let out = p.iii(&["worker", "stop", "a"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("already stopped"));
    // restart without an engine starts it again.
    let out = p.iii(&["worker", "restart", "a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    p.wait_running("a");
    let out = p.iii(&["worker", "stop", "a"]);
    assert!(out.status.success());
}

#[test]
fn logs_survive_restarts_tail_timestamps_and_follow() {
    let Some(p) = Project::new(&[("ticker", TICKER)]) else {
        return;
    };
    p.write_config(&[("a", "ticker", "")]);
    let _engine = p.engine();
    p.wait_running("a");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.logs(&["a"]).contains("tick 3") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    let tail = p.logs(&["a", "-n", "3"]);
    assert_eq!(tail.lines().count(), 3, "{tail}");
    assert!(tail.lines().all(|l| l.starts_with("tick ")), "{tail}");
    let stamped = p.logs(&["a", "--tail", "2", "--timestamps"]);
    for l in stamped.lines() {
        let (ts, rest) = l.split_once(' ').unwrap();
        assert!(
            ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{l}"
        );
        assert!(rest.starts_with("tick "), "{l}");
    }

    // Follow, then restart the worker: the follower sees the new run's output too.
    let follower = p
        .command(&["worker", "logs", "-f", "-n", "0", "a"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut follower = ChildGuard(Some(follower));
    let out = p.iii(&["worker", "restart", "a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    p.wait_running("a");
    std::thread::sleep(Duration::from_millis(1500));
    let child = follower.0.take().unwrap();
    // SAFETY: kill has no memory-safety preconditions; the child is not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let followed = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    assert!(followed.contains("hello from a\n"), "{followed}");
    assert!(followed.contains("tick 2\n"), "{followed}");

    // Both runs are in the log.
    assert_eq!(p.logs(&["a"]).matches("hello from a").count(), 2);
}

/// Ends a child process by PID on drop.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn logs_rotate_within_their_bound() {
    let Some(p) = Project::new(&[("flood", FLOOD)]) else {
        return;
    };
    p.write_config(&[("f", "flood", "")]);
    let _engine = p.engine_with(&[("III_LOG_MAX_BYTES", "65536")]);
    p.wait_running("f");
    let dir = p.path().join(".iii/workers/f");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("log.1").exists() {
        assert!(Instant::now() < deadline, "log never rotated");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = p.iii(&["worker", "stop", "-t", "1", "f"]);
    assert!(out.status.success());
    let cur = std::fs::metadata(dir.join("log")).unwrap().len();
    let old = std::fs::metadata(dir.join("log.1")).unwrap().len();
    assert!(cur <= 65536 && old <= 65536, "log {cur} log.1 {old}");
    assert!(!dir.join("log.2").exists());
    let all = p.logs(&["f"]);
    assert!(
        all.lines().all(|l| l.starts_with("0123456789")),
        "records intact"
    );
}

#[test]
fn missing_variable_fails_that_worker_alone() {
    let Some(p) = Project::new(&[("ticker", TICKER)]) else {
        return;
    };
    p.write_config(&[
        (
            "bad",
            "ticker",
            "config: {TOKEN: \"${III_TEST_SURELY_UNSET_VAR}\"}",
        ),
        ("good", "ticker", ""),
    ]);
    let engine = p.engine();
    p.wait_running("good");
    let log = engine.wait_stderr("III_TEST_SURELY_UNSET_VAR", 10);
    let line = log
        .lines()
        .find(|l| l.contains("III_TEST_SURELY_UNSET_VAR"))
        .unwrap();
    assert!(line.starts_with("error: worker bad"), "{line}");
    let bad = p.row("bad");
    assert_eq!(bad["status"], "failed");
    assert!(bad["error"]
        .as_str()
        .unwrap()
        .contains("III_TEST_SURELY_UNSET_VAR"));
    // It is not retried, and asking for it again says why.
    let out = p.iii(&["worker", "start", "bad"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("III_TEST_SURELY_UNSET_VAR"),
        "{}",
        stderr(&out)
    );
    assert_eq!(p.row("good")["status"], "running");
}

#[test]
fn image_never_added_is_a_clear_error() {
    let Some(p) = Project::new(&[]) else {
        return;
    };
    std::fs::write(
        p.config(),
        "engine: {port: 0}\nworkers:\n  - name: ghost\n    image: 127.0.0.1:1/never/added:1\n",
    )
    .unwrap();
    let out = p.iii(&["worker", "start", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.starts_with("error: worker ghost: image 127.0.0.1:1/never/added:1 is not installed"),
        "{e}"
    );
    assert!(e.contains("iii worker add"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    let engine = p.engine();
    engine.wait_stderr("never/added:1 is not installed", 10);
    assert_eq!(p.row("ghost")["status"], "failed");
}

#[test]
fn a_second_engine_in_the_same_project_refuses() {
    let Some(p) = Project::new(&[]) else {
        return;
    };
    p.write_config(&[]);
    let engine = p.engine();
    engine.wait_stderr("iii engine:", 10);
    let out = p.iii(&[]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains("another iii engine is already running")
            && e.contains(&engine.pid().to_string()),
        "{e}"
    );
}

#[test]
fn sighup_applies_only_the_changed_entries() {
    let Some(p) = Project::new(&[("ticker", TICKER)]) else {
        return;
    };
    p.write_config(&[
        ("keep", "ticker", ""),
        ("change", "ticker", "config: {V: \"1\"}"),
        ("gone", "ticker", ""),
    ]);
    let engine = p.engine();
    let keep = p.wait_running("keep");
    let change = p.wait_running("change");
    let gone = p.wait_running("gone");
    p.write_config(&[
        ("keep", "ticker", ""),
        ("change", "ticker", "config: {V: \"2\"}"),
        ("new", "ticker", ""),
    ]);
    engine.signal(libc::SIGHUP);
    let new_pid = p.wait_running("new");
    p.wait_row("change", 30, |r| {
        r["status"] == "running" && r["pid"].as_u64() != Some(u64::from(change))
    });
    wait_dead(&[gone, change], 15);
    assert_eq!(p.row("keep")["pid"].as_u64(), Some(u64::from(keep)));
    assert!(alive(keep) && alive(new_pid));
    assert!(p.list().iter().all(|r| r["name"] != "gone"));
    let log = engine.wait_stderr("gone: removed from config; stopping", 5);
    assert!(log.contains("change: entry changed; restarting"), "{log}");
    assert!(!log.contains("keep: entry changed"), "{log}");
}
