//! `iii-state` from real SDK workers: every function and every `state::update` operation, the
//! `state` trigger's events with old and new values, and the `file_based` store across an
//! engine restart and a `kill -9`. Workers and the engine are ended by PID in Drop guards.

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

use serde_json::{json, Value};

use sdk::{free_port, Project, ALL_BUILTINS};

/// set / get / update (each op) / delete / list / list_groups, written by one SDK and read by
/// the other.
#[test]
fn state_functions_from_both_sdks() {
    let sdk = sdks!();
    let p = Project::started("state", ALL_BUILTINS);
    let node = sdk.node(&p, "node-state");
    let py = sdk.python(&p, "py-state");

    let r = py.ok(
        "state::set",
        json!({"scope": "s1", "key": "k1", "value": {"n": 1, "gone": true}}),
    );
    assert_eq!(
        r,
        json!({"old_value": null, "new_value": {"n": 1, "gone": true}})
    );
    assert_eq!(
        node.ok("state::get", json!({"scope": "s1", "key": "k1"})),
        json!({"n": 1, "gone": true})
    );
    assert_eq!(
        node.ok("state::get", json!({"scope": "s1", "key": "absent"})),
        json!(null)
    );

    let r = node.ok(
        "state::update",
        json!({"scope": "s1", "key": "k1", "ops": [
            {"type": "set", "path": "name", "value": "x"},
            {"type": "merge", "path": ["nested", "deep"], "value": {"a": 1}},
            {"type": "merge", "path": ["nested", "deep"], "value": {"b": 2}},
            {"type": "increment", "path": "n", "by": 5},
            {"type": "decrement", "path": "n", "by": 2},
            {"type": "increment", "path": "count"},
            {"type": "append", "path": "tags", "value": "t1"},
            {"type": "append", "path": "tags", "value": {"t": 2}},
            {"type": "append", "path": "name", "value": "yz"},
            {"type": "remove", "path": "gone"},
        ]}),
    );
    let want = json!({"n": 4, "count": 1, "name": "xyz", "nested": {"deep": {"a": 1, "b": 2}},
                      "tags": ["t1", {"t": 2}]});
    assert_eq!(r["old_value"], json!({"n": 1, "gone": true}), "{r}");
    assert_eq!(r["new_value"], want, "{r}");
    assert!(r.get("errors").is_none(), "{r}");
    assert_eq!(
        py.ok("state::get", json!({"scope": "s1", "key": "k1"})),
        want
    );

    // An operation that cannot apply is reported; the others still do.
    let r = py.ok(
        "state::update",
        json!({"scope": "s1", "key": "k1", "ops": [
            {"type": "increment", "path": "name", "by": 1},
            {"type": "set", "path": "after", "value": true},
        ]}),
    );
    assert_eq!(r["errors"][0]["op_index"], 0, "{r}");
    assert_eq!(r["new_value"]["after"], true, "{r}");
    assert_eq!(r["new_value"]["name"], "xyz", "{r}");
    // Whole-value operations (no path) and an update that creates its key.
    let r = py.ok(
        "state::update",
        json!({"scope": "s2", "key": "counter", "ops": [{"type": "increment", "by": 10}]}),
    );
    assert_eq!(r, json!({"old_value": null, "new_value": 10}));
    py.ok(
        "state::set",
        json!({"scope": "s2", "key": "other", "value": "v"}),
    );

    let mut list = node
        .ok("state::list", json!({"scope": "s2"}))
        .as_array()
        .unwrap()
        .clone();
    list.sort_by_key(|v| v.to_string());
    assert_eq!(list, [json!("v"), json!(10)]); // sorted by their JSON text
    let groups = py.ok("state::list_groups", json!({}));
    let mut g: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    g.sort();
    assert_eq!(g, ["s1", "s2"], "{groups}");

    let deleted = node.ok("state::delete", json!({"scope": "s2", "key": "counter"}));
    assert_eq!(deleted, json!(10));
    assert_eq!(
        py.ok("state::get", json!({"scope": "s2", "key": "counter"})),
        json!(null)
    );
    assert_eq!(
        node.ok("state::delete", json!({"scope": "s2", "key": "counter"})),
        json!(null)
    );
    assert_eq!(py.ok("state::list", json!({"scope": "s2"})), json!(["v"]));
    let r = py.call("state::set", json!({"scope": "", "key": "k"}));
    assert!(r.get("error").is_some(), "an empty scope was accepted: {r}");
}

