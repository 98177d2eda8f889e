//! Bad input to the VMM fails with one clear line naming what is wrong, before any guest runs.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod vm_support;

use std::path::{Path, PathBuf};

use iii::sandbox::vm::{DiskConfig, Vm, VmConfig};
use vm_support::{build_guest, TempDir};

fn build_err(cfg: VmConfig) -> String {
    match Vm::build(cfg) {
        Ok(_) => panic!("build unexpectedly succeeded"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line error: {msg}");
            msg
        }
    }
}

fn small(kernel: PathBuf) -> VmConfig {
    let mut cfg = VmConfig::new(kernel);
    cfg.memory_mib = 16;
    cfg
}

#[test]
fn missing_empty_and_corrupt_kernels() {
    require_kvm!();
    let dir = TempDir::new("vm-err-kernel");
    let missing = dir.path().join("no-such-kernel");
    let e = build_err(small(missing.clone()));
    assert_eq!(
        e,
        format!("vm: kernel {} not found or not a file", missing.display())
    );

    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(
        build_err(small(empty.clone())),
        format!("kernel {} is empty", empty.display())
    );

    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x5a; 4096]).unwrap();
    let e = build_err(small(junk.clone()));
    assert_eq!(
        e,
        format!(
            "kernel {} is neither an ELF file nor a bzImage",
            junk.display()
        )
    );

    // A real guest ELF cut short inside its program headers / segment data.
    let good = std::fs::read(build_guest("basic", dir.path())).unwrap();
    let cut = dir.path().join("cut.elf");
    std::fs::write(&cut, &good[..100]).unwrap();
    let e = build_err(small(cut.clone()));
    assert!(
        e.starts_with(&format!("kernel {}: ", cut.display())) && e.contains("outside the file"),
        "{e}"
    );

    // Same ELF for another architecture.
    let mut arm = good.clone();
    arm[18] = 183;
    let arm_path = dir.path().join("arm.elf");
    std::fs::write(&arm_path, arm).unwrap();
    assert!(build_err(small(arm_path)).contains("ELF machine 183 is not x86_64"));
}

#[test]
fn too_little_memory_and_bad_sizes() {
    require_kvm!();
    let dir = TempDir::new("vm-err-mem");
    let kernel = build_guest("basic", dir.path());
    let mut cfg = small(kernel.clone());
    cfg.memory_mib = 1;
    assert_eq!(
        build_err(cfg),
        "vm: 1 MiB of memory is too little, need at least 2 MiB"
    );

    // Enough for the VMM, too little for the kernel's segments (loaded at 1 MiB and up).
    let bz = vm_support::build_bzimage_guest("basic", dir.path());
    let mut cfg = small(bz);
    cfg.memory_mib = 2;
    assert!(build_err(cfg).contains("more than guest memory (2 MiB)"));

    let mut cfg = small(kernel.clone());
    cfg.vcpus = 0;
    assert_eq!(build_err(cfg), "vm: 0 vCPUs requested, must be 1 to 16");

    let mut cfg = small(kernel.clone());
    let big = dir.path().join("big-initrd");
    std::fs::write(&big, vec![1u8; 17 << 20]).unwrap();
    cfg.initramfs = Some(big);
    assert!(build_err(cfg).contains("does not fit in guest memory"));

    let mut cfg = small(kernel);
    cfg.disks = vec![DiskConfig {
        path: dir.path().join("no-disk.img"),
        read_only: false,
    }];
    assert!(build_err(cfg).starts_with("opening disk image "));
}

#[test]
fn check_host_says_whether_kvm_is_usable() {
    let missing = Path::new("/nonexistent/kvm");
    assert_eq!(
        iii::sandbox::vm::check_host(missing)
            .unwrap_err()
            .to_string(),
        "/nonexistent/kvm not found: KVM is not available on this host"
    );
    if vm_support::kvm_unavailable().is_none() {
        iii::sandbox::vm::check_host(Path::new("/dev/kvm")).unwrap();
    }
}

#[test]
fn no_kvm_device_or_not_a_kvm_device() {
    let dir = TempDir::new("vm-err-dev");
    let kernel = dir.path().join("k");
    std::fs::write(&kernel, b"\x7fELF").unwrap();
    let mut cfg = small(kernel.clone());
    cfg.kvm_device = dir.path().join("kvm");
    assert_eq!(
        build_err(cfg),
        format!(
            "{} not found: KVM is not available on this host",
            dir.path().join("kvm").display()
        )
    );
    let mut cfg = small(kernel);
    cfg.kvm_device = Path::new("/dev/null").into();
    assert!(build_err(cfg).starts_with("/dev/null is not a KVM device: "));
}

#[test]
fn no_permission_on_dev_kvm() {
    require_kvm!();
    let dir = TempDir::new("vm-err-perm");
    let kernel = build_guest("basic", dir.path());
    let mode = std::fs::metadata("/dev/kvm")
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
    if mode.map_or(true, |m| m & 0o006 != 0) {
        skip!("/dev/kvm is accessible to every user here");
        return;
    }
    // Drop to `nobody` in one thread only: the raw syscall changes this thread's credentials
    // (glibc's setresuid would change every thread of the test process).
    let e = std::thread::spawn(move || {
        // SAFETY: a plain syscall on this thread's own credentials; the thread ends right after.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(r, 0, "setresuid: {}", std::io::Error::last_os_error());
        build_err(small(kernel))
    })
    .join()
    .unwrap();
    assert_eq!(
        e,
        "permission denied opening /dev/kvm (need read/write access, e.g. the kvm group)"
    );
}
