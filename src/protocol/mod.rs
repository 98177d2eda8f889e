//! The control-channel wire protocol between the host (engine, CLI) and init, used by both ends.
//!
//! One byte stream (a socketpair for `namespace`; virtio-vsock or a console port for `vm`)
//! carries many logical streams. Every frame is a 9-byte header — stream id (u32 LE), kind (u8),
//! payload length (u32 LE) — followed by the payload:
//!
//! - `Message`: a typed control message, JSON ([`Message`]). Stream 0 is the sandbox itself
//!   (start, started, exited, signal the worker); any other stream id names the logical stream
//!   the message concerns (its `Open` request, its failure, a signal for its process).
//! - `Data`: raw bytes for a stream, at most [`MAX_DATA`] per frame.
//! - `Eof`: the sender will send no more data on the stream (half-close).
//! - `Close`: the stream is gone (both directions); the receiver drops its end.
//! - `Window`: the sender consumed this many more bytes (u32 LE) of the stream: credit-based
//!   flow control, so a slow reader never makes the other side buffer without bound.
//!
//! Stream ids: the host opens even ids, init opens odd ids, so either side can open a stream
//! without asking. A new stream starts with `Message(Open(..))` on its id; each direction may
//! then send [`INITIAL_WINDOW`] bytes before it needs `Window` credit back.

use serde::{Deserialize, Serialize};

use crate::{err, Result};

pub mod exec;
pub mod init;
pub mod mux;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 9;
/// Largest payload a frame may carry (control messages carry a whole process spec).
pub const MAX_PAYLOAD: usize = 4 << 20;
/// Largest `Data` payload a sender emits (keeps frames of different streams interleaved).
pub const MAX_DATA: usize = 32 << 10;
/// Bytes each direction of a stream may have in flight before the receiver grants more.
pub const INITIAL_WINDOW: u32 = 256 << 10;
/// The stream that stands for the sandbox itself.
pub const SANDBOX_STREAM: u32 = 0;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Message = 1,
    Data = 2,
    Eof = 3,
    Close = 4,
    Window = 5,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::Message,
            2 => FrameKind::Data,
            3 => FrameKind::Eof,
            4 => FrameKind::Close,
            5 => FrameKind::Window,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub stream: u32,
    pub kind: FrameKind,
    pub payload: Vec<u8>,
}

impl Frame {
    /// Decode a `Message` payload.
    pub fn message(&self) -> Result<Message> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            err!(
                "control channel: bad message on stream {}: {e}",
                self.stream
            )
        })
    }

    /// Decode a `Window` payload.
    pub fn window(&self) -> Result<u32> {
        let b: [u8; 4] = self.payload.as_slice().try_into().map_err(|_| {
            err!(
                "control channel: window frame on stream {} has {} bytes, not 4",
                self.stream,
                self.payload.len()
            )
        })?;
        Ok(u32::from_le_bytes(b))
    }
}

/// Append one frame to `out`.
pub fn encode(out: &mut Vec<u8>, stream: u32, kind: FrameKind, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    out.extend_from_slice(&stream.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Append a `Message` frame to `out`.
pub fn encode_message(out: &mut Vec<u8>, stream: u32, msg: &Message) {
    // Serializing our own enum of plain data cannot fail.
    let json = serde_json::to_vec(msg).expect("control messages serialize");
    encode(out, stream, FrameKind::Message, &json);
}

/// Append a `Window` frame granting `credit` more bytes on `stream`.
pub fn encode_window(out: &mut Vec<u8>, stream: u32, credit: u32) {
    encode(out, stream, FrameKind::Window, &credit.to_le_bytes());
}

/// Incremental decoder: feed it bytes as they arrive, take whole frames out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed, `Err` on a corrupt stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let avail = &self.buf[self.start..];
        if avail.len() < HEADER_LEN {
            self.compact();
            return Ok(None);
        }
        let stream = u32::from_le_bytes(avail[0..4].try_into().expect("4 bytes"));
        let kind = FrameKind::from_u8(avail[4])
            .ok_or_else(|| err!("control channel: unknown frame kind {}", avail[4]))?;
        let len = u32::from_le_bytes(avail[5..9].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD {
            return Err(err!(
                "control channel: frame of {len} bytes on stream {stream} exceeds {MAX_PAYLOAD}"
            ));
        }
        if avail.len() < HEADER_LEN + len {
            self.compact();
            return Ok(None);
        }
        let payload = avail[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.start += HEADER_LEN + len;
        Ok(Some(Frame {
            stream,
            kind,
            payload,
        }))
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// A typed control message (the payload of a `Message` frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Host → init, the first frame on stream 0: set the sandbox up and start the worker.
    Start(Box<InitConfig>),
    /// Host → init (namespace backend), after `Start`: init is now in the sandbox's cgroups
    /// and may start the worker.
    CgroupsReady,
    /// Init → host: the worker process is running (its PID inside the sandbox).
    Started { pid: u32 },
    /// Init → host: setting the sandbox up failed; init exits after sending this.
    Failed { message: String },
    /// Init → host on stream 0: the worker exited; init exits after sending this.
    Exited(ExitStatus),
    /// Host → init: deliver a signal (stream 0: the worker; other streams: that stream's
    /// process, for `exec`).
    Signal { signal: i32 },
    /// Opens the stream this frame is on.
    Open(OpenRequest),
    /// The receiver of an `Open` could not serve it; the stream is closed.
    OpenFailed { message: String },
}

/// What a new stream is for. Tagged by `kind` so new requests (e.g. `exec`) add variants
/// without changing the frame format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpenRequest {
    /// Init → host: a worker connected to the engine port inside the sandbox; connect to the
    /// host engine and carry the bytes both ways.
    EngineLink,
    /// Host → init: `iii worker exec`; the stream carries the frames of [`exec`] (the
    /// request, stdin, output, signals, resizes, the exit status) both ways.
    Exec,
}

/// How a process ended, as init saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// Killed (SIGKILL) by the kernel's OOM killer. A `vm` guest's init tells this from the
    /// guest kernel's log, which the host cannot see; the `namespace` host reads its cgroup.
    OomKilled,
}

/// Everything init needs to set a sandbox up and run the worker (the `Start` message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitConfig {
    /// Worker name: the hostname.
    pub hostname: String,
    pub process: ProcessConfig,
    /// Listen on `127.0.0.1:<port>` inside the sandbox and tunnel each connection to the host
    /// engine (`None`: the sandbox shares the host network and reaches the engine directly).
    pub engine_port: Option<u16>,
    /// Backend-specific setup init performs before starting the worker.
    pub setup: Setup,
    /// The worker's virtual NIC and name resolution (`network: egress`); `None` for a
    /// loopback-only or host-network sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkConfig>,
}

