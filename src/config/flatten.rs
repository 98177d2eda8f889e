//! A worker's `config:` mapping → environment variables.
//!
//! Nested keys are joined with `_` and upper-cased (`database: {host: db}` → `DATABASE_HOST=db`);
//! strings are taken verbatim after `${VAR}` expansion, numbers and booleans as text, lists as
//! compact JSON, null as the empty string.

use serde_yaml::{Mapping, Value};

/// Flatten `config` into `(NAME, value)` pairs in file order. Errors name the variable.
pub fn flatten(
    config: &Mapping,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    walk(config, "", lookup, &mut out)?;
    Ok(out)
}

fn walk(
    map: &Mapping,
    prefix: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Vec<(String, String)>,
) -> Result<(), String> {
    for (k, v) in map {
        let key = scalar_text(k).ok_or_else(|| format!("config key {k:?} is not a scalar"))?;
        let name = if prefix.is_empty() {
            key.to_uppercase()
        } else {
            format!("{prefix}_{}", key.to_uppercase())
        };
        match v {
            Value::Mapping(m) => walk(m, &name, lookup, out)?,
            Value::Sequence(_) => {
                let json = yaml_to_json(v).map_err(|e| format!("config {name}: {e}"))?;
                out.push((name, json.to_string()));
            }
            Value::String(s) => {
                let expanded = expand(s, lookup).map_err(|e| format!("config {name}: {e}"))?;
                out.push((name, expanded));
            }
            Value::Tagged(t) => {
                return Err(format!(
                    "config {name}: YAML tags ({}) are not supported",
                    t.tag
                ))
            }
            other => out.push((name, scalar_text(other).unwrap_or_default())),
        }
    }
    Ok(())
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn yaml_to_json(v: &Value) -> Result<serde_json::Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// Expand `${VAR}`, `${VAR:-default}` (default when unset or empty) and `${VAR-default}`
/// (default when unset); `$$` is a literal `$`. A `$` not followed by `{` or `$` is literal.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body_start) = after.strip_prefix('{') {
            let end = body_start
                .find('}')
                .ok_or_else(|| format!("unterminated ${{…}} in {text:?}"))?;
            let body = &body_start[..end];
            out.push_str(&resolve(body, lookup)?);
            rest = &body_start[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A YAML value as JSON with `${VAR}` references in strings expanded (built-in workers'
/// `config:`). A string that is nothing but one reference takes the type of what it expands
/// to, so `port: ${HTTP_PORT:-3111}` is a number.
pub fn expand_json(
    v: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<serde_json::Value, String> {
    Ok(match v {
        Value::String(s) => {
            let expanded = expand(s, lookup)?;
            let whole_reference =
                s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
            match serde_json::from_str::<serde_json::Value>(&expanded) {
                Ok(typed @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)))
                    if whole_reference =>
                {
                    typed
                }
                _ => serde_json::Value::String(expanded),
            }
        }
        Value::Sequence(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|i| expand_json(i, lookup))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let key = scalar_text(k).ok_or_else(|| format!("key {k:?} is not a scalar"))?;
                out.insert(key, expand_json(v, lookup)?);
            }
            serde_json::Value::Object(out)
        }
        Value::Tagged(t) => return Err(format!("YAML tags ({}) are not supported", t.tag)),
        other => yaml_to_json(other)?,
    })
}

fn resolve(body: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default, empty_counts_as_unset) = if let Some(i) = body.find(":-") {
        (&body[..i], Some(&body[i + 2..]), true)
    } else if let Some(i) = body.find(':') {
        // `${VAR:default}`, as other iii engines write it: like `:-`.
        (&body[..i], Some(&body[i + 1..]), true)
    } else if let Some(i) = body.find('-') {
        (&body[..i], Some(&body[i + 1..]), false)
    } else {
        (body, None, false)
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("invalid variable reference ${{{body}}}"));
    }
    match (lookup(name), default) {
        (Some(v), Some(d)) if v.is_empty() && empty_counts_as_unset => Ok(d.to_string()),
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(format!(
            "environment variable {name} is not set and has no default"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("secret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn flat(yaml: &str) -> Result<Vec<(String, String)>, String> {
        let m: Mapping = serde_yaml::from_str(yaml).unwrap();
        flatten(&m, &env)
    }

    #[test]
    fn builtin_config_expands_with_types() {
        let v: Value = serde_yaml::from_str(
            "{port: '${NOPE:-3111}', host: '${NOPE:127.0.0.1}', on: '${NOPE:-true}', s: 'x${KEY}', n: [1, '${KEY}']}",
        )
        .unwrap();
        let j = expand_json(&v, &env).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"port": 3111, "host": "127.0.0.1", "on": true, "s": "xsecret", "n": [1, "secret"]})
        );
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn nested_keys_and_scalars() {
        let got = flat(
            "MY_API_KEY: ${KEY}\nlog_level: debug\ndatabase: {host: db, port: 5432}\nratio: 0.5\non: true\nlist: [1, \"a\", {b: 2}]\nnothing: null\n",
        )
        .unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("MY_API_KEY", "secret"),
                ("LOG_LEVEL", "debug"),
                ("DATABASE_HOST", "db"),
                ("DATABASE_PORT", "5432"),
                ("RATIO", "0.5"),
                ("ON", "true"),
                ("LIST", r#"[1,"a",{"b":2}]"#),
                ("NOTHING", ""),
            ])
        );
    }

    #[test]
    fn expansion_forms() {
        assert_eq!(expand("a${KEY}b", &env).unwrap(), "asecretb");
        assert_eq!(expand("${NOPE:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand("${EMPTY-dflt}", &env).unwrap(), "");
        assert_eq!(expand("${NOPE-}", &env).unwrap(), "");
        assert_eq!(
            expand("cost $5 and $$HOME", &env).unwrap(),
            "cost $5 and $HOME"
        );
        assert!(expand("${NOPE}", &env).unwrap_err().contains("NOPE"));
        assert!(expand("${KEY", &env).is_err());
        assert!(expand("${1X}", &env).is_err());
    }
}
