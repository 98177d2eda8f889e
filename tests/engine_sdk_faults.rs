//! Bad input on the worker port, each case against an engine that also serves real SDK
//! workers (Node serves `math::add`, Python calls it): after each, the SDK call must still
//! work. Malformed JSON, unknown types, a 65 MiB message, clients that never finish their
//! upgrade, 5,000 connections opened and dropped, a worker that stops reading its socket.
//! The engine's memory, fds and threads are read from /proc. Workers and the engine are ended
//! by PID in Drop guards.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/engine.rs"]
mod engine;
#[path = "common/raw.rs"]
mod raw;
#[macro_use]
#[path = "common/sdk.rs"]
mod sdk;
#[path = "common/tempdir.rs"]
mod tempdir;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use raw::{Frame, RawWs};
use sdk::{Project, Puppet, Sdks};

const CONFIG: &str = "workers:
  - name: iii-worker-manager
    config: {port: 0, handshake_timeout_ms: 500}
";

/// An engine with Node serving `math::add` and echo::it, and a Python caller.
struct Rig {
    p: Project,
    _node: Puppet,
    py: Puppet,
    round: u64,
}

impl Rig {
    fn new(sdk: &Sdks, tag: &str) -> Rig {
        let p = Project::started(tag, CONFIG);
        let node = sdk.node(&p, "node-math");
        let py = sdk.python(&p, "py-caller");
        node.function("math::add", "add", json!({}));
        node.function("echo::it", "echo", json!({}));
        p.wait_functions(&["math::add", "echo::it"]);
        let mut r = Rig {
            p,
            _node: node,
            py,
            round: 0,
        };
        r.serving();
        r
    }

    /// A real SDK call through the engine works, promptly.
    fn serving(&mut self) {
        self.round += 1;
        let t = Instant::now();
        let r = self
            .py
            .call("math::add", json!({"a": self.round, "b": 1000}));
        assert_eq!(
            r["ok"],
            json!({"sum": self.round + 1000}),
            "the engine stopped serving: {r}\n{}",
            self.p.stderr()
        );
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    fn pid(&self) -> u32 {
        self.p.pid()
    }
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The engine's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS:")
}

fn count_dir(path: String) -> usize {
    std::fs::read_dir(path).unwrap().count()
}

/// The connection still answers after whatever was sent on it.
fn still_answers(ws: &mut RawWs) {
    let r = ws.call("engine::functions::list", json!({}));
    let ids: Vec<Value> = r.expect("the connection answers")["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function_id"].clone())
        .collect();
    assert!(ids.contains(&json!("math::add")), "{ids:?}");
}

/// Frames that are not messages are dropped and logged; the connection stays up.
#[test]
fn malformed_json_is_dropped_and_the_connection_stays() {
    let sdk = sdks!();
    let mut rig = Rig::new(&sdk, "fault-json");
    let mut ws = RawWs::connect(rig.p.port).unwrap();
    for bad in [
        "{not json",
        "[1, 2",
        "\"just a string\"",
        "[]",
        "{}",
        "{\"type\": 5}",
        "{\"type\": \"invokefunction\", \"function_id\": 5, \"invocation_id\": []}",
        "{\"type\": \"registerfunction\"}",
        "{\"type\": \"invocationresult\"}",
        "",
        "\u{0}\u{1}",
    ] {
        ws.send_text(bad).unwrap();
    }
    ws.send_frame(2, &[0xff, 0xfe, 0x00, 0x80]).unwrap();
    ws.send_frame(2, b"{\"type\":").unwrap();
    still_answers(&mut ws);
    // A bad frame in the middle of good ones costs only itself.
    ws.send_text("{{{{").unwrap();
    still_answers(&mut ws);
    let log = rig.p.stderr();
    assert!(log.contains("dropped a frame"), "not logged: {log}");
    rig.serving();
}

/// Well-formed messages of types the engine does not know (or ignores) change nothing.
#[test]
fn unknown_message_types_are_ignored() {
    let sdk = sdks!();
    let mut rig = Rig::new(&sdk, "fault-type");
    let mut ws = RawWs::connect(rig.p.port).unwrap();
    for m in [
        json!({"type": "frobnicate", "x": 1}),
        json!({"type": "observe", "id": "x", "source": {}}),
        json!({"type": "registerservice", "id": "svc"}),
        json!({"type": "unregistertriggertype", "id": "nope"}),
        json!({"type": "invocationresult", "invocation_id": "00000000-0000-4000-8000-00000000dead",
               "result": 1}),
        json!({"type": "pong"}),
        json!({"type": "INVOKEFUNCTION", "function_id": "math::add"}),
    ] {
        ws.send_json(&m).unwrap();
    }
    ws.send_json(&json!({"type": "ping"})).unwrap();
    let pong = ws.next_json(Duration::from_secs(10)).unwrap();
    assert_eq!(pong["type"], "pong", "{pong}");
    still_answers(&mut ws);
    assert!(
        rig.p.stderr().contains("frobnicate"),
        "not logged: {}",
        rig.p.stderr()
    );
    rig.serving();
}

