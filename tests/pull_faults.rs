//! Faults a real registry will not produce on demand, from the in-process fake: wrong
//! bytes, truncated bodies, dropped connections, 5xx; plus what a second or concurrent pull
//! fetches (the fake counts requests).

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod support;

use std::collections::BTreeMap;

use iii::oci::digest::Digest;
use iii::oci::progress::PlainProgress;
use iii::oci::{pull, NoProgress, Store};
use support::fake::{FakeRegistry, Fault};
use support::image::*;
use support::tree::{assert_tree, file_node, Node};
use support::TempDir;

/// Three layers (gzip, zstd, none) with enough data that a cut lands mid-stream.
fn three_layer_image() -> (Image, BTreeMap<String, Node>) {
    let big: Vec<u8> = (0..400_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let img = Image::new(
        Format::Oci,
        vec![
            Layer::new(Comp::Gzip, vec![dir("a"), file("a/big", &big)]),
            Layer::new(Comp::Zstd, vec![dir("b"), file("b/mid", &big[..300_000])]),
            Layer::new(Comp::None, vec![dir("c"), file("c/small", b"small")]),
        ],
    );
    let tree = BTreeMap::from([
        ("a".into(), Node::Dir),
        ("a/big".into(), file_node(&big, 0o644, 0)),
        ("b".into(), Node::Dir),
        ("b/mid".into(), file_node(&big[..300_000], 0o644, 0)),
        ("c".into(), Node::Dir),
        ("c/small".into(), file_node(b"small", 0o644, 0)),
    ]);
    (img, tree)
}

struct Setup {
    fake: FakeRegistry,
    built: Built,
    tree: BTreeMap<String, Node>,
    image: String,
    home: TempDir,
    store: Store,
}

fn setup() -> Setup {
    let fake = FakeRegistry::start();
    let (img, tree) = three_layer_image();
    let built = img.build();
    fake.serve(&built, "t");
    let image = format!("{}/fault/app:t", fake.host);
    let home = TempDir::new("home");
    let store = Store::open(home.path()).unwrap();
    Setup {
        fake,
        built,
        tree,
        image,
        home,
        store,
    }
}

/// Nothing of a failed pull is visible: no image, no ref, no temporaries.
fn assert_nothing_installed(s: &Setup) {
    assert!(s.store.lookup(&s.image).unwrap().is_none());
    let images: Vec<_> = std::fs::read_dir(s.home.path().join("images/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(images.is_empty(), "left in images/: {images:?}");
    let temps: Vec<_> = std::fs::read_dir(s.home.path().join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "temporaries left: {temps:?}");
}

#[test]
fn wrong_digest_names_both_and_installs_nothing() {
    for layer in [0, 1] {
        // Layer 0 is streamed into the extractor, layer 1 downloads in the background.
        let s = setup();
        let d = s.built.layer_digests[layer].clone();
        s.fake.fault(&d, Fault::WrongBody);
        let blob = &s.built.blobs[layer].1;
        let mut evil = blob.clone();
        let last = evil.len() - 1;
        evil[last] ^= 0xff;
        let e = pull(&s.image, &s.store, &mut NoProgress)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&d.to_string()), "names the expected digest: {e}");
        assert!(
            e.contains(&Digest::of(&evil).to_string()),
            "names the actual digest: {e}"
        );
        assert!(e.contains(&s.image), "names the image: {e}");
        assert!(!s.store.blob_path(&d).exists(), "bad blob not stored");
        assert_nothing_installed(&s);
    }
}

/// The sha256 of no bytes at all: never the digest of data that was received.
const EMPTY_DIGEST: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// One uncompressed layer (streamed straight into the extractor) that a registry serves with
/// its last byte flipped: the tar still extracts, and only the digest catches it.
fn uncompressed_layer_image() -> Built {
    let data: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    Image::new(
        Format::Oci,
        vec![Layer::new(
            Comp::None,
            vec![dir("d"), file("d/data", &data)],
        )],
    )
    .build()
}

#[test]
fn a_consistently_wrong_blob_is_reported_with_the_digest_of_its_bytes() {
    let fake = FakeRegistry::start();
    let built = uncompressed_layer_image();
    fake.serve(&built, "t");
    let d = built.layer_digests[0].clone();
    fake.fault(&d, Fault::WrongBody);
    let mut evil = built.blobs[0].1.clone();
    let last = evil.len() - 1;
    evil[last] ^= 0xff;
    let home = TempDir::new("home");
    let store = Store::open(home.path()).unwrap();
    let image = format!("{}/wrong/app:t", fake.host);
    let e = pull(&image, &store, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&d.to_string()), "names the expected digest: {e}");
    assert!(!e.contains(EMPTY_DIGEST), "hash of nothing reported: {e}");
    assert!(
        e.contains(&Digest::of(&evil).to_string()),
        "names the digest of the bytes received: {e}"
    );
    assert!(!store.blob_path(&d).exists());
}

