//! `iii worker clear [NAME]`: delete from the store (`III_HOME`) the image trees, blobs and
//! binaries that nothing needs.
//!
//! Kept, always: what this project's config.yaml uses (through its iii.lock pins and through
//! the images its tags were pulled as), what its workers run now, and whatever any process on
//! this host has mounted or open under the store — the workers of other projects sharing the
//! store included. Blobs stay while an image install is in progress (a pull stores blobs
//! before the image that names them exists). With a NAME, only that worker's own artifacts
//! go, and not while it runs. config.yaml, iii.lock and the projects' `.iii/` are never
//! touched: a cleared worker is reinstalled by `iii worker sync`.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::lockfile::{sha256_value, Lock, Source};
use crate::oci::digest::Digest;
use crate::oci::{Reference, Store};
use crate::project::Project;
use crate::supervisor::state::{self, Status};
use crate::worker_registry::binary;
use crate::{err, Result};

/// What a clear deletes.
#[derive(Debug, Default)]
pub struct Plan {
    pub images: Vec<(Digest, u64)>,
    /// Binary installs, by the sha256 of their tarball.
    pub binaries: Vec<(String, u64)>,
    pub blobs: Vec<(Digest, u64)>,
}

impl Plan {
    pub fn bytes(&self) -> u64 {
        self.images.iter().map(|i| i.1).sum::<u64>()
            + self.binaries.iter().map(|b| b.1).sum::<u64>()
            + self.blobs.iter().map(|b| b.1).sum::<u64>()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.binaries.is_empty() && self.blobs.is_empty()
    }

    /// `2 images, 1 binary and 14 blobs`.
    pub fn summary(&self) -> String {
        let n =
            |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
        format!(
            "{}, {} and {}",
            n(self.images.len(), "image", "images"),
            n(self.binaries.len(), "binary", "binaries"),
            n(self.blobs.len(), "blob", "blobs"),
        )
    }
}

/// `12.3 MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// What this project's worker `name` (of config.yaml or iii.lock) uses in the store.
#[derive(Default)]
struct Uses {
    images: HashSet<String>,
    binaries: HashSet<String>,
}

impl Uses {
    fn add_pin(&mut self, pin: &Source) {
        match pin {
            Source::Image { image } => {
                if let Some(d) = Reference::parse(image).ok().and_then(|r| r.digest) {
                    self.images.insert(d.hex().to_string());
                }
            }
            Source::Binary { artifacts } => {
                for a in artifacts.values() {
                    self.binaries.insert(sha256_value(&a.sha256));
                }
            }
            Source::Bundle { .. } => {}
        }
    }
}

fn uses_of(store: &Store, lock: Option<&Lock>, name: &str, image: Option<&str>) -> Uses {
    let mut u = Uses::default();
    if let Some(src) = lock
        .and_then(|l| l.workers.get(name))
        .and_then(|p| p.source.as_ref())
    {
        u.add_pin(src);
    }
    if let Some(i) = image.and_then(|i| store.lookup(i).ok().flatten()) {
        if let Ok(d) = Digest::parse(&i.manifest_digest) {
            u.images.insert(d.hex().to_string());
        }
    }
    u
}

