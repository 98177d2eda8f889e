//! The worker protocol's messages, as the published iii SDKs speak them: one JSON object per
//! WebSocket text frame, discriminated by `"type"` (the message name in lower case).
//!
//! Decoding is tolerant the way SDKs need it to be: unknown fields are ignored, an absent
//! field and `null` mean the same, `data` and `config` may be missing, and a frame with an
//! unknown `type` decodes to [`Message::Other`] instead of failing. Payloads (`data`,
//! `result`, `config`, …) stay as raw JSON text ([`Json`]): the engine forwards them without
//! building a tree, which is most of what routing costs.

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A JSON value kept as its text.
pub type Json = Box<RawValue>;

/// `{"code", "message", "stacktrace"?}`: how an error travels everywhere in the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacktrace: Option<String>,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code: code.to_string(),
            message: message.into(),
            stacktrace: None,
        }
    }

    /// As a raw JSON value (for [`InvocationResult::error`]).
    pub fn to_json(&self) -> Json {
        serde_json::value::to_raw_value(self).expect("an ErrorBody always serializes")
    }

    /// Read an `error` value a worker sent; anything that is not the usual object still
    /// yields a code and a message, so a caller always learns that the call failed.
    pub fn from_json(raw: &RawValue) -> ErrorBody {
        match serde_json::from_str::<ErrorBody>(raw.get()) {
            Ok(e) => e,
            Err(_) => match serde_json::from_str::<serde_json::Value>(raw.get()) {
                Ok(serde_json::Value::String(s)) => ErrorBody::new("invocation_failed", s),
                Ok(v) => {
                    let code = v.get("code").and_then(|c| c.as_str()).unwrap_or("error");
                    let message = v
                        .get("message")
                        .and_then(|c| c.as_str())
                        .map(str::to_string)
                        .unwrap_or_else(|| raw.get().to_string());
                    ErrorBody::new(code, message)
                }
                Err(_) => ErrorBody::new("error", raw.get()),
            },
        }
    }
}

/// `registerfunction`: a function id served by the sending connection.
#[derive(Debug, Clone)]
pub struct FunctionDef {
    pub id: String,
    pub description: Option<String>,
    pub request_format: Option<Json>,
    pub response_format: Option<Json>,
    pub metadata: Option<Json>,
    /// Set for functions the engine itself executes by calling an HTTP endpoint.
    pub invocation: Option<Json>,
}

/// `registertrigger`: a binding of a trigger type (with its config) to a function.
#[derive(Debug, Clone)]
pub struct TriggerDef {
    pub id: String,
    pub trigger_type: String,
    pub function_id: String,
    pub config: Option<Json>,
    pub metadata: Option<Json>,
}

impl PartialEq for TriggerDef {
    fn eq(&self, o: &TriggerDef) -> bool {
        fn same(a: &Option<Json>, b: &Option<Json>) -> bool {
            a.as_ref().map(|v| v.get()) == b.as_ref().map(|v| v.get())
        }
        self.id == o.id
            && self.trigger_type == o.trigger_type
            && self.function_id == o.function_id
            && same(&self.config, &o.config)
            && same(&self.metadata, &o.metadata)
    }
}

/// `registertriggertype`: the sending connection provides this trigger type.
#[derive(Debug, Clone)]
pub struct TriggerTypeDef {
    pub id: String,
    pub description: Option<String>,
    pub trigger_request_format: Option<Json>,
    pub call_request_format: Option<Json>,
}

/// `action` of an `invokefunction`: absent = a call that wants its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fire and forget: no result is sent back.
    Void,
    /// Hand the call to a queue worker.
    Enqueue { queue: String },
    /// An action this engine does not know.
    Other(String),
}

/// `invokefunction`: in a worker's frame, a call; from the engine, "please run this".
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Present when the caller wants an answer; absent for `void` calls.
    pub invocation_id: Option<String>,
    pub function_id: String,
    pub data: Option<Json>,
    pub metadata: Option<Json>,
    pub action: Option<Action>,
    pub traceparent: Option<String>,
    pub baggage: Option<String>,
}

impl Invocation {
    /// A call of `function_id` with `data` that wants an answer under `invocation_id`.
    pub fn call(invocation_id: String, function_id: &str, data: Option<Json>) -> Invocation {
        Invocation {
            invocation_id: Some(invocation_id),
            function_id: function_id.to_string(),
            data,
            metadata: None,
            action: None,
            traceparent: None,
            baggage: None,
        }
    }

