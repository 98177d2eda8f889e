//! Pulling: from an image reference to an installed, verified, extracted image in the store.
//!
//! The manifest of a tag is always resolved (the tag may have moved); a reference pinned by
//! digest that is already installed needs no network at all; blobs come from the store when
//! present. Missing layers download in parallel; the first missing one is
//! streamed straight into the extractor (download, hash, store, decompress and extract in
//! one pass) while the rest land in the store for the extractor to take in order.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use super::digest::{Digest, VerifyingReader};
use super::manifest::{self, Descriptor, ImageConfig, ImageManifest, Manifest};
use super::progress::{LayerOutcome, Progress};
use super::reference::Reference;
use super::registry::Client;
use super::store::{InstalledImage, Store};
use super::unpack::{self, Compression, UnpackOptions};
use crate::{err, Context, Result};

/// Concurrent layer downloads per pull.
const MAX_PARALLEL: usize = 4;
/// Largest image configuration blob we accept (they are a few KiB; history can grow them).
const MAX_CONFIG_BYTES: u64 = 32 << 20;

/// Pull `image` (a reference exactly as the user wrote it) into `store`, reporting to
/// `progress`, and remember it under that exact string for [`Store::lookup`].
pub fn pull(image: &str, store: &Store, progress: &mut dyn Progress) -> Result<InstalledImage> {
    let reference = Reference::parse(image)?;
    // Content pinned by digest cannot change: once installed, no network at all.
    if reference.digest.is_some() {
        if let Some(installed) = store.lookup(image)? {
            return Ok(installed);
        }
    }
    let client = Client::new(&reference, image)?;
    let (digest, manifest_bytes, m) = resolve(&client, &reference, image)?;
    progress.resolved(image, &digest, m.layers.len());

    let finish = |installed: InstalledImage| -> Result<InstalledImage> {
        store.record_ref(image, &digest)?;
        Ok(installed)
    };
    let report_cached = |progress: &mut dyn Progress| {
        for (i, l) in m.layers.iter().enumerate() {
            progress.layer_start(i, &l.digest, l.size);
            progress.layer_done(i, LayerOutcome::Cached);
        }
    };
    if let Some(installed) = store.installed(&digest)? {
        report_cached(progress);
        return finish(installed);
    }
    let lock = store.lock_image(&digest)?;
    // Another process may have installed it while we waited for the lock.
    if let Some(installed) = store.installed(&digest)? {
        report_cached(progress);
        return finish(installed);
    }
    store.sweep_temporaries();
    if !store.has_blob(&digest, manifest_bytes.len() as u64) {
        store.put_blob(&digest, &manifest_bytes)?;
    }
    let config_bytes = small_blob(&client, store, &m.config, image)?;
    let parsed = ImageConfig::parse(&config_bytes)
        .with_context(|| format!("image {image}: config {}", m.config.digest))?;
    check_platform(&parsed, image)?;

    if store.damaged_image(&digest)? {
        progress.notice(&format!(
            "image {digest} in the store is damaged (its config.json does not parse); \
             installing it again"
        ));
    }
    // A layer the store holds but that fails its digest as it is extracted is discarded and
    // downloaded again (each at most once), into a fresh staging tree.
    let mut replaced: Vec<Digest> = Vec::new();
    loop {
        let staging = store.stage(&digest, &lock)?;
        match apply_layers(&client, store, &m.layers, staging.rootfs(), progress, image)? {
            None => {
                let installed = staging.commit(&config_bytes, &manifest_bytes)?;
                return finish(installed);
            }
            Some(damaged) => {
                let l = &m.layers[damaged.index];
                if replaced.contains(&l.digest) {
                    return Err(err!(
                        "image {image}: layer {} ({}) is damaged in the store again right after \
                         it was downloaded: {}",
                        damaged.index + 1,
                        l.digest,
                        damaged.why
                    ));
                }
                progress.notice(&format!(
                    "layer {} sha256:{} in the store is damaged ({}); discarding it and \
                     downloading it again",
                    damaged.index + 1,
                    l.digest.short(),
                    damaged.why
                ));
                store.discard_blob(&l.digest)?;
                replaced.push(l.digest.clone());
            }
        }
    }
}

