//! `iii-pubsub`: topic broadcast, fire and forget.
//!
//! - Function `publish {topic, data}`: every `subscribe` binding on `topic` is called with
//!   `data` itself (no envelope), as a void call; `publish` answers `null` once they are sent.
//! - Trigger type `subscribe`, config `{topic}`.
//!
//! Nothing is stored: a subscriber that is not connected when a message is published misses it.

use std::collections::HashMap;

use serde::Deserialize;

use super::{input, trigger_config, Running, Worker};
use crate::engine::port::Handle;
use crate::engine::wire::{Json, Message};
use crate::Result;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// `{name: local}` is the only adapter (accepted for config files of other engines).
    #[serde(default)]
    adapter: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct SubscribeConfig {
    topic: String,
}

#[derive(Deserialize)]
struct Publish {
    topic: String,
    #[serde(default)]
    data: Option<Json>,
}

struct Subscription {
    topic: String,
    function_id: String,
    metadata: Option<Json>,
}

pub fn start(config: &serde_json::Value, port: &Handle) -> Result<Running> {
    let s: Settings = super::settings("iii-pubsub", config)?;
    if let Some(a) = &s.adapter {
        if a.get("name").and_then(|n| n.as_str()).unwrap_or("local") != "local" {
            return Err(crate::err!(
                "iii-pubsub: adapter {a}: only the `local` adapter is available"
            ));
        }
    }
    let w = Worker::new(port.connect("iii-pubsub", None));
    super::spawn("iii-pubsub", None, move || serve(w))
}

fn serve(w: Worker) {
    w.register_function(
        "publish",
        "Publish data to a topic: every subscriber receives it",
    );
    w.register_trigger_type(
        "subscribe",
        "Called with the data of every publish on a topic",
    );
    let mut subs: HashMap<String, Subscription> = HashMap::new();
    while let Some(m) = w.link().recv() {
        match m {
            Message::RegisterTrigger(def) => match trigger_config::<SubscribeConfig>(&def) {
                Ok(c) if !c.topic.is_empty() => {
                    subs.insert(
                        def.id.clone(),
                        Subscription {
                            topic: c.topic,
                            function_id: def.function_id.clone(),
                            metadata: def.metadata.clone(),
                        },
                    );
                }
                Ok(_) => w.refuse(&def, "subscribe triggers need a non-empty config.topic"),
                Err(e) => w.refuse(&def, e),
            },
            Message::UnregisterTrigger { id, .. } => {
                subs.remove(&id);
            }
            Message::InvokeFunction(inv) if inv.function_id == "publish" => {
                let outcome = input::<Publish>(&inv).map(|p| {
                    for s in subs.values().filter(|s| s.topic == p.topic) {
                        w.fire(&s.function_id, p.data.clone(), s.metadata.clone());
                    }
                    None
                });
                w.answer(&inv, outcome);
            }
            _ => {}
        }
    }
}
