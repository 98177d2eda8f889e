//! Hostile layers: every way an entry could reach outside the rootfs must fail the layer
//! with an error naming the entry, and nothing outside the rootfs may change. Each test
//! keeps a sentinel directory next to the rootfs and checks it afterwards.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use iii::oci::unpack::{apply_layer, UnpackOptions};

/// `base/rootfs` (extraction target) and `base/outside` (sentinel, holding one file),
/// removed when the test ends, pass or fail.
struct Sandbox {
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new(tag: &str) -> Sandbox {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base =
            std::env::temp_dir().join(format!("iii-hostile-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let root = base.join("rootfs");
        let outside = base.join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"unchanged").unwrap();
        Sandbox {
            base,
            root,
            outside,
        }
    }

    /// Nothing appeared next to the rootfs, and the sentinel is as it was.
    fn assert_outside_untouched(&self) {
        let mut next_to_root: Vec<_> = fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        next_to_root.sort();
        assert_eq!(next_to_root, vec!["outside", "rootfs"]);
        let inside: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(inside, vec!["secret"]);
        let secret = self.outside.join("secret");
        assert_eq!(fs::read(&secret).unwrap(), b"unchanged");
        let m = fs::symlink_metadata(&secret).unwrap();
        assert_eq!((m.nlink(), m.mode() & 0o7777), (1, 0o644));
    }

    fn apply(&self, tar: &[u8]) -> Result<(), String> {
        let opts = UnpackOptions {
            // SAFETY: geteuid has no preconditions.
            privileged: unsafe { libc::geteuid() } == 0,
        };
        apply_layer(tar, &self.root, &opts)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn outside_str(&self) -> String {
        self.outside.to_str().unwrap().to_string()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// Tar entries with names written raw into the header, as a hostile tool would: the tar
/// crate's own setters refuse `..`.
struct Raw(tar::Builder<Vec<u8>>);

impl Raw {
    fn new() -> Raw {
        Raw(tar::Builder::new(Vec::new()))
    }

    fn entry(mut self, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) -> Raw {
        let mut h = tar::Header::new_gnu();
        assert!(name.len() < 100 && link.len() < 100);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Raw {
        self.entry(tar::EntryType::Regular, name, "", data)
    }

    fn dir(self, name: &str) -> Raw {
        self.entry(tar::EntryType::Directory, name, "", b"")
    }

    fn symlink(self, name: &str, target: &str) -> Raw {
        self.entry(tar::EntryType::Symlink, name, target, b"")
    }

    fn hardlink(self, name: &str, target: &str) -> Raw {
        self.entry(tar::EntryType::Link, name, target, b"")
    }

    fn tar(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn assert_rejected(r: Result<(), String>, entry: &str, why: &str) {
    let e = r.expect_err("hostile layer was accepted");
    assert!(
        e.contains(&format!("'{entry}'")),
        "error does not name '{entry}': {e}"
    );
    assert!(e.contains(why), "error does not say '{why}': {e}");
}

#[test]
fn dotdot_escape_is_rejected() {
    let s = Sandbox::new("dotdot");
    let tar = Raw::new()
        .file("ok", b"fine")
        .file("../escape", b"bad")
        .tar();
    assert_rejected(s.apply(&tar), "../escape", "escapes the root filesystem");
    s.assert_outside_untouched();
    let tar = Raw::new().file("../outside/secret", b"bad").tar();
    assert_rejected(s.apply(&tar), "../outside/secret", "escapes");
    s.assert_outside_untouched();
}

#[test]
fn nested_dotdot_escape_is_rejected() {
    let s = Sandbox::new("nested");
    let tar = Raw::new().dir("a/").file("a/../../escape", b"bad").tar();
    assert_rejected(
        s.apply(&tar),
        "a/../../escape",
        "escapes the root filesystem",
    );
    s.assert_outside_untouched();
    // A `..` that stays inside is only a spelling of an inner path.
    let tar = Raw::new().file("a/b/../c", b"in").tar();
    s.apply(&tar).unwrap();
    assert_eq!(fs::read(s.root.join("a/c")).unwrap(), b"in");
    s.assert_outside_untouched();
}

#[test]
fn absolute_names_are_confined_under_rootfs() {
    let s = Sandbox::new("absolute");
    let host_before = Path::new("/etc/iii-unpack-test-x").exists();
    let name = format!("{}/planted", s.outside_str());
    let tar = Raw::new()
        .file("/etc/iii-unpack-test-x", b"confined")
        .file(&name, b"confined too")
        .tar();
    s.apply(&tar).unwrap();
    assert_eq!(
        fs::read(s.root.join("etc/iii-unpack-test-x")).unwrap(),
        b"confined"
    );
    assert_eq!(Path::new("/etc/iii-unpack-test-x").exists(), host_before);
    let inner = s.root.join(name.trim_start_matches('/'));
    assert_eq!(fs::read(inner).unwrap(), b"confined too");
    s.assert_outside_untouched();
}

#[test]
fn write_through_absolute_symlink_is_rejected() {
    let s = Sandbox::new("symlink-abs");
    let tar = Raw::new()
        .symlink("a", &s.outside_str())
        .file("a/file", b"bad")
        .tar();
    assert_rejected(s.apply(&tar), "a/file", "'a' is a symlink");
    s.assert_outside_untouched();
    // The symlink planted by a lower layer is just as refused in a later one, also for
    // directories and for overwriting an existing file through it.
    let tar = Raw::new().dir("a/sub/").tar();
    assert_rejected(s.apply(&tar), "a/sub/", "symlink");
    let tar = Raw::new().file("a/secret", b"overwritten").tar();
    assert_rejected(s.apply(&tar), "a/secret", "symlink");
    s.assert_outside_untouched();
    // The classic: `etc -> /etc`, then `etc/passwd`.
    let before = fs::read("/etc/passwd").ok();
    let tar = Raw::new()
        .symlink("etc", "/etc")
        .file("etc/passwd", b"pwned::0:0::/:/bin/sh\n")
        .tar();
    assert_rejected(s.apply(&tar), "etc/passwd", "'etc' is a symlink");
    assert_eq!(fs::read("/etc/passwd").ok(), before);
    s.assert_outside_untouched();
}

#[test]
fn write_through_dotdot_symlink_chain_is_rejected() {
    let s = Sandbox::new("symlink-chain");
    let tar = Raw::new()
        .symlink("up", "..")
        .symlink("d/up2", "../up/..")
        .file("d/up2/outside/planted", b"bad")
        .tar();
    assert_rejected(
        s.apply(&tar),
        "d/up2/outside/planted",
        "'d/up2' is a symlink",
    );
    s.assert_outside_untouched();
    let tar = Raw::new().file("up/escape", b"bad").tar();
    assert_rejected(s.apply(&tar), "up/escape", "'up' is a symlink");
    s.assert_outside_untouched();
}

#[test]
fn entry_over_a_symlink_replaces_the_symlink() {
    let s = Sandbox::new("over-symlink");
    let target = format!("{}/secret", s.outside_str());
    let lower = Raw::new()
        .symlink("f", &target)
        .symlink("d", &s.outside_str())
        .symlink("h", &target)
        .tar();
    s.apply(&lower).unwrap();
    // A file, a directory and a hard link named like the symlinks replace them: nothing is
    // written where they point.
    let upper = Raw::new()
        .file("f", b"new content")
        .dir("d/")
        .file("d/x", b"in a real dir")
        .file("real", b"r")
        .hardlink("h", "real")
        .tar();
    s.apply(&upper).unwrap();
    assert_eq!(fs::read(s.root.join("f")).unwrap(), b"new content");
    assert!(fs::symlink_metadata(s.root.join("d")).unwrap().is_dir());
    assert_eq!(fs::read(s.root.join("d/x")).unwrap(), b"in a real dir");
    assert_eq!(
        fs::metadata(s.root.join("h")).unwrap().ino(),
        fs::metadata(s.root.join("real")).unwrap().ino()
    );
    s.assert_outside_untouched();
}

#[test]
fn hardlink_to_host_etc_passwd_is_rejected() {
    let s = Sandbox::new("hl-passwd");
    let before = fs::metadata("/etc/passwd").map(|m| m.nlink()).ok();
    let tar = Raw::new().hardlink("passwd", "/etc/passwd").tar();
    assert_rejected(s.apply(&tar), "passwd", "does not exist");
    assert_eq!(fs::metadata("/etc/passwd").map(|m| m.nlink()).ok(), before);
    assert!(fs::symlink_metadata(s.root.join("passwd")).is_err());
    let tar = Raw::new()
        .hardlink("passwd", "../../../../../../etc/passwd")
        .tar();
    assert_rejected(s.apply(&tar), "passwd", "escapes the root filesystem");
    assert_eq!(fs::metadata("/etc/passwd").map(|m| m.nlink()).ok(), before);
    // With the image's own /etc/passwd present, the absolute link name means that one.
    let tar = Raw::new()
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
        .hardlink("passwd", "/etc/passwd")
        .tar();
    s.apply(&tar).unwrap();
    assert_eq!(
        fs::metadata(s.root.join("passwd")).unwrap().ino(),
        fs::metadata(s.root.join("etc/passwd")).unwrap().ino()
    );
    assert_eq!(fs::metadata("/etc/passwd").map(|m| m.nlink()).ok(), before);
    s.assert_outside_untouched();
}

#[test]
fn hardlink_through_symlink_leaving_the_tree_is_rejected() {
    let s = Sandbox::new("hl-symlink");
    let tar = Raw::new()
        .symlink("out", &s.outside_str())
        .hardlink("stolen", "out/secret")
        .tar();
    assert_rejected(s.apply(&tar), "stolen", "'out' is a symlink");
    assert!(fs::symlink_metadata(s.root.join("stolen")).is_err());
    let tar = Raw::new()
        .symlink("up", "..")
        .hardlink("stolen2", "up/outside/secret")
        .tar();
    assert_rejected(s.apply(&tar), "stolen2", "'up' is a symlink");
    s.assert_outside_untouched();
    // A hard link *to* a symlink links the symlink itself: the result is another symlink,
    // and the file it points at is not linked.
    let tar = Raw::new()
        .symlink("sl", &format!("{}/secret", s.outside_str()))
        .hardlink("sl2", "sl")
        .tar();
    s.apply(&tar).unwrap();
    assert!(fs::symlink_metadata(s.root.join("sl2"))
        .unwrap()
        .is_symlink());
    s.assert_outside_untouched();
}

#[test]
fn whiteouts_through_symlinks_are_rejected() {
    let s = Sandbox::new("wh-symlink");
    s.apply(&Raw::new().symlink("out", &s.outside_str()).tar())
        .unwrap();
    let tar = Raw::new().file("out/.wh.secret", b"").tar();
    assert_rejected(s.apply(&tar), "out/.wh.secret", "'out' is a symlink");
    let tar = Raw::new().file("out/.wh..wh..opq", b"").tar();
    assert_rejected(s.apply(&tar), "out/.wh..wh..opq", "'out' is a symlink");
    let tar = Raw::new().file(".wh...", b"").tar();
    assert!(s.apply(&tar).is_err());
    s.assert_outside_untouched();
    // Whiting out the symlink itself removes the link, not its target.
    s.apply(&Raw::new().file(".wh.out", b"").tar()).unwrap();
    assert!(fs::symlink_metadata(s.root.join("out")).is_err());
    s.assert_outside_untouched();
}

#[test]
fn hostile_gnu_long_name_is_rejected() {
    // The escape hidden in a GNU long name (built by hand: the tar crate refuses it).
    let s = Sandbox::new("longname");
    let long = format!("{}/../../escape", "x".repeat(120));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_mode(0o644);
    h.set_size(long.len() as u64 + 1);
    h.set_cksum();
    let mut data = long.clone().into_bytes();
    data.push(0);
    b.append(&h, &data[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..5].copy_from_slice(b"short");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(3);
    h.set_cksum();
    b.append(&h, &b"bad"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    assert_rejected(s.apply(&tar), &long, "escapes");
    s.assert_outside_untouched();
}

/// A small deterministic PRNG (xorshift64*), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// Many random layers mixing `..`, absolute names, symlinks to `..`, `/` and the sentinel,
/// hard links and whiteouts through them, applied one after another onto the same rootfs:
/// each may fail, none may panic or touch anything outside.
#[test]
fn random_hostile_layers_never_escape() {
    let s = Sandbox::new("random");
    let outside = s.outside_str();
    let secret = format!("{outside}/secret");
    let comps = [
        "a", "b", "l", "m", "..", ".", "", "outside", "secret", ".wh.a", ".wh.l",
    ];
    let targets = [
        "..", "../..", "../../..", "/", "a", "l/..", "b/../..", &outside, &secret,
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut failures = 0;
    for _ in 0..400 {
        let mut raw = Raw::new();
        for _ in 0..1 + rng.next() % 8 {
            let depth = 1 + rng.next() % 4;
            let mut name: Vec<&str> = (0..depth).map(|_| rng.pick(&comps)).collect();
            if rng.next().is_multiple_of(5) {
                name.insert(0, "");
            }
            if rng.next().is_multiple_of(6) {
                name.push(".wh..wh..opq");
            }
            let name = name.join("/");
            if name.is_empty() || name.len() >= 100 {
                continue;
            }
            raw = match rng.next() % 5 {
                0 => raw.file(&name, b"payload"),
                1 => raw.dir(&format!("{name}/")),
                2 => raw.symlink(&name, rng.pick(&targets)),
                3 => {
                    let target = match rng.next() % 2 {
                        0 => rng.pick(&targets).to_string(),
                        _ => (0..2)
                            .map(|_| rng.pick(&comps))
                            .collect::<Vec<_>>()
                            .join("/"),
                    };
                    raw.hardlink(&name, &target)
                }
                _ => raw.file(&format!("{name}/.wh.{}", rng.pick(&comps)), b""),
            };
        }
        if s.apply(&raw.tar()).is_err() {
            failures += 1;
        }
        s.assert_outside_untouched();
    }
    // Most hostile layers fail, but not all: the generator also makes harmless ones.
    assert!(
        failures > 50 && failures < 400,
        "{failures} of 400 layers failed"
    );
}

/// Random byte corruption of a valid layer: errors are fine, panics and escapes are not.
#[test]
fn corrupted_tar_bytes_never_panic() {
    let s = Sandbox::new("corrupt");
    let base = Raw::new()
        .dir("d/")
        .file("d/f", &[7u8; 3000])
        .symlink("d/l", "f")
        .hardlink("d/h", "d/f")
        .file("d/.wh.gone", b"")
        .tar();
    let mut rng = Rng(0xc0ff_ee00_1234_5678);
    for _ in 0..300 {
        let mut t = base.clone();
        for _ in 0..1 + rng.next() % 6 {
            let i = (rng.next() % t.len() as u64) as usize;
            t[i] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(4) {
            t.truncate((rng.next() % t.len() as u64) as usize);
        }
        let _ = s.apply(&t);
        s.assert_outside_untouched();
    }
}

#[test]
fn overlong_paths_are_rejected() {
    let s = Sandbox::new("overlong");
    // 3000 nested directories in one PAX path: beyond PATH_MAX, refused before any mkdir.
    let deep = "d/".repeat(3000) + "f";
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", deep.as_bytes())])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_path("stand-in").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(1);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let e = s.apply(&b.into_inner().unwrap()).unwrap_err();
    assert!(e.contains("path longer than"), "{e}");
    assert!(fs::read_dir(&s.root).unwrap().next().is_none());
    s.assert_outside_untouched();
}
