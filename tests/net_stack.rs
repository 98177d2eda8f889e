//! The user-mode network stack against real kernels on both sides: a "worker" network
//! namespace whose only NIC is a TAP device served by `iii::net::Network` in this (host)
//! process, and a "remote host" in a network namespace of its own, reachable from the host
//! only over a veth pair on a private /30. Clients run inside the worker namespace (`ip netns
//! exec`), servers inside the remote one; every byte goes worker → smoltcp → host socket →
//! veth → remote and back. Namespaces, links, routes and processes are removed in Drop guards.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/netns.rs"]
mod netns;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use iii::net::policy::{Policy, Rule};
use iii::net::{Network, Settings, GATEWAY};
use netns::Lab;

/// Held by the tests that count this process's open fds, so that one's connections do not
/// read as the other's leak (the other tests hold a handful of fds at most).
static FD_COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What the stack wrote to the worker's log.
type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A lab with the worker's NIC served by a stack with `allow` / `host_ports`.
fn lab(
    tag: &str,
    allow: Option<&[&str]>,
    host_ports: Vec<u16>,
    engine_port: u16,
) -> Option<(Lab, Network, Log)> {
    let lab = match Lab::new(tag) {
        Ok(l) => l,
        Err(why) => {
            skip!("{why}");
            return None;
        }
    };
    let tap = lab.worker_tap().expect("the worker's TAP device");
    let allow = allow.map(|a| a.iter().map(|r| Rule::parse(r).unwrap()).collect());
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l2 = log.clone();
    let net = Network::start(
        tap,
        Settings {
            setup: iii::net::worker_setup(),
            policy: Policy::new(allow, host_ports, engine_port, GATEWAY),
            log: Box::new(move |line| l2.lock().unwrap().push(line.to_string())),
        },
    )
    .expect("starting the network");
    Some((lab, net, log))
}

const TCP_CLIENT: &str = r#"
import hashlib, socket, sys, time
host, port, mode, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
t0 = time.time()
s = socket.create_connection((host, port), timeout=30)
if mode == "get":
    s.sendall(f"SEND {n}\n".encode())
    h = hashlib.sha256(); got = 0
    while True:
        b = s.recv(1 << 20)
        if not b: break
        h.update(b); got += len(b)
    print(got, h.hexdigest(), round(time.time() - t0, 3))
else:
    s.sendall(f"RECV {n}\n".encode())
    h = hashlib.sha256(); block = bytes(range(256)) * 4096; left = n
    while left:
        b = block[:min(left, len(block))]; s.sendall(b); h.update(b); left -= len(b)
    s.shutdown(socket.SHUT_WR)
    print(s.recv(200).decode().strip(), h.hexdigest(), round(time.time() - t0, 3))
"#;

const TCP_SERVER: &str = r#"
import hashlib, socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(64)
print("ready", flush=True)
block = bytes(range(256)) * 4096
def serve(c):
    f = c.makefile("rb")
    cmd, n = f.readline().split(); n = int(n)
    if cmd == b"SEND":
        left = n
        while left:
            b = block[:min(left, len(block))]; c.sendall(b); left -= len(b)
    else:
        h = hashlib.sha256(); left = n
        while left:
            b = f.read(min(left, 1 << 20))
            if not b: break
            h.update(b); left -= len(b)
        c.sendall(f"{n - left}\n".encode())
    c.close()
while True:
    c, _ = srv.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn sha_of_pattern(n: usize) -> String {
    use sha2::Digest;
    let block: Vec<u8> = (0..=255u8).cycle().take(256 * 4096).collect();
    let mut h = sha2::Sha256::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len());
        h.update(&block[..k]);
        left -= k;
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The worker fetches `n` bytes of the pattern from the remote's TCP_SERVER on port 9000:
/// checked byte for byte; the seconds it took.
fn fetch(lab: &Lab, n: usize) -> f64 {
    let out = lab.worker_run(
        &[
            "python3",
            "-c",
            TCP_CLIENT,
            &lab.remote_ip.to_string(),
            "9000",
            "get",
            &n.to_string(),
        ],
        120,
    );
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f[0], n.to_string(), "{out}");
    assert_eq!(f[1], sha_of_pattern(n), "remote → worker bytes differ");
    f[2].parse().unwrap()
}

#[test]
fn tcp_100_mb_both_ways_byte_exact() {
    let Some((lab, _net, _log)) = lab("bulk", None, vec![], 1) else {
        return;
    };
    let _srv = lab.remote_spawn(&["python3", "-c", TCP_SERVER, "0.0.0.0", "9000"], "ready");
    let n = 100 << 20;
    let secs = fetch(&lab, n);
    eprintln!("remote → worker: 100 MiB in {secs} s");
    let out = lab.worker_run(
        &[
            "python3",
            "-c",
            TCP_CLIENT,
            &lab.remote_ip.to_string(),
            "9000",
            "put",
            &n.to_string(),
        ],
        120,
    );
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        f[0],
        n.to_string(),
        "the remote got a different byte count: {out}"
    );
    eprintln!("worker → remote: 100 MiB in {} s", f[2]);
}

