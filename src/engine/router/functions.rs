//! The `engine::*` functions: the engine answers them itself, from the router's state.
//!
//! - `engine::workers::register` — a worker announces itself (name, runtime, version, …);
//!   SDKs send it as a `void` call right after connecting.
//! - `engine::functions::list|info`, `engine::workers::list|info`, `engine::triggers::list`
//!   (trigger types), `engine::registered-triggers::list` — introspection.
//! - `engine::register_trigger` / `engine::unregister_trigger` — bindings made by a call, that
//!   outlive the caller's connection.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{PeerId, PeerKind, Router, Transport, ENGINE};
use crate::engine::ids;
use crate::engine::wire::{ErrorBody, Invocation, Json, TriggerDef};

/// Who serves the `engine::*` functions in listings.
const ENGINE_WORKER_NAME: &str = "iii-engine-functions";

/// The functions the engine serves, with their descriptions.
pub const ENGINE_FUNCTIONS: &[(&str, &str)] = &[
    (
        "engine::workers::register",
        "Register worker metadata (called by SDK workers on connect)",
    ),
    (
        "engine::functions::list",
        "List registered functions with their owning worker",
    ),
    ("engine::functions::info", "Inspect one function"),
    ("engine::workers::list", "List connected workers"),
    ("engine::workers::info", "Inspect one connected worker"),
    ("engine::triggers::list", "List trigger types"),
    (
        "engine::registered-triggers::list",
        "List registered trigger bindings",
    ),
    (
        "engine::register_trigger",
        "Bind a trigger that outlives the caller's connection",
    ),
    ("engine::unregister_trigger", "Remove a binding by id"),
];

fn input<T: for<'de> Deserialize<'de> + Default>(inv: &Invocation) -> Result<T, ErrorBody> {
    match &inv.data {
        None => Ok(T::default()),
        Some(d) if d.get() == "null" => Ok(T::default()),
        Some(d) => serde_json::from_str(d.get()).map_err(|e| {
            ErrorBody::new(
                "invalid_input",
                format!("{}: bad input: {e}", inv.function_id),
            )
        }),
    }
}

fn out(v: Value) -> Result<Option<Json>, ErrorBody> {
    Ok(Some(crate::engine::wire::to_json(&v)))
}

#[derive(Deserialize, Default)]
struct ListFilter {
    prefix: Option<String>,
    search: Option<String>,
    worker: Option<String>,
    include_internal: Option<bool>,
}

#[derive(Deserialize, Default)]
struct ById {
    #[serde(default)]
    function_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize, Default)]
struct RegisterTriggerInput {
    trigger_type: String,
    function_id: String,
    #[serde(default)]
    config: Option<Json>,
    #[serde(default)]
    metadata: Option<Json>,
}

