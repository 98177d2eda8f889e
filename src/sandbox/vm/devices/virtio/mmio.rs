//! The virtio-mmio transport, version 2 (virtio 1.x §4.2.2): the register file a driver uses to
//! discover a device, negotiate features, describe its queues and drive the status machine.

use std::sync::Arc;

use super::queue::Queue;
use super::{Activation, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::sandbox::vm::kvm::EventFd;
use crate::sandbox::vm::memory::GuestMemory;
use crate::sandbox::vm::spawner::Spawner;

pub const MAGIC: u32 = 0x7472_6976; // "virt"
const VENDOR_ID: u32 = 0x0049_4949; // "III"

pub const REG_MAGIC: u64 = 0x000;
pub const REG_VERSION: u64 = 0x004;
pub const REG_DEVICE_ID: u64 = 0x008;
pub const REG_VENDOR_ID: u64 = 0x00c;
pub const REG_DEVICE_FEATURES: u64 = 0x010;
pub const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
pub const REG_DRIVER_FEATURES: u64 = 0x020;
pub const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
pub const REG_QUEUE_SEL: u64 = 0x030;
pub const REG_QUEUE_NUM_MAX: u64 = 0x034;
pub const REG_QUEUE_NUM: u64 = 0x038;
pub const REG_QUEUE_READY: u64 = 0x044;
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
pub const REG_INTERRUPT_STATUS: u64 = 0x060;
pub const REG_INTERRUPT_ACK: u64 = 0x064;
pub const REG_STATUS: u64 = 0x070;
pub const REG_QUEUE_DESC_LOW: u64 = 0x080;
pub const REG_QUEUE_DESC_HIGH: u64 = 0x084;
pub const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
pub const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
pub const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
pub const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
pub const REG_CONFIG_GENERATION: u64 = 0x0fc;
pub const REG_CONFIG: u64 = 0x100;

pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 0x40;
pub const STATUS_FAILED: u32 = 0x80;

pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: Arc<GuestMemory>,
    queues: Vec<Queue>,
    queue_evts: Vec<Arc<EventFd>>,
    interrupt: Interrupt,
    spawner: Spawner,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    activated: bool,
}

impl MmioTransport {
    /// `queue_evts` (one per queue) are the eventfds KVM signals on QueueNotify; a notify that
    /// reaches this transport as an MMIO exit (no ioeventfd) signals them too.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: Arc<GuestMemory>,
        queue_evts: Vec<Arc<EventFd>>,
        irqfd: Arc<EventFd>,
        spawner: Spawner,
    ) -> MmioTransport {
        let queues = device
            .queue_max_sizes()
            .into_iter()
            .map(Queue::new)
            .collect();
        MmioTransport {
            device,
            mem,
            queues,
            queue_evts,
            interrupt: Interrupt::new(irqfd),
            spawner,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            activated: false,
        }
    }

    fn offered_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
        }
        self.activated = false;
        self.status = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            *q = Queue::new(q.max_size);
        }
        self.interrupt.ack(u32::MAX);
        self.interrupt.clear_failure();
    }

    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            self.device.read_config(offset - REG_CONFIG, data);
            return;
        }
        let v: u32 = match offset {
            REG_MAGIC => MAGIC,
            REG_VERSION => 2,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self.selected().map_or(0, |q| u32::from(q.max_size)),
            REG_QUEUE_READY => self.selected().map_or(0, |q| u32::from(q.ready)),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS if self.interrupt.has_failed() => self.status | STATUS_NEEDS_RESET,
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => 0,
            _ => 0,
        };
        let bytes = v.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(i).copied().unwrap_or(0);
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= REG_CONFIG {
            return; // no writable config fields in our devices
        }
        let mut b = [0u8; 4];
        let n = data.len().min(4);
        b[..n].copy_from_slice(&data[..n]);
        let v = u32::from_le_bytes(b);
        let set_low = |x: &mut u64, v: u32| *x = (*x & !0xffff_ffff) | u64::from(v);
        let set_high = |x: &mut u64, v: u32| *x = (*x & 0xffff_ffff) | (u64::from(v) << 32);
        // Queue and feature setup is only legal before DRIVER_OK.
        let configuring = !self.activated;
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            REG_DRIVER_FEATURES if configuring => match self.driver_features_sel {
                0 => set_low(&mut self.driver_features, v),
                1 => set_high(&mut self.driver_features, v),
                _ => {}
            },
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NUM if configuring => {
                if let Some(q) = self.selected() {
                    q.size = v as u16;
                }
            }
            REG_QUEUE_READY if configuring => {
                if let Some(q) = self.selected() {
                    q.ready = v == 1;
                }
            }
            REG_QUEUE_DESC_LOW
            | REG_QUEUE_DESC_HIGH
            | REG_QUEUE_DRIVER_LOW
            | REG_QUEUE_DRIVER_HIGH
            | REG_QUEUE_DEVICE_LOW
            | REG_QUEUE_DEVICE_HIGH
                if configuring =>
            {
                if let Some(q) = self.selected() {
                    let (field, high) = match offset {
                        REG_QUEUE_DESC_LOW => (&mut q.desc_table, false),
                        REG_QUEUE_DESC_HIGH => (&mut q.desc_table, true),
                        REG_QUEUE_DRIVER_LOW => (&mut q.avail_ring, false),
                        REG_QUEUE_DRIVER_HIGH => (&mut q.avail_ring, true),
                        REG_QUEUE_DEVICE_LOW => (&mut q.used_ring, false),
                        _ => (&mut q.used_ring, true),
                    };
                    if high {
                        set_high(field, v)
                    } else {
                        set_low(field, v)
                    }
                }
            }
            REG_QUEUE_NOTIFY => {
                // Only reached when KVM did not take the write as an ioeventfd.
                if let Some(evt) = self.queue_evts.get(v as usize) {
                    let _ = evt.write(1);
                }
            }
            REG_INTERRUPT_ACK => self.interrupt.ack(v),
            REG_STATUS => self.write_status(v),
            _ => {}
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        if v & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            // Refuse features we did not offer, and legacy drivers (no VERSION_1).
            let offered = self.offered_features();
            if self.driver_features & !offered != 0
                || self.driver_features & VIRTIO_F_VERSION_1 == 0
            {
                self.status = v & !STATUS_FEATURES_OK;
                return;
            }
        }
        self.status = v;
        if v & STATUS_DRIVER_OK != 0 && !self.activated {
            let ok = self.status & STATUS_FEATURES_OK != 0
                && self
                    .queues
                    .iter()
                    .all(|q| q.ready && q.validate(&self.mem).is_ok());
            let activation = Activation {
                mem: self.mem.clone(),
                queues: self.queues.clone(),
                queue_evts: self.queue_evts.clone(),
                interrupt: self.interrupt.clone(),
                spawner: self.spawner.clone(),
            };
            if ok && self.device.activate(activation).is_ok() {
                self.activated = true;
            } else {
                self.status |= STATUS_NEEDS_RESET;
            }
        }
    }

    /// Stop the device (VM teardown).
    pub fn shutdown(&mut self) {
        if self.activated {
            self.device.reset();
            self.activated = false;
        }
    }
}
