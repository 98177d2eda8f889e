//! Load for an engine's worker port, written against the wire protocol (any engine that speaks
//! it can be measured), used by `scripts/bench-worker-port.sh`.
//!
//! ```text
//! engine_load calls URL [CALLERS] [WINDOW] [SECONDS]   forwarded calls: throughput, then latency
//! engine_load echo-floor [SECONDS]                      plain WebSocket echo round trip, same crate
//! engine_load http-serve URL PATH                       serve an http route (until killed)
//! engine_load http URL CONNECTIONS RATE SECONDS         keep-alive HTTP load (RATE 0 = closed loop)
//! engine_load idle URL COUNT                            COUNT idle registered workers (until killed)
//! ```
//! Output: one `key=value` line per figure, for the script to print side by side.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

/// A socket that remembers whether its last read drained it.
struct Sock {
    s: TcpStream,
    drained: bool,
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.s.read(buf)?;
        self.drained = n < buf.len();
        Ok(n)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.s.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

type Ws = WebSocket<Sock>;

fn connect(url: &str) -> Ws {
    let rest = url.trim_start_matches("ws://");
    let authority = rest.split('/').next().unwrap();
    let stream = TcpStream::connect(authority).expect("connecting to the engine");
    stream.set_nodelay(true).unwrap();
    let sock = Sock {
        s: stream,
        drained: false,
    };
    let (ws, _) = tungstenite::client(url, sock).expect("websocket upgrade");
    ws
}

fn uuid(a: u64, b: u64) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        a as u32,
        b & 0xffff_ffff_ffff
    )
}

fn text(m: Message) -> Option<String> {
    match m {
        Message::Text(t) => Some(t.as_str().to_string()),
        _ => None,
    }
}

/// Handle messages as they come, flushing answers when the socket has nothing more for now
/// (its last read came back short): one write per burst under load, no delay when calls
/// come one at a time.
fn read_batch(ws: &mut Ws, mut each: impl FnMut(&mut Ws, String)) -> bool {
    loop {
        let m = match ws.read() {
            Ok(m) => m,
            Err(_) => return false,
        };
        if let Some(t) = text(m) {
            each(ws, t);
        }
        if ws.get_ref().drained {
            return ws.flush().is_ok();
        }
    }
}

fn send(ws: &mut Ws, s: String) {
    match ws.write(Message::Text(s.into())) {
        Ok(()) => {}
        Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => panic!("send: {e}"),
    }
}

fn field<'a>(t: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let i = t.find(&key)? + key.len();
    let j = t[i..].find('"')? + i;
    Some(&t[i..j])
}

/// A worker serving `bench::echo`: answers every call with its data.
fn callee(url: String, function: &str, ready: Arc<AtomicBool>, http_path: Option<String>) {
    let mut ws = connect(&url);
    send(
        &mut ws,
        format!(r#"{{"type":"registerfunction","id":"{function}"}}"#),
    );
    if let Some(p) = &http_path {
        send(
            &mut ws,
            format!(
                r#"{{"type":"registertrigger","id":"{}","trigger_type":"http","function_id":"{function}","config":{{"api_path":"{p}","http_method":"GET"}}}}"#,
                uuid(7, 7)
            ),
        );
    }
    ws.flush().unwrap();
    ready.store(true, Ordering::SeqCst);
    let result = if http_path.is_some() {
        r#"{"status_code":200,"body":{"ok":true}}"#
    } else {
        r#"{"echo":true}"#
    };
    while read_batch(&mut ws, |ws, t| {
        if t.contains(r#""type":"invokefunction""#) {
            if let Some(id) = field(&t, "invocation_id") {
                let answer = format!(
                    r#"{{"type":"invocationresult","invocation_id":"{id}","function_id":"{function}","result":{result}}}"#
                );
                send(ws, answer);
            }
        }
    }) {}
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

const CALL_DATA: &str = r#"{"a":40,"b":2,"name":"benchmark payload"}"#;

fn calls(url: &str, callers: usize, window: usize, seconds: f64) {
    let ready = Arc::new(AtomicBool::new(false));
    {
        let (url, ready) = (url.to_string(), ready.clone());
        std::thread::spawn(move || callee(url, "bench::echo", ready, None));
    }
    while !ready.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    // Throughput: every caller keeps `window` calls in flight.
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for c in 0..callers {
        let (url, done, stop) = (url.to_string(), done.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut ws = connect(&url);
            let mut n = 0u64;
            let call = |n: u64| {
                format!(
                    r#"{{"type":"invokefunction","invocation_id":"{}","function_id":"bench::echo","data":{CALL_DATA}}}"#,
                    uuid(c as u64, n)
                )
            };
            for _ in 0..window {
                send(&mut ws, call(n));
                n += 1;
            }
            ws.flush().unwrap();
            let mut outstanding = window;
            while outstanding > 0 {
                let ok = read_batch(&mut ws, |ws, t| {
                    if t.contains(r#""type":"invocationresult""#) {
                        done.fetch_add(1, Ordering::Relaxed);
                        outstanding -= 1;
                        if !stop.load(Ordering::Relaxed) {
                            send(ws, call(n));
                            n += 1;
                            outstanding += 1;
                        }
                    }
                });
                if !ok {
                    break;
                }
            }
        }));
    }
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    println!("calls_per_second={:.0}", n as f64 / elapsed);
    // Latency: one call at a time on one connection.
    let mut ws = connect(url);
    let mut lat = Vec::new();
    let until = Instant::now() + Duration::from_secs_f64(seconds.min(3.0));
    let mut i = 0u64;
    while Instant::now() < until {
        let t0 = Instant::now();
        ws.send(Message::Text(
            format!(
                r#"{{"type":"invokefunction","invocation_id":"{}","function_id":"bench::echo","data":{CALL_DATA}}}"#,
                uuid(999, i)
            )
            .into(),
        ))
        .unwrap();
        loop {
            if let Some(t) = text(ws.read().unwrap()) {
                if t.contains("invocationresult") {
                    break;
                }
            }
        }
        lat.push(t0.elapsed());
        i += 1;
    }
    lat.sort();
    println!("call_p50_us={:.1}", us(percentile(&lat, 0.5)));
    println!("call_p99_us={:.1}", us(percentile(&lat, 0.99)));
}