#[test]
fn a_resumed_download_is_verified_over_all_of_its_bytes() {
    // Layer 0 of the three-layer image streams into the extractor, layer 1 downloads in the
    // background; the uncompressed image streams a layer whose damage only the digest shows.
    let cases = [(setup(), 0), (setup(), 1)]
        .map(|(s, layer)| (s.fake, s.built, layer, s.image))
        .into_iter()
        .chain(std::iter::once({
            let fake = FakeRegistry::start();
            let built = uncompressed_layer_image();
            fake.serve(&built, "t");
            let image = format!("{}/wrong/app:t", fake.host);
            (fake, built, 0, image)
        }));
    for (fake, built, layer, image) in cases {
        let d = built.layer_digests[layer].clone();
        fake.fault(&d, Fault::DropThenWrong { at: 100_000 });
        let mut evil = built.blobs[layer].1.clone();
        let last = evil.len() - 1;
        evil[last] ^= 0xff;
        let home = TempDir::new("home");
        let store = Store::open(home.path()).unwrap();
        let e = pull(&image, &store, &mut NoProgress)
            .unwrap_err()
            .to_string();
        assert!(!e.contains(EMPTY_DIGEST), "hash of nothing reported: {e}");
        assert!(
            e.contains(&Digest::of(&evil).to_string()),
            "the digest covers the bytes before and after the drop: {e}"
        );
        let tries = fake
            .requests()
            .iter()
            .filter(|r| r.contains(&d.to_string()))
            .count();
        assert_eq!(tries, 2, "one drop, one resumed request");
        assert!(!store.blob_path(&d).exists());
    }
}

