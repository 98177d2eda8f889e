//! Layers written by a real tool: GNU tar archives (gnu and pax formats) of a tree with
//! long names, hard links, symlinks, special modes, a fifo and a sparse file, applied with
//! `apply_layer` and compared entry by entry with what GNU tar itself extracts.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use tempdir::TempDir;

use iii::oci::unpack::{apply_layer, UnpackOptions};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A source tree with the cases image layers carry.
fn make_tree(src: &Path) {
    let long_dir = src.join("l".repeat(90)).join("m".repeat(90));
    fs::create_dir_all(&long_dir).unwrap();
    fs::write(long_dir.join("n".repeat(120)), b"long name").unwrap();
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::write(src.join("bin/busybox"), vec![0x7f; 100_000]).unwrap();
    set_mode(&src.join("bin/busybox"), 0o4755);
    fs::hard_link(src.join("bin/busybox"), src.join("bin/sh")).unwrap();
    fs::hard_link(
        src.join("bin/busybox"),
        long_dir.join("hard-linked-busybox"),
    )
    .unwrap();
    std::os::unix::fs::symlink("busybox", src.join("bin/ls")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", src.join("bin/abs")).unwrap();
    std::os::unix::fs::symlink(long_dir.join("x".repeat(110)), src.join("long-target")).unwrap();
    fs::create_dir_all(src.join("tmp")).unwrap();
    set_mode(&src.join("tmp"), 0o1777);
    fs::create_dir_all(src.join("private")).unwrap();
    fs::write(src.join("private/key"), b"k").unwrap();
    set_mode(&src.join("private/key"), 0o600);
    set_mode(&src.join("private"), 0o700);
    fs::create_dir_all(src.join("données")).unwrap();
    fs::write(src.join("données/日本語"), "ü".as_bytes()).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    let fifo =
        std::ffi::CString::new(src.join("fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid C string path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    // A sparse file: 8 MiB with data in two places.
    let mut f = fs::File::create(src.join("sparse")).unwrap();
    f.set_len(8 << 20).unwrap();
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(3 << 20)).unwrap();
    f.write_all(&[b'x'; 10_000]).unwrap();
    f.seek(std::io::SeekFrom::Start((8 << 20) - 5)).unwrap();
    f.write_all(b"tail!").unwrap();
    drop(f);
    std::os::unix::fs::chown(src.join("bin/ls"), Some(1000), Some(1000)).ok();
    std::os::unix::fs::lchown(src.join("bin/ls"), Some(1000), Some(1000)).ok();
    std::os::unix::fs::chown(src.join("données/日本語"), Some(1000), Some(100)).ok();
}

/// One line per entry: path, type, mode, owner, mtime, size, link target, link count,
/// and a hash of the content.
fn listing(root: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(".")
        .args(["-printf", "%p %y %m %U %G %T@ %s %l %n\n"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let path = root.join(l.split(' ').next().unwrap());
            let meta = fs::symlink_metadata(&path).unwrap();
            let content = match meta.is_file() {
                true => {
                    let data = fs::read(&path).unwrap();
                    format!(
                        " {:x}",
                        data.iter()
                            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(*b as u64))
                    )
                }
                false => String::new(),
            };
            format!("{l}{content}")
        })
        .collect();
    lines.sort();
    lines
}

fn compare(format: &str, sparse_version: Option<&str>) {
    let t = TempDir::new(format);
    let src = t.0.join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src);
    let archive = t.0.join("layer.tar");
    run(Command::new("tar")
        .arg(format!("--format={format}"))
        .args(sparse_version.map(|v| format!("--sparse-version={v}")))
        .args(["--sparse", "--numeric-owner", "-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg("."));
    let by_tar = t.0.join("by-tar");
    let by_us = t.0.join("by-us");
    fs::create_dir(&by_tar).unwrap();
    fs::create_dir(&by_us).unwrap();
    run(Command::new("tar")
        .args(["--numeric-owner", "-xf"])
        .arg(&archive)
        .arg("-C")
        .arg(&by_tar));
    let opts = UnpackOptions {
        // SAFETY: geteuid has no preconditions.
        privileged: unsafe { libc::geteuid() } == 0,
    };
    apply_layer(fs::File::open(&archive).unwrap(), &by_us, &opts).unwrap();
    let (want, got) = (listing(&by_tar), listing(&by_us));
    assert_eq!(
        want.len(),
        got.len(),
        "entries differ:\n{want:#?}\n{got:#?}"
    );
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w, g);
    }
    // The sparse file keeps its holes.
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(by_us.join("sparse")).unwrap();
    assert!(
        m.blocks() * 512 < 1 << 20,
        "sparse file written densely: {} blocks",
        m.blocks()
    );
}

fn have_gnu_tar() -> bool {
    let ok = Command::new("tar")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar"));
    if !ok {
        skip!("GNU tar is not installed");
    }
    ok
}

#[test]
fn gnu_format_matches_gnu_tar() {
    if have_gnu_tar() {
        compare("gnu", None);
    }
}

#[test]
fn pax_format_matches_gnu_tar() {
    if have_gnu_tar() {
        // 1.0 is GNU tar's default sparse format for pax; 0.0 and 0.1 are older ones.
        compare("pax", None);
        compare("pax", Some("0.0"));
        compare("pax", Some("0.1"));
    }
}
