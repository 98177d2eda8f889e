//! Layer unpacking: applies one OCI layer tar (plain, gzip or zstd) on top of a rootfs
//! directory, with docker's semantics for whiteouts, opaque directories and replacement,
//! while never writing outside the rootfs (see `confine.rs`).
//!
//! Every filesystem operation goes through a directory fd plus a single name (`sys.rs`),
//! parents are opened component by component without following symlinks, and directory
//! metadata is applied once the whole layer is in (so a read-only directory can still be
//! filled and its mtime is not disturbed by its children). Nothing is fsynced here: the
//! caller syncs the finished tree once.

pub(crate) mod compress;
mod confine;
mod sparse;
mod sys;
mod whiteout;

pub use compress::{decompress, Compression};

use std::collections::{BTreeSet, HashSet};
use std::ffi::{CStr, CString};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::{err, Context, Error, Result};
use confine::{join, normalize, WalkError, Walker};

/// How to apply a layer.
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Running as root: give files their owners from the tar (lchown) and create device
    /// nodes. Otherwise owners stay the caller's and device nodes are skipped.
    pub privileged: bool,
}

/// What applying a layer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Tar entries processed (whiteouts and skipped device nodes included).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Big copies mean few syscalls; one buffer per layer, reused for every file.
const COPY_BUF: usize = 1 << 20;

/// Applies one layer tar (already decompressed, see [`decompress`]) on top of `rootfs`.
///
/// On error the rootfs is left partly updated (the caller discards it), but nothing was
/// ever written outside it. The reader is read to its end, so a digest-checking reader
/// below sees every byte.
pub fn apply_layer(tar: impl Read, rootfs: &Path, opts: &UnpackOptions) -> Result<LayerStats> {
    let root = std::fs::File::open(rootfs)
        .with_context(|| format!("opening rootfs {}", rootfs.display()))?;
    let is_dir = root
        .metadata()
        .with_context(|| format!("reading rootfs {}", rootfs.display()))?
        .is_dir();
    if !is_dir {
        return Err(err!("rootfs {} is not a directory", rootfs.display()));
    }
    let mut x = Extractor {
        walker: Walker::new(OwnedFd::from(root), opts.privileged),
        privileged: opts.privileged,
        unpacked: BTreeSet::new(),
        dirs: Vec::new(),
        buf: vec![0; COPY_BUF],
        stats: LayerStats::default(),
    };
    // Headers and small files are read in 512-byte pieces; a buffer keeps those from
    // each being a separate decompressor call. Large reads bypass it.
    let mut archive = tar::Archive::new(BufReader::with_capacity(64 * 1024, tar));
    {
        let entries = archive.entries().context("reading layer tar")?;
        let mut last = Vec::new();
        for entry in entries {
            let mut entry = entry.map_err(|e| match last.is_empty() {
                true => err!("reading layer tar: {e}"),
                false => err!("reading layer tar after entry '{}': {e}", lossy(&last)),
            })?;
            last = x.apply(&mut entry)?;
        }
    }
    x.finish()?;
    io::copy(&mut archive.into_inner(), &mut io::sink()).context("reading the end of the layer")?;
    Ok(x.stats)
}