/// A blob the store held that did not match its digest when read back.
struct DamagedBlob {
    /// Index of the first layer that uses it.
    index: usize,
    why: String,
}

/// Refuse an image built for another OS or architecture: its programs could not run here,
/// and saying so now beats an "exec format error" when the worker starts.
fn check_platform(config: &manifest::ParsedConfig, image: &str) -> Result<()> {
    let host = manifest::host_platform();
    let os = config.os.as_deref().unwrap_or(&host.os);
    let arch = config.architecture.as_deref().unwrap_or(&host.architecture);
    if os != host.os || arch != host.architecture {
        return Err(err!(
            "image {image} is built for {os}/{arch}, but this host runs {}/{}",
            host.os,
            host.architecture
        ));
    }
    Ok(())
}

/// Fetch the manifest for `reference`, following an index to this host's platform.
fn resolve(
    client: &Client,
    r: &Reference,
    image: &str,
) -> Result<(Digest, Vec<u8>, ImageManifest)> {
    let top = client.manifest(&r.manifest_ref())?;
    let parsed = Manifest::parse(&top.bytes, top.content_type.as_deref())
        .with_context(|| format!("image {image}: manifest {}", top.digest))?;
    match parsed {
        Manifest::Image(m) => Ok((top.digest, top.bytes, m)),
        Manifest::Index(entries) => {
            let chosen = manifest::select_platform(&entries, &manifest::host_platform())
                .with_context(|| format!("image {image}"))?;
            let inner = client.manifest(&chosen.digest.to_string())?;
            match Manifest::parse(&inner.bytes, inner.content_type.as_deref())
                .with_context(|| format!("image {image}: manifest {}", inner.digest))?
            {
                Manifest::Image(m) => Ok((inner.digest, inner.bytes, m)),
                Manifest::Index(_) => Err(err!(
                    "image {image}: index entry {} is itself an index",
                    inner.digest
                )),
            }
        }
    }
}

/// A small blob (the image config), from the store or downloaded into it.
fn small_blob(client: &Client, store: &Store, d: &Descriptor, image: &str) -> Result<Vec<u8>> {
    if d.size > MAX_CONFIG_BYTES {
        return Err(err!(
            "image {image}: config {} is {} bytes, more than the {MAX_CONFIG_BYTES} accepted",
            d.digest,
            d.size
        ));
    }
    if store.has_blob(&d.digest, d.size) {
        let p = store.blob_path(&d.digest);
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        if Digest::of(&bytes) == d.digest {
            return Ok(bytes);
        }
        // Damaged on disk: fetch it again below.
        store.discard_blob(&d.digest)?;
    }
    let mut tee = store.tee_blob(client.blob(&d.digest, d.size), &d.digest, d.size)?;
    let mut bytes = Vec::with_capacity(d.size as usize);
    tee.read_to_end(&mut bytes)
        .map_err(|e| err!("image {image}: config {}: {e}", d.digest))?;
    tee.commit()
        .map_err(|e| err!("image {image}: config: {}", e.message()))?;
    Ok(bytes)
}

type SharedProgress<'p> = Mutex<&'p mut dyn Progress>;

/// Counts bytes coming off the network for progress, and stops a download once the pull
/// has failed elsewhere.
struct Counted<'a, 'p, R> {
    inner: R,
    index: usize,
    done: u64,
    reported: u64,
    progress: &'a SharedProgress<'p>,
    cancel: &'a AtomicBool,
}

impl<R: Read> Read for Counted<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("pull cancelled"));
        }
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= 512 * 1024 || (n == 0 && self.done != self.reported) {
            self.reported = self.done;
            lock(self.progress).layer_advance(self.index, self.done);
        }
        Ok(n)
    }
}

