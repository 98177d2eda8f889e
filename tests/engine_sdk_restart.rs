//! SDK workers that lose their engine connection: the engine stopped (SIGTERM) and started
//! again on the same ports, or the connection cut while the engine lives on. Both SDKs
//! reconnect and replay, the same calls and routes work again, and nothing is registered
//! twice. Workers and engines are ended by PID in Drop guards.

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

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A TCP relay between SDK workers and the engine whose worker-side ends can be cut while
/// the engine-side ends stay open: to the engine the old connections look alive (as after a
/// network failure it has not noticed), so a reconnecting worker must retire its previous
/// connection with `reattach` to take its ids back.
struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    worker_side: Arc<Mutex<Vec<TcpStream>>>,
    engine_side: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn new(engine_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let worker_side: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let engine_side: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (s, w, e) = (stop.clone(), worker_side.clone(), engine_side.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(up) = TcpStream::connect(("127.0.0.1", engine_port)) else {
                    continue;
                };
                w.lock().unwrap().push(client.try_clone().unwrap());
                e.lock().unwrap().push(up.try_clone().unwrap());
                let (mut c1, mut u1) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                let (mut c2, mut u2) = (client, up);
                // Neither direction closes the engine's side when the worker's goes.
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut u1);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                });
            }
        });
        Relay {
            port,
            stop,
            worker_side,
            engine_side,
        }
    }

    /// Cut every worker-side connection; the engine-side ones stay open.
    fn cut_workers(&self) -> usize {
        let mut w = self.worker_side.lock().unwrap();
        for s in w.iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let n = w.len();
        w.clear();
        n
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self
            .worker_side
            .lock()
            .unwrap()
            .iter()
            .chain(self.engine_side.lock().unwrap().iter())
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Both SDKs lose their connection while the engine still believes in it; they reconnect,
/// `reattach` retires the old connection, and their functions and triggers work again with
/// one registration each.
#[test]
fn workers_reconnecting_to_a_live_engine_take_over_their_ids() {
    let sdk = sdks!();
    let mut p = Project::started("reattach", sdk::ALL_BUILTINS);
    let relay = Relay::new(p.port);
    let engine_port = p.port;
    // The workers reach the engine through the relay.
    p.port = relay.port;
    let node = sdk.node(&p, "node-math");
    let py = sdk.python(&p, "py-greet");
    p.port = engine_port;
    node.function("math::add", "add", json!({}));
    py.function("greet::hello", "echo", json!({}));
    py.function("topic::py", "echo", json!({}));
    py.trigger("sub", "subscribe", "topic::py", json!({"topic": "t"}));
    p.wait_functions(&["math::add", "greet::hello", "topic::py"]);
    p.wait_bindings("topic::py", 1);
    p.wait_sdk_workers(&["node-math", "py-greet"]);
    assert_eq!(
        p.call("math::add", json!({"a": 1, "b": 2})),
        Ok(json!({"sum": 3}))
    );

    assert!(relay.cut_workers() >= 2);
    // Both come back, and the old connections are retired: two workers, not four.
    let deadline = Instant::now() + Duration::from_secs(60);
    while p
        .stderr()
        .matches("retiring its previous connection")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no reattach seen: {}",
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let workers = p.wait_sdk_workers(&["node-math", "py-greet"]);
    for round in 1..=3u64 {
        assert_eq!(
            p.call("math::add", json!({"a": round, "b": 2})),
            Ok(json!({"sum": round + 2})),
            "{}",
            p.stderr()
        );
        assert_eq!(
            p.call("greet::hello", json!({"r": round}))
                .map(|v| v["r"].clone()),
            Ok(json!(round))
        );
    }
    assert_eq!(
        py.ok("math::add", json!({"a": 5, "b": 5})),
        json!({"sum": 10})
    );
    node.ok("publish", json!({"topic": "t", "data": {"after": true}}));
    py.wait("the published data", 30, |e| {
        e["ev"] == "invoked" && e["fn"] == "topic::py" && e["data"]["after"] == true
    });
    assert_eq!(py.invocations("topic::py").len(), 1);
    assert_eq!(p.wait_bindings("topic::py", 1).len(), 1);
    let log = p.stderr();
    assert!(!log.contains("registration refused"), "{log}");
    for w in workers {
        let n = if w["name"] == "node-math" { 1 } else { 2 };
        assert_eq!(w["function_count"], n, "{w}");
    }
}
