//! The engine stopped (SIGTERM) and started again on the same ports under connected SDK
//! workers: both SDKs reconnect and replay, the same calls and routes work again, and nothing
//! is registered twice. Workers and engines are ended by PID in Drop guards.

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

#[path = "common/http.rs"]
mod http;

use serde_json::json;

use sdk::{free_port, Project};

#[test]
fn workers_reconnect_and_replay_after_an_engine_restart() {
    let sdk = sdks!();
    let (port, http_port) = (free_port(), free_port());
    let config = format!(
        "workers:
  - name: iii-worker-manager
    config: {{port: {port}}}
  - name: iii-http
    config: {{port: {http_port}}}
  - name: iii-pubsub
"
    );
    let mut p = Project::started("restart", &config);
    let node = sdk.node(&p, "node-math");
    let py = sdk.python(&p, "py-greet");
    node.function("math::add", "add", json!({}));
    node.function("http::items", "http", json!({}));
    node.trigger(
        "route",
        "http",
        "http::items",
        json!({"api_path": "/items", "http_method": "GET"}),
    );
    py.function("greet::hello", "echo", json!({}));
    py.function("topic::py", "echo", json!({}));
    py.trigger("sub", "subscribe", "topic::py", json!({"topic": "t"}));
    let ours = ["math::add", "http::items", "greet::hello", "topic::py"];
    p.wait_functions(&ours);
    p.wait_bindings("http::items", 1);
    p.wait_bindings("topic::py", 1);

    let works = |p: &Project, round: u32| {
        assert_eq!(
            py.ok("math::add", json!({"a": round, "b": 1})),
            json!({"sum": round + 1})
        );
        assert_eq!(node.ok("greet::hello", json!({"r": round}))["r"], round);
        let r = http::get(p.http_port.unwrap(), "/items?round=x");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["worker"], "node");
        node.ok("publish", json!({"topic": "t", "data": {"round": round}}));
        py.wait("the published data", 30, |e| {
            e["ev"] == "invoked" && e["fn"] == "topic::py" && e["data"]["round"] == round
        });
    };
    works(&p, 1);
    p.wait_sdk_workers(&["node-math", "py-greet"]);

    for round in 2..=3 {
        p.stop();
        p.start();
        assert_eq!(p.port, port);
        p.wait_functions(&ours);
        p.wait_bindings("http::items", 1);
        p.wait_bindings("topic::py", 1);
        works(&p, round);

        // One registration each: the function list, the bindings, the workers.
        let ids = p.function_ids();
        for id in ours {
            assert_eq!(ids.iter().filter(|i| *i == id).count(), 1, "{id}: {ids:?}");
        }
        let bindings = p.bindings();
        let sdk_bindings: Vec<_> = bindings
            .iter()
            .filter(|b| b["function_id"] == "http::items" || b["function_id"] == "topic::py")
            .collect();
        assert_eq!(sdk_bindings.len(), 2, "{bindings:?}");
        let workers = p.wait_sdk_workers(&["node-math", "py-greet"]);
        for w in &workers {
            assert_eq!(w["function_count"], 2, "{w}");
        }
    }
    // A trigger's invocation fired once per publish, not once per replayed binding.
    let rounds: Vec<_> = py
        .invocations("topic::py")
        .iter()
        .map(|e| e["data"]["round"].as_u64().unwrap())
        .collect();
    assert_eq!(rounds, [1, 2, 3], "{rounds:?}");
}
