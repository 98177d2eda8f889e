//! iii's own ext2 writer: images of a varied tree pass `e2fsck -fn`, read back byte-exact with
//! `debugfs`, and a guest on real /dev/kvm reads a file from one through virtio-blk.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod vm_support;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use iii::sandbox::microvm::ext2::build_image;
use iii::sandbox::vm::{DiskConfig, Vm, VmConfig, VmExit};
use vm_support::{build_guest, run_with_watchdog, Capture, TempDir};

fn have(tool: &str) -> bool {
    Command::new(tool).arg("-V").output().is_ok()
}

fn make_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut put = |rel: &str, data: Vec<u8>| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &data).unwrap();
        files.push((rel.to_string(), data));
    };
    put("hello.txt", b"hi from iii's own ext2 writer\n".to_vec());
    put("empty", Vec::new());
    put("one-block", vec![b'a'; 4096]);
    // Needs the single-indirect block, and the double-indirect map (> 12 + 1024 blocks).
    put(
        "usr/lib/indirect.bin",
        (0..200_000u32).map(|i| (i % 253) as u8).collect(),
    );
    put(
        "usr/lib/double.bin",
        (0..5_000_000u32).map(|i| (i * 31 % 255) as u8).collect(),
    );
    for i in 0..400 {
        put(
            &format!("etc/many/entry-with-a-long-name-{i:04}.conf"),
            format!("n={i}\n").into_bytes(),
        );
    }
    symlink("hello.txt", root.join("short-link")).unwrap();
    symlink("a/".repeat(40) + "target", root.join("long-link")).unwrap();
    std::fs::hard_link(root.join("hello.txt"), root.join("usr/hello-hardlink")).unwrap();
    let suid = root.join("usr/bin/suid");
    std::fs::create_dir_all(suid.parent().unwrap()).unwrap();
    std::fs::write(&suid, b"#!/bin/sh\n").unwrap();
    // chown first: it clears the setuid bit.
    std::os::unix::fs::chown(&suid, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let fifo = root.join("run/fifo");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    files
}

fn debugfs(image: &Path, cmd: &str) -> Vec<u8> {
    let o = Command::new("debugfs")
        .arg("-R")
        .arg(cmd)
        .arg(image)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "debugfs {cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

#[test]
fn image_passes_fsck_and_reads_back() {
    if !have("e2fsck") || Command::new("debugfs").arg("-V").output().is_err() {
        skip!("e2fsprogs (e2fsck, debugfs) not installed");
        return;
    }
    let dir = TempDir::new("ext2-fsck");
    let root = dir.path().join("tree");
    let files = make_tree(&root);
    let image = dir.path().join("root.ext2");
    build_image(&root, &image, "iii-root", 1 << 20, 16).unwrap();

    let o = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "e2fsck: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for (rel, data) in &files {
        assert_eq!(&debugfs(&image, &format!("cat /{rel}")), data, "{rel}");
    }
    let stat = String::from_utf8(debugfs(&image, "stat /usr/bin/suid")).unwrap();
    assert!(
        stat.contains("Mode:  04755")
            && stat.contains("User:  1000")
            && stat.contains("Group:  1000"),
        "{stat}"
    );
    let stat = String::from_utf8(debugfs(&image, "stat /hello.txt")).unwrap();
    assert!(stat.contains("Links: 2"), "{stat}");
    let link = String::from_utf8(debugfs(&image, "stat /long-link")).unwrap();
    assert!(
        link.contains("Type: symlink") && link.contains("Size: 86"),
        "{link}"
    );
    // A slow symlink keeps its target in a data block: dump that block.
    let block: String = link
        .lines()
        .skip_while(|l| !l.starts_with("BLOCKS:"))
        .nth(1)
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .trim()
        .into();
    let raw = debugfs(&image, &format!("block_dump {block}"));
    assert!(
        String::from_utf8_lossy(&raw).contains("a/a/a/a/"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let short = String::from_utf8(debugfs(&image, "stat /short-link")).unwrap();
    assert!(short.contains("Fast link dest: \"hello.txt\""), "{short}");
    let ls = String::from_utf8(debugfs(&image, "ls -l /run")).unwrap();
    assert!(ls.contains("fifo"), "{ls}");
    let labels = Command::new("dumpe2fs")
        .arg("-h")
        .arg(&image)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&labels.stdout).contains("iii-root"));

    // Hundreds of MiB of free space: several block groups (the image file stays sparse).
    let big = dir.path().join("big.ext2");
    build_image(&root, &big, "iii-big", 300 << 20, 5000).unwrap();
    let o = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&big)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "e2fsck big: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let info =
        String::from_utf8_lossy(&Command::new("dumpe2fs").arg(&big).output().unwrap().stdout)
            .into_owned();
    assert!(info.matches("Group ").count() >= 3, "{info}");
    assert_eq!(
        debugfs(&big, "cat /usr/lib/double.bin"),
        files
            .iter()
            .find(|f| f.0 == "usr/lib/double.bin")
            .unwrap()
            .1
    );

    // Same tree, same bytes.
    let again = dir.path().join("again.ext2");
    build_image(&root, &again, "iii-root", 1 << 20, 16).unwrap();
    assert!(
        std::fs::read(&image).unwrap() == std::fs::read(&again).unwrap(),
        "image not reproducible"
    );
}

