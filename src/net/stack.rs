//! The user-mode network of one worker: its virtual NIC's frames on one side, ordinary host
//! sockets on the other, on one thread and one `mio` loop.
//!
//! - TCP: a SYN from the worker is held while the host connects to the destination (as the
//!   policy allows). If the host connect fails, the worker gets what a real network would
//!   have said — a reset (connection refused) or an ICMP unreachable — at once. If it succeeds,
//!   a smoltcp socket is opened listening on that destination and the SYN handed to it, so the
//!   worker's connection is terminated by smoltcp and its bytes are shuttled to the host
//!   socket and back, with each side's close, half-close and reset passed on.
//! - UDP: datagrams are relayed through one connected host socket per flow (idle ones are
//!   closed), and the replies written back as datagrams from the address the worker used.
//! - DNS to the gateway is answered by [`super::dns`]; ICMP to the gateway (ping) by smoltcp.
//!   Anything else (other protocols, fragments, frames not from the worker's address) is
//!   dropped.
//!
//! Bounded: at most [`MAX_TCP`] connections and [`MAX_UDP`] UDP flows, fixed socket buffers,
//! and a bounded number of frames read per loop turn; nothing queues without limit.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, Icmpv4DstUnreachable,
    IpAddress, IpCidr, IpListenEndpoint, IpProtocol, Ipv4Packet, TcpPacket, TcpSeqNumber,
    UdpPacket, ETHERNET_HEADER_LEN,
};

use super::dns::{self, Resolver};
use super::link::Ipv4Setup;
use super::packet::{self, Macs};
use super::policy::{Policy, Verdict};

/// Connections a worker may have open at once (more are refused with a reset).
pub const MAX_TCP: usize = 1024;
/// UDP flows kept at once (the idlest is closed to make room).
pub const MAX_UDP: usize = 256;
/// smoltcp socket buffer, each direction, per connection.
const TCP_BUFFER: usize = 256 << 10;
const UDP_IDLE: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Frames read from the NIC per loop turn before the rest of the loop runs.
const READ_BUDGET: usize = 512;

const FRAMES: Token = Token(0);
const WAKER: Token = Token(1);

/// The gateway's Ethernet address (locally administered).
pub const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);

/// How a worker's network runs.
pub struct Settings {
    pub setup: Ipv4Setup,
    pub policy: Policy,
    /// A line for the worker's log (refused destinations, once each).
    pub log: Box<dyn Fn(&str) + Send>,
}

