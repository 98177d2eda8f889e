//! Layers made by a real image tool: umoci builds a three-layer OCI image (deletions
//! become `.wh.` whiteouts, files turn into directories and back), and applying its layers
//! in order with `apply_layer` must give the tree `umoci unpack` gives.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use tempdir::TempDir;

use iii::oci::unpack::{apply_layer, decompress, Compression, UnpackOptions};

fn umoci(dir: &Path, args: &[&str]) {
    let out = Command::new("umoci")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("umoci {args:?}: {e}"));
    assert!(
        out.status.success(),
        "umoci {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unpacks the image's current state into `name`, lets `change` edit its rootfs, and
/// commits the difference as a new layer.
fn layer(dir: &Path, name: &str, change: impl FnOnce(&Path)) {
    umoci(dir, &["unpack", "--image", "img:t", name]);
    change(&dir.join(name).join("rootfs"));
    umoci(dir, &["repack", "--image", "img:t", name]);
    fs::remove_dir_all(dir.join(name)).unwrap();
}

fn write(p: &Path, data: &str, mode: u32) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("img/blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// Every entry: path, type, mode, owner, size, link target, link count, content, and
/// the mtime of non-directories (a whiteout legitimately touches its directory).
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mut line = format!(
                "{rel} {:o} {}:{} nlink={}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink()
            );
            if m.is_dir() {
                stack.push(p);
            } else if m.is_symlink() {
                line += &format!(" -> {}", fs::read_link(&p).unwrap().display());
            } else {
                line += &format!(" {:?} mtime={}", fs::read(&p).unwrap(), m.mtime());
            }
            out.push(line);
        }
    }
    out.sort();
    out
}

#[test]
fn three_umoci_layers_match_umoci_unpack() {
    if Command::new("umoci").arg("--version").output().is_err() {
        skip!("umoci is not installed");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip!("umoci unpack without --rootless needs root");
        return;
    }
    let t = TempDir::new("image");
    let d = &t.0;
    umoci(d, &["init", "--layout", "img"]);
    umoci(d, &["new", "--image", "img:t"]);
    layer(d, "b1", |r| {
        write(&r.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n", 0o644);
        write(&r.join("etc/gone"), "gone", 0o644);
        write(&r.join("bin/busybox"), "elf", 0o4755);
        fs::hard_link(r.join("bin/busybox"), r.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("busybox", r.join("bin/ls")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("passwd-link")).unwrap();
        write(&r.join("tree/a/b/c"), "deep", 0o600);
        write(&r.join("was-file"), "file", 0o644);
        write(&r.join("was-dir/inner"), "inner", 0o644);
        write(&r.join("home/user/.profile"), "export X=1", 0o640);
        std::os::unix::fs::chown(r.join("home/user/.profile"), Some(1000), Some(1000)).unwrap();
        std::os::unix::fs::chown(r.join("home/user"), Some(1000), Some(1000)).unwrap();
    });
    layer(d, "b2", |r| {
        fs::remove_file(r.join("etc/gone")).unwrap();
        fs::remove_dir_all(r.join("tree/a")).unwrap();
        fs::remove_file(r.join("was-file")).unwrap();
        write(&r.join("was-file/now-dir"), "d", 0o644);
        fs::remove_dir_all(r.join("was-dir")).unwrap();
        write(&r.join("was-dir"), "now a file", 0o600);
        // A new inode for busybox: its old hard link bin/sh keeps the old content, and
        // extraction must not truncate the shared inode either.
        fs::remove_file(r.join("bin/busybox")).unwrap();
        write(&r.join("bin/busybox"), "new elf", 0o4755);
        write(&r.join("tmp/.keep"), "", 0o644);
        fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    });
    layer(d, "b3", |r| {
        fs::remove_file(r.join("bin/ls")).unwrap();
        write(&r.join("bin/ls"), "ls is a file now", 0o755);
        write(&r.join("etc/gone"), "back", 0o644);
        fs::remove_dir_all(r.join("home/user")).unwrap();
    });
    umoci(d, &["unpack", "--image", "img:t", "final"]);

    let index = json(&d.join("img/index.json"));
    let manifest = json(&blob(d, index["manifests"][0]["digest"].as_str().unwrap()));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    let ours = d.join("ours");
    fs::create_dir(&ours).unwrap();
    let mut whiteouts = 0;
    for l in layers {
        let mt = l["mediaType"].as_str().unwrap();
        let c = Compression::from_media_type(mt).unwrap_or_else(|| panic!("media type {mt}"));
        let path = blob(d, l["digest"].as_str().unwrap());
        let listing = Command::new("tar").arg("-tzf").arg(&path).output().unwrap();
        whiteouts += String::from_utf8_lossy(&listing.stdout)
            .matches(".wh.")
            .count();
        let r = decompress(fs::File::open(&path).unwrap(), c).unwrap();
        apply_layer(r, &ours, &UnpackOptions { privileged: true })
            .unwrap_or_else(|e| panic!("layer {}: {e}", l["digest"]));
    }
    assert!(whiteouts >= 3, "umoci wrote only {whiteouts} whiteouts");
    let (want, got) = (listing(&d.join("final/rootfs")), listing(&ours));
    assert_eq!(want, got);
    assert_eq!(fs::read(ours.join("bin/sh")).unwrap(), b"elf");
    assert_eq!(fs::read(ours.join("bin/busybox")).unwrap(), b"new elf");
    assert!(!ours.join("tree/a").exists() && !ours.join("home/user").exists());
}
