//! `iii-http`: the `http` trigger type. An HTTP/1.1 server (keep-alive, pipelining, chunked
//! request bodies) on its own thread and `mio` loop; each request that matches a route becomes
//! a call of the route's function, and its answer the response.
//!
//! Config (all optional): `port` (3111), `host` (127.0.0.1), `default_timeout` (ms a handler
//! may take, 30000; then 504), `concurrency_request_limit` (requests in flight, 1024; then
//! 503), `cors: {allowed_origins, allowed_methods}` (absent or empty lists: any), and
//! `middleware: [{function_id, phase: preHandler, priority}]` run before every route.
//!
//! A request runs through, in order: the global middleware (by priority), the route's
//! `condition_function_id` (a literal `false` answers 422), its `middleware_function_ids`,
//! then its function. Middleware answers `{action: "respond", response}` to answer in its
//! place, anything else to continue. Unknown routes get 404, failures 500, both with the
//! `{"error": {code, message}}` envelope; see [`exchange`] for the rest of the mapping.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{trigger_config, Running, Worker};
use crate::engine::port::Handle;
use crate::engine::wire::{self, ErrorBody, Json, Message};
use crate::{Context, Result};

pub mod exchange;
pub mod request;
pub mod routes;

use exchange::Response;
use request::{Parsed, Request};
use routes::{RouteConfig, Routes};

const LISTENER: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 1);
const MAX_CONNECTIONS: usize = 10_000;
/// A keep-alive connection with no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request head must arrive within this long of its first byte.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize, Default)]
struct Settings {
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    default_timeout: Option<u64>,
    #[serde(default)]
    concurrency_request_limit: Option<usize>,
    #[serde(default)]
    cors: Option<Cors>,
    #[serde(default)]
    middleware: Option<Vec<Middleware>>,
}

#[derive(Deserialize, Default, Clone)]
struct Cors {
    #[serde(default)]
    allowed_origins: Option<Vec<String>>,
    #[serde(default)]
    allowed_methods: Option<Vec<String>>,
}

#[derive(Deserialize, Clone)]
struct Middleware {
    function_id: String,
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    priority: Option<i64>,
}

/// One step of a request's way to its response.
#[derive(Debug, Clone)]
enum Stage {
    Middleware(String),
    Condition(String),
    Handler(String),
}

struct Flight {
    conn: usize,
    serial: u64,
    stages: Vec<Stage>,
    /// The handler's payload (and the condition's).
    payload: Json,
    /// What middleware gets: the request without its body.
    middleware_input: Json,
    deadline: (Instant, u64),
    function_id: String,
    /// The binding's metadata, handed to every call.
    metadata: Option<Json>,
}

struct Conn {
    stream: TcpStream,
    serial: u64,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// The call its current request waits on.
    waiting: Option<String>,
    keep_alive: bool,
    head_request: bool,
    origin: Option<String>,
    continue_sent: bool,
    /// When the current request's first byte arrived (or the connection went idle).
    since: Instant,
    closing: bool,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    next_serial: u64,
    routes: Routes,
    flights: HashMap<String, Flight>,
    deadlines: BTreeMap<(Instant, u64), String>,
    deadline_seq: u64,
    timeout: Duration,
    limit: usize,
    cors: Option<Cors>,
    middleware: Vec<String>,
    w: Worker,
    stop: Arc<AtomicBool>,
}

pub fn start(config: &serde_json::Value, port: &Handle) -> Result<Running> {
    let s: Settings = super::settings("iii-http", config)?;
    let host = s.host.clone().unwrap_or_else(|| "127.0.0.1".into());
    let addr: SocketAddr = format!("{host}:{}", s.port.unwrap_or(3111))
        .parse()
        .or_else(|_| {
            use std::net::ToSocketAddrs;
            (host.as_str(), s.port.unwrap_or(3111))
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|_| crate::err!("iii-http: host {host:?} is not an address"))?;
    let std_listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("iii-http: listening on {addr}"))?;
    let bound = std_listener
        .local_addr()
        .context("iii-http: local address")?;
    std_listener
        .set_nonblocking(true)
        .context("iii-http: listener")?;
    let mut listener = TcpListener::from_std(std_listener);
    let poll = Poll::new().context("iii-http: event loop")?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .context("iii-http: watching the listener")?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("iii-http: waker")?);
    let notify = {
        let waker = waker.clone();
        Box::new(move || {
            let _ = waker.wake();
        })
    };
    let link = port.connect("iii-http", Some(notify));
    let mut middleware: Vec<Middleware> = s
        .middleware
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.phase.as_deref().unwrap_or("preHandler") == "preHandler")
        .collect();
    middleware.sort_by_key(|m| m.priority.unwrap_or(0));
    let stop = Arc::new(AtomicBool::new(false));
    let server = Server {
        poll,
        listener,
        conns: Vec::new(),
        free: Vec::new(),
        next_serial: 0,
        routes: Routes::default(),
        flights: HashMap::new(),
        deadlines: BTreeMap::new(),
        deadline_seq: 0,
        timeout: Duration::from_millis(s.default_timeout.unwrap_or(30_000).max(1)),
        limit: s.concurrency_request_limit.unwrap_or(1024).max(1),
        cors: s.cors,
        middleware: middleware.into_iter().map(|m| m.function_id).collect(),
        w: Worker::new(link),
        stop: stop.clone(),
    };
    crate::say!("iii-http: http://{bound}");
    let stopper = Box::new(move || {
        stop.store(true, Ordering::SeqCst);
        let _ = waker.wake();
    });
    super::spawn("iii-http", Some(stopper), move || server.run())
}