/// A running network thread; stopped (and joined) on drop.
pub struct Network {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Network {
    /// Serve the NIC whose frames `frames` reads and writes (a TAP fd, or one end of a
    /// datagram socket pair: one frame per read or write; made non-blocking here).
    pub fn start(frames: OwnedFd, settings: Settings) -> io::Result<Network> {
        // The thread polls for frames: a read must never block it (a TAP is made
        // non-blocking; a socket handed over may not be).
        crate::sys::fd::set_nonblocking(frames.as_raw_fd(), true)?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        poll.registry().register(
            &mut mio::unix::SourceFd(&frames.as_raw_fd()),
            FRAMES,
            Interest::READABLE,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let wake = {
            let w = waker.clone();
            Arc::new(move || {
                let _ = w.wake();
            }) as Arc<dyn Fn() + Send + Sync>
        };
        let resolver = Resolver::start(wake)?;
        let mut stack = Stack::new(poll, File::from(frames), settings, resolver);
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("network".into())
            .spawn(move || stack.run(&s))?;
        Ok(Network {
            waker,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// smoltcp's view of the NIC: frames we hand it, frames it wants sent.
struct Queue {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    mtu: usize,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0u8; len];
        let r = f(&mut b);
        self.0.push(b);
        r
    }
}

impl Device for Queue {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((Rx(f), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.mtu + ETHERNET_HEADER_LEN;
        c
    }
}

/// A worker's connection or UDP flow: its port and where it goes.
type Key = (u16, Ipv4Addr, u16);

enum TcpState {
    /// The host connect is in progress; the worker's SYN waits.
    Connecting {
        syn: Vec<u8>,
        since: Instant,
        loopback: bool,
    },
    Open {
        handle: SocketHandle,
        readable: bool,
        writable: bool,
        host_eof: bool,
        host_shut: bool,
        since: Instant,
    },
}

struct TcpFlow {
    host: TcpStream,
    token: Token,
    state: TcpState,
}

struct UdpFlow {
    sock: UdpSocket,
    token: Token,
    last: Instant,
    /// Where replies come from, as the worker addressed it.
    from: (Ipv4Addr, u16),
}

enum Owner {
    Tcp(Key),
    Udp(Key),
}

struct Stack {
    poll: Poll,
    frames: File,
    iface: Interface,
    sockets: SocketSet<'static>,
    q: Queue,
    setup: Ipv4Setup,
    policy: Policy,
    log: Box<dyn Fn(&str) + Send>,
    resolver: Resolver,
    worker_mac: Option<EthernetAddress>,
    tcp: HashMap<Key, TcpFlow>,
    udp: HashMap<Key, UdpFlow>,
    owners: HashMap<Token, Owner>,
    next_token: usize,
    start: Instant,
    frames_ready: bool,
    write_errors: u32,
}

fn now_since(start: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(start.elapsed().as_micros() as i64)
}

impl Stack {
    fn new(poll: Poll, frames: File, settings: Settings, resolver: Resolver) -> Stack {
        let mut q = Queue {
            rx: VecDeque::new(),
            tx: Vec::new(),
            mtu: settings.setup.mtu as usize,
        };
        let start = Instant::now();
        let config = Config::new(HardwareAddress::Ethernet(GATEWAY_MAC));
        let mut iface = Interface::new(config, &mut q, now_since(start));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(
                IpAddress::Ipv4(settings.setup.gateway),
                settings.setup.prefix,
            ));
        });
        // Accept packets to any address routed through the gateway: every destination the
        // worker connects to is terminated here.
        iface.set_any_ip(true);
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(settings.setup.gateway);
        Stack {
            poll,
            frames,
            iface,
            sockets: SocketSet::new(Vec::new()),
            q,
            setup: settings.setup,
            policy: settings.policy,
            log: settings.log,
            resolver,
            worker_mac: None,
            tcp: HashMap::new(),
            udp: HashMap::new(),
            owners: HashMap::new(),
            next_token: 2,
            start,
            frames_ready: true,
            write_errors: 0,
        }
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn macs(&self) -> Option<Macs> {
        self.worker_mac.map(|worker| Macs {
            gateway: GATEWAY_MAC,
            worker,
        })
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(256);
        let mut next_sweep = Instant::now() + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            let mut timeout = next_sweep.saturating_duration_since(now);
            if let Some(d) = self.iface.poll_delay(now_since(self.start), &self.sockets) {
                timeout = timeout.min(Duration::from_micros(d.total_micros()));
            }
            if self.frames_ready {
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    (self.log)(&format!("network: event loop: {e}"));
                    return;
                }
            }
            let mut udp_ready = Vec::new();
            for ev in events.iter() {
                match ev.token() {
                    FRAMES => self.frames_ready = true,
                    WAKER => {}
                    t => match self.owners.get(&t) {
                        Some(Owner::Tcp(k)) => {
                            let k = *k;
                            self.tcp_event(
                                k,
                                ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                                ev.is_writable() || ev.is_error(),
                            );
                        }
                        Some(Owner::Udp(k)) => udp_ready.push(*k),
                        None => {}
                    },
                }
            }
            if stop.load(Ordering::SeqCst) {
                return;
            }
            if self.frames_ready {
                self.read_frames();
            }
            while let Ok(a) = self.resolver.answers.try_recv() {
                self.resolver.pending = self.resolver.pending.saturating_sub(1);
                if let Some((name, ips)) = &a.learned {
                    self.policy.learn(name, ips);
                }
                self.send_udp_to_worker((self.setup.gateway, 53), a.port, &a.reply);
            }
            for k in udp_ready {
                self.udp_readable(k);
            }
            for _ in 0..16 {
                self.iface
                    .poll(now_since(self.start), &mut self.q, &mut self.sockets);
                let progressed = self.pump();
                self.write_frames();
                if !progressed && self.q.rx.is_empty() {
                    break;
                }
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + Duration::from_secs(1);
            }
        }
    }

