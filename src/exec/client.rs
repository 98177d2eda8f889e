//! The exec client: one thread, one `mio` loop over stdin, stdout, stderr, the connection to
//! the worker and a self-pipe per signal.
//!
//! Bytes move only as far as credit allows in each direction (see `protocol::exec`): stdin is
//! read only while the worker has granted room for it, and output credit is returned only once
//! the bytes are written to the local stdout/stderr, so a slow local reader slows the command
//! down instead of making anything buffer without bound.
//!
//! Ending: the command's exit code (128+N for signal N); 124 when `--timeout` expired and the
//! command was killed; 130 after a second Ctrl-C within a second (SIGKILL); 128+N when the
//! client itself gets SIGTERM/SIGHUP/SIGQUIT, and 141 (SIGPIPE) when its stdout or stderr is a
//! pipe nobody reads anymore (the command is killed by closing the stream in both cases).
//! The local terminal and the stdio fd flags are restored on every path.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::terminal::RawMode;
use crate::protocol::exec::{
    code, encode, stdin_header, Decoder, ExecFrame, ExecMessage, ExecRequest, ExecStatus, FrameRef,
    Output, Side, TtySize, INITIAL_CREDIT, MAX_CHUNK, STDIN_HEADER_LEN,
};
use crate::sys::pty::{self, WinSize};
use crate::{err, Error, Result};

/// How the client behaves (the request itself says what runs).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Kill the command after this long and exit 124.
    pub timeout: Option<Duration>,
}

/// Ask the monitor listening on `sock` for an exec stream; `Ok(None)` when nothing listens
/// there (the worker is not running).
pub fn connect(sock: &Path) -> Result<Option<UnixStream>> {
    // The engine's connect also reaches sockets whose path is too long for sun_path.
    let Some(mut conn) = crate::supervisor::control::connect(sock)? else {
        return Ok(None);
    };
    conn.write_all(b"{\"op\":\"exec\"}\n")
        .map_err(|e| err!("writing to {}: {e}", sock.display()))?;
    // The reply is one JSON line. Peek, then take exactly the line, so nothing after it (the
    // first frames) is consumed here.
    let line =
        read_line_exactly(&mut conn).map_err(|e| err!("reading from {}: {e}", sock.display()))?;
    let Some(line) = line else { return Ok(None) };
    #[derive(serde::Deserialize)]
    struct Reply {
        ok: bool,
        #[serde(default)]
        message: String,
    }
    let reply: Reply = serde_json::from_slice(&line)
        .map_err(|e| err!("parsing the reply from {}: {e}", sock.display()))?;
    if !reply.ok {
        return Err(Error::new(reply.message));
    }
    Ok(Some(conn))
}

/// One `\n`-terminated line from a stream socket, without reading past it; `None` at EOF.
fn read_line_exactly(conn: &mut UnixStream) -> std::io::Result<Option<Vec<u8>>> {
    const MAX: usize = 64 << 10;
    let mut line = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = crate::sys::socket::peek(conn.as_fd(), &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        let n = n as usize;
        let take = buf[..n].iter().position(|b| *b == b'\n').map(|i| i + 1);
        let want = take.unwrap_or(n);
        conn.read_exact(&mut buf[..want])?;
        line.extend_from_slice(&buf[..want]);
        if take.is_some() {
            line.pop();
            return Ok(Some(line));
        }
        if line.len() > MAX {
            return Err(std::io::Error::other("the reply line is too long"));
        }
    }
}

/// The size to give a remote terminal: the local one's, else 24×80.
pub fn local_size() -> TtySize {
    for fd in [0, 1] {
        // SAFETY: fds 0 and 1 stay open for the life of the process.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Some(WinSize { rows, cols }) = pty::window_size(fd) {
            return TtySize { rows, cols };
        }
    }
    TtySize { rows: 24, cols: 80 }
}

const CONN: Token = Token(0);
const STDIN: Token = Token(1);
const STDOUT: Token = Token(2);
const STDERR: Token = Token(3);
const SIGNAL_BASE: usize = 10;
const SIGNALS: [i32; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGWINCH,
];

/// How long a second Ctrl-C counts as "again" (SIGKILL and exit 130).
const DOUBLE_CTRL_C: Duration = Duration::from_secs(1);
/// After iii kills the command itself, how long to wait for the worker to confirm.
const KILL_CONFIRM: Duration = Duration::from_secs(2);
const CTRL_C: u8 = 3;
/// Scratch buffer for reads (one credit's worth of frames per read at most).
const READ_BUF: usize = 1 << 20;
/// Grant output credit back in batches of at least this much while output is queued.
const GRANT_BATCH: u64 = 256 << 10;

