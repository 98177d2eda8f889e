//! Pulls from the real registry (Debian's docker-registry), without authentication, of
//! images the tests build and push: every layer flavour, manifest kind and index, each
//! checked file by file.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod support;

use std::collections::BTreeMap;

use iii::oci::{pull, NoProgress, Store};
use support::image::*;
use support::registry::{Auth, Registry};
use support::tree::{assert_tree, busybox_tree, file_node, inode, Node};
use support::TempDir;

#[test]
fn single_layer_busybox() {
    let Some(reg) = Registry::start(Auth::None) else {
        return;
    };
    let Some(img) = busybox_image() else { return };
    let built = img.push(&reg, "tools/busybox", Some("1.36"));
    let home = TempDir::new("home");
    let store = Store::open(home.path()).unwrap();
    let image = format!("{}/tools/busybox:1.36", reg.host);
    let installed = pull(&image, &store, &mut NoProgress).unwrap();
    assert_eq!(installed.manifest_digest, built.manifest_digest.to_string());
    assert_tree(&installed.rootfs, &busybox_tree());
    assert_eq!(
        installed.config.cmd.as_deref(),
        Some(&["/bin/sh".to_string()][..])
    );
    // Found offline by the exact string, not by another spelling.
    let found = store.lookup(&image).unwrap().expect("lookup after pull");
    assert_eq!(found.rootfs, installed.rootfs);
    assert!(store
        .lookup(&format!("{}/tools/busybox", reg.host))
        .unwrap()
        .is_none());
    // Blobs are in the store under their digests.
    for d in &built.layer_digests {
        assert!(store.blob_path(d).is_file(), "layer blob {d} stored");
    }
    assert!(store.blob_path(&built.config_digest).is_file());
}

/// Push `layers` as `repo:t` in `format`, pull, and return the installed rootfs' store.
fn push_and_pull(
    reg: &Registry,
    repo: &str,
    img: &Image,
) -> (TempDir, iii::oci::InstalledImage, Built) {
    let built = img.push(reg, repo, Some("t"));
    let home = TempDir::new("home");
    let store = Store::open(home.path()).unwrap();
    let installed = pull(&format!("{}/{repo}:t", reg.host), &store, &mut NoProgress)
        .unwrap_or_else(|e| panic!("pulling {repo}: {e}"));
    assert_eq!(installed.manifest_digest, built.manifest_digest.to_string());
    (home, installed, built)
}

fn small_tree_layer(comp: Comp) -> Layer {
    Layer::new(
        comp,
        vec![
            dir("app"),
            file_mode("app/run", b"#!/bin/sh\necho hi\n", 0o755),
            file("app/data.txt", &b"0123456789".repeat(1000)),
            symlink("app/latest", "data.txt"),
        ],
    )
}

fn small_tree() -> BTreeMap<String, Node> {
    BTreeMap::from([
        ("app".into(), Node::Dir),
        (
            "app/run".into(),
            file_node(b"#!/bin/sh\necho hi\n", 0o755, 0),
        ),
        (
            "app/data.txt".into(),
            file_node(&b"0123456789".repeat(1000), 0o644, 0),
        ),
        ("app/latest".into(), Node::Symlink("data.txt".into())),
    ])
}

#[test]
fn docker_schema2_zstd_uncompressed_and_untyped_manifests() {
    let Some(reg) = Registry::start(Auth::None) else {
        return;
    };
    for (repo, format, comp) in [
        ("docker-gzip", Format::Docker, Comp::Gzip),
        ("docker-plain", Format::Docker, Comp::None),
        ("oci-zstd", Format::Oci, Comp::Zstd),
        ("oci-plain", Format::Oci, Comp::None),
        ("oci-untyped", Format::OciNoMediaType, Comp::Gzip),
    ] {
        let img = Image::new(format, vec![small_tree_layer(comp)]);
        let (_home, installed, _) = push_and_pull(&reg, repo, &img);
        assert_tree(&installed.rootfs, &small_tree());
    }
    // Tars without their end-of-archive blocks, compressed and not.
    for (repo, comp) in [("no-eof-gzip", Comp::Gzip), ("no-eof-plain", Comp::None)] {
        let img = Image::new(
            Format::Oci,
            vec![small_tree_layer(comp).without_eof_blocks()],
        );
        let (_home, installed, _) = push_and_pull(&reg, repo, &img);
        assert_tree(&installed.rootfs, &small_tree());
    }
}