/// Flip one byte in the middle of a stored blob (its size stays right).
fn damage(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_cached_layer_is_fetched_again_never_installed() {
    let data: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    for comp in [Comp::None, Comp::Gzip] {
        let shared = Layer::new(comp, vec![dir("s"), file("s/data", &data)]);
        let a = Image::new(
            Format::Oci,
            vec![shared.clone(), Layer::new(comp, vec![file("a", b"a")])],
        )
        .build();
        let b = Image::new(
            Format::Oci,
            vec![shared, Layer::new(comp, vec![file("b", b"b")])],
        )
        .build();
        let fake = FakeRegistry::start();
        fake.serve(&a, "a");
        fake.serve(&b, "b");
        let home = TempDir::new("home");
        let store = Store::open(home.path()).unwrap();
        pull(&format!("{}/x/app:a", fake.host), &store, &mut NoProgress).unwrap();
        let d = b.layer_digests[0].clone();
        assert_eq!(d, a.layer_digests[0]);
        damage(&store.blob_path(&d));

        // The second image shares the damaged layer: it is noticed, fetched again, said so.
        let mut p = PlainProgress::new(Vec::new());
        let installed = pull(&format!("{}/x/app:b", fake.host), &store, &mut p)
            .unwrap_or_else(|e| panic!("{comp:?}: {e}"));
        let said = String::from_utf8(p.into_inner()).unwrap();
        assert_tree(
            &installed.rootfs,
            &BTreeMap::from([
                ("s".into(), Node::Dir),
                ("s/data".into(), file_node(&data, 0o644, 0)),
                ("b".into(), file_node(b"b", 0o644, 0)),
            ]),
        );
        assert!(
            said.contains(&d.short().to_string()) && said.contains("damaged"),
            "{comp:?}: the repair is reported: {said}"
        );
        let gets = fake
            .requests()
            .iter()
            .filter(|r| r.contains(&d.to_string()))
            .count();
        assert_eq!(
            gets, 2,
            "{comp:?}: the damaged layer is downloaded once more"
        );
        let stored = std::fs::read(store.blob_path(&d)).unwrap();
        assert_eq!(
            Digest::of(&stored),
            d,
            "{comp:?}: the store holds the good blob"
        );
    }
}

#[test]
fn a_damaged_image_config_counts_as_not_installed_and_is_repaired() {
    let s = setup();
    let first = pull(&s.image, &s.store, &mut NoProgress).unwrap();
    let config = first.rootfs.parent().unwrap().join("config.json");
    std::fs::write(&config, b"{ not json").unwrap();
    assert!(s
        .store
        .installed(&s.built.manifest_digest)
        .unwrap()
        .is_none());
    assert!(s.store.lookup(&s.image).unwrap().is_none());
    let again = pull(&s.image, &s.store, &mut NoProgress).unwrap();
    assert_eq!(again.rootfs, first.rootfs);
    assert_tree(&again.rootfs, &s.tree);
    assert_eq!(std::fs::read(&config).unwrap(), s.built.config);
    assert!(s.store.lookup(&s.image).unwrap().is_some());
}

#[test]
fn truncated_body_fails_after_bounded_retries() {
    let s = setup();
    let d = s.built.layer_digests[0].clone();
    s.fake.fault(&d, Fault::Truncate);
    let e = pull(&s.image, &s.store, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&d.to_string()) && e.contains(&s.image), "{e}");
    let tries = s
        .fake
        .requests()
        .iter()
        .filter(|r| r.contains(&d.to_string()))
        .count();
    assert!((2..=6).contains(&tries), "bounded retries, got {tries}");
    assert_nothing_installed(&s);
}

#[test]
fn dropped_connection_resumes_and_succeeds() {
    for layer in [0, 1] {
        let s = setup();
        let d = s.built.layer_digests[layer].clone();
        s.fake.fault(&d, Fault::DropOnce { at: 100_000 });
        let installed = pull(&s.image, &s.store, &mut NoProgress).unwrap();
        assert_tree(&installed.rootfs, &s.tree);
        let tries = s
            .fake
            .requests()
            .iter()
            .filter(|r| r.contains(&d.to_string()))
            .count();
        assert_eq!(tries, 2, "one drop, one resumed request");
    }
}

#[test]
fn server_error_then_success() {
    let s = setup();
    s.fake
        .fault(&s.built.layer_digests[2], Fault::ServerErrorOnce);
    s.fake.fault(&s.built.config_digest, Fault::ServerErrorOnce);
    let installed = pull(&s.image, &s.store, &mut NoProgress).unwrap();
    assert_tree(&installed.rootfs, &s.tree);
}

#[test]
fn second_pull_fetches_no_blobs() {
    let s = setup();
    let first = pull(&s.image, &s.store, &mut NoProgress).unwrap();
    let blobs_first = s.fake.blob_requests();
    assert_eq!(blobs_first, 4, "3 layers + config, once each");
    let again = pull(&s.image, &s.store, &mut NoProgress).unwrap();
    assert_eq!(again.rootfs, first.rootfs);
    assert_eq!(
        s.fake.blob_requests(),
        blobs_first,
        "no blob fetched the second time"
    );

    // Even with the extracted tree gone, the layers come from the store, not the network.
    std::fs::remove_dir_all(first.rootfs.parent().unwrap()).unwrap();
    let rebuilt = pull(&s.image, &s.store, &mut NoProgress).unwrap();
    assert_tree(&rebuilt.rootfs, &s.tree);
    assert_eq!(s.fake.blob_requests(), blobs_first);
}

#[test]
fn pinned_digest_pull_is_offline_once_installed() {
    let s = setup();
    let pinned = format!("{}/fault/app@{}", s.fake.host, s.built.manifest_digest);
    let first = pull(&pinned, &s.store, &mut NoProgress).unwrap();
    let before = s.fake.requests().len();
    let again = pull(&pinned, &s.store, &mut NoProgress).unwrap();
    assert_eq!(again.rootfs, first.rootfs);
    assert_eq!(s.fake.requests().len(), before, "no request at all");
}

