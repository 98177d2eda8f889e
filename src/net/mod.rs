//! A worker's outbound network without touching the host's firewall, routes or bridges: the
//! sandbox gets one virtual NIC (a TAP device in its network namespace, or a virtio-net device
//! in a VM) and the host side of that NIC is a user-space TCP/IP stack (smoltcp) in the
//! worker's monitor, which terminates the worker's connections and opens ordinary host
//! sockets for them, relays UDP, and answers DNS at the gateway with the host's resolver.
//!
//! - [`stack`]: the network thread; [`policy`]: who may be reached; [`dns`]: the gateway's
//!   DNS server; [`packet`]: frames the stack writes itself; [`link`]: the TAP device and its
//!   interface setup.
//!
//! Addresses, as a user of slirp-style networks expects: the worker is 10.0.2.15/24, its
//! gateway (and DNS server) 10.0.2.2.

use std::net::Ipv4Addr;

pub mod dns;
pub mod link;
pub mod packet;
pub mod policy;
pub mod stack;

pub use link::Ipv4Setup;
pub use stack::{Network, Settings};

/// The worker's address.
pub const WORKER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The gateway: the host side of the NIC, its DNS server, and the way to the host's ports
/// the policy opens.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const PREFIX: u8 = 24;
/// Large frames: fewer, bigger segments through the user-space stack (as slirp4netns does).
pub const MTU: u32 = 65_520;

/// The worker side's setup, for the NIC named `eth0` in the sandbox.
pub fn worker_setup() -> Ipv4Setup {
    Ipv4Setup {
        address: WORKER_ADDRESS,
        prefix: PREFIX,
        gateway: GATEWAY,
        mtu: MTU,
    }
}

/// `/etc/resolv.conf` inside the sandbox.
pub fn resolv_conf() -> String {
    format!("nameserver {GATEWAY}\noptions ndots:0\n")
}

/// `/etc/hosts` inside the sandbox (the worker's own name on its address).
pub fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{WORKER_ADDRESS}\t{hostname}\n"
    )
}
