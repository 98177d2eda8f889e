//! The stream multiplexer both ends run over the control channel with `mio`: it frames
//! messages, carries each logical stream between the channel and a local endpoint (a TCP
//! connection for the engine link; pipes for `exec` later), and enforces the credit-based flow
//! control described in [`crate::protocol`].
//!
//! The owner runs the `mio` loop: it registers its own sources with tokens below
//! [`FIRST_STREAM_TOKEN`], passes every event to [`Mux::handle`], and acts on the returned
//! [`MuxEvent`]s (a control message, a request to open a stream, the channel closing).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;

use mio::{Interest, Registry, Token};

use super::{encode, encode_message, encode_window, Decoder, FrameKind, Message, OpenRequest};
use super::{INITIAL_WINDOW, MAX_DATA};

/// The channel's token in the owner's `mio` registry.
pub const CHANNEL: Token = Token(0);
/// Tokens from here up belong to streams (`FIRST_STREAM_TOKEN + stream id`).
pub const FIRST_STREAM_TOKEN: usize = 1 << 32;
/// Stop reading local endpoints while this much is queued for the channel.
const OUT_HIGH_WATER: usize = 1 << 20;
/// Grant credit back once this much has been consumed (or the backlog is empty).
const WINDOW_BATCH: u32 = 32 << 10;

/// A local end of a stream: what bytes from the peer are written to, and what is read and sent.
pub trait Endpoint: Read + Write + mio::event::Source + Send {
    /// No more bytes will be written to this endpoint (the peer sent EOF).
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Endpoint for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Endpoint for mio::net::UnixStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// Something the owner must act on.
#[derive(Debug, PartialEq)]
pub enum MuxEvent {
    /// A control message for the sandbox (stream 0) or for a stream the owner knows.
    Message { stream: u32, message: Message },
    /// The peer opened `stream`: call [`Mux::attach`] or [`Mux::reject`].
    Open { stream: u32, request: OpenRequest },
    /// The channel reached EOF or failed: the peer is gone.
    ChannelClosed,
}

struct Stream {
    /// `None` until the owner attaches an endpoint to a stream the peer opened.
    endpoint: Option<Box<dyn Endpoint>>,
    /// Bytes we may still send to the peer.
    credit: u32,
    /// Bytes from the peer not yet written to the endpoint (≤ INITIAL_WINDOW).
    pending: Vec<u8>,
    /// Bytes written to the endpoint and not yet credited back to the peer.
    consumed: u32,
    /// The endpoint reached EOF and we sent `Eof`.
    sent_eof: bool,
    /// The peer sent `Eof`.
    peer_eof: bool,
    /// We shut the endpoint's write side after the peer's `Eof` was drained.
    write_shut: bool,
}

impl Stream {
    fn new(endpoint: Option<Box<dyn Endpoint>>) -> Stream {
        Stream {
            endpoint,
            credit: INITIAL_WINDOW,
            pending: Vec::new(),
            consumed: 0,
            sent_eof: false,
            peer_eof: false,
            write_shut: false,
        }
    }
}

/// One end of the multiplexed control channel.
pub struct Mux {
    chan: mio::net::UnixStream,
    decoder: Decoder,
    out: Vec<u8>,
    streams: HashMap<u32, Stream>,
    next_id: u32,
    closed: bool,
    /// Endpoint reads stopped because `out` was over the high-water mark.
    throttled: bool,
}

impl Mux {
    /// Take over `chan` (made non-blocking and registered as [`CHANNEL`]). `decoder` holds
    /// whatever was read from it before (bytes past the last frame read synchronously).
    /// `odd_ids`: this end opens odd stream ids (init) or even ones (host).
    pub fn new(
        chan: std::os::unix::net::UnixStream,
        decoder: Decoder,
        odd_ids: bool,
        registry: &Registry,
    ) -> io::Result<Mux> {
        chan.set_nonblocking(true)?;
        let mut chan = mio::net::UnixStream::from_std(chan);
        registry.register(&mut chan, CHANNEL, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Mux {
            chan,
            decoder,
            out: Vec::new(),
            streams: HashMap::new(),
            next_id: if odd_ids { 1 } else { 2 },
            closed: false,
            throttled: false,
        })
    }

