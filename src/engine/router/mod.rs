//! The router: who serves which function, which trigger bindings exist and who provides their
//! types, and which invocations are in flight. It is plain state driven by events from the
//! worker port (a peer connected, sent a message, went away) and writes what it has to say
//! through a [`Transport`]; it does no I/O of its own, so it is tested without sockets.
//!
//! Peers are WebSocket connections of SDK workers and the engine's built-in workers, which
//! speak the same messages over in-process channels. Routing follows the protocol:
//! - A call (`invokefunction` with an `invocation_id`) goes to the function's owner under the
//!   caller's own id (a fresh one only if that id is already in flight); its answer goes back
//!   to the caller. A `void` call gets a fresh id and its answer is dropped.
//! - When the owner disconnects, its callers get `invocation_stopped` at once; when a caller
//!   disconnects, the late answer is dropped. The engine applies no timeout of its own.
//! - A function id belongs to one live connection: a second connection that registers it is
//!   refused (`registrationrejected`), except a reconnecting worker, which first retires its
//!   previous connection with `reattach`.
//! - A binding whose trigger type has no provider is parked and delivered when one registers.
//! - A connection that stops reading is not waited for: calls to it are refused once its
//!   outbound queue passes [`BACKLOG_REFUSE`], and it is closed past [`BACKLOG_CLOSE`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;

use super::ids;
use super::wire::{
    self, Action, ErrorBody, FunctionDef, Invocation, InvocationResult, Json, Message, TriggerDef,
    TriggerTypeDef,
};

mod functions;
mod triggers;

/// A connection, local or remote. [`ENGINE`] is the engine itself.
pub type PeerId = u64;

/// The engine as a peer: owner of the `engine::*` functions and trigger types.
pub const ENGINE: PeerId = 0;

/// Outbound bytes queued for a connection past which calls to it are refused.
pub const BACKLOG_REFUSE: usize = 8 << 20;
/// Outbound bytes queued past which a connection that does not read is closed. Room for one
/// message of the largest size on top of the refuse mark.
pub const BACKLOG_CLOSE: usize = BACKLOG_REFUSE + super::MAX_MESSAGE + (1 << 20);

/// How the router's messages reach peers.
pub trait Transport {
    /// Queue `msg` for `peer` (dropped if the peer is gone).
    fn send(&mut self, peer: PeerId, msg: Message);
    /// Bytes queued for `peer` and not yet written (0 for in-process peers).
    fn backlog(&self, peer: PeerId) -> usize;
    /// Close `peer`'s connection; the router has already forgotten it.
    fn close(&mut self, peer: PeerId, reason: &str);
}

/// What a peer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerKind {
    /// An SDK worker on the worker port; `remote` is its address for logs and listings.
    Worker {
        remote: String,
        /// The container worker of config.yaml this connection came from, when known.
        container: Option<String>,
    },
    /// A built-in worker inside the engine, by its config.yaml name.
    Builtin { name: String },
}

struct Peer {
    worker_id: String,
    token: String,
    kind: PeerKind,
    /// What `engine::workers::register` announced.
    meta: Option<serde_json::Value>,
    connected_at_ms: u64,
    functions: HashSet<String>,
    bindings: HashSet<String>,
    provides: HashSet<String>,
    /// Invocations this peer is running (ids as the router sent them).
    executing: HashSet<String>,
    /// Invocations this peer is waiting on (ids as the router sent them to the executor).
    calling: HashSet<String>,
    /// Unknown or undecodable frames logged so far (the log is capped per connection).
    complaints: u32,
    /// A refusal for backlog has been logged (reset when the backlog drains).
    overload_logged: bool,
}

impl Peer {
    /// The name listings show: the announced name, else the built-in's, else its id.
    fn display_name(&self) -> String {
        if let Some(n) = self
            .meta
            .as_ref()
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
        {
            return n.to_string();
        }
        match &self.kind {
            PeerKind::Builtin { name } => name.clone(),
            PeerKind::Worker { .. } => self.worker_id.clone(),
        }
    }
}

struct Function {
    owner: PeerId,
    def: FunctionDef,
}

struct Binding {
    /// `None` for bindings made with `engine::register_trigger` (they outlive the caller).
    owner: Option<PeerId>,
    def: TriggerDef,
    /// The provider refused it (its error), until the next delivery.
    refused: Option<ErrorBody>,
}