#[test]
fn four_layers_with_whiteouts_opaque_links_setuid_long_and_utf8_names() {
    let Some(reg) = Registry::start(Auth::None) else {
        return;
    };
    let long = format!("deep/{}/{}.txt", "d".repeat(90), "n".repeat(60));
    let img = Image::new(
        Format::Oci,
        vec![
            Layer::new(
                Comp::Gzip,
                vec![
                    dir("etc"),
                    file("etc/keep", b"keep"),
                    file("etc/gone", b"to be whited out"),
                    dir("cache"),
                    file("cache/a", b"a"),
                    file("cache/b", b"b"),
                    dir("opt"),
                    dir("opt/old"),
                    file("opt/old/x", b"x"),
                ],
            ),
            Layer::new(
                Comp::Zstd,
                vec![
                    whiteout("etc/gone"),
                    opaque("cache"),
                    file("cache/c", b"c after opaque"),
                    whiteout("opt/old"),
                    file_mode("usr/bin/su", b"setuid binary", 0o4755),
                    file_owned("home/worker/notes", b"owned by 1000", 0o600, 1000, 1000),
                ],
            ),
            Layer::new(
                Comp::None,
                vec![
                    file("data/original", b"shared inode"),
                    hardlink("data/link", "data/original"),
                    symlink("data/abs", "/etc/keep"),
                    symlink("data/rel", "../etc/keep"),
                    file(&long, b"long name"),
                ],
            ),
            Layer::new(
                Comp::Gzip,
                vec![
                    file("données/ünïcødé-файл-文件.txt", "UTF-8 ✓".as_bytes()),
                    file("etc/keep", b"keep, rewritten by the top layer"),
                ],
            ),
        ],
    );
    let (_home, installed, built) = push_and_pull(&reg, "edge/cases", &img);
    assert_eq!(built.layer_digests.len(), 4);
    let mut t: BTreeMap<String, Node> = BTreeMap::new();
    for d in [
        "etc",
        "cache",
        "opt",
        "usr",
        "usr/bin",
        "home",
        "home/worker",
        "data",
        "deep",
        "données",
    ] {
        t.insert(d.into(), Node::Dir);
    }
    t.insert(format!("deep/{}", "d".repeat(90)), Node::Dir);
    t.insert(
        "etc/keep".into(),
        file_node(b"keep, rewritten by the top layer", 0o644, 0),
    );
    t.insert("cache/c".into(), file_node(b"c after opaque", 0o644, 0));
    t.insert("usr/bin/su".into(), file_node(b"setuid binary", 0o4755, 0));
    let as_root = euid() == 0;
    let owner = if as_root { 1000 } else { euid() };
    t.insert(
        "home/worker/notes".into(),
        file_node(b"owned by 1000", 0o600, owner),
    );
    t.insert("data/original".into(), file_node(b"shared inode", 0o644, 0));
    t.insert("data/link".into(), file_node(b"shared inode", 0o644, 0));
    t.insert("data/abs".into(), Node::Symlink("/etc/keep".into()));
    t.insert("data/rel".into(), Node::Symlink("../etc/keep".into()));
    t.insert(long.clone(), file_node(b"long name", 0o644, 0));
    t.insert(
        "données/ünïcødé-файл-文件.txt".into(),
        file_node("UTF-8 ✓".as_bytes(), 0o644, 0),
    );
    if !as_root {
        // Unprivileged extraction cannot chown: files belong to the caller.
        for n in t.values_mut() {
            if let Node::File { uid, .. } = n {
                *uid = euid();
            }
        }
    }
    assert_tree(&installed.rootfs, &t);
    assert_eq!(
        inode(&installed.rootfs, "data/link"),
        inode(&installed.rootfs, "data/original"),
        "hard link shares the inode"
    );
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[test]
fn multi_arch_index_picks_the_host_platform() {
    let Some(reg) = Registry::start(Auth::None) else {
        return;
    };
    let other_arch = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    for docker in [false, true] {
        let format = if docker { Format::Docker } else { Format::Oci };
        let mut native = Image::new(
            format,
            vec![Layer::new(
                Comp::Gzip,
                vec![file("arch", host_arch().as_bytes())],
            )],
        );
        native.architecture = host_arch().into();
        let mut foreign = Image::new(
            format,
            vec![Layer::new(
                Comp::Gzip,
                vec![file("arch", other_arch.as_bytes())],
            )],
        );
        foreign.architecture = other_arch.into();
        let repo = if docker { "multi/docker" } else { "multi/oci" };
        let b_native = native.push(&reg, repo, None);
        let b_foreign = foreign.push(&reg, repo, None);
        // The foreign entry first: picking by position would be wrong.
        push_index(
            &reg,
            repo,
            "latest",
            &[(&b_foreign, other_arch), (&b_native, host_arch())],
            docker,
        );
        let home = TempDir::new("home");
        let store = Store::open(home.path()).unwrap();
        let installed = pull(&format!("{}/{repo}", reg.host), &store, &mut NoProgress).unwrap();
        assert_eq!(
            installed.manifest_digest,
            b_native.manifest_digest.to_string()
        );
        assert_tree(
            &installed.rootfs,
            &BTreeMap::from([("arch".into(), file_node(host_arch().as_bytes(), 0o644, 0))]),
        );
        // A foreign image pulled directly (not through an index) is refused, not installed.
        let direct = format!("{}/{repo}@{}", reg.host, b_foreign.manifest_digest);
        let e = pull(&direct, &store, &mut NoProgress)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("linux/{other_arch}")) && e.contains(&direct),
            "{e}"
        );
        assert!(store.lookup(&direct).unwrap().is_none());
        // An index without our platform names what it has.
        push_index(
            &reg,
            repo,
            "foreign-only",
            &[(&b_foreign, other_arch)],
            docker,
        );
        let e = pull(
            &format!("{}/{repo}:foreign-only", reg.host),
            &store,
            &mut NoProgress,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("linux/{}", host_arch())) && e.contains(other_arch),
            "{e}"
        );
    }
}

