//! `RawWs`: a worker-protocol client written from RFC 6455 by hand (upgrade, masked frames,
//! server frames read as they come), so tests can send what no SDK would — broken JSON,
//! unknown types, oversized frames — and check exactly what the engine answers.
//!
//! Include it in a test crate: `#[path = "common/raw.rs"] mod raw;`

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A frame from the engine.
#[derive(Debug)]
#[allow(dead_code)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The close code (0 when the frame had none) and reason.
    Close(u16, String),
}

pub struct RawWs {
    pub stream: TcpStream,
    /// `worker_id` of the engine's `workerregistered`.
    pub worker_id: String,
    buf: Vec<u8>,
    next_id: u64,
}

#[allow(dead_code)]
impl RawWs {
    /// Upgrade a TCP connection to `127.0.0.1:port` on `/` and read `workerregistered`.
    pub fn connect(port: u16) -> io::Result<RawWs> {
        let mut ws = RawWs::upgrade(port, "/")?;
        let first = ws.next_json(Duration::from_secs(10))?;
        assert_eq!(first["type"], "workerregistered", "first frame: {first}");
        ws.worker_id = first["worker_id"].as_str().unwrap_or_default().to_string();
        Ok(ws)
    }

    /// Only the upgrade (no frame read): the 101 must come back.
    pub fn upgrade(port: u16, path: &str) -> io::Result<RawWs> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the upgrade",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(io::Error::other(format!("upgrade refused: {head}")));
        }
        Ok(RawWs {
            stream,
            worker_id: String::new(),
            buf: buf[end..].to_vec(),
            next_id: 0,
        })
    }

    /// One frame from the client: FIN set, masked with a zero key (so the payload goes as is).
    pub fn frame_header(opcode: u8, len: usize) -> Vec<u8> {
        RawWs::fragment_header(true, opcode, len)
    }

    /// A frame header with FIN as `fin` (opcode 0 continues a fragmented message).
    pub fn fragment_header(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len < 65_536 {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&(len as u64).to_be_bytes());
        }
        h.extend_from_slice(&[0, 0, 0, 0]);
        h
    }

    pub fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut f = RawWs::frame_header(opcode, payload.len());
        f.extend_from_slice(payload);
        self.stream.write_all(&f)
    }

    /// `payload` as one message of `opcode` in fragments of `chunk` bytes.
    pub fn send_fragmented(&mut self, opcode: u8, payload: &[u8], chunk: usize) -> io::Result<()> {
        let parts: Vec<&[u8]> = payload.chunks(chunk).collect();
        for (i, part) in parts.iter().enumerate() {
            let op = if i == 0 { opcode } else { 0 };
            let mut f = RawWs::fragment_header(i + 1 == parts.len(), op, part.len());
            f.extend_from_slice(part);
            self.stream.write_all(&f)?;
        }
        Ok(())
    }

    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send_frame(1, text.as_bytes())
    }

    pub fn send_json(&mut self, v: &Value) -> io::Result<()> {
        self.send_text(&v.to_string())
    }

    /// The next frame within `timeout` (pings are answered and skipped).
    pub fn next_frame(&mut self, timeout: Duration) -> io::Result<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                if let Frame::Ping(p) = &frame {
                    let p = p.clone();
                    self.send_frame(10, &p)?;
                    continue;
                }
                return Ok(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no frame in time"));
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 64 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed",
                    ))
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no frame in time"))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next text frame as JSON (other frames are skipped; a Close is an error).
    pub fn next_json(&mut self, timeout: Duration) -> io::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left)? {
                Frame::Text(t) => {
                    return serde_json::from_str(&t).map_err(|e| io::Error::other(e.to_string()))
                }
                Frame::Close(code, why) => {
                    return Err(io::Error::other(format!(
                        "closed by the engine: {code} {why}"
                    )))
                }
                _ => continue,
            }
        }
    }

    /// Call `function_id` and wait for its `invocationresult` (other frames are skipped):
    /// `Ok(result)` or `Err((code, message))`.
    pub fn call(&mut self, function_id: &str, data: Value) -> Result<Value, (String, String)> {
        self.next_id += 1;
        let id = format!("00000000-0000-4000-8000-{:012x}", self.next_id);
        self.send_json(&json!({"type": "invokefunction", "invocation_id": id,
                                "function_id": function_id, "data": data}))
            .map_err(|e| ("io".to_string(), e.to_string()))?;
        loop {
            let m = self
                .next_json(Duration::from_secs(30))
                .map_err(|e| ("io".to_string(), e.to_string()))?;
            if m["type"] == "invocationresult" && m["invocation_id"] == id.as_str() {
                if !m["error"].is_null() {
                    let code = m["error"]["code"].as_str().unwrap_or("").to_string();
                    let msg = m["error"]["message"].as_str().unwrap_or("").to_string();
                    return Err((code, msg));
                }
                return Ok(m["result"].clone());
            }
        }
    }
}

/// One server frame (unmasked) from the front of `b`, with the bytes it took.
fn parse(b: &[u8]) -> Option<(Frame, usize)> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (len, mut at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    let mut key = [0u8; 4];
    if masked {
        if b.len() < at + 4 {
            return None;
        }
        key.copy_from_slice(&b[at..at + 4]);
        at += 4;
    }
    if b.len() < at + len {
        return None;
    }
    let payload: Vec<u8> = b[at..at + len]
        .iter()
        .enumerate()
        .map(|(i, x)| x ^ key[i % 4])
        .collect();
    let frame = match opcode {
        1 => Frame::Text(String::from_utf8_lossy(&payload).to_string()),
        2 => Frame::Binary(payload),
        8 => {
            let code = if payload.len() >= 2 {
                u16::from_be_bytes([payload[0], payload[1]])
            } else {
                0
            };
            let why = String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).to_string();
            Frame::Close(code, why)
        }
        9 => Frame::Ping(payload),
        10 => Frame::Pong(payload),
        // Continuation frames: the engine sends whole messages; surface as binary.
        _ => Frame::Binary(payload),
    };
    Some((frame, at + len))
}
