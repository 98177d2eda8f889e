//! The pump of one exec: a `mio` loop over the command's stdin, stdout and stderr (or its
//! pty master) and a waker for frames from the host, moving bytes both ways within the
//! credit each side grants, until the command has exited and its output is sent.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::start::Spawned;
use super::{Event, Sink};
use crate::protocol::exec::{
    encode, output_header, ExecFrame, ExecMessage, ExecStatus, Output, INITIAL_CREDIT, MAX_CHUNK,
    OUTPUT_HEADER_LEN,
};
use crate::sys::fd::bytes_available;

// Token 0 is the session's waker (`super::WAKER`).
const INPUT: Token = Token(1);
const STDOUT: Token = Token(2);
const STDERR: Token = Token(3);

/// After the command exits, how long to wait for its output streams to reach EOF (a
/// background process may hold them open) before reporting the exit.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

pub(super) struct Pump {
    pid: i32,
    tty: bool,
    poll: Poll,
    rx: mpsc::Receiver<Event>,
    sink: Sink,
    input: Option<OwnedFd>,
    input_writable: bool,
    stdin_buf: VecDeque<u8>,
    stdin_eof: bool,
    /// The command closed its stdin: further input is dropped (and credited).
    stdin_broken: bool,
    /// Readers: stdout (or the pty master) and stderr.
    outputs: [Option<OwnedFd>; 2],
    readable: [bool; 2],
    /// Output bytes the host still accepts.
    credit: u64,
    exited: Option<ExecStatus>,
    drain_deadline: Option<Instant>,
    host_gone: bool,
    /// Where frames are encoded; output is read straight into it after the header.
    frame_buf: Vec<u8>,
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    crate::sys::fd::set_nonblocking(fd, true)
}

impl Pump {
    pub(super) fn new(
        s: Spawned,
        poll: Poll,
        rx: mpsc::Receiver<Event>,
        sink: Sink,
    ) -> std::io::Result<Pump> {
        let input_fd = s.input.as_raw_fd();
        set_nonblocking(input_fd)?;
        if s.tty {
            // One fd for both directions.
            poll.registry().register(
                &mut SourceFd(&input_fd),
                STDOUT,
                Interest::READABLE | Interest::WRITABLE,
            )?;
        } else {
            poll.registry()
                .register(&mut SourceFd(&input_fd), INPUT, Interest::WRITABLE)?;
        }
        for (fd, token) in [(&s.stdout, STDOUT), (&s.stderr, STDERR)] {
            if let Some(fd) = fd {
                set_nonblocking(fd.as_raw_fd())?;
                poll.registry().register(
                    &mut SourceFd(&fd.as_raw_fd()),
                    token,
                    Interest::READABLE,
                )?;
            }
        }
        let outputs = if s.tty {
            [Some(s.input.try_clone()?), None]
        } else {
            [s.stdout, s.stderr]
        };
        Ok(Pump {
            pid: s.pid,
            tty: s.tty,
            poll,
            rx,
            sink,
            input: Some(s.input),
            input_writable: false,
            stdin_buf: VecDeque::new(),
            stdin_eof: false,
            stdin_broken: false,
            outputs,
            readable: [false; 2],
            credit: INITIAL_CREDIT as u64,
            exited: None,
            drain_deadline: None,
            host_gone: false,
            frame_buf: Vec::with_capacity(OUTPUT_HEADER_LEN + MAX_CHUNK),
        })
    }

    fn send(&mut self, frame: ExecFrame) {
        if self.host_gone {
            return;
        }
        let mut bytes = std::mem::take(&mut self.frame_buf);
        bytes.clear();
        encode(&mut bytes, &frame);
        if !(self.sink)(&bytes) {
            self.host_lost();
        }
        self.frame_buf = bytes;
    }

    /// The host closed the stream or vanished: kill the command's whole group.
    fn host_lost(&mut self) {
        if !self.host_gone {
            self.host_gone = true;
            self.kill_group(libc::SIGKILL);
        }
    }

