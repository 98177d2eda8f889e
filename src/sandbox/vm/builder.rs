//! Assembling a VM from a [`VmConfig`]: KVM and its interrupt controllers, guest memory, the
//! kernel, the devices (wired with ioeventfd/irqfd) and the vCPUs in their entry state.

use std::sync::{Arc, Mutex};

use super::boot::{self, layout::MAX_VCPUS, ApStart};
use super::devices::serial::{Serial, COM1_IRQ};
use super::devices::virtio::block::Block;
use super::devices::virtio::console::Console;
use super::devices::virtio::mmio::{MmioTransport, REG_QUEUE_NOTIFY};
use super::devices::virtio::net::Net;
use super::devices::virtio::VirtioDevice;
use super::devices::{Bus, VIRTIO_IRQ_BASE, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE};
use super::kvm::bindings::*;
use super::kvm::{EventFd, Kvm, VmFd};
use super::memory::GuestMemory;
use super::spawner::{self, Spawner};
use super::vcpu::RunState;
use super::{Vm, VmConfig, MAX_DISKS, MIN_MEMORY_MIB};
use crate::{err, Result};

/// Open the KVM device and check it has every capability this VMM relies on.
pub fn open_kvm(path: &std::path::Path) -> Result<Kvm> {
    let kvm = Kvm::open(path)?;
    for (cap, name) in [
        (KVM_CAP_USER_MEMORY, "user memory"),
        (KVM_CAP_IRQCHIP, "in-kernel irqchip"),
        (KVM_CAP_IOEVENTFD, "ioeventfd"),
        (KVM_CAP_IRQFD, "irqfd"),
        (KVM_CAP_PIT2, "in-kernel PIT"),
        (KVM_CAP_EXT_CPUID, "CPUID setup"),
        (KVM_CAP_IMMEDIATE_EXIT, "immediate exit"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(err!(
                "vm: {} lacks the KVM capability '{name}'",
                path.display()
            ));
        }
    }
    Ok(kvm)
}

/// Where KVM keeps its real-mode TSS and identity map (VMX only; unused by our long-mode guests,
/// but must not overlap RAM or devices).
const KVM_TSS_ADDR: u64 = 0xfffb_d000;
const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

