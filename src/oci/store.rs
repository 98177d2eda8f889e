//! The per-user content-addressed store under `III_HOME`:
//!
//! ```text
//! blobs/sha256/<hex>              verified blobs (layers, configs, manifests)
//! images/sha256/<hex>/rootfs/     an extracted image, keyed by its (platform) manifest digest
//! images/sha256/<hex>/config.json its image configuration blob
//! images/sha256/<hex>/manifest.json
//! refs/<sha256 of the image string>.json   {"image": …, "manifest": …}: offline lookup
//! locks/<hex>.lock                flock(2) held while an image is being installed
//! ```
//!
//! Nothing gets a final name before it is complete and verified: blobs are written under
//! `.tmp-<pid>-…` names and renamed, images are extracted into `images/sha256/.tmp-<hex>` and
//! renamed. A process killed at any moment therefore leaves only temporaries, which later
//! pulls remove (blob temporaries of dead processes; image staging under the image lock).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::digest::{Digest, VerifyingReader};
use super::manifest::ImageConfig;
use super::unpack::remove_tree;
use crate::file_lock::FileLock;
use crate::{err, Context, Result};

/// The store rooted at one `III_HOME`.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An image extracted in the store, ready to run.
#[derive(Debug, Clone)]
pub struct InstalledImage {
    /// `sha256:<hex>` of the platform manifest the tree was built from.
    pub manifest_digest: String,
    pub rootfs: PathBuf,
    pub config: ImageConfig,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RefEntry {
    image: String,
    manifest: String,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Open (creating if needed) the store at `home`.
    pub fn open(home: &Path) -> Result<Store> {
        let store = Store {
            root: home.to_path_buf(),
        };
        for d in ["blobs/sha256", "images/sha256", "refs", "locks"] {
            let p = home.join(d);
            fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The installed image that `image` (exactly as written in config.yaml) was last pulled
    /// as, without touching the network.
    pub fn lookup(&self, image: &str) -> Result<Option<InstalledImage>> {
        let path = self.ref_path(image);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err!("reading {}: {e}", path.display())),
        };
        // A damaged entry names nothing: the next pull of `image` writes it again.
        let Ok(entry) = serde_json::from_slice::<RefEntry>(&bytes) else {
            return Ok(None);
        };
        if entry.image != image {
            return Ok(None);
        }
        let Ok(digest) = Digest::parse(&entry.manifest) else {
            return Ok(None);
        };
        self.installed(&digest)
    }

    /// Remember that `image` resolves to the installed manifest `digest`.
    pub fn record_ref(&self, image: &str, digest: &Digest) -> Result<()> {
        let entry = RefEntry {
            image: image.to_string(),
            manifest: digest.to_string(),
        };
        let bytes = serde_json::to_vec(&entry).context("encoding a reference entry")?;
        write_atomically(&self.ref_path(image), &bytes)
    }

    fn ref_path(&self, image: &str) -> PathBuf {
        self.root
            .join("refs")
            .join(format!("{}.json", Digest::of(image.as_bytes()).hex()))
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether a verified copy of `digest` (of `size` bytes) is in the store. The size check
    /// guards against a file emptied by a crash of the whole machine after its rename.
    pub fn has_blob(&self, digest: &Digest, size: u64) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Remove blob `digest` (found damaged), so the next pull downloads it again.
    pub fn discard_blob(&self, digest: &Digest) -> Result<()> {
        let p = self.blob_path(digest);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err!("removing the damaged blob {}: {e}", p.display())),
        }
    }

