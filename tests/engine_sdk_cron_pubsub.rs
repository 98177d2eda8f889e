//! `iii-cron` and `iii-pubsub` with real SDK workers: a every-second job fires with the
//! documented payload, a slow handler does not pile up firings, unregistering a trigger stops
//! its job; two subscribers of one topic both get a published `data`, other topics don't.
//! Workers and the engine are ended by PID in Drop guards.

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

use sdk::{Project, ALL_BUILTINS};

/// Milliseconds since the epoch of an RFC 3339 UTC time (`…Z` or `…+00:00`, optional
/// fraction); panics on anything else.
fn rfc3339_ms(s: &str) -> i64 {
    let bad = format!("not an RFC 3339 UTC time: {s:?}");
    let (date, rest) = s.split_once('T').expect(&bad);
    let time = rest
        .strip_suffix('Z')
        .or_else(|| rest.strip_suffix("+00:00"))
        .expect(&bad);
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    assert!(d.len() == 3 && t.len() == 3, "{s:?}");
    let ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    // Days from the civil date (H. Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000) + ms
}

/// `(year, month, day)` of a day count since the epoch (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `*/1 * * * * *` fires at least twice in 3 s, each time with `{trigger: "cron", job_id,
/// scheduled_time, actual_time}`: the job id is the binding's id, scheduled times fall on
/// whole seconds a second apart, and each firing happens just after its scheduled time.
#[test]
fn an_every_second_job_fires_with_the_documented_payload() {
    let sdk = sdks!();
    let p = Project::started("cron", ALL_BUILTINS);
    let node = sdk.node(&p, "node-cron");
    node.function("cron::tick", "reply", json!({}));
    node.trigger(
        "every",
        "cron",
        "cron::tick",
        json!({"expression": "*/1 * * * * *"}),
    );
    let binding = p.wait_bindings("cron::tick", 1).remove(0);
    let active = Instant::now();
    node.wait_invocations("cron::tick", 2, 3);
    assert!(
        active.elapsed() <= Duration::from_secs(3),
        "{:?}",
        active.elapsed()
    );
    let fired = node.wait_invocations("cron::tick", 3, 10);
    let mut last: Option<i64> = None;
    for f in &fired[..3] {
        let d = &f["data"];
        let keys: Vec<&String> = d.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 4, "payload {d}");
        assert_eq!(d["trigger"], "cron", "{d}");
        assert_eq!(d["job_id"], binding["id"], "{d}");
        let scheduled = rfc3339_ms(d["scheduled_time"].as_str().unwrap());
        let actual = rfc3339_ms(d["actual_time"].as_str().unwrap());
        assert_eq!(scheduled % 1000, 0, "{d}");
        assert!(
            actual >= scheduled && actual - scheduled < 1000,
            "fired {} ms after its time: {d}",
            actual - scheduled
        );
        assert!((now_ms() - actual).abs() < 60_000, "{d}");
        if let Some(prev) = last {
            assert!(scheduled > prev && (scheduled - prev) % 1000 == 0, "{d}");
        }
        last = Some(scheduled);
    }
    // The firings are a second apart, not a burst.
    let t: Vec<i64> = fired.iter().map(|f| f["t"].as_i64().unwrap()).collect();
    assert!(
        t[2] - t[0] >= 1500,
        "three firings within {} ms",
        t[2] - t[0]
    );
}

/// A cron worker that has been idle a while gets two jobs: one for a moment that has just
/// passed (a 7-field expression naming one second of one year) must never fire, and an
/// every-second one must not fire for a time before it was registered.
#[test]
fn jobs_do_not_fire_for_times_before_they_were_registered() {
    let sdk = sdks!();
    let p = Project::started("cron-past", ALL_BUILTINS);
    let node = sdk.node(&p, "node-cron");
    node.function("cron::past", "reply", json!({}));
    node.function("cron::every", "reply", json!({}));
    // The scenario itself: iii-cron idle (no jobs) for a couple of seconds.
    std::thread::sleep(Duration::from_millis(2500));
    let registered = now_ms();
    let past = registered / 1000 - 1;
    let (y, mo, d) = civil_from_days(past.div_euclid(86_400));
    let tod = past.rem_euclid(86_400);
    let expression = format!(
        "{} {} {} {d} {mo} * {y}",
        tod % 60,
        tod / 60 % 60,
        tod / 3600
    );
    node.trigger(
        "past",
        "cron",
        "cron::past",
        json!({"expression": expression}),
    );
    node.trigger(
        "every",
        "cron",
        "cron::every",
        json!({"expression": "* * * * * *"}),
    );
    let every = node.wait_invocations("cron::every", 2, 30);
    for f in &every {
        let scheduled = rfc3339_ms(f["data"]["scheduled_time"].as_str().unwrap());
        assert!(
            scheduled >= registered,
            "fired for {} ms before the job was registered: {f}",
            registered - scheduled
        );
    }
    assert_eq!(
        node.invocations("cron::past"),
        Vec::<Value>::new(),
        "{expression:?} fired after its time had passed"
    );
}