    /// Whether the peer is gone.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Number of live streams.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Whether `stream` is still open on this side.
    pub fn has_stream(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    /// Queue a control message (sent as the channel allows; call [`Mux::flush`] or let the
    /// event loop do it).
    pub fn send(&mut self, stream: u32, message: &Message) {
        encode_message(&mut self.out, stream, message);
        self.flush();
    }

    /// Open a new stream to the peer, carried to and from `endpoint`.
    pub fn open(
        &mut self,
        registry: &Registry,
        request: OpenRequest,
        endpoint: Box<dyn Endpoint>,
    ) -> io::Result<u32> {
        let id = self.next_id;
        // Keep the parity on wrap-around (0 is the sandbox stream, never a data stream).
        self.next_id = match self.next_id.wrapping_add(2) {
            0 => 2,
            n => n,
        };
        self.send(id, &Message::Open(request));
        self.streams.insert(id, Stream::new(None));
        self.attach(registry, id, endpoint)?;
        Ok(id)
    }

    /// Connect a stream the peer opened to `endpoint`.
    pub fn attach(
        &mut self,
        registry: &Registry,
        stream: u32,
        mut endpoint: Box<dyn Endpoint>,
    ) -> io::Result<()> {
        let Some(s) = self.streams.get_mut(&stream) else {
            // The peer closed it meanwhile: dropping the endpoint closes it.
            return Ok(());
        };
        registry.register(
            &mut *endpoint,
            Token(FIRST_STREAM_TOKEN + stream as usize),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        s.endpoint = Some(endpoint);
        self.pump(registry, stream);
        self.flush();
        Ok(())
    }

    /// Refuse a stream the peer opened.
    pub fn reject(&mut self, stream: u32, message: String) {
        self.streams.remove(&stream);
        self.send(stream, &Message::OpenFailed { message });
        encode(&mut self.out, stream, FrameKind::Close, &[]);
        self.flush();
    }

    /// Handle one readiness event of the owner's loop; returns what the owner must act on.
    /// Tokens that are neither the channel nor a stream are ignored.
    pub fn handle(&mut self, registry: &Registry, token: Token) -> Vec<MuxEvent> {
        let mut events = Vec::new();
        if token == CHANNEL {
            self.read_channel(registry, &mut events);
            self.flush();
            if self.throttled && self.out.len() < OUT_HIGH_WATER {
                self.throttled = false;
                let ids: Vec<u32> = self.streams.keys().copied().collect();
                for id in ids {
                    self.pump(registry, id);
                }
                self.flush();
            }
        } else if token.0 >= FIRST_STREAM_TOKEN {
            let id = (token.0 - FIRST_STREAM_TOKEN) as u32;
            self.pump(registry, id);
            self.flush();
        }
        if self.closed {
            events.push(MuxEvent::ChannelClosed);
        }
        events
    }

    /// Frames already decoded from bytes read before the mux took over (call once after
    /// [`Mux::new`] when the decoder may hold whole frames).
    pub fn drain_decoded(&mut self, registry: &Registry) -> Vec<MuxEvent> {
        let mut events = Vec::new();
        self.process_frames(registry, &mut events);
        self.flush();
        events
    }

    /// Write what is queued for the channel, as far as it accepts without blocking.
    pub fn flush(&mut self) {
        let mut written = 0;
        while written < self.out.len() && !self.closed {
            match self.chan.write(&self.out[written..]) {
                Ok(0) => self.closed = true,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
        self.out.drain(..written);
    }

    /// Block until everything queued has been written (used by init right before it exits).
    pub fn flush_blocking(&mut self) -> io::Result<()> {
        set_blocking(self.chan.as_raw_fd())?;
        let out = std::mem::take(&mut self.out);
        let r = self.chan.write_all(&out);
        self.chan.flush().ok();
        r
    }

    fn read_channel(&mut self, registry: &Registry, events: &mut Vec<MuxEvent>) {
        let mut buf = [0u8; 64 << 10];
        loop {
            match self.chan.read(&mut buf) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    self.decoder.feed(&buf[..n]);
                    self.process_frames(registry, events);
                    if self.closed {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        if self.closed {
            // The peer is gone: every stream goes with it.
            for (_, mut s) in self.streams.drain() {
                if let Some(ep) = s.endpoint.as_mut() {
                    registry.deregister(&mut **ep).ok();
                }
            }
        }
    }

    fn process_frames(&mut self, registry: &Registry, events: &mut Vec<MuxEvent>) {
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(_) => {
                    // A corrupt channel cannot be resynchronised.
                    self.closed = true;
                    return;
                }
            };
            let id = frame.stream;
            match frame.kind {
                FrameKind::Message => match frame.message() {
                    Ok(Message::Open(request)) if id != 0 && !self.streams.contains_key(&id) => {
                        self.streams.insert(id, Stream::new(None));
                        events.push(MuxEvent::Open {
                            stream: id,
                            request,
                        });
                    }
                    Ok(message @ Message::OpenFailed { .. }) if id != 0 => {
                        // The stream is gone; the opener still learns why.
                        self.remove(registry, id);
                        events.push(MuxEvent::Message {
                            stream: id,
                            message,
                        });
                    }
                    Ok(message) => events.push(MuxEvent::Message {
                        stream: id,
                        message,
                    }),
                    // An unknown message (a newer peer) is skipped, not fatal.
                    Err(_) => {}
                },
                FrameKind::Data => {
                    let Some(s) = self.streams.get_mut(&id) else {
                        continue;
                    };
                    if s.pending.len() + frame.payload.len() > INITIAL_WINDOW as usize {
                        // The peer ignored flow control: drop the stream, keep the channel.
                        self.remove(registry, id);
                        encode(&mut self.out, id, FrameKind::Close, &[]);
                        continue;
                    }
                    s.pending.extend_from_slice(&frame.payload);
                    self.pump(registry, id);
                }
                FrameKind::Eof => {
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.peer_eof = true;
                        self.pump(registry, id);
                    }
                }
                FrameKind::Close => self.remove(registry, id),
                FrameKind::Window => {
                    let Ok(credit) = frame.window() else { continue };
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.credit = s.credit.saturating_add(credit);
                        self.pump(registry, id);
                    }
                }
            }
        }
    }

    /// Move bytes for one stream as far as both sides allow without blocking.
    fn pump(&mut self, registry: &Registry, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(ep) = s.endpoint.as_mut() else {
            return;
        };
        let mut failed = false;
        // Peer → endpoint.
        let mut written = 0;
        while written < s.pending.len() {
            match ep.write(&s.pending[written..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        s.pending.drain(..written);
        s.consumed += written as u32;
        if s.consumed >= WINDOW_BATCH || (s.consumed > 0 && s.pending.is_empty()) {
            encode_window(&mut self.out, id, s.consumed);
            s.consumed = 0;
        }
        if s.peer_eof && s.pending.is_empty() && !s.write_shut && !failed {
            s.write_shut = true;
            ep.shutdown_write().ok();
        }
        // Endpoint → peer.
        let mut buf = [0u8; MAX_DATA];
        while !failed && !s.sent_eof && s.credit > 0 {
            if self.out.len() >= OUT_HIGH_WATER {
                self.throttled = true;
                break;
            }
            let want = (s.credit as usize).min(MAX_DATA);
            match ep.read(&mut buf[..want]) {
                Ok(0) => {
                    s.sent_eof = true;
                    encode(&mut self.out, id, FrameKind::Eof, &[]);
                }
                Ok(n) => {
                    s.credit -= n as u32;
                    encode(&mut self.out, id, FrameKind::Data, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => failed = true,
            }
        }
        if failed {
            self.remove(registry, id);
            encode(&mut self.out, id, FrameKind::Close, &[]);
        } else if s.sent_eof && s.write_shut {
            // Both directions finished: the stream is done on this side; the peer reaches the
            // same state from the frames it has.
            self.remove(registry, id);
        }
    }

    fn remove(&mut self, registry: &Registry, id: u32) {
        if let Some(mut s) = self.streams.remove(&id) {
            if let Some(ep) = s.endpoint.as_mut() {
                registry.deregister(&mut **ep).ok();
            }
        }
    }
}

fn set_blocking(fd: std::os::fd::RawFd) -> io::Result<()> {
    crate::sys::fd::set_nonblocking(fd, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::os::unix::net::UnixStream as StdUnix;
    use std::time::{Duration, Instant};

    /// One end: a poll, a mux, and the events it produced.
    struct End {
        poll: Poll,
        mux: Mux,
        got: Vec<MuxEvent>,
    }

    impl End {
        fn new(chan: StdUnix, odd: bool) -> End {
            let poll = Poll::new().unwrap();
            let mux = Mux::new(chan, Decoder::new(), odd, poll.registry()).unwrap();
            End {
                poll,
                mux,
                got: Vec::new(),
            }
        }
        fn turn(&mut self) {
            let mut events = Events::with_capacity(64);
            self.poll
                .poll(&mut events, Some(Duration::from_millis(5)))
                .unwrap();
            for e in events.iter() {
                let evs = self.mux.handle(self.poll.registry(), e.token());
                self.got.extend(evs);
            }
        }
    }

    fn pair() -> (StdUnix, StdUnix) {
        StdUnix::pair().unwrap()
    }

    #[test]
    fn bytes_cross_a_stream_both_ways_with_half_close() {
        let (a, b) = pair();
        let mut host = End::new(a, false);
        let mut init = End::new(b, true);
        // Local endpoints: the "application" ends are plain std sockets we drive by hand.
        let (app_init, ep_init) = pair();
        ep_init.set_nonblocking(true).unwrap();
        let id = init
            .mux
            .open(
                init.poll.registry(),
                OpenRequest::EngineLink,
                Box::new(mio::net::UnixStream::from_std(ep_init)),
            )
            .unwrap();
        assert_eq!(id % 2, 1);
        let (app_host, ep_host) = pair();
        ep_host.set_nonblocking(true).unwrap();
        let mut ep_host = Some(ep_host);
        let payload: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let send = payload.clone();
        let mut app_init_w = app_init.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            app_init_w.write_all(&send).unwrap();
            app_init_w.shutdown(Shutdown::Write).unwrap();
        });
        let mut app_host_r = app_host.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            app_host_r.read_to_end(&mut v).unwrap();
            v
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while !reader.is_finished() && Instant::now() < deadline {
            init.turn();
            host.turn();
            for ev in host.got.drain(..) {
                if let MuxEvent::Open { stream, request } = ev {
                    assert_eq!(request, OpenRequest::EngineLink);
                    let ep = mio::net::UnixStream::from_std(ep_host.take().unwrap());
                    host.mux
                        .attach(host.poll.registry(), stream, Box::new(ep))
                        .unwrap();
                }
            }
        }
        writer.join().unwrap();
        let got = reader.join().unwrap();
        assert!(got == payload, "stream corrupted: {} bytes", got.len());
        // The other direction still works after the first half-closed.
        (&app_host).write_all(b"reply").unwrap();
        app_host.shutdown(Shutdown::Write).unwrap();
        let mut app_init_r = app_init;
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            app_init_r.read_to_end(&mut v).unwrap();
            v
        });
        while !reader.is_finished() && Instant::now() < deadline {
            init.turn();
            host.turn();
        }
        assert_eq!(reader.join().unwrap(), b"reply");
        for _ in 0..5 {
            init.turn();
            host.turn();
        }
        assert_eq!(init.mux.stream_count(), 0);
        assert_eq!(host.mux.stream_count(), 0);
    }

    #[test]
    fn a_slow_reader_bounds_what_the_sender_buffers() {
        let (a, b) = pair();
        let mut host = End::new(a, false);
        let mut init = End::new(b, true);
        let (app_init, ep_init) = pair();
        ep_init.set_nonblocking(true).unwrap();
        init.mux
            .open(
                init.poll.registry(),
                OpenRequest::EngineLink,
                Box::new(mio::net::UnixStream::from_std(ep_init)),
            )
            .unwrap();
        // Nobody reads the host application's end: the host endpoint socket buffer fills.
        let (_app_host, ep_host) = pair();
        ep_host.set_nonblocking(true).unwrap();
        let mut ep_host = Some(ep_host);
        app_init.set_nonblocking(true).unwrap();
        let mut sent = 0usize;
        let chunk = vec![0x5au8; 64 << 10];
        for _ in 0..400 {
            while let Ok(n) = (&app_init).write(&chunk) {
                sent += n;
            }
            init.turn();
            host.turn();
            for ev in host.got.drain(..) {
                if let MuxEvent::Open { stream, .. } = ev {
                    let ep = mio::net::UnixStream::from_std(ep_host.take().unwrap());
                    host.mux
                        .attach(host.poll.registry(), stream, Box::new(ep))
                        .unwrap();
                }
            }
        }
        // Everything in flight is bounded by socket buffers plus one window, not by `sent`.
        let s = host.mux.streams.values().next().expect("stream alive");
        assert!(s.pending.len() <= INITIAL_WINDOW as usize);
        assert!(init.mux.out.len() <= INITIAL_WINDOW as usize + 64);
        let i = init.mux.streams.values().next().expect("stream alive");
        assert_eq!(i.credit, 0, "sender must have exhausted its credit");
        assert!(sent < 16 << 20, "writer was never blocked: {sent} bytes");
    }

    #[test]
    fn peer_going_away_closes_the_channel_and_its_streams() {
        let (a, b) = pair();
        let mut host = End::new(a, false);
        drop(b);
        host.turn();
        assert!(host.got.contains(&MuxEvent::ChannelClosed));
        assert!(host.mux.is_closed());
    }

    #[test]
    fn messages_and_rejected_opens_reach_the_other_side() {
        let (a, b) = pair();
        let mut host = End::new(a, false);
        let mut init = End::new(b, true);
        host.mux.send(0, &Message::Signal { signal: 15 });
        let (_app, ep) = pair();
        ep.set_nonblocking(true).unwrap();
        let id = init
            .mux
            .open(
                init.poll.registry(),
                OpenRequest::EngineLink,
                Box::new(mio::net::UnixStream::from_std(ep)),
            )
            .unwrap();
        for _ in 0..5 {
            init.turn();
            host.turn();
        }
        assert!(init.got.contains(&MuxEvent::Message {
            stream: 0,
            message: Message::Signal { signal: 15 }
        }));
        assert!(host.got.contains(&MuxEvent::Open {
            stream: id,
            request: OpenRequest::EngineLink
        }));
        host.mux.reject(id, "engine down".into());
        for _ in 0..5 {
            init.turn();
            host.turn();
        }
        assert_eq!(init.mux.stream_count(), 0);
        assert!(init.got.contains(&MuxEvent::Message {
            stream: id,
            message: Message::OpenFailed {
                message: "engine down".into()
            }
        }));
    }
}