/// Removes a (partial) rootfs tree, symlinks not followed. Unlike
/// `std::fs::remove_dir_all`, it also works without root on trees holding read-only
/// directories (an image's 0555 `/proc`, say), which it makes writable first.
pub fn remove_tree(path: &Path) -> Result<()> {
    let what = || format!("removing {}", path.display());
    let name = path
        .file_name()
        .with_context(|| format!("{}: no file name", what()))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::File::open(parent).with_context(what)?;
    let c = sys::cstr(std::os::unix::ffi::OsStrExt::as_bytes(name)).with_context(what)?;
    whiteout::remove_if_present(dir.as_fd(), &c).with_context(what)?;
    Ok(())
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// Owner, mode, time and xattrs of an entry.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// A directory whose metadata waits for the end of the layer.
struct DirMeta {
    path: Vec<u8>,
    meta: Meta,
}

struct Extractor {
    walker: Walker,
    privileged: bool,
    /// Paths (as `confine::join` writes them) this layer created, for opaque directories
    /// and whiteouts, which only hide what lower layers put there.
    unpacked: BTreeSet<Vec<u8>>,
    dirs: Vec<DirMeta>,
    buf: Vec<u8>,
    stats: LayerStats,
}

impl Extractor {
    /// Applies one entry and returns its name (for messages about the next one).
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<Vec<u8>> {
        self.stats.entries += 1;
        let mut name = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        // Global PAX headers and volume labels describe the archive, not a file.
        if kind.is_pax_global_extensions() || kind.as_byte() == b'V' {
            return Ok(name);
        }
        let mut pax = read_pax(entry).map_err(|e| err!("layer entry '{}': {e}", lossy(&name)))?;
        // A PAX sparse file's header name is a stand-in ("GNUSparseFile.0/…").
        if let Some(real) = pax.sparse.name.take() {
            name = real;
        }
        let comps = normalize(&name).ok_or_else(|| {
            err!(
                "layer entry '{}': path escapes the root filesystem",
                lossy(&name)
            )
        })?;
        // Paths inside the image must stay usable by path (PATH_MAX), which also bounds
        // directory depth, and with it the recursion of tree removal.
        if comps.iter().map(|c| c.len() + 1).sum::<usize>() >= libc::PATH_MAX as usize {
            return Err(err!(
                "layer entry '{}…': path longer than {} bytes",
                lossy(&name[..64]),
                libc::PATH_MAX
            ));
        }
        self.apply_at(entry, kind, &name, &comps, &mut pax)
            .map_err(|e| err!("layer entry '{}': {e}", lossy(&name)))?;
        Ok(name)
    }

    fn apply_at<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: tar::EntryType,
        name: &[u8],
        comps: &[&[u8]],
        pax: &mut Pax,
    ) -> Result<()> {
        let Some((base, parent)) = comps.split_last() else {
            // "./" stands for the rootfs itself: only its metadata can change.
            if kind.is_dir() || name.ends_with(b"/") {
                let meta = read_meta(entry.header(), pax)?;
                self.dirs.push(DirMeta {
                    path: Vec::new(),
                    meta,
                });
                return Ok(());
            }
            return Err(err!("only a directory can stand for the root filesystem"));
        };
        if let Some(hidden) = base.strip_prefix(b".wh.") {
            return self.whiteout(parent, hidden);
        }
        let meta = read_meta(entry.header(), pax)?;
        let path = join(comps);
        let c = sys::cstr(base).map_err(io_err("name"))?;
        let removed_dir = match kind.as_byte() {
            // Old tars mark directories only by the trailing slash.
            b'0' | b'\0' | b'7' | b'S' if name.ends_with(b"/") => {
                self.directory(parent, &c, path.clone(), meta)?
            }
            b'0' | b'\0' | b'7' | b'S' => self.file(entry, parent, &c, &meta, &pax.sparse)?,
            b'5' => self.directory(parent, &c, path.clone(), meta)?,
            b'2' => {
                let target = entry
                    .link_name_bytes()
                    .context("symlink without a target")?;
                let target = sys::cstr(&target).map_err(io_err("symlink target"))?;
                self.symlink(parent, &c, &target, &meta)?
            }
            b'1' => {
                let target = entry
                    .link_name_bytes()
                    .context("hard link without a target")?;
                let target = target.into_owned();
                self.hardlink(parent, &c, comps, &target)?
            }
            b'3' | b'4' | b'6' => {
                if !self.privileged && kind.as_byte() != b'6' {
                    // Only root can make device nodes; rootless runtimes go without.
                    return Ok(());
                }
                self.node(entry, parent, &c, &meta)?
            }
            other => {
                return Err(err!(
                    "unsupported tar entry type '{}'",
                    (other as char).escape_default()
                ))
            }
        };
        if removed_dir {
            self.walker.forget_from(parent.len());
        }
        self.unpacked.insert(path);
        Ok(())
    }

    fn parent(&mut self, parent: &[&[u8]], create: bool) -> Result<BorrowedFd<'_>> {
        self.walker
            .dir(parent, create)
            .map_err(|e| err!("{}", e.describe(parent)))
    }

    /// A regular file: always a new inode (a lower layer's file may be hard-linked
    /// elsewhere, and truncating it would change the other names too).
    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &[&[u8]],
        c: &CStr,
        meta: &Meta,
        sparse: &sparse::PaxSparse,
    ) -> Result<bool> {
        let privileged = self.privileged;
        let old_gnu_sparse = entry.header().entry_type().is_gnu_sparse();
        let dir = self
            .walker
            .dir(parent, true)
            .map_err(|e| err!("{}", e.describe(parent)))?;
        let (mut f, removed_dir) =
            replace(dir, c, || sys::create_file_at(dir, c, 0o600)).map_err(io_err("creating"))?;
        if sparse.is_sparse() {
            self.stats.bytes += sparse
                .write(entry, &mut f, &mut self.buf)
                .map_err(Error::new)?;
        } else if old_gnu_sparse {
            self.stats.bytes +=
                sparse::write_with_holes(entry, &mut f, &mut self.buf).map_err(Error::new)?;
        } else {
            loop {
                let n = match entry.read(&mut self.buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(err!("reading content: {e}")),
                };
                f.write_all(&self.buf[..n]).map_err(io_err("writing"))?;
                self.stats.bytes += n as u64;
            }
        }
        set_meta_fd(f.as_fd(), meta, privileged)?;
        Ok(removed_dir)
    }

    /// A directory merges into an existing one; anything else in its place goes.
    fn directory(&mut self, parent: &[&[u8]], c: &CStr, path: Vec<u8>, meta: Meta) -> Result<bool> {
        let dir = self.parent(parent, true)?;
        let mut removed_dir = false;
        match sys::mkdir_at(dir, c, 0o755) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                if sys::file_type_at(dir, c).map_err(io_err("inspecting"))? != libc::S_IFDIR {
                    removed_dir = whiteout::remove_at(dir, c).map_err(io_err("replacing"))?;
                    sys::mkdir_at(dir, c, 0o755).map_err(io_err("creating"))?;
                }
            }
            Err(e) => return Err(err!("creating: {e}")),
        }
        self.dirs.push(DirMeta { path, meta });
        Ok(removed_dir)
    }

    /// A symlink, its target stored verbatim (it is only ever resolved inside the
    /// sandbox, never by extraction).
    fn symlink(&mut self, parent: &[&[u8]], c: &CStr, target: &CStr, meta: &Meta) -> Result<bool> {
        let privileged = self.privileged;
        let dir = self.parent(parent, true)?;
        let ((), removed_dir) =
            replace(dir, c, || sys::symlink_at(target, dir, c)).map_err(io_err("creating"))?;
        if privileged {
            sys::lchown_at(dir, c, meta.uid, meta.gid)
                .map_err(|e| err!("setting owner {}:{}: {e}", meta.uid, meta.gid))?;
        }
        for (key, value) in &meta.xattrs {
            match sys::lsetxattr_at(dir, c.to_bytes(), key, value) {
                // No /proc to reach the symlink through: xattrs are best effort anyway.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                r => xattr_result(key, r)?,
            }
        }
        sys::lutimens_at(dir, c, meta.mtime).map_err(io_err("setting mtime"))?;
        Ok(removed_dir)
    }

    /// A hard link to something already in the rootfs (this layer or a lower one); the
    /// target is found with the same confined walk, so it cannot be outside.
    fn hardlink(
        &mut self,
        parent: &[&[u8]],
        c: &CStr,
        comps: &[&[u8]],
        target: &[u8],
    ) -> Result<bool> {
        let shown = lossy(target);
        let tcomps = normalize(target)
            .ok_or_else(|| err!("hard link target '{shown}' escapes the root filesystem"))?;
        let Some((tbase, tparent)) = tcomps.split_last() else {
            return Err(err!("hard link to the root directory"));
        };
        if tcomps == comps {
            return Ok(false);
        }
        let tc = sys::cstr(tbase).map_err(io_err("hard link target"))?;
        let tdir = self
            .walker
            .dir(tparent, false)
            .map_err(|e| match e {
                WalkError::Missing(_) => err!("hard link target '{shown}' does not exist"),
                e => err!("hard link target '{shown}': {}", e.describe(tparent)),
            })?
            .try_clone_to_owned()
            .map_err(io_err("hard link target"))?;
        let dir = self.parent(parent, true)?;
        let linked = replace(dir, c, || sys::link_at(tdir.as_fd(), &tc, dir, c));
        match linked {
            Ok(((), removed_dir)) => Ok(removed_dir),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                Err(err!("hard link target '{shown}' does not exist"))
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(err!(
                "hard link target '{shown}' cannot be linked (a directory?): {e}"
            )),
            Err(e) => Err(err!("linking to '{shown}': {e}")),
        }
    }

    /// A device node or fifo.
    fn node<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parent: &[&[u8]],
        c: &CStr,
        meta: &Meta,
    ) -> Result<bool> {
        let h = entry.header();
        let (ty, dev) = match h.entry_type().as_byte() {
            b'6' => (libc::S_IFIFO, 0),
            b => {
                let major = h
                    .device_major()
                    .map_err(io_err("device major"))?
                    .unwrap_or(0);
                let minor = h
                    .device_minor()
                    .map_err(io_err("device minor"))?
                    .unwrap_or(0);
                let ty = if b == b'3' {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                (ty, libc::makedev(major, minor))
            }
        };
        let privileged = self.privileged;
        let dir = self.parent(parent, true)?;
        let ((), removed_dir) = replace(dir, c, || sys::mknod_at(dir, c, ty | 0o600, dev))
            .map_err(io_err("creating"))?;
        if privileged {
            sys::lchown_at(dir, c, meta.uid, meta.gid)
                .map_err(|e| err!("setting owner {}:{}: {e}", meta.uid, meta.gid))?;
        }
        sys::chmod_at(dir, c, meta.mode).map_err(io_err("setting mode"))?;
        sys::lutimens_at(dir, c, meta.mtime).map_err(io_err("setting mtime"))?;
        Ok(removed_dir)
    }

    /// `.wh.<name>` removes `name` from lower layers; `.wh..wh..opq` empties the
    /// directory of lower layers' content. Neither leaves a file behind.
    fn whiteout(&mut self, parent: &[&[u8]], hidden: &[u8]) -> Result<()> {
        if hidden == b".wh..opq" {
            let dir = match self.walker.dir(parent, false) {
                Ok(dir) => dir,
                // Nothing below to hide.
                Err(WalkError::Missing(_)) | Err(WalkError::NotDir(_)) => return Ok(()),
                Err(e) => return Err(err!("{}", e.describe(parent))),
            };
            whiteout::clear_opaque(dir, &join(parent), &self.unpacked)
                .map_err(io_err("clearing opaque directory"))?;
            self.walker.forget_from(parent.len());
            return Ok(());
        }
        if hidden.starts_with(b".wh.") {
            // Other `.wh..wh.` names are aufs bookkeeping (hard link directories), not files.
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(err!("malformed whiteout name"));
        }
        let c = sys::cstr(hidden).map_err(io_err("whiteout"))?;
        let dir = match self.walker.dir(parent, false) {
            Ok(dir) => dir,
            Err(WalkError::Missing(_)) | Err(WalkError::NotDir(_)) => return Ok(()),
            Err(e) => return Err(err!("{}", e.describe(parent))),
        };
        let mut comps = parent.to_vec();
        comps.push(hidden);
        let path = join(&comps);
        if whiteout::added_by_layer(&self.unpacked, &path) {
            // A whiteout only hides lower layers (OCI image spec); what this layer put
            // there stays, but lower content inside a merged directory goes.
            if sys::file_type_at(dir, &c).map_err(io_err("inspecting"))? == libc::S_IFDIR {
                let sub = sys::open_dir_at(dir, &c).map_err(io_err("opening"))?;
                whiteout::clear_opaque(sub.as_fd(), &path, &self.unpacked)
                    .map_err(io_err("removing"))?;
            }
        } else {
            whiteout::remove_if_present(dir, &c).map_err(io_err("removing"))?;
        }
        self.walker.forget_from(parent.len());
        Ok(())
    }

    /// Applies directory metadata, and without root puts back the modes of lower
    /// layers' read-only directories (see `Walker`). Deepest first, so that a directory
    /// losing its search bit does not block the way to its subdirectories. Where a path
    /// was listed twice, its last entry wins; a directory replaced later in the layer is
    /// skipped.
    fn finish(&mut self) -> Result<()> {
        let fixups = self.walker.take_made_writable();
        let mut seen = HashSet::new();
        let mut todo: Vec<(&[u8], Result<&Meta, u32>)> = Vec::new();
        for d in self.dirs.iter().rev() {
            if seen.insert(d.path.as_slice()) {
                todo.push((&d.path, Ok(&d.meta)));
            }
        }
        for (path, mode) in &fixups {
            // A directory this layer lists gets the mode of its entry instead.
            if seen.insert(path.as_slice()) {
                todo.push((path, Err(*mode)));
            }
        }
        let depth = |p: &[u8]| match p.is_empty() {
            true => 0,
            false => 1 + p.iter().filter(|&&b| b == b'/').count(),
        };
        // Stable: within a depth, later entries of the tar still come first.
        todo.sort_by_key(|(p, _)| std::cmp::Reverse(depth(p)));
        for (path, what) in todo {
            let comps: Vec<&[u8]> = match path.is_empty() {
                true => Vec::new(),
                false => path.split(|&b| b == b'/').collect(),
            };
            let dir = match self.walker.dir(&comps, false) {
                Ok(dir) => dir,
                Err(WalkError::Io(_, e)) => {
                    return Err(err!("layer entry '{}': opening: {e}", lossy(path)))
                }
                Err(_) => continue,
            };
            let done = match what {
                Ok(meta) => set_meta_fd(dir, meta, self.privileged),
                Err(mode) => sys::fchmod(dir, mode).map_err(io_err("restoring mode")),
            };
            done.map_err(|e| err!("layer entry '{}': {e}", lossy(path)))?;
        }
        Ok(())
    }
}