pub fn build(cfg: VmConfig) -> Result<Vm> {
    if cfg.vcpus == 0 || cfg.vcpus > MAX_VCPUS {
        return Err(err!(
            "vm: {} vCPUs requested, must be 1 to {MAX_VCPUS}",
            cfg.vcpus
        ));
    }
    if cfg.memory_mib < MIN_MEMORY_MIB {
        return Err(err!(
            "vm: {} MiB of memory is too little, need at least {MIN_MEMORY_MIB} MiB",
            cfg.memory_mib
        ));
    }
    if cfg.disks.len() > MAX_DISKS {
        return Err(err!(
            "vm: {} disks requested, at most {MAX_DISKS}",
            cfg.disks.len()
        ));
    }
    if !cfg.kernel.is_file() {
        return Err(err!(
            "vm: kernel {} not found or not a file",
            cfg.kernel.display()
        ));
    }

    let kvm = open_kvm(&cfg.kvm_device)?;
    let cpuid = kvm.supported_cpuid()?;
    let run_size = kvm.vcpu_mmap_size()?;
    let vm_fd = kvm.create_vm()?;
    // Only VMX hosts need these; elsewhere (SVM, PVM) failing to set them is harmless.
    let _ = vm_fd.set_tss_addr(KVM_TSS_ADDR);
    let _ = vm_fd.set_identity_map_addr(KVM_IDENTITY_MAP_ADDR);
    let mem = Arc::new(GuestMemory::new(cfg.memory_mib << 20)?);
    for (slot, region) in mem.regions().iter().enumerate() {
        // SAFETY: the host range belongs to `mem`, which `Vm` keeps alive (and drops after the
        // VM fd and every vCPU) for as long as KVM can access it.
        unsafe {
            vm_fd.set_user_memory_region(
                slot as u32,
                region.guest_addr,
                region.size,
                mem.host_addr(region),
            )?
        };
    }
    // After the memory slot: in the other order, adding the slot took ~8 ms on this host's
    // nested KVM (measured with strace; ~4 ms for the whole build this way).
    vm_fd.create_irqchip()?;
    vm_fd.create_pit2()?;

    // Devices: the control console first (if any), then the disks, then the NIC (if any), one
    // mmio slot each.
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    let mut control = None;
    if cfg.control_channel {
        let (console, host) = Console::new()?;
        devices.push(Box::new(console));
        control = Some(host);
    }
    for d in &cfg.disks {
        devices.push(Box::new(Block::open(&d.path, d.read_only)?));
    }
    let mut nic = None;
    if let Some(mtu) = cfg.nic_mtu {
        let (net, host) = Net::new(mtu)?;
        devices.push(Box::new(net));
        nic = Some(host);
    }
    let mut cmdline = cfg.cmdline.clone();
    let (spawner, spawn_queue) = spawner::channel();
    let mut transports = Vec::new();
    for (i, device) in devices.into_iter().enumerate() {
        let base = VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE;
        let irq = VIRTIO_IRQ_BASE + i as u32;
        let transport = wire_virtio(&vm_fd, device, &mem, base, irq, &spawner)?;
        transports.push((base, transport));
        // How Linux finds virtio-mmio devices without ACPI or a device tree.
        cmdline.push_str(&format!(" virtio_mmio.device=4K@{base:#x}:{irq}"));
    }
    let serial_irq = EventFd::new()?;
    vm_fd.register_irqfd(&serial_irq, COM1_IRQ)?;

    let boot = boot::load_kernel(
        &mem,
        &cfg.kernel,
        cmdline.trim_start(),
        cfg.initramfs.as_deref(),
        cfg.vcpus,
    )?;

    let mut vcpus = Vec::new();
    for id in 0..cfg.vcpus {
        let vcpu = vm_fd.create_vcpu(id, run_size)?;
        if id == 0 || boot.aps == ApStart::SameEntry {
            boot::x86_64::setup_vcpu(&vcpu, id, boot.entry, boot.mode, &cpuid)?;
        } else {
            vcpu.set_cpuid(&boot::x86_64::cpuid_for(&cpuid, id))?;
        }
        vcpus.push(vcpu);
    }

    let progress = Arc::new(Mutex::new(Vec::new()));
    let bus = Bus::new(
        Serial::new(cfg.serial_out, Some(serial_irq)),
        transports,
        progress.clone(),
    );
    Ok(Vm {
        vcpus,
        bus: Arc::new(bus),
        _vm_fd: vm_fd,
        _kvm: kvm,
        _mem: mem,
        control,
        nic,
        state: Arc::new(RunState::new()),
        spawn_queue: Some(spawn_queue),
        progress,
        boot,
    })
}

/// Put `device` behind an mmio transport at `base`, with an ioeventfd per queue on QueueNotify
/// and an irqfd on `irq`.
fn wire_virtio(
    vm_fd: &VmFd,
    device: Box<dyn VirtioDevice>,
    mem: &Arc<GuestMemory>,
    base: u64,
    irq: u32,
    spawner: &Spawner,
) -> Result<MmioTransport> {
    let mut queue_evts = Vec::new();
    for q in 0..device.queue_max_sizes().len() {
        let evt = EventFd::new()?;
        vm_fd.register_ioeventfd(&evt, base + REG_QUEUE_NOTIFY, 4, q as u64)?;
        queue_evts.push(Arc::new(evt));
    }
    let irqfd = EventFd::new()?;
    vm_fd.register_irqfd(&irqfd, irq)?;
    Ok(MmioTransport::new(
        device,
        mem.clone(),
        queue_evts,
        Arc::new(irqfd),
        spawner.clone(),
    ))
}
