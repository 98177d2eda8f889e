//! The worker port: one thread, one `mio` loop, every WebSocket connection of every SDK worker,
//! and the in-process links of the built-in workers. It owns the [`Router`] and feeds it what
//! arrives; the router's messages go out through this loop's buffers.
//!
//! - Paths: `/` is the protocol, `/otel` is accepted and its frames discarded (SDK telemetry),
//!   anything else is refused with 404 before the upgrade.
//! - A connection that has not finished its upgrade within the handshake timeout is closed.
//! - Messages up to [`MAX_MESSAGE`] are accepted (fragmented or not); a bigger one closes the
//!   connection with 1009 (message too big) before it is buffered.
//! - Each connection reads at most `READ_BUDGET` messages per turn so one busy worker cannot
//!   starve the others; writes are batched and flushed once per turn.
//! - Built-in workers connect through [`Handle::connect`] and speak the same [`Message`]s over
//!   channels ([`Link`]).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use tungstenite::handshake::server::{ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, WebSocketConfig};
use tungstenite::WebSocket;

use super::router::{PeerId, PeerKind, Router, Transport, BACKLOG_CLOSE};
use super::wire::{self, Message};
use super::MAX_MESSAGE;
use crate::{Context, Result};

/// Messages read from one connection per loop turn before the others get theirs.
const READ_BUDGET: usize = 256;
/// Connections beyond this are refused at accept (each costs a file descriptor).
const MAX_CONNECTIONS: usize = 16_384;
const WAKER: Token = Token(usize::MAX - 1);
/// Built-in workers' peer ids start here (WebSocket peers count up from 1).
const LOCAL_PEERS: u64 = 1 << 48;

/// Telemetry frames SDKs may also send on `/`: a 4-byte tag, then OTLP/JSON.
const TELEMETRY_TAGS: [&[u8; 4]; 3] = [b"OTLP", b"LOGS", b"MTRC"];

/// A listening socket of the worker port.
pub enum Listener {
    Tcp(std::net::TcpListener),
    /// The engine link of container workers: their monitors connect here; the peer's PID
    /// names the worker (see [`Settings::who`]).
    Unix(std::os::unix::net::UnixListener),
}

/// How the port runs.
pub struct Settings {
    pub handshake_timeout: Duration,
    /// Which container worker a process (a monitor on the engine link) belongs to.
    pub who: Box<dyn Fn(u32) -> Option<String> + Send>,
}

enum Event {
    Connect {
        peer: PeerId,
        name: String,
        inbox: mpsc::Sender<Message>,
        notify: Option<Box<dyn Fn() + Send>>,
    },
    Message(PeerId, Message),
    Disconnect(PeerId),
    Query(Box<dyn FnOnce(&Router) + Send>),
    Shutdown,
}

/// Talks to a running port from other threads.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Event>,
    waker: Arc<Waker>,
    next_local: Arc<AtomicU64>,
}

impl Handle {
    fn post(&self, e: Event) -> bool {
        self.tx.send(e).is_ok() && self.waker.wake().is_ok()
    }

    /// Connect a built-in worker named `name`. `notify` is called (on the port's thread)
    /// after each message is queued for it, for workers that wait in a loop of their own.
    pub fn connect(&self, name: &str, notify: Option<Box<dyn Fn() + Send>>) -> Link {
        let peer = self.next_local.fetch_add(1, Ordering::Relaxed);
        let (inbox_tx, inbox) = mpsc::channel();
        self.post(Event::Connect {
            peer,
            name: name.to_string(),
            inbox: inbox_tx,
            notify,
        });
        Link {
            peer,
            handle: self.clone(),
            inbox,
        }
    }

    /// Run `f` on the router's thread and return what it computes (`None` once stopped).
    pub fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Router) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        if !self.post(Event::Query(Box::new(move |r| {
            let _ = tx.send(f(r));
        }))) {
            return None;
        }
        rx.recv_timeout(Duration::from_secs(5)).ok()
    }

    /// Close every connection and end the port's thread.
    pub fn shutdown(&self) {
        self.post(Event::Shutdown);
    }
}

/// A built-in worker's connection to the router.
pub struct Link {
    peer: PeerId,
    handle: Handle,
    inbox: mpsc::Receiver<Message>,
}

