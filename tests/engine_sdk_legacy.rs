//! The engine serves the Python SDK of the user guide's era too (PyPI `iii-sdk` 0.11, whose
//! examples import `Logger`): a 0.11 worker registers a function and an HTTP route, calls a
//! built-in and a current (0.25) SDK worker's function, and is called back through the
//! engine, `iii trigger` and `iii-http`.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/engine.rs"]
mod engine;
#[path = "common/http.rs"]
mod http;
#[path = "common/raw.rs"]
mod raw;
#[macro_use]
#[path = "common/sdk.rs"]
mod sdk;
#[path = "common/tempdir.rs"]
mod tempdir;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use sdk::{Project, ALL_BUILTINS};

const WORKER: &str = r#"
import os, sys, time
from iii import register_worker, InitOptions, Logger
iii = register_worker(os.environ["III_URL"], InitOptions(worker_name="legacy-py"))
def echo(data):
    return {"echo": data, "sdk": "0.11"}
def http_echo(req):
    return {"status_code": 200, "headers": {"x-sdk": "0.11"},
            "body": {"name": (req.get("query_params") or {}).get("name")}}
iii.register_function("legacy::echo", echo)
iii.register_function("legacy::http", http_echo)
iii.register_trigger({"type": "http", "function_id": "legacy::http",
                      "config": {"api_path": "/legacy", "http_method": "GET"}})
time.sleep(0.3)
print("STATE", iii.trigger({"function_id": "state::set",
                            "payload": {"scope": "legacy", "key": "k", "value": 11}}), flush=True)
deadline = time.time() + 30
while True:
    try:
        print("SUM", iii.trigger({"function_id": "math::add", "payload": {"a": 20, "b": 22}}), flush=True)
        break
    except Exception as e:
        if time.time() > deadline:
            print("FAILED", e, flush=True)
            break
        time.sleep(0.2)
while True:
    time.sleep(3600)
"#;

/// The 0.11 worker process, killed by PID on drop.
struct Legacy(Child);

impl Drop for Legacy {
    fn drop(&mut self) {
        let _ = iii::sys::pid::kill(self.0.id() as i32, libc::SIGKILL);
        let _ = self.0.wait();
    }
}

#[test]
fn a_python_sdk_011_worker_routes_both_ways() {
    let sdk = sdks!();
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sdk/py011/bin/python");
    if !python.is_file() {
        skip!("iii-sdk 0.11 is not installed: run scripts/install-sdks.sh");
        return;
    }
    let p = Project::started("legacy-sdk", ALL_BUILTINS);
    let node = sdk.node(&p, "node-math");
    node.function("math::add", "add", json!({}));
    p.wait_functions(&["math::add"]);

    let script = p.dir.path().join("legacy.py");
    std::fs::write(&script, WORKER).unwrap();
    let out = p.dir.path().join("legacy.out");
    let child = Command::new(&python)
        .arg(&script)
        .env("III_URL", p.url())
        .env("OTEL_ENABLED", "false")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(p.dir.path().join("legacy.err")).unwrap())
        .spawn()
        .expect("starting the 0.11 worker");
    let _legacy = Legacy(child);

    // The 0.11 worker's own calls: a built-in, then a 0.25-era Node worker's function.
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let t = std::fs::read_to_string(&out).unwrap_or_default();
        if t.contains("SUM") || t.contains("FAILED") {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the 0.11 worker never finished its calls: {t}\n{}",
            std::fs::read_to_string(p.dir.path().join("legacy.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        text.contains("STATE") && text.contains("'new_value': 11"),
        "{text}"
    );
    assert!(text.contains("SUM {'sum': 42}"), "{text}");

    // Called through the engine: by a raw client, by `iii trigger`, and by iii-http.
    p.wait_functions(&["legacy::echo", "legacy::http"]);
    let r = p.call("legacy::echo", json!({"x": 1})).unwrap();
    assert_eq!(r["sdk"], "0.11");
    assert_eq!(r["echo"]["x"], 1);
    let t = p.iii(&["trigger", "legacy::echo", "y=2"]);
    assert_eq!(t.status.code(), Some(0), "{t:?}");
    let v: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
    assert_eq!(v["echo"]["y"], 2);
    let h = http::get(p.http_port.unwrap(), "/legacy?name=old");
    assert_eq!(h.status, 200);
    assert_eq!(h.header("x-sdk"), Some("0.11"));
    assert_eq!(h.json(), json!({"name": "old"}));
    let _ = node;
}