/// Runs `make`; if something is already at `name`, removes it (a whole tree for a
/// directory, as docker does) and runs `make` again. Also says whether a directory went.
fn replace<T>(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mut make: impl FnMut() -> io::Result<T>,
) -> io::Result<(T, bool)> {
    match make() {
        Ok(t) => Ok((t, false)),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            let was_dir = whiteout::remove_at(dir, name)?;
            Ok((make()?, was_dir))
        }
        Err(e) => Err(e),
    }
}

fn io_err(what: &'static str) -> impl Fn(io::Error) -> Error {
    move |e| err!("{what}: {e}")
}

/// Owner before mode (chown clears setuid/setgid), mode after content, xattrs after the
/// owner (chown drops `security.capability`), times last.
fn set_meta_fd(fd: BorrowedFd<'_>, meta: &Meta, privileged: bool) -> Result<()> {
    if privileged {
        std::os::unix::fs::fchown(fd, Some(meta.uid), Some(meta.gid))
            .map_err(|e| err!("setting owner {}:{}: {e}", meta.uid, meta.gid))?;
    }
    sys::fchmod(fd, meta.mode).map_err(io_err("setting mode"))?;
    for (key, value) in &meta.xattrs {
        xattr_result(key, sys::fsetxattr(fd, key, value))?;
    }
    sys::futimens(fd, meta.mtime).map_err(io_err("setting mtime"))?;
    Ok(())
}

