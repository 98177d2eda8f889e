//! virtio-console (device type 3, single port, no multiport): the control channel. Bytes the
//! guest transmits come out of a host-side `UnixStream`; bytes written to that stream are
//! delivered into the guest's receive buffers.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::{read_config_bytes, Activation, DeviceWorker, VirtioDevice, COPY_CHUNK, TYPE_CONSOLE};
use crate::sandbox::vm::kvm::EventFd;
use crate::sandbox::vm::seccomp::Role;
use crate::sandbox::vm::sys::{poll_readable, wait_writable};
use crate::{Context, Result};

const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const QUEUE_SIZE: u16 = 64;

pub struct Console {
    /// The device's end of the socket pair; the host holds the other.
    stream: UnixStream,
    worker: Option<DeviceWorker>,
}

impl Console {
    /// A console and the host's end of its byte stream.
    pub fn new() -> Result<(Console, UnixStream)> {
        let (dev, host) = UnixStream::pair().context("creating the virtio-console socket pair")?;
        Ok((
            Console {
                stream: dev,
                worker: None,
            },
            host,
        ))
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }
    fn features(&self) -> u64 {
        0
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols, rows, max_nr_ports, emerg_wr: all zero without the size/multiport features.
        read_config_bytes(&[0u8; 12], offset, data);
    }

    fn activate(&mut self, act: Activation) -> Result<()> {
        let stream = self
            .stream
            .try_clone()
            .context("cloning the console stream")?;
        // Non-blocking, so a host that stops reading cannot wedge the worker past a stop.
        stream
            .set_nonblocking(true)
            .context("setting the console stream non-blocking")?;
        self.worker = Some(DeviceWorker::spawn(
            "vm-console",
            Role::ConsoleDevice,
            act,
            move |act, stop| serve(act, stream, stop),
        )?);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
    }
}

/// Write all of `data` to the host, waiting for room but giving up when `stop` fires or the
/// host has gone (its bytes are then lost: the guest must not stall on a departed host).
/// Returns false when stopped.
fn send_to_host(stream: &mut UnixStream, mut data: &[u8], stop: &EventFd) -> bool {
    while !data.is_empty() {
        match stream.write(data) {
            Ok(0) => return true,
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                match wait_writable(stream.as_raw_fd(), stop.as_raw_fd()) {
                    Ok(true) => {}
                    Ok(false) => return false,
                    Err(_) => return true,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    true
}

fn serve(act: Activation, mut stream: UnixStream, stop: &EventFd) -> Result<()> {
    let Activation {
        mem,
        mut queues,
        queue_evts,
        interrupt,
        ..
    } = act;
    let mut pending: Vec<u8> = Vec::new();
    let mut host_eof = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let watch_host = pending.is_empty() && !host_eof;
        let mut fds = vec![
            stop.as_raw_fd(),
            queue_evts[RX_QUEUE].as_raw_fd(),
            queue_evts[TX_QUEUE].as_raw_fd(),
        ];
        if watch_host {
            fds.push(stream.as_raw_fd());
        }
        let ready = poll_readable(&fds, -1).context("polling console fds")?;
        if ready[0] {
            return Ok(());
        }
        if ready[1] {
            queue_evts[RX_QUEUE].read();
        }
        if ready[2] {
            queue_evts[TX_QUEUE].read();
            let q = &mut queues[TX_QUEUE];
            let mut any = false;
            while let Some(chain) = q.pop(&mem)? {
                for d in chain.descs.iter().filter(|d| !d.write) {
                    mem.check(d.addr, u64::from(d.len))?;
                    let mut chunk = [0u8; COPY_CHUNK];
                    let mut done = 0u64;
                    while done < u64::from(d.len) {
                        let n = (u64::from(d.len) - done).min(COPY_CHUNK as u64) as usize;
                        mem.read(d.addr + done, &mut chunk[..n])?;
                        if !send_to_host(&mut stream, &chunk[..n], stop) {
                            return Ok(());
                        }
                        done += n as u64;
                    }
                }
                q.add_used(&mem, chain.head, 0)?;
                any = true;
            }
            if any {
                interrupt.signal_used();
            }
        }
        if watch_host && ready.get(3).copied().unwrap_or(false) {
            match stream.read(&mut buf) {
                Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Ok(_) | Err(_) => host_eof = true,
            }
        }
        // Deliver what the host sent into whatever receive buffers the guest has posted.
        let q = &mut queues[RX_QUEUE];
        let mut any = false;
        while !pending.is_empty() {
            let Some(chain) = q.pop(&mem)? else { break };
            let mut written = 0usize;
            for d in chain.descs.iter().filter(|d| d.write) {
                let n = (d.len as usize).min(pending.len() - written);
                mem.write(d.addr, &pending[written..written + n])?;
                written += n;
                if written == pending.len() {
                    break;
                }
            }
            pending.drain(..written);
            q.add_used(&mem, chain.head, written as u32)?;
            any = true;
        }
        if any {
            interrupt.signal_used();
        }
    }
}
