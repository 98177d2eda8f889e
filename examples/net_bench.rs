//! Serve a network namespace's NIC with iii's user-mode network exactly as a worker's monitor
//! does (a TAP device `eth0` configured as a sandbox's NIC, the same `iii::net::Network`
//! thread and default egress policy), then run a command inside that namespace and report the
//! network's memory. For `scripts/bench-network.sh`.
//!
//! Usage (root): `net_bench NETNS -- CMD [ARGS…]`, NETNS made by `ip netns add`.

use std::process::Command;

use iii::net::policy::Policy;
use iii::net::{link, Network, Settings, GATEWAY};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args[1] != "--" {
        eprintln!("usage: net_bench NETNS -- CMD [ARGS…]");
        std::process::exit(2);
    }
    let ns = args[0].clone();
    let path = std::path::PathBuf::from(format!("/var/run/netns/{ns}"));
    let tap = link::in_netns(&path, || {
        let fd = link::create_tap("eth0")?;
        link::configure("eth0", &iii::net::worker_setup())?;
        Ok(fd)
    })
    .unwrap_or_else(|e| {
        eprintln!("error: the NIC in {ns}: {e}");
        std::process::exit(1)
    });
    let net = Network::start(
        tap,
        Settings {
            setup: iii::net::worker_setup(),
            // The default `egress` policy; port 1 stands in for the engine's.
            policy: Policy::new(None, vec![], 1, GATEWAY),
            log: Box::new(|line| eprintln!("net: {line}")),
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("error: starting the network: {e}");
        std::process::exit(1)
    });
    let before = rss_kib();
    let status = Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(&args[2..])
        .status()
        .unwrap_or_else(|e| {
            eprintln!("error: running the command: {e}");
            std::process::exit(1)
        });
    eprintln!(
        "net_bench: RSS {before} KiB idle, {} KiB after the run",
        rss_kib()
    );
    drop(net);
    std::process::exit(status.code().unwrap_or(1));
}
