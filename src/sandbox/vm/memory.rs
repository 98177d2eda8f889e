//! Guest physical memory: one anonymous host mapping, presented to KVM as one or two slots
//! around the 32-bit MMIO hole. Pages are touched lazily, so host RSS tracks what the guest uses.

use std::io;

use crate::{err, Result};

/// Start of the hole below 4 GiB where device MMIO (virtio-mmio, IOAPIC, LAPIC) lives.
pub const MMIO_HOLE_START: u64 = 0xC000_0000;
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;

/// One contiguous piece of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub guest_addr: u64,
    pub size: u64,
    /// Offset of this region inside the host mapping.
    host_offset: u64,
}

/// Guest RAM. Shared (behind `Arc`) by vCPU and device threads; all access is by copying bytes
/// in or out, never by handing out Rust references into memory the guest can change.
pub struct GuestMemory {
    base: *mut u8,
    size: u64,
    regions: Vec<Region>,
}

// SAFETY: the mapping is plain memory that lives until drop; every access goes through
// bounds-checked raw copies, so sharing between threads creates no Rust references to racy data.
unsafe impl Send for GuestMemory {}
// SAFETY: as above.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// Reserve `size` bytes of guest RAM (page-aligned).
    pub fn new(size: u64) -> Result<GuestMemory> {
        if size == 0 || !size.is_multiple_of(4096) {
            return Err(err!(
                "guest memory size {size} is not a positive multiple of 4 KiB"
            ));
        }
        // SAFETY: a fresh anonymous private mapping; the result is checked and unmapped exactly
        // once in `drop`. NORESERVE: pages are only backed when the guest touches them.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(err!(
                "mapping {} MiB of guest memory: {}",
                size >> 20,
                io::Error::last_os_error()
            ));
        }
        let mut regions = vec![Region {
            guest_addr: 0,
            size: size.min(MMIO_HOLE_START),
            host_offset: 0,
        }];
        if size > MMIO_HOLE_START {
            regions.push(Region {
                guest_addr: MMIO_HOLE_END,
                size: size - MMIO_HOLE_START,
                host_offset: MMIO_HOLE_START,
            });
        }
        Ok(GuestMemory {
            base: ptr.cast(),
            size,
            regions,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Host address of a region's first byte (for KVM_SET_USER_MEMORY_REGION).
    pub fn host_addr(&self, region: &Region) -> u64 {
        self.base as u64 + region.host_offset
    }

    /// Host offset of `[addr, addr+len)` when it lies inside one region.
    fn offset(&self, addr: u64, len: usize) -> Result<usize> {
        let len = len as u64;
        for r in &self.regions {
            if addr >= r.guest_addr
                && addr
                    .checked_add(len)
                    .is_some_and(|end| end <= r.guest_addr + r.size)
            {
                return Ok((r.host_offset + addr - r.guest_addr) as usize);
            }
        }
        Err(err!(
            "guest address range {addr:#x}+{len:#x} is outside guest memory ({} MiB)",
            self.size >> 20
        ))
    }

    /// Fail unless `[addr, addr+len)` is guest RAM (check before sizing buffers by a length the
    /// guest chose).
    pub fn check(&self, addr: u64, len: u64) -> Result<()> {
        let len =
            usize::try_from(len).map_err(|_| err!("guest buffer length {len:#x} too large"))?;
        self.offset(addr, len).map(|_| ())
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        let off = self.offset(addr, data.len())?;
        // SAFETY: `off..off+len` is inside the mapping (checked by `offset`); the source is a
        // distinct Rust slice, so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(off), data.len()) };
        Ok(())
    }

    pub fn read(&self, addr: u64, data: &mut [u8]) -> Result<()> {
        let off = self.offset(addr, data.len())?;
        // SAFETY: as in `write`, with the copy going the other way.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(off), data.as_mut_ptr(), data.len()) };
        Ok(())
    }

    /// Zero `[addr, addr+len)`.
    pub fn fill_zero(&self, addr: u64, len: usize) -> Result<()> {
        let off = self.offset(addr, len)?;
        // SAFETY: inside the mapping (checked by `offset`).
        unsafe { std::ptr::write_bytes(self.base.add(off), 0, len) };
        Ok(())
    }

    pub fn read_u16(&self, addr: u64) -> Result<u16> {
        let off = self.offset(addr, 2)?;
        // SAFETY: inside the mapping; volatile because the guest may change it concurrently.
        Ok(unsafe { std::ptr::read_volatile(self.base.add(off) as *const u16) }.to_le())
    }
    pub fn read_u32(&self, addr: u64) -> Result<u32> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    pub fn read_u64(&self, addr: u64) -> Result<u64> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    pub fn write_u16(&self, addr: u64, v: u16) -> Result<()> {
        let off = self.offset(addr, 2)?;
        // SAFETY: inside the mapping; volatile so the store is not elided or split.
        unsafe { std::ptr::write_volatile(self.base.add(off) as *mut u16, v.to_le()) };
        Ok(())
    }
    pub fn write_u32(&self, addr: u64, v: u32) -> Result<()> {
        self.write(addr, &v.to_le_bytes())
    }
    pub fn write_u64(&self, addr: u64, v: u64) -> Result<()> {
        self.write(addr, &v.to_le_bytes())
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: `base`/`size` are what mmap returned in `new`; unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.size as usize) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_writes_and_rejects_out_of_range() {
        let m = GuestMemory::new(1 << 20).unwrap();
        m.write(0x1000, b"abc").unwrap();
        let mut b = [0; 3];
        m.read(0x1000, &mut b).unwrap();
        assert_eq!(&b, b"abc");
        m.write_u16(0x2000, 0xbeef).unwrap();
        assert_eq!(m.read_u16(0x2000).unwrap(), 0xbeef);
        let e = m.write((1 << 20) - 1, b"xy").unwrap_err();
        assert!(e.to_string().contains("outside guest memory"), "{e}");
        assert!(GuestMemory::new(100).is_err());
    }

    #[test]
    fn memory_above_the_hole_is_split_into_two_regions() {
        let m = GuestMemory::new(MMIO_HOLE_START + (1 << 20)).unwrap();
        assert_eq!(m.regions().len(), 2);
        assert_eq!(m.regions()[1].guest_addr, MMIO_HOLE_END);
        m.write(MMIO_HOLE_END + 10, b"x").unwrap();
        assert!(m.write(MMIO_HOLE_START, b"x").is_err());
    }
}
