//! `state::update`'s operations on a JSON value: `set`, `merge`, `increment`, `decrement`,
//! `append`, `remove`, each at a `path`. Each operation applies on its own: one that fails
//! (a field that is not a number, say) is reported and skipped, the others still apply.
//!
//! Paths: `""` (or none) is the value itself. For `set`, `increment`, `decrement` and `remove`
//! a path is one field name, taken literally (`"a.b"` is the field named `a.b`). For `merge`
//! and `append` it may also be a list of field names leading into nested objects, which are
//! created when missing.

use serde::Deserialize;
use serde_json::{Map, Value};

/// Field names refused anywhere in a path or a merged object (JavaScript readers of the
/// state would treat them as prototype links).
const FORBIDDEN: [&str; 3] = ["__proto__", "constructor", "prototype"];
const MAX_DEPTH: usize = 32;
const MAX_SEGMENT: usize = 256;

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OpPath {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Op {
    Set {
        #[serde(default)]
        path: Option<OpPath>,
        #[serde(default)]
        value: Value,
    },
    Merge {
        #[serde(default)]
        path: Option<OpPath>,
        value: Value,
    },
    Increment {
        #[serde(default)]
        path: Option<OpPath>,
        #[serde(default)]
        by: Option<Value>,
    },
    Decrement {
        #[serde(default)]
        path: Option<OpPath>,
        #[serde(default)]
        by: Option<Value>,
    },
    Append {
        #[serde(default)]
        path: Option<OpPath>,
        value: Value,
    },
    Remove {
        #[serde(default)]
        path: Option<OpPath>,
    },
}

/// An operation that could not apply.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpError {
    pub op_index: usize,
    pub code: String,
    pub message: String,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Set { .. } => "set",
            Op::Merge { .. } => "merge",
            Op::Increment { .. } => "increment",
            Op::Decrement { .. } => "decrement",
            Op::Append { .. } => "append",
            Op::Remove { .. } => "remove",
        }
    }
}

/// Apply `ops` to `value` in order; the errors of those that did not apply.
pub fn apply(value: &mut Value, ops: &[Op]) -> Vec<OpError> {
    let mut errors = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if let Err((code, message)) = apply_one(value, op) {
            errors.push(OpError {
                op_index: i,
                code: format!("{}.{code}", op.name()),
                message,
            });
        }
    }
    errors
}

type OpResult = Result<(), (&'static str, String)>;

/// The path's segments: empty for the value itself. `nested` allows a list of fields.
fn segments(path: &Option<OpPath>, nested: bool) -> Result<Vec<String>, (&'static str, String)> {
    let segs = match path {
        None => vec![],
        Some(OpPath::One(s)) if s.is_empty() => vec![],
        Some(OpPath::One(s)) => vec![s.clone()],
        Some(OpPath::Many(v)) if nested => v.clone(),
        Some(OpPath::Many(v)) if v.len() <= 1 => v.clone(),
        Some(OpPath::Many(_)) => {
            return Err((
                "path.not_a_field",
                "this operation takes one field name as its path".into(),
            ))
        }
    };
    if segs.len() > MAX_DEPTH {
        return Err((
            "path.too_deep",
            format!("paths have at most {MAX_DEPTH} fields"),
        ));
    }
    for s in &segs {
        if s.is_empty() {
            return Err(("path.empty_segment", "a path field name is empty".into()));
        }
        if s.len() > MAX_SEGMENT {
            return Err((
                "path.segment_too_long",
                format!("path field names have at most {MAX_SEGMENT} bytes"),
            ));
        }
        if FORBIDDEN.contains(&s.as_str()) {
            return Err((
                "path.proto_polluted",
                format!("{s:?} is not allowed in a path"),
            ));
        }
    }
    Ok(segs)
}

/// The object `value` must be for a field operation (a missing value becomes `{}`).
fn as_object(value: &mut Value) -> Result<&mut Map<String, Value>, (&'static str, String)> {
    if value.is_null() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(m) => Ok(m),
        other => Err((
            "target_not_object",
            format!(
                "a field path needs an object, but the value is {}",
                kind(other)
            ),
        )),
    }
}

