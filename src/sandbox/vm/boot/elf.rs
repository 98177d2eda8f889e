//! ELF64 kernel loader: copies `PT_LOAD` segments to their physical addresses and finds the
//! entry point — the PVH 32-bit entry from a `Xen` `PHYS32_ENTRY` note when present, else
//! `e_entry` (entered in 64-bit mode).

use crate::sandbox::vm::memory::GuestMemory;
use crate::{err, Result};

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedElf {
    pub entry: u64,
    /// PVH entry (32-bit protected mode), if the kernel advertises one.
    pub pvh_entry: Option<u32>,
    /// First byte past the highest loaded segment.
    pub end: u64,
}

pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Load `bytes` (an ELF file named `name` in errors) into `mem`.
pub fn load(mem: &GuestMemory, bytes: &[u8], name: &str) -> Result<LoadedElf> {
    let bad = |what: &str| err!("kernel {name}: {what}");
    if bytes.len() < 64 || !is_elf(bytes) {
        return Err(bad("not an ELF file (truncated header or bad magic)"));
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF"));
    }
    let machine = u16_at(bytes, 18).unwrap_or(0);
    if machine != 62 {
        return Err(bad(&format!("ELF machine {machine} is not x86_64 (62)")));
    }
    let entry = u64_at(bytes, 24).unwrap_or(0);
    let phoff = u64_at(bytes, 32).unwrap_or(0) as usize;
    let phentsize = u16_at(bytes, 54).unwrap_or(0) as usize;
    let phnum = u16_at(bytes, 56).unwrap_or(0) as usize;
    if phnum == 0 || phentsize < 56 {
        return Err(bad("ELF has no program headers"));
    }
    let mut end = 0u64;
    let mut pvh_entry = None;
    let mut loaded_any = false;
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i * phentsize)
            .and_then(|o| bytes.get(o..o + 56))
            .ok_or_else(|| bad(&format!("program header {i} lies outside the file")))?;
        let p_type = u32_at(ph, 0).unwrap_or(0);
        let offset = u64_at(ph, 8).unwrap_or(0) as usize;
        let paddr = u64_at(ph, 24).unwrap_or(0);
        let filesz = u64_at(ph, 32).unwrap_or(0) as usize;
        let memsz = u64_at(ph, 40).unwrap_or(0);
        let data = offset
            .checked_add(filesz)
            .and_then(|e| bytes.get(offset..e))
            .ok_or_else(|| bad(&format!("segment {i} data lies outside the file")))?;
        match p_type {
            PT_LOAD => {
                if (filesz as u64) > memsz {
                    return Err(bad(&format!(
                        "segment {i} file size exceeds its memory size"
                    )));
                }
                mem.write(paddr, data)
                    .and_then(|_| {
                        mem.fill_zero(paddr + filesz as u64, (memsz - filesz as u64) as usize)
                    })
                    .map_err(|e| {
                        bad(&format!(
                            "segment {i} at {paddr:#x} (+{memsz:#x}) does not fit: {e}"
                        ))
                    })?;
                end = end.max(paddr + memsz);
                loaded_any = true;
            }
            PT_NOTE => {
                if let Some(e) = find_pvh_note(data) {
                    pvh_entry = Some(e);
                }
            }
            _ => {}
        }
    }
    if !loaded_any {
        return Err(bad("ELF has no loadable segment"));
    }
    Ok(LoadedElf {
        entry,
        pvh_entry,
        end,
    })
}

/// Walk an ELF note segment for Xen's PHYS32_ENTRY note.
fn find_pvh_note(notes: &[u8]) -> Option<u32> {
    let align4 = |n: usize| (n + 3) & !3;
    let mut off = 0;
    while off + 12 <= notes.len() {
        let namesz = u32_at(notes, off)? as usize;
        let descsz = u32_at(notes, off + 4)? as usize;
        let ntype = u32_at(notes, off + 8)?;
        let name_off = off + 12;
        let desc_off = name_off + align4(namesz);
        let name = notes.get(name_off..name_off + namesz)?;
        if ntype == XEN_ELFNOTE_PHYS32_ENTRY && name.starts_with(b"Xen") && descsz >= 4 {
            return u32_at(notes, desc_off);
        }
        off = desc_off + align4(descsz);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF: header, one PT_LOAD (4 bytes file, 16 memory) and optionally a PVH note.
    fn tiny_elf(paddr: u64, with_note: bool) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18] = 62;
        b[24..32].copy_from_slice(&(paddr + 1).to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54] = 56;
        let phnum = if with_note { 2 } else { 1 };
        b[56] = phnum;
        let data_off = 64 + 56 * phnum as u64;
        let mut ph = vec![0u8; 56];
        ph[0] = 1;
        ph[8..16].copy_from_slice(&data_off.to_le_bytes());
        ph[24..32].copy_from_slice(&paddr.to_le_bytes());
        ph[32..40].copy_from_slice(&4u64.to_le_bytes());
        ph[40..48].copy_from_slice(&16u64.to_le_bytes());
        b.extend_from_slice(&ph);
        let mut note = Vec::new();
        if with_note {
            note.extend_from_slice(&4u32.to_le_bytes());
            note.extend_from_slice(&4u32.to_le_bytes());
            note.extend_from_slice(&18u32.to_le_bytes());
            note.extend_from_slice(b"Xen\0");
            note.extend_from_slice(&0x1234u32.to_le_bytes());
            let mut ph = vec![0u8; 56];
            ph[0] = 4;
            ph[8..16].copy_from_slice(&(data_off + 4).to_le_bytes());
            ph[32..40].copy_from_slice(&(note.len() as u64).to_le_bytes());
            b.extend_from_slice(&ph);
        }
        b.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        b.extend_from_slice(&note);
        b
    }

    #[test]
    fn loads_segments_and_zero_fills_bss() {
        let m = GuestMemory::new(2 << 20).unwrap();
        m.write(0x100004, &[0xff; 12]).unwrap();
        let l = load(&m, &tiny_elf(0x100000, false), "k").unwrap();
        assert_eq!(l.entry, 0x100001);
        assert_eq!(l.end, 0x100010);
        assert_eq!(l.pvh_entry, None);
        let mut got = [0u8; 16];
        m.read(0x100000, &mut got).unwrap();
        assert_eq!(&got[..4], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&got[4..], &[0; 12]);
    }

    #[test]
    fn finds_the_pvh_note() {
        let m = GuestMemory::new(2 << 20).unwrap();
        let l = load(&m, &tiny_elf(0x100000, true), "k").unwrap();
        assert_eq!(l.pvh_entry, Some(0x1234));
    }

    #[test]
    fn rejects_corrupt_elves_with_one_line_errors() {
        let m = GuestMemory::new(2 << 20).unwrap();
        let good = tiny_elf(0x100000, false);
        let e = load(&m, &good[..40], "k.elf").unwrap_err().to_string();
        assert!(e.contains("k.elf") && e.contains("not an ELF"), "{e}");
        let mut wrong_arch = good.clone();
        wrong_arch[18] = 183;
        assert!(load(&m, &wrong_arch, "k")
            .unwrap_err()
            .to_string()
            .contains("not x86_64"));
        let mut truncated = good.clone();
        truncated.truncate(64 + 56 + 2);
        assert!(load(&m, &truncated, "k")
            .unwrap_err()
            .to_string()
            .contains("outside the file"));
        // Loads above the end of guest memory.
        let e = load(&m, &tiny_elf(0x400000, false), "k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit"), "{e}");
    }
}
