//! HTTP/1.1 requests off a connection's input buffer: the head parsed by `httparse`, the body
//! by `Content-Length` or chunked transfer coding, within size limits.

/// A request head larger than this is refused with 431.
pub const MAX_HEAD: usize = 64 << 10;
/// A request body larger than this is refused with 413.
pub const MAX_BODY: usize = 16 << 20;
const MAX_HEADERS: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    /// The path part of the target, still percent-encoded.
    pub path: String,
    /// What follows `?`, if anything.
    pub query: String,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// More bytes are needed; `send_continue` when the client waits for `100 Continue`.
    Incomplete { send_continue: bool },
    /// A whole request, and how many bytes of the buffer it used.
    Done(Request, usize),
    /// A request that cannot be served: answer with this status and close.
    Refused(u16, &'static str),
}

enum BodyLen {
    None,
    Fixed(usize),
    Chunked,
}

/// Try to take one request from the front of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Parsed::Refused(431, "request head too large");
            }
            return Parsed::Incomplete {
                send_continue: false,
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refused(431, "too many request headers")
        }
        Err(_) => return Parsed::Refused(400, "malformed request"),
    };
    if head_len > MAX_HEAD {
        return Parsed::Refused(431, "request head too large");
    }
    let method = req.method.unwrap_or("GET").to_string();
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let http10 = req.version == Some(0);
    let mut out_headers: Vec<(String, String)> = Vec::with_capacity(req.headers.len());
    let mut len = BodyLen::None;
    let mut keep_alive = !http10;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        match name.as_str() {
            "content-length" => match value.parse::<usize>() {
                Ok(n) if matches!(len, BodyLen::None | BodyLen::Fixed(_)) => {
                    if let BodyLen::Fixed(prev) = len {
                        if prev != n {
                            return Parsed::Refused(400, "conflicting content-length headers");
                        }
                    }
                    len = BodyLen::Fixed(n)
                }
                Ok(_) => {}
                Err(_) => return Parsed::Refused(400, "bad content-length"),
            },
            "transfer-encoding" => {
                if value
                    .to_ascii_lowercase()
                    .split(',')
                    .any(|t| t.trim() == "chunked")
                {
                    len = BodyLen::Chunked;
                } else {
                    return Parsed::Refused(501, "unsupported transfer-encoding");
                }
            }
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.split(',').any(|t| t.trim() == "close") {
                    keep_alive = false;
                } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                    keep_alive = true;
                }
            }
            "expect" if value.eq_ignore_ascii_case("100-continue") => expect_continue = true,
            _ => {}
        }
        // Duplicate headers are joined, as HTTP allows for list-valued ones.
        match out_headers.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(&value);
            }
            None => out_headers.push((name, value)),
        }
    }
    let rest = &buf[head_len..];
    let (body, used) = match len {
        BodyLen::None => (Vec::new(), 0),
        BodyLen::Fixed(n) => {
            if n > MAX_BODY {
                return Parsed::Refused(413, "request body too large");
            }
            if rest.len() < n {
                return Parsed::Incomplete {
                    send_continue: expect_continue,
                };
            }
            (rest[..n].to_vec(), n)
        }
        BodyLen::Chunked => match dechunk(rest) {
            Ok(Some(x)) => x,
            Ok(None) => {
                return Parsed::Incomplete {
                    send_continue: expect_continue,
                }
            }
            Err(r) => return *r,
        },
    };
    Parsed::Done(
        Request {
            method,
            path,
            query,
            headers: out_headers,
            body,
            keep_alive,
        },
        head_len + used,
    )
}

/// A chunked body: `Ok(None)` until all of it (and its trailers) has arrived.
fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, Box<Parsed>> {
    // First find where it ends without copying, then copy once.
    let mut pos = 0;
    let mut spans = Vec::new();
    let mut total = 0usize;
    loop {
        match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete((n, size))) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                pos += n;
                if size == 0 {
                    break;
                }
                total = total.saturating_add(size);
                if total > MAX_BODY {
                    return Err(Box::new(Parsed::Refused(413, "request body too large")));
                }
                if buf.len() < pos + size + 2 {
                    return Ok(None);
                }
                if &buf[pos + size..pos + size + 2] != b"\r\n" {
                    return Err(Box::new(Parsed::Refused(400, "malformed chunked body")));
                }
                spans.push((pos, size));
                pos += size + 2;
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() - pos > 1024 {
                    return Err(Box::new(Parsed::Refused(400, "malformed chunked body")));
                }
                return Ok(None);
            }
            Err(_) => return Err(Box::new(Parsed::Refused(400, "malformed chunked body"))),
        }
    }
    // Trailers (ignored), then the empty line.
    loop {
        let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            if buf.len() - pos > MAX_HEAD {
                return Err(Box::new(Parsed::Refused(431, "chunked trailers too large")));
            }
            return Ok(None);
        };
        let line_empty = eol == 0;
        pos += eol + 2;
        if line_empty {
            break;
        }
    }
    let mut body = Vec::with_capacity(total);
    for (start, size) in spans {
        body.extend_from_slice(&buf[start..start + size]);
    }
    Ok(Some((body, pos)))
}

/// The path's segments, percent-decoded (`/` alone has none).
pub fn path_segments(path: &str) -> Vec<String> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return vec![];
    }
    trimmed
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// `a=1&b=x+y` → pairs, decoded (`+` is a space); the last of a repeated name wins.
pub fn query_params(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (k, v) = (decode(k), decode(v));
        match out.iter_mut().find(|(n, _)| *n == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(b: &[u8]) -> (Request, usize) {
        match parse(b) {
            Parsed::Done(r, n) => (r, n),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heads_bodies_and_pipelining() {
        let raw = b"POST /add?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}GET / HTTP/1.1\r\n\r\n";
        let (r, n) = done(raw);
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query.as_str()),
            ("POST", "/add", "x=1")
        );
        assert_eq!(r.body, b"{\"a\":1}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.keep_alive);
        let (r2, _) = done(&raw[n..]);
        assert_eq!(r2.path, "/");
        assert!(matches!(parse(&raw[..30]), Parsed::Incomplete { .. }));
        let (r, _) = done(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
    }

    #[test]
    fn chunked_and_continue() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nT: v\r\n\r\nNEXT";
        let (r, n) = done(raw);
        assert_eq!(r.body, b"Wikipedia");
        assert_eq!(&raw[n..], b"NEXT");
        let head = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            parse(head),
            Parsed::Incomplete {
                send_continue: true
            }
        );
    }

    #[test]
    fn limits_and_garbage() {
        assert_eq!(
            parse(b"\x00\x01 nonsense\r\n\r\n"),
            Parsed::Refused(400, "malformed request")
        );
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(parse(big.as_bytes()), Parsed::Refused(413, _)));
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert!(matches!(parse(&long), Parsed::Refused(431, _)));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Parsed::Refused(400, _)
        ));
    }

    #[test]
    fn paths_and_queries() {
        assert_eq!(path_segments("/"), Vec::<String>::new());
        assert_eq!(path_segments("/users/a%20b"), vec!["users", "a b"]);
        assert_eq!(
            query_params("name=doc&x=a+b&name=curl&flag"),
            vec![
                ("name".into(), "curl".into()),
                ("x".into(), "a b".into()),
                ("flag".into(), String::new())
            ]
        );
    }
}
