//! Snapshots of an extracted root filesystem, to check it entry by entry.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use iii::oci::digest::Digest;

/// What one path in a tree is. Directory modes are left out (parents the layer did not list
/// get the unpacker's default); file modes include setuid/setgid/sticky bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { sha: String, mode: u32, uid: u32 },
    Dir,
    Symlink(String),
}

pub fn file_node(data: &[u8], mode: u32, uid: u32) -> Node {
    Node::File {
        sha: Digest::of(data).short().to_string(),
        mode,
        uid,
    }
}

/// Every path under `root` (relative, `/`-separated) and what it is.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    snapshot_with(root, |path, m| {
        if m.file_type().is_symlink() {
            Node::Symlink(link_target(path))
        } else if m.is_dir() {
            Node::Dir
        } else {
            Node::File {
                sha: Digest::of(&std::fs::read(path).unwrap())
                    .short()
                    .to_string(),
                mode: m.mode() & 0o7777,
                uid: m.uid(),
            }
        }
    })
}

/// Every path under `root` (relative, `/`-separated, depth first in name order) and what
/// `node` makes of it, for comparisons that need more (or less) than [`snapshot`]'s.
pub fn snapshot_with<N>(
    root: &Path,
    node: impl Fn(&Path, &std::fs::Metadata) -> N,
) -> BTreeMap<String, N> {
    let mut out = BTreeMap::new();
    walk(root, root, &node, &mut out);
    out
}

/// Where the symlink `path` points, as text.
pub fn link_target(path: &Path) -> String {
    std::fs::read_link(path)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn walk<N>(
    root: &Path,
    dir: &Path,
    node: &impl Fn(&Path, &std::fs::Metadata) -> N,
    out: &mut BTreeMap<String, N>,
) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let m = std::fs::symlink_metadata(&path).unwrap();
        if m.is_dir() {
            walk(root, &path, node, out);
        }
        out.insert(rel, node(&path, &m));
    }
}

/// Assert that `root` holds exactly `expected`, listing every difference.
pub fn assert_tree(root: &Path, expected: &BTreeMap<String, Node>) {
    let got = snapshot(root);
    let mut diffs = Vec::new();
    for (p, n) in expected {
        match got.get(p) {
            None => diffs.push(format!("missing {p} ({n:?})")),
            Some(g) if g != n => diffs.push(format!("{p}: expected {n:?}, got {g:?}")),
            Some(_) => {}
        }
    }
    for (p, n) in &got {
        if !expected.contains_key(p) {
            diffs.push(format!("unexpected {p} ({n:?})"));
        }
    }
    assert!(
        diffs.is_empty(),
        "tree {} differs:\n{}",
        root.display(),
        diffs.join("\n")
    );
}

pub fn inode(root: &Path, rel: &str) -> u64 {
    std::fs::symlink_metadata(root.join(rel)).unwrap().ino()
}

/// The exact tree of [`super::image::busybox_image`].
pub fn busybox_tree() -> BTreeMap<String, Node> {
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut t = BTreeMap::new();
    for d in ["bin", "etc", "tmp"] {
        t.insert(d.to_string(), Node::Dir);
    }
    t.insert("bin/busybox".into(), file_node(&busybox, 0o755, 0));
    for a in super::image::BUSYBOX_APPLETS {
        t.insert(format!("bin/{a}"), Node::Symlink("busybox".into()));
    }
    t.insert(
        "etc/passwd".into(),
        file_node(
            b"root:x:0:0:root:/root:/bin/sh\nworker:x:1000:1000:worker:/home/worker:/bin/sh\n",
            0o644,
            0,
        ),
    );
    t.insert(
        "etc/group".into(),
        file_node(b"root:x:0:\nworker:x:1000:\n", 0o644, 0),
    );
    t
}
