//! The host side of a sandbox's NIC, the same for both backends: the worker's user-mode
//! network ([`crate::net::Network`]) serving a frame descriptor — the TAP device of a
//! `namespace` sandbox, the virtio-net socket of a `vm` one — under the worker's egress
//! policy, telling refused destinations in the worker's log.

use std::fs::File;
use std::os::fd::OwnedFd;

use super::Egress;
use crate::net::{policy::Policy, Network, Settings};
use crate::{err, Result};

/// Serve `frames` (one Ethernet frame per read and write) for a worker whose engine listens
/// on `engine_port`; `log` is the worker's log (its stderr).
pub fn serve(frames: OwnedFd, egress: &Egress, engine_port: u16, log: OwnedFd) -> Result<Network> {
    let log = std::sync::Mutex::new(File::from(log));
    Network::start(
        frames,
        Settings {
            setup: crate::net::worker_setup(),
            policy: Policy::new(
                egress.allow.clone(),
                egress.host_ports.clone(),
                engine_port,
                crate::net::GATEWAY,
            ),
            log: Box::new(move |line| {
                use std::io::Write;
                if let Ok(mut f) = log.lock() {
                    let _ = writeln!(f, "iii: {line}");
                }
            }),
        },
    )
    .map_err(|e| err!("starting the worker's network: {e}"))
}

/// What init gets for a sandbox with a NIC: name resolution at the gateway.
pub fn init_config(name: &str) -> crate::protocol::NetworkConfig {
    crate::protocol::NetworkConfig {
        resolv_conf: crate::net::resolv_conf(),
        hosts: crate::net::hosts(name),
    }
}