fn lock<'a, T>(m: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Apply `layers` in order onto `rootfs`: missing blobs are downloaded (the first streamed
/// into the extractor), the others read from the store and verified as they are extracted.
/// `Ok(Some(..))`: a blob from the store failed its digest; nothing more was applied.
fn apply_layers(
    client: &Client,
    store: &Store,
    layers: &[Descriptor],
    rootfs: &Path,
    progress: &mut dyn Progress,
    image: &str,
) -> Result<Option<DamagedBlob>> {
    let n = layers.len();
    // A digest listed twice is downloaded once, by its first index.
    let owner: Vec<usize> = (0..n)
        .map(|i| {
            layers
                .iter()
                .position(|l| l.digest == layers[i].digest)
                .unwrap_or(i)
        })
        .collect();
    let present: Vec<bool> = layers
        .iter()
        .map(|l| store.has_blob(&l.digest, l.size))
        .collect();
    let streamed = (0..n).find(|&i| !present[i]);
    let background: Vec<usize> = (0..n)
        .filter(|&i| !present[i] && owner[i] == i && Some(i) != streamed)
        .collect();

    for (i, l) in layers.iter().enumerate() {
        progress.layer_start(i, &l.digest, l.size);
        if present[i] {
            progress.layer_done(i, LayerOutcome::Cached);
        }
    }
    let progress: SharedProgress = Mutex::new(progress);
    let cancel = AtomicBool::new(false);
    let results: Mutex<HashMap<usize, Result<(), String>>> = Mutex::new(HashMap::new());
    let ready = Condvar::new();
    let queue = Mutex::new(background.iter().copied().collect::<VecDeque<usize>>());
    let opts = UnpackOptions {
        privileged: crate::sys::pid::effective_uid() == 0,
    };

    std::thread::scope(|s| {
        for _ in 0..background.len().min(MAX_PARALLEL) {
            s.spawn(|| loop {
                let Some(i) = lock(&queue).pop_front() else {
                    break;
                };
                let r = if cancel.load(Ordering::Relaxed) {
                    Err("cancelled".to_string())
                } else {
                    download(client, store, &layers[i], i, &progress, &cancel, image)
                        .map_err(|e| e.message().to_string())
                };
                if r.is_ok() {
                    lock(&progress).layer_done(i, LayerOutcome::Downloaded);
                }
                lock(&results).insert(i, r);
                ready.notify_all();
            });
        }

        let outcome = (|| -> Result<Option<DamagedBlob>> {
            for (i, l) in layers.iter().enumerate() {
                let what = || format!("image {image}: layer {} ({})", i + 1, l.digest);
                if Some(i) == streamed {
                    let counted = Counted {
                        inner: client.blob(&l.digest, l.size),
                        index: i,
                        done: 0,
                        reported: 0,
                        progress: &progress,
                        cancel: &cancel,
                    };
                    let mut tee = store.tee_blob(counted, &l.digest, l.size)?;
                    if let Err(e) = extract(&mut tee, rootfs, &opts) {
                        // Corrupt data usually breaks decompression before the digest
                        // can be checked: read the rest to tell a bad download (reported
                        // with both digests) from a genuinely broken layer.
                        let _ = tee.drain();
                        return Err(match tee.failure() {
                            Some(f) => err!("{}: {f}", what()),
                            None => err!("{}: {}", what(), e.message()),
                        });
                    }
                    tee.commit()
                        .map_err(|e| err!("{}: {}", what(), e.message()))?;
                    lock(&progress).layer_done(i, LayerOutcome::Downloaded);
                    continue;
                }
                if background.contains(&owner[i]) {
                    let mut done = lock(&results);
                    while !done.contains_key(&owner[i]) {
                        done = ready.wait(done).unwrap_or_else(|p| p.into_inner());
                    }
                    if let Err(e) = &done[&owner[i]] {
                        return Err(err!("{e}"));
                    }
                }
                let path = store.blob_path(&l.digest);
                let file = std::fs::File::open(&path)
                    .with_context(|| format!("{}: opening {}", what(), path.display()))?;
                // The size was checked; the content is checked as it streams through (the
                // hash costs little beside decompression), to the end of the blob.
                let mut blob = VerifyingReader::new(file, l.digest.clone(), l.size);
                let extracted = extract(&mut blob, rootfs, &opts);
                let checked = blob.finish();
                if let Err(e) = &checked {
                    let why = blob.failure().map_or_else(|| e.to_string(), str::to_string);
                    return Ok(Some(DamagedBlob {
                        index: owner[i],
                        why,
                    }));
                }
                extracted.map_err(|e| err!("{}: {}", what(), e.message()))?;
            }
            Ok(None)
        })();
        if !matches!(outcome, Ok(None)) {
            cancel.store(true, Ordering::Relaxed);
        }
        outcome
    })
}

