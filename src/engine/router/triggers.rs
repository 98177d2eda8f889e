//! Trigger bindings: registering and withdrawing them, parking a binding until its type has
//! a provider, delivering it to that provider, the provider's refusal, and firing the
//! engine's own trigger types.

use super::{excerpt, Binding, Peer, PeerId, Router, Transport, TriggerType, ENGINE};
use crate::engine::wire::{self, ErrorBody, Invocation, Json, Message, TriggerDef, TriggerTypeDef};

impl Router {
    /// Call every binding of an engine-provided trigger type with `payload` (fire and forget).
    pub(super) fn fire_engine_trigger(
        &mut self,
        t: &mut dyn Transport,
        ty: &str,
        payload: serde_json::Value,
    ) {
        let targets: Vec<(String, Option<Json>)> = self
            .bindings
            .values()
            .filter(|b| b.def.trigger_type == ty)
            .map(|b| (b.def.function_id.clone(), b.def.metadata.clone()))
            .collect();
        if targets.is_empty() {
            return;
        }
        let data = wire::to_json(&payload);
        for (function_id, metadata) in targets {
            self.invoke(
                t,
                ENGINE,
                Invocation::void(&function_id, Some(data.clone()), metadata),
            );
        }
    }

    pub(super) fn register_trigger(
        &mut self,
        t: &mut dyn Transport,
        owner: Option<PeerId>,
        def: TriggerDef,
    ) {
        if let Some(old) = self.bindings.get(&def.id) {
            if old.owner == owner && old.def == def && old.refused.is_none() {
                return; // a replay of what is already in place
            }
            if let Some(prev) = old.owner.filter(|o| Some(*o) != owner) {
                if let Some(p) = self.peers.get_mut(&prev) {
                    p.bindings.remove(&def.id);
                }
            }
            if old.def.trigger_type != def.trigger_type {
                let old = self.bindings.remove(&def.id).expect("present");
                self.withdraw(t, &old.def);
            }
        }
        if let Some(o) = owner {
            if let Some(p) = self.peers.get_mut(&o) {
                p.bindings.insert(def.id.clone());
            }
        }
        self.deliver(t, &def);
        self.bindings.insert(
            def.id.clone(),
            Binding {
                owner,
                def,
                refused: None,
            },
        );
    }

    /// Tell the provider of `def`'s type about it (if there is one: else it stays parked).
    pub(super) fn deliver(&mut self, t: &mut dyn Transport, def: &TriggerDef) {
        if let Some(tt) = self.trigger_types.get(&def.trigger_type) {
            if tt.provider != ENGINE {
                t.send(tt.provider, Message::RegisterTrigger(def.clone()));
            }
        }
    }

    /// Tell the provider of `def`'s type that the binding is gone.
    pub(super) fn withdraw(&mut self, t: &mut dyn Transport, def: &TriggerDef) {
        if let Some(tt) = self.trigger_types.get(&def.trigger_type) {
            if tt.provider != ENGINE {
                t.send(
                    tt.provider,
                    Message::UnregisterTrigger {
                        id: def.id.clone(),
                        trigger_type: Some(def.trigger_type.clone()),
                    },
                );
            }
        }
    }

    /// Remove binding `id` if `by` may (its owner; anyone for ownerless ones). Whether it went.
    pub(super) fn unregister_trigger(
        &mut self,
        t: &mut dyn Transport,
        by: Option<PeerId>,
        id: &str,
    ) -> bool {
        let allowed = self
            .bindings
            .get(id)
            .is_some_and(|b| b.owner.is_none() || b.owner == by);
        if !allowed {
            return false;
        }
        let b = self.bindings.remove(id).expect("checked above");
        if let Some(o) = b.owner {
            if let Some(p) = self.peers.get_mut(&o) {
                p.bindings.remove(id);
            }
        }
        self.withdraw(t, &b.def);
        true
    }

    pub(super) fn register_trigger_type(
        &mut self,
        t: &mut dyn Transport,
        from: PeerId,
        def: TriggerTypeDef,
    ) {
        if let Some(old) = self.trigger_types.get(&def.id) {
            if old.provider == ENGINE {
                crate::say!(
                    "engine: trigger type {} is the engine's own; registration ignored",
                    def.id
                );
                return;
            }
            if old.provider == from {
                let id = def.id.clone();
                self.trigger_types.get_mut(&id).expect("present").def = def;
                return; // a replay: its bindings were delivered already
            }
            let prev = old.provider;
            // The newcomer replaces the previous provider, which stops serving its bindings.
            let defs: Vec<TriggerDef> = self
                .bindings
                .values()
                .filter(|b| b.def.trigger_type == def.id)
                .map(|b| b.def.clone())
                .collect();
            for d in &defs {
                self.withdraw(t, d);
            }
            if let Some(p) = self.peers.get_mut(&prev) {
                p.provides.remove(&def.id);
            }
        }
        if let Some(p) = self.peers.get_mut(&from) {
            p.provides.insert(def.id.clone());
        }
        let id = def.id.clone();
        self.trigger_types.insert(
            id.clone(),
            TriggerType {
                provider: from,
                def,
            },
        );
        let parked: Vec<TriggerDef> = self
            .bindings
            .values_mut()
            .filter(|b| b.def.trigger_type == id)
            .map(|b| {
                b.refused = None;
                b.def.clone()
            })
            .collect();
        for d in parked {
            t.send(from, Message::RegisterTrigger(d));
        }
    }

    pub(super) fn trigger_result(
        &mut self,
        t: &mut dyn Transport,
        from: PeerId,
        id: String,
        trigger_type: String,
        function_id: String,
        error: Option<ErrorBody>,
    ) {
        let Some(error) = error else { return };
        let Some(b) = self.bindings.get_mut(&id) else {
            return;
        };
        let provider = self
            .trigger_types
            .get(&b.def.trigger_type)
            .map(|x| x.provider);
        if provider != Some(from) {
            return;
        }
        b.refused = Some(error.clone());
        let owner = b.owner;
        let ty = if trigger_type.is_empty() {
            b.def.trigger_type.clone()
        } else {
            trigger_type
        };
        let function_id = if function_id.is_empty() {
            b.def.function_id.clone()
        } else {
            function_id
        };
        let who = owner
            .and_then(|o| self.peers.get(&o))
            .map(Peer::display_name)
            .unwrap_or_else(|| "the engine".into());
        crate::say!(
            "engine: trigger {id} ({ty}) of {who} for {function_id} refused: {}: {}",
            error.code,
            excerpt(&error.message)
        );
        if let Some(o) = owner {
            t.send(
                o,
                Message::TriggerRegistrationResult {
                    id,
                    trigger_type: ty,
                    function_id,
                    error: Some(error),
                },
            );
        }
    }
}
