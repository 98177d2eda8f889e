//! The built-in workers: what config.yaml entries without `image:` select. Each runs on its own
//! thread and talks to the router exactly as an SDK worker does — it registers functions and
//! trigger types, receives the bindings of its types and the invocations of its functions,
//! and calls other functions — only over an in-process [`Link`] instead of a WebSocket.
//!
//! - [`http`] (`iii-http`): the `http` trigger type, an HTTP/1.1 server that turns requests
//!   into invocations.
//! - [`cron`] (`iii-cron`): the `cron` trigger type.
//! - [`pubsub`] (`iii-pubsub`): the `publish` function and the `subscribe` trigger type.
//! - [`state`] (`iii-state`): the `state::*` functions and the `state` trigger type.
//!
//! Adding one (a queue, say) is adding a room here and a name to `config::BUILTIN_WORKERS`.

use std::thread::JoinHandle;

use super::ids;
use super::port::{Handle, Link};
use super::wire::{
    ErrorBody, FunctionDef, Invocation, InvocationResult, Json, Message, TriggerDef, TriggerTypeDef,
};
use crate::config::Config;
use crate::project::Project;
use crate::{Context, Result};

pub mod cron;
pub mod http;
pub mod pubsub;
pub mod state;

/// One running built-in worker.
pub struct Running {
    name: &'static str,
    thread: JoinHandle<()>,
    /// Asks the worker to stop (beyond its link closing), for workers with sockets of their own.
    stop: Option<Box<dyn FnOnce() + Send>>,
}

/// Every built-in worker config.yaml lists, started.
pub struct Builtins(Vec<Running>);

/// Start the built-in workers `config` lists (`iii-worker-manager` is the worker port itself).
pub fn start(config: &Config, port: &Handle, project: &Project) -> Result<Builtins> {
    let mut running = Vec::new();
    for entry in &config.builtins {
        let r = match entry.name.as_str() {
            "iii-http" => http::start(&entry.config, port)?,
            "iii-cron" => cron::start(&entry.config, port)?,
            "iii-pubsub" => pubsub::start(&entry.config, port)?,
            "iii-state" => state::start(&entry.config, port, project)?,
            _ => continue,
        };
        running.push(r);
    }
    Ok(Builtins(running))
}

impl Builtins {
    /// Names of the running built-in workers.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|r| r.name).collect()
    }

    /// Stop the built-in workers that serve sockets of their own (`iii-http`); the others
    /// end when the worker port closes their links.
    pub fn stop(&mut self) {
        for r in &mut self.0 {
            if let Some(stop) = r.stop.take() {
                stop();
            }
        }
    }

    /// Wait for every built-in worker to end (after [`Builtins::stop`] and the port's
    /// shutdown): `iii-state` writes its snapshot on the way out.
    pub fn join(self) {
        for r in self.0 {
            if r.thread.join().is_err() {
                crate::say!("error: built-in worker {} panicked", r.name);
            }
        }
    }
}

/// Start a built-in worker's thread.
fn spawn(
    name: &'static str,
    stop: Option<Box<dyn FnOnce() + Send>>,
    f: impl FnOnce() + Send + 'static,
) -> Result<Running> {
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("starting the built-in worker {name}"))?;
    Ok(Running { name, thread, stop })
}

/// Read a built-in worker's `config:` into its settings type (`null` = all defaults).
fn settings<T: for<'de> serde::Deserialize<'de> + Default>(
    name: &str,
    config: &serde_json::Value,
) -> Result<T> {
    if config.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(config.clone()).map_err(|e| crate::err!("{name}: config: {e}"))
}

/// A built-in worker's end of the protocol: the messages an SDK would send, as calls.
pub struct Worker {
    link: Link,
}

impl Worker {
    pub fn new(link: Link) -> Worker {
        Worker { link }
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn register_function(&self, id: &str, description: &str) {
        self.link.send(Message::RegisterFunction(FunctionDef {
            id: id.to_string(),
            description: Some(description.to_string()),
            request_format: None,
            response_format: None,
            metadata: None,
            invocation: None,
        }));
    }

    pub fn register_trigger_type(&self, id: &str, description: &str) {
        self.link.send(Message::RegisterTriggerType(TriggerTypeDef {
            id: id.to_string(),
            description: Some(description.to_string()),
            trigger_request_format: None,
            call_request_format: None,
        }));
    }

    /// Refuse a binding delivered to this worker (the binding's owner is told why).
    pub fn refuse(&self, def: &TriggerDef, message: impl Into<String>) {
        self.link.send(Message::TriggerRegistrationResult {
            id: def.id.clone(),
            trigger_type: def.trigger_type.clone(),
            function_id: def.function_id.clone(),
            error: Some(ErrorBody::new("trigger_registration_failed", message)),
        });
    }

    /// Call `function_id` with `data`; the answer arrives as an `InvocationResult` under the
    /// returned id.
    pub fn call(&self, function_id: &str, data: Option<Json>, metadata: Option<Json>) -> String {
        let id = ids::uuid();
        let mut inv = Invocation::call(id.clone(), function_id, data);
        inv.metadata = metadata;
        self.link.send(Message::InvokeFunction(inv));
        id
    }

    /// Call `function_id` and forget about it.
    pub fn fire(&self, function_id: &str, data: Option<Json>, metadata: Option<Json>) {
        self.link.send(Message::InvokeFunction(Invocation::void(
            function_id,
            data,
            metadata,
        )));
    }

    /// Answer invocation `inv` (when its caller wants an answer).
    pub fn answer(&self, inv: &Invocation, outcome: std::result::Result<Option<Json>, ErrorBody>) {
        let Some(id) = inv.invocation_id.clone() else {
            return;
        };
        let r = match outcome {
            Ok(v) => InvocationResult::ok(id, &inv.function_id, v),
            Err(e) => InvocationResult::failed(id, &inv.function_id, &e),
        };
        self.link.send(Message::InvocationResult(r));
    }
}

/// `data` of an invocation read as `T`, or the `invalid_input` error naming the function.
fn input<T: for<'de> serde::Deserialize<'de>>(
    inv: &Invocation,
) -> std::result::Result<T, ErrorBody> {
    let text = inv.data.as_ref().map_or("null", |d| d.get());
    serde_json::from_str(text).map_err(|e| {
        ErrorBody::new(
            "invalid_input",
            format!("{}: bad input: {e}", inv.function_id),
        )
    })
}

/// A binding's `config` read as `T` (absent = `null`).
fn trigger_config<T: for<'de> serde::Deserialize<'de>>(
    def: &TriggerDef,
) -> std::result::Result<T, String> {
    let text = def.config.as_ref().map_or("null", |d| d.get());
    serde_json::from_str(text).map_err(|e| format!("{} trigger config: {e}", def.trigger_type))
}