fn echo_floor(seconds: f64) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut ws = tungstenite::accept(s).unwrap();
        while let Ok(m) = ws.read() {
            if m.is_text() && ws.send(m).is_err() {
                break;
            }
        }
    });
    let mut ws = connect(&format!("ws://{addr}/"));
    let msg = format!(
        r#"{{"type":"invokefunction","invocation_id":"{}","function_id":"bench::echo","data":{CALL_DATA}}}"#,
        uuid(1, 1)
    );
    let mut lat = Vec::new();
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < until {
        let t0 = Instant::now();
        ws.send(Message::Text(msg.clone().into())).unwrap();
        ws.read().unwrap();
        lat.push(t0.elapsed());
    }
    lat.sort();
    println!("echo_p50_us={:.1}", us(percentile(&lat, 0.5)));
    println!("echo_p99_us={:.1}", us(percentile(&lat, 0.99)));
}

/// Keep-alive GET load over `conns` connections; `rate` requests/s in all (0: as fast as the
/// server answers).
fn http(url: &str, conns: usize, rate: f64, seconds: f64) {
    let rest = url.trim_start_matches("http://");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    let start = Instant::now() + Duration::from_millis(100);
    let mut threads = Vec::new();
    for c in 0..conns {
        let (authority, req) = (authority.to_string(), req.clone());
        threads.push(std::thread::spawn(move || {
            let mut s = TcpStream::connect(&authority).unwrap();
            s.set_nodelay(true).unwrap();
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut buf = vec![0u8; 64 << 10];
            let per_conn = rate / conns as f64;
            let end = start + Duration::from_secs_f64(seconds);
            let mut k = 0u64;
            while Instant::now() < start {
                std::thread::sleep(Duration::from_millis(1));
            }
            loop {
                // Open-loop pacing: request k is due at its slot, late ones go at once, and
                // latency counts from the slot (no coordinated omission).
                let due = if per_conn > 0.0 {
                    start + Duration::from_secs_f64((k as f64 + c as f64 / conns as f64) / per_conn)
                } else {
                    Instant::now()
                };
                if due >= end {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let t0 = if per_conn > 0.0 { due } else { Instant::now() };
                s.write_all(req.as_bytes()).unwrap();
                let mut got = Vec::new();
                loop {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0, "server closed the connection");
                    got.extend_from_slice(&buf[..n]);
                    if let Some(h) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..h]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        if got.len() >= h + 4 + len {
                            if !head.starts_with("http/1.1 200") {
                                errors += 1;
                            }
                            break;
                        }
                    }
                }
                lat.push(t0.elapsed());
                k += 1;
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in threads {
        let (l, e) = t.join().unwrap();
        lat.extend(l);
        errors += e;
    }
    lat.sort();
    println!("http_requests={}", lat.len());
    println!("http_errors={errors}");
    println!("http_rps={:.0}", lat.len() as f64 / seconds);
    println!("http_p50_us={:.1}", us(percentile(&lat, 0.5)));
    println!("http_p99_us={:.1}", us(percentile(&lat, 0.99)));
}

fn idle(url: &str, count: usize) {
    let mut all = Vec::with_capacity(count);
    for i in 0..count {
        let mut ws = connect(url);
        ws.send(Message::Text(
            format!(r#"{{"type":"registerfunction","id":"idle::w{i}"}}"#).into(),
        ))
        .unwrap();
        all.push(ws);
    }
    println!("idle_connected={count}");
    std::io::stdout().flush().unwrap();
    // Stay until killed; answer pings so the engine sees live workers.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: f64| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match a.first().map(String::as_str) {
        Some("calls") => calls(
            &a[1],
            num(2, 8.0) as usize,
            num(3, 32.0) as usize,
            num(4, 5.0),
        ),
        Some("echo-floor") => echo_floor(num(1, 3.0)),
        Some("http-serve") => {
            let ready = Arc::new(AtomicBool::new(false));
            callee(a[1].clone(), "bench::http", ready, Some(a[2].clone()));
        }
        Some("http") => http(&a[1], num(2, 16.0) as usize, num(3, 0.0), num(4, 5.0)),
        Some("idle") => idle(&a[1], num(2, 1000.0) as usize),
        _ => {
            eprintln!("usage: engine_load calls|echo-floor|http-serve|http|idle …");
            std::process::exit(2);
        }
    }
}