/// Run engine function `inv.function_id` for `from`.
pub(super) fn call(
    r: &mut Router,
    t: &mut dyn Transport,
    from: PeerId,
    inv: &Invocation,
) -> Result<Option<Json>, ErrorBody> {
    match inv.function_id.as_str() {
        "engine::workers::register" => {
            let mut meta: Value = match &inv.data {
                Some(d) => serde_json::from_str(d.get()).unwrap_or(Value::Null),
                None => Value::Null,
            };
            if let Value::Object(m) = &mut meta {
                m.remove("_caller_worker_id");
            }
            let Some(p) = r.peers.get_mut(&from) else {
                return out(json!({"success": false}));
            };
            p.meta = Some(meta);
            let worker_id = p.worker_id.clone();
            r.fire_engine_trigger(
                t,
                super::WORKERS_AVAILABLE,
                json!({"event": "worker_metadata_updated", "worker_id": worker_id}),
            );
            out(json!({"success": true}))
        }
        "engine::functions::list" => {
            let f: ListFilter = input(inv)?;
            let rows: Vec<Value> = summaries(r, f.include_internal.unwrap_or(false))
                .into_iter()
                .filter(|row| {
                    let id = row["function_id"].as_str().unwrap_or("");
                    let desc = row["description"].as_str().unwrap_or("");
                    f.prefix.as_deref().is_none_or(|p| id.starts_with(p))
                        && f.worker
                            .as_deref()
                            .is_none_or(|w| row["worker_name"].as_str() == Some(w))
                        && f.search.as_deref().is_none_or(|s| {
                            let s = s.to_lowercase();
                            id.to_lowercase().contains(&s) || desc.to_lowercase().contains(&s)
                        })
                })
                .collect();
            out(json!({ "functions": rows }))
        }
        "engine::functions::info" => {
            let q: ById = input(inv)?;
            let id = q.function_id.or(q.id).unwrap_or_default();
            let Some(row) = summaries(r, true)
                .into_iter()
                .find(|row| row["function_id"] == id.as_str())
            else {
                return Err(not_found(&format!("Function '{id}' is not registered.")));
            };
            let mut row = row;
            if let Some(f) = r.functions.get(&id) {
                row["request_schema"] = raw_value(&f.def.request_format);
                row["response_schema"] = raw_value(&f.def.response_format);
            }
            row["registered_triggers"] = Value::Array(
                r.bindings
                    .values()
                    .filter(|b| b.def.function_id == id)
                    .map(|b| {
                        json!({"id": b.def.id, "trigger_type": b.def.trigger_type,
                               "config": raw_value(&b.def.config)})
                    })
                    .collect(),
            );
            out(row)
        }
        "engine::workers::list" => {
            let mut rows: Vec<Value> = r.peers.keys().map(|id| worker_row(r, *id)).collect();
            rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            out(json!({ "workers": rows }))
        }
        "engine::workers::info" => {
            let q: ById = input(inv)?;
            let name = q.name.or(q.id).unwrap_or_default();
            let Some((&peer, _)) = r
                .peers
                .iter()
                .find(|(_, p)| p.display_name() == name || p.worker_id == name)
            else {
                return Err(not_found(&format!("Worker '{name}' is not connected.")));
            };
            let p = &r.peers[&peer];
            let functions: Vec<Value> = summaries(r, true)
                .into_iter()
                .filter(|row| {
                    r.functions
                        .get(row["function_id"].as_str().unwrap_or(""))
                        .is_some_and(|f| f.owner == peer)
                })
                .collect();
            let trigger_types: Vec<Value> = p
                .provides
                .iter()
                .filter_map(|id| r.trigger_types.get(id))
                .map(|tt| trigger_type_row(r, tt))
                .collect();
            let bindings: Vec<Value> = p
                .bindings
                .iter()
                .filter_map(|id| r.bindings.get(id))
                .map(|b| binding_row(r, b))
                .collect();
            out(
                json!({"worker": worker_row(r, peer), "functions": functions,
                       "trigger_types": trigger_types, "registered_triggers": bindings}),
            )
        }
        "engine::triggers::list" => {
            let f: ListFilter = input(inv)?;
            let mut rows: Vec<Value> = r
                .trigger_types
                .values()
                .filter(|tt| {
                    f.include_internal.unwrap_or(false) || !tt.def.id.starts_with("engine::")
                })
                .map(|tt| trigger_type_row(r, tt))
                .collect();
            rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
            out(json!({ "triggers": rows }))
        }
        "engine::registered-triggers::list" => {
            let mut rows: Vec<Value> = r.bindings.values().map(|b| binding_row(r, b)).collect();
            rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
            out(json!({ "registered_triggers": rows }))
        }
        "engine::register_trigger" => {
            let q: RegisterTriggerInput = input(inv)?;
            if q.trigger_type.is_empty() || q.function_id.is_empty() {
                return Err(ErrorBody::new(
                    "invalid_input",
                    "engine::register_trigger needs trigger_type and function_id",
                ));
            }
            let id = ids::uuid();
            let def = TriggerDef {
                id: id.clone(),
                trigger_type: q.trigger_type,
                function_id: q.function_id,
                config: q.config,
                metadata: q.metadata,
            };
            r.register_trigger(t, None, def);
            out(json!({ "id": id }))
        }
        "engine::unregister_trigger" => {
            let q: ById = input(inv)?;
            let id = q.id.unwrap_or_default();
            let by = (from != ENGINE).then_some(from);
            let removed = r.unregister_trigger(t, by, &id);
            out(json!({ "removed": removed }))
        }
        other => Err(ErrorBody::new(
            "function_not_found",
            format!("Function {other} not found in namespace default."),
        )),
    }
}

