//! `iii-cron`: the `cron` trigger type. A binding's config is `{expression,
//! condition_function_id?}` (see [`expr`] for the expression), and at each matching second
//! its function is called with `{trigger: "cron", job_id, scheduled_time, actual_time}`.
//!
//! One firing per tick, never a pile-up: while a job's previous call has not answered, its
//! ticks are skipped (and counted in the log), and a tick missed because the engine was busy
//! or the machine asleep is not made up later. With `condition_function_id`, the condition is
//! called with the same payload first and the job runs unless it answers `false` or fails.

use std::collections::HashMap;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::{trigger_config, Running, Worker};
use crate::engine::port::Handle;
use crate::engine::wire::{self, Json, Message};
use crate::Result;

pub mod expr;

use expr::Schedule;

#[derive(Deserialize, Default)]
struct Settings {
    /// Locking adapters of other engines (for several engines sharing jobs); one engine
    /// needs none, so any given here is accepted and unused.
    #[serde(default)]
    #[allow(dead_code)]
    adapter: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct CronConfig {
    expression: String,
    #[serde(default)]
    condition_function_id: Option<String>,
}

struct Job {
    schedule: Schedule,
    expression: String,
    function_id: String,
    condition: Option<String>,
    metadata: Option<Json>,
    /// Unix seconds of the next firing.
    next: Option<i64>,
    /// The call (condition or handler) in flight, if any.
    busy: Option<String>,
    skipped: u64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn start(config: &serde_json::Value, port: &Handle) -> Result<Running> {
    let _: Settings = super::settings("iii-cron", config)?;
    let w = Worker::new(port.connect("iii-cron", None));
    super::spawn("iii-cron", None, move || serve(w))
}

fn serve(w: Worker) {
    w.register_trigger_type(
        "cron",
        "Called at the times of a cron expression (with seconds)",
    );
    let mut jobs: HashMap<String, Job> = HashMap::new();
    // Calls in flight: invocation id → (job id, is the condition call, payload).
    let mut calls: HashMap<String, (String, bool, Json)> = HashMap::new();
    loop {
        let now = now_ms();
        let wait = jobs
            .values()
            .filter_map(|j| j.next)
            .min()
            .map(|next| Duration::from_millis((next * 1000 - now).max(0) as u64))
            .unwrap_or(Duration::from_secs(3600));
        match w.link().recv_timeout(wait) {
            Ok(Message::RegisterTrigger(def)) => {
                match trigger_config::<CronConfig>(&def).and_then(|c| {
                    Schedule::parse(&c.expression)
                        .map(|s| (c, s))
                        .map_err(|e| e.0)
                }) {
                    Ok((c, schedule)) => {
                        // Now, not when the wait began: that may be long past, and a job
                        // must not fire for a time before it existed.
                        let next = schedule.next_after(now_ms().div_euclid(1000));
                        if next.is_none() {
                            crate::say!(
                                "iii-cron: job {}: {:?} never fires again",
                                def.id,
                                c.expression
                            );
                        }
                        jobs.insert(
                            def.id.clone(),
                            Job {
                                schedule,
                                expression: c.expression,
                                function_id: def.function_id.clone(),
                                condition: c.condition_function_id,
                                metadata: def.metadata.clone(),
                                next,
                                busy: None,
                                skipped: 0,
                            },
                        );
                    }
                    Err(e) => w.refuse(&def, format!("cron: {e}")),
                }
            }
            Ok(Message::UnregisterTrigger { id, .. }) => {
                jobs.remove(&id);
            }
            Ok(Message::InvocationResult(r)) => {
                let Some((job_id, was_condition, payload)) = calls.remove(&r.invocation_id) else {
                    continue;
                };
                let Some(job) = jobs.get_mut(&job_id) else {
                    continue;
                };
                job.busy = None;
                if let Some(e) = &r.error {
                    let e = wire::ErrorBody::from_json(e);
                    let what = if was_condition {
                        "condition"
                    } else {
                        "handler"
                    };
                    crate::say!(
                        "iii-cron: job {job_id}: {what} failed: {}: {}",
                        e.code,
                        e.message
                    );
                    continue;
                }
                let go = r.result.as_ref().is_none_or(|v| v.get() != "false");
                if was_condition && go {
                    let id = w.call(
                        &job.function_id,
                        Some(payload.clone()),
                        job.metadata.clone(),
                    );
                    job.busy = Some(id.clone());
                    calls.insert(id, (job_id, false, payload));
                }
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = now_ms();
        let now_s = now.div_euclid(1000);
        for (id, job) in jobs.iter_mut() {
            let Some(next) = job.next.filter(|n| *n <= now_s) else {
                continue;
            };
            // The next tick after this one, skipping any the engine was too late for.
            job.next = job.schedule.next_after(next.max(now_s - 1));
            if job.busy.is_some() {
                job.skipped += 1;
                if job.skipped == 1 || job.skipped.is_power_of_two() {
                    crate::say!(
                        "iii-cron: job {id} ({}): previous call still running; {} tick(s) skipped",
                        job.expression,
                        job.skipped
                    );
                }
                continue;
            }
            let payload = wire::to_json(&json!({
                "trigger": "cron",
                "job_id": id,
                "scheduled_time": expr::rfc3339_ms(next * 1000),
                "actual_time": expr::rfc3339_ms(now),
            }));
            let (target, is_condition) = match &job.condition {
                Some(c) => (c.clone(), true),
                None => (job.function_id.clone(), false),
            };
            let call = w.call(&target, Some(payload.clone()), job.metadata.clone());
            job.busy = Some(call.clone());
            calls.insert(call, (id.clone(), is_condition, payload));
        }
    }
}
