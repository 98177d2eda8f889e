//! The engine and the lifecycle commands where no sandbox is needed: one engine per project,
//! the engine port, errors that stop one worker (and only it), unknown names, empty lists.
//! The engine process is ended by PID in a Drop guard.

#[path = "common/engine.rs"]
mod engine;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use engine::Engine;

/// A temporary project directory, removed on drop.
struct TempProject(PathBuf);

impl TempProject {
    fn new(config: &str) -> TempProject {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "iii-engine-basics-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("config.yaml"), config).unwrap();
        TempProject(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iii"));
        c.arg("-c")
            .arg(self.0.join("config.yaml"))
            .args(args)
            .current_dir(&self.0)
            .env("III_HOME", self.0.join("store"))
            .env_remove("III_URL")
            .env_remove("III_CONFIG_PATH")
            .stdin(Stdio::null());
        c
    }

    fn iii(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running iii")
    }

    fn engine(&self) -> Engine {
        Engine::spawn(self.command(&[]), self.0.join("engine.log"))
    }
}

impl Drop for TempProject {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_second_engine_refuses_and_sigterm_exits_0() {
    let p = TempProject::new("engine: {port: 0}\nworkers: []\n");
    let mut engine = p.engine();
    engine.wait_stderr("iii engine: ws://127.0.0.1:", 10);
    let out = p.iii(&[]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.starts_with("error: another iii engine is already running"),
        "{e}"
    );
    assert!(e.contains(&format!("(pid {})", engine.pid())), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    // The control socket is private to the user.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p.path().join(".iii/engine.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let st = engine.terminate().expect("engine exits on SIGTERM");
    assert_eq!(st.code(), Some(0), "{}", engine.stderr());
    assert!(!p.path().join(".iii/engine.sock").exists());
    // The lock went with it: a new engine starts.
    let mut again = p.engine();
    again.wait_stderr("iii engine: ws://127.0.0.1:", 10);
    assert_eq!(again.terminate().unwrap().code(), Some(0));
}

#[test]
fn a_busy_engine_port_is_a_clear_error() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let p = TempProject::new(&format!("engine: {{port: {port}}}\nworkers: []\n"));
    let out = p.iii(&[]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.starts_with(&format!(
            "error: listening on the worker port 127.0.0.1:{port}"
        )),
        "{e}"
    );
    // III_URL names the port when config.yaml does not.
    let p2 = TempProject::new("workers: []\n");
    let out = p2
        .command(&[])
        .env("III_URL", format!("ws://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_variable_fails_that_worker_with_a_clear_message() {
    let p = TempProject::new(
        "engine: {port: 0}\nworkers:\n  - name: bad\n    image: 127.0.0.1:1/x/y:1\n    config:\n      TOKEN: ${III_TEST_SURELY_UNSET_VAR}\n",
    );
    let engine = p.engine();
    let log = engine.wait_stderr("III_TEST_SURELY_UNSET_VAR", 10);
    let line = log
        .lines()
        .find(|l| l.contains("III_TEST_SURELY_UNSET_VAR"))
        .unwrap();
    assert!(line.starts_with("error: worker bad"), "{line}");
    // Listed as failed, with the reason in --json.
    let out = p.iii(&["worker", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["name"], "bad");
    assert_eq!(rows[0]["status"], "failed");
    assert!(rows[0]["error"]
        .as_str()
        .unwrap()
        .contains("III_TEST_SURELY_UNSET_VAR"));
    // Starting it again through the engine says why it cannot run.
    let out = p.iii(&["worker", "start", "bad"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: worker bad") && stderr(&out).contains("TOKEN"),
        "{}",
        stderr(&out)
    );
    // And without the engine, the same.
    drop(engine);
    let out = p.iii(&["worker", "start", "bad"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("III_TEST_SURELY_UNSET_VAR"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_workers_and_empty_lists() {
    let p = TempProject::new("workers: []\n");
    for cmd in ["start", "stop", "restart", "logs"] {
        let out = p.iii(&["worker", cmd, "nope"]);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("error: no worker named nope in "),
            "{cmd}: {}",
            stderr(&out)
        );
    }
    let out = p.iii(&["worker", "list"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        "NAME   IMAGE   STATUS   SANDBOX   PID   UPTIME   RESTARTS   SDK   FUNCTIONS"
    );
    let out = p.iii(&["worker", "list", "--json"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "[]");
    // A worker that never ran is listed as stopped.
    let p = TempProject::new("workers:\n  - name: w\n    image: busybox\n");
    let out = p.iii(&["worker", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["status"], "stopped");
    assert_eq!(rows[0]["restarts"], 0);
    assert!(rows[0]["pid"].is_null());
    let out = p.iii(&["worker", "stop", "w"]);
    assert!(out.status.success());
    assert_eq!(stderr(&out).trim(), "w is already stopped");
    let out = p.iii(&["worker", "logs", "w"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}
