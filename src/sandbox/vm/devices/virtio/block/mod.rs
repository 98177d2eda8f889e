//! virtio-blk (device type 2) backed by a host file: read, write, flush and get-id requests,
//! processed on the device's worker thread.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::queue::DescChain;
use super::{read_config_bytes, Activation, DeviceWorker, VirtioDevice, COPY_CHUNK, TYPE_BLOCK};
use crate::sandbox::vm::kvm::EventFd;
use crate::sandbox::vm::memory::GuestMemory;
use crate::sandbox::vm::seccomp::Role;
use crate::sandbox::vm::sys::poll_readable;
use crate::{err, Context, Result};

pub const SECTOR_SIZE: u64 = 512;
const QUEUE_SIZE: u16 = 128;

const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_T_FLUSH: u32 = 4;
const VIRTIO_BLK_T_GET_ID: u32 = 8;

const VIRTIO_BLK_S_OK: u8 = 0;
const VIRTIO_BLK_S_IOERR: u8 = 1;
const VIRTIO_BLK_S_UNSUPP: u8 = 2;

pub struct Block {
    file: Arc<File>,
    capacity: u64,
    read_only: bool,
    id: String,
    worker: Option<DeviceWorker>,
}

impl Block {
    pub fn open(path: &Path, read_only: bool) -> Result<Block> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .with_context(|| format!("opening disk image {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("reading size of disk image {}", path.display()))?
            .len();
        if len % SECTOR_SIZE != 0 {
            return Err(err!(
                "disk image {} is {len} bytes, not a multiple of {SECTOR_SIZE}",
                path.display()
            ));
        }
        let id = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Block {
            file: Arc::new(file),
            capacity: len / SECTOR_SIZE,
            read_only,
            id,
            worker: None,
        })
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }
    fn features(&self) -> u64 {
        VIRTIO_BLK_F_FLUSH | if self.read_only { VIRTIO_BLK_F_RO } else { 0 }
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.capacity.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, act: Activation) -> Result<()> {
        let disk = Disk {
            file: self.file.clone(),
            capacity: self.capacity,
            read_only: self.read_only,
            id: self.id.clone(),
        };
        self.worker = Some(DeviceWorker::spawn(
            "vm-block",
            Role::BlockDevice,
            act,
            move |act, stop| serve(act, disk, stop),
        )?);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
    }
}

struct Disk {
    file: Arc<File>,
    capacity: u64,
    read_only: bool,
    id: String,
}

fn serve(act: Activation, disk: Disk, stop: &EventFd) -> Result<()> {
    let Activation {
        mem,
        mut queues,
        queue_evts,
        interrupt,
        ..
    } = act;
    loop {
        let ready = poll_readable(&[stop.as_raw_fd(), queue_evts[0].as_raw_fd()], -1)
            .context("polling block fds")?;
        if ready[0] {
            return Ok(());
        }
        if !ready[1] {
            continue;
        }
        queue_evts[0].read();
        let mut any = false;
        while let Some(chain) = queues[0].pop(&mem)? {
            let written = disk.handle(&mem, &chain)?;
            queues[0].add_used(&mem, chain.head, written)?;
            any = true;
        }
        if any {
            interrupt.signal_used();
        }
    }
}

/// `(offset, length)` steps of at most [`COPY_CHUNK`] covering `len` bytes.
fn chunks(len: u32) -> impl Iterator<Item = (u64, usize)> {
    (0..u64::from(len))
        .step_by(COPY_CHUNK)
        .map(move |at| (at, (u64::from(len) - at).min(COPY_CHUNK as u64) as usize))
}

impl Disk {
    /// Execute one request; returns the bytes written into guest buffers (data + status).
    fn handle(&self, mem: &GuestMemory, chain: &DescChain) -> Result<u32> {
        let (Some(header), Some(status)) = (chain.descs.first(), chain.descs.last()) else {
            return Err(err!("empty virtio-blk request"));
        };
        if chain.descs.len() < 2
            || header.write
            || header.len < 16
            || !status.write
            || status.len < 1
        {
            return Err(err!("malformed virtio-blk request (head {})", chain.head));
        }
        let kind = mem.read_u32(header.addr)?;
        let sector = mem.read_u64(header.addr + 8)?;
        let data = &chain.descs[1..chain.descs.len() - 1];
        let total: u64 = data.iter().map(|d| u64::from(d.len)).sum();
        let in_range = sector
            .checked_mul(SECTOR_SIZE)
            .and_then(|s| s.checked_add(total))
            .is_some_and(|end| end <= self.capacity * SECTOR_SIZE);
        let mut written = 0u32;
        let result = match kind {
            VIRTIO_BLK_T_IN if in_range && data.iter().all(|d| d.write) => {
                let mut off = sector * SECTOR_SIZE;
                let mut ok = true;
                let mut chunk = vec![0u8; COPY_CHUNK];
                for d in data {
                    mem.check(d.addr, u64::from(d.len))?;
                    for (at, n) in chunks(d.len) {
                        ok &= self.file.read_exact_at(&mut chunk[..n], off).is_ok();
                        mem.write(d.addr + at, &chunk[..n])?;
                        off += n as u64;
                    }
                    written += d.len;
                }
                ok
            }
            VIRTIO_BLK_T_OUT if in_range && !self.read_only && data.iter().all(|d| !d.write) => {
                let mut off = sector * SECTOR_SIZE;
                let mut ok = true;
                let mut chunk = vec![0u8; COPY_CHUNK];
                for d in data {
                    mem.check(d.addr, u64::from(d.len))?;
                    for (at, n) in chunks(d.len) {
                        mem.read(d.addr + at, &mut chunk[..n])?;
                        ok &= self.file.write_all_at(&chunk[..n], off).is_ok();
                        off += n as u64;
                    }
                }
                ok
            }
            VIRTIO_BLK_T_FLUSH => self.read_only || self.file.sync_data().is_ok(),
            VIRTIO_BLK_T_GET_ID => {
                if let Some(d) = data.iter().find(|d| d.write) {
                    let mut id = [0u8; 20];
                    let n = self.id.len().min(20);
                    id[..n].copy_from_slice(&self.id.as_bytes()[..n]);
                    let n = (d.len as usize).min(20);
                    mem.write(d.addr, &id[..n])?;
                    written += n as u32;
                }
                true
            }
            VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => false,
            _ => {
                mem.write(status.addr, &[VIRTIO_BLK_S_UNSUPP])?;
                return Ok(written + 1);
            }
        };
        let code = if result {
            VIRTIO_BLK_S_OK
        } else {
            VIRTIO_BLK_S_IOERR
        };
        mem.write(status.addr, &[code])?;
        Ok(written + 1)
    }
}