/// A 65 MiB message is refused (close 1009) without being buffered, whether it comes as one
/// frame or in fragments, and the engine's memory stays bounded; a 17 MiB one in 1 MiB
/// fragments (as Python sends big messages) goes through.
#[test]
fn a_65_mib_message_is_refused_with_1009() {
    let sdk = sdks!();
    let mut rig = Rig::new(&sdk, "fault-big");
    let pid = rig.pid();
    let before = rss_kib(pid);
    let big = 65 << 20;
    let mut after_fragmented = vec![];
    for fragmented in [false, true, true, true] {
        let mut ws = RawWs::connect(rig.p.port).unwrap();
        let mut w = ws.stream.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let head = br#"{"type":"invokefunction","function_id":"echo::it","data":""#;
            let chunk = vec![b'x'; 1 << 20];
            let mut sent = 0usize;
            // Errors once the engine has closed: expected.
            let mut go = || -> std::io::Result<()> {
                if fragmented {
                    w.write_all(&RawWs::fragment_header(false, 1, head.len()))?;
                    w.write_all(head)?;
                    while sent < big {
                        let last = sent + chunk.len() >= big;
                        w.write_all(&RawWs::fragment_header(last, 0, chunk.len()))?;
                        w.write_all(&chunk)?;
                        sent += chunk.len();
                    }
                } else {
                    w.write_all(&RawWs::frame_header(1, head.len() + big))?;
                    w.write_all(head)?;
                    while sent < big {
                        w.write_all(&chunk)?;
                        sent += chunk.len();
                    }
                }
                Ok(())
            };
            let _ = go();
        });
        let code = loop {
            match ws.next_frame(Duration::from_secs(60)) {
                Ok(Frame::Close(code, _)) => break Some(code),
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        writer.join().unwrap();
        assert_eq!(
            code,
            Some(1009),
            "fragmented={fragmented}: {}",
            rig.p.stderr()
        );
        let after = rss_kib(pid);
        eprintln!("fragmented={fragmented}: RSS {before} KiB → {after} KiB");
        // One frame is refused at its header; fragments are taken up to the 64 MiB limit.
        let bound = if fragmented { 96 << 10 } else { 8 << 10 };
        assert!(
            after < before + bound,
            "fragmented={fragmented}: engine RSS {before} KiB → {after} KiB"
        );
        if fragmented {
            after_fragmented.push(after);
        }
        rig.serving();
    }

    // Refusing again and again does not add up (the allocator keeps what it once took).
    assert!(
        after_fragmented[2] < after_fragmented[0].max(after_fragmented[1]) + (16 << 10),
        "RSS after each refusal: {after_fragmented:?} KiB"
    );

    // Within the limit: 17 MiB in 1 MiB fragments, echoed back by the Node worker.
    let mut ws = RawWs::connect(rig.p.port).unwrap();
    let blob = "y".repeat(17 << 20);
    let msg =
        json!({"type": "invokefunction", "invocation_id": "00000000-0000-4000-8000-000000000017",
                     "function_id": "echo::it", "data": {"blob": blob}})
        .to_string();
    ws.send_fragmented(1, msg.as_bytes(), 1 << 20).unwrap();
    let r = ws.next_json(Duration::from_secs(60)).unwrap();
    assert_eq!(r["type"], "invocationresult", "{}", r["error"]);
    assert_eq!(r["result"]["blob"].as_str().map(str::len), Some(17 << 20));
    drop(ws);
    rig.serving();
    let settled = rss_kib(pid);
    eprintln!("engine RSS: {before} KiB before, {settled} KiB after");
}

/// Connections that never finish their upgrade are closed after `handshake_timeout_ms`
/// (500 here): one that says nothing, one with half a request line, one with headers but no
/// blank line. A path other than `/` and `/otel` gets 404.
#[test]
fn clients_that_never_upgrade_are_closed_after_the_handshake_timeout() {
    let sdk = sdks!();
    let mut rig = Rig::new(&sdk, "fault-upgrade");
    let port = rig.p.port;
    let openers: [&[u8]; 3] = [
        b"",
        b"GET / HT",
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n",
    ];
    let mut conns: Vec<TcpStream> = openers
        .iter()
        .map(|o| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(o).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            s
        })
        .collect();
    let t = Instant::now();
    for (i, s) in conns.iter_mut().enumerate() {
        let mut buf = [0u8; 256];
        let r = s.read(&mut buf);
        let took = t.elapsed();
        assert!(
            matches!(r, Ok(0))
                || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "opener {i}: {r:?}"
        );
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(5),
            "opener {i}: closed after {took:?}"
        );
    }
    // A bad path is refused before the upgrade.
    let err = RawWs::upgrade(port, "/elsewhere")
        .err()
        .expect("upgrade refused");
    assert!(err.to_string().contains("404"), "{err}");
    rig.serving();
}