struct TriggerType {
    provider: PeerId,
    def: TriggerTypeDef,
}

struct Pending {
    caller: PeerId,
    /// The id the caller used (may differ from the key when that one was taken).
    caller_id: String,
    function_id: String,
    executor: PeerId,
}

/// Trigger types the engine itself provides.
pub const FUNCTIONS_AVAILABLE: &str = "engine::functions-available";
pub const WORKERS_AVAILABLE: &str = "engine::workers-available";

/// Changes to the function set within this window are told in one `functions-available`.
const FUNCTIONS_CHANGED_COALESCE: Duration = Duration::from_millis(100);

/// One connection as `iii worker list` and `engine::workers::list` see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConnectionInfo {
    pub worker_id: String,
    pub name: String,
    /// The container worker it came from, when the engine link told.
    pub container: Option<String>,
    pub builtin: bool,
    pub functions: usize,
    pub runtime: Option<String>,
}

pub struct Router {
    peers: HashMap<PeerId, Peer>,
    by_worker_id: HashMap<String, PeerId>,
    functions: HashMap<String, Function>,
    bindings: HashMap<String, Binding>,
    trigger_types: HashMap<String, TriggerType>,
    pending: HashMap<String, Pending>,
    functions_changed: Option<Instant>,
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A value for a log line: at most 200 characters of it.
fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(200).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

impl Router {
    pub fn new() -> Router {
        let mut r = Router {
            peers: HashMap::new(),
            by_worker_id: HashMap::new(),
            functions: HashMap::new(),
            bindings: HashMap::new(),
            trigger_types: HashMap::new(),
            pending: HashMap::new(),
            functions_changed: None,
        };
        for (id, description) in [
            (
                FUNCTIONS_AVAILABLE,
                "Fires when the set of functions changes",
            ),
            (
                WORKERS_AVAILABLE,
                "Fires when a worker connects, disconnects or announces itself",
            ),
        ] {
            r.trigger_types.insert(
                id.to_string(),
                TriggerType {
                    provider: ENGINE,
                    def: TriggerTypeDef {
                        id: id.to_string(),
                        description: Some(description.to_string()),
                        trigger_request_format: None,
                        call_request_format: None,
                    },
                },
            );
        }
        r
    }

    /// A peer connected: it gets its `workerregistered` (worker id and reattach token).
    pub fn connect(&mut self, t: &mut dyn Transport, peer: PeerId, kind: PeerKind) {
        let worker_id = ids::uuid();
        let token = ids::uuid();
        t.send(
            peer,
            Message::WorkerRegistered {
                worker_id: worker_id.clone(),
                reattach_token: token.clone(),
            },
        );
        self.by_worker_id.insert(worker_id.clone(), peer);
        self.peers.insert(
            peer,
            Peer {
                worker_id: worker_id.clone(),
                token,
                kind,
                meta: None,
                connected_at_ms: now_ms(),
                functions: HashSet::new(),
                bindings: HashSet::new(),
                provides: HashSet::new(),
                executing: HashSet::new(),
                calling: HashSet::new(),
                complaints: 0,
                overload_logged: false,
            },
        );
        self.fire_engine_trigger(
            t,
            WORKERS_AVAILABLE,
            json!({"event": "worker_connected", "worker_id": worker_id}),
        );
    }