impl Link {
    pub fn send(&self, m: Message) {
        self.handle.post(Event::Message(self.peer, m));
    }

    /// The next message; `None` once the engine is shutting down.
    pub fn recv(&self) -> Option<Message> {
        self.inbox.recv().ok()
    }

    /// The next message within `d`; `Err(Disconnected)` once the engine is shutting down.
    pub fn recv_timeout(
        &self,
        d: Duration,
    ) -> std::result::Result<Message, mpsc::RecvTimeoutError> {
        self.inbox.recv_timeout(d)
    }

    pub fn try_recv(&self) -> std::result::Result<Message, mpsc::TryRecvError> {
        self.inbox.try_recv()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.handle.post(Event::Disconnect(self.peer));
    }
}

/// A connection's socket, counting the bytes it wrote (the outbound backlog is what the
/// router asked to send minus what reached the socket).
struct Stream {
    inner: StreamKind,
    written: u64,
    /// The last read came back short: the socket is drained, and the next read would only
    /// say so. Reading stops there without that extra syscall; new data raises a new
    /// (edge-triggered) readiness event, which clears this.
    drained: bool,
}

enum StreamKind {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained {
            self.drained = false;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = match &mut self.inner {
            StreamKind::Tcp(s) => s.read(buf),
            StreamKind::Unix(s) => s.read(buf),
        }?;
        self.drained = n > 0 && n < buf.len();
        Ok(n)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            StreamKind::Tcp(s) => s.write(buf),
            StreamKind::Unix(s) => s.write(buf),
        }?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Which endpoint a client asked for in its upgrade request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Protocol,
    Telemetry,
}

/// What the gate saw: 0 nothing yet, else a [`Path`] as `1 + index`.
type PathCell = Arc<std::sync::atomic::AtomicU8>;

fn path_of(c: &PathCell) -> Option<Path> {
    match c.load(Ordering::Relaxed) {
        1 => Some(Path::Protocol),
        2 => Some(Path::Telemetry),
        _ => None,
    }
}

/// The upgrade request's gate: routes by path, refuses the rest with 404.
struct Gate(PathCell);

impl tungstenite::handshake::server::Callback for Gate {
    fn on_request(
        self,
        request: &Request,
        response: Response,
    ) -> std::result::Result<Response, ErrorResponse> {
        let path = match request.uri().path() {
            "/" | "" => Path::Protocol,
            "/otel" => Path::Telemetry,
            _ => {
                let mut r = ErrorResponse::new(Some("Not Found".into()));
                *r.status_mut() = tungstenite::http::StatusCode::NOT_FOUND;
                return Err(r);
            }
        };
        self.0.store(
            match path {
                Path::Protocol => 1,
                Path::Telemetry => 2,
            },
            Ordering::Relaxed,
        );
        Ok(response)
    }
}

type Handshake = MidHandshake<ServerHandshake<Stream, Gate>>;

enum Conn {
    Upgrading {
        mid: Option<Box<Handshake>>,
        path: PathCell,
        remote: String,
        container: Option<String>,
    },
    Open(Box<Open>),
}

struct Open {
    ws: WebSocket<Stream>,
    /// `None` for `/otel` connections (not peers of the router).
    peer: Option<PeerId>,
    /// Frame bytes handed to `ws` so far (compare with `Stream::written`).
    given: u64,
    /// Waiting for the socket to become writable again.
    blocked: bool,
    /// Has writes not yet flushed this turn.
    dirty: bool,
}

impl Open {
    fn backlog(&self) -> usize {
        self.given.saturating_sub(self.ws.get_ref().written) as usize
    }
}

struct Local {
    inbox: mpsc::Sender<Message>,
    notify: Option<Box<dyn Fn() + Send>>,
}

/// Everything but the router: sockets, buffers, built-in links. The router's [`Transport`].
struct Net {
    poll: Poll,
    listeners: Vec<Listener>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    peer_conn: HashMap<PeerId, usize>,
    locals: HashMap<PeerId, Local>,
    next_peer: PeerId,
    deadlines: VecDeque<(Instant, usize, u64)>,
    /// Serial of each slot's current connection (timers of a closed one must not fire).
    serial: Vec<u64>,
    dirty: Vec<usize>,
    ready: VecDeque<usize>,
    closing: Vec<(usize, String)>,
    accept_paused: bool,
    retry_accept: bool,
    settings: Settings,
    ws_config: WebSocketConfig,
}

