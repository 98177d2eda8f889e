//! Between HTTP and the protocol: a request becomes the payload its handler receives, and the
//! handler's result (or error) becomes the response.
//!
//! Payload: `{query_params, path_params, headers, path (the registered pattern), method, body
//! (parsed JSON when the request says `application/json`, else null), trigger: {type, path,
//! method}, request_body, response}` — the last two are channel references SDK helpers expect
//! to find (this engine does not stream bodies through them).
//!
//! Result: `{status_code?, headers?, body?}` (200, none, `{}` by default), where `headers` is
//! an object or a list of `"Name: value"` strings. A string body with a content type of the
//! handler's choosing is sent as is; other bodies are JSON. A result that is not such an
//! object (no `status_code`, `headers` or `body` key) is itself the JSON body of a 200, and a
//! handler that returns nothing gets 204.

use serde_json::{json, Map, Value};

use super::request::Request;
use crate::engine::ids;
use crate::engine::wire::{self, ErrorBody, Json};

/// A response about to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, v: &Value) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }

    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: vec![],
            body: vec![],
        }
    }

    /// `{"error": {code, message}}`, the envelope of errors the server itself raises.
    pub fn envelope(status: u16, code: &str, message: &str) -> Response {
        Response::json(
            status,
            &json!({"error": {"code": code, "message": message}}),
        )
    }

    /// A handler's failure: 500 with its code and message, and an id to find it in the log.
    pub fn failure(e: &ErrorBody, function_id: &str) -> Response {
        let error_id = ids::hex_id::<6>();
        crate::say!(
            "iii-http: {function_id} failed ({error_id}): {}: {}",
            e.code,
            e.message.chars().take(300).collect::<String>()
        );
        Response::json(
            500,
            &json!({"error": {"code": e.code, "message": e.message, "error_id": error_id}}),
        )
    }
}