/// Decide what `clear` (of `name`, or of everything unused) would delete.
pub fn plan(project: &Project, name: Option<&str>) -> Result<Plan> {
    let home = crate::project::store_home()?;
    let store = Store::open(&home)?;
    let config = Config::load_lenient(&project.config_path)?;
    let lock = Lock::load(&project.lock_path())?;

    // What must stay: the project's workers, what runs, what any process holds.
    let mut keep = Uses::default();
    let mut running = HashSet::new();
    for w in &config.workers {
        let st = state::read(&project.worker_dir(&w.name))
            .unwrap_or_default()
            .effective();
        if st.status == Status::Running {
            running.insert(w.name.clone());
            if let Some(d) = st
                .image_digest
                .as_deref()
                .and_then(|d| d.strip_prefix("sha256:"))
            {
                keep.images.insert(d.to_string());
                keep.binaries.insert(d.to_string());
            }
        }
        if Some(w.name.as_str()) != name {
            let u = uses_of(&store, lock.as_ref(), &w.name, w.image.as_deref());
            keep.images.extend(u.images);
            keep.binaries.extend(u.binaries);
        }
    }
    let held = held_on_host(&home);
    keep.images.extend(held.images);
    keep.binaries.extend(held.binaries);

    let (images, binaries): (Vec<Digest>, Vec<String>) = match name {
        Some(n) => {
            let entry = config.worker(n);
            let pinned = lock.as_ref().is_some_and(|l| l.workers.contains_key(n));
            if entry.is_none() && !pinned {
                return Err(err!(
                    "no worker named {n} in {} or {}",
                    project.config_path.display(),
                    project.lock_path().display()
                ));
            }
            if running.contains(n) {
                return Err(err!(
                    "worker {n} is running; stop it first (`iii worker stop {n}`)"
                ));
            }
            let u = uses_of(
                &store,
                lock.as_ref(),
                n,
                entry.and_then(|e| e.image.as_deref()),
            );
            let images = u
                .images
                .iter()
                .filter_map(|h| Digest::parse(&format!("sha256:{h}")).ok())
                .filter(|d| store.image_dir(d).exists())
                .collect();
            (images, u.binaries.into_iter().collect())
        }
        None => (store.image_digests()?, binary_shas(&home)?),
    };
    let mut plan = Plan::default();
    for d in images {
        if !keep.images.contains(d.hex()) {
            let size = tree_size(&store.image_dir(&d));
            plan.images.push((d, size));
        }
    }
    for sha in binaries {
        let dir = binary::binaries_dir(&home).join(&sha);
        if !keep.binaries.contains(&sha) && dir.exists() {
            plan.binaries.push((sha, tree_size(&dir)));
        }
    }
    // Blobs: those no remaining image was built from.
    if !store.install_in_progress()? {
        let going: HashSet<&str> = plan.images.iter().map(|(d, _)| d.hex()).collect();
        let mut needed: HashSet<String> = HashSet::new();
        for d in store.image_digests()? {
            if !going.contains(d.hex()) {
                needed.extend(store.image_blobs(&d).iter().map(|b| b.hex().to_string()));
            }
        }
        let candidates: Vec<Digest> = match name {
            None => store.blob_digests()?,
            Some(_) => plan
                .images
                .iter()
                .flat_map(|(d, _)| store.image_blobs(d))
                .collect(),
        };
        let mut seen = HashSet::new();
        for b in candidates {
            if !needed.contains(b.hex()) && seen.insert(b.hex().to_string()) {
                if let Ok(m) = std::fs::metadata(store.blob_path(&b)) {
                    plan.blobs.push((b, m.blocks() * 512));
                }
            }
        }
    }
    Ok(plan)
}

/// Delete what `plan` lists; the bytes freed.
pub fn execute(plan: &Plan) -> Result<u64> {
    let home = crate::project::store_home()?;
    let store = Store::open(&home)?;
    let mut freed = 0;
    for (d, size) in &plan.images {
        if store.delete_image(d)? {
            freed += size;
        } else {
            crate::say!("warning: image {d} is being installed; left in place");
        }
    }
    for (sha, size) in &plan.binaries {
        crate::oci::unpack::remove_tree(&binary::binaries_dir(&home).join(sha))?;
        freed += size;
    }
    for (b, size) in &plan.blobs {
        store.delete_blob(b)?;
        freed += size;
    }
    Ok(freed)
}

fn binary_shas(home: &Path) -> Result<Vec<String>> {
    let dir = binary::binaries_dir(home);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(err!("reading {}: {e}", dir.display())),
    };
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| crate::lockfile::is_sha256_hex(n))
        .collect())
}

/// Disk space under `path` (allocated blocks; each hard-linked file counted once).
fn tree_size(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
            }
        }
    }
    total
}

/// Images and binaries of the store at `home` that some process on this host has mounted
/// (a namespace worker's root) or open (a VM worker's root disk), found in `/proc`.
fn held_on_host(home: &Path) -> Uses {
    let home = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
    let images = format!("{}/images/sha256/", home.display());
    let binaries = format!("{}/binaries/", home.display());
    let mut held = Uses::default();
    let mut note = |text: &str| {
        for (prefix, set) in [(&images, &mut held.images), (&binaries, &mut held.binaries)] {
            let mut rest = text;
            while let Some(i) = rest.find(prefix.as_str()) {
                let after = &rest[i + prefix.len()..];
                let hex: String = after.chars().take(64).collect();
                if crate::lockfile::is_sha256_hex(&hex) {
                    set.insert(hex);
                }
                rest = after;
            }
        }
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return held;
    };
    let mut namespaces = HashSet::new();
    for p in procs.flatten() {
        let pid = p.path();
        if !p
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        // One mount table per mount namespace is enough.
        let ns = std::fs::read_link(pid.join("ns/mnt")).ok();
        if ns.as_ref().is_none_or(|ns| namespaces.insert(ns.clone())) {
            if let Ok(text) = std::fs::read_to_string(pid.join("mountinfo")) {
                note(&text);
            }
        }
        if let Ok(fds) = std::fs::read_dir(pid.join("fd")) {
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path()) {
                    note(&target.to_string_lossy());
                }
            }
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_du() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12 << 20), "12.0 MiB");
        let p = Plan {
            images: vec![(Digest::of(b"x"), 1 << 20)],
            binaries: vec![],
            blobs: vec![(Digest::of(b"y"), 1 << 20), (Digest::of(b"z"), 0)],
        };
        assert_eq!(p.summary(), "1 image, 0 binaries and 2 blobs");
        assert_eq!(human_bytes(p.bytes()), "2.0 MiB");
    }
}
