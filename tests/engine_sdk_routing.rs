//! Calls between real SDK workers (Node `iii-sdk` 0.22.1, Python `iii-sdk` 0.25.0) through the
//! engine: each SDK calls the other's functions, `void` calls, unknown ids, and a callee killed
//! mid-call. Workers and the engine are ended by PID in Drop guards.

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

use serde_json::json;

use raw::RawWs;
use sdk::{Lang, Project, ALL_BUILTINS};

/// Node serves `math::add` and Python calls it; Python serves a function and Node calls it.
/// Both keep their telemetry on: the engine drains their `/otel` sockets meanwhile.
#[test]
fn node_and_python_call_each_other() {
    let sdk = sdks!();
    let p = Project::started("routing", ALL_BUILTINS);
    let node = sdk.with_telemetry(&p, Lang::Node, "node-math");
    let py = sdk.with_telemetry(&p, Lang::Python, "py-greet");
    node.function("math::add", "add", json!({"description": "Adds a and b"}));
    py.function("greet::hello", "echo", json!({}));
    p.wait_functions(&["math::add", "greet::hello"]);

    assert_eq!(
        py.ok("math::add", json!({"a": 2, "b": 3})),
        json!({"sum": 5})
    );
    let seen = node.wait_invocations("math::add", 1, 10);
    assert_eq!(seen[0]["data"]["a"], 2);

    let back = node.ok("greet::hello", json!({"name": "node", "n": [1, 2]}));
    assert_eq!(back["name"], "node");
    assert_eq!(back["n"], json!([1, 2]));
    // The engine tells the callee who called, as the reference engine does.
    let workers = p.sdk_workers();
    let node_id = workers
        .iter()
        .find(|w| w["name"] == "node-math")
        .unwrap_or_else(|| panic!("node-math not listed: {workers:?}"))["id"]
        .clone();
    assert_eq!(back["_caller_worker_id"], node_id);

    // Telemetry: the SDKs' /otel sockets were taken (no reconnect loop on either side), and
    // a raw one shows the engine reads and drops such frames.
    let mut otel = RawWs::upgrade(p.port, "/otel").unwrap();
    otel.send_frame(2, b"OTLP{\"resourceSpans\":[]}").unwrap();
    otel.send_frame(9, b"hi").unwrap();
    match otel.next_frame(Duration::from_secs(10)).unwrap() {
        raw::Frame::Pong(b) => assert_eq!(b, b"hi"),
        f => panic!("/otel answered {f:?}"),
    }
    assert_eq!(
        py.ok("math::add", json!({"a": 40, "b": 2})),
        json!({"sum": 42})
    );
    let node_out = p.dir.path().join("node-math.stdout");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&node_out)
        .unwrap_or_default()
        .contains("[OTel] Connected to engine")
    {
        assert!(Instant::now() < deadline, "Node never opened /otel");
        std::thread::sleep(Duration::from_millis(50));
    }
    for w in [&node, &py] {
        let out = std::fs::read_to_string(p.dir.path().join(format!("{}.stdout", w.name)))
            .unwrap_or_default()
            + &w.stderr();
        assert!(
            !out.contains("WebSocket error") && !out.contains("OTel WS disconnected"),
            "{}: telemetry socket trouble: {out}",
            w.name
        );
    }
    let log = p.stderr();
    assert!(!log.contains("dropped a frame"), "engine complained: {log}");
}