fn conn_token(slot: usize, listeners: usize) -> Token {
    Token(listeners + slot)
}

/// Start the port's thread over `listeners`.
pub fn spawn(
    listeners: Vec<Listener>,
    settings: Settings,
) -> Result<(Handle, std::thread::JoinHandle<()>)> {
    let poll = Poll::new().context("creating the engine's event loop")?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("creating a waker")?);
    for (i, l) in listeners.iter().enumerate() {
        use std::os::fd::AsRawFd;
        let fd = match l {
            Listener::Tcp(l) => {
                l.set_nonblocking(true).context("worker port")?;
                l.as_raw_fd()
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true).context("engine link socket")?;
                l.as_raw_fd()
            }
        };
        poll.registry()
            .register(&mut mio::unix::SourceFd(&fd), Token(i), Interest::READABLE)
            .context("watching the worker port")?;
    }
    let (tx, rx) = mpsc::channel();
    let handle = Handle {
        tx,
        waker,
        next_local: Arc::new(AtomicU64::new(LOCAL_PEERS)),
    };
    let mut ws_config = WebSocketConfig::default();
    ws_config.read_buffer_size = 8 << 10;
    ws_config.write_buffer_size = 64 << 10;
    ws_config.max_write_buffer_size = BACKLOG_CLOSE;
    ws_config.max_message_size = Some(MAX_MESSAGE);
    ws_config.max_frame_size = Some(MAX_MESSAGE);
    let net = Net {
        poll,
        listeners,
        conns: Vec::new(),
        free: Vec::new(),
        live: 0,
        peer_conn: HashMap::new(),
        locals: HashMap::new(),
        next_peer: 1,
        deadlines: VecDeque::new(),
        serial: Vec::new(),
        dirty: Vec::new(),
        ready: VecDeque::new(),
        closing: Vec::new(),
        accept_paused: false,
        retry_accept: false,
        settings,
        ws_config,
    };
    let thread = std::thread::Builder::new()
        .name("worker port".into())
        .spawn(move || run(net, Router::new(), rx))
        .context("starting the worker port thread")?;
    Ok((handle, thread))
}