    // --- the NIC ---

    fn read_frames(&mut self) {
        let mut buf = vec![0u8; self.setup.mtu as usize + ETHERNET_HEADER_LEN + 4];
        for _ in 0..READ_BUDGET {
            match self.frames.read(&mut buf) {
                Ok(0) => {
                    self.frames_ready = false;
                    return;
                }
                Ok(n) => self.on_frame(buf[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.frames_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The NIC is gone (the sandbox ended): nothing more will come.
                    self.frames_ready = false;
                    return;
                }
            }
        }
    }

    fn write_frames(&mut self) {
        for f in std::mem::take(&mut self.q.tx) {
            self.write_frame(&f);
        }
    }

    fn write_frame(&mut self, f: &[u8]) {
        match self.frames.write(f) {
            Ok(_) => {}
            // The NIC's queue is full: drop it (TCP resends; UDP may lose, as on a wire).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                self.write_errors += 1;
                if self.write_errors == 1 {
                    (self.log)(&format!("network: writing to the worker's NIC: {e}"));
                }
            }
        }
    }

    fn on_frame(&mut self, frame: Vec<u8>) {
        let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else {
            return;
        };
        match eth.ethertype() {
            EthernetProtocol::Arp => self.q.rx.push_back(frame),
            EthernetProtocol::Ipv4 => {
                let src_mac = eth.src_addr();
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                    return;
                };
                if ip.src_addr() != self.setup.address || ip.more_frags() || ip.frag_offset() != 0 {
                    return;
                }
                if src_mac.is_unicast() {
                    self.worker_mac = Some(src_mac);
                }
                let dst = ip.dst_addr();
                match ip.next_header() {
                    IpProtocol::Tcp => self.on_tcp(frame),
                    IpProtocol::Udp => self.on_udp(&frame),
                    IpProtocol::Icmp if dst == self.setup.gateway => self.q.rx.push_back(frame),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    // --- TCP ---

    fn on_tcp(&mut self, frame: Vec<u8>) {
        let (key, syn, seq) = {
            let eth = EthernetFrame::new_unchecked(&frame[..]);
            let ip = Ipv4Packet::new_unchecked(eth.payload());
            let Ok(t) = TcpPacket::new_checked(ip.payload()) else {
                return;
            };
            (
                (t.src_port(), ip.dst_addr(), t.dst_port()),
                t.syn() && !t.ack(),
                t.seq_number(),
            )
        };
        match self.tcp.get(&key).map(|f| &f.state) {
            Some(TcpState::Connecting { .. }) => {} // a resent SYN: the first one waits
            Some(TcpState::Open { .. }) => self.q.rx.push_back(frame),
            None if syn => self.new_connection(key, frame, seq),
            // No connection: smoltcp answers it with a reset.
            None => self.q.rx.push_back(frame),
        }
    }

    fn refuse_tcp(&mut self, key: Key, seq: TcpSeqNumber, why: Option<&str>) {
        if let Some(why) = why {
            if self.policy.first_refusal(key.1, key.2) {
                (self.log)(&format!(
                    "network: connection to {}:{} refused: {why}",
                    key.1, key.2
                ));
            }
        }
        if let Some(m) = self.macs() {
            let f = packet::tcp_reset(m, (self.setup.address, key.0), (key.1, key.2), seq);
            self.write_frame(&f);
        }
    }

    fn new_connection(&mut self, key: Key, syn: Vec<u8>, seq: TcpSeqNumber) {
        if self.tcp.len() >= MAX_TCP {
            return self.refuse_tcp(key, seq, Some("too many connections open"));
        }
        let (target, loopback) = match self.policy.check(key.1, key.2) {
            Verdict::Deny(why) => return self.refuse_tcp(key, seq, Some(&why)),
            Verdict::HostLoopback(p) => (SocketAddrV4::new(Ipv4Addr::LOCALHOST, p), true),
            Verdict::Allow => (SocketAddrV4::new(key.1, key.2), false),
        };
        let mut host = match TcpStream::connect(SocketAddr::V4(target)) {
            Ok(s) => s,
            Err(e) => return self.connect_failed(key, &syn, seq, &e),
        };
        let token = self.token();
        if self
            .poll
            .registry()
            .register(&mut host, token, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            return self.refuse_tcp(key, seq, None);
        }
        self.owners.insert(token, Owner::Tcp(key));
        self.tcp.insert(
            key,
            TcpFlow {
                host,
                token,
                state: TcpState::Connecting {
                    syn,
                    since: Instant::now(),
                    loopback,
                },
            },
        );
    }

    /// Tell the worker its connect failed the way the host's did.
    fn connect_failed(&mut self, key: Key, syn: &[u8], seq: TcpSeqNumber, e: &io::Error) {
        let icmp = match e.kind() {
            io::ErrorKind::HostUnreachable | io::ErrorKind::TimedOut => {
                Some(Icmpv4DstUnreachable::HostUnreachable)
            }
            io::ErrorKind::NetworkUnreachable => Some(Icmpv4DstUnreachable::NetUnreachable),
            _ => None,
        };
        match (icmp, self.macs()) {
            (Some(reason), Some(m)) => {
                if let Some(f) =
                    packet::unreachable(m, self.setup.gateway, reason, &syn[ETHERNET_HEADER_LEN..])
                {
                    self.write_frame(&f);
                }
            }
            _ => self.refuse_tcp(key, seq, None),
        }
    }

    fn tcp_event(&mut self, key: Key, readable: bool, writable: bool) {
        let Some(f) = self.tcp.get_mut(&key) else {
            return;
        };
        match &mut f.state {
            TcpState::Open {
                readable: r,
                writable: w,
                ..
            } => {
                *r |= readable;
                *w |= writable;
            }
            TcpState::Connecting { .. } if writable || readable => self.connected(key),
            TcpState::Connecting { .. } => {}
        }
    }

    /// A host connect finished (either way).
    fn connected(&mut self, key: Key) {
        let Some(f) = self.tcp.get_mut(&key) else {
            return;
        };
        let outcome = match f.host.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match f.host.peer_addr() {
                Ok(peer) => Ok(peer),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
                Err(e) => Err(e),
            },
        };
        let TcpState::Connecting { syn, loopback, .. } = &f.state else {
            return;
        };
        let (syn, loopback) = (syn.clone(), *loopback);
        let seq = {
            let eth = EthernetFrame::new_unchecked(&syn[..]);
            let ip = Ipv4Packet::new_unchecked(eth.payload());
            TcpPacket::new_unchecked(ip.payload()).seq_number()
        };
        let peer = match outcome {
            Ok(p) => p,
            Err(e) => {
                self.drop_tcp(key, false);
                return self.connect_failed(key, &syn, seq, &e);
            }
        };
        // The host's own addresses are closed unless the allow list names them: a connect
        // to one comes from that very address.
        let own = !loopback
            && f.host.local_addr().is_ok_and(|l| l.ip() == peer.ip())
            && !self.policy.host_address_allowed(key.1, key.2);
        if own {
            self.drop_tcp(key, false);
            return self.refuse_tcp(key, seq, Some("it is an address of the host"));
        }
        let _ = f.host.set_nodelay(true);
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        if sock
            .listen(IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(key.1)),
                port: key.2,
            })
            .is_err()
        {
            self.drop_tcp(key, false);
            return self.refuse_tcp(key, seq, None);
        }
        let handle = self.sockets.add(sock);
        let f = self.tcp.get_mut(&key).expect("present");
        f.state = TcpState::Open {
            handle,
            readable: true,
            writable: true,
            host_eof: false,
            host_shut: false,
            since: Instant::now(),
        };
        self.q.rx.push_back(syn);
    }

