//! What the kernel is told at entry: the e820 memory map, Linux `boot_params` (zero page) and
//! the PVH `hvm_start_info`.

use super::layout::*;
use crate::sandbox::vm::memory::{GuestMemory, MMIO_HOLE_END, MMIO_HOLE_START};
use crate::Result;

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// Offsets in `struct boot_params` (arch/x86/include/uapi/asm/bootparam.h).
pub mod bp {
    pub const EXT_RAMDISK_IMAGE: u64 = 0x0c0;
    pub const EXT_RAMDISK_SIZE: u64 = 0x0c4;
    pub const EXT_CMD_LINE_PTR: u64 = 0x0c8;
    pub const E820_ENTRIES: u64 = 0x1e8;
    pub const SETUP_HEADER: u64 = 0x1f1;
    pub const BOOT_FLAG: u64 = 0x1fe;
    pub const HEADER: u64 = 0x202;
    pub const VERSION: u64 = 0x206;
    pub const TYPE_OF_LOADER: u64 = 0x210;
    pub const LOADFLAGS: u64 = 0x211;
    pub const RAMDISK_IMAGE: u64 = 0x218;
    pub const RAMDISK_SIZE: u64 = 0x21c;
    pub const HEAP_END_PTR: u64 = 0x224;
    pub const CMD_LINE_PTR: u64 = 0x228;
    pub const E820_TABLE: u64 = 0x2d0;
    pub const E820_MAX: usize = 128;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// RAM below the EBDA, the BIOS area reserved, RAM from 1 MiB up to the MMIO hole, and RAM
/// above 4 GiB when the guest has that much.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    let low_end = mem_size.min(MMIO_HOLE_START);
    if low_end > HIMEM_START {
        map.push(E820Entry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820_RAM,
        });
    }
    if mem_size > MMIO_HOLE_START {
        map.push(E820Entry {
            addr: MMIO_HOLE_END,
            size: mem_size - MMIO_HOLE_START,
            kind: E820_RAM,
        });
    }
    map
}

/// Where the initramfs and command line sit, for the structures below.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootExtras {
    pub cmdline_addr: u64,
    pub initramfs: Option<(u64, u64)>,
}

/// Fill the zero page at `BOOT_PARAMS_ADDR`. `setup_header` is the kernel's own header
/// (bzImage) copied to offset 0x1f1, or `None` for an ELF kernel, which gets a minimal one.
pub fn write_boot_params(
    mem: &GuestMemory,
    setup_header: Option<&[u8]>,
    extras: BootExtras,
) -> Result<()> {
    let base = BOOT_PARAMS_ADDR;
    mem.fill_zero(base, 4096)?;
    match setup_header {
        Some(h) => mem.write(base + bp::SETUP_HEADER, h)?,
        None => {
            mem.write_u16(base + bp::BOOT_FLAG, 0xAA55)?;
            mem.write(base + bp::HEADER, b"HdrS")?;
            mem.write_u16(base + bp::VERSION, 0x020f)?;
        }
    }
    mem.write(base + bp::TYPE_OF_LOADER, &[0xff])?;
    let mut flags = [0u8; 1];
    mem.read(base + bp::LOADFLAGS, &mut flags)?;
    // LOADED_HIGH | CAN_USE_HEAP
    mem.write(base + bp::LOADFLAGS, &[flags[0] | 0x01 | 0x80])?;
    mem.write_u16(base + bp::HEAP_END_PTR, 0xfe00)?;
    mem.write_u32(base + bp::CMD_LINE_PTR, extras.cmdline_addr as u32)?;
    mem.write_u32(
        base + bp::EXT_CMD_LINE_PTR,
        (extras.cmdline_addr >> 32) as u32,
    )?;
    if let Some((addr, size)) = extras.initramfs {
        mem.write_u32(base + bp::RAMDISK_IMAGE, addr as u32)?;
        mem.write_u32(base + bp::RAMDISK_SIZE, size as u32)?;
        mem.write_u32(base + bp::EXT_RAMDISK_IMAGE, (addr >> 32) as u32)?;
        mem.write_u32(base + bp::EXT_RAMDISK_SIZE, (size >> 32) as u32)?;
    }
    let map = e820_map(mem.size());
    mem.write(
        base + bp::E820_ENTRIES,
        &[map.len().min(bp::E820_MAX) as u8],
    )?;
    for (i, e) in map.iter().take(bp::E820_MAX).enumerate() {
        let at = base + bp::E820_TABLE + 20 * i as u64;
        mem.write_u64(at, e.addr)?;
        mem.write_u64(at + 8, e.size)?;
        mem.write_u32(at + 16, e.kind)?;
    }
    Ok(())
}

const HVM_START_MAGIC: u32 = 0x336e_c578;

/// Fill `hvm_start_info` (+ module list and memory map) for a PVH entry.
pub fn write_pvh_start_info(mem: &GuestMemory, extras: BootExtras) -> Result<()> {
    let at = PVH_INFO_ADDR;
    mem.fill_zero(at, 0x100)?;
    let map = e820_map(mem.size());
    mem.write_u32(at, HVM_START_MAGIC)?;
    mem.write_u32(at + 4, 1)?; // version
    if let Some((addr, size)) = extras.initramfs {
        mem.write_u32(at + 12, 1)?;
        mem.write_u64(at + 16, PVH_MODLIST_ADDR)?;
        mem.write_u64(PVH_MODLIST_ADDR, addr)?;
        mem.write_u64(PVH_MODLIST_ADDR + 8, size)?;
        mem.write_u64(PVH_MODLIST_ADDR + 16, 0)?;
        mem.write_u64(PVH_MODLIST_ADDR + 24, 0)?;
    }
    mem.write_u64(at + 24, extras.cmdline_addr)?;
    mem.write_u64(at + 40, PVH_MEMMAP_ADDR)?;
    mem.write_u32(at + 48, map.len() as u32)?;
    for (i, e) in map.iter().enumerate() {
        let m = PVH_MEMMAP_ADDR + 24 * i as u64;
        mem.write_u64(m, e.addr)?;
        mem.write_u64(m + 8, e.size)?;
        mem.write_u32(m + 16, e.kind)?;
        mem.write_u32(m + 20, 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_covers_ram_and_skips_the_hole() {
        let small = e820_map(64 << 20);
        assert_eq!(small.len(), 3);
        assert_eq!(
            small[2],
            E820Entry {
                addr: HIMEM_START,
                size: (64 << 20) - HIMEM_START,
                kind: E820_RAM
            }
        );
        let big = e820_map(MMIO_HOLE_START + (1 << 30));
        assert_eq!(
            big[3],
            E820Entry {
                addr: MMIO_HOLE_END,
                size: 1 << 30,
                kind: E820_RAM
            }
        );
    }
}