fn run(mut net: Net, mut router: Router, rx: mpsc::Receiver<Event>) {
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        let mut timeout = [router.next_deadline(), net.deadlines.front().map(|d| d.0)]
            .into_iter()
            .flatten()
            .min()
            .map(|d| d.saturating_duration_since(now));
        if !net.ready.is_empty() {
            timeout = Some(Duration::ZERO);
        }
        if let Err(e) = net.poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                crate::say!("error: engine event loop: {e}");
                return;
            }
        }
        let listeners = net.listeners.len();
        for ev in events.iter() {
            match ev.token() {
                WAKER => {}
                Token(i) if i < listeners => net.accept(&mut router, i),
                Token(t) => {
                    let slot = t - listeners;
                    if ev.is_writable() {
                        net.on_writable(&mut router, slot);
                    }
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        net.on_readable(&mut router, slot);
                    }
                }
            }
        }
        // Connections that still had messages after their budget, round robin.
        for _ in 0..net.ready.len() {
            if let Some(slot) = net.ready.pop_front() {
                net.on_readable(&mut router, slot);
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Event::Message(peer, m)) => router.handle(&mut net, peer, m),
                Ok(Event::Connect {
                    peer,
                    name,
                    inbox,
                    notify,
                }) => {
                    net.locals.insert(peer, Local { inbox, notify });
                    router.connect(&mut net, peer, PeerKind::Builtin { name });
                }
                Ok(Event::Disconnect(peer)) => {
                    net.locals.remove(&peer);
                    router.disconnect(&mut net, peer);
                }
                Ok(Event::Query(f)) => f(&router),
                Ok(Event::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => {
                    net.shutdown();
                    return;
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        if std::mem::take(&mut net.retry_accept) {
            for i in 0..net.listeners.len() {
                net.accept(&mut router, i);
            }
        }
        let now = Instant::now();
        router.tick(&mut net, now);
        net.expire_handshakes(&mut router, now);
        net.flush_dirty(&mut router);
    }
}

impl Net {
    fn alloc(&mut self, c: Conn) -> usize {
        self.live += 1;
        match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(c);
                self.serial[i] += 1;
                i
            }
            None => {
                self.conns.push(Some(c));
                self.serial.push(0);
                self.conns.len() - 1
            }
        }
    }

    fn accept(&mut self, router: &mut Router, i: usize) {
        loop {
            if self.live >= MAX_CONNECTIONS {
                self.accept_paused = true;
                // Take the connection and close it: the kernel queue must not fill up.
                let _ = match &self.listeners[i] {
                    Listener::Tcp(l) => l.accept().map(drop),
                    Listener::Unix(l) => l.accept().map(drop),
                };
                return;
            }
            let accepted = match &self.listeners[i] {
                // Accepted sockets do not inherit the listener's O_NONBLOCK.
                Listener::Tcp(l) => l
                    .accept()
                    .and_then(|(s, a)| s.set_nonblocking(true).map(|_| (s, a)))
                    .map(|(s, a)| {
                        let _ = s.set_nodelay(true);
                        (
                            StreamKind::Tcp(mio::net::TcpStream::from_std(s)),
                            a.to_string(),
                            None,
                        )
                    }),
                Listener::Unix(l) => l
                    .accept()
                    .and_then(|(s, a)| s.set_nonblocking(true).map(|_| (s, a)))
                    .map(|(s, _)| {
                        let container = peer_pid(&s).and_then(|pid| (self.settings.who)(pid));
                        let remote = match &container {
                            Some(c) => format!("engine link of {c}"),
                            None => "engine link".to_string(),
                        };
                        (
                            StreamKind::Unix(mio::net::UnixStream::from_std(s)),
                            remote,
                            container,
                        )
                    }),
            };
            let (kind, remote, container) = match accepted {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_paused = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: try again when a connection closes.
                    if !self.accept_paused {
                        crate::say!("engine: accepting a worker connection: {e}");
                    }
                    self.accept_paused = true;
                    return;
                }
            };
            let mut stream = Stream {
                inner: kind,
                written: 0,
                drained: false,
            };
            let path: PathCell = Arc::new(std::sync::atomic::AtomicU8::new(0));
            let slot = self.alloc(Conn::Upgrading {
                mid: None,
                path: path.clone(),
                remote,
                container,
            });
            let token = conn_token(slot, self.listeners.len());
            let reg = match &mut stream.inner {
                StreamKind::Tcp(s) => {
                    self.poll
                        .registry()
                        .register(s, token, Interest::READABLE | Interest::WRITABLE)
                }
                StreamKind::Unix(s) => {
                    self.poll
                        .registry()
                        .register(s, token, Interest::READABLE | Interest::WRITABLE)
                }
            };
            if reg.is_err() {
                self.release(slot);
                continue;
            }
            let deadline = Instant::now() + self.settings.handshake_timeout;
            self.deadlines
                .push_back((deadline, slot, self.serial[slot]));
            let result =
                tungstenite::accept_hdr_with_config(stream, Gate(path), Some(self.ws_config));
            self.upgraded(router, slot, result);
        }
    }

    /// Continue after a handshake round.
    fn upgraded(
        &mut self,
        router: &mut Router,
        slot: usize,
        result: std::result::Result<
            WebSocket<Stream>,
            HandshakeError<ServerHandshake<Stream, Gate>>,
        >,
    ) {
        match result {
            Ok(ws) => {
                let Some(Conn::Upgrading {
                    path,
                    remote,
                    container,
                    ..
                }) = self.conns[slot].take()
                else {
                    return;
                };
                let given = ws.get_ref().written;
                let peer = match path_of(&path) {
                    Some(Path::Protocol) => {
                        let p = self.next_peer;
                        self.next_peer += 1;
                        self.peer_conn.insert(p, slot);
                        Some(p)
                    }
                    _ => None,
                };
                self.conns[slot] = Some(Conn::Open(Box::new(Open {
                    ws,
                    peer,
                    given,
                    blocked: false,
                    dirty: false,
                })));
                if let Some(p) = peer {
                    router.connect(self, p, PeerKind::Worker { remote, container });
                }
                // Frames may have arrived together with the upgrade request.
                self.ready.push_back(slot);
            }
            Err(HandshakeError::Interrupted(mid)) => {
                if let Some(Conn::Upgrading { mid: m, .. }) = &mut self.conns[slot] {
                    *m = Some(Box::new(mid));
                }
            }
            Err(HandshakeError::Failure(_)) => self.release(slot),
        }
    }

    /// Readable (or hung up): continue a handshake, or read messages into the router.
    fn on_readable(&mut self, router: &mut Router, slot: usize) {
        match self.conns.get_mut(slot) {
            Some(Some(Conn::Upgrading { mid, .. })) => {
                if let Some(mut m) = mid.take() {
                    m.get_mut().get_mut().drained = false;
                    let r = m.handshake();
                    self.upgraded(router, slot, r);
                }
            }
            Some(Some(Conn::Open(o))) => {
                o.ws.get_mut().drained = false;
                self.read_messages(router, slot)
            }
            _ => {}
        }
    }

    fn on_writable(&mut self, router: &mut Router, slot: usize) {
        match self.conns.get_mut(slot) {
            Some(Some(Conn::Upgrading { mid, .. })) => {
                if let Some(m) = mid.take() {
                    let r = m.handshake();
                    self.upgraded(router, slot, r);
                }
            }
            Some(Some(Conn::Open(o))) => {
                o.blocked = false;
                self.flush(router, slot);
            }
            _ => {}
        }
    }

    fn read_messages(&mut self, router: &mut Router, slot: usize) {
        for _ in 0..READ_BUDGET {
            let Some(Some(Conn::Open(o))) = self.conns.get_mut(slot) else {
                return;
            };
            let peer = o.peer;
            match o.ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    if let Some(p) = peer {
                        match wire::decode(t.as_str()) {
                            Ok(m) => router.handle(self, p, m),
                            Err(e) => router.bad_frame(p, &e.0),
                        }
                    }
                }
                Ok(tungstenite::Message::Binary(b)) => {
                    let telemetry = b.len() >= 4 && TELEMETRY_TAGS.iter().any(|t| b[..4] == t[..]);
                    if let (Some(p), false) = (peer, telemetry) {
                        match std::str::from_utf8(&b) {
                            Ok(text) => match wire::decode(text) {
                                Ok(m) => router.handle(self, p, m),
                                Err(e) => router.bad_frame(p, &e.0),
                            },
                            Err(_) => router.bad_frame(p, "binary frame that is not UTF-8 JSON"),
                        }
                    }
                }
                // tungstenite queued the pong (or the close reply): it goes out with the flush.
                Ok(_) => self.mark_dirty(slot),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A pong queued while reading must not wait for the next write.
                    self.mark_dirty(slot);
                    return;
                }
                Err(tungstenite::Error::Capacity(e)) => {
                    if let Some(p) = peer {
                        router.bad_frame(p, &format!("{e}; closing the connection"));
                    }
                    self.close_with(router, slot, CloseCode::Size, "message too big");
                    return;
                }
                Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                )) => {
                    // The worker went away without a goodbye (killed, say): a disconnect.
                    self.release_conn(router, slot);
                    return;
                }
                Err(tungstenite::Error::Protocol(e)) => {
                    if let Some(p) = peer {
                        router.bad_frame(p, &format!("{e}; closing the connection"));
                    }
                    self.close_with(router, slot, CloseCode::Protocol, "protocol error");
                    return;
                }
                Err(_) => {
                    self.release_conn(router, slot);
                    return;
                }
            }
        }
        // Budget spent with messages possibly left: come back after the others.
        self.ready.push_back(slot);
    }

    fn mark_dirty(&mut self, slot: usize) {
        if let Some(Some(Conn::Open(o))) = self.conns.get_mut(slot) {
            if !o.dirty {
                o.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// Write what is buffered for `slot` as far as the socket takes it.
    fn flush(&mut self, router: &mut Router, slot: usize) {
        let Some(Some(Conn::Open(o))) = self.conns.get_mut(slot) else {
            return;
        };
        o.dirty = false;
        if o.blocked {
            return;
        }
        match o.ws.flush() {
            Ok(()) => {
                // Everything reached the socket: resynchronise the backlog count.
                o.given = o.ws.get_ref().written;
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                o.blocked = true;
            }
            Err(_) => self.release_conn(router, slot),
        }
    }

    fn flush_dirty(&mut self, router: &mut Router) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for slot in dirty.drain(..) {
            self.flush(router, slot);
        }
        self.dirty = dirty;
        for (slot, why) in std::mem::take(&mut self.closing) {
            let code = if why == "outbound queue over its limit" {
                CloseCode::Policy
            } else {
                CloseCode::Away
            };
            self.close_with(router, slot, code, &why);
        }
    }

    fn expire_handshakes(&mut self, router: &mut Router, now: Instant) {
        while let Some(&(deadline, slot, serial)) = self.deadlines.front() {
            if deadline > now {
                return;
            }
            self.deadlines.pop_front();
            if self.serial[slot] == serial
                && matches!(self.conns[slot], Some(Conn::Upgrading { .. }))
            {
                self.release_conn(router, slot);
            }
        }
    }

    /// Send a Close frame (best effort) and forget the connection.
    fn close_with(&mut self, router: &mut Router, slot: usize, code: CloseCode, why: &str) {
        if let Some(Some(Conn::Open(o))) = self.conns.get_mut(slot) {
            let _ = o.ws.close(Some(CloseFrame {
                code,
                reason: why.to_string().into(),
            }));
            let _ = o.ws.flush();
        }
        self.release_conn(router, slot);
    }

    /// Forget a connection (its socket closes) and tell the router.
    fn release_conn(&mut self, router: &mut Router, slot: usize) {
        let peer = match &self.conns.get(slot) {
            Some(Some(Conn::Open(o))) => o.peer,
            _ => None,
        };
        self.release(slot);
        if let Some(p) = peer {
            self.peer_conn.remove(&p);
            router.disconnect(self, p);
        }
    }

    fn release(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot).and_then(Option::take) {
            // Dropping the socket closes it, which also removes it from the poll set.
            drop(c);
            self.free.push(slot);
            self.live -= 1;
            if self.accept_paused {
                // Connections may be waiting in the listen queue; accept them next turn.
                self.accept_paused = false;
                self.retry_accept = true;
            }
        }
    }

    fn shutdown(&mut self) {
        for slot in 0..self.conns.len() {
            if let Some(Conn::Open(o)) = &mut self.conns[slot] {
                let _ = o.ws.close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "engine stopping".into(),
                }));
                let _ = o.ws.flush();
            }
            self.conns[slot] = None;
        }
        self.locals.clear();
    }
}

