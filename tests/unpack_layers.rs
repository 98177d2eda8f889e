//! Layer extraction semantics: each test builds layer tars in memory, applies them with
//! `apply_layer` and checks the resulting tree entry by entry.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tempdir::TempDir;

use iii::oci::unpack::{
    apply_layer, decompress, remove_tree, Compression, LayerStats, UnpackOptions,
};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn opts() -> UnpackOptions {
    UnpackOptions {
        privileged: is_root(),
    }
}

/// Builds a layer tar in memory.
struct Layer(tar::Builder<Vec<u8>>);

const MTIME: u64 = 1_600_000_000;

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h
    }

    fn file_owned(mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Layer {
        let mut h = Self::header(tar::EntryType::Regular, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(data.len() as u64);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    fn file(self, path: &str, data: &[u8], mode: u32) -> Layer {
        self.file_owned(path, data, mode, 0, 0)
    }

    fn dir(mut self, path: &str, mode: u32) -> Layer {
        let mut h = Self::header(tar::EntryType::Directory, mode);
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    fn symlink(mut self, path: &str, target: &str) -> Layer {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    fn hardlink(mut self, path: &str, target: &str) -> Layer {
        let mut h = Self::header(tar::EntryType::Link, 0o644);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    fn node(mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Layer {
        let mut h = Self::header(kind, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    fn pax(mut self, exts: &[(&str, &[u8])]) -> Layer {
        self.0.append_pax_extensions(exts.iter().copied()).unwrap();
        self
    }

    fn tar(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn apply(tar: &[u8], root: &Path) -> LayerStats {
    apply_layer(tar, root, &opts()).unwrap_or_else(|e| panic!("apply_layer: {e}"))
}

fn rootfs(t: &TempDir) -> PathBuf {
    let r = t.0.join("rootfs");
    fs::create_dir(&r).unwrap();
    r
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn regular_files_dirs_modes_and_mtimes() {
    let t = TempDir::new("basic");
    let r = rootfs(&t);
    let tar = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/hostname", b"box\n", 0o644)
        .file("bin/tool", b"#!/bin/true\n", 0o755)
        .file("usr/bin/su", b"suid", 0o4755)
        .file("usr/bin/wall", b"sgid", 0o2755)
        .dir("tmp/", 0o1777)
        .dir("ro/", 0o555)
        .file("ro/inside", b"filled after", 0o444)
        .tar();
    let stats = apply(&tar, &r);
    assert_eq!(stats.entries, 8);
    assert_eq!(stats.bytes, (4 + 12 + 4 + 4 + 12) as u64);
    assert_eq!(fs::read(r.join("etc/hostname")).unwrap(), b"box\n");
    assert_eq!(mode(&r.join("etc/hostname")), 0o644);
    assert_eq!(mode(&r.join("bin/tool")), 0o755);
    // Implicit parents are created like docker's: 0755.
    assert_eq!(mode(&r.join("bin")), 0o755);
    assert_eq!(mode(&r.join("usr/bin/su")), 0o4755);
    assert_eq!(mode(&r.join("usr/bin/wall")), 0o2755);
    assert_eq!(mode(&r.join("tmp")), 0o1777);
    assert_eq!(mode(&r.join("ro")), 0o555);
    assert_eq!(fs::read(r.join("ro/inside")).unwrap(), b"filled after");
    for p in ["etc", "etc/hostname", "ro", "ro/inside", "tmp"] {
        assert_eq!(
            fs::metadata(r.join(p)).unwrap().mtime(),
            MTIME as i64,
            "{p}"
        );
    }
}

#[test]
fn owners_when_privileged() {
    if !is_root() {
        skip!("owners need root");
        return;
    }
    let t = TempDir::new("owner");
    let r = rootfs(&t);
    let tar = Layer::new()
        .file_owned("home/u/file", b"mine", 0o640, 1000, 1000)
        .file_owned("usr/bin/sudo", b"x", 0o4755, 0, 0)
        .file_owned("usr/bin/crontab", b"x", 0o2755, 0, 102)
        .tar();
    let mut tar = tar;
    // A directory owned by 1000, and a symlink owned by 1000 (lchown, not its target).
    let extra = {
        let mut l = Layer::new();
        let mut h = Layer::header(tar::EntryType::Directory, 0o700);
        h.set_uid(1000);
        h.set_gid(1000);
        l.0.append_data(&mut h, "home/u/", &[][..]).unwrap();
        let mut h = Layer::header(tar::EntryType::Symlink, 0o777);
        h.set_uid(1000);
        h.set_gid(1001);
        l.0.append_link(&mut h, "home/u/link", "file").unwrap();
        l.tar()
    };
    apply(&tar, &r);
    tar.clear();
    apply(&extra, &r);
    let m = fs::metadata(r.join("home/u/file")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1000, 0o640));
    let m = fs::metadata(r.join("home/u")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1000, 0o700));
    let m = fs::symlink_metadata(r.join("home/u/link")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1001));
    // chown before chmod: the setuid/setgid bits survive.
    let m = fs::metadata(r.join("usr/bin/sudo")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o4755));
    let m = fs::metadata(r.join("usr/bin/crontab")).unwrap();
    assert_eq!((m.gid(), m.mode() & 0o7777), (102, 0o2755));
}

#[test]
fn unprivileged_skips_devices_and_chown() {
    let t = TempDir::new("unpriv");
    let r = rootfs(&t);
    let tar = Layer::new()
        .node("dev/null", tar::EntryType::Char, 1, 3)
        .node("dev/sda", tar::EntryType::Block, 8, 0)
        .node("run/fifo", tar::EntryType::Fifo, 0, 0)
        .file_owned("f", b"x", 0o644, 1000, 1000)
        .tar();
    let stats = apply_layer(&tar[..], &r, &UnpackOptions { privileged: false }).unwrap();
    assert_eq!(stats.entries, 4);
    assert!(!r.join("dev/null").exists() && !r.join("dev/sda").exists());
    assert!(fs::symlink_metadata(r.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    assert_eq!(fs::metadata(r.join("f")).unwrap().uid(), me);
}

#[test]
fn device_nodes_when_privileged() {
    if !is_root() {
        skip!("device nodes need root");
        return;
    }
    let t = TempDir::new("dev");
    let r = rootfs(&t);
    let tar = Layer::new()
        .node("dev/null", tar::EntryType::Char, 1, 3)
        .node("dev/loop9", tar::EntryType::Block, 7, 9)
        .node("run/fifo", tar::EntryType::Fifo, 0, 0)
        .tar();
    apply(&tar, &r);
    let m = fs::symlink_metadata(r.join("dev/null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), libc::makedev(1, 3));
    assert_eq!(m.mode() & 0o7777, 0o666);
    let m = fs::symlink_metadata(r.join("dev/loop9")).unwrap();
    assert!(m.file_type().is_block_device());
    assert_eq!(m.rdev(), libc::makedev(7, 9));
    let m = fs::symlink_metadata(r.join("run/fifo")).unwrap();
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mode() & 0o7777, 0o666);
}

#[test]
fn symlinks_relative_and_absolute_are_stored_verbatim() {
    let t = TempDir::new("symlink");
    let r = rootfs(&t);
    let tar = Layer::new()
        .file("usr/lib/libc.so.6", b"elf", 0o755)
        .symlink("lib", "usr/lib")
        .symlink("usr/lib/libc.so", "libc.so.6")
        .symlink("etc/mtab", "/proc/self/mounts")
        .symlink("dangling", "../../nowhere")
        .tar();
    apply(&tar, &r);
    assert_eq!(fs::read_link(r.join("lib")).unwrap(), Path::new("usr/lib"));
    assert_eq!(
        fs::read_link(r.join("usr/lib/libc.so")).unwrap(),
        Path::new("libc.so.6")
    );
    assert_eq!(
        fs::read_link(r.join("etc/mtab")).unwrap(),
        Path::new("/proc/self/mounts")
    );
    assert_eq!(
        fs::read_link(r.join("dangling")).unwrap(),
        Path::new("../../nowhere")
    );
    assert_eq!(fs::read(r.join("usr/lib/libc.so")).unwrap(), b"elf");
    assert_eq!(
        fs::symlink_metadata(r.join("etc/mtab")).unwrap().mtime(),
        MTIME as i64
    );
}

#[test]
fn hard_links_share_the_inode() {
    let t = TempDir::new("hardlink");
    let r = rootfs(&t);
    let l1 = Layer::new()
        .file("usr/bin/perl5.36", b"perl", 0o755)
        .hardlink("usr/bin/perl", "usr/bin/perl5.36")
        // Absolute link names are rootfs-relative, like entry names.
        .hardlink("usr/bin/perl-abs", "/usr/bin/perl5.36")
        .tar();
    apply(&l1, &r);
    let ino = |p: &str| fs::metadata(r.join(p)).unwrap().ino();
    assert_eq!(ino("usr/bin/perl"), ino("usr/bin/perl5.36"));
    assert_eq!(ino("usr/bin/perl-abs"), ino("usr/bin/perl5.36"));
    assert_eq!(fs::metadata(r.join("usr/bin/perl")).unwrap().nlink(), 3);
    // A later layer links to a lower layer's file, and replaces one name with a new
    // file without changing the other names' content.
    let l2 = Layer::new()
        .hardlink("opt/perl", "usr/bin/perl5.36")
        .file("usr/bin/perl", b"new perl", 0o755)
        .tar();
    apply(&l2, &r);
    assert_eq!(ino("opt/perl"), ino("usr/bin/perl5.36"));
    assert_eq!(fs::read(r.join("usr/bin/perl5.36")).unwrap(), b"perl");
    assert_eq!(fs::read(r.join("usr/bin/perl")).unwrap(), b"new perl");
    assert_ne!(ino("usr/bin/perl"), ino("usr/bin/perl5.36"));
}

#[test]
fn long_names_pax_and_gnu() {
    let t = TempDir::new("long");
    let r = rootfs(&t);
    let deep = format!("{}/{}", "d".repeat(80), "e".repeat(60));
    let gnu = format!("{deep}/gnu-{}.txt", "g".repeat(40));
    let pax = format!("{deep}/pax-{}.txt", "p".repeat(40));
    let long_target = format!("{deep}/target-{}", "t".repeat(90));
    assert!(gnu.len() > 100 && pax.len() > 100 && long_target.len() > 100);
    // GNU: the tar crate writes ././@LongLink entries for names over 100 bytes.
    let mut l = Layer::new()
        .file(&gnu, b"gnu", 0o644)
        .file(&long_target, b"target", 0o644)
        .symlink("short-link", &long_target)
        .hardlink("short-hard", &long_target);
    // PAX: a `path` record overrides a truncated ustar name.
    l = l.pax(&[("path", pax.as_bytes())]);
    let mut h = Layer::header(tar::EntryType::Regular, 0o600);
    h.set_size(3);
    h.set_path("truncated-name").unwrap();
    h.set_cksum();
    l.0.append(&h, &b"pax"[..]).unwrap();
    let tar = l.tar();
    let stats = apply(&tar, &r);
    assert_eq!(stats.entries, 5);
    assert_eq!(fs::read(r.join(&gnu)).unwrap(), b"gnu");
    assert_eq!(fs::read(r.join(&pax)).unwrap(), b"pax");
    assert_eq!(mode(&r.join(&pax)), 0o600);
    assert!(!r.join("truncated-name").exists());
    assert_eq!(
        fs::read_link(r.join("short-link")).unwrap(),
        Path::new(&long_target)
    );
    assert_eq!(
        fs::metadata(r.join("short-hard")).unwrap().ino(),
        fs::metadata(r.join(&long_target)).unwrap().ino()
    );
}

#[test]
fn pax_mtime_uid_and_xattrs() {
    let t = TempDir::new("pax");
    let r = rootfs(&t);
    let mut l = Layer::new().pax(&[
        ("mtime", b"1234567890.25"),
        ("uid", b"3000000"),
        ("gid", b"3000001"),
        ("SCHILY.xattr.user.iii", b"value"),
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
    ]);
    let mut h = Layer::header(tar::EntryType::Regular, 0o644);
    h.set_size(1);
    h.set_path("f").unwrap();
    h.set_cksum();
    l.0.append(&h, &b"x"[..]).unwrap();
    apply(&l.tar(), &r);
    let m = fs::metadata(r.join("f")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 250_000_000));
    if is_root() {
        assert_eq!((m.uid(), m.gid()), (3_000_000, 3_000_001));
    }
    let path = CString::new(r.join("f").into_os_string().into_encoded_bytes()).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a writable buffer of the given size.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"user.iii".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        skip!(
            "(xattr check) user xattrs unsupported here: {}",
            std::io::Error::last_os_error()
        );
    } else {
        assert_eq!(&buf[..n as usize], b"value");
    }
    // Overlay xattrs would change how overlayfs reads the store: never restored.
    // SAFETY: as above.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(n < 0);
}

#[test]
fn utf8_names() {
    let t = TempDir::new("utf8");
    let r = rootfs(&t);
    let tar = Layer::new()
        .file("données/日本語.txt", "héllo".as_bytes(), 0o644)
        .symlink("ссылка", "données/日本語.txt")
        .tar();
    apply(&tar, &r);
    assert_eq!(
        fs::read(r.join("données/日本語.txt")).unwrap(),
        "héllo".as_bytes()
    );
    assert_eq!(names(&r.join("données")), vec!["日本語.txt"]);
    assert_eq!(
        fs::read_link(r.join("ссылка")).unwrap(),
        Path::new("données/日本語.txt")
    );
}

fn sample_layer() -> Vec<u8> {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    Layer::new()
        .dir("app/", 0o755)
        .file("app/big.bin", &big, 0o644)
        .file("app/small", b"small", 0o600)
        .symlink("app/link", "small")
        .tar()
}

fn check_sample(r: &Path) {
    let big = fs::read(r.join("app/big.bin")).unwrap();
    assert_eq!(big.len(), 3_000_000);
    assert!(big.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    assert_eq!(fs::read(r.join("app/small")).unwrap(), b"small");
    assert_eq!(
        fs::read_link(r.join("app/link")).unwrap(),
        Path::new("small")
    );
}

#[test]
fn uncompressed_gzip_and_zstd_layers() {
    let tar = sample_layer();
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&tar).unwrap();
        e.finish().unwrap()
    };
    let zst =
        ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest);
    for (blob, media_type) in [
        (&tar, "application/vnd.oci.image.layer.v1.tar"),
        (&gz, "application/vnd.oci.image.layer.v1.tar+gzip"),
        (&gz, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        (&zst, "application/vnd.oci.image.layer.v1.tar+zstd"),
    ] {
        let t = TempDir::new("compress");
        let r = rootfs(&t);
        let c = Compression::from_media_type(media_type).unwrap();
        assert_eq!(Compression::sniff(&blob[..8]), c, "{media_type}");
        let reader = decompress(&blob[..], c).unwrap();
        let stats = apply_layer(reader, &r, &opts()).unwrap();
        assert_eq!(stats.entries, 4, "{media_type}");
        check_sample(&r);
    }
}

#[test]
fn corrupt_gzip_layer_fails() {
    let tar = sample_layer();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&tar).unwrap();
    let mut gz = e.finish().unwrap();
    let n = gz.len();
    gz[n - 6] ^= 0xff; // the CRC32 trailer: only a full read notices
    let t = TempDir::new("crc");
    let r = rootfs(&t);
    let err =
        apply_layer(decompress(&gz[..], Compression::Gzip).unwrap(), &r, &opts()).unwrap_err();
    assert!(err.to_string().contains("end of the layer"), "{err}");
}

#[test]
fn tar_without_end_of_archive_blocks() {
    let mut tar = sample_layer();
    let n = tar.len();
    assert!(tar[n - 1024..].iter().all(|b| *b == 0));
    tar.truncate(n - 1024);
    let t = TempDir::new("noend");
    let r = rootfs(&t);
    let stats = apply(&tar, &r);
    assert_eq!(stats.entries, 4);
    check_sample(&r);
    // Also through gzip, where the stream simply ends after the last entry.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&tar).unwrap();
    let gz = e.finish().unwrap();
    let t = TempDir::new("noend-gz");
    let r = rootfs(&t);
    apply_layer(decompress(&gz[..], Compression::Gzip).unwrap(), &r, &opts()).unwrap();
    check_sample(&r);
}

#[test]
fn empty_and_single_end_block_archives() {
    let t = TempDir::new("empty");
    let r = rootfs(&t);
    assert_eq!(apply(&[], &r), LayerStats::default());
    assert_eq!(apply(&[0u8; 10240], &r), LayerStats::default());
    // One zero block instead of two still ends the archive.
    let mut tar = sample_layer();
    let n = tar.len();
    tar.truncate(n - 512);
    assert_eq!(apply(&tar, &r).entries, 4);
    check_sample(&r);
    assert!(apply_layer(&b"not a tar at all"[..], &r, &opts()).is_err());
}

#[test]
fn truncated_entry_fails() {
    let tar = sample_layer();
    let t = TempDir::new("trunc");
    let r = rootfs(&t);
    let err = apply_layer(&tar[..2_000_000], &r, &opts()).unwrap_err();
    assert!(err.to_string().contains("app/big.bin"), "{err}");
}

#[test]
fn whiteout_removes_lower_files_and_trees() {
    let t = TempDir::new("whiteout");
    let r = rootfs(&t);
    let l1 = Layer::new()
        .file("a/keep", b"k", 0o644)
        .file("a/gone", b"g", 0o644)
        .file("a/tree/x/y", b"y", 0o644)
        .symlink("a/link", "/etc")
        .tar();
    apply(&l1, &r);
    let l2 = Layer::new()
        .file("a/.wh.gone", b"", 0o644)
        .file("a/.wh.tree", b"", 0o644)
        .file("a/.wh.link", b"", 0o644)
        .file("a/.wh.never-existed", b"", 0o644)
        .file("nodir/.wh.x", b"", 0o644)
        .tar();
    let stats = apply(&l2, &r);
    assert_eq!(stats.entries, 5);
    assert_eq!(names(&r.join("a")), vec!["keep"]);
    assert!(!r.join("nodir").exists());
    // A later layer can bring the name back.
    apply(&Layer::new().file("a/gone", b"again", 0o644).tar(), &r);
    assert_eq!(fs::read(r.join("a/gone")).unwrap(), b"again");
}

#[test]
fn whiteout_hides_only_lower_layers() {
    let t = TempDir::new("whiteout-same");
    let r = rootfs(&t);
    apply(&Layer::new().file("d/lower", b"l", 0o644).tar(), &r);
    // This layer adds d/new and whites out d itself: the lower file goes, its own stays.
    let l2 = Layer::new()
        .dir("d/", 0o755)
        .file("d/new", b"n", 0o644)
        .file(".wh.d", b"", 0o644)
        .tar();
    apply(&l2, &r);
    assert_eq!(names(&r.join("d")), vec!["new"]);
}

fn opaque_lower(r: &Path) {
    let l1 = Layer::new()
        .file("d/old", b"o", 0o644)
        .file("d/sub/old2", b"o", 0o644)
        .file("d/sub/deeper/old3", b"o", 0o644)
        .file("other/keep", b"k", 0o644)
        .tar();
    apply(&l1, r);
}

#[test]
fn opaque_dir_marker_before_siblings() {
    let t = TempDir::new("opq-before");
    let r = rootfs(&t);
    opaque_lower(&r);
    let l2 = Layer::new()
        .dir("d/", 0o750)
        .file("d/.wh..wh..opq", b"", 0o644)
        .file("d/new", b"n", 0o644)
        .dir("d/sub/", 0o755)
        .file("d/sub/new2", b"n", 0o644)
        .tar();
    apply(&l2, &r);
    assert_eq!(names(&r.join("d")), vec!["new", "sub"]);
    assert_eq!(names(&r.join("d/sub")), vec!["new2"]);
    assert_eq!(mode(&r.join("d")), 0o750);
    assert_eq!(names(&r.join("other")), vec!["keep"]);
}

#[test]
fn opaque_dir_marker_after_siblings() {
    let t = TempDir::new("opq-after");
    let r = rootfs(&t);
    opaque_lower(&r);
    let l2 = Layer::new()
        .dir("d/", 0o755)
        .file("d/new", b"n", 0o644)
        .dir("d/sub/", 0o755)
        .file("d/sub/new2", b"n", 0o644)
        // A file whose parent this layer never lists: the parent is still this layer's.
        .file("d/implicit/f", b"i", 0o644)
        .file("d/.wh..wh..opq", b"", 0o644)
        .tar();
    apply(&l2, &r);
    assert_eq!(names(&r.join("d")), vec!["implicit", "new", "sub"]);
    assert_eq!(names(&r.join("d/sub")), vec!["new2"]);
    assert_eq!(fs::read(r.join("d/implicit/f")).unwrap(), b"i");
    assert_eq!(names(&r.join("other")), vec!["keep"]);
}

#[test]
fn replacement_across_layers() {
    let t = TempDir::new("replace");
    let r = rootfs(&t);
    let l1 = Layer::new()
        .file("was-dir/child/f", b"x", 0o644)
        .file("was-file", b"x", 0o644)
        .file("was-file2", b"x", 0o644)
        .symlink("was-link", "somewhere")
        .dir("merge/", 0o700)
        .file("merge/lower", b"l", 0o644)
        .tar();
    apply(&l1, &r);
    let l2 = Layer::new()
        .file("was-dir", b"now a file", 0o600)
        .dir("was-file/", 0o711)
        .file("was-file/inner", b"i", 0o644)
        .symlink("was-file2", "was-dir")
        .file("was-link", b"now a file", 0o644)
        .dir("merge/", 0o755)
        .file("merge/upper", b"u", 0o644)
        .tar();
    apply(&l2, &r);
    assert_eq!(fs::read(r.join("was-dir")).unwrap(), b"now a file");
    assert_eq!(mode(&r.join("was-dir")), 0o600);
    assert!(fs::symlink_metadata(r.join("was-file")).unwrap().is_dir());
    assert_eq!(mode(&r.join("was-file")), 0o711);
    assert_eq!(names(&r.join("was-file")), vec!["inner"]);
    assert_eq!(
        fs::read_link(r.join("was-file2")).unwrap(),
        Path::new("was-dir")
    );
    assert!(fs::symlink_metadata(r.join("was-link")).unwrap().is_file());
    assert_eq!(names(&r.join("merge")), vec!["lower", "upper"]);
    // The directory entry's metadata applies to the merged directory.
    assert_eq!(mode(&r.join("merge")), 0o755);
}

#[test]
fn duplicate_entries_last_wins_and_root_entry() {
    let t = TempDir::new("dup");
    let r = rootfs(&t);
    let tar = Layer::new()
        .dir("./", 0o755)
        .file("f", b"first", 0o644)
        .file("f", b"second", 0o600)
        .dir("d/", 0o700)
        .dir("d/", 0o750)
        .tar();
    apply(&tar, &r);
    assert_eq!(fs::read(r.join("f")).unwrap(), b"second");
    assert_eq!(mode(&r.join("f")), 0o600);
    assert_eq!(mode(&r.join("d")), 0o750);
    assert_eq!(mode(&r), 0o755);
    assert_eq!(fs::metadata(&r).unwrap().mtime(), MTIME as i64);
}

/// Root ignores permission bits, so the rootless path is checked by running this same
/// test binary again as nobody (via `setpriv`) on a directory nobody owns.
#[test]
fn unprivileged_read_only_directories() {
    if let Some(base) = std::env::var_os("III_UNPACK_AS_NOBODY") {
        rootless_read_only_dirs(Path::new(&base));
        return;
    }
    let t = TempDir::new("rootless");
    if !is_root() {
        rootless_read_only_dirs(&t.0);
        return;
    }
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        skip!("setpriv (util-linux) is not installed");
        return;
    }
    std::os::unix::fs::chown(&t.0, Some(65534), Some(65534)).unwrap();
    // Under a strict umask too: modes must come from the tar, not the process.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["sh", "-c", "umask 077 && exec \"$0\" \"$@\""])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "unprivileged_read_only_directories",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("III_UNPACK_AS_NOBODY", &t.0)
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "as nobody: {log}");
    assert!(
        log.contains("1 passed"),
        "the test did not run as nobody: {log}"
    );
}

fn rootless_read_only_dirs(base: &Path) {
    let r = base.join("rootfs");
    fs::create_dir(&r).unwrap();
    let unpriv = UnpackOptions { privileged: false };
    let strict_umask = fs::read_to_string("/proc/self/status")
        .unwrap()
        .contains("Umask:\t0077");
    if strict_umask {
        let l0 = Layer::new().file("implicit/parent/file", b"f", 0o644).tar();
        apply_layer(&l0[..], &r, &unpriv).unwrap();
        assert_eq!(mode(&r.join("implicit")), 0o755);
        assert_eq!(mode(&r.join("implicit/parent")), 0o755);
        assert_eq!(mode(&r.join("implicit/parent/file")), 0o644);
    } else {
        skip!("(umask part) not run under umask 077");
    }
    let l1 = Layer::new()
        .dir("ro/", 0o555)
        .file("ro/a", b"a", 0o444)
        .dir("locked/", 0o500)
        .dir("locked/sub/", 0o555)
        .file("locked/sub/f", b"f", 0o400)
        .dir("proc/", 0o555)
        .tar();
    apply_layer(&l1[..], &r, &unpriv).unwrap();
    assert_eq!(mode(&r.join("ro")), 0o555);
    assert_eq!(mode(&r.join("locked")), 0o500);
    assert_eq!(fs::read(r.join("locked/sub/f")).unwrap(), b"f");
    // A later layer writes into and whites out of read-only directories, and removes a
    // tree of them; the lower modes are back afterwards.
    let l2 = Layer::new()
        .file("ro/b", b"b", 0o644)
        .file("ro/.wh.a", b"", 0o644)
        .file(".wh.locked", b"", 0o644)
        .file("proc/.wh..wh..opq", b"", 0o644)
        .tar();
    apply_layer(&l2[..], &r, &unpriv).unwrap();
    assert_eq!(names(&r.join("ro")), vec!["b"]);
    assert_eq!(mode(&r.join("ro")), 0o555);
    assert_eq!(mode(&r.join("proc")), 0o555);
    assert!(!r.join("locked").exists());
    // A directory entry for an existing read-only directory sets its new mode.
    let l3 = Layer::new()
        .dir("ro/", 0o700)
        .file("ro/c", b"c", 0o644)
        .tar();
    apply_layer(&l3[..], &r, &unpriv).unwrap();
    assert_eq!(mode(&r.join("ro")), 0o700);
    assert_eq!(names(&r.join("ro")), vec!["b", "c"]);
    // std's remove_dir_all cannot remove this tree without root; remove_tree can.
    let l4 = Layer::new()
        .dir("ro2/", 0o555)
        .file("ro2/f", b"f", 0o644)
        .tar();
    apply_layer(&l4[..], &r, &unpriv).unwrap();
    assert!(fs::remove_dir_all(&r).is_err());
    remove_tree(&r).unwrap();
    assert!(!r.exists());
    remove_tree(&r).unwrap();
}