fn not_found(message: &str) -> ErrorBody {
    ErrorBody::new("NOT_FOUND", message)
}

fn raw_value(v: &Option<Json>) -> Value {
    v.as_ref()
        .and_then(|j| serde_json::from_str(j.get()).ok())
        .unwrap_or(Value::Null)
}

fn owner_name(r: &Router, peer: PeerId) -> String {
    if peer == ENGINE {
        return ENGINE_WORKER_NAME.into();
    }
    r.peers
        .get(&peer)
        .map(|p| p.display_name())
        .unwrap_or_default()
}

/// One row per function (the engine's own only with `internal`), sorted by id.
pub(super) fn summaries(r: &Router, internal: bool) -> Vec<Value> {
    let mut rows: Vec<Value> = r
        .functions
        .iter()
        .map(|(id, f)| {
            let mut row = json!({"function_id": id, "namespace": "default",
                                 "worker_name": owner_name(r, f.owner)});
            if let Some(d) = &f.def.description {
                row["description"] = Value::String(d.clone());
            }
            if f.def.metadata.is_some() {
                row["metadata"] = raw_value(&f.def.metadata);
            }
            row
        })
        .collect();
    if internal {
        rows.extend(ENGINE_FUNCTIONS.iter().map(|(id, d)| {
            json!({"function_id": id, "namespace": "default", "worker_name": ENGINE_WORKER_NAME,
                   "description": d, "metadata": {"internal": true}})
        }));
    }
    rows.sort_by(|a, b| a["function_id"].as_str().cmp(&b["function_id"].as_str()));
    rows
}

fn worker_row(r: &Router, peer: PeerId) -> Value {
    let p = &r.peers[&peer];
    let meta = p.meta.clone().unwrap_or(Value::Null);
    let field = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    let (ip, internal) = match &p.kind {
        PeerKind::Worker { remote, .. } => (Value::String(remote.clone()), false),
        PeerKind::Builtin { .. } => (Value::Null, true),
    };
    json!({
        "name": p.display_name(),
        "description": field("description"),
        "version": field("version"),
        "id": p.worker_id,
        "namespace": "default",
        "runtime": field("runtime"),
        "os": field("os"),
        "status": "connected",
        "function_count": p.functions.len(),
        "connected_at_ms": p.connected_at_ms,
        "active_invocations": p.executing.len(),
        "isolation": field("isolation"),
        "ip_address": ip,
        "pid": field("pid"),
        "internal": internal,
    })
}

fn trigger_type_row(r: &Router, tt: &super::TriggerType) -> Value {
    json!({"id": tt.def.id, "namespace": "default", "worker_name": owner_name(r, tt.provider),
           "description": tt.def.description.clone().unwrap_or_default()})
}

fn binding_row(r: &Router, b: &super::Binding) -> Value {
    let config = raw_value(&b.def.config);
    let mut summary = serde_json::to_string(&config).unwrap_or_default();
    if summary.chars().count() > 80 {
        summary = summary.chars().take(80).collect::<String>() + "…";
    }
    let status = if r.trigger_types.contains_key(&b.def.trigger_type) && b.refused.is_none() {
        "active"
    } else {
        "pending"
    };
    let worker = r
        .functions
        .get(&b.def.function_id)
        .map(|f| owner_name(r, f.owner))
        .unwrap_or_default();
    json!({"id": b.def.id, "trigger_type": b.def.trigger_type, "function_id": b.def.function_id,
           "worker_name": worker, "status": status, "config": config, "config_summary": summary})
}
