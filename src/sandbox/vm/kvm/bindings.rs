//! The KVM ABI for x86_64: ioctl numbers and the `#[repr(C)]` structs they take, transcribed
//! from `<linux/kvm.h>` (only what this VMM uses). Sizes are checked by tests below.

/// `_IOC(dir, 0xAE, nr, size)` as the kernel encodes it.
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0xAE << 8) | nr
}
const fn io(nr: u64) -> u64 {
    ioc(0, nr, 0)
}
const fn iow<T>(nr: u64) -> u64 {
    ioc(1, nr, std::mem::size_of::<T>())
}
const fn ior<T>(nr: u64) -> u64 {
    ioc(2, nr, std::mem::size_of::<T>())
}
const fn iowr<T>(nr: u64) -> u64 {
    ioc(3, nr, std::mem::size_of::<T>())
}

pub const KVM_API_VERSION: i32 = 12;

pub const KVM_GET_API_VERSION: u64 = io(0x00);
pub const KVM_CREATE_VM: u64 = io(0x01);
pub const KVM_CHECK_EXTENSION: u64 = io(0x03);
pub const KVM_GET_VCPU_MMAP_SIZE: u64 = io(0x04);
pub const KVM_GET_SUPPORTED_CPUID: u64 = iowr::<KvmCpuid2Header>(0x05);
pub const KVM_CREATE_VCPU: u64 = io(0x41);
pub const KVM_SET_USER_MEMORY_REGION: u64 = iow::<KvmUserspaceMemoryRegion>(0x46);
pub const KVM_SET_TSS_ADDR: u64 = io(0x47);
pub const KVM_SET_IDENTITY_MAP_ADDR: u64 = iow::<u64>(0x48);
pub const KVM_CREATE_IRQCHIP: u64 = io(0x60);
pub const KVM_IRQFD: u64 = iow::<KvmIrqfd>(0x76);
pub const KVM_CREATE_PIT2: u64 = iow::<KvmPitConfig>(0x77);
pub const KVM_IOEVENTFD: u64 = iow::<KvmIoeventfd>(0x79);
pub const KVM_RUN: u64 = io(0x80);
pub const KVM_GET_REGS: u64 = ior::<KvmRegs>(0x81);
pub const KVM_SET_REGS: u64 = iow::<KvmRegs>(0x82);
pub const KVM_GET_SREGS: u64 = ior::<KvmSregs>(0x83);
pub const KVM_SET_SREGS: u64 = iow::<KvmSregs>(0x84);
pub const KVM_SET_FPU: u64 = iow::<KvmFpu>(0x8d);
pub const KVM_SET_CPUID2: u64 = iow::<KvmCpuid2Header>(0x90);
pub const KVM_SET_MP_STATE: u64 = iow::<u32>(0x99);

pub const KVM_CAP_IRQCHIP: u64 = 0;
pub const KVM_CAP_USER_MEMORY: u64 = 3;
pub const KVM_CAP_IOEVENTFD: u64 = 36;
pub const KVM_CAP_IRQFD: u64 = 32;
pub const KVM_CAP_PIT2: u64 = 33;
pub const KVM_CAP_EXT_CPUID: u64 = 7;
pub const KVM_CAP_IMMEDIATE_EXIT: u64 = 136;

pub const KVM_EXIT_UNKNOWN: u32 = 0;
pub const KVM_EXIT_EXCEPTION: u32 = 1;
pub const KVM_EXIT_IO: u32 = 2;
pub const KVM_EXIT_HLT: u32 = 5;
pub const KVM_EXIT_MMIO: u32 = 6;
pub const KVM_EXIT_SHUTDOWN: u32 = 8;
pub const KVM_EXIT_FAIL_ENTRY: u32 = 9;
pub const KVM_EXIT_INTR: u32 = 10;
pub const KVM_EXIT_INTERNAL_ERROR: u32 = 17;
pub const KVM_EXIT_SYSTEM_EVENT: u32 = 24;

pub const KVM_EXIT_IO_IN: u8 = 0;

pub const KVM_MP_STATE_RUNNABLE: u32 = 0;
pub const KVM_PIT_SPEAKER_DUMMY: u32 = 1;
pub const KVM_IOEVENTFD_FLAG_DATAMATCH: u32 = 1;
pub const KVM_IRQFD_FLAG_DEASSIGN: u32 = 1;
pub const KVM_IOEVENTFD_FLAG_DEASSIGN: u32 = 1 << 2;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct KvmUserspaceMemoryRegion {
    pub slot: u32,
    pub flags: u32,
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct KvmRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct KvmSegment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
    pub padding: u8,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct KvmDtable {
    pub base: u64,
    pub limit: u16,
    pub padding: [u16; 3],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct KvmSregs {
    pub cs: KvmSegment,
    pub ds: KvmSegment,
    pub es: KvmSegment,
    pub fs: KvmSegment,
    pub gs: KvmSegment,
    pub ss: KvmSegment,
    pub tr: KvmSegment,
    pub ldt: KvmSegment,
    pub gdt: KvmDtable,
    pub idt: KvmDtable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    pub interrupt_bitmap: [u64; 4],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct KvmFpu {
    pub fpr: [[u8; 16]; 8],
    pub fcw: u16,
    pub fsw: u16,
    pub ftwx: u8,
    pub pad1: u8,
    pub last_opcode: u16,
    pub last_ip: u64,
    pub last_dp: u64,
    pub xmm: [[u8; 16]; 16],
    pub mxcsr: u32,
    pub pad2: u32,
}

/// Header of `struct kvm_cpuid2`; `nent` entries follow it.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct KvmCpuid2Header {
    pub nent: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmCpuidEntry2 {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
    pub padding: [u32; 3],
}

/// Header of `struct kvm_msrs`; `nmsrs` entries follow it.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct KvmIrqfd {
    pub fd: u32,
    pub gsi: u32,
    pub flags: u32,
    pub resamplefd: u32,
    pub pad: [u8; 16],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KvmIoeventfd {
    pub datamatch: u64,
    pub addr: u64,
    pub len: u32,
    pub fd: i32,
    pub flags: u32,
    pub pad: [u8; 36],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct KvmPitConfig {
    pub flags: u32,
    pub pad: [u32; 15],
}

/// Byte offsets into the shared `struct kvm_run` page (only the fields this VMM reads/writes).
pub mod run_offsets {
    pub const IMMEDIATE_EXIT: usize = 1;
    pub const EXIT_REASON: usize = 8;
    /// Start of the exit-specific union.
    pub const UNION: usize = 32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn struct_sizes_match_the_kernel_abi() {
        assert_eq!(size_of::<KvmUserspaceMemoryRegion>(), 32);
        assert_eq!(size_of::<KvmRegs>(), 144);
        assert_eq!(size_of::<KvmSegment>(), 24);
        assert_eq!(size_of::<KvmSregs>(), 312);
        assert_eq!(size_of::<KvmFpu>(), 416);
        assert_eq!(size_of::<KvmCpuidEntry2>(), 40);
        assert_eq!(size_of::<KvmIrqfd>(), 32);
        assert_eq!(size_of::<KvmIoeventfd>(), 64);
        assert_eq!(size_of::<KvmPitConfig>(), 64);
        assert_eq!(KVM_RUN, 0xAE80);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_AE46);
        assert_eq!(KVM_GET_SREGS, 0x8138_AE83);
        assert_eq!(KVM_GET_SUPPORTED_CPUID, 0xC008_AE05);
    }
}
