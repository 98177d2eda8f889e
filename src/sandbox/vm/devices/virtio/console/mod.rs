//! virtio-console (device type 3, single port, no multiport): the control channel. Bytes the
//! guest transmits come out of a host-side `UnixStream`; bytes written to that stream are
//! delivered into the guest's receive buffers.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::{read_config_bytes, Activation, DeviceWorker, VirtioDevice, TYPE_CONSOLE};
use crate::sandbox::vm::sys::poll_readable;
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
        self.worker = Some(DeviceWorker::spawn("vm-console", move |stop| {
            if let Err(e) = serve(act, stream, stop) {
                eprintln!("vm: virtio-console stopped: {e}");
            }
        })?);
        Ok(())
    }

    fn reset(&mut self) {
        // Unblock a worker stuck writing to a host that does not read, then join it.
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        self.worker = None;
    }
}

fn serve(
    act: Activation,
    mut stream: UnixStream,
    stop: &crate::sandbox::vm::kvm::EventFd,
) -> Result<()> {
    let Activation {
        mem,
        mut queues,
        queue_evts,
        interrupt,
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
                    let mut data = vec![0u8; d.len as usize];
                    mem.read(d.addr, &mut data)?;
                    // A host that went away loses the bytes; the guest must not stall on it.
                    let _ = stream.write_all(&data);
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
                Ok(0) | Err(_) => host_eof = true,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
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
