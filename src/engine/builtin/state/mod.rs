//! `iii-state`: key-value state in scopes, with triggers on change.
//!
//! - `state::set {scope, key, value}` → `{old_value, new_value}`
//! - `state::get {scope, key}` → the value, or `null`
//! - `state::delete {scope, key}` → the deleted value (or `null`)
//! - `state::update {scope, key, ops}` → `{old_value, new_value, errors?}` (see [`ops`]);
//!   atomic: no other state call runs between reading and writing the value
//! - `state::list {scope}` → every value of the scope; `state::list_groups` → `{groups}`
//! - trigger type `state`, config `{scope?, key?, condition_function_id?}`: called with
//!   `{type: "state", event_type: "state:created|updated|deleted", scope, key, old_value,
//!   new_value}` after each change that matches.
//!
//! Config: `adapter: {name: kv, config: {store_method: in_memory | file_based, file_path,
//! save_interval_ms}}`; `file_path` (a directory, relative to config.yaml) defaults to
//! `.iii/state`. What survives what is said in [`store`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{input, trigger_config, Running, Worker};
use crate::engine::port::Handle;
use crate::engine::wire::{self, ErrorBody, Invocation, Json, Message};
use crate::project::Project;
use crate::Result;

pub mod ops;
pub mod store;

use store::Store;

/// Default of `save_interval_ms`: how often the file-based log is fsynced.
const DEFAULT_SAVE_INTERVAL_MS: u64 = 1000;

#[derive(Deserialize, Default)]
struct Settings {
    #[serde(default)]
    adapter: Option<Adapter>,
    #[serde(default)]
    save_interval_ms: Option<u64>,
    #[serde(default)]
    triggers_enabled: Option<bool>,
    #[serde(default)]
    max_value_bytes: Option<usize>,
}