/// Ctrl-C presses: the first interrupts; a second within [`DOUBLE_CTRL_C`] of it escalates;
/// after an escalation (or a pause) the next press is a first one again.
#[derive(Debug, Default)]
struct CtrlC {
    last: Option<Instant>,
}

impl CtrlC {
    /// Record a press at `now`; `true` when it is the second within the window (kill).
    fn press(&mut self, now: Instant) -> bool {
        let again = self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) <= DOUBLE_CTRL_C);
        self.last = if again { None } else { Some(now) };
        again
    }
}

/// Restores the stdio fds' file status flags (we set O_NONBLOCK on the pollable ones; the
/// descriptions are shared with the parent shell).
struct FlagsGuard {
    saved: Vec<(RawFd, libc::c_int)>,
}

impl FlagsGuard {
    fn set_nonblocking(&mut self, fd: RawFd) -> std::io::Result<()> {
        let fl = crate::sys::fd::status_flags(fd)?;
        self.saved.push((fd, fl));
        crate::sys::fd::set_status_flags(fd, fl | libc::O_NONBLOCK)
    }
}

impl Drop for FlagsGuard {
    fn drop(&mut self) {
        for (fd, fl) in self.saved.iter().rev() {
            let _ = crate::sys::fd::set_status_flags(*fd, *fl);
        }
    }
}

/// Unregisters the signal handlers and closes the self-pipes.
struct SignalPipes {
    ids: Vec<signal_hook::SigId>,
    readers: Vec<UnixStream>,
}

impl Drop for SignalPipes {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// One local output (stdout or stderr): bytes waiting to be written.
struct Sink {
    fd: RawFd,
    /// Registered with mio (a pipe or terminal); otherwise blocking writes (a regular file).
    polled: bool,
    writable: bool,
    buf: Vec<u8>,
    broken: bool,
    /// Bytes written (or dropped when broken) since the last credit grant.
    done: u64,
}

impl Sink {
    /// Write as much of `bytes` as the fd takes now; returns how much it took.
    fn write_some(&mut self, bytes: &[u8]) -> usize {
        let mut off = 0;
        while off < bytes.len() && (self.writable || !self.polled) && !self.broken {
            let rest = &bytes[off..];
            let e = match crate::sys::fd::write(self.fd, rest) {
                Ok(n) => {
                    off += n;
                    continue;
                }
                Err(e) => e,
            };
            match e.kind() {
                ErrorKind::WouldBlock => self.writable = false,
                ErrorKind::Interrupted => {}
                // EPIPE and friends: nobody reads anymore (see `event_loop`).
                _ => self.broken = true,
            }
        }
        if self.broken {
            off = bytes.len();
        }
        self.done += off as u64;
        off
    }

    /// New output: written at once when nothing is queued before it, else queued.
    fn push(&mut self, bytes: &[u8]) {
        let n = if self.buf.is_empty() {
            self.write_some(bytes)
        } else {
            0
        };
        self.buf.extend_from_slice(&bytes[n..]);
    }

    /// Write what is queued, as far as the fd takes it now.
    fn flush(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let n = self.write_some(&buf);
        self.buf = buf;
        self.buf.drain(..n);
    }