#[test]
fn pinned_digest_and_missing_manifest() {
    let Some(reg) = Registry::start(Auth::None) else {
        return;
    };
    let img = Image::new(Format::Oci, vec![small_tree_layer(Comp::Gzip)]);
    let built = img.push(&reg, "pinned/app", Some("v1"));
    let home = TempDir::new("home");
    let store = Store::open(home.path()).unwrap();
    let by_digest = format!("{}/pinned/app@{}", reg.host, built.manifest_digest);
    let installed = pull(&by_digest, &store, &mut NoProgress).unwrap();
    assert_tree(&installed.rootfs, &small_tree());
    let both = format!("{}/pinned/app:v1@{}", reg.host, built.manifest_digest);
    assert_eq!(
        pull(&both, &store, &mut NoProgress).unwrap().rootfs,
        installed.rootfs
    );

    let missing = format!("{}/pinned/app:nope", reg.host);
    let e = pull(&missing, &store, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not found") && e.contains(&missing), "{e}");
    assert!(store.lookup(&missing).unwrap().is_none());
}

#[test]
fn unreachable_registry_names_host_and_image() {
    let home = TempDir::new("home");
    let store = Store::open(home.path()).unwrap();
    // Port 9 (discard) on loopback: nothing listens there.
    let e = pull("127.0.0.1:9/x/y:1", &store, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("127.0.0.1:9") && e.contains("127.0.0.1:9/x/y:1"),
        "{e}"
    );
    let e = pull("no-such-host.invalid/x/y:1", &store, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no-such-host.invalid") && e.contains("x/y:1"),
        "{e}"
    );
}