/// The payload of the handler call for `req` on route `pattern`.
pub fn payload(
    req: &Request,
    method: &str,
    pattern: &str,
    path_params: &[(String, String)],
    query: &[(String, String)],
) -> Json {
    let to_map = |v: &[(String, String)]| -> Map<String, Value> {
        v.iter()
            .map(|(k, x)| (k.clone(), Value::String(x.clone())))
            .collect()
    };
    let is_json = req
        .header("content-type")
        .is_some_and(|c| c.to_ascii_lowercase().contains("application/json"));
    let body = if is_json && !req.body.is_empty() {
        serde_json::from_slice::<Value>(&req.body).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let channel = ids::uuid();
    let key = ids::uuid();
    wire::to_json(&json!({
        "query_params": to_map(query),
        "path_params": to_map(path_params),
        "headers": to_map(&req.headers),
        "path": pattern,
        "method": method,
        "body": body,
        "trigger": {"type": "http", "path": pattern, "method": method},
        "request_body": {"channel_id": channel, "access_key": key, "direction": "read"},
        "response": {"channel_id": channel, "access_key": key, "direction": "write"},
    }))
}

/// Headers a handler may not set: the server frames the response itself.
const FRAMING: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

fn header_ok(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
        && !FRAMING.contains(&name.to_ascii_lowercase().as_str())
}

fn headers_of(v: Option<&Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match v {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.push((k.clone(), v));
            }
        }
        Some(Value::Array(a)) => {
            for line in a.iter().filter_map(Value::as_str) {
                if let Some((k, v)) = line.split_once(':') {
                    out.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
        }
        _ => {}
    }
    out.retain(|(k, v)| header_ok(k, v));
    out
}

/// The response for a handler's `result`.
pub fn from_result(result: Option<&Json>) -> Response {
    let value: Value = match result {
        None => return Response::empty(204),
        Some(r) => serde_json::from_str(r.get()).unwrap_or(Value::Null),
    };
    let shaped = value.as_object().is_some_and(|o| {
        o.contains_key("status_code") || o.contains_key("body") || o.contains_key("headers")
    });
    if value.is_null() {
        return Response::empty(204);
    }
    if !shaped {
        return Response::json(200, &value);
    }
    let o = value.as_object().expect("checked above");
    let status = match o.get("status_code") {
        None | Some(Value::Null) => 200,
        Some(v) => match v.as_u64().filter(|s| (100..=999).contains(s)) {
            Some(s) => s as u16,
            None => {
                return Response::envelope(
                    500,
                    "INVALID_RESPONSE",
                    &format!("status_code {v} is not an HTTP status"),
                )
            }
        },
    };
    let mut headers = headers_of(o.get("headers"));
    let user_type = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.to_ascii_lowercase());
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    let body = match (o.get("body"), &user_type) {
        _ if no_body => vec![],
        (Some(Value::String(s)), Some(_)) => s.clone().into_bytes(),
        (None | Some(Value::Null), Some(_)) => vec![],
        (Some(v), Some(_)) => serde_json::to_vec(v).unwrap_or_default(),
        (v, None) => {
            headers.push(("content-type".into(), "application/json".into()));
            match v {
                None | Some(Value::Null) => b"{}".to_vec(),
                Some(v) => serde_json::to_vec(v).unwrap_or_default(),
            }
        }
    };
    Response {
        status,
        headers,
        body,
    }
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// The bytes of `r` on the wire (`HEAD` responses keep the length but drop the body).
pub fn serialize(
    r: &Response,
    keep_alive: bool,
    head: bool,
    extra: &[(String, String)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + r.body.len());
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status)).as_bytes());
    for (k, v) in r.headers.iter().chain(extra) {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !(r.status == 204 || r.status == 304 || (100..200).contains(&r.status)) {
        out.extend_from_slice(format!("content-length: {}\r\n", r.body.len()).as_bytes());
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(&r.body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(v: Value) -> Response {
        from_result(Some(&wire::to_json(&v)))
    }

    #[test]
    fn results_become_responses() {
        let r = res(json!({"status_code": 201, "headers": {"x-a": "1"}, "body": {"ok": true}}));
        assert_eq!(r.status, 201);
        assert!(r.headers.contains(&("x-a".into(), "1".into())));
        assert!(r
            .headers
            .contains(&("content-type".into(), "application/json".into())));
        assert_eq!(r.body, br#"{"ok":true}"#);
        let r =
            res(json!({"status_code": 200, "headers": ["Content-Type: text/plain"], "body": "hi"}));
        assert_eq!(r.body, b"hi");
        assert_eq!(
            r.headers,
            vec![("Content-Type".to_string(), "text/plain".to_string())]
        );
        let r = res(json!({"status_code": 200}));
        assert_eq!(r.body, b"{}");
        // A plain object is the body itself.
        let r = res(json!({"sum": 3}));
        assert_eq!((r.status, r.body.as_slice()), (200, &br#"{"sum":3}"#[..]));
        assert_eq!(from_result(None).status, 204);
        assert_eq!(res(Value::Null).status, 204);
        assert_eq!(res(json!({"status_code": 7})).status, 500);
    }

    #[test]
    fn handler_headers_cannot_break_framing() {
        let r = res(
            json!({"headers": {"x-evil": "a\r\nset-cookie: b", "Content-Length": "1", "ok": "y"}, "body": {}}),
        );
        assert!(r
            .headers
            .iter()
            .all(|(k, _)| k != "x-evil" && k != "Content-Length"));
        assert!(r.headers.contains(&("ok".into(), "y".into())));
    }

    #[test]
    fn wire_form() {
        let r = Response::envelope(404, "NOT_FOUND", "Not Found");
        let bytes = serialize(&r, true, false, &[]);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text
            .ends_with("\r\n\r\n{\"error\":{\"code\":\"NOT_FOUND\",\"message\":\"Not Found\"}}"));
        let t = String::from_utf8(serialize(&Response::empty(204), false, false, &[])).unwrap();
        assert_eq!(t, "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
    }
}