/// Xattrs are best effort where the filesystem or our privileges do not allow them.
fn xattr_result(key: &CStr, r: io::Result<()>) -> Result<()> {
    match r {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTSUP)) => Ok(()),
        Err(e) => Err(err!("setting xattr {}: {e}", key.to_string_lossy())),
        Ok(()) => Ok(()),
    }
}

/// Xattrs that would change how overlayfs reads the shared store if set on it.
fn xattr_allowed(key: &[u8]) -> bool {
    !(key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay."))
}

/// What an entry's PAX records add to its header.
#[derive(Default)]
struct Pax {
    mtime: Option<(i64, u32)>,
    xattrs: Vec<(CString, Vec<u8>)>,
    sparse: sparse::PaxSparse,
}

fn read_pax<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Pax> {
    let mut pax = Pax::default();
    let Some(exts) = entry
        .pax_extensions()
        .map_err(io_err("reading PAX header"))?
    else {
        return Ok(pax);
    };
    for ext in exts {
        let ext = ext.map_err(io_err("reading PAX header"))?;
        let (key, value) = (ext.key_bytes(), ext.value_bytes());
        if key == b"mtime" {
            pax.mtime = parse_pax_time(value);
        } else if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
            if xattr_allowed(x) {
                let k = sys::cstr(x).map_err(io_err("xattr name"))?;
                pax.xattrs.push((k, value.to_vec()));
            }
        } else {
            pax.sparse.record(key, value).map_err(Error::new)?;
        }
    }
    Ok(pax)
}