/// Download layer `i` into the store (verified), without extracting it.
fn download(
    client: &Client,
    store: &Store,
    l: &Descriptor,
    i: usize,
    progress: &SharedProgress,
    cancel: &AtomicBool,
    image: &str,
) -> Result<()> {
    let counted = Counted {
        inner: client.blob(&l.digest, l.size),
        index: i,
        done: 0,
        reported: 0,
        progress,
        cancel,
    };
    let what = || format!("image {image}: layer {} ({})", i + 1, l.digest);
    let mut tee = store.tee_blob(counted, &l.digest, l.size)?;
    if let Err(e) = io::copy(&mut tee, &mut io::sink()) {
        return Err(match tee.failure() {
            Some(f) => err!("{}: {f}", what()),
            None => err!("{}: {e}", what()),
        });
    }
    tee.commit()
        .map_err(|e| err!("{}: {}", what(), e.message()))?;
    Ok(())
}

/// Decompress (by magic bytes: registries mislabel media types) and apply one layer.
///
/// Two stages, like `tar -xzf` with its gzip child: this thread reads the blob (network,
/// hash, store) and decompresses it; a second thread parses the tar and writes files. They
/// meet in a bounded channel of decompressed chunks.
fn extract(blob: impl Read + Send, rootfs: &Path, opts: &UnpackOptions) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(PIPELINE_CHUNKS);
    std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let tar = ChannelReader {
                rx,
                chunk: Vec::new(),
                pos: 0,
            };
            unpack::apply_layer(tar, rootfs, opts)
        });
        let produced = (|| -> Result<()> {
            let mut buffered = BufReader::with_capacity(256 * 1024, blob);
            let head = buffered.fill_buf().context("reading layer")?;
            let compression = Compression::sniff(head);
            let mut plain = unpack::decompress(buffered, compression)?;
            loop {
                let mut chunk = vec![0u8; PIPELINE_CHUNK_BYTES];
                match plain.read(&mut chunk) {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        chunk.truncate(n);
                        if tx.send(Ok(chunk)).is_err() {
                            // The extractor stopped (its error is reported below).
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = tx.send(Err(e));
                        return Err(err!("reading layer: {msg}"));
                    }
                }
            }
        })();
        // Closing the channel is the end of the tar stream for the extractor.
        drop(tx);
        let applied = writer
            .join()
            .unwrap_or_else(|_| Err(err!("layer extraction thread panicked")));
        // A read/decompression failure explains an extractor failure, not the reverse.
        produced?;
        applied.map(|_| ())
    })
}

/// Decompressed chunks in flight between the two stages of [`extract`].
const PIPELINE_CHUNKS: usize = 16;
const PIPELINE_CHUNK_BYTES: usize = 256 * 1024;

/// The extractor's view of the channel: a plain `Read`.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // Sender gone: end of stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