const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(65535); s.sendto(b"echo:" + d, a)
"#;

#[test]
fn udp_round_trip_and_dns_through_the_gateway() {
    let Some((lab, _net, _log)) = lab("udp", None, vec![], 1) else {
        return;
    };
    let _echo = lab.remote_spawn(&["python3", "-c", UDP_ECHO, "9001"], "ready");
    let out = lab.worker_run(
        &[
            "python3",
            "-c",
            r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
for i in range(3):
    s.sendto(b"ping%d" % i, (sys.argv[1], 9001)); print(s.recvfrom(100)[0].decode())
"#,
            &lab.remote_ip.to_string(),
        ],
        30,
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["echo:ping0", "echo:ping1", "echo:ping2"]
    );
    // A raw A query for "localhost" (the host's /etc/hosts answers it) to the gateway.
    let out = lab.worker_run(
        &["python3", "-c", r#"
import socket, struct
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"\x09localhost\x00" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(q, ("10.0.2.2", 53)); r = s.recv(512)
ident, flags, qd, an = struct.unpack(">HHHH", r[:8])
print(hex(ident), flags & 0xf, an, ".".join(str(b) for b in r[-4:]))
"#],
        30,
    );
    assert_eq!(out.trim(), "0x4242 0 1 127.0.0.1", "{out}");
}

const CONNECT: &str = r#"
import errno, socket, sys, time
t0 = time.time()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20).close(); r = "ok"
except OSError as e:
    r = errno.errorcode.get(e.errno, str(e))
print(r, round(time.time() - t0, 2))
"#;

fn connect(lab: &Lab, host: &str, port: u16) -> (String, f64) {
    let out = lab.worker_run(&["python3", "-c", CONNECT, host, &port.to_string()], 40);
    let mut f = out.split_whitespace();
    (
        f.next().unwrap_or("").to_string(),
        f.next().and_then(|s| s.parse().ok()).unwrap_or(99.0),
    )
}

#[test]
fn refused_and_unreachable_are_told_at_once() {
    let Some((mut lab, _net, _log)) = lab("errors", None, vec![], 1) else {
        return;
    };
    let (r, secs) = connect(&lab, &lab.remote_ip.to_string(), 9999);
    assert_eq!(r, "ECONNREFUSED", "nothing listens there");
    assert!(secs < 2.0, "refused after {secs} s");
    let unreachable = lab.unreachable_route().expect("an unreachable route");
    let (r, secs) = connect(&lab, &unreachable.to_string(), 80);
    assert_eq!(r, "EHOSTUNREACH");
    assert!(secs < 2.0, "unreachable after {secs} s");
}

#[test]
fn an_allow_list_lets_one_destination_through_and_refuses_another() {
    let allowed = format!("{}:9000", netns::remote_ip_for("allow"));
    let Some((lab, _net, log)) = lab("allow", Some(&[allowed.as_str()]), vec![], 1) else {
        return;
    };
    let _srv = lab.remote_spawn(&["python3", "-c", TCP_SERVER, "0.0.0.0", "9000"], "ready");
    let _srv2 = lab.remote_spawn(
        &[
            "python3",
            "-c",
            TCP_SERVER.replace("ready", "ready2").as_str(),
            "0.0.0.0",
            "9002",
        ],
        "ready2",
    );
    assert_eq!(connect(&lab, &lab.remote_ip.to_string(), 9000).0, "ok");
    assert_eq!(
        connect(&lab, &lab.remote_ip.to_string(), 9002).0,
        "ECONNREFUSED"
    );
    assert_eq!(
        connect(&lab, &lab.remote_ip.to_string(), 9002).0,
        "ECONNREFUSED"
    );
    let refusals: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("9002"))
        .cloned()
        .collect();
    assert_eq!(
        refusals.len(),
        1,
        "one log line per refused destination: {refusals:?}"
    );
    assert!(refusals[0].contains("network.allow"), "{refusals:?}");
}

#[test]
fn host_loopback_is_closed_but_for_the_engine_and_listed_ports() {
    let engine = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (ep, lp, op) = (
        engine.local_addr().unwrap().port(),
        listed.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    let Some((lab, _net, _log)) = lab("loopback", None, vec![lp], ep) else {
        return;
    };
    assert_eq!(connect(&lab, "10.0.2.2", ep).0, "ok", "the engine port");
    assert_eq!(connect(&lab, "10.0.2.2", lp).0, "ok", "a listed host port");
    assert_eq!(
        connect(&lab, "10.0.2.2", op).0,
        "ECONNREFUSED",
        "an unlisted host port"
    );
    assert_eq!(
        connect(&lab, "127.0.0.1", op).0,
        "ECONNREFUSED",
        "the worker's own loopback"
    );
    // The host's address on the lab link is the host too.
    assert_eq!(
        connect(&lab, &lab.host_ip.to_string(), op).0,
        "ECONNREFUSED"
    );
    drop((engine, listed, other));
}

#[test]
fn a_remote_reset_mid_transfer_reaches_the_worker() {
    let Some((lab, _net, _log)) = lab("reset", None, vec![], 1) else {
        return;
    };
    let _srv = lab.remote_spawn(
        &[
            "python3",
            "-c",
            r#"
import socket, struct, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 9003)); srv.listen(4); print("ready", flush=True)
while True:
    c, _ = srv.accept(); c.sendall(b"x" * 300000)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); c.close()
"#,
        ],
        "ready",
    );
    let out = lab.worker_run(
        &[
            "python3",
            "-c",
            r#"
import errno, socket, sys, time
s = socket.create_connection((sys.argv[1], 9003), timeout=20); got = 0; r = "eof"
try:
    while True:
        time.sleep(0.05); b = s.recv(65536)
        if not b: break
        got += len(b)
except OSError as e:
    r = errno.errorcode.get(e.errno, str(e))
print(r, got)
"#,
            &lab.remote_ip.to_string(),
        ],
        40,
    );
    assert!(out.starts_with("ECONNRESET"), "the worker saw {out}");
}