/// `state` triggers: created / updated / deleted with the old and new values, filtered by
/// scope (and by key).
#[test]
fn state_triggers_tell_each_change() {
    let sdk = sdks!();
    let p = Project::started("state-trigger", ALL_BUILTINS);
    let node = sdk.node(&p, "node-watch");
    let py = sdk.python(&p, "py-write");
    node.function("n::watch", "reply", json!({}));
    py.function("p::watch_b", "reply", json!({}));
    node.trigger("scope", "state", "n::watch", json!({"scope": "watched"}));
    py.trigger(
        "key",
        "state",
        "p::watch_b",
        json!({"scope": "watched", "key": "b"}),
    );
    p.wait_bindings("n::watch", 1);
    p.wait_bindings("p::watch_b", 1);

    py.ok(
        "state::set",
        json!({"scope": "watched", "key": "a", "value": 1}),
    );
    py.ok(
        "state::set",
        json!({"scope": "watched", "key": "a", "value": {"v": 2}}),
    );
    py.ok(
        "state::update",
        json!({"scope": "watched", "key": "a", "ops": [{"type": "increment", "path": "v"}]}),
    );
    py.ok(
        "state::set",
        json!({"scope": "elsewhere", "key": "a", "value": 1}),
    );
    py.ok(
        "state::set",
        json!({"scope": "watched", "key": "b", "value": "bee"}),
    );
    py.ok("state::delete", json!({"scope": "watched", "key": "a"}));

    let seen = node.wait_invocations("n::watch", 5, 30);
    let got: Vec<Value> = seen.iter().map(|e| e["data"].clone()).collect();
    let event = |ty: &str, key: &str, old: Value, new: Value| {
        json!({"type": "state", "event_type": ty, "scope": "watched", "key": key,
               "old_value": old, "new_value": new})
    };
    assert_eq!(
        got,
        [
            event("state:created", "a", json!(null), json!(1)),
            event("state:updated", "a", json!(1), json!({"v": 2})),
            event("state:updated", "a", json!({"v": 2}), json!({"v": 3})),
            event("state:created", "b", json!(null), json!("bee")),
            event("state:deleted", "a", json!({"v": 3}), json!(null)),
        ]
    );
    let b = py.wait_invocations("p::watch_b", 1, 30);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(
        b[0]["data"],
        event("state:created", "b", json!(null), json!("bee"))
    );
}

/// `file_based`: values survive a clean restart, and after `kill -9` every write the engine
/// acknowledged is there — with a minute between fsyncs, so it is the log written before the
/// answer that keeps them, not the periodic sync.
#[test]
fn file_based_state_survives_restart_and_kill9() {
    let sdk = sdks!();
    let port = free_port();
    let config = format!(
        "workers:
  - name: iii-worker-manager
    config: {{port: {port}}}
  - name: iii-state
    config:
      adapter:
        name: kv
        config: {{store_method: file_based, file_path: state-data, save_interval_ms: 60000}}
"
    );
    let mut p = Project::started("state-file", &config);
    let py = sdk.python(&p, "py-state");
    let write = |from: usize, to: usize| {
        let tags: Vec<String> = (from..to)
            .map(|i| {
                py.start_call(
                    "state::set",
                    json!({"payload": {"scope": "durable", "key": format!("k{i}"),
                                       "value": {"i": i, "pad": "x".repeat(i % 300)}}}),
                )
            })
            .collect();
        for t in tags {
            let r = py.result(&t, 60);
            assert!(r.get("error").is_none(), "{r}");
        }
    };
    let check = |p: &Project, n: usize| {
        let mut ws = raw::RawWs::connect(p.port).unwrap();
        for i in 0..n {
            let v = ws
                .call(
                    "state::get",
                    json!({"scope": "durable", "key": format!("k{i}")}),
                )
                .unwrap();
            assert_eq!(
                v,
                json!({"i": i, "pad": "x".repeat(i % 300)}),
                "k{i} after a restart"
            );
        }
    };
    write(0, 50);
    py.ok(
        "state::update",
        json!({"scope": "durable", "key": "counter",
                                  "ops": [{"type": "increment", "by": 7}]}),
    );
    py.ok(
        "state::set",
        json!({"scope": "doomed", "key": "x", "value": 1}),
    );
    py.ok("state::delete", json!({"scope": "doomed", "key": "x"}));

    p.stop();
    p.start();
    check(&p, 50);
    assert_eq!(
        p.call("state::get", json!({"scope": "durable", "key": "counter"})),
        Ok(json!(7))
    );
    assert_eq!(
        p.call("state::get", json!({"scope": "doomed", "key": "x"})),
        Ok(json!(null))
    );

    // The worker reconnects by itself; more writes, then the engine dies without warning.
    p.wait_sdk_workers(&["py-state"]);
    write(50, 250);
    py.ok(
        "state::update",
        json!({"scope": "durable", "key": "counter",
                                  "ops": [{"type": "increment", "by": 1}]}),
    );
    p.kill9();
    p.start();
    check(&p, 250);
    assert_eq!(
        p.call("state::get", json!({"scope": "durable", "key": "counter"})),
        Ok(json!(8))
    );
    let groups = p.call("state::list_groups", json!({})).unwrap();
    assert_eq!(groups, json!({"groups": ["durable"]}));
    assert!(
        p.dir.path().join("state-data").is_dir(),
        "file_path is relative to config.yaml"
    );
}