/// Owner, mode and mtime from the header (the tar crate already applied PAX uid/gid),
/// with PAX mtime and xattrs taken from `pax`.
fn read_meta(h: &tar::Header, pax: &mut Pax) -> Result<Meta> {
    let mtime = pax.mtime;
    let xattrs = std::mem::take(&mut pax.xattrs);
    let id = |v: io::Result<u64>, what: &str| -> Result<u32> {
        let v = v.map_err(|e| err!("reading {what}: {e}"))?;
        u32::try_from(v).map_err(|_| err!("{what} {v} is out of range"))
    };
    let mtime = match mtime {
        Some(t) => t,
        None => {
            let t = h.mtime().map_err(io_err("reading mtime"))?;
            (
                i64::try_from(t).map_err(|_| err!("mtime {t} is out of range"))?,
                0,
            )
        }
    };
    Ok(Meta {
        mode: h.mode().map_err(io_err("reading mode"))? & 0o7777,
        uid: id(h.uid(), "uid")?,
        gid: id(h.gid(), "gid")?,
        mtime,
        xattrs,
    })
}

/// A PAX time ("1700000000.5", "-1.25") as seconds and nanoseconds.
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = match digits.is_empty() {
        true => 0,
        false => format!("{digits:0<9}").parse().ok()?,
    };
    Some(match (neg, nanos) {
        (false, n) => (secs, n),
        (true, 0) => (-secs, 0),
        (true, n) => (-secs - 1, 1_000_000_000 - n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"12.0000000019"), Some((12, 1)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn overlay_xattrs_are_not_restored() {
        assert!(!xattr_allowed(b"trusted.overlay.opaque"));
        assert!(!xattr_allowed(b"user.overlay.redirect"));
        assert!(xattr_allowed(b"security.capability"));
        assert!(xattr_allowed(b"user.mime_type"));
    }
}
