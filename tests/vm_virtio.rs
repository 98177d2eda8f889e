//! virtio-mmio devices driven by test guests on real /dev/kvm: the virtio-console control
//! channel round-trips bytes with the host; virtio-blk reads an ext2 image built by
//! `mke2fs -d` and writes sectors that persist in the backing file.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod vm_support;

use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::Duration;

use iii::sandbox::vm::{DiskConfig, Vm, VmConfig, VmExit};
use vm_support::{build_guest, run_with_watchdog, Capture, TempDir};

#[test]
fn console_round_trips_bytes_with_the_host() {
    require_kvm!();
    let dir = TempDir::new("vm-console");
    let mut cfg = VmConfig::new(build_guest("console", dir.path()));
    cfg.memory_mib = 16;
    let out = Capture::default();
    cfg.serial_out = Box::new(out.clone());
    let mut vm = Vm::build(cfg).unwrap();
    let stream = vm.take_control_stream().expect("control stream");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let runner = std::thread::spawn(move || run_with_watchdog(vm, 30));

    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "ping from guest\n", "serial: {}", out.text());
    (&stream)
        .write_all(b"hello-guest, from the host\n")
        .unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "HELLO-GUEST, FROM THE HOST\n");

    let (r, fired) = runner.join().unwrap();
    assert!(!fired, "watchdog fired; serial: {}", out.text());
    assert_eq!(r.unwrap(), VmExit::Exited(0), "serial: {}", out.text());
    assert!(
        out.text().contains("virtio-console at d0000000\n"),
        "{}",
        out.text()
    );
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

#[test]
fn block_device_reads_an_ext2_image_and_writes_persist() {
    require_kvm!();
    if Command::new("mke2fs").arg("-V").output().is_err() {
        skip!("mke2fs (e2fsprogs) is not installed");
        return;
    }
    let dir = TempDir::new("vm-blk");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(
        tree.join("hello.txt"),
        "hi from an ext2 image built by the test\n",
    )
    .unwrap();
    std::fs::write(tree.join("etc/hostname"), "worker\n").unwrap();
    let image = dir.path().join("disk.ext2");
    let o = Command::new("mke2fs")
        .args([
            "-q", "-F", "-t", "ext2", "-b", "1024", "-L", "iii-test", "-d",
        ])
        .arg(&tree)
        .arg(&image)
        .arg("2048")
        .env("E2FSPROGS_FAKE_TIME", "1")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mke2fs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let before = std::fs::read(&image).unwrap();
    let sectors = before.len() as u64 / 512;

    let mut cfg = VmConfig::new(build_guest("blk", dir.path()));
    cfg.memory_mib = 16;
    cfg.control_channel = false;
    cfg.disks = vec![DiskConfig {
        path: image.clone(),
        read_only: false,
    }];
    let out = Capture::default();
    cfg.serial_out = Box::new(out.clone());
    let vm = Vm::build(cfg).unwrap();
    let (r, fired) = run_with_watchdog(vm, 30);
    assert!(!fired, "watchdog fired; serial: {}", out.text());
    assert_eq!(r.unwrap(), VmExit::Exited(0), "serial: {}", out.text());

    let text = out.text();
    assert!(
        text.contains(&format!("capacity {sectors} sectors, flush yes\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("fnv {:x}\n", fnv1a(&before[..64 * 1024]))),
        "{text}"
    );
    assert!(
        text.contains("hello.txt: hi from an ext2 image built by the test\n"),
        "{text}"
    );
    assert!(text.ends_with("blk done\n"), "{text}");

    let after = std::fs::read(&image).unwrap();
    let tail = &after[after.len() - 1024..];
    let expected: Vec<u8> = b"guest-wrote-this-sector "
        .iter()
        .copied()
        .cycle()
        .take(1024)
        .collect();
    assert_eq!(tail, &expected[..]);
    assert_eq!(
        &after[..after.len() - 1024],
        &before[..before.len() - 1024],
        "only the two sectors changed"
    );
}

#[test]
fn read_only_disk_refuses_writes() {
    require_kvm!();
    let dir = TempDir::new("vm-blk-ro");
    let image = dir.path().join("raw.img");
    let content: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&image, &content).unwrap();
    let mut cfg = VmConfig::new(build_guest("blk", dir.path()));
    cfg.memory_mib = 16;
    cfg.cmdline = "ro".into();
    cfg.control_channel = false;
    cfg.disks = vec![DiskConfig {
        path: image.clone(),
        read_only: true,
    }];
    let out = Capture::default();
    cfg.serial_out = Box::new(out.clone());
    let vm = Vm::build(cfg).unwrap();
    let (r, _) = run_with_watchdog(vm, 30);
    assert_eq!(r.unwrap(), VmExit::Exited(0), "serial: {}", out.text());
    let text = out.text();
    assert!(
        text.contains(&format!("fnv {:x}\n", fnv1a(&content))),
        "{text}"
    );
    assert!(text.ends_with("write refused\n"), "{text}");
    assert_eq!(std::fs::read(&image).unwrap(), content);
}

#[test]
fn virtio_interrupt_reaches_the_guest_through_irqfd_and_ioapic() {
    require_kvm!();
    let dir = TempDir::new("vm-irq");
    let mut cfg = VmConfig::new(build_guest("irq", dir.path()));
    cfg.memory_mib = 16;
    let out = Capture::default();
    cfg.serial_out = Box::new(out.clone());
    let mut vm = Vm::build(cfg).unwrap();
    let stream = vm.take_control_stream().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (r, fired) = run_with_watchdog(vm, 30);
    assert!(!fired, "watchdog fired; serial: {}", out.text());
    assert_eq!(r.unwrap(), VmExit::Exited(0), "serial: {}", out.text());
    assert_eq!(out.text(), "irq count 1 status 1\n");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    assert_eq!(line, "interrupt-driven hello\n");
}

#[test]
fn hostile_driver_gets_needs_reset_and_the_vmm_survives() {
    require_kvm!();
    let dir = TempDir::new("vm-hostile");
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![7u8; 64 * 1024]).unwrap();
    let mut cfg = VmConfig::new(build_guest("hostile", dir.path()));
    cfg.memory_mib = 16;
    cfg.disks = vec![DiskConfig {
        path: image.clone(),
        read_only: false,
    }];
    let out = Capture::default();
    cfg.serial_out = Box::new(out.clone());
    let mut vm = Vm::build(cfg).unwrap();
    let stream = vm.take_control_stream().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (r, fired) = run_with_watchdog(vm, 30);
    assert!(!fired, "watchdog fired; serial: {}", out.text());
    assert_eq!(r.unwrap(), VmExit::Exited(0), "serial: {}", out.text());
    assert_eq!(out.text(), "hostile done\n");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    assert_eq!(line, "recovered after a reset\n");
    assert_eq!(std::fs::read(&image).unwrap(), vec![7u8; 64 * 1024]);
}