/// A `void` call reaches its callee and nothing comes back to the caller: neither SDK waits,
/// and a raw client sees no `invocationresult` for it.
#[test]
fn void_calls_reach_the_callee_and_get_no_reply() {
    let sdk = sdks!();
    let p = Project::started("void", ALL_BUILTINS);
    let node = sdk.node(&p, "node-sink");
    let py = sdk.python(&p, "py-sink");
    node.function("sink::node", "echo", json!({}));
    py.function("sink::py", "echo", json!({}));
    p.wait_functions(&["sink::node", "sink::py"]);

    let tag = py.start_call(
        "sink::node",
        json!({"payload": {"from": "py"}, "void": true}),
    );
    let r = py.result(&tag, 30);
    assert_eq!(r["ok"], json!(null), "void from Python: {r}");
    let got = node.wait_invocations("sink::node", 1, 30);
    assert_eq!(got[0]["data"]["from"], "py");

    let tag = node.start_call(
        "sink::py",
        json!({"payload": {"from": "node"}, "void": true}),
    );
    let r = node.result(&tag, 30);
    assert_eq!(r["ok"], json!(null), "void from Node: {r}");
    let got = py.wait_invocations("sink::py", 1, 30);
    assert_eq!(got[0]["data"]["from"], "node");

    // On the wire: a void call, then an ordinary one. The ordinary call's answer is the first
    // thing that comes back, and nothing follows it for the void one.
    let mut ws = RawWs::connect(p.port).unwrap();
    ws.send_json(
        &json!({"type": "invokefunction", "function_id": "sink::node",
                         "data": {"from": "raw"}, "action": {"type": "void"}}),
    )
    .unwrap();
    node.wait("the raw void call", 30, |e| {
        e["ev"] == "invoked" && e["data"]["from"] == "raw"
    });
    let id = "5b0c2f8e-3a41-4f7e-9d7b-0c1d2e3f4a5b";
    ws.send_json(&json!({"type": "invokefunction", "invocation_id": id,
                         "function_id": "sink::node", "data": {"from": "raw-call"}}))
        .unwrap();
    let first = ws.next_json(Duration::from_secs(30)).unwrap();
    assert_eq!(first["type"], "invocationresult", "{first}");
    assert_eq!(first["invocation_id"], id, "{first}");
    assert_eq!(first["result"]["from"], "raw-call");
    match ws.next_json(Duration::from_millis(700)) {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!("something came back after the answer: {other:?}"),
    }
}

/// An id nobody serves: both SDKs' callers fail with `function_not_found`, at once.
#[test]
fn unknown_function_fails_with_function_not_found() {
    let sdk = sdks!();
    let p = Project::started("notfound", ALL_BUILTINS);
    let node = sdk.node(&p, "node-caller");
    let py = sdk.python(&p, "py-caller");
    for w in [&node, &py] {
        let r = w.call("does::not-exist", json!({"x": 1}));
        assert_eq!(
            r["error"]["code"], "function_not_found",
            "{:?}: {r}",
            w.lang
        );
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("does::not-exist"),
            "{r}"
        );
        assert!(r["ms"].as_u64().unwrap() < 10_000, "{r}");
    }
}

/// A worker killed (`kill -9`) while running a call: its caller gets `invocation_stopped`
/// right away, not the SDK's 30 s timeout. Both directions.
#[test]
fn a_killed_callee_stops_its_callers_invocation() {
    let sdk = sdks!();
    let p = Project::started("killed", ALL_BUILTINS);
    let node = sdk.node(&p, "node-caller");
    let py = sdk.python(&p, "py-caller");
    let slow_py = sdk.python(&p, "py-slow");
    let slow_node = sdk.node(&p, "node-slow");
    slow_py.function("slow::py", "reply", json!({"sleep_ms": 120_000}));
    slow_node.function("slow::node", "reply", json!({"sleep_ms": 120_000}));
    p.wait_functions(&["slow::py", "slow::node"]);

    for (caller, callee, fid) in [
        (&node, &slow_py, "slow::py"),
        (&py, &slow_node, "slow::node"),
    ] {
        let tag = caller.start_call(fid, json!({"payload": {}, "timeout_ms": 60_000}));
        callee.wait_invocations(fid, 1, 30);
        let killed = Instant::now();
        callee.kill9();
        let r = caller.result(&tag, 60);
        let waited = killed.elapsed();
        assert_eq!(
            r["error"]["code"], "invocation_stopped",
            "{:?} calling {fid}: {r}",
            caller.lang
        );
        assert!(
            waited < Duration::from_secs(10),
            "{:?}: invocation_stopped came {waited:?} after the kill",
            caller.lang
        );
    }
    // The engine forgot the dead workers' functions.
    let ids = p.function_ids();
    assert!(
        !ids.iter().any(|i| i.starts_with("slow::")),
        "still listed: {ids:?}"
    );
}
