//! Where the VMM puts boot structures in guest physical memory (all below 1 MiB, away from
//! where kernels load).

/// The GDT the vCPUs start with.
pub const GDT_ADDR: u64 = 0x500;
/// An empty IDT (limit 0): guests install their own before enabling interrupts.
pub const IDT_ADDR: u64 = 0x600;
/// PVH `hvm_start_info`, its memory map follows at `PVH_MEMMAP_ADDR`.
pub const PVH_INFO_ADDR: u64 = 0x6000;
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
pub const PVH_MEMMAP_ADDR: u64 = 0x6100;
/// Linux `boot_params` ("zero page").
pub const BOOT_PARAMS_ADDR: u64 = 0x7000;
/// Identity page tables: PML4, PDPT, then four page directories mapping 4 GiB with 2 MiB pages.
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xA000;
pub const PD_ADDR: u64 = 0xB000;
/// Kernel command line (NUL-terminated).
pub const CMDLINE_ADDR: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 0x10000;
/// Per-vCPU boot stacks grow down from here, `STACK_SIZE` apart.
pub const STACKS_TOP: u64 = 0x80000;
pub const STACK_SIZE: u64 = 0x4000;
/// End of conventional low memory (the EBDA starts here on PCs).
pub const EBDA_START: u64 = 0x9FC00;
/// Where kernels load by default (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;
/// Most vCPUs the boot stack area holds.
pub const MAX_VCPUS: u32 = 16;

/// GDT selectors (Linux's `__BOOT_CS`/`__BOOT_DS`, plus a 32-bit code segment for PVH).
pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;
pub const BOOT_TSS: u16 = 0x20;
pub const BOOT_CS32: u16 = 0x28;

/// Top of vCPU `index`'s boot stack (`rsp % 16 == 8`, as if just called, for C entry points).
pub fn stack_top(index: u32) -> u64 {
    STACKS_TOP - u64::from(index) * STACK_SIZE - 8
}