/// What init does for a sandbox with a virtual NIC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Bound over `/etc/resolv.conf` (the image's file in the shared tree stays as it is).
    pub resolv_conf: String,
    /// Bound over `/etc/hosts`.
    pub hosts: String,
}

/// The worker process, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessConfig {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Backend-specific setup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum Setup {
    /// Init runs in fresh namespaces on the host: mount the overlay root, pivot into it, build
    /// /proc, /dev, /sys, /tmp, bring loopback up, harden the worker.
    Namespace {
        /// Host path of the read-only image tree (overlay lower).
        lower: String,
        /// Host paths of the overlay upper and work dirs (the persistent writable layer).
        upper: String,
        work: String,
        /// Host path where the merged root is mounted (inside init's mount namespace only).
        merged: String,
        /// Bring `lo` up (own network namespace).
        loopback: bool,
    },
    /// Init is PID 1 of a `vm` guest and has already built the root from the guest's disks
    /// (`init::guest`): set the hostname and bring loopback up.
    Vm,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_byte_by_byte_feeding() {
        let mut wire = Vec::new();
        encode_message(&mut wire, 0, &Message::Started { pid: 7 });
        encode(&mut wire, 3, FrameKind::Data, b"hello\0\xff");
        encode(&mut wire, 3, FrameKind::Eof, &[]);
        encode_window(&mut wire, 4, 12345);
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &wire {
            d.feed(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].message().unwrap(), Message::Started { pid: 7 });
        assert_eq!(got[1].stream, 3);
        assert_eq!(got[1].kind, FrameKind::Data);
        assert_eq!(got[1].payload, b"hello\0\xff");
        assert_eq!(got[2].kind, FrameKind::Eof);
        assert!(got[2].payload.is_empty());
        assert_eq!(got[3].window().unwrap(), 12345);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn header_layout_is_stream_kind_length_little_endian() {
        let mut wire = Vec::new();
        encode(&mut wire, 0x01020304, FrameKind::Close, b"xy");
        assert_eq!(wire, [4, 3, 2, 1, 4, 2, 0, 0, 0, b'x', b'y']);
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let mut d = Decoder::new();
        d.feed(&[0, 0, 0, 0, 99, 0, 0, 0, 0]);
        assert!(d.next_frame().unwrap_err().to_string().contains("kind 99"));
        let mut d = Decoder::new();
        d.feed(&[0, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().unwrap_err().to_string().contains("exceeds"));
        let f = Frame {
            stream: 1,
            kind: FrameKind::Window,
            payload: vec![1, 2],
        };
        assert!(f.window().is_err());
    }

    #[test]
    fn start_message_carries_the_whole_config_and_open_is_extensible() {
        let cfg = InitConfig {
            hostname: "w1".into(),
            process: ProcessConfig {
                args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
                env: vec![("A".into(), "b=c".into())],
                cwd: "/workspace".into(),
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10],
            },
            engine_port: Some(49134),
            setup: Setup::Namespace {
                lower: "/s/img".into(),
                upper: "/w/upper".into(),
                work: "/w/work".into(),
                merged: "/w/merged".into(),
                loopback: true,
            },
            network: None,
        };
        let mut wire = Vec::new();
        encode_message(&mut wire, 0, &Message::Start(Box::new(cfg.clone())));
        let mut d = Decoder::new();
        d.feed(&wire);
        assert_eq!(
            d.next_frame().unwrap().unwrap().message().unwrap(),
            Message::Start(Box::new(cfg))
        );
        let open: Message =
            serde_json::from_str(r#"{"type":"open","kind":"engine_link"}"#).unwrap();
        assert_eq!(open, Message::Open(OpenRequest::EngineLink));
        let unknown = serde_json::from_str::<Message>(r#"{"type":"open","kind":"teleport"}"#);
        assert!(unknown.is_err());
    }
}