/// 5,000 connections opened and dropped (raw TCP, upgraded, upgraded and closed properly,
/// half-sent upgrades): afterwards the engine holds no more fds or threads than before, and
/// lists no leftover workers.
#[test]
fn five_thousand_connections_opened_and_dropped_leak_nothing() {
    let sdk = sdks!();
    let mut rig = Rig::new(&sdk, "fault-churn");
    let (pid, port) = (rig.pid(), rig.p.port);
    let fds = || count_dir(format!("/proc/{pid}/fd"));
    let threads = || count_dir(format!("/proc/{pid}/task"));
    let workers = || {
        rig.p.call("engine::workers::list", json!({})).unwrap()["workers"]
            .as_array()
            .unwrap()
            .len()
    };
    let (fd0, th0, w0) = (fds(), threads(), workers());
    let t = Instant::now();
    for i in 0..5000 {
        match i % 4 {
            0 => drop(TcpStream::connect(("127.0.0.1", port)).unwrap()),
            1 => drop(RawWs::upgrade(port, "/").unwrap()),
            2 => {
                let mut ws = RawWs::connect(port).unwrap();
                ws.send_frame(8, &1000u16.to_be_bytes()).unwrap();
                match ws.next_frame(Duration::from_secs(10)) {
                    Ok(Frame::Close(..)) | Err(_) => {}
                    Ok(f) => panic!("answer to a close: {f:?}"),
                }
            }
            _ => {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let _ = s.write_all(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n");
            }
        }
    }
    eprintln!("5000 connections in {:?}", t.elapsed());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (fd, th, w) = (fds(), threads(), workers());
        if fd <= fd0 && th <= th0 && w <= w0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 5000 connections: fds {fd0} → {fd}, threads {th0} → {th}, workers {w0} → {w}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    rig.serving();
}

/// A worker that stops reading its socket while others keep calling it: calls to it are
/// refused with `worker_overloaded` once its outbound queue passes 8 MiB, the engine's memory
/// stays bounded, other workers' calls go on as before, and when it finally goes away its
/// pending callers get `invocation_stopped`.
#[test]
fn a_worker_that_stops_reading_is_refused_and_others_are_unaffected() {
    let sdk = sdks!();
    let mut rig = Rig::new(&sdk, "fault-stuck");
    let pid = rig.pid();
    let flood = sdk.node(&rig.p, "node-flood");
    let mut stuck = RawWs::connect(rig.p.port).unwrap();
    {
        use std::os::fd::AsRawFd;
        let small: libc::c_int = 64 << 10;
        // SAFETY: a valid socket fd and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                stuck.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &small as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    stuck
        .send_json(&json!({"type": "registerfunction", "id": "stuck::sink"}))
        .unwrap();
    rig.p.wait_functions(&["stuck::sink"]);
    let before = rss_kib(pid);

    // 48 calls of 1 MiB each; the stuck worker reads none of them.
    let tags: Vec<String> = (0..48)
        .map(|_| {
            flood.start_call(
                "stuck::sink",
                json!({"blob_kib": 1024, "timeout_ms": 120_000}),
            )
        })
        .collect();
    let refused = flood.wait("a worker_overloaded refusal", 120, |e| {
        e["ev"] == "result" && e["error"]["code"] == "worker_overloaded"
    });
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not reading"),
        "{refused}"
    );
    // Others are unaffected meanwhile.
    for _ in 0..5 {
        rig.serving();
    }
    let t = Instant::now();
    let echo = rig.py.call("echo::it", json!({"x": "y"}));
    assert_eq!(echo["ok"]["x"], "y", "{echo}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let during = rss_kib(pid);
    assert!(
        during < before + 64 * 1024,
        "engine RSS {before} KiB → {during} KiB with a stuck worker"
    );
    // Every call was refused except those its queue took (8 MiB of them, at least): wait
    // until the answers stop coming.
    let results = || -> Vec<Value> {
        flood
            .events()
            .into_iter()
            .filter(|e| e["ev"] == "result")
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut n, mut since) = (results().len(), Instant::now());
    while since.elapsed() < Duration::from_secs(1) {
        assert!(Instant::now() < deadline, "{:?}", results());
        std::thread::sleep(Duration::from_millis(50));
        let now = results().len();
        if now != n {
            (n, since) = (now, Instant::now());
        }
    }
    for r in results() {
        assert_eq!(r["error"]["code"], "worker_overloaded", "{r}");
    }
    let taken = tags.len() - n;
    eprintln!(
        "{taken} of {} calls queued for the stuck worker; RSS {before} → {during} KiB",
        tags.len()
    );
    assert!(
        taken >= 8,
        "only {taken} call(s) reached the stuck worker's queue"
    );
    // It goes away: its pending callers are told at once.
    drop(stuck);
    let t = Instant::now();
    for tag in &tags {
        let r = flood.result(tag, 60);
        let code = r["error"]["code"].as_str().unwrap_or("");
        assert!(
            code == "worker_overloaded" || code == "invocation_stopped",
            "{tag}: {r}"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    rig.serving();
}