#[test]
fn progress_reports_each_layer_downloaded_then_present() {
    let s = setup();
    let mut p = PlainProgress::new(Vec::new());
    pull(&s.image, &s.store, &mut p).unwrap();
    let first = String::from_utf8(p.into_inner()).unwrap();
    let mut p = PlainProgress::new(Vec::new());
    pull(&s.image, &s.store, &mut p).unwrap();
    let second = String::from_utf8(p.into_inner()).unwrap();
    for (out, word) in [(&first, "downloaded"), (&second, "already present")] {
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(
            lines[0].contains(&s.built.manifest_digest.to_string()),
            "{out}"
        );
        for (i, d) in s.built.layer_digests.iter().enumerate() {
            let want = format!("layer {}/3 sha256:{}", i + 1, d.short());
            let line = lines.iter().find(|l| l.starts_with(&want)).expect(&want);
            assert!(line.ends_with(word), "{line}");
        }
    }
}

#[test]
fn a_layer_listed_twice_downloads_once() {
    let fake = FakeRegistry::start();
    let base = Layer::new(Comp::Gzip, vec![file("f", b"base")]);
    let top = Layer::new(Comp::Gzip, vec![file("f", b"top"), file("g", b"g")]);
    // base, top, base again: the third application restores f's first content.
    let img = Image::new(Format::Oci, vec![base.clone(), top, base]);
    let built = img.build();
    assert_eq!(built.layer_digests[0], built.layer_digests[2]);
    fake.serve(&built, "t");
    let home = TempDir::new("home");
    let store = Store::open(home.path()).unwrap();
    let installed = pull(&format!("{}/dup/app:t", fake.host), &store, &mut NoProgress).unwrap();
    assert_tree(
        &installed.rootfs,
        &BTreeMap::from([
            ("f".into(), file_node(b"base", 0o644, 0)),
            ("g".into(), file_node(b"g", 0o644, 0)),
        ]),
    );
    assert_eq!(
        fake.blob_requests(),
        3,
        "two distinct layers and the config"
    );
}

#[test]
fn concurrent_pulls_share_one_tree() {
    let s = setup();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| pull(&s.image, &s.store, &mut NoProgress)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let a = results[0].as_ref().unwrap();
    let b = results[1].as_ref().unwrap();
    assert_eq!(a.rootfs, b.rootfs);
    assert_tree(&a.rootfs, &s.tree);
    let trees = std::fs::read_dir(s.home.path().join("images/sha256"))
        .unwrap()
        .count();
    assert_eq!(trees, 1, "one tree");
    assert_eq!(s.fake.blob_requests(), 4, "each blob fetched once");
}

#[test]
fn iii_shorthand_is_refused_before_any_network() {
    let home = TempDir::new("home");
    let store = Store::open(home.path()).unwrap();
    for image in ["image-resize", "image-resize@1.0.0", "busybox"] {
        let e = pull(image, &store, &mut NoProgress)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported yet") && e.contains(image), "{e}");
    }
}

/// Bytes that do not compress (a xorshift stream), so a slow layer stays slow.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const KILL_CHILD_ENV: &str = "III_TEST_KILL9_CHILD_IMAGE";