impl Server {
    fn run(mut self) {
        self.w
            .register_trigger_type("http", "Called for HTTP requests to a route of iii-http");
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            let next = self
                .deadlines
                .keys()
                .next()
                .map(|k| k.0)
                .unwrap_or(next_sweep)
                .min(next_sweep);
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(next.saturating_duration_since(now)))
            {
                if e.kind() != io::ErrorKind::Interrupted {
                    crate::say!("error: iii-http: event loop: {e}");
                    return;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(slot) => {
                        if ev.is_writable() {
                            self.write_out(slot);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read_in(slot);
                        }
                    }
                }
            }
            loop {
                match self.w.link().try_recv() {
                    Ok(m) => self.handle(m),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                }
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            self.expire(now);
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + Duration::from_secs(1);
            }
        }
    }

    fn handle(&mut self, m: Message) {
        match m {
            Message::RegisterTrigger(def) => {
                let added = trigger_config::<RouteConfig>(&def).and_then(|c| {
                    self.routes
                        .add(&def.id, &def.function_id, c, def.metadata.clone())
                });
                if let Err(e) = added {
                    self.w.refuse(&def, e);
                }
            }
            Message::UnregisterTrigger { id, .. } => self.routes.remove(&id),
            Message::InvocationResult(r) => {
                let Some(f) = self.flights.remove(&r.invocation_id) else {
                    return; // timed out already
                };
                self.deadlines.remove(&f.deadline);
                self.advance(f, r.result, r.error);
            }
            Message::InvokeFunction(inv) => self.w.answer(
                &inv,
                Err(ErrorBody::new(
                    "function_not_found",
                    "iii-http serves no functions",
                )),
            ),
            _ => {}
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() - self.free.len() >= MAX_CONNECTIONS {
                        continue; // dropped: closed at once
                    }
                    let _ = stream.set_nodelay(true);
                    let slot = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(slot),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        self.free.push(slot);
                        continue;
                    }
                    self.next_serial += 1;
                    self.conns[slot] = Some(Conn {
                        stream,
                        serial: self.next_serial,
                        input: Vec::new(),
                        output: Vec::new(),
                        written: 0,
                        waiting: None,
                        keep_alive: true,
                        head_request: false,
                        origin: None,
                        continue_sent: false,
                        since: Instant::now(),
                        closing: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::say!("iii-http: accept: {e}");
                    return;
                }
            }
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot).and_then(Option::take) {
            drop(c);
            self.free.push(slot);
        }
    }

    fn read_in(&mut self, slot: usize) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        let mut buf = [0u8; 16 << 10];
        loop {
            // A client that sends far more than one request can hold waits for the answer.
            if c.input.len() > request::MAX_HEAD + request::MAX_BODY + (64 << 10) {
                break;
            }
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    // The client closed (or half-closed): finish nothing more for it.
                    self.close(slot);
                    return;
                }
                Ok(n) => {
                    if c.input.is_empty() && c.waiting.is_none() {
                        c.since = Instant::now();
                    }
                    c.input.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(slot);
                    return;
                }
            }
        }
        self.process(slot);
    }

    /// Serve the next request buffered on `slot`, if it is complete and none is in flight.
    fn process(&mut self, slot: usize) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        if c.waiting.is_some() || c.closing || c.input.is_empty() {
            return;
        }
        match request::parse(&c.input) {
            Parsed::Incomplete { send_continue } => {
                if send_continue && !c.continue_sent {
                    c.continue_sent = true;
                    c.output.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    self.write_out(slot);
                }
            }
            Parsed::Refused(status, why) => {
                c.keep_alive = false;
                let code = match status {
                    413 => "PAYLOAD_TOO_LARGE",
                    431 => "HEADERS_TOO_LARGE",
                    501 => "NOT_IMPLEMENTED",
                    _ => "BAD_REQUEST",
                };
                let r = Response::envelope(status, code, why);
                self.respond(slot, r);
            }
            Parsed::Done(req, used) => {
                c.input.drain(..used);
                c.continue_sent = false;
                c.keep_alive = req.keep_alive;
                c.origin = req.header("origin").map(str::to_string);
                c.head_request = req.method == "HEAD";
                self.route(slot, req);
            }
        }
    }

    fn route(&mut self, slot: usize, req: Request) {
        let segments = request::path_segments(&req.path);
        let found = self.routes.find(&req.method, &segments).or_else(|| {
            (req.method == "HEAD")
                .then(|| self.routes.find("GET", &segments))
                .flatten()
        });
        let Some((route, params)) = found else {
            if req.method == "OPTIONS" && req.header("access-control-request-method").is_some() {
                let r = self.preflight(&req, &segments);
                return self.respond(slot, r);
            }
            return self.respond(slot, Response::envelope(404, "NOT_FOUND", "Not Found"));
        };
        if self.flights.len() >= self.limit {
            let r = Response::envelope(
                503,
                "TOO_MANY_REQUESTS",
                "too many requests in flight; try again",
            );
            return self.respond(slot, r);
        }
        let query = request::query_params(&req.query);
        let payload = exchange::payload(&req, &req.method, &route.pattern, &params, &query);
        let strs = |v: &[(String, String)]| -> serde_json::Map<String, Value> {
            v.iter()
                .map(|(k, x)| (k.clone(), Value::String(x.clone())))
                .collect()
        };
        let middleware_input = wire::to_json(&json!({
            "phase": "preHandler",
            "request": {"path_params": strs(&params), "query_params": strs(&query),
                        "headers": strs(&req.headers), "method": req.method},
            "context": {},
        }));
        let mut stages: Vec<Stage> = self
            .middleware
            .iter()
            .cloned()
            .map(Stage::Middleware)
            .collect();
        if let Some(c) = &route.condition {
            stages.push(Stage::Condition(c.clone()));
        }
        stages.extend(route.middleware.iter().cloned().map(Stage::Middleware));
        stages.push(Stage::Handler(route.function_id.clone()));
        stages.reverse(); // popped from the end
        let metadata = route.metadata.clone();
        let function_id = route.function_id.clone();
        let serial = self.conns[slot].as_ref().map_or(0, |c| c.serial);
        let flight = Flight {
            conn: slot,
            serial,
            stages,
            payload,
            middleware_input,
            deadline: (Instant::now(), 0),
            function_id,
            metadata,
        };
        self.next_stage(flight);
    }

    /// Call the flight's next stage.
    fn next_stage(&mut self, mut f: Flight) {
        let Some(stage) = f.stages.last().cloned() else {
            return;
        };
        let (target, data) = match &stage {
            Stage::Middleware(id) => (id.clone(), f.middleware_input.clone()),
            Stage::Condition(id) => (id.clone(), f.payload.clone()),
            Stage::Handler(id) => (id.clone(), f.payload.clone()),
        };
        let id = self.w.call(&target, Some(data), f.metadata.clone());
        self.deadline_seq += 1;
        f.deadline = (Instant::now() + self.timeout, self.deadline_seq);
        self.deadlines.insert(f.deadline, id.clone());
        if let Some(Some(c)) = self.conns.get_mut(f.conn) {
            if c.serial == f.serial {
                c.waiting = Some(id.clone());
            }
        }
        self.flights.insert(id, f);
    }

    /// A stage answered.
    fn advance(&mut self, mut f: Flight, result: Option<Json>, error: Option<Json>) {
        let stage = f.stages.pop();
        let response = match (stage, error) {
            (None, _) => return,
            (Some(Stage::Handler(id)), Some(e)) | (Some(Stage::Middleware(id)), Some(e)) => {
                Some(Response::failure(&ErrorBody::from_json(&e), &id))
            }
            (Some(Stage::Condition(id)), Some(e)) => {
                Some(Response::failure(&ErrorBody::from_json(&e), &id))
            }
            (Some(Stage::Handler(_)), None) => Some(exchange::from_result(result.as_ref())),
            (Some(Stage::Condition(id)), None) => {
                if result.as_ref().is_some_and(|r| r.get().trim() == "false") {
                    let mut r = Response::json(
                        422,
                        &json!({"error": {"code": "CONDITION_NOT_MET",
                                          "message": format!("condition {id} was not met")},
                                "skipped": true}),
                    );
                    r.status = 422;
                    Some(r)
                } else {
                    None
                }
            }
            (Some(Stage::Middleware(_)), None) => {
                let v: Value = result
                    .as_ref()
                    .and_then(|r| serde_json::from_str(r.get()).ok())
                    .unwrap_or(Value::Null);
                if v.get("action").and_then(Value::as_str) == Some("respond") {
                    let inner = v.get("response").cloned().unwrap_or(Value::Null);
                    Some(exchange::from_result(Some(&wire::to_json(&inner))))
                } else {
                    None
                }
            }
        };
        match response {
            Some(r) => self.finish(&f, r),
            None => self.next_stage(f),
        }
    }

    fn finish(&mut self, f: &Flight, r: Response) {
        let alive = matches!(&self.conns.get(f.conn), Some(Some(c)) if c.serial == f.serial);
        if alive {
            if let Some(Some(c)) = self.conns.get_mut(f.conn) {
                c.waiting = None;
            }
            self.respond(f.conn, r);
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((&key, _)) = self.deadlines.iter().next() {
            if key.0 > now {
                return;
            }
            let id = self.deadlines.remove(&key).expect("present");
            let Some(f) = self.flights.remove(&id) else {
                continue;
            };
            let r = match f.stages.last() {
                Some(Stage::Middleware(m)) => Response::envelope(
                    504,
                    "MIDDLEWARE_TIMEOUT",
                    &format!("middleware {m} did not answer in time"),
                ),
                _ => {
                    crate::say!(
                        "iii-http: {} did not answer within {} ms; 504",
                        f.function_id,
                        self.timeout.as_millis()
                    );
                    Response::empty(504)
                }
            };
            self.finish(&f, r);
        }
    }

    /// Close connections idle past their timeout.
    fn sweep(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            let stale = match &self.conns[slot] {
                Some(c) if c.waiting.is_none() && c.output.len() == c.written => {
                    let limit = if c.input.is_empty() {
                        IDLE_TIMEOUT
                    } else {
                        HEAD_TIMEOUT
                    };
                    now.duration_since(c.since) > limit
                }
                _ => false,
            };
            if stale {
                self.close(slot);
            }
        }
    }

    fn cors_headers(&self, origin: Option<&str>) -> Vec<(String, String)> {
        let Some(origin) = origin else {
            return vec![];
        };
        let allowed = match self.cors.as_ref().and_then(|c| c.allowed_origins.as_ref()) {
            None => "*".to_string(),
            Some(list) if list.is_empty() || list.iter().any(|o| o == "*") => "*".to_string(),
            Some(list) if list.iter().any(|o| o == origin) => origin.to_string(),
            Some(_) => return vec![],
        };
        let mut h = vec![("access-control-allow-origin".to_string(), allowed.clone())];
        if allowed != "*" {
            h.push(("vary".into(), "origin".into()));
        }
        h
    }

    fn preflight(&self, req: &Request, segments: &[String]) -> Response {
        let mut r = Response::empty(204);
        let methods = match self.cors.as_ref().and_then(|c| c.allowed_methods.as_ref()) {
            Some(m) if !m.is_empty() && !m.iter().any(|x| x == "*") => m.join(", "),
            _ => {
                let m = self.routes.methods_for(segments);
                if m.is_empty() {
                    routes::METHODS.join(", ")
                } else {
                    m.join(", ")
                }
            }
        };
        r.headers
            .push(("access-control-allow-methods".into(), methods));
        r.headers.push((
            "access-control-allow-headers".into(),
            req.header("access-control-request-headers")
                .unwrap_or("*")
                .to_string(),
        ));
        r.headers
            .push(("access-control-max-age".into(), "86400".into()));
        r
    }

    fn respond(&mut self, slot: usize, r: Response) {
        let extra = {
            let Some(Some(c)) = self.conns.get(slot) else {
                return;
            };
            self.cors_headers(c.origin.as_deref())
        };
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        let bytes = exchange::serialize(&r, c.keep_alive, c.head_request, &extra);
        c.output.extend_from_slice(&bytes);
        c.waiting = None;
        if !c.keep_alive {
            c.closing = true;
        }
        c.since = Instant::now();
        self.write_out(slot);
    }

    fn write_out(&mut self, slot: usize) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        while c.written < c.output.len() {
            match c.stream.write(&c.output[c.written..]) {
                Ok(0) => {
                    self.close(slot);
                    return;
                }
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(slot);
                    return;
                }
            }
        }
        c.output.clear();
        c.written = 0;
        if c.closing {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            self.close(slot);
            return;
        }
        // The next pipelined request, if one is buffered (or arrives).
        if c.waiting.is_none() && !c.input.is_empty() {
            self.process(slot);
        }
    }
}