    fn kill_group(&self, signal: i32) {
        if self.exited.is_none() {
            // The group is the command's own (it is its process group leader).
            let _ = crate::sys::pid::kill(-self.pid, signal);
        }
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(16);
        loop {
            let timeout = self
                .drain_deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.host_lost();
                    break;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    INPUT => self.input_writable = true,
                    STDOUT => {
                        if self.tty && ev.is_writable() {
                            self.input_writable = true;
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.readable[0] = true;
                        }
                    }
                    STDERR => self.readable[1] = true,
                    _ => {}
                }
            }
            while let Ok(event) = self.rx.try_recv() {
                self.handle(event);
            }
            self.pump_stdin();
            self.pump_outputs();
            if self.finished() {
                break;
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Exited(status) => {
                self.exited = Some(status);
                self.drain_deadline = Some(Instant::now() + DRAIN_GRACE);
            }
            Event::Frame(ExecFrame::Stdin(bytes)) => {
                if self.stdin_broken || self.stdin_eof {
                    let n = bytes.len() as u32;
                    self.send(ExecFrame::Window(n));
                } else {
                    self.stdin_buf.extend(bytes);
                }
            }
            Event::Frame(ExecFrame::StdinEof) => self.stdin_eof = true,
            Event::Frame(ExecFrame::Window(n)) => self.credit += n as u64,
            Event::Frame(ExecFrame::Message(ExecMessage::Signal { signal })) => {
                self.kill_group(signal)
            }
            Event::Frame(ExecFrame::Message(ExecMessage::Resize(size))) => {
                if let (true, Some(m)) = (self.tty, &self.input) {
                    let size = crate::sys::pty::WinSize {
                        rows: size.rows,
                        cols: size.cols,
                    };
                    let _ = crate::sys::pty::set_window_size(m.as_fd(), size);
                }
            }
            Event::Frame(ExecFrame::Close) => self.host_lost(),
            // Nothing else is meaningful from the host once the stream is open.
            Event::Frame(_) => {}
        }
    }

    fn pump_stdin(&mut self) {
        let Some(fd) = &self.input else { return };
        let mut written = 0u64;
        let mut file = std::mem::ManuallyDrop::new(
            // SAFETY: a borrowed view of our own fd, never closed through this File.
            unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) },
        );
        while self.input_writable && !self.stdin_buf.is_empty() {
            let (a, _) = self.stdin_buf.as_slices();
            match file.write(a) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                    written += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.input_writable = false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The command closed its stdin (EPIPE): drop what is left, credit it.
                    written += self.stdin_buf.len() as u64;
                    self.stdin_buf.clear();
                    self.stdin_broken = true;
                }
            }
        }
        if written > 0 {
            self.send(ExecFrame::Window(written as u32));
        }
        if self.stdin_eof && self.stdin_buf.is_empty() {
            if self.tty {
                // A terminal has no half-close: end-of-input is the EOF character (^D).
                if self.input_writable {
                    let _ = file.write(&[4]);
                    self.stdin_eof = false;
                    self.stdin_broken = true;
                }
            } else if let Some(fd) = self.input.take() {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&fd.as_raw_fd()));
                drop(fd);
            }
        }
    }

    fn pump_outputs(&mut self) {
        let mut buf = std::mem::take(&mut self.frame_buf);
        for i in 0..2 {
            let which = if i == 0 {
                Output::Stdout
            } else {
                Output::Stderr
            };
            while self.readable[i] {
                let Some(fd) = &self.outputs[i] else { break };
                if self.credit == 0 && !self.host_gone && bytes_available(fd.as_raw_fd()) != 0 {
                    // Data waits and the host has no room: leave it in the pipe. (With nothing
                    // waiting, the read below still finds EOF without taking any data.)
                    break;
                }
                let want = (self.credit as usize).clamp(1, MAX_CHUNK);
                // The payload is read straight into the frame buffer, after room for the header.
                buf.clear();
                buf.extend_from_slice(&[0; OUTPUT_HEADER_LEN]);
                let read = crate::sys::fd::read_append(fd.as_raw_fd(), &mut buf, want);
                if let Ok(n @ 1..) = read {
                    if !self.host_gone {
                        // At most one byte beyond the credit, when data raced the check above.
                        self.credit = self.credit.saturating_sub(n as u64);
                        buf[..OUTPUT_HEADER_LEN].copy_from_slice(&output_header(which, n));
                        if !(self.sink)(&buf) {
                            self.host_lost();
                        }
                    }
                    continue;
                }
                let errno = read.err().and_then(|e| e.raw_os_error());
                if errno == Some(libc::EAGAIN) {
                    self.readable[i] = false;
                } else if errno == Some(libc::EINTR) {
                    continue;
                } else {
                    // EOF on a pipe, or EIO on a pty master whose slave is closed everywhere.
                    if let Some(fd) = self.outputs[i].take() {
                        if !self.tty {
                            let _ = self
                                .poll
                                .registry()
                                .deregister(&mut SourceFd(&fd.as_raw_fd()));
                        }
                    }
                    self.readable[i] = false;
                }
            }
        }
        self.frame_buf = buf;
    }

    /// Whether the session is over: the command exited and its output was sent (or the grace
    /// for late output ran out while nothing was waiting on credit).
    fn finished(&mut self) -> bool {
        let Some(status) = self.exited else {
            return false;
        };
        let drained = self.outputs.iter().all(Option::is_none);
        let blocked_on_credit = self.readable.iter().any(|r| *r) && self.credit == 0;
        let late = self.drain_deadline.is_some_and(|d| Instant::now() >= d);
        if !(self.host_gone || drained || (late && !blocked_on_credit)) {
            return false;
        }
        self.send(ExecFrame::Message(ExecMessage::Exited(status)));
        self.send(ExecFrame::Close);
        true
    }
}
