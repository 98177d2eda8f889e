//! virtio-net (device type 1, one queue pair): the worker's NIC. Frames the guest transmits
//! come out of a host-side datagram socket, one frame per datagram, and datagrams written to
//! it are delivered into the guest's receive buffers — the same frame interface a TAP device
//! gives the `namespace` backend, so the host side is the same user-mode network.
//!
//! Offered: `VIRTIO_NET_F_MAC` (a fixed, locally administered address) and `VIRTIO_NET_F_MTU`
//! (the large MTU of the user-mode network; Linux then posts receive buffers big enough for
//! it). No offloads: every frame has a plain 12-byte `virtio_net_hdr_v1` in front, zero on
//! receive, ignored on transmit. A frame the guest has no room for waits in the socket (the
//! device stops reading it until the guest posts buffers); one the host cannot take now is
//! dropped, as a full NIC would.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;

use super::{read_config_bytes, Activation, DeviceWorker, VirtioDevice, TYPE_NET};
use crate::sandbox::vm::kvm::EventFd;
use crate::sandbox::vm::seccomp::Role;
use crate::sandbox::vm::sys::poll_readable;
use crate::{Context, Result};

const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const QUEUE_SIZE: u16 = 256;

const F_MTU: u64 = 1 << 3;
const F_MAC: u64 = 1 << 5;

/// `virtio_net_hdr_v1`: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
/// num_buffers.
const HDR_LEN: usize = 12;
/// The largest frame carried: a 65,535-byte MTU plus the Ethernet header.
const MAX_FRAME: usize = 65_535 + 14;

/// The guest's Ethernet address (locally administered; one NIC per VM, so one address).
pub const GUEST_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x0f];

pub struct Net {
    socket: UnixDatagram,
    mtu: u16,
    worker: Option<DeviceWorker>,
}

impl Net {
    /// A NIC of `mtu` bytes and the host's end of its frame socket.
    pub fn new(mtu: u16) -> Result<(Net, UnixDatagram)> {
        let (dev, host) =
            UnixDatagram::pair().context("creating the virtio-net frame socket pair")?;
        Ok((
            Net {
                socket: dev,
                mtu,
                worker: None,
            },
            host,
        ))
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }
    fn features(&self) -> u64 {
        F_MAC | F_MTU
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // mac[6], status, max_virtqueue_pairs, mtu (little endian).
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&GUEST_MAC);
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        read_config_bytes(&config, offset, data);
    }

    fn activate(&mut self, act: Activation) -> Result<()> {
        let socket = self
            .socket
            .try_clone()
            .context("cloning the virtio-net socket")?;
        socket
            .set_nonblocking(true)
            .context("setting the virtio-net socket non-blocking")?;
        self.worker = Some(DeviceWorker::spawn(
            "vm-net",
            Role::NetDevice,
            act,
            move |act, stop| serve(act, socket, stop),
        )?);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
    }
}

fn serve(act: Activation, socket: UnixDatagram, stop: &EventFd) -> Result<()> {
    let Activation {
        mem,
        mut queues,
        queue_evts,
        interrupt,
        ..
    } = act;
    // A received frame, behind room for its header.
    let mut frame = vec![0u8; HDR_LEN + MAX_FRAME];
    // A frame read from the host that waits for a receive buffer.
    let mut pending: Option<usize> = None;
    // The guest had no receive buffer: do not read the host until it posts some.
    let mut starved = false;
    // A frame being transmitted. Allocated once: freeing a block this big on a thread's own
    // malloc arena can shrink the arena's heap, and glibc then reads
    // /proc/sys/vm/overcommit_memory — an open(2) the thread's filter (rightly) kills.
    let mut out: Vec<u8> = Vec::with_capacity(HDR_LEN + MAX_FRAME);
    loop {
        let mut fds = vec![
            stop.as_raw_fd(),
            queue_evts[RX_QUEUE].as_raw_fd(),
            queue_evts[TX_QUEUE].as_raw_fd(),
        ];
        if !starved {
            fds.push(socket.as_raw_fd());
        }
        let ready = poll_readable(&fds, -1).context("polling virtio-net fds")?;
        if ready[0] {
            return Ok(());
        }
        if ready[1] {
            queue_evts[RX_QUEUE].read();
            starved = false;
        }
        if ready[2] {
            queue_evts[TX_QUEUE].read();
        }
        // Transmit: every chain the guest posted is one frame behind a header.
        let mut used = false;
        let tx = &mut queues[TX_QUEUE];
        while let Some(chain) = tx.pop(&mem)? {
            out.clear();
            for d in chain.descs.iter().filter(|d| !d.write) {
                let room = (HDR_LEN + MAX_FRAME).saturating_sub(out.len());
                let n = (d.len as usize).min(room);
                let at = out.len();
                out.resize(at + n, 0);
                mem.read(d.addr, &mut out[at..])?;
            }
            if out.len() > HDR_LEN {
                match socket.send(&out[HDR_LEN..]) {
                    // The host's network is behind: the frame is lost, TCP resends it.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    // The host side is gone (the VM is stopping): nothing to deliver to.
                    Err(_) | Ok(_) => {}
                }
            }
            tx.add_used(&mem, chain.head, 0)?;
            used = true;
        }
        // Receive: host frames into the buffers the guest posted.
        let rx = &mut queues[RX_QUEUE];
        while !starved {
            let len = match pending.take() {
                Some(n) => n,
                None => match socket.recv(&mut frame[HDR_LEN..]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break,
                },
            };
            let Some(chain) = rx.pop(&mem)? else {
                pending = Some(len);
                starved = true;
                break;
            };
            let room: usize = chain
                .descs
                .iter()
                .filter(|d| d.write)
                .map(|d| d.len as usize)
                .sum();
            let mut written = 0;
            let total = HDR_LEN + len;
            if room >= total {
                frame[..HDR_LEN].fill(0);
                frame[10..12].copy_from_slice(&1u16.to_le_bytes()); // num_buffers
                for d in chain.descs.iter().filter(|d| d.write) {
                    let n = (d.len as usize).min(total - written);
                    if n == 0 {
                        break;
                    }
                    mem.write(d.addr, &frame[written..written + n])?;
                    written += n;
                }
            }
            // A buffer too small for the frame gets it dropped (the MTU says how big to post).
            rx.add_used(&mem, chain.head, written as u32)?;
            used = true;
        }
        if used {
            interrupt.signal_used();
        }
    }
}