    fn take_done(&mut self) -> u64 {
        std::mem::take(&mut self.done)
    }
}

/// Run the exec stream on `conn` (already past the handshake) and return the exit code.
pub fn run(conn: UnixStream, req: ExecRequest, opts: Options) -> Result<i32> {
    let tty = req.tty.is_some();
    // SAFETY: fd 0 stays open for the life of the process.
    let stdin_fd = unsafe { BorrowedFd::borrow_raw(0) };
    let raw = if tty && std::io::IsTerminal::is_terminal(&stdin_fd) {
        Some(RawMode::enable(stdin_fd)?)
    } else {
        None
    };
    let mut flags = FlagsGuard { saved: Vec::new() };
    let poll = Poll::new().map_err(|e| err!("creating the event loop: {e}"))?;
    let mut signals = SignalPipes {
        ids: Vec::new(),
        readers: Vec::new(),
    };
    for (i, sig) in SIGNALS.iter().enumerate() {
        let (r, w) = UnixStream::pair().map_err(|e| err!("creating a signal pipe: {e}"))?;
        r.set_nonblocking(true)
            .map_err(|e| err!("creating a signal pipe: {e}"))?;
        let id = signal_hook::low_level::pipe::register(*sig, w)
            .map_err(|e| err!("installing a handler for signal {sig}: {e}"))?;
        signals.ids.push(id);
        poll.registry()
            .register(
                &mut SourceFd(&r.as_raw_fd()),
                Token(SIGNAL_BASE + i),
                Interest::READABLE,
            )
            .map_err(|e| err!("watching signal {sig}: {e}"))?;
        signals.readers.push(r);
    }
    conn.set_nonblocking(true)
        .map_err(|e| err!("setting up the connection: {e}"))?;
    crate::protocol::exec::widen_send_buffer(std::os::fd::AsFd::as_fd(&conn));
    let mut conn = mio::net::UnixStream::from_std(conn);
    poll.registry()
        .register(&mut conn, CONN, Interest::READABLE | Interest::WRITABLE)
        .map_err(|e| err!("watching the connection: {e}"))?;

    // stdin: polled when it is a pipe, socket or terminal; a regular file (or /dev/null) is
    // always ready and is read directly.
    let stdin_polled = poll
        .registry()
        .register(&mut SourceFd(&0), STDIN, Interest::READABLE)
        .is_ok();
    if stdin_polled {
        flags
            .set_nonblocking(0)
            .map_err(|e| err!("setting up stdin: {e}"))?;
    }
    let mut outs = [1, 2].map(|fd| Sink {
        fd,
        polled: false,
        writable: false,
        buf: Vec::new(),
        broken: false,
        done: 0,
    });
    for (i, token) in [STDOUT, STDERR].into_iter().enumerate() {
        let fd = outs[i].fd;
        if poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::WRITABLE)
            .is_ok()
        {
            outs[i].polled = true;
            flags
                .set_nonblocking(fd)
                .map_err(|e| err!("setting up fd {fd}: {e}"))?;
        }
    }

    let mut client = Client {
        poll,
        conn,
        conn_out: Vec::new(),
        conn_writable: false,
        conn_readable: false,
        conn_eof: false,
        decoder: Decoder::new(Side::Client),
        stdin_polled,
        stdin_ready: !stdin_polled,
        stdin_done: false,
        stdin_credit: INITIAL_CREDIT as u64,
        outs,
        tty,
        keys: raw.is_some(),
        ctrl_c: CtrlC::default(),
        deadline: opts.timeout.map(|t| Instant::now() + t),
        forced: None,
        kill_deadline: None,
        failed: None,
        exited: None,
        closed: false,
        ungranted: 0,
    };
    client.send(ExecFrame::Message(ExecMessage::Open(req)));
    let result = client.event_loop(&mut signals);
    drop(client);
    drop(flags);
    result
}

struct Client {
    poll: Poll,
    conn: mio::net::UnixStream,
    conn_out: Vec<u8>,
    conn_writable: bool,
    conn_readable: bool,
    conn_eof: bool,
    decoder: Decoder,
    stdin_polled: bool,
    stdin_ready: bool,
    stdin_done: bool,
    /// Stdin bytes the worker still accepts.
    stdin_credit: u64,
    outs: [Sink; 2],
    tty: bool,
    /// stdin is the local terminal in raw mode: a 0x03 byte is the user pressing Ctrl-C (in
    /// piped input it is just data).
    keys: bool,
    ctrl_c: CtrlC,
    deadline: Option<Instant>,
    /// iii killed the command and exits with this code (124 timeout, 130 Ctrl-C twice).
    forced: Option<i32>,
    kill_deadline: Option<Instant>,
    failed: Option<(i32, String)>,
    exited: Option<ExecStatus>,
    closed: bool,
    /// Output bytes written locally and not yet granted back to the worker.
    ungranted: u64,
}

impl Client {
    fn send(&mut self, frame: ExecFrame) {
        encode(&mut self.conn_out, &frame);
    }

    fn kill(&mut self, exit_code: i32) {
        if self.forced.is_none() {
            self.forced = Some(exit_code);
            self.kill_deadline = Some(Instant::now() + KILL_CONFIRM);
            self.send(ExecFrame::Message(ExecMessage::Signal {
                signal: libc::SIGKILL,
            }));
        }
    }

    /// A Ctrl-C: a second one within a second kills the command (exit 130).
    fn ctrl_c(&mut self) -> bool {
        let again = self.ctrl_c.press(Instant::now());
        if again {
            self.kill(code::INTERRUPTED);
        }
        again
    }

