//! The router against a recording transport: what each peer is sent, message by message.

use std::collections::HashMap;

use super::*;
use crate::engine::wire::{decode, encode};

#[derive(Default)]
struct Rec {
    sent: HashMap<PeerId, Vec<Message>>,
    /// Every frame's text, in order.
    texts: Vec<String>,
    backlog: HashMap<PeerId, usize>,
    closed: Vec<PeerId>,
}

impl Transport for Rec {
    fn send(&mut self, peer: PeerId, msg: Message) {
        // Through the wire format, as a real peer would see it.
        let text = encode(&msg);
        let m = decode(&text).unwrap();
        self.texts.push(text);
        self.sent.entry(peer).or_default().push(m);
    }
    fn backlog(&self, peer: PeerId) -> usize {
        self.backlog.get(&peer).copied().unwrap_or(0)
    }
    fn close(&mut self, peer: PeerId, _reason: &str) {
        self.closed.push(peer);
    }
}

impl Rec {
    fn take(&mut self, peer: PeerId) -> Vec<Message> {
        self.sent.remove(&peer).unwrap_or_default()
    }
}

fn worker() -> PeerKind {
    PeerKind::Worker {
        remote: "test".into(),
        container: None,
    }
}

fn frame(text: &str) -> Message {
    decode(text).unwrap()
}

/// A router with peers 1..=n connected (their `workerregistered` taken).
fn setup(n: u64) -> (Router, Rec, Vec<String>) {
    let mut r = Router::new();
    let mut t = Rec::default();
    let mut ids = Vec::new();
    for p in 1..=n {
        r.connect(&mut t, p, worker());
        match t.take(p).as_slice() {
            [Message::WorkerRegistered { worker_id, .. }] => ids.push(worker_id.clone()),
            other => panic!("{other:?}"),
        }
    }
    (r, t, ids)
}

fn register(r: &mut Router, t: &mut Rec, peer: PeerId, id: &str) {
    r.handle(
        t,
        peer,
        frame(&format!(r#"{{"type":"registerfunction","id":"{id}"}}"#)),
    );
}

fn result_of(m: &Message) -> (String, Option<String>, Option<ErrorBody>) {
    match m {
        Message::InvocationResult(r) => (
            r.invocation_id.clone(),
            r.result.as_ref().map(|v| v.get().to_string()),
            r.error.as_ref().map(|e| ErrorBody::from_json(e)),
        ),
        other => panic!("not a result: {other:?}"),
    }
}

#[test]
fn a_call_goes_to_the_owner_and_its_answer_back() {
    let (mut r, mut t, ids) = setup(2);
    register(&mut r, &mut t, 2, "math::add");
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"invokefunction","invocation_id":"c1","function_id":"math::add","data":{"a":1}}"#),
    );
    let to_owner = t.take(2);
    let Message::InvokeFunction(inv) = &to_owner[0] else {
        panic!("{to_owner:?}")
    };
    assert_eq!(inv.invocation_id.as_deref(), Some("c1"));
    let data: serde_json::Value = serde_json::from_str(inv.data.as_ref().unwrap().get()).unwrap();
    assert_eq!(data, json!({"a": 1, "_caller_worker_id": ids[0]}));
    assert_eq!(r.in_flight(), 1);
    // Only the executor may answer.
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"invocationresult","invocation_id":"c1","result":666}"#),
    );
    assert!(t.take(1).is_empty());
    r.handle(
        &mut t,
        2,
        frame(r#"{"type":"invocationresult","invocation_id":"c1","function_id":"math::add","result":{"sum":1}}"#),
    );
    let back = t.take(1);
    let (id, res, err) = result_of(&back[0]);
    assert_eq!((id.as_str(), res.as_deref()), ("c1", Some(r#"{"sum":1}"#)));
    assert!(err.is_none());
    assert_eq!(r.in_flight(), 0);
    // A late duplicate answer is dropped.
    r.handle(
        &mut t,
        2,
        frame(r#"{"type":"invocationresult","invocation_id":"c1","result":2}"#),
    );
    assert!(t.take(1).is_empty());
}

#[test]
fn unknown_functions_and_void_calls() {
    let (mut r, mut t, _) = setup(2);
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"invokefunction","invocation_id":"c1","function_id":"no::such"}"#),
    );
    let (_, _, e) = result_of(&t.take(1)[0]);
    assert_eq!(e.unwrap().code, "function_not_found");
    // Void to an unknown function: nothing at all.
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"invokefunction","function_id":"no::such","action":{"type":"void"}}"#),
    );
    assert!(t.take(1).is_empty());
    register(&mut r, &mut t, 2, "log::it");
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"invokefunction","function_id":"log::it","action":{"type":"void"}}"#),
    );
    let Message::InvokeFunction(inv) = &t.take(2)[0] else {
        panic!()
    };
    // The executor gets an id of its own, and no payload becomes null.
    let id = inv.invocation_id.clone().unwrap();
    assert!(
        t.texts.last().unwrap().contains(r#""data":null"#),
        "{:?}",
        t.texts
    );
    r.handle(
        &mut t,
        2,
        frame(&format!(
            r#"{{"type":"invocationresult","invocation_id":"{id}","result":1}}"#
        )),
    );
    assert!(t.take(1).is_empty(), "void answers are dropped");
    assert_eq!(r.in_flight(), 0);
}

