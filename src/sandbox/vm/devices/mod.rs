//! Devices and the bus that routes vCPU exits to them.
//!
//! Port I/O map:
//! - `0x3f8–0x3ff`: COM1 ([`serial`]).
//! - `0x60`, `0x64`: i8042 stub; writing `0xFE` to `0x64` resets (Linux `reboot=k`).
//! - [`EXIT_PORT`] (`0x501`): debug exit; a 1–4 byte write ends the VM with that value as code.
//! - [`PROGRESS_PORT`] (`0x502`): progress marks; each write is timestamped (boot benchmarks).
//!
//! MMIO: virtio-mmio transports at [`VIRTIO_MMIO_BASE`] + i·4 KiB, interrupt `VIRTIO_IRQ_BASE + i`.

pub mod serial;
pub mod virtio;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serial::{Serial, COM1_BASE};
use virtio::mmio::MmioTransport;

pub const EXIT_PORT: u16 = 0x501;
pub const PROGRESS_PORT: u16 = 0x502;
pub const I8042_DATA: u16 = 0x60;
pub const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xfe;

pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
pub const VIRTIO_IRQ_BASE: u32 = 5;

/// Something a device asks the VMM to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusEvent {
    /// The guest wrote its exit code to the debug-exit port.
    Exit(u32),
    /// The guest asked for a reset (i8042 pulse).
    Reset,
}

/// Timestamped writes to the progress port, in order.
pub type ProgressLog = Arc<Mutex<Vec<(u32, Instant)>>>;

/// Every device a vCPU can reach, shared by all vCPU threads.
pub struct Bus {
    serial: Mutex<Serial>,
    mmio: Vec<(u64, Mutex<MmioTransport>)>,
    progress: ProgressLog,
}

fn le_value(data: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = data.len().min(4);
    b[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(b)
}

impl Bus {
    pub fn new(serial: Serial, mmio: Vec<(u64, MmioTransport)>, progress: ProgressLog) -> Bus {
        Bus {
            serial: Mutex::new(serial),
            mmio: mmio.into_iter().map(|(a, t)| (a, Mutex::new(t))).collect(),
            progress,
        }
    }

    /// An `out` of `data` (one access of `data.len()` bytes) to `port`.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> Option<BusEvent> {
        match port {
            p if (COM1_BASE..COM1_BASE + 8).contains(&p) => {
                let mut s = self.serial.lock().unwrap_or_else(|e| e.into_inner());
                s.write(p - COM1_BASE, data[0]);
                None
            }
            EXIT_PORT => Some(BusEvent::Exit(le_value(data))),
            PROGRESS_PORT => {
                let now = Instant::now();
                self.progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((le_value(data), now));
                None
            }
            I8042_COMMAND if data[0] == I8042_RESET => Some(BusEvent::Reset),
            // Everything else (PCI config probes, CMOS, POST codes…) is ignored.
            _ => None,
        }
    }

    /// An `in` of `data.len()` bytes from `port`.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        let v = match port {
            p if (COM1_BASE..COM1_BASE + 8).contains(&p) => self
                .serial
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read(p - COM1_BASE),
            // i8042: no data, input buffer empty.
            I8042_COMMAND | I8042_DATA => 0,
            _ => 0xff,
        };
        data.fill(v);
    }

    fn transport(&self, addr: u64) -> Option<(u64, &Mutex<MmioTransport>)> {
        self.mmio
            .iter()
            .find(|(base, _)| (*base..*base + VIRTIO_MMIO_SIZE).contains(&addr))
            .map(|(base, t)| (addr - base, t))
    }

    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.transport(addr) {
            Some((off, t)) => t.lock().unwrap_or_else(|e| e.into_inner()).read(off, data),
            None => data.fill(0xff),
        }
    }

    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        if let Some((off, t)) = self.transport(addr) {
            t.lock().unwrap_or_else(|e| e.into_inner()).write(off, data);
        }
    }

    pub fn flush(&self) {
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush();
    }
}

impl Bus {
    /// Stop every device worker (VM teardown) and flush the console.
    pub fn shutdown(&self) {
        for (_, t) in &self.mmio {
            t.lock().unwrap_or_else(|e| e.into_inner()).shutdown();
        }
        self.flush();
    }
}