impl Transport for Net {
    fn send(&mut self, peer: PeerId, msg: Message) {
        if let Some(l) = self.locals.get(&peer) {
            if l.inbox.send(msg).is_ok() {
                if let Some(n) = &l.notify {
                    n();
                }
            }
            return;
        }
        let Some(&slot) = self.peer_conn.get(&peer) else {
            return;
        };
        let Some(Some(Conn::Open(o))) = self.conns.get_mut(slot) else {
            return;
        };
        let text = wire::encode(&msg);
        let len = text.len() as u64;
        o.given += len
            + if len < 126 {
                2
            } else if len < 65_536 {
                4
            } else {
                10
            };
        match o.ws.write(tungstenite::Message::Text(text.into())) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                o.blocked = true;
            }
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                crate::say!("engine: a worker's outbound queue is over its limit; closing it");
                self.closing
                    .push((slot, "outbound queue over its limit".into()));
                return;
            }
            Err(_) => {
                self.closing.push((slot, "write failed".into()));
                return;
            }
        }
        if !o.dirty {
            o.dirty = true;
            self.dirty.push(slot);
        }
    }

    fn backlog(&self, peer: PeerId) -> usize {
        match self.peer_conn.get(&peer).and_then(|&s| self.conns.get(s)) {
            Some(Some(Conn::Open(o))) => o.backlog(),
            _ => 0,
        }
    }

    fn close(&mut self, peer: PeerId, reason: &str) {
        if let Some(slot) = self.peer_conn.remove(&peer) {
            // The router already forgot the peer: just close the socket.
            if let Some(Some(Conn::Open(o))) = self.conns.get_mut(slot) {
                o.peer = None;
            }
            self.closing.push((slot, reason.to_string()));
        }
    }
}

/// The PID of the process at the other end of a Unix socket.
fn peer_pid(s: &std::os::unix::net::UnixStream) -> Option<u32> {
    use std::os::fd::AsFd;
    crate::sys::socket::peer_credentials(s.as_fd())
        .ok()
        .map(|(pid, _)| pid)
}