#[test]
fn an_executor_that_goes_away_stops_its_calls() {
    let (mut r, mut t, _) = setup(3);
    register(&mut r, &mut t, 2, "slow::op");
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"invokefunction","invocation_id":"c1","function_id":"slow::op"}"#),
    );
    r.handle(
        &mut t,
        3,
        frame(r#"{"type":"invokefunction","invocation_id":"c1","function_id":"slow::op"}"#),
    );
    let sent = t.take(2);
    assert_eq!(sent.len(), 2);
    // Both callers used id c1: the second one travels under a fresh id.
    let Message::InvokeFunction(second) = &sent[1] else {
        panic!()
    };
    assert_ne!(second.invocation_id.as_deref(), Some("c1"));
    r.disconnect(&mut t, 2);
    for caller in [1, 3] {
        let (id, _, e) = result_of(&t.take(caller)[0]);
        assert_eq!(id, "c1");
        assert_eq!(e.unwrap().code, "invocation_stopped");
    }
    assert_eq!(r.in_flight(), 0);
    // Its function is gone with it.
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"invokefunction","invocation_id":"c2","function_id":"slow::op"}"#),
    );
    assert_eq!(
        result_of(&t.take(1)[0]).2.unwrap().code,
        "function_not_found"
    );
}

#[test]
fn a_caller_that_goes_away_leaves_nothing_behind() {
    let (mut r, mut t, _) = setup(2);
    register(&mut r, &mut t, 2, "f");
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"invokefunction","invocation_id":"c1","function_id":"f"}"#),
    );
    assert_eq!(t.take(2).len(), 1);
    r.disconnect(&mut t, 1);
    assert_eq!(r.in_flight(), 0);
    r.handle(
        &mut t,
        2,
        frame(r#"{"type":"invocationresult","invocation_id":"c1","result":1}"#),
    );
    assert!(t.sent.values().all(Vec::is_empty));
}