    /// A fire-and-forget call.
    pub fn void(function_id: &str, data: Option<Json>, metadata: Option<Json>) -> Invocation {
        Invocation {
            invocation_id: None,
            function_id: function_id.to_string(),
            data,
            metadata,
            action: Some(Action::Void),
            traceparent: None,
            baggage: None,
        }
    }
}

/// `invocationresult`: the answer to an invocation, `result` or `error`.
#[derive(Debug, Clone)]
pub struct InvocationResult {
    pub invocation_id: String,
    pub function_id: Option<String>,
    pub result: Option<Json>,
    pub error: Option<Json>,
    pub traceparent: Option<String>,
    pub baggage: Option<String>,
}

impl InvocationResult {
    pub fn ok(invocation_id: String, function_id: &str, result: Option<Json>) -> Self {
        InvocationResult {
            invocation_id,
            function_id: Some(function_id.to_string()),
            result,
            error: None,
            traceparent: None,
            baggage: None,
        }
    }

    pub fn failed(invocation_id: String, function_id: &str, error: &ErrorBody) -> Self {
        InvocationResult {
            invocation_id,
            function_id: Some(function_id.to_string()),
            result: None,
            error: Some(error.to_json()),
            traceparent: None,
            baggage: None,
        }
    }
}

/// Every message of the protocol, in either direction.
#[derive(Debug, Clone)]
pub enum Message {
    WorkerRegistered {
        worker_id: String,
        reattach_token: String,
    },
    RegisterFunction(FunctionDef),
    UnregisterFunction {
        id: String,
    },
    RegisterTrigger(TriggerDef),
    UnregisterTrigger {
        id: String,
        trigger_type: Option<String>,
    },
    TriggerRegistrationResult {
        id: String,
        trigger_type: String,
        function_id: String,
        error: Option<ErrorBody>,
    },
    RegisterTriggerType(TriggerTypeDef),
    UnregisterTriggerType {
        id: String,
    },
    InvokeFunction(Invocation),
    InvocationResult(InvocationResult),
    Reattach {
        previous_worker_id: String,
        reattach_token: String,
    },
    RegistrationRejected {
        code: String,
        function_id: String,
        owner_worker_id: String,
    },
    Ping,
    Pong,
    /// A well-formed frame of a type this engine does not handle (the `type` it named).
    Other(String),
}

/// Why a frame could not be decoded.
#[derive(Debug)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every field any message has, all optional: one pass over the text decodes any frame.
#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
    function_id: Option<String>,
    invocation_id: Option<String>,
    trigger_type: Option<String>,
    description: Option<String>,
    data: Option<Json>,
    result: Option<Json>,
    error: Option<Json>,
    config: Option<Json>,
    metadata: Option<Json>,
    request_format: Option<Json>,
    response_format: Option<Json>,
    invocation: Option<Json>,
    trigger_request_format: Option<Json>,
    call_request_format: Option<Json>,
    action: Option<FrameAction>,
    traceparent: Option<String>,
    baggage: Option<String>,
    previous_worker_id: Option<String>,
    reattach_token: Option<String>,
    worker_id: Option<String>,
    code: Option<String>,
    owner_worker_id: Option<String>,
}

#[derive(Deserialize)]
struct FrameAction {
    #[serde(rename = "type")]
    kind: String,
    queue: Option<String>,
}

fn need(v: Option<String>, kind: &str, field: &str) -> Result<String, DecodeError> {
    v.ok_or_else(|| DecodeError(format!("{kind}: missing field `{field}`")))
}