#[test]
fn guest_reads_a_file_from_our_image() {
    require_kvm!();
    let dir = TempDir::new("ext2-guest");
    let root = dir.path().join("tree");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "hi from iii's own ext2 writer\n").unwrap();
    let image = dir.path().join("root.ext2");
    build_image(&root, &image, "iii-root", 64 << 10, 0).unwrap();
    let mut cfg = VmConfig::new(build_guest("blk", dir.path()));
    cfg.memory_mib = 16;
    cfg.control_channel = false;
    cfg.disks = vec![DiskConfig {
        path: image,
        read_only: false,
    }];
    let out = Capture::default();
    cfg.serial_out = Box::new(out.clone());
    let (r, fired) = run_with_watchdog(Vm::build(cfg).unwrap(), 30);
    assert!(!fired, "watchdog fired; serial: {}", out.text());
    assert_eq!(r.unwrap(), VmExit::Exited(0), "serial: {}", out.text());
    assert!(
        out.text()
            .contains("hello.txt: hi from iii's own ext2 writer\n"),
        "{}",
        out.text()
    );
}

#[test]
fn bad_input_is_a_one_line_error_and_leaves_nothing() {
    let dir = TempDir::new("ext2-err");
    let f = dir.path().join("file");
    std::fs::write(&f, b"x").unwrap();
    let e = build_image(&f, &dir.path().join("img"), "x", 0, 0)
        .unwrap_err()
        .to_string();
    assert_eq!(e, format!("{} is not a directory", f.display()));
    assert!(
        !dir.path().join("img").exists(),
        "nothing written on bad input"
    );

    // A file that cannot be read, found after the image file was created: no image and no
    // partial file left.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("a"), b"fine").unwrap();
    let locked = tree.join("locked");
    std::fs::write(&locked, b"secret").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = dir.path().join("out"); // writable by `nobody`
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    let img = out.join("img2");
    let e = std::thread::spawn({
        let (tree, img) = (tree.clone(), img.clone());
        move || {
            // Root ignores permissions: act as `nobody`, in this thread only (raw syscall).
            // SAFETY: changes only this thread's credentials; the thread ends right after.
            let r = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
            assert_eq!(r, 0);
            build_image(&tree, &img, "x", 0, 0).unwrap_err().to_string()
        }
    })
    .join()
    .unwrap();
    assert!(
        e.starts_with(&format!("opening {}: ", locked.display())),
        "{e}"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "partial image left behind: {left:?}");
}

/// The guest's init finds its disks by the label the host's writer gave them.
#[test]
fn disks_are_told_apart_by_their_ext2_label() {
    use iii::protocol::init::LAYER_LABEL;
    let dir = TempDir::new("ext2-label");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let img = dir.path().join("disk.ext2");
    build_image(&tree, &img, LAYER_LABEL, 1 << 20, 16).unwrap();
    assert_eq!(
        iii::init::guest::ext_label(&img).as_deref(),
        Some(LAYER_LABEL)
    );
    assert_eq!(
        iii::init::guest::ext_label(Path::new("/proc/self/exe")),
        None
    );
}