#[test]
fn host_that_never_reads_cannot_wedge_teardown() {
    require_kvm!();
    let dir = TempDir::new("vm-flood");
    let mut cfg = VmConfig::new(build_guest("console", dir.path()));
    cfg.memory_mib = 16;
    cfg.cmdline = "flood".into();
    let out = Capture::default();
    cfg.serial_out = Box::new(out.clone());
    let mut vm = Vm::build(cfg).unwrap();
    let _stream = vm.take_control_stream().unwrap(); // held open, never read
    let started = std::time::Instant::now();
    let (r, fired) = run_with_watchdog(vm, 1);
    assert!(fired);
    assert_eq!(r.unwrap(), VmExit::Stopped);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.text(), "virtio-console at d0000000\nflooding\n");
}

#[test]
fn the_nic_carries_frames_both_ways_without_their_virtio_header() {
    require_kvm!();
    let dir = TempDir::new("vm-net");
    let mut cfg = VmConfig::new(build_guest("net", dir.path()));
    cfg.memory_mib = 16;
    cfg.nic_mtu = Some(65_520);
    let out = Capture::default();
    cfg.serial_out = Box::new(out.clone());
    let mut vm = Vm::build(cfg).unwrap();
    let nic = vm.take_nic().expect("the NIC's host end");
    nic.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let runner = std::thread::spawn(move || run_with_watchdog(vm, 30));

    // What the guest sent: its 64-byte frame, the 12-byte header gone.
    let mut buf = vec![0u8; 70_000];
    let n = nic.recv(&mut buf).expect("a frame from the guest");
    assert_eq!(n, 64, "serial: {}", out.text());
    assert_eq!(&buf[..6], &[0xff; 6]);
    assert_eq!(&buf[6..12], &[0x52, 0x55, 0x0a, 0x00, 0x02, 0x0f]);
    assert_eq!(&buf[12..14], &[0x88, 0xb5]);
    assert_eq!(&buf[14..29], b"ping from guest");
    // And back: the guest finds it behind a header saying one buffer.
    let mut reply = vec![
        0x52, 0x55, 0x0a, 0x00, 0x02, 0x0f, 0x52, 0x55, 0x0a, 0, 2, 2, 0x88, 0xb5,
    ];
    reply.extend_from_slice(b"pong from host");
    reply.resize(60, 0);
    nic.send(&reply).unwrap();

    let (r, fired) = runner.join().unwrap();
    assert!(!fired, "watchdog fired; serial: {}", out.text());
    assert_eq!(r.unwrap(), VmExit::Exited(0), "serial: {}", out.text());
    let text = out.text();
    assert!(text.contains("virtio-net at d0001000\n"), "{text}");
    assert!(text.contains("fff0"), "the MTU in config space: {text}");
    assert!(text.contains("got: pong from host\n"), "{text}");
}

#[test]
fn the_nic_behind_the_user_mode_network_answers_arp_for_the_gateway() {
    require_kvm!();
    let dir = TempDir::new("vm-net-arp");
    let mut cfg = VmConfig::new(build_guest("net", dir.path()));
    cfg.memory_mib = 16;
    cfg.cmdline = "arp".into();
    cfg.nic_mtu = Some(65_520);
    let out = Capture::default();
    cfg.serial_out = Box::new(out.clone());
    let mut vm = Vm::build(cfg).unwrap();
    let nic = vm.take_nic().expect("the NIC's host end");
    nic.set_nonblocking(true).unwrap();
    // The worker's network exactly as a vm worker's monitor serves it.
    let (log, _log_rd) = std::os::unix::net::UnixStream::pair().unwrap();
    let net = iii::sandbox::nic::serve(nic.into(), &iii::sandbox::Egress::default(), 1, log.into())
        .unwrap();
    let (r, fired) = run_with_watchdog(vm, 30);
    drop(net);
    assert!(!fired, "watchdog fired; serial: {}", out.text());
    assert_eq!(r.unwrap(), VmExit::Exited(0), "serial: {}", out.text());
    assert!(
        out.text().contains("arp reply from "),
        "serial: {}",
        out.text()
    );
}