/// The value at `segs` inside `value`, creating objects on the way.
fn walk<'a>(
    value: &'a mut Value,
    segs: &[String],
) -> Result<&'a mut Value, (&'static str, String)> {
    let mut cur = value;
    for s in segs {
        let m = as_object(cur)?;
        cur = m.entry(s.clone()).or_insert(Value::Null);
    }
    Ok(cur)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn add(target: &mut Value, by: &Option<Value>, sign: f64) -> OpResult {
    let by = match by {
        None | Some(Value::Null) => Value::from(1),
        Some(v @ Value::Number(_)) => v.clone(),
        Some(other) => {
            return Err((
                "by.not_number",
                format!("`by` must be a number, not {}", kind(other)),
            ))
        }
    };
    if target.is_null() {
        *target = Value::from(0);
    }
    let Value::Number(cur) = &*target else {
        return Err((
            "not_number",
            format!("expected a number, got {}", kind(target)),
        ));
    };
    // Integers stay integers when they fit; anything else is a float.
    let int = match (cur.as_i64(), by.as_i64()) {
        (Some(a), Some(b)) => {
            let b = if sign < 0.0 { b.checked_neg() } else { Some(b) };
            b.and_then(|b| a.checked_add(b))
        }
        _ => None,
    };
    *target = match int {
        Some(n) => Value::from(n),
        None => {
            let sum = cur.as_f64().unwrap_or(0.0) + sign * by.as_f64().unwrap_or(0.0);
            serde_json::Number::from_f64(sum)
                .map(Value::Number)
                .ok_or(("overflow", "the result is not a finite number".to_string()))?
        }
    };
    Ok(())
}

fn check_merge_value(v: &Value, depth: usize) -> OpResult {
    if depth > 16 {
        return Err((
            "value.too_deep",
            "merged values nest at most 16 levels".into(),
        ));
    }
    if let Value::Object(m) = v {
        if depth == 0 && m.len() > 1024 {
            return Err((
                "value.too_many_keys",
                "a merged object has at most 1024 keys".into(),
            ));
        }
        for (k, x) in m {
            if FORBIDDEN.contains(&k.as_str()) {
                return Err((
                    "value.proto_polluted",
                    format!("{k:?} is not allowed as a key"),
                ));
            }
            check_merge_value(x, depth + 1)?;
        }
    }
    Ok(())
}

fn apply_one(value: &mut Value, op: &Op) -> OpResult {
    match op {
        Op::Set { path, value: v } => {
            let segs = segments(path, false)?;
            match segs.first() {
                None => *value = v.clone(),
                Some(f) => {
                    as_object(value)?.insert(f.clone(), v.clone());
                }
            }
        }
        Op::Merge { path, value: v } => {
            let Value::Object(incoming) = v else {
                return Err((
                    "value.not_an_object",
                    format!("merge needs an object, not {}", kind(v)),
                ));
            };
            check_merge_value(v, 0)?;
            let segs = segments(path, true)?;
            let target = as_object(walk(value, &segs)?)?;
            for (k, x) in incoming {
                target.insert(k.clone(), x.clone());
            }
        }
        Op::Increment { path, by } | Op::Decrement { path, by } => {
            let sign = if matches!(op, Op::Increment { .. }) {
                1.0
            } else {
                -1.0
            };
            let segs = segments(path, false)?;
            let target = match segs.first() {
                None => value,
                Some(f) => as_object(value)?.entry(f.clone()).or_insert(Value::Null),
            };
            add(target, by, sign)?;
        }
        Op::Append { path, value: v } => {
            let segs = segments(path, true)?;
            let target = walk(value, &segs)?;
            match target {
                Value::Null => *target = Value::Array(vec![v.clone()]),
                Value::Array(a) => a.push(v.clone()),
                Value::String(s) => match v {
                    Value::String(more) => s.push_str(more),
                    other => {
                        return Err((
                            "type_mismatch",
                            format!("cannot append {} to a string", kind(other)),
                        ))
                    }
                },
                other => {
                    return Err((
                        "type_mismatch",
                        format!("append needs an array or a string, not {}", kind(other)),
                    ))
                }
            }
        }
        Op::Remove { path } => {
            let segs = segments(path, false)?;
            match segs.first() {
                None => *value = Value::Null,
                Some(f) => {
                    if !value.is_null() {
                        as_object(value)?.remove(f);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(start: Value, ops: Value) -> (Value, Vec<OpError>) {
        let ops: Vec<Op> = serde_json::from_value(ops).unwrap();
        let mut v = start;
        let e = apply(&mut v, &ops);
        (v, e)
    }

    #[test]
    fn every_operation() {
        let (v, e) = run(
            json!({"status": "pending", "count": 0, "tags": ["a"], "s": "ab"}),
            json!([
                {"type": "set", "path": "status", "value": "paid"},
                {"type": "increment", "path": "count", "by": 5},
                {"type": "decrement", "path": "count", "by": 2},
                {"type": "append", "path": "tags", "value": "b"},
                {"type": "append", "path": "s", "value": "c"},
                {"type": "merge", "path": "", "value": {"extra": true}},
                {"type": "merge", "path": ["sessions", "abc"], "value": {"n": 1}},
                {"type": "append", "path": ["sessions", "abc", "events"], "value": {"k": 1}},
                {"type": "remove", "path": "status"},
                {"type": "increment", "path": "fresh"},
            ]),
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            v,
            json!({"count": 3, "tags": ["a", "b"], "s": "abc", "extra": true,
                   "sessions": {"abc": {"n": 1, "events": [{"k": 1}]}}, "fresh": 1})
        );
    }

    #[test]
    fn failures_are_reported_and_skipped() {
        let (v, e) = run(
            json!({"name": "x", "n": 1.5}),
            json!([
                {"type": "increment", "path": "name", "by": 1},
                {"type": "increment", "path": "n", "by": 1},
                {"type": "merge", "path": "", "value": [1]},
                {"type": "set", "path": "__proto__", "value": 1},
                {"type": "append", "path": "n", "value": 1},
            ]),
        );
        assert_eq!(v, json!({"name": "x", "n": 2.5}));
        let codes: Vec<_> = e.iter().map(|e| (e.op_index, e.code.as_str())).collect();
        assert_eq!(
            codes,
            vec![
                (0, "increment.not_number"),
                (2, "merge.value.not_an_object"),
                (3, "set.path.proto_polluted"),
                (4, "append.type_mismatch")
            ]
        );
        let (_, e) = run(json!(5), json!([{"type": "set", "path": "a", "value": 1}]));
        assert_eq!(e[0].code, "set.target_not_object");
    }

    #[test]
    fn root_paths_and_missing_values() {
        let (v, e) = run(Value::Null, json!([{"type": "increment", "by": 2}]));
        assert!(e.is_empty());
        assert_eq!(v, json!(2));
        let (v, _) = run(
            Value::Null,
            json!([{"type": "set", "path": "a", "value": [1]}]),
        );
        assert_eq!(v, json!({"a": [1]}));
        let (v, _) = run(json!({"a": 1}), json!([{"type": "set", "value": "whole"}]));
        assert_eq!(v, json!("whole"));
    }
}
