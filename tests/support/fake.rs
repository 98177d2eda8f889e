//! An in-process fake registry (std `TcpListener` on 127.0.0.1:0, a thread per connection)
//! for what a real server will not do on demand: wrong bytes, truncated bodies, dropped
//! connections, 5xx. It records every request so tests can count network use.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use iii::oci::digest::Digest;

use super::image::Built;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every response carries the right length but one flipped byte.
    WrongBody,
    /// Every response stops at half the blob and closes the connection.
    Truncate,
    /// The first response stops after `at` bytes and closes; later ones are fine.
    DropOnce { at: usize },
    /// The first response stops after `at` bytes and closes; later ones (the resumed
    /// request) carry the rest of the blob with its last byte flipped.
    DropThenWrong { at: usize },
    /// The first request gets HTTP 500; later ones are fine.
    ServerErrorOnce,
    /// Every response trickles out at about 400 KiB/s (8 KiB per 20 ms).
    Slow,
}

#[derive(Default)]
struct State {
    manifests: HashMap<String, (String, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    faults: HashMap<String, Fault>,
    hits: HashMap<String, usize>,
    log: Vec<String>,
}

pub struct FakeRegistry {
    pub host: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeRegistry {
    pub fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &st);
                });
            }
        });
        FakeRegistry {
            host,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Serve `built` as `repo:tag` (and by digest).
    pub fn serve(&self, built: &Built, tag: &str) {
        let mut s = self.state.lock().unwrap();
        for (d, data) in &built.blobs {
            s.blobs.insert(d.to_string(), data.clone());
        }
        let m = (built.media_type.to_string(), built.manifest.clone());
        s.manifests
            .insert(built.manifest_digest.to_string(), m.clone());
        s.manifests.insert(tag.to_string(), m);
    }

    pub fn fault(&self, digest: &Digest, f: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(digest.to_string(), f);
    }

    pub fn clear_fault(&self, digest: &Digest) {
        self.state
            .lock()
            .unwrap()
            .faults
            .remove(&digest.to_string());
    }

    /// Every request so far, as `METHOD PATH`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn blob_requests(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.contains("/blobs/"))
            .count()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    // A TLS ClientHello (a client trying HTTPS first): this server is plain HTTP only.
    let mut first = [0u8; 1];
    if conn.peek(&mut first)? == 1 && first[0] == 0x16 {
        return Ok(());
    }
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut range_from = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                let v = v.trim().trim_start_matches("bytes=");
                range_from = v.trim_end_matches('-').parse().unwrap_or(0);
            }
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut conn = conn;
    let mut s = state.lock().unwrap();
    s.log.push(format!("{method} {path}"));
    if path == "/v2/" || path == "/v2" {
        drop(s);
        return respond(&mut conn, 200, "application/json", b"{}");
    }
    if let Some((_, reference)) = path.split_once("/manifests/") {
        let found = s.manifests.get(reference).cloned();
        drop(s);
        return match found {
            Some((mt, bytes)) => respond(&mut conn, 200, &mt, &bytes),
            None => respond(
                &mut conn,
                404,
                "application/json",
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#,
            ),
        };
    }
    let Some((_, digest)) = path.split_once("/blobs/") else {
        drop(s);
        return respond(&mut conn, 404, "text/plain", b"");
    };
    let Some(blob) = s.blobs.get(digest).cloned() else {
        drop(s);
        return respond(
            &mut conn,
            404,
            "application/json",
            br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
        );
    };
    let fault = s.faults.get(digest).copied();
    let hit = {
        let h = s.hits.entry(digest.to_string()).or_insert(0);
        *h += 1;
        *h
    };
    drop(s);
    let mut body = blob.clone();
    let mut cut = None;
    match fault {
        Some(Fault::WrongBody) => {
            let last = body.len() - 1;
            body[last] ^= 0xff;
        }
        Some(Fault::Truncate) => cut = Some(blob.len() / 2),
        Some(Fault::DropOnce { at }) if hit == 1 => cut = Some(at),
        Some(Fault::DropThenWrong { at }) if hit == 1 => cut = Some(at),
        Some(Fault::DropThenWrong { .. }) => {
            let last = body.len() - 1;
            body[last] ^= 0xff;
        }
        Some(Fault::ServerErrorOnce) if hit == 1 => {
            return respond(&mut conn, 500, "text/plain", b"try again");
        }
        _ => {}
    }
    let from = range_from.min(body.len());
    let status = if from > 0 {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len() - from
    );
    if from > 0 {
        head.push_str(&format!(
            "Content-Range: bytes {from}-{}/{}\r\n",
            body.len() - 1,
            body.len()
        ));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    let end = cut.map_or(body.len(), |c| c.max(from));
    if fault == Some(Fault::Slow) {
        for chunk in body[from..end].chunks(8192) {
            conn.write_all(chunk)?;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    } else {
        conn.write_all(&body[from..end])?;
    }
    conn.flush()?;
    // Closing here with bytes still owed is the "dropped connection".
    let _ = conn.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn respond(conn: &mut TcpStream, status: u16, ct: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: {ct}\r\nDocker-Content-Digest: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        Digest::of(body),
        body.len()
    )?;
    conn.write_all(body)?;
    conn.flush()
}
