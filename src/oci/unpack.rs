//! STAND-IN, to be replaced: the real layer unpacker is written by another helper (as
//! `src/oci/unpack/`). This minimal version keeps the agreed signatures so that the pull
//! pipeline builds and its end-to-end tests run on this branch; on merge, delete this file
//! and keep the real module.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use crate::{err, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        let mt = mt.split(';').next().unwrap_or("").trim();
        if mt.ends_with("+gzip") || mt.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if mt.ends_with("+zstd") || mt.ends_with(".tar.zstd") {
            Some(Compression::Zstd)
        } else if mt.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

pub fn decompress<'a>(r: impl Read + 'a, c: Compression) -> Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(r)
                .map_err(|e| err!("reading zstd frame: {e}"))?,
        ),
    })
}

pub struct UnpackOptions {
    pub privileged: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LayerStats {
    pub entries: u64,
    pub bytes: u64,
}

pub fn apply_layer(tar: impl Read, rootfs: &Path, opts: &UnpackOptions) -> Result<LayerStats> {
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(opts.privileged);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    let mut stats = LayerStats::default();
    for entry in archive.entries().map_err(|e| err!("reading layer: {e}"))? {
        let mut entry = entry.map_err(|e| err!("reading layer: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| err!("reading layer entry name: {e}"))?
            .into_owned();
        let rel = confine(&path)?;
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == ".wh..wh..opq" {
            let dir = rootfs.join(rel.parent().unwrap_or(Path::new("")));
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    remove_any(&e.path());
                }
            }
        } else if let Some(target) = name.strip_prefix(".wh.") {
            remove_any(&rootfs.join(rel.with_file_name(target)));
        } else {
            let dest = rootfs.join(&rel);
            // A new entry replaces whatever was there (a file replacing a directory too).
            if let Ok(m) = dest.symlink_metadata() {
                if !(m.is_dir() && entry.header().entry_type().is_dir()) {
                    remove_any(&dest);
                }
            }
            stats.bytes += entry.header().size().unwrap_or(0);
            if !entry
                .unpack_in(rootfs)
                .map_err(|e| err!("unpacking {}: {e}", path.display()))?
            {
                return Err(err!("layer entry {} escapes the rootfs", path.display()));
            }
        }
        stats.entries += 1;
    }
    // Drain the end-of-archive padding so callers verifying the stream see all of it.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| err!("reading layer: {e}"))?;
    Ok(stats)
}

fn confine(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            _ => return Err(err!("layer entry {} escapes the rootfs", p.display())),
        }
    }
    Ok(out)
}

fn remove_any(p: &Path) {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}