#[test]
fn second_live_owner_is_refused_but_reattach_takes_over() {
    let (mut r, mut t, ids) = setup(2);
    register(&mut r, &mut t, 1, "math::add");
    register(&mut r, &mut t, 1, "math::add"); // a replay: idempotent
    assert!(t.take(1).is_empty());
    register(&mut r, &mut t, 2, "math::add");
    match t.take(2).as_slice() {
        [Message::RegistrationRejected {
            code,
            owner_worker_id,
            ..
        }] => {
            assert_eq!(code, "FUNCTION_NAMESPACE_CONFLICT");
            assert_eq!(owner_worker_id, &ids[0]);
        }
        other => panic!("{other:?}"),
    }
    // Peer 3 is peer 1 reconnecting: it shows the old id and token, then replays.
    let token = r.peers[&1].token.clone();
    r.connect(&mut t, 3, worker());
    t.take(3);
    r.handle(
        &mut t,
        3,
        frame(&format!(
            r#"{{"type":"reattach","previous_worker_id":"{}","reattach_token":"{token}"}}"#,
            ids[0]
        )),
    );
    assert_eq!(t.closed, vec![1]);
    register(&mut r, &mut t, 3, "math::add");
    assert!(t.take(3).is_empty());
    assert_eq!(r.functions["math::add"].owner, 3);
    // A wrong token changes nothing.
    r.connect(&mut t, 4, worker());
    r.handle(
        &mut t,
        4,
        frame(&format!(
            r#"{{"type":"reattach","previous_worker_id":"{}","reattach_token":"nope"}}"#,
            r.peers[&3].worker_id
        )),
    );
    assert_eq!(t.closed, vec![1]);
    // engine::* ids are the engine's.
    register(&mut r, &mut t, 4, "engine::functions::list");
    assert!(t
        .take(4)
        .iter()
        .any(|m| matches!(m, Message::RegistrationRejected { .. })));
}

