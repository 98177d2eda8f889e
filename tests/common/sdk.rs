//! Real SDK workers against a real engine, for the engine's SDK tests (tests/engine_sdk_*.rs).
//!
//! - [`Sdks::find`]: the published SDKs that `scripts/install-sdks.sh` put under
//!   `target/sdk/` (Node `iii-sdk` with its node_modules, a Python venv with `iii-sdk`).
//! - [`Project`]: a temp project dir with a config.yaml and its engine (an [`Engine`] guard),
//!   restartable on the same ports.
//! - [`Puppet`]: a worker process running `tests/sdk_workers/puppet.{mjs,py}`, driven by JSON
//!   commands on its stdin; what it saw comes back as events. Killed by PID on drop.
//!
//! Include it in a test crate (after skip.rs; with tempdir.rs, engine.rs and raw.rs):
//! `#[macro_use] #[path = "common/sdk.rs"] mod sdk;`

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::engine::Engine;
use crate::raw::RawWs;
use crate::tempdir::TempDir;

/// The installed SDKs, or `skip!` (naming the install script) and return from the test.
#[allow(unused_macros)]
macro_rules! sdks {
    () => {
        match $crate::sdk::Sdks::find() {
            Ok(s) => s,
            Err(why) => {
                skip!("{why}");
                return;
            }
        }
    };
}

const NODE_PUPPET: &str = include_str!("../sdk_workers/puppet.mjs");
const PY_PUPPET: &str = include_str!("../sdk_workers/puppet.py");

/// Where the installed SDKs are.
#[derive(Clone)]
pub struct Sdks {
    node_modules: PathBuf,
    python: PathBuf,
}

#[allow(dead_code)]
impl Sdks {
    /// The SDKs under `target/sdk/`, or why they are not there (for `skip!`).
    pub fn find() -> Result<Sdks, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sdk");
        let node_modules = root.join("node/node_modules");
        let python = root.join("py/bin/python");
        if !node_modules.join("iii-sdk/package.json").is_file() || !python.is_file() {
            return Err(format!(
                "the iii SDKs are not installed under {}: run scripts/install-sdks.sh",
                root.display()
            ));
        }
        if Command::new("node").arg("--version").output().is_err() {
            return Err("node is not installed: run scripts/install-sdks.sh".into());
        }
        Ok(Sdks {
            node_modules,
            python,
        })
    }

    pub fn node(&self, p: &Project, name: &str) -> Puppet {
        Puppet::spawn(self, p, Lang::Node, name, false)
    }

    pub fn python(&self, p: &Project, name: &str) -> Puppet {
        Puppet::spawn(self, p, Lang::Python, name, false)
    }

    /// A worker that keeps the SDK's telemetry on (its `/otel` socket to the engine).
    pub fn with_telemetry(&self, p: &Project, lang: Lang, name: &str) -> Puppet {
        Puppet::spawn(self, p, lang, name, true)
    }
}

/// The config.yaml most tests use: every built-in worker, free ports.
#[allow(dead_code)]
pub const ALL_BUILTINS: &str = "workers:
  - name: iii-worker-manager
    config: {port: 0}
  - name: iii-http
    config: {port: 0, default_timeout: 2000}
  - name: iii-state
  - name: iii-pubsub
  - name: iii-cron
";

/// A port nothing listens on right now (for configs that must keep one across restarts).
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temp project with a config.yaml and (once started) its engine.
pub struct Project {
    pub dir: TempDir,
    engine: Option<Engine>,
    pub port: u16,
    pub http_port: Option<u16>,
    starts: u32,
}

#[allow(dead_code)]
impl Project {
    pub fn new(tag: &str, config: &str) -> Project {
        let dir = TempDir::new(tag);
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        Project {
            dir,
            engine: None,
            port: 0,
            http_port: None,
            starts: 0,
        }
    }

    /// A new project with its engine started.
    pub fn started(tag: &str, config: &str) -> Project {
        let mut p = Project::new(tag, config);
        p.start();
        p
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// `iii` with this project's config, no inherited engine address.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iii"));
        c.arg("-c")
            .arg(self.config_path())
            .args(args)
            .current_dir(self.dir.path())
            .env("III_HOME", self.dir.path().join("store"))
            .env_remove("III_URL")
            .env_remove("III_CONFIG_PATH")
            .stdin(Stdio::null());
        c
    }

    pub fn iii(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running iii")
    }

    /// Start the engine and wait for its banner (the ports it bound).
    pub fn start(&mut self) {
        assert!(self.engine.is_none(), "the engine is running already");
        self.starts += 1;
        let log = self.dir.path().join(format!("engine-{}.log", self.starts));
        let e = Engine::spawn(self.command(&[]), log);
        let banner = e.wait_stderr("iii engine: ws://", 60);
        self.port =
            port_after(&banner, "iii engine: ws://").expect("the worker port in the banner");
        self.http_port = port_after(&banner, "iii-http: http://");
        self.engine = Some(e);
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("the engine is running")
    }

    pub fn pid(&self) -> u32 {
        self.engine().pid()
    }

