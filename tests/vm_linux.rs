//! Boots a real Linux kernel (`III_TEST_KERNEL`, a bzImage or vmlinux built by
//! `scripts/build-guest-kernel.sh`) with an initramfs whose /init reports over serial, the
//! progress port and the virtio-console, then reboots. Skipped where it cannot run: no kernel
//! given, or a KVM that cannot boot an unmodified Linux (nested paravirtual KVM, `kvm_pvm`).

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod vm_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use iii::sandbox::vm::{Vm, VmConfig, VmExit};
use vm_support::{run_with_watchdog, Capture, TempDir};

/// One entry of a newc cpio archive.
fn cpio_entry(out: &mut Vec<u8>, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let namesize = name.len() + 1;
    let fields = [
        0,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        namesize as u32,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn initramfs(init: &Path, out: &Path) {
    let mut a = Vec::new();
    cpio_entry(&mut a, "dev", 0o040755, (0, 0), &[]);
    cpio_entry(&mut a, "dev/console", 0o020600, (5, 1), &[]);
    cpio_entry(
        &mut a,
        "init",
        0o100755,
        (0, 0),
        &std::fs::read(init).unwrap(),
    );
    cpio_entry(&mut a, "TRAILER!!!", 0, (0, 0), &[]);
    std::fs::write(out, a).unwrap();
}

#[test]
fn linux_boots_to_init_and_reboots() {
    let Some(kernel) = std::env::var_os("III_TEST_KERNEL").map(PathBuf::from) else {
        skip!("III_TEST_KERNEL is not set (build one with scripts/build-guest-kernel.sh)");
        return;
    };
    if let Some(why) = vm_support::kvm_unavailable() {
        skip!("{why}");
        return;
    }
    if iii::sandbox::vm::paravirtual_kvm() {
        skip!(
            "/dev/kvm is paravirtual KVM (kvm_pvm), which cannot boot an unmodified Linux kernel"
        );
        return;
    }
    let dir = TempDir::new("vm-linux");
    let init = dir.path().join("init");
    let o = Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(&init)
        .arg(vm_support::guests_dir().join("linux_init.c"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "gcc linux_init.c: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let initrd = dir.path().join("initramfs.cpio");
    initramfs(&init, &initrd);

    let mut cfg = VmConfig::new(kernel);
    cfg.memory_mib = 256;
    cfg.vcpus = 2;
    cfg.cmdline = "console=ttyS0 reboot=k panic=-1 rdinit=/init".into();
    cfg.initramfs = Some(initrd);
    let out = Capture::default();
    cfg.serial_out = Box::new(out.clone());
    let mut vm = Vm::build(cfg).unwrap();
    let stream = vm.take_control_stream().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let progress = vm.progress();
    let runner = std::thread::spawn(move || run_with_watchdog(vm, 60));
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    let (r, fired) = runner.join().unwrap();
    assert!(!fired, "watchdog fired; serial: {}", out.text());
    assert_eq!(r.unwrap(), VmExit::Reset, "serial: {}", out.text());
    assert!(out.text().contains("init reached"), "{}", out.text());
    assert_eq!(line, "hello over hvc0\n");
    assert!(progress.lock().unwrap().iter().any(|m| m.0 == 3));
}