    /// Forget a connection; `reset` closes the host side with a reset instead of a FIN.
    fn drop_tcp(&mut self, key: Key, reset: bool) {
        if let Some(mut f) = self.tcp.remove(&key) {
            let _ = self.poll.registry().deregister(&mut f.host);
            self.owners.remove(&f.token);
            if reset {
                let _ = set_linger_zero(&f.host);
            }
            if let TcpState::Open { handle, .. } = f.state {
                self.sockets.remove(handle);
            }
        }
    }

    /// Move bytes between every open connection's smoltcp socket and host socket. Whether
    /// anything moved.
    fn pump(&mut self) -> bool {
        let mut progressed = false;
        let mut done: Vec<(Key, bool)> = Vec::new();
        for (key, f) in self.tcp.iter_mut() {
            let TcpState::Open {
                handle,
                readable,
                writable,
                host_eof,
                host_shut,
                since,
            } = &mut f.state
            else {
                continue;
            };
            let sock = self.sockets.get_mut::<tcp::Socket>(*handle);
            let mut broken = false;
            // Worker → host.
            while *writable && sock.can_recv() {
                let host = &mut f.host;
                match sock.recv(|b| match host.write(b) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                }) {
                    Ok(Ok(0)) | Err(_) => break,
                    Ok(Ok(_)) => progressed = true,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => *writable = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(_)) => {
                        broken = true;
                        break;
                    }
                }
            }
            let state = sock.state();
            let worker_closed = matches!(
                state,
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
            );
            if worker_closed && !*host_shut && sock.recv_queue() == 0 {
                let _ = f.host.shutdown(std::net::Shutdown::Write);
                *host_shut = true;
            }
            // Host → worker.
            while *readable && !*host_eof && !broken && sock.can_send() {
                let host = &mut f.host;
                match sock.send(|b| match host.read(b) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                }) {
                    Ok(Ok(0)) => {
                        *host_eof = true;
                        sock.close();
                        progressed = true;
                    }
                    Ok(Ok(_)) => progressed = true,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => *readable = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(_)) => broken = true,
                    Err(_) => break,
                }
            }
            if broken {
                // The remote reset (or the host socket failed): reset the worker's side too.
                sock.abort();
                progressed = true;
                done.push((*key, true));
                continue;
            }
            match sock.state() {
                tcp::State::Closed | tcp::State::TimeWait => {
                    // A worker that reset its side resets the remote's too.
                    let reset = !(*host_eof && *host_shut);
                    done.push((*key, reset));
                }
                tcp::State::Listen if since.elapsed() > Duration::from_secs(5) => {
                    done.push((*key, true));
                }
                _ => {}
            }
        }
        if !done.is_empty() {
            // Let smoltcp send what the aborts queued before the sockets go.
            self.iface
                .poll(now_since(self.start), &mut self.q, &mut self.sockets);
            for (key, reset) in done {
                self.drop_tcp(key, reset);
            }
        }
        progressed
    }

    // --- UDP ---

    fn on_udp(&mut self, frame: &[u8]) {
        let eth = EthernetFrame::new_unchecked(frame);
        let ip = Ipv4Packet::new_unchecked(eth.payload());
        let Ok(u) = UdpPacket::new_checked(ip.payload()) else {
            return;
        };
        let key: Key = (u.src_port(), ip.dst_addr(), u.dst_port());
        if key.1 == self.setup.gateway && key.2 == 53 {
            let job = dns::Job {
                port: key.0,
                query: u.payload().to_vec(),
            };
            if let Some(reply) = self.resolver.submit(job) {
                self.send_udp_to_worker((self.setup.gateway, 53), key.0, &reply);
            }
            return;
        }
        let original = ip.into_inner().to_vec();
        let payload = u.payload().to_vec();
        if !self.udp.contains_key(&key) {
            let target = match self.policy.check(key.1, key.2) {
                Verdict::Deny(why) => {
                    if self.policy.first_refusal(key.1, key.2) {
                        (self.log)(&format!(
                            "network: UDP to {}:{} refused: {why}",
                            key.1, key.2
                        ));
                    }
                    return self.udp_unreachable(&original, Icmpv4DstUnreachable::CommProhibited);
                }
                Verdict::HostLoopback(p) => SocketAddrV4::new(Ipv4Addr::LOCALHOST, p),
                Verdict::Allow => SocketAddrV4::new(key.1, key.2),
            };
            if self.udp.len() >= MAX_UDP {
                if let Some(oldest) = self.udp.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k) {
                    self.drop_udp(oldest);
                }
            }
            let Ok(std_sock) = std::net::UdpSocket::bind("0.0.0.0:0") else {
                return;
            };
            if std_sock.connect(target).is_err() || std_sock.set_nonblocking(true).is_err() {
                return self.udp_unreachable(&original, Icmpv4DstUnreachable::NetUnreachable);
            }
            let mut sock = UdpSocket::from_std(std_sock);
            let token = self.token();
            if self
                .poll
                .registry()
                .register(&mut sock, token, Interest::READABLE)
                .is_err()
            {
                return;
            }
            self.owners.insert(token, Owner::Udp(key));
            self.udp.insert(
                key,
                UdpFlow {
                    sock,
                    token,
                    last: Instant::now(),
                    from: (key.1, key.2),
                },
            );
        }
        let f = self.udp.get_mut(&key).expect("present");
        f.last = Instant::now();
        match f.sock.send(&payload) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                self.udp_unreachable(&original, Icmpv4DstUnreachable::PortUnreachable)
            }
            // A full socket buffer (a flood): the datagram is dropped.
            Err(_) => {}
        }
    }

    fn udp_unreachable(&mut self, original: &[u8], reason: Icmpv4DstUnreachable) {
        if let Some(m) = self.macs() {
            if let Some(f) = packet::unreachable(m, self.setup.gateway, reason, original) {
                self.write_frame(&f);
            }
        }
    }

    fn udp_readable(&mut self, key: Key) {
        let mut buf = vec![0u8; 65_536];
        for _ in 0..256 {
            let Some(f) = self.udp.get_mut(&key) else {
                return;
            };
            match f.sock.recv(&mut buf) {
                Ok(n) => {
                    f.last = Instant::now();
                    let from = f.from;
                    let data = buf[..n].to_vec();
                    self.send_udp_to_worker(from, key.0, &data);
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // The destination said "port unreachable" to the host; say it on.
                    if let Some(m) = self.macs() {
                        let probe = packet::udp(
                            Macs {
                                gateway: m.worker,
                                worker: m.gateway,
                            },
                            (self.setup.address, key.0),
                            (key.1, key.2),
                            &[],
                        );
                        self.udp_unreachable(
                            &probe[ETHERNET_HEADER_LEN..],
                            Icmpv4DstUnreachable::PortUnreachable,
                        );
                    }
                }
                Err(_) => return,
            }
        }
    }

    fn send_udp_to_worker(&mut self, from: (Ipv4Addr, u16), port: u16, data: &[u8]) {
        let max = self.setup.mtu as usize - 28;
        if data.len() > max {
            return; // would need IP fragmentation, which this stack does not do
        }
        if let Some(m) = self.macs() {
            let f = packet::udp(m, from, (self.setup.address, port), data);
            self.write_frame(&f);
        }
    }

    fn drop_udp(&mut self, key: Key) {
        if let Some(mut f) = self.udp.remove(&key) {
            let _ = self.poll.registry().deregister(&mut f.sock);
            self.owners.remove(&f.token);
        }
    }

    /// Once a second: connects that take too long, UDP flows idle too long.
    fn sweep(&mut self, now: Instant) {
        let slow: Vec<Key> = self
            .tcp
            .iter()
            .filter(|(_, f)| matches!(f.state, TcpState::Connecting { since, .. } if now.duration_since(since) > CONNECT_TIMEOUT))
            .map(|(k, _)| *k)
            .collect();
        for key in slow {
            let syn = match &self.tcp[&key].state {
                TcpState::Connecting { syn, .. } => syn.clone(),
                TcpState::Open { .. } => continue,
            };
            self.drop_tcp(key, false);
            let e = io::Error::from(io::ErrorKind::TimedOut);
            self.connect_failed(key, &syn, TcpSeqNumber(0), &e);
        }
        let idle: Vec<Key> = self
            .udp
            .iter()
            .filter(|(_, f)| now.duration_since(f.last) > UDP_IDLE)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            self.drop_udp(key);
        }
    }
}

/// Close with a reset rather than a FIN (SO_LINGER with a zero timeout).
fn set_linger_zero(s: &TcpStream) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from `&l`, a live local.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
