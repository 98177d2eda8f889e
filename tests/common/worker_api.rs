//! A fake iii worker registry API (`POST /resolve`, `GET /download/<name>`) on 127.0.0.1 that
//! serves canned answers per worker name and records every request; an HTTPS file server
//! (python3's http.server behind a self-signed certificate for 127.0.0.1) for binary
//! artifacts; and the pieces of a binary worker: a small C program compiled at test time and
//! `.tar.gz` archives with raw (possibly hostile) entry names.
//!
//! Include it with skip.rs, tempdir.rs and `mod support;` (for its server certificate):
//! `#[path = "common/worker_api.rs"] mod worker_api;`

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::tempdir::TempDir;

/// The target triple the fixtures name artifacts for (this host's).
pub fn host_target() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    }
}

/// Whether the tool `name` is on PATH.
pub fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}

/// `sha256:`-less lower-case hex of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    iii::oci::digest::Digest::of(data).hex().to_string()
}

/// A canned HTTP answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json".into(),
            body: v.to_string().into_bytes(),
        }
    }
    pub fn raw(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type: content_type.into(),
            body,
        }
    }
}

/// One request the API server received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

type Fixtures = Arc<Mutex<HashMap<String, Reply>>>;

/// The fake registry API. Answers `POST /resolve` with the fixture for the body's `worker`
/// (404 `{"error":"Worker 'x' not found"}` when there is none) and `GET /download/<name>`
/// with the same fixture (so a fault shows whichever endpoint iii falls back to).
pub struct Api {
    pub port: u16,
    fixtures: Fixtures,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Api {
    pub fn start() -> Api {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fixtures: Fixtures = Arc::default();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (f, r, s) = (fixtures.clone(), requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (f, r) = (f.clone(), r.clone());
                // One thread per connection: a client that stops reading (an oversized
                // answer) holds up nobody else.
                std::thread::spawn(move || {
                    let _ = serve(conn, &f, &r);
                });
            }
        });
        Api {
            port,
            fixtures,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` — what `III_API_URL` gets.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, worker: &str, reply: Reply) {
        self.fixtures
            .lock()
            .unwrap()
            .insert(worker.to_string(), reply);
    }

    /// A 200 JSON graph for `worker`.
    pub fn set_graph(&self, worker: &str, graph: serde_json::Value) {
        self.set(worker, Reply::json(200, &graph));
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The bodies of every `POST /resolve`, parsed.
    pub fn resolve_bodies(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.starts_with("/resolve"))
            .map(Request::json)
            .collect()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, fixtures: &Fixtures, log: &Mutex<Vec<Request>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    // Read the head (up to the blank line), then parse it with httparse.
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if head.len() > 64 << 10 {
            return Ok(());
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
        return Ok(());
    }
    let method = req.method.unwrap_or("").to_string();
    let path = req.path.unwrap_or("").to_string();
    let len: usize = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len.min(1 << 20)];
    reader.read_exact(&mut body)?;
    log.lock().unwrap().push(Request {
        method: method.clone(),
        path: path.clone(),
        body: body.clone(),
    });
    let worker = if method == "POST" && path.starts_with("/resolve") {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["worker"].as_str().map(str::to_string))
    } else {
        path.strip_prefix("/download/")
            .map(|r| r.split(['?', '/']).next().unwrap_or("").to_string())
    };
    let reply = match worker {
        Some(w) => fixtures
            .lock()
            .unwrap()
            .get(&w)
            .cloned()
            .unwrap_or_else(|| {
                Reply::json(
                    404,
                    &serde_json::json!({"error": format!("Worker '{w}' not found")}),
                )
            }),
        None => Reply::json(404, &serde_json::json!({"error": "no such endpoint"})),
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    )?;
    conn.write_all(&reply.body)?;
    conn.flush()
}

/// An HTTPS static file server (python3 http.server + ssl) for the files in its directory,
/// with a fresh self-signed server certificate for IP 127.0.0.1. Killed by PID on drop.
pub struct FileServer {
    child: Child,
    pub port: u16,
    pub cert: PathBuf,
    pub root: PathBuf,
    _dir: TempDir,
}

const PY_SERVER: &str = r#"
import http.server, ssl, sys, functools
root, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass
handler = functools.partial(Quiet, directory=root)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

impl FileServer {
    /// `None` (after saying why) without python3 or openssl.
    pub fn start() -> Option<FileServer> {
        for tool in ["python3", "openssl"] {
            if !have_tool(tool) {
                skip!("`{tool}` is not installed (the HTTPS artifact server needs it)");
                return None;
            }
        }
        let dir = TempDir::new("files");
        let root = dir.path().join("www");
        std::fs::create_dir_all(&root).unwrap();
        let (key, cert) = (dir.path().join("tls.key"), dir.path().join("tls.crt"));
        crate::support::registry::server_certificate(&key, &cert, "subjectAltName=IP:127.0.0.1");
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(PY_SERVER)
            .arg(&root)
            .arg(&cert)
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting python3");
        let stdout = child.stdout.take().unwrap();
        let mut server = FileServer {
            child,
            port: 0,
            cert,
            root,
            _dir: dir,
        };
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        server.port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the HTTPS file server did not start: {line:?}"));
        Some(server)
    }

    /// Put `data` at `/name`; its `https://127.0.0.1:PORT/name` URL.
    pub fn put(&self, name: &str, data: &[u8]) -> String {
        std::fs::write(self.root.join(name), data).unwrap();
        self.url(name)
    }

    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        // Child::kill signals exactly this PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary worker: prints `argv:` and its arguments on one line, then sleeps until killed;
/// with `--version` it prints `pdfkit-test 1.2.0` and exits 0.
const WORKER_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("pdfkit-test 1.2.0\n");
        return 0;
    }
    printf("argv:");
    for (int i = 0; i < argc; i++) printf(" %s", argv[i]);
    printf("\n");
    fflush(stdout);
    for (;;) pause();
}
"#;

/// Compile the worker program (dynamically linked) into `dir`; `None` (after saying why)
/// without a C compiler.
pub fn worker_binary(dir: &Path) -> Option<Vec<u8>> {
    if !have_tool("cc") {
        skip!("no C compiler (`cc`) to build the binary worker");
        return None;
    }
    let src = dir.join("worker.c");
    let exe = dir.join("worker");
    std::fs::write(&src, WORKER_C).unwrap();
    let out = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("running cc");
    if !out.status.success() {
        skip!(
            "cc could not build the worker: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(std::fs::read(&exe).unwrap())
}

/// A `.tar.gz` of regular files whose names are written as raw header bytes (so `..`
/// survives, as hostile archives carry it).
pub fn tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        let name = path.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A binary graph node.
pub fn binary_node(
    name: &str,
    version: &str,
    url: &str,
    sha256: &str,
    deps: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "name": name, "type": "binary", "version": version,
        "binaries": {host_target(): {"url": url, "sha256": sha256}},
        "dependencies": deps,
    })
}

/// An image graph node.
pub fn image_node(name: &str, version: &str, image: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name, "type": "image", "version": version, "image": image,
        "dependencies": {},
    })
}

/// A `/resolve` answer: root `nodes[0]`, the nodes, and `edges` as (from, to, range).
pub fn graph(nodes: &[serde_json::Value], edges: &[(&str, &str, &str)]) -> serde_json::Value {
    serde_json::json!({
        "root": {"name": nodes[0]["name"], "version": nodes[0]["version"]},
        "target": host_target(),
        "graph": nodes,
        "edges": edges.iter().map(|(f, t, r)| serde_json::json!({"from": f, "to": t, "range": r}))
            .collect::<Vec<_>>(),
    })
}