/// kill -9 in the middle of a pull (layer half streamed, tree half extracted), then pull
/// again: it succeeds with the right tree and nothing of the dead pull remains.
///
/// The test re-runs its own binary (filtered to this test) as the process to kill; in that
/// child, the variable KILL_CHILD_ENV names the image and store to pull into.
#[test]
fn pull_survives_sigkill_mid_layer() {
    if let Ok(image) = std::env::var(KILL_CHILD_ENV) {
        let home = std::env::var("III_TEST_KILL9_CHILD_HOME").unwrap();
        let store = Store::open(std::path::Path::new(&home)).unwrap();
        let r = pull(&image, &store, &mut NoProgress);
        panic!("the child should have been killed, but its pull ended: {r:?}");
    }
    let data = noise(3 << 20);
    let img = Image::new(
        Format::Oci,
        vec![Layer::new(
            Comp::Gzip,
            vec![
                dir("n"),
                file("n/1", &data[..1 << 20]),
                file("n/2", &data[1 << 20..]),
            ],
        )],
    );
    let built = img.build();
    let fake = FakeRegistry::start();
    fake.serve(&built, "t");
    fake.fault(&built.layer_digests[0], Fault::Slow);
    let image = format!("{}/slow/app:t", fake.host);
    let home = TempDir::new("home");
    let store = Store::open(home.path()).unwrap();

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pull_survives_sigkill_mid_layer", "--nocapture"])
        .env(KILL_CHILD_ENV, &image)
        .env("III_TEST_KILL9_CHILD_HOME", home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the child has streamed part of the layer and extracted part of the tree.
    let staging = home.path().join(format!(
        "images/sha256/.tmp-{}",
        built.manifest_digest.hex()
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !staging.join("rootfs/n/1").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "child never started extracting"
        );
        assert!(child.try_wait().unwrap().is_none(), "child exited early");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL, to this PID only
    child.wait().unwrap();
    let temp_blobs = |home: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(home.join("blobs/sha256"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp"))
            .collect()
    };
    assert!(
        !temp_blobs(home.path()).is_empty(),
        "the kill left a partial blob to clean"
    );
    assert!(store.lookup(&image).unwrap().is_none());
    assert!(store.installed(&built.manifest_digest).unwrap().is_none());

    let expected = BTreeMap::from([
        ("n".into(), Node::Dir),
        ("n/1".into(), file_node(&data[..1 << 20], 0o644, 0)),
        ("n/2".into(), file_node(&data[1 << 20..], 0o644, 0)),
    ]);
    fake.clear_fault(&built.layer_digests[0]);
    let installed = pull(&image, &store, &mut NoProgress).unwrap();
    assert_tree(&installed.rootfs, &expected);
    assert!(
        temp_blobs(home.path()).is_empty(),
        "dead pull's temporaries swept"
    );
    assert!(!staging.exists(), "dead pull's staging replaced");
}

const SHARE_CHILD_ENV: &str = "III_TEST_SHARE_CHILD_IMAGE";

/// Two processes pull one image into one store at the same time (the layer trickles, so
/// they overlap): both succeed, the layer is fetched once, one tree results. The test
/// re-runs its own binary (filtered to this test) as the two processes.
#[test]
fn concurrent_processes_share_one_tree() {
    if let Ok(image) = std::env::var(SHARE_CHILD_ENV) {
        let home = std::env::var("III_TEST_SHARE_CHILD_HOME").unwrap();
        let store = Store::open(std::path::Path::new(&home)).unwrap();
        let installed = pull(&image, &store, &mut NoProgress).unwrap();
        println!("ROOTFS {}", installed.rootfs.display());
        return;
    }
    let data = noise(256 << 10);
    let img = Image::new(
        Format::Oci,
        vec![Layer::new(Comp::Gzip, vec![file("blob", &data)])],
    );
    let built = img.build();
    let fake = FakeRegistry::start();
    fake.serve(&built, "t");
    fake.fault(&built.layer_digests[0], Fault::Slow);
    let image = format!("{}/shared/app:t", fake.host);
    let home = TempDir::new("home");
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "concurrent_processes_share_one_tree",
                    "--nocapture",
                ])
                .env(SHARE_CHILD_ENV, &image)
                .env("III_TEST_SHARE_CHILD_HOME", home.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut roots = Vec::new();
    for o in &outputs {
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        roots.push(
            out.lines()
                .find_map(|l| l.strip_prefix("ROOTFS "))
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(roots[0], roots[1]);
    let layer_gets = fake
        .requests()
        .iter()
        .filter(|r| r.contains(&built.layer_digests[0].to_string()))
        .count();
    assert_eq!(
        layer_gets, 1,
        "the second process waited and reused the first's work"
    );
    assert_tree(
        std::path::Path::new(&roots[0]),
        &BTreeMap::from([("blob".into(), file_node(&data, 0o644, 0))]),
    );
}
