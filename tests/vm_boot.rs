//! The VMM runs freestanding test guests on real /dev/kvm: serial output, exit codes, crashes
//! reported as errors, a hung guest stopped from the host, two vCPUs, boot_params.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod vm_support;

use iii::sandbox::vm::{Vm, VmConfig, VmExit};
use vm_support::{build_guest, run_with_watchdog, Capture, TempDir};

fn config(kernel: std::path::PathBuf, cmdline: &str, out: &Capture) -> VmConfig {
    let mut cfg = VmConfig::new(kernel);
    cfg.memory_mib = 16;
    cfg.cmdline = cmdline.to_string();
    cfg.serial_out = Box::new(out.clone());
    cfg.control_channel = false;
    cfg
}

#[test]
fn guest_prints_hello_and_exits_with_its_code() {
    require_kvm!();
    let dir = TempDir::new("vm-hello");
    let kernel = build_guest("basic", dir.path());
    let out = Capture::default();
    let vm = Vm::build(config(kernel, "hello", &out)).unwrap();
    let progress = vm.progress();
    let (r, fired) = run_with_watchdog(vm, 20);
    assert!(!fired, "watchdog fired; serial: {}", out.text());
    assert_eq!(r.unwrap(), VmExit::Exited(42));
    assert_eq!(out.text(), "hello from the guest\ncmdline: hello\n");
    let marks: Vec<u32> = progress.lock().unwrap().iter().map(|m| m.0).collect();
    assert_eq!(marks, vec![1, 2]);
}

#[test]
fn i8042_reset_pulse_ends_the_vm_as_a_reset() {
    require_kvm!();
    let dir = TempDir::new("vm-reset");
    let kernel = build_guest("basic", dir.path());
    let out = Capture::default();
    let vm = Vm::build(config(kernel, "reset", &out)).unwrap();
    let (r, fired) = run_with_watchdog(vm, 20);
    assert!(!fired);
    assert_eq!(r.unwrap(), VmExit::Reset);
}

#[test]
fn invalid_opcode_is_reported_as_a_crash() {
    require_kvm!();
    let dir = TempDir::new("vm-ud2");
    let kernel = build_guest("basic", dir.path());
    let out = Capture::default();
    let vm = Vm::build(config(kernel, "ud2", &out)).unwrap();
    let (r, fired) = run_with_watchdog(vm, 20);
    assert!(!fired, "watchdog fired instead of a crash report");
    let e = r.unwrap_err().to_string();
    assert!(e.contains("guest crashed"), "{e}");
    assert_eq!(out.text(), "about to ud2\n");
}

#[test]
fn jump_to_unmapped_memory_is_reported_as_a_crash() {
    require_kvm!();
    let dir = TempDir::new("vm-wild");
    let kernel = build_guest("basic", dir.path());
    let out = Capture::default();
    let vm = Vm::build(config(kernel, "wild-jump", &out)).unwrap();
    let (r, fired) = run_with_watchdog(vm, 20);
    assert!(!fired, "watchdog fired instead of a crash report");
    let e = r.unwrap_err().to_string();
    assert!(e.contains("guest crashed"), "{e}");
}

#[test]
fn hung_guest_is_stopped_from_the_host() {
    require_kvm!();
    let dir = TempDir::new("vm-hang");
    let kernel = build_guest("basic", dir.path());
    let out = Capture::default();
    let vm = Vm::build(config(kernel, "hang", &out)).unwrap();
    let started = std::time::Instant::now();
    let (r, fired) = run_with_watchdog(vm, 1);
    assert!(fired);
    assert_eq!(r.unwrap(), VmExit::Stopped);
    assert!(
        started.elapsed().as_secs() < 10,
        "stop took {:?}",
        started.elapsed()
    );
    assert_eq!(out.text(), "hanging\n");
}

#[test]
fn two_vcpus_both_run() {
    require_kvm!();
    let dir = TempDir::new("vm-smp");
    let kernel = build_guest("basic", dir.path());
    let out = Capture::default();
    let mut cfg = config(kernel, "smp", &out);
    cfg.vcpus = 2;
    let vm = Vm::build(cfg).unwrap();
    let (r, fired) = run_with_watchdog(vm, 20);
    assert!(!fired, "watchdog fired; serial: {}", out.text());
    assert_eq!(r.unwrap(), VmExit::Exited(0b11), "serial: {}", out.text());
    let text = out.text();
    assert!(
        text.contains("cpu 0 up\n") && text.contains("cpu 1 up\n"),
        "{text}"
    );
}

