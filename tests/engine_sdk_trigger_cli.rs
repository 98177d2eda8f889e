//! `iii trigger` against functions real SDK workers serve: the result as JSON on stdout (exit
//! 0), a function's error as one `error: CODE: message` line (exit 1), and no engine at all
//! (exit 1 at once). Workers and the engine are ended by PID in Drop guards.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/engine.rs"]
mod engine;
#[path = "common/raw.rs"]
mod raw;
#[macro_use]
#[path = "common/sdk.rs"]
mod sdk;
#[path = "common/tempdir.rs"]
mod tempdir;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use sdk::{free_port, Project};

fn stdout_json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {:?} / stderr {:?}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
fn iii_trigger_calls_sdk_functions_and_reports_their_errors() {
    let sdk = sdks!();
    // A fixed port, so that `iii trigger` without flags finds the engine through config.yaml.
    let port = free_port();
    let config = format!("workers:\n  - name: iii-worker-manager\n    config: {{port: {port}}}\n");
    let p = Project::started("trigger-cli", &config);
    let node = sdk.node(&p, "node-math");
    let py = sdk.python(&p, "py-fail");
    node.function("math::add", "add", json!({}));
    node.function("echo::it", "echo", json!({}));
    py.function(
        "fail::it",
        "throw",
        json!({"message": "the handler said no"}),
    );
    p.wait_functions(&["math::add", "echo::it", "fail::it"]);
    let port_s = port.to_string();

    // The project's engine, found through config.yaml.
    let o = p.iii(&["trigger", "math::add", "a=2", "b=40"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(stdout_json(&o), json!({"sum": 42}));

    // The reference's flags; --json with KEY=VALUE on top.
    let o = p.iii(&[
        "trigger",
        "echo::it",
        "--address",
        "127.0.0.1",
        "--port",
        &port_s,
        "--json",
        r#"{"nested": {"x": [1, 2]}, "s": "t"}"#,
        "extra=true",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v = stdout_json(&o);
    assert_eq!(v["nested"], json!({"x": [1, 2]}), "{v}");
    assert_eq!(v["s"], "t");
    assert_eq!(v["extra"], true);

    for (fid, code, message) in [
        ("fail::it", "invocation_failed", "the handler said no"),
        ("no::such", "function_not_found", "no::such"),
    ] {
        let o = p.iii(&["trigger", fid, "--port", &port_s]);
        assert_eq!(o.status.code(), Some(1), "{fid}: {o:?}");
        assert!(o.stdout.is_empty(), "{fid}: stdout {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        let line = err
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("{fid}: no error line: {err}"));
        assert!(
            line.starts_with(&format!("error: {code}: ")),
            "{fid}: {line}"
        );
        assert!(line.contains(message), "{fid}: {line}");
    }
    assert_eq!(py.invocations("fail::it").len(), 1);
}

/// No engine on the port: exit 1 with a message, at once (not after the call's timeout).
#[test]
fn iii_trigger_without_an_engine_fails_at_once() {
    let port = free_port();
    let config = format!("workers:\n  - name: iii-worker-manager\n    config: {{port: {port}}}\n");
    let p = Project::new("trigger-none", &config);
    let port_s = port.to_string();
    for args in [
        vec!["trigger", "math::add", "a=1"],
        vec!["trigger", "math::add", "--port", &port_s],
    ] {
        let t = Instant::now();
        let o = p.iii(&args);
        let took = t.elapsed();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(&port.to_string()), "{args:?}: {err}");
        assert!(took < Duration::from_secs(2), "{args:?}: took {took:?}");
        assert!(o.stdout.is_empty());
    }
}
