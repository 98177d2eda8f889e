//! bzImage loader for the Linux x86 64-bit boot protocol: validates the setup header, loads the
//! protected-mode kernel, and returns the header for `boot_params` and the 64-bit entry.

use super::layout::HIMEM_START;
use crate::sandbox::vm::memory::GuestMemory;
use crate::{err, Result};

const HDR_SETUP_SECTS: usize = 0x1f1;
const HDR_BOOT_FLAG: usize = 0x1fe;
const HDR_JUMP: usize = 0x200;
const HDR_MAGIC: usize = 0x202;
const HDR_VERSION: usize = 0x206;
const HDR_INITRD_ADDR_MAX: usize = 0x22c;
const HDR_KERNEL_ALIGNMENT: usize = 0x230;
const HDR_RELOCATABLE: usize = 0x234;
const HDR_XLOADFLAGS: usize = 0x236;
const HDR_CMDLINE_SIZE: usize = 0x238;
const HDR_INIT_SIZE: usize = 0x260;
const XLF_KERNEL_64: u16 = 1;

#[derive(Debug, Clone)]
pub struct LoadedBzImage {
    /// 64-bit entry point (load address + 0x200).
    pub entry: u64,
    /// The setup header bytes (from 0x1f1), to copy into `boot_params`.
    pub setup_header: Vec<u8>,
    pub initrd_addr_max: u64,
    pub cmdline_size: u64,
    /// First byte past the kernel's working area (`load + init_size`).
    pub end: u64,
}

pub fn is_bzimage(bytes: &[u8]) -> bool {
    bytes.len() > HDR_MAGIC + 4 && &bytes[HDR_MAGIC..HDR_MAGIC + 4] == b"HdrS"
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub fn load(mem: &GuestMemory, bytes: &[u8], name: &str) -> Result<LoadedBzImage> {
    let bad = |what: String| err!("kernel {name}: {what}");
    if bytes.len() < 0x270 || !is_bzimage(bytes) {
        return Err(bad("not a bzImage (no HdrS setup header)".into()));
    }
    if u16_at(bytes, HDR_BOOT_FLAG) != 0xAA55 {
        return Err(bad("bzImage boot flag is not 0xAA55".into()));
    }
    let version = u16_at(bytes, HDR_VERSION);
    if version < 0x020c {
        return Err(bad(format!(
            "boot protocol {version:#x} too old (need 2.12 for 64-bit entry)"
        )));
    }
    if u16_at(bytes, HDR_XLOADFLAGS) & XLF_KERNEL_64 == 0 {
        return Err(bad(
            "bzImage has no 64-bit entry point (XLF_KERNEL_64 unset)".into(),
        ));
    }
    let setup_sects = match bytes[HDR_SETUP_SECTS] {
        0 => 4,
        n => n as usize,
    };
    let kernel_off = (setup_sects + 1) * 512;
    let kernel = bytes
        .get(kernel_off..)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| bad(format!("truncated: setup claims {setup_sects} sectors")))?;
    let header_end = HDR_JUMP + 2 + bytes[HDR_JUMP + 1] as usize;
    let setup_header = bytes
        .get(HDR_SETUP_SECTS..header_end)
        .ok_or_else(|| bad("truncated setup header".into()))?
        .to_vec();
    let align = u64::from(u32_at(bytes, HDR_KERNEL_ALIGNMENT)).max(1);
    let load_addr = if bytes[HDR_RELOCATABLE] != 0 && align.is_power_of_two() {
        HIMEM_START.div_ceil(align) * align
    } else {
        HIMEM_START
    };
    let init_size = u64::from(u32_at(bytes, HDR_INIT_SIZE)).max(kernel.len() as u64);
    if load_addr + init_size > mem.size() {
        return Err(bad(format!(
            "needs {} MiB from {load_addr:#x} to decompress, more than guest memory ({} MiB)",
            init_size.div_ceil(1 << 20),
            mem.size() >> 20
        )));
    }
    mem.write(load_addr, kernel)
        .map_err(|e| bad(format!("loading: {e}")))?;
    Ok(LoadedBzImage {
        entry: load_addr + 0x200,
        setup_header,
        initrd_addr_max: u64::from(u32_at(bytes, HDR_INITRD_ADDR_MAX)),
        cmdline_size: u64::from(u32_at(bytes, HDR_CMDLINE_SIZE)),
        end: load_addr + init_size,
    })
}

/// Build a bzImage around `payload` (protected-mode code whose 64-bit entry is at offset
/// 0x200): used by tests to exercise this loader with a guest of our own.
pub fn wrap_payload(payload: &[u8]) -> Vec<u8> {
    let setup_sects = 4usize;
    let mut img = vec![0u8; (setup_sects + 1) * 512];
    img[HDR_SETUP_SECTS] = setup_sects as u8;
    img[HDR_BOOT_FLAG..HDR_BOOT_FLAG + 2].copy_from_slice(&0xAA55u16.to_le_bytes());
    img[HDR_JUMP] = 0xeb;
    img[HDR_JUMP + 1] = (0x268 - 0x202) as u8;
    img[HDR_MAGIC..HDR_MAGIC + 4].copy_from_slice(b"HdrS");
    img[HDR_VERSION..HDR_VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
    img[HDR_INITRD_ADDR_MAX..HDR_INITRD_ADDR_MAX + 4]
        .copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    img[HDR_KERNEL_ALIGNMENT..HDR_KERNEL_ALIGNMENT + 4]
        .copy_from_slice(&0x20_0000u32.to_le_bytes());
    img[HDR_RELOCATABLE] = 1;
    img[HDR_XLOADFLAGS..HDR_XLOADFLAGS + 2].copy_from_slice(&XLF_KERNEL_64.to_le_bytes());
    img[HDR_CMDLINE_SIZE..HDR_CMDLINE_SIZE + 4].copy_from_slice(&2048u32.to_le_bytes());
    img[HDR_INIT_SIZE..HDR_INIT_SIZE + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    img.extend_from_slice(payload);
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_payload_at_the_aligned_address() {
        let m = GuestMemory::new(8 << 20).unwrap();
        let img = wrap_payload(&[0x90; 0x300]);
        let l = load(&m, &img, "bz").unwrap();
        assert_eq!(l.entry, 0x20_0200);
        assert_eq!(l.cmdline_size, 2048);
        assert_eq!(&l.setup_header[0x202 - 0x1f1..0x206 - 0x1f1], b"HdrS");
    }

    #[test]
    fn rejects_bad_images() {
        let m = GuestMemory::new(2 << 20).unwrap();
        let mut img = wrap_payload(&[0x90; 0x300]);
        assert!(load(&m, &img, "bz")
            .unwrap_err()
            .to_string()
            .contains("more than guest memory"));
        img[HDR_XLOADFLAGS] = 0;
        assert!(load(&m, &img, "bz")
            .unwrap_err()
            .to_string()
            .contains("64-bit"));
        assert!(load(&m, &img[..0x200], "bz")
            .unwrap_err()
            .to_string()
            .contains("not a bzImage"));
        img[HDR_XLOADFLAGS] = 1;
        assert!(load(&m, &img[..0x300], "bz")
            .unwrap_err()
            .to_string()
            .contains("truncated"));
    }
}