/// Decode one frame's text.
pub fn decode(text: &str) -> Result<Message, DecodeError> {
    let f: Frame = serde_json::from_str(text).map_err(|e| DecodeError(e.to_string()))?;
    let kind = f
        .kind
        .ok_or_else(|| DecodeError("missing field `type`".into()))?;
    let k = kind.as_str();
    Ok(match k {
        "registerfunction" => Message::RegisterFunction(FunctionDef {
            id: need(f.id, k, "id")?,
            description: f.description,
            request_format: f.request_format,
            response_format: f.response_format,
            metadata: f.metadata,
            invocation: f.invocation,
        }),
        "unregisterfunction" => Message::UnregisterFunction {
            id: need(f.id, k, "id")?,
        },
        "registertrigger" => Message::RegisterTrigger(TriggerDef {
            id: need(f.id, k, "id")?,
            trigger_type: need(f.trigger_type, k, "trigger_type")?,
            function_id: need(f.function_id, k, "function_id")?,
            config: f.config,
            metadata: f.metadata,
        }),
        "unregistertrigger" => Message::UnregisterTrigger {
            id: need(f.id, k, "id")?,
            trigger_type: f.trigger_type,
        },
        "triggerregistrationresult" => Message::TriggerRegistrationResult {
            id: need(f.id, k, "id")?,
            trigger_type: f.trigger_type.unwrap_or_default(),
            function_id: f.function_id.unwrap_or_default(),
            error: f.error.map(|e| ErrorBody::from_json(&e)),
        },
        "registertriggertype" => Message::RegisterTriggerType(TriggerTypeDef {
            id: need(f.id, k, "id")?,
            description: f.description,
            trigger_request_format: f.trigger_request_format,
            call_request_format: f.call_request_format,
        }),
        "unregistertriggertype" => Message::UnregisterTriggerType {
            id: need(f.id, k, "id")?,
        },
        "invokefunction" => Message::InvokeFunction(Invocation {
            invocation_id: f.invocation_id,
            function_id: need(f.function_id, k, "function_id")?,
            data: f.data,
            metadata: f.metadata,
            action: f.action.map(|a| match a.kind.as_str() {
                "void" => Action::Void,
                "enqueue" => Action::Enqueue {
                    queue: a.queue.unwrap_or_default(),
                },
                other => Action::Other(other.to_string()),
            }),
            traceparent: f.traceparent,
            baggage: f.baggage,
        }),
        "invocationresult" => Message::InvocationResult(InvocationResult {
            invocation_id: need(f.invocation_id, k, "invocation_id")?,
            function_id: f.function_id,
            result: f.result,
            error: f.error,
            traceparent: f.traceparent,
            baggage: f.baggage,
        }),
        "reattach" => Message::Reattach {
            previous_worker_id: need(f.previous_worker_id, k, "previous_worker_id")?,
            reattach_token: need(f.reattach_token, k, "reattach_token")?,
        },
        "workerregistered" => Message::WorkerRegistered {
            worker_id: need(f.worker_id, k, "worker_id")?,
            reattach_token: f.reattach_token.unwrap_or_default(),
        },
        "registrationrejected" => Message::RegistrationRejected {
            code: f.code.unwrap_or_default(),
            function_id: f.function_id.unwrap_or_default(),
            owner_worker_id: f.owner_worker_id.unwrap_or_default(),
        },
        "ping" => Message::Ping,
        "pong" => Message::Pong,
        _ => Message::Other(kind),
    })
}

/// Encode a message as the text of one frame.
pub fn encode(m: &Message) -> String {
    serde_json::to_string(m).expect("protocol messages always serialize")
}

/// Write `key: value` only when the value is present (SDKs omit absent fields too).
fn opt<M: SerializeMap, T: Serialize + ?Sized>(
    m: &mut M,
    key: &str,
    v: Option<&T>,
) -> Result<(), M::Error> {
    match v {
        Some(v) => m.serialize_entry(key, v),
        None => Ok(()),
    }
}