    fn event_loop(&mut self, signals: &mut SignalPipes) -> Result<i32> {
        let mut events = Events::with_capacity(32);
        loop {
            let now = Instant::now();
            let mut timeout = [self.deadline, self.kill_deadline]
                .into_iter()
                .flatten()
                .map(|d| d.saturating_duration_since(now))
                .min();
            if self.stdin_ready && !self.stdin_polled && self.can_read_stdin() {
                timeout = Some(Duration::ZERO);
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(err!("waiting for events: {e}").with_exit_code(code::III_FAILED));
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    CONN => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.conn_readable = true;
                        }
                        if ev.is_writable() {
                            self.conn_writable = true;
                        }
                    }
                    STDIN => self.stdin_ready = true,
                    STDOUT => self.outs[0].writable = true,
                    STDERR => self.outs[1].writable = true,
                    Token(t) if t >= SIGNAL_BASE && t < SIGNAL_BASE + SIGNALS.len() => {
                        let i = t - SIGNAL_BASE;
                        let mut b = [0u8; 64];
                        let mut n = 0;
                        while let Ok(k) = (&signals.readers[i]).read(&mut b) {
                            if k == 0 {
                                break;
                            }
                            n += k;
                        }
                        for _ in 0..n.min(2) {
                            if let Some(code) = self.on_signal(SIGNALS[i]) {
                                return Ok(code);
                            }
                        }
                    }
                    _ => {}
                }
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                self.deadline = None;
                self.kill(code::TIMED_OUT);
            }
            if self.kill_deadline.is_some_and(|d| now >= d) {
                // The worker did not confirm the kill; closing the stream kills it too.
                return Ok(self.forced.unwrap_or(code::III_FAILED));
            }
            self.read_conn()?;
            self.pump_stdin()?;
            self.outs[0].flush();
            self.outs[1].flush();
            let written = self.outs[0].take_done() + self.outs[1].take_done();
            if self.outs.iter().any(|o| o.broken) && self.forced.is_none() {
                // Like a local program writing to a closed pipe: end as killed by SIGPIPE,
                // and closing the stream ends the command too (`… -- cat big | head`).
                self.send(ExecFrame::Close);
                self.write_conn();
                return Ok(128 + libc::SIGPIPE);
            }
            // Grant credit in batches (fewer frames for bulk output), and at once when the
            // local buffers are empty so the worker never waits on a grant it could have.
            self.ungranted += written;
            let idle = self.outs.iter().all(|o| o.buf.is_empty());
            if self.ungranted > 0 && !self.closed && (idle || self.ungranted >= GRANT_BATCH) {
                self.send(ExecFrame::Window(self.ungranted as u32));
                self.ungranted = 0;
            }
            self.write_conn();
            if let Some(code) = self.finished()? {
                return Ok(code);
            }
        }
    }

    /// Handle one delivered signal; `Some(code)` ends the client now.
    fn on_signal(&mut self, sig: i32) -> Option<i32> {
        match sig {
            libc::SIGINT => {
                if !self.ctrl_c() {
                    self.send(ExecFrame::Message(ExecMessage::Signal { signal: sig }));
                }
                None
            }
            libc::SIGWINCH => {
                if self.tty {
                    let size = local_size();
                    self.send(ExecFrame::Message(ExecMessage::Resize(size)));
                }
                None
            }
            _ => {
                // SIGTERM, SIGHUP, SIGQUIT: iii is asked to go; closing the stream kills the
                // command, and the terminal is restored on the way out.
                self.send(ExecFrame::Close);
                self.write_conn();
                Some(128 + sig)
            }
        }
    }

    fn can_read_stdin(&self) -> bool {
        !self.stdin_done && self.stdin_credit > 0 && self.forced.is_none() && !self.closed
    }

    fn pump_stdin(&mut self) -> Result<()> {
        while self.stdin_ready && self.can_read_stdin() {
            let want = (self.stdin_credit as usize).min(MAX_CHUNK);
            // Read straight into the outgoing buffer, after room for the frame header.
            let start = self.conn_out.len();
            self.conn_out.extend_from_slice(&[0; STDIN_HEADER_LEN]);
            match crate::sys::fd::read_append(0, &mut self.conn_out, want) {
                Ok(0) => {
                    self.conn_out.truncate(start);
                    self.stdin_done = true;
                    if self.stdin_polled {
                        let _ = self.poll.registry().deregister(&mut SourceFd(&0));
                    }
                    self.send(ExecFrame::StdinEof);
                    break;
                }
                Ok(n) => {
                    self.conn_out[start..start + STDIN_HEADER_LEN]
                        .copy_from_slice(&stdin_header(n));
                    self.stdin_credit -= n as u64;
                    if self.keys {
                        let presses = self.conn_out[start + STDIN_HEADER_LEN..]
                            .iter()
                            .filter(|b| **b == CTRL_C)
                            .count();
                        for _ in 0..presses {
                            self.ctrl_c();
                        }
                    }
                    if !self.stdin_polled {
                        // A file: one chunk per loop turn, so output keeps flowing meanwhile.
                        break;
                    }
                }
                Err(e) => {
                    self.conn_out.truncate(start);
                    match e.kind() {
                        ErrorKind::WouldBlock => self.stdin_ready = false,
                        ErrorKind::Interrupted => {}
                        _ => {
                            // Unreadable stdin counts as its end.
                            self.stdin_done = true;
                            self.send(ExecFrame::StdinEof);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn read_conn(&mut self) -> Result<()> {
        while self.conn_readable && !self.conn_eof {
            let fd = std::os::fd::AsFd::as_fd(&self.conn);
            match self.decoder.read_from(fd, READ_BUF) {
                Ok(0) => self.conn_eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.conn_readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.conn_eof = true,
            }
            // Decode as we go; output is written straight from the decoder's buffer when the
            // local side keeps up, and queued (within the credit) when it does not.
            loop {
                let frame = self
                    .decoder
                    .next_ref()
                    .map_err(|e| e.with_exit_code(code::III_FAILED))?;
                match frame {
                    None => break,
                    Some(FrameRef::Output(which, bytes)) => {
                        let i = if which == Output::Stdout { 0 } else { 1 };
                        self.outs[i].push(bytes);
                    }
                    Some(FrameRef::Other(frame)) => self.on_frame(frame),
                }
            }
            if self
                .outs
                .iter()
                .any(|o| o.buf.len() > 4 * INITIAL_CREDIT as usize)
            {
                // Cannot happen with a worker that honours credit; stop reading rather than grow.
                break;
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, frame: ExecFrame) {
        match frame {
            ExecFrame::Output(Output::Stdout, b) => self.outs[0].push(&b),
            ExecFrame::Output(Output::Stderr, b) => self.outs[1].push(&b),
            ExecFrame::Window(n) => self.stdin_credit += n as u64,
            ExecFrame::Message(ExecMessage::Exited(st)) => self.exited = Some(st),
            ExecFrame::Message(ExecMessage::Failed { code, message }) => {
                self.failed = Some((code, message))
            }
            ExecFrame::Close => self.closed = true,
            _ => {}
        }
    }

    fn write_conn(&mut self) {
        while self.conn_writable && !self.conn_out.is_empty() {
            match self.conn.write(&self.conn_out) {
                Ok(n) => {
                    self.conn_out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.conn_writable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    // The worker side is gone; reading will tell how it ended.
                    self.conn_out.clear();
                    self.conn_eof = true;
                }
            }
        }
    }

    /// `Some(code)` once the stream is over and local output is written.
    fn finished(&mut self) -> Result<Option<i32>> {
        let over = self.closed || self.conn_eof;
        if !over {
            return Ok(None);
        }
        let pending = self.outs.iter().any(|o| !o.buf.is_empty() && !o.broken);
        if pending && !self.conn_eof_without_exit() {
            return Ok(None);
        }
        if let Some((code, message)) = self.failed.take() {
            return Err(Error::new(message).with_exit_code(code));
        }
        if let Some(code) = self.forced {
            return Ok(Some(code));
        }
        match self.exited {
            Some(st) => Ok(Some(st.exit_code())),
            None => Err(Error::new(
                "the connection to the worker was lost before the command ended",
            )
            .with_exit_code(code::III_FAILED)),
        }
    }

    fn conn_eof_without_exit(&self) -> bool {
        self.conn_eof && self.exited.is_none() && self.failed.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_c_escalates_only_within_a_second() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = CtrlC::default();
        assert!(!c.press(t0), "first: SIGINT");
        assert!(c.press(t0 + ms(900)), "second within 1 s: kill");
        assert!(!c.press(t0 + ms(1000)), "after a kill, a first again");
        assert!(!c.press(t0 + ms(2500)), "1.5 s later: a single press again");
        assert!(c.press(t0 + ms(3400)));
    }
}