    /// SIGTERM; the engine must exit 0.
    pub fn stop(&mut self) {
        let mut e = self.engine.take().expect("the engine is running");
        let st = e.wait_exit_after(libc::SIGTERM, 30);
        assert!(st.success(), "engine exit {st:?}: {}", e.stderr());
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let mut e = self.engine.take().expect("the engine is running");
        e.wait_exit_after(libc::SIGKILL, 30);
    }

    /// Everything every engine of this project wrote on stderr.
    pub fn stderr(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.starts {
            let log = self.dir.path().join(format!("engine-{i}.log"));
            s += &std::fs::read_to_string(log).unwrap_or_default();
        }
        s
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Call a function with a raw protocol client: `Ok(result)` or `Err((code, message))`.
    pub fn call(&self, function_id: &str, data: Value) -> Result<Value, (String, String)> {
        let mut ws =
            RawWs::connect(self.port).map_err(|e| ("connect".to_string(), e.to_string()))?;
        ws.call(function_id, data)
    }

    /// Ids of the functions SDK and built-in workers registered (not the engine's own).
    pub fn function_ids(&self) -> Vec<String> {
        match self.call("engine::functions::list", json!({})) {
            Ok(v) => v["functions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["function_id"].as_str().unwrap().to_string())
                .collect(),
            Err(_) => vec![],
        }
    }

    /// Wait until every one of `ids` is registered.
    pub fn wait_functions(&self, ids: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let have = self.function_ids();
            if ids.iter().all(|id| have.iter().any(|h| h == id)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "functions {ids:?} never all registered (have {have:?}): {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The trigger bindings the engine holds.
    pub fn bindings(&self) -> Vec<Value> {
        self.call("engine::registered-triggers::list", json!({}))
            .map(|v| v["registered_triggers"].as_array().unwrap().clone())
            .unwrap_or_default()
    }

    /// Wait until `n` bindings for `function_id` are active; them.
    pub fn wait_bindings(&self, function_id: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mine: Vec<Value> = self
                .bindings()
                .into_iter()
                .filter(|b| b["function_id"] == function_id && b["status"] == "active")
                .collect();
            if mine.len() == n {
                return mine;
            }
            assert!(
                Instant::now() < deadline,
                "{function_id}: {} active binding(s), not {n}: {:?}\n{}",
                mine.len(),
                self.bindings(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SDK workers the engine lists: connections that announced a runtime (built-in
    /// workers and raw protocol clients, such as the one asking, are left out).
    pub fn sdk_workers(&self) -> Vec<Value> {
        self.call("engine::workers::list", json!({}))
            .map(|v| {
                v["workers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|w| w["internal"] == false && !w["runtime"].is_null())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Wait until the SDK workers the engine lists are exactly `names` (sorted); them.
    pub fn wait_sdk_workers(&self, names: &[&str]) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let w = self.sdk_workers();
            let mut have: Vec<&str> = w.iter().map(|w| w["name"].as_str().unwrap()).collect();
            have.sort();
            if have == names {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "SDK workers {have:?}, not {names:?}: {w:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The port in `…<prefix>HOST:PORT…` of a log.
fn port_after(log: &str, prefix: &str) -> Option<u16> {
    let rest = &log[log.find(prefix)? + prefix.len()..];
    let hostport: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',' && *c != '/')
        .collect();
    hostport.rsplit(':').next()?.parse().ok()
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lang {
    Node,
    Python,
}

/// A worker process built on a real SDK, driven through its stdin.
#[allow(dead_code)]
pub struct Puppet {
    child: Mutex<Option<Child>>,
    stdin: Mutex<ChildStdin>,
    events: Arc<Mutex<Vec<Value>>>,
    pub lang: Lang,
    pub name: String,
    stderr_log: PathBuf,
    next_tag: AtomicU64,
}

#[allow(dead_code)]
impl Puppet {
    fn spawn(sdk: &Sdks, p: &Project, lang: Lang, name: &str, telemetry: bool) -> Puppet {
        let dir = p.dir.path();
        let mut cmd = match lang {
            Lang::Node => {
                let link = dir.join("node_modules");
                if !link.exists() {
                    std::os::unix::fs::symlink(&sdk.node_modules, &link).unwrap();
                }
                let script = dir.join("puppet.mjs");
                if !script.exists() {
                    std::fs::write(&script, NODE_PUPPET).unwrap();
                }
                let mut c = Command::new("node");
                c.arg(script);
                c
            }
            Lang::Python => {
                let script = dir.join("puppet.py");
                if !script.exists() {
                    std::fs::write(&script, PY_PUPPET).unwrap();
                }
                let mut c = Command::new(&sdk.python);
                c.arg(script).env("PYTHONUNBUFFERED", "1");
                c
            }
        };
        let stderr_log = dir.join(format!("{name}.stderr"));
        cmd.current_dir(dir)
            .env("III_URL", p.url())
            .env("PUPPET_NAME", name)
            .env_remove("III_WORKER_NAME")
            .env_remove("III_NAMESPACE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap());
        if !telemetry {
            cmd.env("OTEL_ENABLED", "false");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {lang:?}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let out_log = dir.join(format!("{name}.stdout"));
        // Detached: it ends when the process's stdout closes.
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(out_log).ok();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(l) = &mut log {
                    let _ = writeln!(l, "{line}");
                }
                if let Some(j) = line.strip_prefix("@@ ") {
                    if let Ok(v) = serde_json::from_str::<Value>(j) {
                        sink.lock().unwrap().push(v);
                    }
                }
            }
        });
        let puppet = Puppet {
            child: Mutex::new(Some(child)),
            stdin: Mutex::new(stdin),
            events,
            lang,
            name: name.to_string(),
            stderr_log,
            next_tag: AtomicU64::new(0),
        };
        puppet.wait("ready", 90, |e| e["ev"] == "ready");
        puppet
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().as_ref().expect("running").id()
    }

    /// Whether the process is still running (`Some(status)` once it exited).
    fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.lock().unwrap();
        c.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// What the process wrote on stderr (for failure messages).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn send(&self, cmd: Value) {
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin
            .lock()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap_or_else(|e| panic!("{}: stdin: {e}: {}", self.name, self.stderr()));
    }

    /// Send a registration command (`fn`, `unfn`, `trigger`, `untrigger`) and wait until the
    /// SDK took it.
    pub fn register(&self, cmd: Value) {
        let op = cmd["op"].clone();
        let tag = if cmd["tag"].is_null() {
            cmd["id"].clone()
        } else {
            cmd["tag"].clone()
        };
        self.send(cmd);
        self.wait("the command done", 30, |e| {
            e["ev"] == "done" && e["op"] == op && e["tag"] == tag
        });
    }

    /// Register function `id` of `kind` (see puppet.mjs), with extra fields from `more`.
    pub fn function(&self, id: &str, kind: &str, more: Value) {
        let mut cmd = json!({"op": "fn", "id": id, "kind": kind});
        if let Value::Object(m) = more {
            cmd.as_object_mut().unwrap().extend(m);
        }
        self.register(cmd);
    }

    /// Bind a trigger; `tag` names it for [`Puppet::untrigger`].
    pub fn trigger(&self, tag: &str, ty: &str, function_id: &str, config: Value) {
        self.register(json!({"op": "trigger", "tag": tag, "type": ty,
                             "function_id": function_id, "config": config}));
    }

    pub fn untrigger(&self, tag: &str) {
        self.register(json!({"op": "untrigger", "tag": tag}));
    }

    /// Start a call (`extra` may set payload, timeout_ms, void, blob_kib); its tag.
    pub fn start_call(&self, function_id: &str, extra: Value) -> String {
        let tag = format!("c{}", self.next_tag.fetch_add(1, Ordering::Relaxed));
        let mut cmd = json!({"op": "call", "tag": tag, "function_id": function_id});
        if let Value::Object(m) = extra {
            cmd.as_object_mut().unwrap().extend(m);
        }
        self.send(cmd);
        tag
    }

    /// The outcome of call `tag` (`{ok}` or `{error}`, with `ms`), waiting up to `secs`.
    pub fn result(&self, tag: &str, secs: u64) -> Value {
        self.wait(&format!("the result of {tag}"), secs, |e| {
            e["ev"] == "result" && e["tag"] == tag
        })
    }

    /// Call and wait (60 s at most): the result event.
    pub fn call(&self, function_id: &str, payload: Value) -> Value {
        let tag = self.start_call(function_id, json!({ "payload": payload }));
        self.result(&tag, 60)
    }

    /// Call and return the value, failing the test on an error.
    pub fn ok(&self, function_id: &str, payload: Value) -> Value {
        let r = self.call(function_id, payload);
        assert!(
            r.get("error").is_none(),
            "{} calling {function_id}: {r}\n{}",
            self.name,
            self.stderr()
        );
        r["ok"].clone()
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Invocations of function `fid` this worker ran so far (their `data`, with `t`).
    pub fn invocations(&self, fid: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["ev"] == "invoked" && e["fn"] == fid)
            .collect()
    }

    /// Wait up to `secs` for an event that `pred` accepts.
    pub fn wait(&self, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(e) = self.events.lock().unwrap().iter().find(|e| pred(e)) {
                return e.clone();
            }
            if let Some(st) = self.exited() {
                panic!(
                    "{}: exited ({st}) waiting for {what}: {}",
                    self.name,
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {secs} s; events {:?}\nstderr: {}",
                self.name,
                self.events(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until `fid` ran at least `n` times; those invocations.
    pub fn wait_invocations(&self, fid: &str, n: usize, secs: u64) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.invocations(fid);
            if v.len() >= n {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {fid} ran {} time(s), not {n}, within {secs} s: {v:?}\n{}",
                self.name,
                v.len(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` by PID, and reap it.
    pub fn kill9(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = iii::sys::pid::kill(c.id() as i32, libc::SIGKILL);
            let _ = c.wait();
        }
    }
}

impl Drop for Puppet {
    fn drop(&mut self) {
        self.kill9();
    }
}