impl Message {
    /// The `type` this message carries on the wire.
    pub fn kind(&self) -> &str {
        match self {
            Message::WorkerRegistered { .. } => "workerregistered",
            Message::RegisterFunction(_) => "registerfunction",
            Message::UnregisterFunction { .. } => "unregisterfunction",
            Message::RegisterTrigger(_) => "registertrigger",
            Message::UnregisterTrigger { .. } => "unregistertrigger",
            Message::TriggerRegistrationResult { .. } => "triggerregistrationresult",
            Message::RegisterTriggerType(_) => "registertriggertype",
            Message::UnregisterTriggerType { .. } => "unregistertriggertype",
            Message::InvokeFunction(_) => "invokefunction",
            Message::InvocationResult(_) => "invocationresult",
            Message::Reattach { .. } => "reattach",
            Message::RegistrationRejected { .. } => "registrationrejected",
            Message::Ping => "ping",
            Message::Pong => "pong",
            Message::Other(k) => k,
        }
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", self.kind())?;
        match self {
            Message::WorkerRegistered {
                worker_id,
                reattach_token,
            } => {
                m.serialize_entry("worker_id", worker_id)?;
                m.serialize_entry("reattach_token", reattach_token)?;
            }
            Message::RegisterFunction(f) => {
                m.serialize_entry("id", &f.id)?;
                opt(&mut m, "description", f.description.as_ref())?;
                opt(&mut m, "request_format", f.request_format.as_ref())?;
                opt(&mut m, "response_format", f.response_format.as_ref())?;
                opt(&mut m, "metadata", f.metadata.as_ref())?;
                opt(&mut m, "invocation", f.invocation.as_ref())?;
            }
            Message::UnregisterFunction { id } | Message::UnregisterTriggerType { id } => {
                m.serialize_entry("id", id)?;
            }
            Message::RegisterTrigger(t) => {
                m.serialize_entry("id", &t.id)?;
                m.serialize_entry("trigger_type", &t.trigger_type)?;
                m.serialize_entry("function_id", &t.function_id)?;
                // Providers read `config` as a value: an absent one is delivered as null.
                match &t.config {
                    Some(c) => m.serialize_entry("config", c)?,
                    None => m.serialize_entry("config", &())?,
                }
                opt(&mut m, "metadata", t.metadata.as_ref())?;
            }
            Message::UnregisterTrigger { id, trigger_type } => {
                m.serialize_entry("id", id)?;
                opt(&mut m, "trigger_type", trigger_type.as_ref())?;
            }
            Message::TriggerRegistrationResult {
                id,
                trigger_type,
                function_id,
                error,
            } => {
                m.serialize_entry("id", id)?;
                m.serialize_entry("trigger_type", trigger_type)?;
                m.serialize_entry("function_id", function_id)?;
                opt(&mut m, "error", error.as_ref())?;
            }
            Message::RegisterTriggerType(t) => {
                m.serialize_entry("id", &t.id)?;
                opt(&mut m, "description", t.description.as_ref())?;
                opt(
                    &mut m,
                    "trigger_request_format",
                    t.trigger_request_format.as_ref(),
                )?;
                opt(
                    &mut m,
                    "call_request_format",
                    t.call_request_format.as_ref(),
                )?;
            }
            Message::InvokeFunction(i) => {
                opt(&mut m, "invocation_id", i.invocation_id.as_ref())?;
                m.serialize_entry("function_id", &i.function_id)?;
                // Handlers receive `data` as their input: absent is delivered as null.
                match &i.data {
                    Some(d) => m.serialize_entry("data", d)?,
                    None => m.serialize_entry("data", &())?,
                }
                opt(&mut m, "metadata", i.metadata.as_ref())?;
                match &i.action {
                    Some(Action::Void) => {
                        m.serialize_entry("action", &serde_json::json!({"type": "void"}))?
                    }
                    Some(Action::Enqueue { queue }) => m.serialize_entry(
                        "action",
                        &serde_json::json!({"type": "enqueue", "queue": queue}),
                    )?,
                    Some(Action::Other(_)) | None => {}
                }
                opt(&mut m, "traceparent", i.traceparent.as_ref())?;
                opt(&mut m, "baggage", i.baggage.as_ref())?;
            }
            Message::InvocationResult(r) => {
                m.serialize_entry("invocation_id", &r.invocation_id)?;
                opt(&mut m, "function_id", r.function_id.as_ref())?;
                opt(&mut m, "result", r.result.as_ref())?;
                opt(&mut m, "error", r.error.as_ref())?;
                opt(&mut m, "traceparent", r.traceparent.as_ref())?;
                opt(&mut m, "baggage", r.baggage.as_ref())?;
            }
            Message::Reattach {
                previous_worker_id,
                reattach_token,
            } => {
                m.serialize_entry("previous_worker_id", previous_worker_id)?;
                m.serialize_entry("reattach_token", reattach_token)?;
            }
            Message::RegistrationRejected {
                code,
                function_id,
                owner_worker_id,
            } => {
                m.serialize_entry("code", code)?;
                m.serialize_entry("namespace", "default")?;
                m.serialize_entry("function_id", function_id)?;
                m.serialize_entry("owner_worker_id", owner_worker_id)?;
            }
            Message::Ping | Message::Pong | Message::Other(_) => {}
        }
        m.end()
    }
}

/// Raw JSON from a serializable value.
pub fn to_json<T: Serialize + ?Sized>(v: &T) -> Json {
    serde_json::value::to_raw_value(v).expect("a JSON value always serializes")
}