    /// A peer's connection ended: everything it held is released, its callers are told.
    pub fn disconnect(&mut self, t: &mut dyn Transport, peer: PeerId) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        self.by_worker_id.remove(&p.worker_id);
        for id in &p.executing {
            if let Some(pend) = self.pending.remove(id) {
                if let Some(c) = self.peers.get_mut(&pend.caller) {
                    c.calling.remove(id);
                }
                if pend.caller != ENGINE {
                    t.send(
                        pend.caller,
                        Message::InvocationResult(InvocationResult::failed(
                            pend.caller_id,
                            &pend.function_id,
                            &ErrorBody::new("invocation_stopped", "Invocation stopped"),
                        )),
                    );
                }
            }
        }
        for id in &p.calling {
            if let Some(pend) = self.pending.remove(id) {
                if let Some(e) = self.peers.get_mut(&pend.executor) {
                    e.executing.remove(id);
                }
            }
        }
        for f in &p.functions {
            if self.functions.get(f).is_some_and(|x| x.owner == peer) {
                self.functions.remove(f);
                self.functions_changed.get_or_insert_with(Instant::now);
            }
        }
        for b in &p.bindings {
            if self.bindings.get(b).is_some_and(|x| x.owner == Some(peer)) {
                let binding = self.bindings.remove(b).expect("checked above");
                self.withdraw(t, &binding.def);
            }
        }
        for ty in &p.provides {
            if self
                .trigger_types
                .get(ty)
                .is_some_and(|x| x.provider == peer)
            {
                // Its bindings stay, parked until another provider registers the type.
                self.trigger_types.remove(ty);
            }
        }
        self.fire_engine_trigger(
            t,
            WORKERS_AVAILABLE,
            json!({"event": "worker_disconnected", "worker_id": p.worker_id}),
        );
    }