#[test]
fn boot_params_carry_e820_and_initramfs() {
    require_kvm!();
    let dir = TempDir::new("vm-e820");
    let kernel = build_guest("basic", dir.path());
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, b"INITRAMFS-CONTENT-0123456789").unwrap();
    let out = Capture::default();
    let mut cfg = config(kernel, "e820", &out);
    cfg.initramfs = Some(initrd);
    let vm = Vm::build(cfg).unwrap();
    let (r, _) = run_with_watchdog(vm, 20);
    assert_eq!(r.unwrap(), VmExit::Exited(3), "serial: {}", out.text());
    assert_eq!(
        out.text(),
        "e820 0 9fc00 1\ne820 9fc00 60400 2\ne820 100000 f00000 1\n\
         initramfs 28 bytes: INITRAMFS-CONTENT-0123456789\n"
    );
}

#[test]
fn bzimage_is_loaded_with_its_setup_header_and_entered_at_0x200() {
    require_kvm!();
    let dir = TempDir::new("vm-bz");
    let kernel = vm_support::build_bzimage_guest("basic", dir.path());
    let out = Capture::default();
    let vm = Vm::build(config(kernel.clone(), "hdr", &out)).unwrap();
    assert_eq!(vm.boot_setup().entry, 0x20_0200);
    let (r, _) = run_with_watchdog(vm, 20);
    assert_eq!(r.unwrap(), VmExit::Exited(7), "serial: {}", out.text());
    assert_eq!(out.text(), "hdr HdrS ver 20f loader ff entry 200200\n");

    // The same image with the cmdline-driven hello path, and a cmdline too long for it.
    let out = Capture::default();
    let vm = Vm::build(config(kernel.clone(), "hello", &out)).unwrap();
    assert_eq!(run_with_watchdog(vm, 20).0.unwrap(), VmExit::Exited(42));
    assert_eq!(out.text(), "hello from the guest\ncmdline: hello\n");
    let e = Vm::build(config(kernel, &"x".repeat(3000), &out))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("command line is 3000 bytes"), "{e}");
}

#[test]
fn pvh_note_selects_the_32_bit_entry_with_start_info() {
    require_kvm!();
    let dir = TempDir::new("vm-pvh");
    let kernel = vm_support::build_guest_linked("pvh.S", "pvh.ld", dir.path());
    let out = Capture::default();
    let vm = Vm::build(config(kernel, "pvh-cmdline", &out)).unwrap();
    assert!(matches!(
        vm.boot_setup().mode,
        iii::sandbox::vm::boot::EntryMode::Pvh32 { .. }
    ));
    let (r, fired) = run_with_watchdog(vm, 20);
    assert!(!fired);
    assert_eq!(r.unwrap(), VmExit::Exited(3), "serial: {}", out.text());
    assert_eq!(out.text(), "pvh-cmdline");
}

#[test]
fn mp_table_describes_every_vcpu_and_the_ioapic() {
    require_kvm!();
    let dir = TempDir::new("vm-mptable");
    let kernel = build_guest("basic", dir.path());
    let out = Capture::default();
    let mut cfg = config(kernel, "mptable", &out);
    cfg.vcpus = 3;
    let (r, fired) = run_with_watchdog(Vm::build(cfg).unwrap(), 20);
    assert!(!fired);
    // The other vCPUs halt; vCPU 0 reports.
    assert_eq!(r.unwrap(), VmExit::Exited(3), "serial: {}", out.text());
    assert_eq!(out.text(), "bsp 0 ioapic fec00000 cpus 3 ints 24\n");
}

#[test]
fn secondary_vcpu_starts_through_init_sipi_like_linux_brings_up_aps() {
    require_kvm!();
    let dir = TempDir::new("vm-sipi");
    // As a bzImage the other vCPUs wait for INIT/SIPI instead of entering the kernel.
    let kernel = vm_support::build_bzimage_guest("basic", dir.path());
    let out = Capture::default();
    let mut cfg = config(kernel, "sipi", &out);
    cfg.vcpus = 2;
    let vm = Vm::build(cfg).unwrap();
    assert_eq!(
        vm.boot_setup().aps,
        iii::sandbox::vm::boot::ApStart::WaitForSipi
    );
    let (r, fired) = run_with_watchdog(vm, 20);
    assert!(!fired, "watchdog fired; serial: {}", out.text());
    assert_eq!(r.unwrap(), VmExit::Exited(0), "serial: {}", out.text());
    assert_eq!(out.text(), "A <- AP via SIPI\n");
}