#[test]
fn bindings_park_until_a_provider_registers_and_follow_it() {
    let (mut r, mut t, _) = setup(2);
    // Peer 1 binds before anyone provides `demo`; no config is null.
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"registertrigger","id":"b1","trigger_type":"demo","function_id":"f"}"#),
    );
    r.handle(
        &mut t,
        2,
        frame(r#"{"type":"registertriggertype","id":"demo"}"#),
    );
    match t.take(2).as_slice() {
        [Message::RegisterTrigger(d)] => {
            assert_eq!((d.id.as_str(), d.function_id.as_str()), ("b1", "f"));
            assert!(t.texts.last().unwrap().contains(r#""config":null"#));
        }
        other => panic!("{other:?}"),
    }
    // The same binding replayed: not delivered again.
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"registertrigger","id":"b1","trigger_type":"demo","function_id":"f"}"#),
    );
    assert!(t.take(2).is_empty());
    // The provider refuses it: the owner hears why.
    r.handle(
        &mut t,
        2,
        frame(r#"{"type":"triggerregistrationresult","id":"b1","trigger_type":"demo","function_id":"f","error":{"code":"trigger_registration_failed","message":"bad config"}}"#),
    );
    match t.take(1).as_slice() {
        [Message::TriggerRegistrationResult { error: Some(e), .. }] => {
            assert_eq!(e.message, "bad config")
        }
        other => panic!("{other:?}"),
    }
    // The owner goes away: the provider is told to drop the binding.
    r.disconnect(&mut t, 1);
    match t.take(2).as_slice() {
        [Message::UnregisterTrigger { id, .. }] => assert_eq!(id, "b1"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_provider_that_leaves_parks_its_bindings_for_the_next() {
    let (mut r, mut t, _) = setup(3);
    r.handle(
        &mut t,
        2,
        frame(r#"{"type":"registertriggertype","id":"demo"}"#),
    );
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"registertrigger","id":"b1","trigger_type":"demo","function_id":"f","config":{"every":"1s"}}"#),
    );
    assert_eq!(t.take(2).len(), 1);
    r.disconnect(&mut t, 2);
    r.handle(
        &mut t,
        3,
        frame(r#"{"type":"registertriggertype","id":"demo"}"#),
    );
    match t.take(3).as_slice() {
        [Message::RegisterTrigger(d)] => {
            assert_eq!(d.config.as_ref().unwrap().get(), r#"{"every":"1s"}"#)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn overloaded_executors_are_refused_not_queued_for() {
    let (mut r, mut t, _) = setup(2);
    register(&mut r, &mut t, 2, "f");
    t.backlog.insert(2, BACKLOG_REFUSE);
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"invokefunction","invocation_id":"c1","function_id":"f"}"#),
    );
    assert!(t.take(2).is_empty());
    assert_eq!(
        result_of(&t.take(1)[0]).2.unwrap().code,
        "worker_overloaded"
    );
    t.backlog.insert(2, 0);
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"invokefunction","invocation_id":"c2","function_id":"f"}"#),
    );
    assert_eq!(t.take(2).len(), 1);
}

#[test]
fn engine_functions_and_triggers() {
    let (mut r, mut t, ids) = setup(2);
    register(&mut r, &mut t, 2, "math::add");
    r.handle(
        &mut t,
        2,
        frame(r#"{"type":"invokefunction","function_id":"engine::workers::register","action":{"type":"void"},"data":{"name":"node-example","runtime":"node"}}"#),
    );
    assert!(t.take(2).is_empty(), "void: no answer");
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"invokefunction","invocation_id":"q","function_id":"engine::functions::list"}"#),
    );
    let (_, v, _) = result_of(&t.take(1)[0]);
    let v: serde_json::Value = serde_json::from_str(&v.unwrap()).unwrap();
    assert_eq!(
        v,
        json!({"functions": [{"function_id": "math::add", "namespace": "default", "worker_name": "node-example"}]})
    );
    let conns = r.connections();
    let node = conns.iter().find(|c| c.worker_id == ids[1]).unwrap();
    assert_eq!((node.name.as_str(), node.functions), ("node-example", 1));
    assert_eq!(node.runtime.as_deref(), Some("node"));
    // engine::functions-available: one call per burst of changes, after the coalescing delay.
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"registertrigger","id":"w","trigger_type":"engine::functions-available","function_id":"watch::fns"}"#),
    );
    register(&mut r, &mut t, 1, "watch::fns");
    register(&mut r, &mut t, 2, "math::sub");
    let due = r.next_deadline().expect("a change is pending");
    r.tick(&mut t, due);
    let sent = t.take(1);
    assert_eq!(sent.len(), 1);
    let Message::InvokeFunction(inv) = &sent[0] else {
        panic!()
    };
    let payload: serde_json::Value =
        serde_json::from_str(inv.data.as_ref().unwrap().get()).unwrap();
    assert_eq!(payload["event"], "functions_changed");
    assert!(payload["functions"].as_array().unwrap().len() >= 3);
    assert!(r.next_deadline().is_none());
    // Ownerless bindings by call.
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"invokefunction","invocation_id":"b","function_id":"engine::register_trigger","data":{"trigger_type":"engine::workers-available","function_id":"watch::fns"}}"#),
    );
    let (_, v, _) = result_of(&t.take(1)[0]);
    let id = serde_json::from_str::<serde_json::Value>(&v.unwrap()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    r.connect(&mut t, 9, worker());
    assert!(t
        .take(1)
        .iter()
        .any(|m| matches!(m, Message::InvokeFunction(i) if i.function_id == "watch::fns")));
    r.handle(
        &mut t,
        1,
        frame(&format!(
            r#"{{"type":"invokefunction","invocation_id":"u","function_id":"engine::unregister_trigger","data":{{"id":"{id}"}}}}"#
        )),
    );
    assert_eq!(
        result_of(&t.take(1)[0]).1.as_deref(),
        Some(r#"{"removed":true}"#)
    );
}

#[test]
fn enqueue_without_a_queue_worker_is_an_error() {
    let (mut r, mut t, _) = setup(1);
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"invokefunction","invocation_id":"q","function_id":"f","action":{"type":"enqueue","queue":"jobs"}}"#),
    );
    assert_eq!(result_of(&t.take(1)[0]).2.unwrap().code, "enqueue_error");
}

#[test]
fn http_invoked_functions_are_refused_with_a_reason() {
    let (mut r, mut t, _) = setup(1);
    r.handle(
        &mut t,
        1,
        frame(r#"{"type":"registerfunction","id":"ext::hook","invocation":{"url":"https://example.com/h"}}"#),
    );
    match t.take(1).as_slice() {
        [Message::RegistrationRejected { code, .. }] => {
            assert_eq!(code, "INVOCATION_NOT_SUPPORTED")
        }
        other => panic!("{other:?}"),
    }
    assert!(r.functions.is_empty());
}
