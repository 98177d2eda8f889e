//! A VM leaves nothing behind: after `run` returns (or a built VM is dropped, or a build fails
//! half-way), this process has the same fds and threads as before, and no guest-memory or
//! vCPU mapping remains. Its own test binary, so no other test's threads skew the counts.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod vm_support;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use iii::sandbox::vm::{DiskConfig, Vm, VmConfig, VmExit};
use vm_support::{build_guest, fds_and_threads, run_with_watchdog, TempDir};

/// Guest memory size no other mapping in the process is likely to have.
const MEM_MIB: u64 = 23;

fn leftover_mappings() -> Vec<String> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let size = u64::from_str_radix(b, 16).unwrap() - u64::from_str_radix(a, 16).unwrap();
            size == MEM_MIB << 20 || l.contains("kvm")
        })
        .map(str::to_string)
        .collect()
}

fn run_console_and_disk(dir: &TempDir) {
    // Console guest with a disk attached and two vCPUs: both device kinds, SMP, control stream.
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let mut cfg = VmConfig::new(build_guest("console", dir.path()));
    cfg.memory_mib = MEM_MIB;
    cfg.vcpus = 2;
    cfg.disks = vec![DiskConfig {
        path: disk,
        read_only: false,
    }];
    let mut vm = Vm::build(cfg).unwrap();
    let stream = vm.take_control_stream().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let runner = std::thread::spawn(move || run_with_watchdog(vm, 30));
    let mut line = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    (&stream).write_all(b"x\n").unwrap();
    let (r, fired) = runner.join().unwrap();
    assert!(!fired);
    assert_eq!(r.unwrap(), VmExit::Exited(0));
    drop(stream);

    // The block guest activates the virtio-blk worker.
    let image = dir.path().join("raw.img");
    std::fs::write(&image, vec![0u8; 64 * 1024]).unwrap();
    let mut cfg = VmConfig::new(build_guest("blk", dir.path()));
    cfg.memory_mib = MEM_MIB;
    cfg.control_channel = false;
    cfg.disks = vec![DiskConfig {
        path: image,
        read_only: false,
    }];
    let (r, _) = run_with_watchdog(Vm::build(cfg).unwrap(), 30);
    assert_eq!(r.unwrap(), VmExit::Exited(22)); // zeroed disk: no ext2 superblock

    // A hung guest stopped from the host.
    let mut cfg = VmConfig::new(build_guest("basic", dir.path()));
    cfg.memory_mib = MEM_MIB;
    cfg.cmdline = "hang".into();
    let (r, _) = run_with_watchdog(Vm::build(cfg).unwrap(), 1);
    assert_eq!(r.unwrap(), VmExit::Stopped);
}

#[test]
fn teardown_leaves_no_thread_fd_or_mapping() {
    require_kvm!();
    let dir = TempDir::new("vm-teardown");
    // Warm up once: guest builds, the kick signal handler and lazily opened std handles.
    run_console_and_disk(&dir);
    let before = fds_and_threads();

    for _ in 0..3 {
        run_console_and_disk(&dir);
    }
    // Built but never run.
    let mut cfg = VmConfig::new(build_guest("basic", dir.path()));
    cfg.memory_mib = MEM_MIB;
    drop(Vm::build(cfg).unwrap());
    // Build failing after KVM, memory and devices were set up (missing second disk).
    let mut cfg = VmConfig::new(build_guest("basic", dir.path()));
    cfg.memory_mib = MEM_MIB;
    cfg.disks = vec![
        DiskConfig {
            path: dir.path().join("raw.img"),
            read_only: true,
        },
        DiskConfig {
            path: dir.path().join("missing.img"),
            read_only: true,
        },
    ];
    assert!(Vm::build(cfg).is_err());

    let after = fds_and_threads();
    assert_eq!(after, before, "(fds, threads) before vs after");
    assert_eq!(leftover_mappings(), Vec::<String>::new());
}