#[derive(Deserialize)]
struct Adapter {
    name: String,
    #[serde(default)]
    config: Option<KvSettings>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KvSettings {
    #[serde(default)]
    store_method: Option<String>,
    #[serde(default)]
    file_path: Option<PathBuf>,
    #[serde(default)]
    save_interval_ms: Option<u64>,
}

pub fn start(config: &serde_json::Value, port: &Handle, project: &Project) -> Result<Running> {
    let s: Settings = super::settings("iii-state", config)?;
    let kv = match s.adapter {
        None => KvSettings::default(),
        Some(a) if a.name == "kv" => a.config.unwrap_or_default(),
        Some(a) => {
            return Err(crate::err!(
                "iii-state: adapter {:?}: only the `kv` adapter is available",
                a.name
            ))
        }
    };
    let interval = Duration::from_millis(
        kv.save_interval_ms
            .or(s.save_interval_ms)
            .unwrap_or(DEFAULT_SAVE_INTERVAL_MS)
            .clamp(10, 3_600_000),
    );
    let store = match kv.store_method.as_deref().unwrap_or("in_memory") {
        "in_memory" => Store::in_memory(),
        "file_based" => {
            let base = project
                .config_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let dir = match kv.file_path {
                Some(p) if p.is_absolute() => p,
                Some(p) => base.join(p),
                None => project.state_dir.join("state"),
            };
            Store::open(&dir).map_err(|e| crate::err!("iii-state: {e}"))?
        }
        other => {
            return Err(crate::err!(
                "iii-state: store_method {other:?}: use in_memory or file_based"
            ))
        }
    };
    let state = State {
        w: Worker::new(port.connect("iii-state", None)),
        store,
        watchers: HashMap::new(),
        conditions: HashMap::new(),
        triggers_enabled: s.triggers_enabled.unwrap_or(true),
        max_value_bytes: s.max_value_bytes,
    };
    super::spawn("iii-state", None, move || state.serve(interval))
}

struct Watcher {
    scope: Option<String>,
    key: Option<String>,
    condition: Option<String>,
    function_id: String,
    metadata: Option<Json>,
}

#[derive(Deserialize)]
struct WatchConfig {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    condition_function_id: Option<String>,
}

#[derive(Deserialize)]
struct Address {
    scope: String,
    key: String,
}

#[derive(Deserialize)]
struct SetInput {
    scope: String,
    key: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
struct UpdateInput {
    scope: String,
    key: String,
    ops: Vec<ops::Op>,
}

#[derive(Deserialize)]
struct ScopeInput {
    scope: String,
}

struct State {
    w: Worker,
    store: Store,
    watchers: HashMap<String, Watcher>,
    /// Condition calls in flight: what to fire when one says yes.
    conditions: HashMap<String, (String, Json, Option<Json>)>,
    triggers_enabled: bool,
    max_value_bytes: Option<usize>,
}

type Outcome = std::result::Result<Option<Json>, ErrorBody>;

fn nonempty(scope: &str, key: &str) -> std::result::Result<(), ErrorBody> {
    if scope.is_empty() || key.is_empty() {
        return Err(ErrorBody::new(
            "invalid_input",
            "scope and key must not be empty",
        ));
    }
    Ok(())
}

fn failed_write(e: crate::Error) -> ErrorBody {
    crate::say!("error: iii-state: {e}");
    ErrorBody::new("state_write_failed", e.to_string())
}

impl State {
    fn serve(mut self, interval: Duration) {
        self.w
            .register_function("state::set", "Set a value; returns old_value and new_value");
        self.w
            .register_function("state::get", "Get a value (null when absent)");
        self.w
            .register_function("state::delete", "Delete a value; returns it");
        self.w.register_function(
            "state::update",
            "Apply set/merge/increment/decrement/append/remove operations atomically",
        );
        self.w
            .register_function("state::list", "Every value of a scope");
        self.w
            .register_function("state::list_groups", "Every scope that holds values");
        self.w.register_trigger_type(
            "state",
            "Called after a value is created, updated or deleted",
        );
        let mut next_sync = Instant::now() + interval;
        loop {
            let wait = next_sync.saturating_duration_since(Instant::now());
            match self.w.link().recv_timeout(wait) {
                Ok(m) => self.handle(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_sync {
                if let Err(e) = self.store.sync() {
                    crate::say!("error: iii-state: {e}");
                }
                next_sync = Instant::now() + interval;
            }
        }
        if let Err(e) = self.store.close() {
            crate::say!("error: iii-state: {e}");
        }
    }

    fn handle(&mut self, m: Message) {
        match m {
            Message::InvokeFunction(inv) => {
                let outcome = self.call(&inv);
                self.w.answer(&inv, outcome);
            }
            Message::InvocationResult(r) => {
                if let Some((function_id, payload, metadata)) =
                    self.conditions.remove(&r.invocation_id)
                {
                    let yes =
                        r.error.is_none() && r.result.as_ref().is_none_or(|v| v.get() != "false");
                    if yes {
                        self.w.fire(&function_id, Some(payload), metadata);
                    }
                }
            }
            Message::RegisterTrigger(def) => match trigger_config::<Option<WatchConfig>>(&def) {
                Ok(c) => {
                    let c = c.unwrap_or(WatchConfig {
                        scope: None,
                        key: None,
                        condition_function_id: None,
                    });
                    self.watchers.insert(
                        def.id.clone(),
                        Watcher {
                            scope: c.scope,
                            key: c.key,
                            condition: c.condition_function_id,
                            function_id: def.function_id.clone(),
                            metadata: def.metadata.clone(),
                        },
                    );
                }
                Err(e) => self.w.refuse(&def, e),
            },
            Message::UnregisterTrigger { id, .. } => {
                self.watchers.remove(&id);
            }
            _ => {}
        }
    }

    fn call(&mut self, inv: &Invocation) -> Outcome {
        match inv.function_id.as_str() {
            "state::get" => {
                let a: Address = input(inv)?;
                Ok(self.store.get(&a.scope, &a.key).map(wire::to_json))
            }
            "state::set" => {
                let s: SetInput = input(inv)?;
                nonempty(&s.scope, &s.key)?;
                self.check_size(&s.value)?;
                let old = self
                    .store
                    .put(&s.scope, &s.key, s.value.clone())
                    .map_err(failed_write)?;
                self.changed(&s.scope, &s.key, old.clone(), Some(s.value.clone()));
                Ok(Some(wire::to_json(
                    &json!({"old_value": old, "new_value": s.value}),
                )))
            }
            "state::delete" => {
                let a: Address = input(inv)?;
                let old = self.store.delete(&a.scope, &a.key).map_err(failed_write)?;
                if old.is_some() {
                    self.changed(&a.scope, &a.key, old.clone(), None);
                }
                Ok(Some(wire::to_json(&old)))
            }
            "state::update" => {
                let u: UpdateInput = input(inv)?;
                nonempty(&u.scope, &u.key)?;
                let old = self.store.get(&u.scope, &u.key).cloned();
                let mut new = old.clone().unwrap_or(Value::Null);
                let errors = ops::apply(&mut new, &u.ops);
                self.check_size(&new)?;
                self.store
                    .put(&u.scope, &u.key, new.clone())
                    .map_err(failed_write)?;
                self.changed(&u.scope, &u.key, old.clone(), Some(new.clone()));
                let mut out = json!({"old_value": old, "new_value": new});
                if !errors.is_empty() {
                    out["errors"] = json!(errors);
                }
                Ok(Some(wire::to_json(&out)))
            }
            "state::list" => {
                let s: ScopeInput = input(inv)?;
                Ok(Some(wire::to_json(&self.store.list(&s.scope))))
            }
            "state::list_groups" => {
                Ok(Some(wire::to_json(&json!({"groups": self.store.groups()}))))
            }
            other => Err(ErrorBody::new(
                "function_not_found",
                format!("iii-state does not serve {other}"),
            )),
        }
    }

    fn check_size(&self, v: &Value) -> std::result::Result<(), ErrorBody> {
        if let Some(max) = self.max_value_bytes {
            let n = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0);
            if n > max {
                return Err(ErrorBody::new(
                    "VALUE_TOO_LARGE",
                    format!("the value is {n} bytes; max_value_bytes is {max}"),
                ));
            }
        }
        Ok(())
    }

    /// Tell the matching `state` bindings about a change.
    fn changed(&mut self, scope: &str, key: &str, old: Option<Value>, new: Option<Value>) {
        if !self.triggers_enabled || self.watchers.is_empty() {
            return;
        }
        let event_type = match (&old, &new) {
            (None, Some(_)) => "state:created",
            (Some(_), Some(_)) => "state:updated",
            _ => "state:deleted",
        };
        let payload = wire::to_json(&json!({
            "type": "state", "event_type": event_type, "scope": scope, "key": key,
            "old_value": old, "new_value": new,
        }));
        for w in self.watchers.values() {
            if w.scope.as_deref().is_some_and(|s| s != scope)
                || w.key.as_deref().is_some_and(|k| k != key)
            {
                continue;
            }
            match &w.condition {
                None => self
                    .w
                    .fire(&w.function_id, Some(payload.clone()), w.metadata.clone()),
                Some(cond) => {
                    let id = self.w.call(cond, Some(payload.clone()), w.metadata.clone());
                    self.conditions.insert(
                        id,
                        (w.function_id.clone(), payload.clone(), w.metadata.clone()),
                    );
                }
            }
        }
    }
}
