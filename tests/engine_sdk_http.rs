//! `iii-http` in front of real SDK workers: query params, JSON bodies, `:param` routes,
//! custom status and headers, two workers serving different routes at once, and the 404 /
//! 500 / 504 envelopes. Requests go over plain TCP from the test; workers and the engine are
//! ended by PID in Drop guards.

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

use std::time::{Duration, Instant};

use serde_json::json;

use sdk::{Project, ALL_BUILTINS};

/// Node serves `/n/items` (GET and POST) and `/n/items/:id`, Python serves `/py/hello`; both
/// answer at the same time, each with what its route was given.
#[test]
fn routes_of_two_workers_with_params_bodies_status_and_headers() {
    let sdk = sdks!();
    let p = Project::started("http-routes", ALL_BUILTINS);
    let node = sdk.node(&p, "node-http");
    let py = sdk.python(&p, "py-http");
    node.function("n::list", "http", json!({}));
    node.function(
        "n::create",
        "http",
        json!({"status": 201, "headers": {"x-created-by": "node", "Location": "/n/items/9"}}),
    );
    node.function("n::get", "http", json!({}));
    py.function("py::hello", "http", json!({"headers": {"x-example": "py"}}));
    py.function("py::slowish", "http", json!({"sleep_ms": 500}));
    node.trigger(
        "a",
        "http",
        "n::list",
        json!({"api_path": "/n/items", "http_method": "GET"}),
    );
    node.trigger(
        "b",
        "http",
        "n::create",
        json!({"api_path": "/n/items", "http_method": "POST"}),
    );
    node.trigger("c", "http", "n::get", json!({"api_path": "n/items/:id"}));
    py.trigger(
        "d",
        "http",
        "py::hello",
        json!({"api_path": "/py/hello", "http_method": "get"}),
    );
    py.trigger(
        "e",
        "http",
        "py::slowish",
        json!({"api_path": "/py/slowish"}),
    );
    for f in ["n::list", "n::create", "n::get", "py::hello", "py::slowish"] {
        p.wait_bindings(f, 1);
    }
    let port = p.http_port.unwrap();

    let r = http::get(port, "/n/items?name=doc&x=1&empty=");
    assert_eq!(r.status, 200, "{r:?}");
    let b = r.json();
    assert_eq!(b["worker"], "node");
    assert_eq!(b["method"], "GET");
    assert_eq!(b["path"], "/n/items");
    assert_eq!(
        b["query_params"],
        json!({"name": "doc", "x": "1", "empty": ""})
    );
    assert_eq!(b["body"], json!(null));
    assert_eq!(b["has_channels"], true, "request_body/response keys: {b}");

    let r = http::request(
        port,
        "POST",
        "/n/items",
        &[("Content-Type", "application/json")],
        br#"{"a": 40, "b": [2]}"#,
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("x-created-by"), Some("node"), "{r:?}");
    assert_eq!(r.header("location"), Some("/n/items/9"), "{r:?}");
    assert!(r
        .header("content-type")
        .unwrap()
        .contains("application/json"));
    assert_eq!(r.json()["body"], json!({"a": 40, "b": [2]}));
    assert_eq!(r.json()["method"], "POST");

    let r = http::get(port, "/n/items/42");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path_params"], json!({"id": "42"}));
    assert_eq!(r.json()["path"], "/n/items/:id");

    // Both workers at once: a slow Python request does not hold up Node's.
    let slow = std::thread::spawn(move || http::get(port, "/py/slowish"));
    py.wait_invocations("py::slowish", 1, 30);
    let t = Instant::now();
    let r = http::get(port, "/n/items/7");
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    let r = http::get(port, "/py/hello?name=curl");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-example"), Some("py"));
    assert_eq!(r.json()["worker"], "python");
    assert_eq!(r.json()["query_params"]["name"], "curl");
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["worker"], "python");

    assert_eq!(node.invocations("n::get").len(), 2);
    assert_eq!(py.invocations("py::hello").len(), 1);
}

/// The error envelopes: an unknown route is 404, a handler that throws is 500 with its code
/// and message, a handler slower than `default_timeout` (2 s here) is 504.
#[test]
fn unknown_route_404_thrown_500_slow_504() {
    let sdk = sdks!();
    let p = Project::started("http-errors", ALL_BUILTINS);
    let node = sdk.node(&p, "node-http");
    let py = sdk.python(&p, "py-http");
    node.function(
        "n::throws",
        "throw",
        json!({"message": "node handler broke"}),
    );
    py.function(
        "py::throws",
        "throw",
        json!({"message": "python handler broke"}),
    );
    py.function("py::slow", "http", json!({"sleep_ms": 3000}));
    node.trigger("a", "http", "n::throws", json!({"api_path": "/n/throws"}));
    py.trigger("b", "http", "py::throws", json!({"api_path": "/py/throws"}));
    py.trigger("c", "http", "py::slow", json!({"api_path": "/py/slow"}));
    for f in ["n::throws", "py::throws", "py::slow"] {
        p.wait_bindings(f, 1);
    }
    let port = p.http_port.unwrap();

    let r = http::get(port, "/nope");
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"error": {"code": "NOT_FOUND", "message": "Not Found"}})
    );
    // A route's method is part of it.
    let r = http::request(port, "DELETE", "/n/throws", &[], b"");
    assert_eq!(r.status, 404, "{r:?}");

    for (path, message) in [
        ("/n/throws", "node handler broke"),
        ("/py/throws", "python handler broke"),
    ] {
        let r = http::get(port, path);
        assert_eq!(r.status, 500, "{path}: {r:?}");
        let e = &r.json()["error"];
        assert_eq!(e["code"], "invocation_failed", "{path}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(message),
            "{path}: {e}"
        );
        assert!(e["error_id"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
    }

    let t = Instant::now();
    let r = http::get(port, "/py/slow");
    let took = t.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "504 after {took:?}"
    );
    // The handler's late answer is dropped; the engine goes on serving.
    py.wait("the slow handler's end", 30, |e| e["ev"] == "woke");
    let r = http::get(port, "/py/throws");
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(py.invocations("py::slow").len(), 1);
}