/// A handler that takes 2.5 s on an every-second job: never two runs at once, ticks that
/// come while it runs are skipped, not queued up for later.
#[test]
fn a_slow_cron_handler_does_not_pile_up() {
    let sdk = sdks!();
    let p = Project::started("cron-slow", ALL_BUILTINS);
    let py = sdk.python(&p, "py-cron");
    py.function("cron::slow", "reply", json!({"sleep_ms": 2500}));
    py.trigger(
        "slow",
        "cron",
        "cron::slow",
        json!({"expression": "* * * * * *"}),
    );
    p.wait_bindings("cron::slow", 1);
    let runs = py.wait_invocations("cron::slow", 3, 30);
    let events = py.events();
    // Each run starts after the previous one ended.
    let mut running = false;
    for e in events.iter().filter(|e| e["fn"] == "cron::slow") {
        match e["ev"].as_str().unwrap() {
            "invoked" => {
                assert!(!running, "a run started while one was running: {events:?}");
                running = true;
            }
            "woke" => running = false,
            _ => {}
        }
    }
    let t: Vec<i64> = runs.iter().map(|r| r["t"].as_i64().unwrap()).collect();
    for w in t.windows(2) {
        assert!(w[1] - w[0] >= 2400, "runs {} ms apart: {t:?}", w[1] - w[0]);
        assert!(w[1] - w[0] < 5000, "runs {} ms apart: {t:?}", w[1] - w[0]);
    }
    // No backlog: right after a run ends, the next starts at the next tick, not at once
    // with the skipped ones.
    let scheduled: Vec<i64> = runs
        .iter()
        .map(|r| rfc3339_ms(r["data"]["scheduled_time"].as_str().unwrap()))
        .collect();
    for w in scheduled.windows(2) {
        assert!(w[1] - w[0] >= 3000, "scheduled {scheduled:?}");
    }
}

/// Unregistering the trigger (Node: the trigger object's `unregister()`, Python: the
/// returned trigger's `unregister()`) stops the job.
#[test]
fn unregistering_a_cron_trigger_stops_it() {
    let sdk = sdks!();
    let p = Project::started("cron-stop", ALL_BUILTINS);
    let node = sdk.node(&p, "node-cron");
    let py = sdk.python(&p, "py-cron");
    node.function("cron::node", "reply", json!({}));
    py.function("cron::py", "reply", json!({}));
    node.trigger(
        "n",
        "cron",
        "cron::node",
        json!({"expression": "* * * * * *"}),
    );
    py.trigger(
        "p",
        "cron",
        "cron::py",
        json!({"expression": "* * * * * *"}),
    );
    node.wait_invocations("cron::node", 1, 30);
    py.wait_invocations("cron::py", 1, 30);
    node.untrigger("n");
    py.untrigger("p");
    p.wait_bindings("cron::node", 0);
    p.wait_bindings("cron::py", 0);
    // A firing already on its way when the binding went may still land: give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    let (n, y) = (
        node.invocations("cron::node").len(),
        py.invocations("cron::py").len(),
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        node.invocations("cron::node").len(),
        n,
        "Node's job still fires"
    );
    assert_eq!(
        py.invocations("cron::py").len(),
        y,
        "Python's job still fires"
    );
}

/// Two subscribers of `orders` (one per SDK) both receive the published `data` itself; a
/// subscriber of another topic does not, and gets only its own topic's data.
#[test]
fn pubsub_subscribers_get_their_topics_data() {
    let sdk = sdks!();
    let p = Project::started("pubsub", ALL_BUILTINS);
    let node = sdk.node(&p, "node-sub");
    let py = sdk.python(&p, "py-sub");
    node.function("n::orders", "reply", json!({}));
    py.function("p::orders", "reply", json!({}));
    py.function("p::other", "reply", json!({}));
    node.trigger("a", "subscribe", "n::orders", json!({"topic": "orders"}));
    py.trigger("b", "subscribe", "p::orders", json!({"topic": "orders"}));
    py.trigger("c", "subscribe", "p::other", json!({"topic": "other"}));
    for f in ["n::orders", "p::orders", "p::other"] {
        p.wait_bindings(f, 1);
    }
    let order = json!({"id": 7, "items": ["a", "b"], "total": 12.5});
    // Published from each SDK once.
    py.ok("publish", json!({"topic": "orders", "data": order}));
    node.ok("publish", json!({"topic": "orders", "data": {"id": 8}}));
    let n = node.wait_invocations("n::orders", 2, 30);
    let y = py.wait_invocations("p::orders", 2, 30);
    for got in [&n, &y] {
        let data: Vec<&Value> = got.iter().map(|e| &e["data"]).collect();
        assert_eq!(data, [&order, &json!({"id": 8})]);
    }
    // Then one on `other`: when it has arrived, anything earlier for p::other would have.
    node.ok("publish", json!({"topic": "other", "data": {"id": 9}}));
    let other = py.wait_invocations("p::other", 1, 30);
    assert_eq!(other.len(), 1, "{other:?}");
    assert_eq!(other[0]["data"], json!({"id": 9}));
    assert_eq!(node.invocations("n::orders").len(), 2);
    assert_eq!(py.invocations("p::orders").len(), 2);
}