    /// Handle one message from `peer`.
    pub fn handle(&mut self, t: &mut dyn Transport, peer: PeerId, msg: Message) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        match msg {
            Message::InvokeFunction(inv) => self.invoke(t, peer, inv),
            Message::InvocationResult(r) => self.result(t, peer, r),
            Message::RegisterFunction(def) => self.register_function(t, peer, def),
            Message::UnregisterFunction { id } => {
                if self.functions.get(&id).is_some_and(|f| f.owner == peer) {
                    self.functions.remove(&id);
                    self.functions_changed.get_or_insert_with(Instant::now);
                }
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.functions.remove(&id);
                }
            }
            Message::RegisterTrigger(def) => self.register_trigger(t, Some(peer), def),
            Message::UnregisterTrigger { id, .. } => {
                self.unregister_trigger(t, Some(peer), &id);
            }
            Message::RegisterTriggerType(def) => self.register_trigger_type(t, peer, def),
            Message::UnregisterTriggerType { id } => {
                if self
                    .trigger_types
                    .get(&id)
                    .is_some_and(|x| x.provider == peer)
                {
                    self.trigger_types.remove(&id);
                }
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.provides.remove(&id);
                }
            }
            Message::TriggerRegistrationResult {
                id,
                trigger_type,
                function_id,
                error,
            } => self.trigger_result(t, peer, id, trigger_type, function_id, error),
            Message::Reattach {
                previous_worker_id,
                reattach_token,
            } => self.reattach(t, peer, &previous_worker_id, &reattach_token),
            Message::Ping => t.send(peer, Message::Pong),
            Message::Pong | Message::WorkerRegistered { .. } => {}
            Message::RegistrationRejected { .. } => {}
            Message::Other(kind) => self.complain(peer, &format!("unknown message type {kind:?}")),
        }
    }

    /// A frame from `peer` that could not be decoded: logged (a few per connection), dropped.
    pub fn bad_frame(&mut self, peer: PeerId, why: &str) {
        self.complain(
            peer,
            &format!("dropped a frame that is not a message: {why}"),
        );
    }

    fn complain(&mut self, peer: PeerId, what: &str) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.complaints += 1;
        if p.complaints <= 5 {
            let name = p.display_name();
            crate::say!("engine: worker {name}: {}", excerpt(what));
            if p.complaints == 5 {
                crate::say!("engine: worker {name}: (further protocol errors not logged)");
            }
        }
    }

    /// Deadline of the next timed work (coalesced `functions-available`), if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.functions_changed
            .map(|since| since + FUNCTIONS_CHANGED_COALESCE)
    }

    /// Do timed work that is due.
    pub fn tick(&mut self, t: &mut dyn Transport, now: Instant) {
        if self.next_deadline().is_some_and(|deadline| now >= deadline) {
            self.functions_changed = None;
            let functions = functions::summaries(self, true);
            self.fire_engine_trigger(
                t,
                FUNCTIONS_AVAILABLE,
                json!({"event": "functions_changed", "functions": functions}),
            );
        }
    }

    /// Every connection, for listings.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = self
            .peers
            .values()
            .map(|p| ConnectionInfo {
                worker_id: p.worker_id.clone(),
                name: p.display_name(),
                container: match &p.kind {
                    PeerKind::Worker { container, .. } => container.clone(),
                    PeerKind::Builtin { .. } => None,
                },
                builtin: matches!(p.kind, PeerKind::Builtin { .. }),
                functions: p.functions.len(),
                runtime: p
                    .meta
                    .as_ref()
                    .and_then(|m| m.get("runtime"))
                    .and_then(|r| r.as_str())
                    .map(str::to_string),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.worker_id.cmp(&b.worker_id)));
        v
    }

    /// Invocations in flight (for tests and listings).
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    // --- invocations ---

    /// Answer `peer`'s call `inv` (when it wants an answer).
    fn answer(
        t: &mut dyn Transport,
        peer: PeerId,
        inv: &Invocation,
        outcome: Result<Option<Json>, ErrorBody>,
    ) {
        let Some(id) = inv.invocation_id.clone() else {
            return;
        };
        if peer == ENGINE {
            return;
        }
        let r = match outcome {
            Ok(v) => InvocationResult::ok(id, &inv.function_id, v),
            Err(e) => InvocationResult::failed(id, &inv.function_id, &e),
        };
        t.send(peer, Message::InvocationResult(r));
    }

    fn invoke(&mut self, t: &mut dyn Transport, from: PeerId, inv: Invocation) {
        match &inv.action {
            Some(Action::Enqueue { queue }) => {
                let e = ErrorBody::new(
                    "enqueue_error",
                    format!(
                        "cannot enqueue {} on queue {queue:?}: this engine runs no queue worker",
                        inv.function_id
                    ),
                );
                return Self::answer(t, from, &inv, Err(e));
            }
            Some(Action::Other(a)) => {
                let e = ErrorBody::new("invocation_error", format!("unknown action {a:?}"));
                return Self::answer(t, from, &inv, Err(e));
            }
            Some(Action::Void) | None => {}
        }
        if inv.function_id.starts_with("engine::") {
            let outcome = functions::call(self, t, from, &inv);
            return Self::answer(t, from, &inv, outcome);
        }
        let Some(owner) = self.functions.get(&inv.function_id).map(|f| f.owner) else {
            let e = ErrorBody::new(
                "function_not_found",
                format!(
                    "Function {} not found in namespace default.",
                    inv.function_id
                ),
            );
            return Self::answer(t, from, &inv, Err(e));
        };
        let backlog = t.backlog(owner);
        if backlog >= BACKLOG_REFUSE {
            let name = self
                .peers
                .get(&owner)
                .map(Peer::display_name)
                .unwrap_or_default();
            if let Some(p) = self.peers.get_mut(&owner) {
                if !p.overload_logged {
                    p.overload_logged = true;
                    crate::say!(
                        "engine: worker {name} is not reading its connection ({} MiB queued); refusing calls to it",
                        backlog >> 20
                    );
                }
            }
            let e = ErrorBody::new(
                "worker_overloaded",
                format!(
                    "worker {name} serving {} is not reading its connection ({} MiB queued)",
                    inv.function_id,
                    backlog >> 20
                ),
            );
            return Self::answer(t, from, &inv, Err(e));
        } else if let Some(p) = self.peers.get_mut(&owner) {
            p.overload_logged = false;
        }
        let caller_worker = match self.peers.get(&from) {
            Some(p) if matches!(p.kind, PeerKind::Worker { .. }) => Some(p.worker_id.clone()),
            _ => None,
        };
        let data = match (&inv.data, &caller_worker) {
            (Some(d), Some(w)) => wire::with_caller(d, w).or(inv.data),
            _ => inv.data,
        };
        let exec_id = match (&inv.invocation_id, inv.action == Some(Action::Void)) {
            (Some(id), false) => {
                let exec_id = if self.pending.contains_key(id) {
                    ids::uuid()
                } else {
                    id.clone()
                };
                self.pending.insert(
                    exec_id.clone(),
                    Pending {
                        caller: from,
                        caller_id: id.clone(),
                        function_id: inv.function_id.clone(),
                        executor: owner,
                    },
                );
                if let Some(p) = self.peers.get_mut(&from) {
                    p.calling.insert(exec_id.clone());
                }
                if let Some(p) = self.peers.get_mut(&owner) {
                    p.executing.insert(exec_id.clone());
                }
                exec_id
            }
            // A void call: the executor still gets an id (SDKs answer only when there is
            // one, and answering is how a handler's end is seen); its answer is dropped.
            _ => ids::uuid(),
        };
        t.send(
            owner,
            Message::InvokeFunction(Invocation {
                invocation_id: Some(exec_id),
                function_id: inv.function_id,
                data,
                metadata: inv.metadata,
                action: None,
                traceparent: inv.traceparent,
                baggage: inv.baggage,
            }),
        );
    }

    fn result(&mut self, t: &mut dyn Transport, from: PeerId, r: InvocationResult) {
        // Only the executor may answer; anything else (late, unknown, void) is dropped.
        if self
            .pending
            .get(&r.invocation_id)
            .is_none_or(|p| p.executor != from)
        {
            return;
        }
        let pend = self
            .pending
            .remove(&r.invocation_id)
            .expect("checked above");
        if let Some(p) = self.peers.get_mut(&from) {
            p.executing.remove(&r.invocation_id);
        }
        if let Some(p) = self.peers.get_mut(&pend.caller) {
            p.calling.remove(&r.invocation_id);
        }
        if pend.caller == ENGINE {
            return;
        }
        t.send(
            pend.caller,
            Message::InvocationResult(InvocationResult {
                invocation_id: pend.caller_id,
                function_id: Some(r.function_id.unwrap_or(pend.function_id)),
                result: r.result,
                error: r.error,
                traceparent: r.traceparent,
                baggage: r.baggage,
            }),
        );
    }

    // --- registration ---

    fn register_function(&mut self, t: &mut dyn Transport, from: PeerId, def: FunctionDef) {
        if def.invocation.is_some() {
            // A function the engine would run by calling an HTTP endpoint itself: this engine
            // does not make such calls, so it says so rather than accept a dead function.
            let name = self
                .peers
                .get(&from)
                .map(Peer::display_name)
                .unwrap_or_default();
            crate::say!(
                "engine: worker {name}: function {} is HTTP-invoked (invocation.url); this engine does not call HTTP endpoints for functions, registration refused",
                def.id
            );
            t.send(
                from,
                Message::RegistrationRejected {
                    code: "INVOCATION_NOT_SUPPORTED".into(),
                    function_id: def.id,
                    owner_worker_id: String::new(),
                },
            );
            return;
        }
        let owner = match self.functions.get(&def.id) {
            Some(f) if f.owner != from && self.peers.contains_key(&f.owner) => Some(f.owner),
            _ => None,
        };
        if def.id.starts_with("engine::") || owner.is_some() {
            let owner_worker_id = owner
                .and_then(|o| self.peers.get(&o))
                .map(|p| p.worker_id.clone())
                .unwrap_or_default();
            let (name, owner_name) = (
                self.peers
                    .get(&from)
                    .map(Peer::display_name)
                    .unwrap_or_default(),
                owner
                    .and_then(|o| self.peers.get(&o))
                    .map(Peer::display_name)
                    .unwrap_or_else(|| "the engine".into()),
            );
            crate::say!(
                "engine: worker {name}: function {} is already served by {owner_name}; registration refused",
                def.id
            );
            t.send(
                from,
                Message::RegistrationRejected {
                    code: "FUNCTION_NAMESPACE_CONFLICT".into(),
                    function_id: def.id,
                    owner_worker_id,
                },
            );
            return;
        }
        if let Some(p) = self.peers.get_mut(&from) {
            p.functions.insert(def.id.clone());
        }
        let changed = self
            .functions
            .get(&def.id)
            .is_none_or(|f| f.owner != from || f.def.description != def.description);
        if changed {
            self.functions_changed.get_or_insert_with(Instant::now);
        }
        self.functions
            .insert(def.id.clone(), Function { owner: from, def });
    }

    fn reattach(&mut self, t: &mut dyn Transport, peer: PeerId, previous: &str, token: &str) {
        let Some(&old) = self.by_worker_id.get(previous) else {
            return; // the old connection is gone already (an engine restart, say)
        };
        if old == peer || self.peers.get(&old).is_none_or(|p| p.token != token) {
            return;
        }
        let name = self.peers[&old].display_name();
        crate::say!("engine: worker {name} reconnected; retiring its previous connection");
        self.disconnect(t, old);
        t.close(old, "replaced by the worker's new connection");
    }
}

#[cfg(test)]
mod tests;
