//! What an exec stream carries: the request that opens it, and the frames that
//! follow in each direction.
//!
//! Host → init: `Open(ExecRequest)`, then stdin bytes, stdin EOF, signals, window resizes and
//! output credit. Init → host: `Started` (or `Failed` with 125/126/127), the command's stdout
//! and stderr bytes — each tagged with which one it is, so they stay separate and byte-exact —
//! stdin credit, and finally `Exited` and `Close`.
//!
//! Flow control is credit-based in both directions: a sender may have at most the credit the
//! receiver granted in flight ([`INITIAL_CREDIT`] to begin with, more with each `Window`), and
//! the receiver grants credit only for bytes it has passed on (written to the command's stdin,
//! or to the local stdout/stderr). Neither end buffers more than one window per stream.

use serde::{Deserialize, Serialize};

/// Bytes each direction of an exec stream may have in flight before credit comes back.
pub const INITIAL_CREDIT: u32 = 1 << 20;
/// Largest chunk of output or input carried in one frame.
pub const MAX_CHUNK: usize = 256 << 10;

/// Run a command inside the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// argv; `args[0]` is looked up in `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// Set on top of the worker's environment (later entries win).
    pub env: Vec<(String, String)>,
    /// Working directory inside the worker.
    pub cwd: String,
    /// Allocate a pseudo-terminal of this size (TTY mode); `None`: pipes.
    pub tty: Option<TtySize>,
}

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// Which output stream a chunk of command output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Output {
    Stdout = 1,
    Stderr = 2,
}

impl Output {
    pub fn from_u8(b: u8) -> Option<Output> {
        match b {
            1 => Some(Output::Stdout),
            2 => Some(Output::Stderr),
            _ => None,
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecStatus {
    Code(i32),
    Signal(i32),
}

impl ExecStatus {
    /// The exit code a shell (and `docker exec`) reports: the code, or 128+N for signal N.
    pub fn exit_code(self) -> i32 {
        match self {
            ExecStatus::Code(c) => c,
            ExecStatus::Signal(n) => 128 + n,
        }
    }

    /// Decode a `waitpid` status.
    pub fn from_wait_status(status: i32) -> ExecStatus {
        if libc::WIFSIGNALED(status) {
            ExecStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExecStatus::Code(libc::WEXITSTATUS(status))
        }
    }
}

impl From<crate::sys::pid::Status> for ExecStatus {
    fn from(s: crate::sys::pid::Status) -> Self {
        match s {
            crate::sys::pid::Status::Exited(c) => ExecStatus::Code(c),
            crate::sys::pid::Status::Signaled(n) => ExecStatus::Signal(n),
        }
    }
}

/// Exit codes of `iii worker exec` itself, the same as `docker exec`'s.
pub mod code {
    /// iii failed: worker unknown or not running, connection lost.
    pub const III_FAILED: i32 = 125;
    /// The command exists but cannot be executed (permissions, not an executable, bad cwd).
    pub const NOT_EXECUTABLE: i32 = 126;
    /// The command was not found.
    pub const NOT_FOUND: i32 = 127;
    /// `--timeout` expired (as coreutils `timeout`).
    pub const TIMED_OUT: i32 = 124;
    /// Ctrl-C twice: killed on the user's request (128 + SIGINT).
    pub const INTERRUPTED: i32 = 130;
}

/// The exit code for a failure to start the command with `errno` (from `execve` or setup).
pub fn spawn_failure_code(errno: i32) -> i32 {
    match errno {
        libc::ENOENT | libc::ENOTDIR => code::NOT_FOUND,
        _ => code::NOT_EXECUTABLE,
    }
}

/// One message on an exec stream (the typed frames; stdin/stdout/stderr bytes travel as data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecMessage {
    /// Host → init: open the stream by running this command.
    Open(ExecRequest),
    /// Init → host: the command runs, with this PID inside the worker.
    Started { pid: u32 },
    /// Init → host: the command could not be started; `code` is 125, 126 or 127.
    Failed { code: i32, message: String },
    /// Host → init: deliver a signal to the command's process group.
    Signal { signal: i32 },
    /// Host → init: the local terminal was resized.
    Resize(TtySize),
    /// Init → host: the command ended (its output has all been sent before this).
    Exited(ExecStatus),
}

/// Give a socket carrying an exec stream a send buffer that holds a whole credit window, so
/// bulk data moves in few large writes instead of many wake-ups (best effort: the kernel caps
/// it at `net.core.wmem_max`).
pub fn widen_send_buffer(fd: std::os::fd::BorrowedFd<'_>) {
    crate::sys::socket::set_send_buffer(fd, 2 * INITIAL_CREDIT as i32);
}

/// One frame of an exec stream, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecFrame {
    Message(ExecMessage),
    /// Host → init: stdin bytes.
    Stdin(Vec<u8>),
    /// Init → host: output bytes and which stream they belong to.
    Output(Output, Vec<u8>),
    /// Host → init: stdin is at its end.
    StdinEof,
    /// The receiver passed on this many more bytes: the sender may send that many more.
    Window(u32),
    /// The stream is over (either side; the command is killed if it still runs).
    Close,
}

/// Which side of a connection is decoding (stdin and output bytes share the data kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The side that runs commands (init): data frames are stdin.
    Server,
    /// The side that asked (the CLI): data frames are output, tagged by their first byte.
    Client,
}

