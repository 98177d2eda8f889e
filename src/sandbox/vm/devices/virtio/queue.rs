//! The split virtqueue (virtio 1.x §2.7), device side: pop descriptor chains the driver made
//! available, return them as used. No indirect descriptors, no event index (not offered).

use std::sync::atomic::{fence, Ordering};

use crate::sandbox::vm::memory::GuestMemory;
use crate::{err, Result};

const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;
const VIRTQ_DESC_F_INDIRECT: u16 = 4;

/// Queue configuration as the driver wrote it through the transport.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    next_avail: u16,
    next_used: u16,
}

/// One descriptor: a guest buffer the device reads (`write == false`) or fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

/// A chain of descriptors, identified by its head index.
#[derive(Debug, Clone)]
pub struct DescChain {
    pub head: u16,
    pub descs: Vec<Desc>,
}

impl Queue {
    pub fn new(max_size: u16) -> Queue {
        Queue {
            max_size,
            size: max_size,
            ..Default::default()
        }
    }

    /// Check the driver's setup before activation.
    pub fn validate(&self, mem: &GuestMemory) -> Result<()> {
        let n = u64::from(self.size);
        if self.size == 0 || self.size > self.max_size || !self.size.is_power_of_two() {
            return Err(err!(
                "virtqueue size {} invalid (max {})",
                self.size,
                self.max_size
            ));
        }
        let fits = |addr: u64, len: u64| {
            let mut b = [0u8; 1];
            mem.read(addr, &mut b).is_ok() && mem.read(addr + len - 1, &mut b).is_ok()
        };
        if !fits(self.desc_table, 16 * n)
            || !fits(self.avail_ring, 6 + 2 * n)
            || !fits(self.used_ring, 6 + 8 * n)
        {
            return Err(err!("virtqueue rings lie outside guest memory"));
        }
        Ok(())
    }

    /// The next available chain, if the driver has published one.
    pub fn pop(&mut self, mem: &GuestMemory) -> Result<Option<DescChain>> {
        let avail_idx = mem.read_u16(self.avail_ring + 2)?;
        if avail_idx == self.next_avail {
            return Ok(None);
        }
        // Read the ring entry only after seeing the index that covers it.
        fence(Ordering::Acquire);
        let slot = u64::from(self.next_avail % self.size);
        let head = mem.read_u16(self.avail_ring + 4 + 2 * slot)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        let mut descs = Vec::new();
        let mut idx = head;
        loop {
            if idx >= self.size || descs.len() >= usize::from(self.size) {
                return Err(err!("virtqueue descriptor chain from {head} is malformed"));
            }
            let at = self.desc_table + 16 * u64::from(idx);
            let addr = mem.read_u64(at)?;
            let len = mem.read_u32(at + 8)?;
            let flags = mem.read_u16(at + 12)?;
            let next = mem.read_u16(at + 14)?;
            if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                return Err(err!("indirect descriptors were not negotiated"));
            }
            descs.push(Desc {
                addr,
                len,
                write: flags & VIRTQ_DESC_F_WRITE != 0,
            });
            if flags & VIRTQ_DESC_F_NEXT == 0 {
                break;
            }
            idx = next;
        }
        Ok(Some(DescChain { head, descs }))
    }

    /// Return chain `head` to the driver, having written `len` bytes into it.
    pub fn add_used(&mut self, mem: &GuestMemory, head: u16, len: u32) -> Result<()> {
        let slot = u64::from(self.next_used % self.size);
        let at = self.used_ring + 4 + 8 * slot;
        mem.write_u32(at, u32::from(head))?;
        mem.write_u32(at + 4, len)?;
        self.next_used = self.next_used.wrapping_add(1);
        // The element must be visible before the index that publishes it.
        fence(Ordering::Release);
        mem.write_u16(self.used_ring + 2, self.next_used)?;
        fence(Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_a_chain_and_publishes_it_used() {
        let m = GuestMemory::new(1 << 20).unwrap();
        let mut q = Queue::new(8);
        q.desc_table = 0x1000;
        q.avail_ring = 0x2000;
        q.used_ring = 0x3000;
        q.validate(&m).unwrap();
        // desc 0 -> desc 1 (device-writable)
        m.write_u64(0x1000, 0x8000).unwrap();
        m.write_u32(0x1008, 16).unwrap();
        m.write_u16(0x100c, VIRTQ_DESC_F_NEXT).unwrap();
        m.write_u16(0x100e, 1).unwrap();
        m.write_u64(0x1010, 0x9000).unwrap();
        m.write_u32(0x1018, 512).unwrap();
        m.write_u16(0x101c, VIRTQ_DESC_F_WRITE).unwrap();
        assert!(q.pop(&m).unwrap().is_none());
        m.write_u16(0x2004, 0).unwrap();
        m.write_u16(0x2002, 1).unwrap();
        let c = q.pop(&m).unwrap().unwrap();
        assert_eq!(c.head, 0);
        assert_eq!(
            c.descs,
            vec![
                Desc {
                    addr: 0x8000,
                    len: 16,
                    write: false
                },
                Desc {
                    addr: 0x9000,
                    len: 512,
                    write: true
                },
            ]
        );
        assert!(q.pop(&m).unwrap().is_none());
        q.add_used(&m, 0, 512).unwrap();
        assert_eq!(m.read_u16(0x3002).unwrap(), 1);
        assert_eq!(m.read_u32(0x3008).unwrap(), 512);
    }

    #[test]
    fn rejects_a_looping_chain() {
        let m = GuestMemory::new(1 << 20).unwrap();
        let mut q = Queue::new(4);
        q.desc_table = 0x1000;
        q.avail_ring = 0x2000;
        q.used_ring = 0x3000;
        m.write_u16(0x100c, VIRTQ_DESC_F_NEXT).unwrap();
        m.write_u16(0x100e, 0).unwrap();
        m.write_u16(0x2002, 1).unwrap();
        assert!(q.pop(&m).is_err());
    }
}
