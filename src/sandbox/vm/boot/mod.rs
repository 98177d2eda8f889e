//! Putting a kernel in guest memory: format detection (ELF or bzImage), command line,
//! initramfs placement, boot_params / PVH start info, and the entry state of each vCPU.

pub mod bzimage;
pub mod elf;
pub mod layout;
pub mod mptable;
pub mod params;
pub mod x86_64;

use std::path::Path;

use crate::sandbox::vm::memory::{GuestMemory, MMIO_HOLE_START};
use crate::{err, Context, Result};
use layout::*;
pub use x86_64::EntryMode;

/// How vCPUs other than the first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApStart {
    /// At the same entry, in the same mode (`rdi` = vCPU index): plain ELF programs.
    SameEntry,
    /// Halted, waiting for INIT/SIPI from the boot vCPU (Linux brings its APs up itself).
    WaitForSipi,
}

/// The result of loading: where and how vCPUs start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootSetup {
    pub entry: u64,
    pub mode: EntryMode,
    pub aps: ApStart,
}

/// Load `kernel` (ELF or bzImage), `cmdline` and `initramfs` into `mem`, and write the shared
/// CPU tables and the MP table for `vcpus`.
pub fn load_kernel(
    mem: &GuestMemory,
    kernel: &Path,
    cmdline: &str,
    initramfs: Option<&Path>,
    vcpus: u32,
) -> Result<BootSetup> {
    let name = kernel.display().to_string();
    let bytes = std::fs::read(kernel).with_context(|| format!("reading kernel {name}"))?;
    x86_64::write_tables(mem)?;
    mptable::write(mem, vcpus)?;
    let (kernel_end, header, initrd_max, cmdline_max, setup);
    if elf::is_elf(&bytes) {
        let l = elf::load(mem, &bytes, &name)?;
        kernel_end = l.end;
        header = None;
        initrd_max = 0x7fff_ffff;
        cmdline_max = CMDLINE_MAX as u64;
        setup = match l.pvh_entry {
            Some(e) => BootSetup {
                entry: u64::from(e),
                mode: EntryMode::Pvh32 {
                    start_info: PVH_INFO_ADDR,
                },
                aps: ApStart::WaitForSipi,
            },
            None => BootSetup {
                entry: l.entry,
                mode: EntryMode::Long64 {
                    boot_params: BOOT_PARAMS_ADDR,
                },
                aps: ApStart::SameEntry,
            },
        };
    } else if bzimage::is_bzimage(&bytes) {
        let l = bzimage::load(mem, &bytes, &name)?;
        kernel_end = l.end;
        header = Some(l.setup_header);
        initrd_max = l.initrd_addr_max;
        cmdline_max = l.cmdline_size.min(CMDLINE_MAX as u64);
        setup = BootSetup {
            entry: l.entry,
            mode: EntryMode::Long64 {
                boot_params: BOOT_PARAMS_ADDR,
            },
            aps: ApStart::WaitForSipi,
        };
    } else if bytes.is_empty() {
        return Err(err!("kernel {name} is empty"));
    } else {
        return Err(err!("kernel {name} is neither an ELF file nor a bzImage"));
    }

    if cmdline.len() as u64 >= cmdline_max || cmdline.contains('\0') {
        return Err(err!(
            "kernel command line is {} bytes, the kernel accepts at most {}",
            cmdline.len(),
            cmdline_max.saturating_sub(1)
        ));
    }
    let mut c = cmdline.as_bytes().to_vec();
    c.push(0);
    mem.write(CMDLINE_ADDR, &c)?;

    let initramfs = match initramfs {
        None => None,
        Some(p) => {
            let data =
                std::fs::read(p).with_context(|| format!("reading initramfs {}", p.display()))?;
            let top = mem.size().min(MMIO_HOLE_START).min(initrd_max + 1);
            let addr = top.checked_sub(data.len() as u64).map(|a| a & !0xfff);
            match addr {
                Some(a) if a >= kernel_end && !data.is_empty() => {
                    mem.write(a, &data)?;
                    Some((a, data.len() as u64))
                }
                _ => {
                    return Err(err!(
                        "initramfs {} ({} KiB) does not fit in guest memory above the kernel ({} MiB total)",
                        p.display(),
                        data.len() >> 10,
                        mem.size() >> 20
                    ))
                }
            }
        }
    };
    let extras = params::BootExtras {
        cmdline_addr: CMDLINE_ADDR,
        initramfs,
    };
    match setup.mode {
        EntryMode::Long64 { .. } => params::write_boot_params(mem, header.as_deref(), extras)?,
        EntryMode::Pvh32 { .. } => params::write_pvh_start_info(mem, extras)?,
    }
    Ok(setup)
}