// Frame layout, shared with the control channel: stream id (u32 LE), kind (u8), payload length
// (u32 LE), payload. One exec connection carries one stream.
const HEADER_LEN: usize = 9;
const KIND_MESSAGE: u8 = 1;
const KIND_DATA: u8 = 2;
const KIND_EOF: u8 = 3;
const KIND_CLOSE: u8 = 4;
const KIND_WINDOW: u8 = 5;
const MAX_PAYLOAD: usize = 4 << 20;
const STREAM: u32 = 2;

fn header(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.extend_from_slice(&STREAM.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

/// Encode the end of a stream whose command could not run: `Failed` (`code`, `message`), then
/// `Close`.
pub fn encode_failure(out: &mut Vec<u8>, code: i32, message: String) {
    encode(
        out,
        &ExecFrame::Message(ExecMessage::Failed { code, message }),
    );
    encode(out, &ExecFrame::Close);
}

/// Append the encoding of `frame` to `out`.
pub fn encode(out: &mut Vec<u8>, frame: &ExecFrame) {
    match frame {
        ExecFrame::Message(m) => {
            // Plain data in our own enum: serializing cannot fail.
            let json = serde_json::to_vec(m).expect("exec messages serialize");
            header(out, KIND_MESSAGE, json.len());
            out.extend_from_slice(&json);
        }
        ExecFrame::Stdin(b) => {
            header(out, KIND_DATA, b.len());
            out.extend_from_slice(b);
        }
        ExecFrame::Output(which, b) => {
            header(out, KIND_DATA, b.len() + 1);
            out.push(*which as u8);
            out.extend_from_slice(b);
        }
        ExecFrame::StdinEof => header(out, KIND_EOF, 0),
        ExecFrame::Window(n) => {
            header(out, KIND_WINDOW, 4);
            out.extend_from_slice(&n.to_le_bytes());
        }
        ExecFrame::Close => header(out, KIND_CLOSE, 0),
    }
}

/// Bytes before the payload of an output frame: the frame header and the stream tag.
pub const OUTPUT_HEADER_LEN: usize = HEADER_LEN + 1;

/// The header of an output frame carrying `len` bytes of `which`, for senders that read the
/// payload straight into their frame buffer.
pub fn output_header(which: Output, len: usize) -> [u8; OUTPUT_HEADER_LEN] {
    let mut h = [0u8; OUTPUT_HEADER_LEN];
    h[..4].copy_from_slice(&STREAM.to_le_bytes());
    h[4] = KIND_DATA;
    h[5..9].copy_from_slice(&((len + 1) as u32).to_le_bytes());
    h[9] = which as u8;
    h
}

/// Bytes before the payload of a stdin frame.
pub const STDIN_HEADER_LEN: usize = HEADER_LEN;

/// The header of a stdin frame carrying `len` bytes, for senders that read the payload
/// straight into their output buffer.
pub fn stdin_header(len: usize) -> [u8; STDIN_HEADER_LEN] {
    let mut h = [0u8; STDIN_HEADER_LEN];
    h[..4].copy_from_slice(&STREAM.to_le_bytes());
    h[4] = KIND_DATA;
    h[5..9].copy_from_slice(&(len as u32).to_le_bytes());
    h
}

/// A decoded frame that may borrow its payload from the decoder (output, the bulk of the
/// traffic, is not copied out).
#[derive(Debug, PartialEq, Eq)]
pub enum FrameRef<'a> {
    Output(Output, &'a [u8]),
    Other(ExecFrame),
}

/// Incremental decoder: feed bytes as they arrive, take whole frames out.
#[derive(Debug)]
pub struct Decoder {
    side: Side,
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    pub fn new(side: Side) -> Decoder {
        Decoder {
            side,
            buf: Vec::new(),
            start: 0,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Read once from `fd` straight into the decoder's buffer (at most `max` bytes), without
    /// zeroing the room first (bulk output passes through here).
    pub fn read_from(
        &mut self,
        fd: std::os::fd::BorrowedFd<'_>,
        max: usize,
    ) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        crate::sys::fd::read_append(fd.as_raw_fd(), &mut self.buf, max)
    }

    /// The next whole frame, borrowing output payloads; `Ok(None)` when more bytes are needed.
    pub fn next_ref(&mut self) -> crate::Result<Option<FrameRef<'_>>> {
        let avail = &self.buf[self.start..];
        if self.side == Side::Client && avail.len() >= HEADER_LEN && avail[4] == KIND_DATA {
            let len = u32::from_le_bytes(avail[5..9].try_into().expect("4 bytes")) as usize;
            if len > MAX_PAYLOAD {
                return Err(crate::err!(
                    "exec stream: frame of {len} bytes is too large"
                ));
            }
            if avail.len() >= HEADER_LEN + len {
                let which = avail
                    .get(HEADER_LEN)
                    .and_then(|b| Output::from_u8(*b))
                    .ok_or_else(|| crate::err!("exec stream: output frame without a stream tag"))?;
                let from = self.start + HEADER_LEN + 1;
                self.start += HEADER_LEN + len;
                return Ok(Some(FrameRef::Output(which, &self.buf[from..self.start])));
            }
        }
        Ok(self.next_frame()?.map(FrameRef::Other))
    }

    /// The next whole frame; `Ok(None)` when more bytes are needed; `Err` on a corrupt stream.
    pub fn next_frame(&mut self) -> crate::Result<Option<ExecFrame>> {
        let avail = &self.buf[self.start..];
        if avail.len() < HEADER_LEN {
            self.compact();
            return Ok(None);
        }
        let kind = avail[4];
        let len = u32::from_le_bytes(avail[5..9].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD {
            return Err(crate::err!(
                "exec stream: frame of {len} bytes is too large"
            ));
        }
        if avail.len() < HEADER_LEN + len {
            self.compact();
            return Ok(None);
        }
        let p = &avail[HEADER_LEN..HEADER_LEN + len];
        let frame = match (kind, self.side) {
            (KIND_MESSAGE, _) => ExecFrame::Message(
                serde_json::from_slice(p)
                    .map_err(|e| crate::err!("exec stream: bad message: {e}"))?,
            ),
            (KIND_DATA, Side::Server) => ExecFrame::Stdin(p.to_vec()),
            (KIND_DATA, Side::Client) => {
                let which = p
                    .first()
                    .and_then(|b| Output::from_u8(*b))
                    .ok_or_else(|| crate::err!("exec stream: output frame without a stream tag"))?;
                ExecFrame::Output(which, p[1..].to_vec())
            }
            (KIND_EOF, _) => ExecFrame::StdinEof,
            (KIND_CLOSE, _) => ExecFrame::Close,
            (KIND_WINDOW, _) => ExecFrame::Window(u32::from_le_bytes(
                p.try_into()
                    .map_err(|_| crate::err!("exec stream: window frame of {len} bytes"))?,
            )),
            (k, _) => return Err(crate::err!("exec stream: unknown frame kind {k}")),
        };
        self.start += HEADER_LEN + len;
        Ok(Some(frame))
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_like_a_shell() {
        assert_eq!(ExecStatus::Code(0).exit_code(), 0);
        assert_eq!(ExecStatus::Code(42).exit_code(), 42);
        assert_eq!(ExecStatus::Signal(libc::SIGKILL).exit_code(), 137);
        assert_eq!(ExecStatus::Signal(libc::SIGINT).exit_code(), 130);
        assert_eq!(ExecStatus::from_wait_status(42 << 8), ExecStatus::Code(42));
        assert_eq!(ExecStatus::from_wait_status(9), ExecStatus::Signal(9));
        assert_eq!(spawn_failure_code(libc::ENOENT), 127);
        assert_eq!(spawn_failure_code(libc::ENOTDIR), 127);
        assert_eq!(spawn_failure_code(libc::EACCES), 126);
        assert_eq!(spawn_failure_code(libc::ENOEXEC), 126);
        assert_eq!(spawn_failure_code(libc::EISDIR), 126);
    }

    #[test]
    fn messages_are_tagged_json() {
        let m = ExecMessage::Open(ExecRequest {
            args: vec!["sh".into()],
            env: vec![("A".into(), "1".into())],
            cwd: "/workspace".into(),
            tty: Some(TtySize { rows: 24, cols: 80 }),
        });
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.starts_with(r#"{"type":"open","#), "{json}");
        assert_eq!(serde_json::from_str::<ExecMessage>(&json).unwrap(), m);
        let e = ExecMessage::Exited(ExecStatus::Signal(9));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"exited","signal":9}"#
        );
    }

    #[test]
    fn frames_round_trip_byte_by_byte() {
        let to_server = vec![
            ExecFrame::Message(ExecMessage::Signal { signal: 2 }),
            ExecFrame::Stdin(b"a\0\xff".to_vec()),
            ExecFrame::StdinEof,
            ExecFrame::Window(77),
            ExecFrame::Close,
        ];
        let to_client = vec![
            ExecFrame::Output(Output::Stdout, b"out".to_vec()),
            ExecFrame::Output(Output::Stderr, Vec::new()),
            ExecFrame::Message(ExecMessage::Exited(ExecStatus::Code(3))),
        ];
        for (side, frames) in [(Side::Server, to_server), (Side::Client, to_client)] {
            let mut wire = Vec::new();
            for f in &frames {
                encode(&mut wire, f);
            }
            let mut d = Decoder::new(side);
            let mut got = Vec::new();
            for b in &wire {
                d.feed(std::slice::from_ref(b));
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames);
        }
        let mut d = Decoder::new(Side::Client);
        d.feed(&[2, 0, 0, 0, 2, 1, 0, 0, 0, 9]);
        assert!(d.next_frame().is_err());
    }
}
