//! `Lab`: network namespaces for network tests — a "worker" namespace (loopback up; its NIC
//! is made by the test) and a "remote host" namespace joined to the host by a veth pair on a
//! private /30 — torn down on drop (links, routes, namespaces; processes by PID).
//!
//! Include it in a test crate: `#[path = "common/netns.rs"] mod netns;`

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The remote host's HTTP server ([`Lab::serve_http`]): every GET answers
/// `hello from the remote host <path>`.
#[allow(dead_code)]
const HTTP_SERVER: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from the remote host " + self.path).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H)
print("ready", flush=True); s.serve_forever()
"#;

/// The /30 a lab named `tag` uses in this test process: (host side, remote side).
pub fn subnet_for(tag: &str) -> (Ipv4Addr, Ipv4Addr) {
    let mut h: u32 = std::process::id().wrapping_mul(2_654_435_761);
    for b in tag.bytes() {
        h = h.wrapping_mul(31).wrapping_add(u32::from(b));
    }
    let base = u32::from(Ipv4Addr::new(10, 200, 0, 0)) + ((h % (1 << 14)) << 2);
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// The remote host's address of the lab named `tag`.
pub fn remote_ip_for(tag: &str) -> Ipv4Addr {
    subnet_for(tag).1
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub struct Lab {
    pub worker_ns: String,
    pub remote_ns: String,
    pub host_ip: Ipv4Addr,
    pub remote_ip: Ipv4Addr,
    veth: String,
    routes: Vec<String>,
}

static SERIAL: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// Why it cannot be built here, if it cannot (not root, no `ip`).
    pub fn new(tag: &str) -> Result<Lab, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Err("the ip command (iproute2) is not installed".into());
        }
        let n = SERIAL.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}{n}", std::process::id() % 100_000);
        let (host_ip, remote_ip) = subnet_for(tag);
        let lab = Lab {
            worker_ns: format!("iii-w{id}"),
            remote_ns: format!("iii-r{id}"),
            host_ip,
            remote_ip,
            veth: format!("iiv{id}"),
            routes: Vec::new(),
        };
        let peer = format!("{}p", lab.veth);
        let h = format!("{host_ip}/30");
        let r = format!("{remote_ip}/30");
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &lab.worker_ns],
            vec!["netns", "add", &lab.remote_ns],
            vec!["-n", &lab.worker_ns, "link", "set", "lo", "up"],
            vec!["-n", &lab.remote_ns, "link", "set", "lo", "up"],
            vec![
                "link", "add", &lab.veth, "type", "veth", "peer", "name", &peer,
            ],
            vec!["link", "set", &peer, "netns", &lab.remote_ns],
            vec!["addr", "add", &h, "dev", &lab.veth],
            vec!["link", "set", &lab.veth, "up"],
            vec!["-n", &lab.remote_ns, "addr", "add", &r, "dev", &peer],
            vec!["-n", &lab.remote_ns, "link", "set", &peer, "up"],
        ];
        // On failure the partly built lab is torn down by its Drop.
        let failed = steps.iter().find_map(|s| ip(s).err());
        match failed {
            Some(e) => Err(e),
            None => Ok(lab),
        }
    }

    pub fn worker_ns_path(&self) -> std::path::PathBuf {
        format!("/var/run/netns/{}", self.worker_ns).into()
    }

    /// A TAP device `eth0` in the worker namespace, configured as a sandbox's NIC.
    pub fn worker_tap(&self) -> std::io::Result<OwnedFd> {
        iii::net::link::in_netns(&self.worker_ns_path(), || {
            let fd = iii::net::link::create_tap("eth0")?;
            iii::net::link::configure("eth0", &iii::net::worker_setup())?;
            Ok(fd)
        })
    }

    /// Run `args` in the worker namespace (killed after `secs`); its stdout.
    pub fn worker_run(&self, args: &[&str], secs: u64) -> String {
        let t = secs.to_string();
        let mut full = vec![
            "netns",
            "exec",
            &self.worker_ns,
            "timeout",
            "-s",
            "KILL",
            &t,
        ];
        full.extend_from_slice(args);
        let out = Command::new("ip")
            .args(&full)
            .stdin(Stdio::null())
            .output()
            .expect("running a client in the worker namespace");
        assert!(
            out.status.success(),
            "{args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// An HTTP server on `port` of the remote host (see [`HTTP_SERVER`]), ready to answer.
    #[allow(dead_code)]
    pub fn serve_http(&self, port: u16) -> Proc {
        self.remote_spawn(&["python3", "-c", HTTP_SERVER, &port.to_string()], "ready")
    }

    /// Start `args` in the remote namespace and wait for it to print `ready`.
    pub fn remote_spawn(&self, args: &[&str], ready: &str) -> Proc {
        let mut full = vec!["netns", "exec", &self.remote_ns];
        full.extend_from_slice(args);
        let log = std::env::temp_dir().join(format!(
            "iii-lab-{}-{}.out",
            self.remote_ns,
            SERIAL.fetch_add(1, Ordering::SeqCst)
        ));
        let child = Command::new("ip")
            .args(&full)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting a server in the remote namespace");
        let p = Proc { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&p.log)
            .unwrap_or_default()
            .contains(ready)
        {
            assert!(
                Instant::now() < deadline,
                "the remote server never said {ready:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// An address the host has an `unreachable` route to (removed with the lab).
    pub fn unreachable_route(&mut self) -> Result<Ipv4Addr, String> {
        let o = u32::from(self.remote_ip).to_be_bytes();
        let net = format!("10.199.{}.0/24", o[2]);
        ip(&["route", "add", "unreachable", &net])?;
        self.routes.push(net);
        Ok(Ipv4Addr::new(10, 199, o[2], 7))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for r in &self.routes {
            let _ = ip(&["route", "del", "unreachable", r]);
        }
        let _ = ip(&["link", "del", &self.veth]);
        let _ = ip(&["netns", "del", &self.worker_ns]);
        let _ = ip(&["netns", "del", &self.remote_ns]);
    }
}

/// A process in a namespace, killed by PID on drop.
pub struct Proc {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = iii::sys::pid::kill(self.child.id() as i32, libc::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Open file descriptors of this process.
pub fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// This process's resident memory.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
