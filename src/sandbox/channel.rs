//! The host end of the control channel, the same for both backends: the blocking start
//! handshake with init, then a thread that serves the channel for as long as init lives.
//!
//! The channel is a byte stream to init (a socketpair for `namespace`, the virtio-console for
//! `vm`) carrying the frames of [`crate::protocol`]. Before the worker runs the host sends
//! `Start` (and, for `namespace`, `CgroupsReady`) and waits for `Started` with
//! [`send_blocking`] and [`await_started`]. Then [`Channel::serve`] hands the stream to a
//! thread of its own, which records the worker's exit, carries engine-link streams init opens
//! to the host engine, and runs what other threads ask through a [`ControlHandle`]: signals
//! for the worker, and exec streams into the sandbox ([`exec_opener`]).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Events, Poll, Token, Waker};

use crate::protocol::mux::{Endpoint, Mux, MuxEvent};
use crate::protocol::{encode_message, Decoder, ExitStatus, Message, OpenRequest, SANDBOX_STREAM};
use crate::{err, Context, Result};

/// How long [`await_started`] waits for init to report the worker started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const WAKER: Token = Token(1);

/// Send one control message, blocking (before the channel thread takes over).
pub fn send_blocking(chan: &UnixStream, msg: &Message) -> Result<()> {
    let mut out = Vec::new();
    encode_message(&mut out, SANDBOX_STREAM, msg);
    (&*chan)
        .write_all(&out)
        .context("sending the sandbox's configuration to init")
}

/// Read until `Started` (or `Failed`); returns the decoder holding any bytes that followed.
pub fn await_started(chan: &UnixStream) -> Result<Decoder> {
    chan.set_read_timeout(Some(START_TIMEOUT)).ok();
    let mut dec = Decoder::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        while let Some(f) = dec.next_frame()? {
            if f.stream != SANDBOX_STREAM {
                continue;
            }
            match f.message()? {
                Message::Started { .. } => {
                    chan.set_read_timeout(None).ok();
                    return Ok(dec);
                }
                Message::Failed { message } => return Err(err!("{message}")),
                _ => {}
            }
        }
        match (&*chan).read(&mut buf) {
            Ok(0) => {
                return Err(err!(
                    "init exited during sandbox setup (see the worker's log)"
                ))
            }
            Ok(n) => dec.feed(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err!("waiting for init to start the worker: {e}")),
        }
    }
}

/// The channel thread's event loop, created before the sandbox starts (so that failing to
/// create it fails the start before anything runs).
pub struct Channel {
    poll: Poll,
    waker: Arc<Waker>,
}

impl Channel {
    pub fn new() -> Result<Channel> {
        let poll = Poll::new().context("creating a poll")?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("creating a waker")?);
        Ok(Channel { poll, waker })
    }

    /// Serve `chan` (past [`await_started`], whose `decoder` holds what followed `Started`)
    /// on a thread named `thread_name` until init is gone; engine links go to `engine`.
    pub fn serve(
        self,
        thread_name: String,
        chan: UnixStream,
        decoder: Decoder,
        engine: EngineTarget,
    ) -> Result<HostEnd> {
        let exit = Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::channel();
        let thread_exit = exit.clone();
        let poll = self.poll;
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || host_loop(poll, chan, decoder, engine, thread_exit, rx))
            .map_err(|e| err!("spawning a thread: {e}"))?;
        Ok(HostEnd {
            thread: Some(thread),
            exit,
            control: ControlHandle {
                tx,
                waker: self.waker,
            },
        })
    }
}

/// A served channel: its thread, what it learned, and the handle other threads use.
pub struct HostEnd {
    thread: Option<JoinHandle<()>>,
    exit: Arc<Mutex<Option<ExitStatus>>>,
    control: ControlHandle,
}

impl HostEnd {
    pub fn control(&self) -> ControlHandle {
        self.control.clone()
    }

    /// How the worker ended, as init reported it (once it has).
    pub fn exit(&self) -> Option<ExitStatus> {
        *self.exit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the channel thread has ended (init closed its end).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Wait for the channel thread to end.
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

/// Requests to the channel thread from other threads.
enum Command {
    Open {
        request: OpenRequest,
        endpoint: Box<dyn Endpoint>,
        messages: mpsc::Sender<Message>,
        reply: mpsc::Sender<io::Result<u32>>,
    },
    Send {
        stream: u32,
        message: Message,
    },
}

/// A handle on the host end of the control channel, for opening streams into the sandbox
/// and sending control messages. Cloneable and usable from any thread.
#[derive(Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
}

impl ControlHandle {
    fn submit(&self, cmd: Command) -> Result<()> {
        self.tx
            .send(cmd)
            .map_err(|_| err!("the sandbox's control channel is closed"))?;
        self.waker
            .wake()
            .map_err(|e| err!("waking the control channel thread: {e}"))
    }

