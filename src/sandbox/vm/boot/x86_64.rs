//! x86_64 CPU state at entry: GDT, identity-mapped page tables, and the register sets for 64-bit
//! long-mode entry (Linux 64-bit boot protocol, plain ELF) or 32-bit flat protected mode (PVH).

use super::layout::*;
use crate::sandbox::vm::kvm::bindings::{KvmCpuidEntry2, KvmFpu, KvmRegs, KvmSegment};
use crate::sandbox::vm::kvm::VcpuFd;
use crate::sandbox::vm::memory::GuestMemory;
use crate::Result;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// GDT entries, indexed by selector / 8.
const GDT: [u64; 6] = [
    0,
    0,
    0x00af_9b00_0000_ffff, // 0x10: 64-bit code, DPL 0
    0x00cf_9300_0000_ffff, // 0x18: flat data
    0x008f_8b00_0000_ffff, // 0x20: TSS (busy), required by VMX for a valid TR
    0x00cf_9b00_0000_ffff, // 0x28: 32-bit flat code (PVH entry)
];

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode, paging on (identity map), `rsi` = `boot_params`.
    Long64 { boot_params: u64 },
    /// 32-bit protected mode, paging off, `rbx` = `hvm_start_info` (PVH boot ABI).
    Pvh32 { start_info: u64 },
}

/// Write the GDT, the empty IDT and the identity page tables (shared by all vCPUs).
pub fn write_tables(mem: &GuestMemory) -> Result<()> {
    for (i, e) in GDT.iter().enumerate() {
        mem.write_u64(GDT_ADDR + 8 * i as u64, *e)?;
    }
    mem.write_u64(IDT_ADDR, 0)?;
    // PML4[0] -> PDPT; PDPT[0..4] -> PD pages; each PD maps 1 GiB with 2 MiB pages.
    mem.fill_zero(PML4_ADDR, 4096)?;
    mem.fill_zero(PDPT_ADDR, 4096)?;
    mem.write_u64(PML4_ADDR, PDPT_ADDR | 0x3)?;
    for g in 0..4u64 {
        let pd = PD_ADDR + g * 4096;
        mem.write_u64(PDPT_ADDR + g * 8, pd | 0x3)?;
        let mut page = [0u8; 4096];
        for j in 0..512u64 {
            let entry = ((g << 30) + (j << 21)) | 0x83; // present, writable, 2 MiB
            page[j as usize * 8..j as usize * 8 + 8].copy_from_slice(&entry.to_le_bytes());
        }
        mem.write(pd, &page)?;
    }
    Ok(())
}

fn segment(selector: u16) -> KvmSegment {
    let d = GDT[selector as usize / 8];
    let base = ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24);
    let raw_limit = (d & 0xffff) | (((d >> 48) & 0xf) << 16);
    let g = ((d >> 55) & 1) as u8;
    KvmSegment {
        base,
        limit: if g == 1 {
            ((raw_limit << 12) | 0xfff) as u32
        } else {
            raw_limit as u32
        },
        selector,
        type_: ((d >> 40) & 0xf) as u8,
        present: ((d >> 47) & 1) as u8,
        dpl: ((d >> 45) & 3) as u8,
        db: ((d >> 54) & 1) as u8,
        s: ((d >> 44) & 1) as u8,
        l: ((d >> 53) & 1) as u8,
        g,
        avl: ((d >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// CPUID for vCPU `index`: what KVM supports, with this vCPU's APIC id filled in.
pub fn cpuid_for(supported: &[KvmCpuidEntry2], index: u32) -> Vec<KvmCpuidEntry2> {
    let mut entries = supported.to_vec();
    for e in &mut entries {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x00ff_ffff) | (index << 24);
                e.ecx |= 1 << 31; // running under a hypervisor
            }
            0xb | 0x1f => e.edx = index,
            _ => {}
        }
    }
    entries
}

/// Put vCPU `index` in its entry state. `entry` is where it starts executing.
pub fn setup_vcpu(
    vcpu: &VcpuFd,
    index: u32,
    entry: u64,
    mode: EntryMode,
    cpuid: &[KvmCpuidEntry2],
) -> Result<()> {
    vcpu.set_cpuid(&cpuid_for(cpuid, index))?;
    let mut sregs = vcpu.get_sregs()?;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 0;
    let data = segment(BOOT_DS);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(BOOT_TSS);
    let mut regs = KvmRegs {
        rflags: 0x2,
        rip: entry,
        rsp: stack_top(index),
        rdi: u64::from(index),
        ..Default::default()
    };
    match mode {
        EntryMode::Long64 { boot_params } => {
            sregs.cs = segment(BOOT_CS);
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
            sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rsi = boot_params;
        }
        EntryMode::Pvh32 { start_info } => {
            sregs.cs = segment(BOOT_CS32);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rbx = start_info;
        }
    }
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&regs)?;
    vcpu.set_fpu(&KvmFpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_from_descriptors() {
        let cs = segment(BOOT_CS);
        assert_eq!((cs.l, cs.db, cs.present, cs.s, cs.type_), (1, 0, 1, 1, 0xb));
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment(BOOT_DS);
        assert_eq!((ds.l, ds.db, ds.type_), (0, 1, 3));
        let cs32 = segment(BOOT_CS32);
        assert_eq!((cs32.l, cs32.db), (0, 1));
    }

    #[test]
    fn page_tables_identity_map_4gib() {
        let m = GuestMemory::new(1 << 20).unwrap();
        write_tables(&m).unwrap();
        assert_eq!(m.read_u64(PML4_ADDR).unwrap(), PDPT_ADDR | 3);
        assert_eq!(
            m.read_u64(PDPT_ADDR + 24).unwrap(),
            (PD_ADDR + 3 * 4096) | 3
        );
        // Last 2 MiB page of the 4th GiB.
        assert_eq!(
            m.read_u64(PD_ADDR + 3 * 4096 + 511 * 8).unwrap(),
            (0xFFE0_0000) | 0x83
        );
    }
}