#[test]
fn many_connections_and_a_udp_flood_stay_bounded() {
    let _counting = FD_COUNTING.lock().unwrap_or_else(|p| p.into_inner());
    let Some((lab, net, _log)) = lab("churn", None, vec![], 1) else {
        return;
    };
    let _srv = lab.remote_spawn(&["python3", "-c", TCP_SERVER, "0.0.0.0", "9000"], "ready");
    let _echo = lab.remote_spawn(&["python3", "-c", UDP_ECHO, "9001"], "ready");
    let fds_before = netns::count_fds();
    let rss_before = netns::rss_kib();
    let out = lab.worker_run(
        &[
            "python3",
            "-c",
            r#"
import socket, sys
ok = 0
for i in range(2000):
    s = socket.create_connection((sys.argv[1], 9000), timeout=20); s.close(); ok += 1
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(100000):
    try: u.sendto(b"f" * 1200, (sys.argv[1], 9001 + (i % 50)))
    except OSError: pass
print(ok)
"#,
            &lab.remote_ip.to_string(),
        ],
        180,
    );
    assert_eq!(out.trim(), "2000");
    // Closed connections leave nothing open (TIME_WAIT-free on our side) within a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fds = netns::count_fds();
        if fds <= fds_before + 60 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fds {fds_before} → {fds}: connections leak"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss = netns::rss_kib();
    eprintln!(
        "network RSS: {rss_before} KiB before, {rss} KiB after 2000 connections and a UDP flood"
    );
    assert!(
        rss < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss} KiB"
    );
    drop(net);
    let _ = Ipv4Addr::UNSPECIFIED;
}

#[test]
fn a_flooding_worker_leaves_another_workers_network_alone_and_nothing_open_after_it_stops() {
    let _counting = FD_COUNTING.lock().unwrap_or_else(|p| p.into_inner());
    let fds_before = netns::count_fds();
    let Some((flood_lab, flood_net, _l1)) = lab("flooder", None, vec![], 1) else {
        return;
    };
    let Some((calm_lab, calm_net, _l2)) = lab("calm", None, vec![], 1) else {
        return;
    };
    let _srv = flood_lab.remote_spawn(&["python3", "-c", TCP_SERVER, "0.0.0.0", "9000"], "ready");
    let _echo = flood_lab.remote_spawn(&["python3", "-c", UDP_ECHO, "9001"], "ready");
    let _calm_srv =
        calm_lab.remote_spawn(&["python3", "-c", TCP_SERVER, "0.0.0.0", "9000"], "ready");
    let n = 20 << 20;
    // The calm worker's transfer alone, then again while the other worker floods.
    let calm = |lab: &Lab| fetch(lab, n);
    let alone = calm(&calm_lab);
    let remote = flood_lab.remote_ip.to_string();
    let flood_ns = flood_lab.worker_ns.clone();
    let flooder = std::thread::spawn(move || {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &flood_ns, "timeout", "-s", "KILL", "180", "python3", "-c",
            ])
            .arg(
                r#"
import socket, sys
ok = 0
for i in range(2000):
    s = socket.create_connection((sys.argv[1], 9000), timeout=20); s.close(); ok += 1
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(200000):
    try: u.sendto(b"f" * 1200, (sys.argv[1], 9001 + (i % 50)))
    except OSError: pass
print(ok)
"#,
            )
            .arg(&remote)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = netns::rss_kib();
    let during = calm(&calm_lab);
    assert_eq!(flooder.join().unwrap(), "2000", "the flooder's connections");
    let rss = netns::rss_kib();
    eprintln!(
        "calm worker: 20 MiB in {alone} s alone, {during} s beside a flood; RSS {rss_before} → {rss} KiB"
    );
    // Bounded memory, and the calm worker still moves its bytes in reasonable time.
    assert!(
        rss < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss} KiB"
    );
    assert!(
        during < alone * 10.0 + 5.0,
        "{alone} s alone, {during} s beside the flood"
    );
    // The flooder stops: its network's sockets and threads go with it.
    drop(flood_net);
    drop(calm_net);
    drop((flood_lab, calm_lab));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fds = netns::count_fds();
        if fds <= fds_before + 24 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fds {fds_before} → {fds} after both networks stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