    /// Open a stream to init carrying `endpoint`'s bytes both ways; messages init sends on
    /// the stream (e.g. an exec's exit status) arrive on the returned receiver.
    pub fn open(
        &self,
        request: OpenRequest,
        endpoint: Box<dyn Endpoint>,
    ) -> Result<(u32, mpsc::Receiver<Message>)> {
        let (mtx, mrx) = mpsc::channel();
        let (rtx, rrx) = mpsc::channel();
        self.submit(Command::Open {
            request,
            endpoint,
            messages: mtx,
            reply: rtx,
        })?;
        let id = rrx
            .recv()
            .map_err(|_| err!("the sandbox's control channel is closed"))?
            .map_err(|e| err!("opening a stream into the sandbox: {e}"))?;
        Ok((id, mrx))
    }

    /// Send a control message on `stream` (0: the sandbox).
    pub fn send(&self, stream: u32, message: Message) -> Result<()> {
        self.submit(Command::Send { stream, message })
    }
}

/// The [`ExecOpener`](super::ExecOpener) of a sandbox whose control channel is `control`:
/// the monitor has accepted the client's connection on `control.sock` and answered its
/// `{"op":"exec"}` line; from then on the connection's bytes travel unchanged over the channel
/// as one `OpenRequest::Exec` stream to init's exec server. Flow control holds end to end, and
/// when the client goes away the stream closes and init kills the command. The `vm` backend
/// uses this; a `namespace` sandbox hands the connection itself to init instead (its exec
/// door), which saves this relay.
///
/// A stream that cannot open (the channel is gone, or init refuses it) is refused to the client
/// in its own terms, an exec `Failed` frame (exit 125) naming why, so `iii worker exec` says
/// what went wrong rather than that the connection was lost. The calling thread (one per
/// client connection) waits for that answer until the stream ends.
pub fn exec_opener(control: ControlHandle) -> super::ExecOpener {
    Box::new(move |conn| {
        let answer = conn
            .try_clone()
            .map_err(|e| err!("exec: preparing the client connection: {e}"))?;
        conn.set_nonblocking(true)
            .map_err(|e| err!("exec: preparing the client connection: {e}"))?;
        let endpoint = Box::new(mio::net::UnixStream::from_std(conn));
        let messages = match control.open(OpenRequest::Exec, endpoint) {
            Ok((_, messages)) => messages,
            Err(e) => {
                refuse_exec(&answer, &format!("exec: {e}"));
                return Err(e);
            }
        };
        // Init sends nothing on an exec stream but a refusal; the receiver ends with the stream.
        for m in messages {
            if let Message::OpenFailed { message } = m {
                refuse_exec(&answer, &message);
                return Err(err!("{message}"));
            }
        }
        Ok(())
    })
}

/// Tell an exec client its command cannot run: `Failed` (125, `why`), then `Close`.
fn refuse_exec(conn: &UnixStream, why: &str) {
    use crate::protocol::exec::{code, encode_failure};
    let mut bytes = Vec::new();
    encode_failure(&mut bytes, code::III_FAILED, why.to_string());
    // Non-blocking (shared with the relay's end), but a fresh connection has room for this.
    let _ = (&*conn).write_all(&bytes);
}

/// The channel thread: serves the host end until init is gone.
fn host_loop(
    mut poll: Poll,
    chan: UnixStream,
    decoder: Decoder,
    engine: EngineTarget,
    exit: Arc<Mutex<Option<ExitStatus>>>,
    commands: mpsc::Receiver<Command>,
) {
    let Ok(mut mux) = Mux::new(chan, decoder, false, poll.registry()) else {
        return;
    };
    let mut routes: std::collections::HashMap<u32, mpsc::Sender<Message>> = Default::default();
    let mut events = Events::with_capacity(64);
    let mut pending = mux.drain_decoded(poll.registry());
    loop {
        for ev in pending.drain(..) {
            match ev {
                MuxEvent::Message {
                    stream: SANDBOX_STREAM,
                    message: Message::Exited(status),
                } => {
                    *exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                }
                MuxEvent::Message { stream, message } => {
                    let last = matches!(message, Message::OpenFailed { .. });
                    if let Some(tx) = routes.get(&stream) {
                        tx.send(message).ok();
                    }
                    if last {
                        routes.remove(&stream);
                    }
                }
                MuxEvent::Open {
                    stream,
                    request: OpenRequest::EngineLink,
                } => match connect_engine(&engine) {
                    Ok(s) => {
                        if let Err(e) = mux.attach(poll.registry(), stream, s) {
                            mux.reject(stream, format!("engine link: {e}"));
                        }
                    }
                    Err(e) => mux.reject(stream, format!("engine link to {}: {e}", engine.tcp)),
                },
                MuxEvent::Open {
                    stream,
                    request: OpenRequest::Exec,
                } => mux.reject(stream, "the host runs no exec for init".into()),
                MuxEvent::ChannelClosed => return,
            }
        }
        // A stream that ended takes its route along (and so ends its opener's receiver).
        routes.retain(|id, _| mux.has_stream(*id));
        if mux.is_closed() {
            return;
        }
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        for e in events.iter() {
            if e.token() == WAKER {
                while let Ok(cmd) = commands.try_recv() {
                    match cmd {
                        Command::Open {
                            request,
                            endpoint,
                            messages,
                            reply,
                        } => {
                            let r = mux.open(poll.registry(), request, endpoint);
                            if let Ok(id) = r {
                                routes.insert(id, messages);
                            }
                            reply.send(r).ok();
                        }
                        Command::Send { stream, message } => mux.send(stream, &message),
                    }
                }
            } else {
                pending.extend(mux.handle(poll.registry(), e.token()));
            }
        }
    }
}

/// Where engine links go: the engine's unix socket when it answers, else its TCP port.
#[derive(Debug, Clone)]
pub struct EngineTarget {
    pub unix: Option<std::path::PathBuf>,
    pub tcp: SocketAddr,
}

impl EngineTarget {
    pub fn of(spec: &crate::sandbox::SandboxSpec) -> EngineTarget {
        EngineTarget {
            unix: spec.engine_link.clone(),
            tcp: spec.engine_addr,
        }
    }
}

fn connect_engine(to: &EngineTarget) -> io::Result<Box<dyn crate::protocol::mux::Endpoint>> {
    if let Some(path) = &to.unix {
        // An engine of an older build, or none yet, has no socket: the port still serves.
        if let Ok(s) = std::os::unix::net::UnixStream::connect(path) {
            s.set_nonblocking(true)?;
            return Ok(Box::new(mio::net::UnixStream::from_std(s)));
        }
    }
    let s = std::net::TcpStream::connect_timeout(&to.tcp, Duration::from_secs(2))?;
    s.set_nodelay(true).ok();
    s.set_nonblocking(true)?;
    Ok(Box::new(mio::net::TcpStream::from_std(s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::exec::{self, ExecContext};
    use crate::protocol::exec::{encode, Decoder as ExecDecoder, ExecFrame, ExecMessage};
    use crate::protocol::exec::{ExecRequest, ExecStatus, Output, Side, INITIAL_CREDIT};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Init's side of the relay, as the guest runs it: a mux over the channel whose exec
    /// streams go to the exec server (or are refused, with `refuse`). Ends when the host end
    /// closes or `stop` is set.
    fn guest(chan: UnixStream, stop: Arc<AtomicBool>, refuse: bool) -> JoinHandle<()> {
        std::thread::spawn(move || {
            let mut poll = Poll::new().unwrap();
            let mut mux = Mux::new(chan, Decoder::new(), true, poll.registry()).unwrap();
            let ctx = ExecContext {
                env: vec![("PATH".into(), "/bin:/usr/bin".into())],
                own_reaper: true,
                ..Default::default()
            };
            let mut events = Events::with_capacity(64);
            while !mux.is_closed() && !stop.load(Ordering::Relaxed) {
                poll.poll(&mut events, Some(Duration::from_millis(50))).ok();
                for e in events.iter() {
                    for ev in mux.handle(poll.registry(), e.token()) {
                        if let MuxEvent::Open {
                            stream,
                            request: OpenRequest::Exec,
                        } = ev
                        {
                            if refuse {
                                mux.reject(stream, "exec: no exec server here".into());
                            } else {
                                exec::attach(&mut mux, poll.registry(), stream, &ctx);
                            }
                        }
                    }
                }
            }
        })
    }

    /// What an exec client does on its connection: feed `input` as stdin within the granted
    /// credit, grant credit for output as it arrives, and collect stdout until `Exited`.
    fn exec_cat(conn: UnixStream, input: &[u8]) -> Result<(Vec<u8>, ExecStatus), String> {
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let writer = Arc::new(Mutex::new(conn.try_clone().unwrap()));
        let send = |w: &Mutex<UnixStream>, f: &ExecFrame| {
            let mut bytes = Vec::new();
            encode(&mut bytes, f);
            w.lock().unwrap().write_all(&bytes).is_ok()
        };
        let req = ExecRequest {
            args: vec!["cat".into()],
            env: vec![],
            cwd: "/".into(),
            tty: None,
        };
        send(&writer, &ExecFrame::Message(ExecMessage::Open(req)));
        let (credit_tx, credit_rx) = mpsc::channel::<u32>();
        let feeder = {
            let writer = writer.clone();
            let input = input.to_vec();
            std::thread::spawn(move || {
                let mut credit = INITIAL_CREDIT as usize;
                let mut rest = &input[..];
                while !rest.is_empty() {
                    while credit == 0 {
                        match credit_rx.recv() {
                            Ok(n) => credit += n as usize,
                            Err(_) => return,
                        }
                    }
                    let n = rest.len().min(credit).min(64 << 10);
                    if !send(&writer, &ExecFrame::Stdin(rest[..n].to_vec())) {
                        return;
                    }
                    credit -= n;
                    rest = &rest[n..];
                }
                send(&writer, &ExecFrame::StdinEof);
            })
        };
        let mut d = ExecDecoder::new(Side::Client);
        let (mut out, mut exited) = (Vec::new(), None);
        let mut buf = vec![0u8; 64 << 10];
        let mut reader = conn;
        let result = 'read: loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break Err(format!("EOF after {} bytes, no exit", out.len())),
                Ok(n) => n,
                Err(e) => break Err(format!("{e} after {} bytes", out.len())),
            };
            d.feed(&buf[..n]);
            while let Some(f) = d.next_frame().map_err(|e| e.to_string())? {
                match f {
                    ExecFrame::Output(Output::Stdout, b) => {
                        send(&writer, &ExecFrame::Window(b.len() as u32));
                        out.extend(b);
                    }
                    ExecFrame::Window(n) => {
                        credit_tx.send(n).ok();
                    }
                    ExecFrame::Message(ExecMessage::Exited(st)) => exited = Some(st),
                    ExecFrame::Message(ExecMessage::Failed { code, message }) => {
                        break 'read Err(format!("failed {code}: {message}"))
                    }
                    ExecFrame::Close => match exited {
                        Some(st) => break 'read Ok((std::mem::take(&mut out), st)),
                        None => break 'read Err("closed without an exit".into()),
                    },
                    _ => {}
                }
            }
        };
        drop(credit_tx);
        feeder.join().unwrap();
        result
    }

    /// A host end over a socketpair to [`guest`], and the opener of exec streams into it.
    struct Relay {
        host: HostEnd,
        stop: Arc<AtomicBool>,
        guest: JoinHandle<()>,
        open: Arc<super::super::ExecOpener>,
    }

    impl Relay {
        fn new(refuse: bool) -> Relay {
            let (host_chan, guest_chan) = UnixStream::pair().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let guest = guest(guest_chan, stop.clone(), refuse);
            let engine = EngineTarget {
                unix: None,
                tcp: "127.0.0.1:1".parse().unwrap(),
            };
            let host = Channel::new()
                .unwrap()
                .serve("channel".into(), host_chan, Decoder::new(), engine)
                .unwrap();
            let open = Arc::new(exec_opener(host.control()));
            Relay {
                host,
                stop,
                guest,
                open,
            }
        }

        /// Open an exec stream for `server` as the monitor does: on a thread of its own,
        /// which waits until the stream ends.
        fn open_on_thread(&self, server: UnixStream) -> JoinHandle<Result<()>> {
            let open = self.open.clone();
            std::thread::spawn(move || open(server))
        }

        /// End the guest side; the host end follows.
        fn finish(mut self) {
            self.stop.store(true, Ordering::Relaxed);
            self.guest.join().unwrap();
            self.host.join();
        }
    }

    /// Exec streams relayed over the channel (the `vm` backend's path: client connection →
    /// host mux → channel → init's mux → exec server) carry bulk stdin and stdout byte-exact
    /// and end with the command's exit, run after run.
    #[test]
    fn exec_streams_over_the_channel_carry_bulk_data_and_the_exit() {
        let relay = Relay::new(false);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
        for run in 0..30 {
            let (client, server) = UnixStream::pair().unwrap();
            let opener = relay.open_on_thread(server);
            match exec_cat(client, &data) {
                Ok((out, st)) => {
                    assert_eq!(st, ExecStatus::Code(0), "run {run}");
                    assert!(out == data, "run {run}: {} bytes came back", out.len());
                }
                Err(e) => panic!("run {run}: {e}"),
            }
            // The stream's end ends its opener too (its route is gone).
            opener.join().unwrap().unwrap();
        }
        relay.finish();
    }

    /// A stream init refuses reaches the client as an exec failure naming why (exit 125),
    /// not as a lost connection.
    #[test]
    fn an_exec_stream_init_refuses_fails_with_its_reason() {
        let relay = Relay::new(true);
        let (client, server) = UnixStream::pair().unwrap();
        let opener = relay.open_on_thread(server);
        let err = exec_cat(client, b"x").unwrap_err();
        assert_eq!(err, "failed 125: exec: no exec server here");
        let e = opener.join().unwrap().unwrap_err();
        assert_eq!(e.to_string(), "exec: no exec server here");
        relay.finish();
    }
}