/// `data` with `"_caller_worker_id": worker_id` added when it is an object, as the engine
/// tells every executor who called. The key goes last so that it wins over a caller that
/// sends its own (JSON readers keep the last of duplicate keys).
pub fn with_caller(data: &RawValue, worker_id: &str) -> Option<Json> {
    let text = data.get().trim();
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = String::with_capacity(text.len() + worker_id.len() + 24);
    out.push('{');
    if !inner.trim().is_empty() {
        out.push_str(inner);
        out.push(',');
    }
    out.push_str("\"_caller_worker_id\":");
    out.push_str(&serde_json::to_string(worker_id).ok()?);
    out.push('}');
    RawValue::from_string(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_sdks_send() {
        // Node 0.22.1 leaks `message_type`; config may be missing.
        let m = decode(r#"{"type":"registertrigger","function_id":"http::add","id":"b977","message_type":"registertrigger","trigger_type":"http"}"#).unwrap();
        let Message::RegisterTrigger(t) = m else {
            panic!()
        };
        assert_eq!(t.function_id, "http::add");
        assert!(t.config.is_none());
        // No data, no invocation id (void).
        let m = decode(
            r#"{"type":"invokefunction","function_id":"shape::echo","action":{"type":"void"}}"#,
        )
        .unwrap();
        let Message::InvokeFunction(i) = m else {
            panic!()
        };
        assert!(i.data.is_none() && i.invocation_id.is_none());
        assert_eq!(i.action, Some(Action::Void));
        // null is absent.
        let m = decode(
            r#"{"type":"invocationresult","invocation_id":"x","result":{"a":[1,2]},"error":null}"#,
        )
        .unwrap();
        let Message::InvocationResult(r) = m else {
            panic!()
        };
        assert_eq!(r.result.unwrap().get(), r#"{"a":[1,2]}"#);
        assert!(r.error.is_none());
    }

    #[test]
    fn unknown_types_and_bad_frames() {
        assert!(matches!(
            decode(r#"{"type":"registerservice","id":"s"}"#).unwrap(),
            Message::Other(k) if k == "registerservice"
        ));
        assert!(decode("{not json").is_err());
        assert!(decode(r#"{"id":"x"}"#).is_err());
        assert!(decode(r#"{"type":"invokefunction"}"#).is_err());
        assert!(decode(r#"[1,2]"#).is_err());
        assert!(decode(r#"{"type":"registerfunction","id":7}"#).is_err());
    }

    #[test]
    fn encodes_compact_frames_without_absent_fields() {
        let m = Message::InvocationResult(InvocationResult::ok(
            "i1".into(),
            "math::add",
            Some(to_json(&serde_json::json!({"sum": 3}))),
        ));
        assert_eq!(
            encode(&m),
            r#"{"type":"invocationresult","invocation_id":"i1","function_id":"math::add","result":{"sum":3}}"#
        );
        let m = Message::InvokeFunction(Invocation::call("i2".into(), "f", None));
        assert_eq!(
            encode(&m),
            r#"{"type":"invokefunction","invocation_id":"i2","function_id":"f","data":null}"#
        );
        // Round trip keeps payload text byte for byte.
        let text = r#"{"type":"invokefunction","invocation_id":"i3","function_id":"f","data":{"x": [1, 2.50, "é"]}}"#;
        let Message::InvokeFunction(i) = decode(text).unwrap() else {
            panic!()
        };
        assert_eq!(i.data.unwrap().get(), r#"{"x": [1, 2.50, "é"]}"#);
    }

    #[test]
    fn caller_id_is_added_to_objects_only() {
        let v = |s: &str| RawValue::from_string(s.to_string()).unwrap();
        assert_eq!(
            with_caller(&v(r#"{"a":1}"#), "w1").unwrap().get(),
            r#"{"a":1,"_caller_worker_id":"w1"}"#
        );
        assert_eq!(
            with_caller(&v("{ }"), "w1").unwrap().get(),
            r#"{"_caller_worker_id":"w1"}"#
        );
        assert!(with_caller(&v("[1]"), "w1").is_none());
        assert!(with_caller(&v("\"{}\""), "w1").is_none());
        // A spoofed id loses to ours.
        let d = with_caller(&v(r#"{"_caller_worker_id":"evil"}"#), "w1").unwrap();
        let parsed: serde_json::Value = serde_json::from_str(d.get()).unwrap();
        assert_eq!(parsed["_caller_worker_id"], "w1");
    }
}