    /// Store bytes already in memory (manifests, configs) after checking their digest.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<PathBuf> {
        let mut tee = self.tee_blob(bytes, digest, bytes.len() as u64)?;
        io::copy(&mut tee, &mut io::sink()).map_err(|e| err!("storing blob {digest}: {e}"))?;
        tee.commit()
    }

    /// Wrap `source` so that everything read through it is verified against `digest`/`size`
    /// and written to a temporary blob file, which [`TeeBlob::commit`] renames into place.
    pub fn tee_blob<R: Read>(&self, source: R, digest: &Digest, size: u64) -> Result<TeeBlob<R>> {
        let dir = self.root.join("blobs/sha256");
        let tmp = dir.join(format!(
            ".tmp-{}-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
            digest.hex()
        ));
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(TeeBlob {
            reader: VerifyingReader::new(source, digest.clone(), size),
            file: io::BufWriter::with_capacity(256 * 1024, file),
            tmp: Some(tmp),
            dest: dir.join(digest.hex()),
            digest: digest.clone(),
        })
    }

    /// Remove what killed pulls left behind: blob and ref temporaries of processes that no
    /// longer exist, and image staging directories whose install lock nobody holds.
    pub fn sweep_temporaries(&self) {
        for dir in ["blobs/sha256", "refs"] {
            let Ok(entries) = fs::read_dir(self.root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(".tmp-")) else {
                    continue;
                };
                let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
                    continue;
                };
                if !process_alive(pid) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let Ok(entries) = fs::read_dir(self.root.join("images/sha256")) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_prefix(".tmp-")) else {
                continue;
            };
            if Digest::parse(&format!("sha256:{hex}")).is_err() {
                continue;
            }
            // Held by a live pull (ours included): leave it. Free: its owner died.
            let lock = self.root.join("locks").join(format!("{hex}.lock"));
            if let Ok(Some(_held)) = FileLock::try_acquire(&lock) {
                let _ = remove_tree(&self.root.join("images/sha256").join(&name));
            }
        }
    }

    /// Manifest digests of every installed image (complete or damaged; not staging trees).
    pub fn image_digests(&self) -> Result<Vec<Digest>> {
        digests_in(&self.root.join("images/sha256"))
    }

    /// Digests of every blob in the store.
    pub fn blob_digests(&self) -> Result<Vec<Digest>> {
        digests_in(&self.root.join("blobs/sha256"))
    }

    /// The blobs an installed image was built from: its manifest, its config and its layers
    /// (as its saved manifest.json lists them; an unreadable one names only the manifest).
    pub fn image_blobs(&self, digest: &Digest) -> Vec<Digest> {
        let mut out = vec![digest.clone()];
        let path = self.image_dir(digest).join("manifest.json");
        if let Ok(bytes) = fs::read(&path) {
            if let Ok(super::manifest::Manifest::Image(m)) =
                super::manifest::Manifest::parse(&bytes, None)
            {
                out.push(m.config.digest.clone());
                out.extend(m.layers.iter().map(|l| l.digest.clone()));
            }
        }
        out
    }

    /// Delete the installed image `digest` (under its install lock, so a pull of the same
    /// image cannot be half-way through it) and the references that name it. `Ok(false)`
    /// when a pull holds the lock: the image stays.
    pub fn delete_image(&self, digest: &Digest) -> Result<bool> {
        let lock = self
            .root
            .join("locks")
            .join(format!("{}.lock", digest.hex()));
        let Some(_held) = FileLock::try_acquire(&lock)? else {
            return Ok(false);
        };
        remove_tree(&self.image_dir(digest))?;
        let refs = self.root.join("refs");
        for e in fs::read_dir(&refs).with_context(|| format!("reading {}", refs.display()))? {
            let path = e
                .with_context(|| format!("reading {}", refs.display()))?
                .path();
            let names_it = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<RefEntry>(&b).ok())
                .is_some_and(|r| r.manifest == digest.to_string());
            if names_it {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        let _ = fs::remove_file(&lock);
        Ok(true)
    }

    /// Delete the blob `digest`.
    pub fn delete_blob(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }

    /// Whether some process is installing an image right now (holds an install lock).
    pub fn install_in_progress(&self) -> Result<bool> {
        let locks = self.root.join("locks");
        for e in fs::read_dir(&locks).with_context(|| format!("reading {}", locks.display()))? {
            let path = e
                .with_context(|| format!("reading {}", locks.display()))?
                .path();
            if FileLock::try_acquire(&path)?.is_none() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn image_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join("images/sha256").join(digest.hex())
    }

    /// The installed image for manifest `digest`, if its tree is complete. A directory whose
    /// `config.json` cannot be read back (a damaged install) counts as not installed: the next
    /// pull replaces it ([`Store::stage`]) instead of every command failing on it.
    pub fn installed(&self, digest: &Digest) -> Result<Option<InstalledImage>> {
        let dir = self.image_dir(digest);
        let config_path = dir.join("config.json");
        let bytes = match fs::read(&config_path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err!("reading {}: {e}", config_path.display())),
        };
        let Ok(parsed) = ImageConfig::parse(&bytes) else {
            return Ok(None);
        };
        Ok(Some(InstalledImage {
            manifest_digest: digest.to_string(),
            rootfs: dir.join("rootfs"),
            config: parsed.config,
        }))
    }

    /// Whether `images/<digest>/` exists although [`Store::installed`] does not accept it.
    pub fn damaged_image(&self, digest: &Digest) -> Result<bool> {
        Ok(self.image_dir(digest).symlink_metadata().is_ok() && self.installed(digest)?.is_none())
    }

    /// Take the install lock of manifest `digest`, blocking while another process holds it.
    pub fn lock_image(&self, digest: &Digest) -> Result<FileLock> {
        FileLock::acquire(
            &self
                .root
                .join("locks")
                .join(format!("{}.lock", digest.hex())),
        )
    }

    /// A fresh staging directory for manifest `digest` (any leftover from a killed pull is
    /// removed first, and so is a damaged install of it: see [`Store::damaged_image`]). The
    /// caller must hold [`Store::lock_image`] for `digest`.
    pub fn stage(&self, digest: &Digest, _lock: &FileLock) -> Result<Staging> {
        let dir = self
            .root
            .join("images/sha256")
            .join(format!(".tmp-{}", digest.hex()));
        if dir.symlink_metadata().is_ok() {
            remove_tree(&dir)?;
        }
        if self.damaged_image(digest)? {
            remove_tree(&self.image_dir(digest))?;
        }
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let rootfs = dir.join("rootfs");
        fs::create_dir(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
        Ok(Staging {
            dir: Some(dir),
            rootfs,
            dest: self.image_dir(digest),
            digest: digest.clone(),
        })
    }
}

/// Reads through to the consumer while verifying and saving a blob.
pub struct TeeBlob<R> {
    reader: VerifyingReader<R>,
    file: io::BufWriter<File>,
    tmp: Option<PathBuf>,
    dest: PathBuf,
    digest: Digest,
}

impl<R: Read> TeeBlob<R> {
    /// Bytes read so far (for progress).
    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// The verification failure seen so far (digest or size), if any.
    pub fn failure(&self) -> Option<&str> {
        self.reader.failure()
    }

    /// Read the rest of the blob (what the consumer did not), verifying it.
    pub fn drain(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        while self.read(&mut buf)? != 0 {}
        Ok(())
    }

    /// Read whatever the consumer left, then give the verified blob its final name.
    pub fn commit(mut self) -> Result<PathBuf> {
        self.drain()
            .map_err(|e| err!("blob {}: {e}", self.digest))?;
        if !self.reader.verified() {
            return Err(err!("blob {} ended without being verified", self.digest));
        }
        self.file
            .flush()
            .with_context(|| format!("writing blob {}", self.digest))?;
        let tmp = self.tmp.take().expect("commit runs once");
        if let Err(e) = fs::rename(&tmp, &self.dest) {
            let _ = fs::remove_file(&tmp);
            return Err(err!("storing blob {}: {e}", self.dest.display()));
        }
        Ok(self.dest.clone())
    }
}

impl<R: Read> Read for TeeBlob<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader.read(buf)?;
        self.file.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl<R> Drop for TeeBlob<R> {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// An image being extracted; dropped without [`Staging::commit`], it is deleted.
pub struct Staging {
    dir: Option<PathBuf>,
    rootfs: PathBuf,
    dest: PathBuf,
    digest: Digest,
}

impl Staging {
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// Write the image's config and manifest beside the tree and move it into place.
    pub fn commit(mut self, config: &[u8], manifest: &[u8]) -> Result<InstalledImage> {
        let dir = self.dir.clone().expect("commit runs once");
        write_file(&dir.join("manifest.json"), manifest)?;
        // config.json last among the files: `installed` treats it as the completeness mark,
        // but only after the rename below can anyone see the directory anyway.
        write_file(&dir.join("config.json"), config)?;
        fs::rename(&dir, &self.dest).with_context(|| {
            format!(
                "installing image {} at {}",
                self.digest,
                self.dest.display()
            )
        })?;
        self.dir = None;
        let parsed = ImageConfig::parse(config)?;
        Ok(InstalledImage {
            manifest_digest: self.digest.to_string(),
            rootfs: self.dest.join("rootfs"),
            config: parsed.config,
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = remove_tree(&dir);
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The `sha256:<hex>` entries of a `…/sha256/` directory (temporaries and other names
/// skipped).
fn digests_in(dir: &Path) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        if let Some(d) = e
            .file_name()
            .to_str()
            .and_then(|n| Digest::parse(&format!("sha256:{n}")).ok())
        {
            out.push(d);
        }
    }
    out.sort_by(|a, b| a.hex().cmp(b.hex()));
    Ok(out)
}

/// Write `path` via a temporary file and rename, so readers see old or new, never half.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // `.tmp-<pid>-…`: the form sweep_temporaries recognises.
    let tmp = path.with_file_name(format!(
        ".tmp-{}-{}-{name}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    write_file(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        err!("writing {}: {e}", path.display())
    })
}

fn process_alive(pid: i32) -> bool {
    crate::sys::pid::exists(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempHome(PathBuf);
    impl TempHome {
        fn new(tag: &str) -> TempHome {
            let p = std::env::temp_dir().join(format!(
                "iii-store-{tag}-{}-{}",
                std::process::id(),
                TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            TempHome(p)
        }
    }
    impl Drop for TempHome {
        fn drop(&mut self) {
            let _ = remove_tree(&self.0);
        }
    }

    fn temps(store: &Store) -> Vec<String> {
        fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect()
    }

    #[test]
    fn verified_blob_gets_its_name() {
        let home = TempHome::new("blob");
        let store = Store::open(&home.0).unwrap();
        let data = b"layer bytes".repeat(1000);
        let d = Digest::of(&data);
        assert!(!store.has_blob(&d, data.len() as u64));
        let mut tee = store.tee_blob(&data[..], &d, data.len() as u64).unwrap();
        let mut first = [0u8; 10];
        tee.read_exact(&mut first).unwrap();
        let path = tee.commit().unwrap();
        assert_eq!(fs::read(path).unwrap(), data);
        assert!(store.has_blob(&d, data.len() as u64));
        assert!(!store.has_blob(&d, 1), "size is part of the check");
        assert!(temps(&store).is_empty());
    }

    #[test]
    fn mismatched_blob_leaves_nothing() {
        let home = TempHome::new("bad");
        let store = Store::open(&home.0).unwrap();
        let want = Digest::of(b"good");
        let e = store.put_blob(&want, b"evil").unwrap_err().to_string();
        assert!(e.contains(&want.to_string()), "{e}");
        assert!(e.contains(&Digest::of(b"evil").to_string()), "{e}");
        assert!(!store.blob_path(&want).exists());
        assert!(temps(&store).is_empty());
        // Abandoned half-way (the consumer failed): also nothing left.
        let tee = store.tee_blob(&b"good"[..], &want, 4).unwrap();
        drop(tee);
        assert!(temps(&store).is_empty());
    }

    #[test]
    fn sweeps_only_dead_temporaries() {
        let home = TempHome::new("sweep");
        let store = Store::open(&home.0).unwrap();
        let dir = store.root().join("blobs/sha256");
        // PID 0x7ffffffe is above any pid_max, so it cannot be running.
        fs::write(dir.join(".tmp-2147483646-0-abc"), b"x").unwrap();
        let live = format!(".tmp-{}-999-abc", std::process::id());
        fs::write(dir.join(&live), b"x").unwrap();
        // A staging dir whose lock is free (its pull died) goes; a locked one stays.
        let (dead, busy) = (Digest::of(b"dead"), Digest::of(b"busy"));
        let images = store.root().join("images/sha256");
        fs::create_dir_all(images.join(format!(".tmp-{}/rootfs", dead.hex()))).unwrap();
        fs::create_dir_all(images.join(format!(".tmp-{}/rootfs", busy.hex()))).unwrap();
        let _held = store.lock_image(&busy).unwrap();
        let stale_ref = store.root().join("refs/.tmp-2147483646-0-x.json");
        fs::write(&stale_ref, b"{").unwrap();
        store.sweep_temporaries();
        assert_eq!(temps(&store), vec![live]);
        assert!(!stale_ref.exists());
        assert!(!images.join(format!(".tmp-{}", dead.hex())).exists());
        assert!(images.join(format!(".tmp-{}", busy.hex())).exists());
    }

    #[test]
    fn staged_image_installs_atomically_and_is_found_by_ref() {
        let home = TempHome::new("img");
        let store = Store::open(&home.0).unwrap();
        let manifest = br#"{"layers":[]}"#;
        let md = Digest::of(manifest);
        let config = br#"{"config":{"Env":["A=1"],"Cmd":["/bin/sh"]}}"#;
        let lock = store.lock_image(&md).unwrap();
        // A leftover from a killed pull is replaced.
        let leftover = store
            .root()
            .join(format!("images/sha256/.tmp-{}", md.hex()));
        fs::create_dir_all(leftover.join("rootfs/junk")).unwrap();
        let staging = store.stage(&md, &lock).unwrap();
        assert!(!staging.rootfs().join("junk").exists());
        fs::write(staging.rootfs().join("hello"), b"hi").unwrap();
        assert!(store.installed(&md).unwrap().is_none());
        let img = staging.commit(config, manifest).unwrap();
        assert_eq!(img.manifest_digest, md.to_string());
        assert_eq!(fs::read(img.rootfs.join("hello")).unwrap(), b"hi");
        assert_eq!(img.config.env, ["A=1"]);
        assert!(!leftover.exists());

        assert!(store.lookup("localhost:5000/x:1").unwrap().is_none());
        store.record_ref("localhost:5000/x:1", &md).unwrap();
        let found = store.lookup("localhost:5000/x:1").unwrap().unwrap();
        assert_eq!(found.rootfs, img.rootfs);
        assert_eq!(found.config.cmd.unwrap(), ["/bin/sh"]);
        assert!(store.lookup("localhost:5000/x:2").unwrap().is_none());
    }

    #[test]
    fn dropped_staging_is_removed() {
        let home = TempHome::new("drop");
        let store = Store::open(&home.0).unwrap();
        let md = Digest::of(b"m");
        let lock = store.lock_image(&md).unwrap();
        let staging = store.stage(&md, &lock).unwrap();
        let ro = staging.rootfs().join("ro");
        fs::create_dir(&ro).unwrap();
        fs::write(ro.join("f"), b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        let dir = staging.rootfs().parent().unwrap().to_path_buf();
        drop(staging);
        assert!(!dir.exists());
        assert!(store.installed(&md).unwrap().is_none());
    }

    #[test]
    fn image_lock_excludes_other_holders() {
        let home = TempHome::new("lock");
        let store = Store::open(&home.0).unwrap();
        let md = Digest::of(b"m");
        let first = store.lock_image(&md).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = store.clone();
        let md2 = md.clone();
        let t = std::thread::spawn(move || {
            let _second = s2.lock_image(&md2).unwrap();
            tx.send(()).unwrap();
        });
        // flock locks belong to open file descriptions, so a second open in this process
        // blocks exactly like another process would.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }
}
