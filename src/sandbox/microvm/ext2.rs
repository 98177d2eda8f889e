//! An ext2 image writer: turns a host directory tree into a filesystem image the guest kernel
//! mounts from a virtio-blk disk (regular files, directories, symlinks, hard links, device
//! nodes, fifos; owner, mode and mtime preserved; no xattrs). Revision 1, 4 KiB blocks,
//! 128-byte inodes, `filetype` directory entries; every block group carries a superblock and
//! descriptor-table copy (no `sparse_super`), which keeps the layout rule trivial.
//!
//! Hand-written rather than a crate or `mke2fs -d`: no maintained Rust crate writes ext2, the
//! static binary must not depend on e2fsprogs being installed, and this writer needs only
//! the little of the format a read-only image and an empty layer use (it also images a tree
//! faster than `mke2fs -d`: see scripts/bench-vm.sh).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::{err, Context, Result};

const BLOCK: u64 = 4096;
const INODE_SIZE: u64 = 128;
const BLOCKS_PER_GROUP: u64 = BLOCK * 8;
const ROOT_INO: u32 = 2;
const LOST_FOUND_INO: u32 = 11;
const FIRST_INO: u32 = 11;
const PTRS_PER_BLOCK: u64 = BLOCK / 4;
const DIRECT: u64 = 12;
/// Largest copy step when writing file contents.
const RUN: usize = 1 << 20;
/// Largest regular file without the `large_file` feature.
const MAX_FILE: u64 = (1 << 31) - 1;

const FT_REG: u8 = 1;
const FT_DIR: u8 = 2;
const FT_CHR: u8 = 3;
const FT_BLK: u8 = 4;
const FT_FIFO: u8 = 5;
const FT_SOCK: u8 = 6;
const FT_SYMLINK: u8 = 7;

enum Content {
    File(PathBuf),
    Dir(Vec<(Vec<u8>, u32)>),
    Symlink(Vec<u8>),
    Device(u64),
    None,
}

struct Node {
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: u32,
    size: u64,
    links: u16,
    content: Content,
    /// Data blocks, then the indirect blocks that map them.
    blocks: Vec<u32>,
    meta_blocks: Vec<u32>,
}

fn file_type(mode: u16) -> u8 {
    match u32::from(mode) & libc::S_IFMT {
        libc::S_IFREG => FT_REG,
        libc::S_IFDIR => FT_DIR,
        libc::S_IFCHR => FT_CHR,
        libc::S_IFBLK => FT_BLK,
        libc::S_IFIFO => FT_FIFO,
        libc::S_IFSOCK => FT_SOCK,
        _ => FT_SYMLINK,
    }
}

/// Blocks needed to map `n` data blocks (single and double indirect).
fn indirect_blocks(n: u64) -> Result<u64> {
    if n <= DIRECT {
        return Ok(0);
    }
    let rest = n - DIRECT;
    if rest <= PTRS_PER_BLOCK {
        return Ok(1);
    }
    let rest = rest - PTRS_PER_BLOCK;
    if rest > PTRS_PER_BLOCK * PTRS_PER_BLOCK {
        return Err(err!("file too large for ext2 double-indirect mapping"));
    }
    Ok(2 + rest.div_ceil(PTRS_PER_BLOCK))
}

/// Serialized directory entries, packed into blocks (an entry never crosses a block).
fn dir_bytes(entries: &[(Vec<u8>, u32, u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut block_start = 0usize;
    let mut last: Option<usize> = None;
    for (name, ino, ft) in entries {
        let len = (8 + name.len()).div_ceil(4) * 4;
        if out.len() + len > block_start + BLOCK as usize {
            // Stretch the previous entry to the end of its block and start a new one.
            if let Some(l) = last {
                let rec = (block_start + BLOCK as usize - l) as u16;
                out[l + 4..l + 6].copy_from_slice(&rec.to_le_bytes());
            }
            out.resize(block_start + BLOCK as usize, 0);
            block_start = out.len();
        }
        last = Some(out.len());
        out.extend_from_slice(&ino.to_le_bytes());
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.push(name.len() as u8);
        out.push(*ft);
        out.extend_from_slice(name);
        out.resize(out.len().div_ceil(4) * 4, 0);
    }
    if let Some(l) = last {
        let rec = (block_start + BLOCK as usize - l) as u16;
        out[l + 4..l + 6].copy_from_slice(&rec.to_le_bytes());
    }
    out.resize(block_start + BLOCK as usize, 0);
    out
}

struct Tree {
    nodes: Vec<Node>, // index = inode number - 1
    by_host_inode: HashMap<(u64, u64), u32>,
}

impl Tree {
    fn add(&mut self, node: Node) -> u32 {
        self.nodes.push(node);
        self.nodes.len() as u32
    }

    fn node(&mut self, ino: u32) -> &mut Node {
        &mut self.nodes[ino as usize - 1]
    }

    /// Add the directory at `path` (already allocated as `ino`) and everything below it.
    fn walk(&mut self, path: &Path, ino: u32, parent: u32) -> Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("reading directory {}", path.display()))?
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("reading directory {}", path.display()))?;
        names.sort_by_key(|e| e.file_name());
        let mut entries = vec![(b".".to_vec(), ino), (b"..".to_vec(), parent)];
        let mut subdirs = 0u16;
        for e in names {
            let p = e.path();
            let name = std::os::unix::ffi::OsStrExt::as_bytes(e.file_name().as_os_str()).to_vec();
            if name.len() > 255 {
                return Err(err!("{}: name longer than 255 bytes", p.display()));
            }
            let md = std::fs::symlink_metadata(&p)
                .with_context(|| format!("reading {}", p.display()))?;
            let ft = md.file_type();
            if !ft.is_dir() && md.nlink() > 1 {
                if let Some(&existing) = self.by_host_inode.get(&(md.dev(), md.ino())) {
                    self.node(existing).links += 1;
                    entries.push((name, existing));
                    continue;
                }
            }
            let content = if ft.is_dir() {
                Content::Dir(Vec::new())
            } else if ft.is_file() {
                if md.len() > MAX_FILE {
                    return Err(err!(
                        "{}: larger than 2 GiB, not supported by this ext2 writer",
                        p.display()
                    ));
                }
                Content::File(p.clone())
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&p)
                    .with_context(|| format!("reading link {}", p.display()))?;
                Content::Symlink(
                    std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec(),
                )
            } else if ft.is_char_device() || ft.is_block_device() {
                Content::Device(md.rdev())
            } else {
                Content::None
            };
            let size = match &content {
                Content::File(_) => md.len(),
                Content::Symlink(t) => t.len() as u64,
                _ => 0,
            };
            let child = self.add(Node {
                mode: md.mode() as u16,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime().clamp(0, u32::MAX as i64) as u32,
                size,
                links: if ft.is_dir() { 2 } else { 1 },
                content,
                blocks: Vec::new(),
                meta_blocks: Vec::new(),
            });
            if ft.is_dir() {
                subdirs += 1;
                self.walk(&p, child, ino)?;
            } else if md.nlink() > 1 {
                self.by_host_inode.insert((md.dev(), md.ino()), child);
            }
            entries.push((name, child));
        }
        let n = self.node(ino);
        n.links += subdirs;
        n.content = Content::Dir(entries);
        Ok(())
    }
}

/// Geometry derived from how many blocks and inodes the tree needs.
struct Layout {
    blocks: u64,
    groups: u64,
    inodes_per_group: u64,
    gdt_blocks: u64,
    itable_blocks: u64,
}

impl Layout {
    fn group_start(&self, g: u64) -> u64 {
        g * BLOCKS_PER_GROUP
    }
    /// Superblock copy, descriptor table copy, two bitmaps, inode table.
    fn overhead(&self) -> u64 {
        1 + self.gdt_blocks + 2 + self.itable_blocks
    }
    fn group_blocks(&self, g: u64) -> u64 {
        (self.blocks - self.group_start(g)).min(BLOCKS_PER_GROUP)
    }

    fn plan(data_blocks: u64, inodes: u64) -> Layout {
        let mut blocks = data_blocks + 16;
        loop {
            let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
            let per_block = BLOCK / INODE_SIZE;
            let inodes_per_group = inodes.div_ceil(groups).div_ceil(per_block).max(1) * per_block;
            let l = Layout {
                blocks,
                groups,
                inodes_per_group,
                gdt_blocks: (groups * 32).div_ceil(BLOCK),
                itable_blocks: inodes_per_group * INODE_SIZE / BLOCK,
            };
            // Every group must hold its metadata plus some data; the total must cover the data.
            let last_room = l.group_blocks(groups - 1);
            let need = data_blocks + groups * l.overhead();
            if need <= blocks && last_room >= l.overhead() + 16 {
                return l;
            }
            blocks = need.max(blocks + 1)
                + if last_room < l.overhead() + 16 {
                    l.overhead() + 16
                } else {
                    0
                };
        }
    }
}

/// Write an ext2 image of `root` to `image`, with about `spare_bytes` of free space and
/// `spare_inodes` free inodes for the guest to use. The image is written beside `image` and
/// renamed into place, so a failure leaves no partial image behind.
pub fn build_image(
    root: &Path,
    image: &Path,
    label: &str,
    spare_bytes: u64,
    spare_inodes: u64,
) -> Result<()> {
    let mut partial = image.as_os_str().to_owned();
    partial.push(format!(".partial-{}", std::process::id()));
    let partial = PathBuf::from(partial);
    let result = write_image(root, &partial, label, spare_bytes, spare_inodes).and_then(|_| {
        std::fs::rename(&partial, image)
            .with_context(|| format!("renaming into {}", image.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn write_image(
    root: &Path,
    image: &Path,
    label: &str,
    spare_bytes: u64,
    spare_inodes: u64,
) -> Result<()> {
    let md = std::fs::metadata(root).with_context(|| format!("reading {}", root.display()))?;
    if !md.is_dir() {
        return Err(err!("{} is not a directory", root.display()));
    }
    let blank = |mode: u16| Node {
        mode,
        uid: 0,
        gid: 0,
        mtime: 0,
        size: 0,
        links: 1,
        content: Content::None,
        blocks: Vec::new(),
        meta_blocks: Vec::new(),
    };
    let mut tree = Tree {
        nodes: Vec::new(),
        by_host_inode: HashMap::new(),
    };
    // Inodes 1..=10 are reserved; 2 is the root; 11 is lost+found.
    for _ in 1..=10 {
        tree.add(blank(0));
    }
    let root_node = tree.node(ROOT_INO);
    *root_node = Node {
        mode: md.mode() as u16,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime().clamp(0, u32::MAX as i64) as u32,
        links: 3, // ".", its own "..", lost+found's ".."
        ..blank(0)
    };
    let lf = tree.add(Node {
        mode: (libc::S_IFDIR | 0o700) as u16,
        links: 2,
        content: Content::Dir(vec![
            (b".".to_vec(), LOST_FOUND_INO),
            (b"..".to_vec(), ROOT_INO),
        ]),
        ..blank(0)
    });
    debug_assert_eq!(lf, LOST_FOUND_INO);
    tree.walk(root, ROOT_INO, ROOT_INO)?;
    if let Content::Dir(entries) = &mut tree.node(ROOT_INO).content {
        entries.insert(2, (b"lost+found".to_vec(), LOST_FOUND_INO));
    }

    // Directory contents (now that every inode number is known) and block counts.
    let types: Vec<u16> = tree.nodes.iter().map(|n| n.mode).collect();
    let mut dirs: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut data_blocks = 0u64;
    for (i, n) in tree.nodes.iter_mut().enumerate() {
        let count = match &n.content {
            Content::Dir(entries) => {
                let typed: Vec<_> = entries
                    .iter()
                    .map(|(name, ino)| (name.clone(), *ino, file_type(types[*ino as usize - 1])))
                    .collect();
                let bytes = dir_bytes(&typed);
                n.size = bytes.len() as u64;
                let c = n.size / BLOCK;
                dirs.insert(i as u32 + 1, bytes);
                c
            }
            Content::File(_) => n.size.div_ceil(BLOCK),
            Content::Symlink(t) if t.len() >= 60 => 1,
            _ => 0,
        };
        data_blocks += count + indirect_blocks(count)?;
    }
    let inodes = tree.nodes.len() as u64 + spare_inodes;
    let l = Layout::plan(data_blocks + spare_bytes.div_ceil(BLOCK), inodes);

    // Allocate data blocks group by group, after each group's metadata.
    let mut next = (0u64, l.overhead());
    let mut alloc = || -> u32 {
        if next.1 >= l.group_blocks(next.0) {
            next = (next.0 + 1, l.overhead());
        }
        let b = l.group_start(next.0) + next.1;
        next.1 += 1;
        b as u32
    };
    for n in tree.nodes.iter_mut() {
        let count = match &n.content {
            Content::Dir(_) => n.size / BLOCK,
            Content::File(_) => n.size.div_ceil(BLOCK),
            Content::Symlink(t) if t.len() >= 60 => 1,
            _ => 0,
        };
        n.blocks = (0..count).map(|_| alloc()).collect();
        n.meta_blocks = (0..indirect_blocks(count)?).map(|_| alloc()).collect();
    }
    let used_blocks = next;

    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)
        .with_context(|| format!("creating {}", image.display()))?;
    out.set_len(l.blocks * BLOCK)
        .with_context(|| format!("sizing {}", image.display()))?;
    let write_at = |data: &[u8], off: u64| {
        out.write_all_at(data, off)
            .with_context(|| format!("writing {}", image.display()))
    };

    // Contents, inode table entries, block maps.
    let mut itables: Vec<Vec<u8>> = (0..l.groups)
        .map(|_| vec![0u8; (l.itable_blocks * BLOCK) as usize])
        .collect();
    let mut chunk = vec![0u8; RUN];
    for (i, n) in tree.nodes.iter().enumerate() {
        let ino = i as u32 + 1;
        match &n.content {
            Content::File(p) => {
                let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
                // Copy runs of consecutive blocks (files are laid out contiguously except at
                // group boundaries) in steps of up to `RUN` bytes.
                let mut k = 0usize;
                while k < n.blocks.len() {
                    let mut run = 1usize;
                    while k + run < n.blocks.len()
                        && run < RUN / BLOCK as usize
                        && n.blocks[k + run] == n.blocks[k] + run as u32
                    {
                        run += 1;
                    }
                    let off = k as u64 * BLOCK;
                    let want = (n.size - off).min(run as u64 * BLOCK) as usize;
                    f.read_exact_at(&mut chunk[..want], off).with_context(|| {
                        format!("reading {} (changed while imaging?)", p.display())
                    })?;
                    write_at(&chunk[..want], u64::from(n.blocks[k]) * BLOCK)?;
                    k += run;
                }
            }
            Content::Dir(_) => {
                let bytes = &dirs[&ino];
                for (k, b) in n.blocks.iter().enumerate() {
                    write_at(
                        &bytes[k * BLOCK as usize..(k + 1) * BLOCK as usize],
                        u64::from(*b) * BLOCK,
                    )?;
                }
            }
            Content::Symlink(t) if t.len() >= 60 => write_at(t, u64::from(n.blocks[0]) * BLOCK)?,
            _ => {}
        }
        let mut iblock = [0u32; 15];
        match &n.content {
            Content::Symlink(t) if t.len() < 60 => {
                let mut raw = [0u8; 60];
                raw[..t.len()].copy_from_slice(t);
                for (k, w) in iblock.iter_mut().enumerate() {
                    *w = u32::from_le_bytes(raw[k * 4..k * 4 + 4].try_into().unwrap());
                }
            }
            Content::Device(rdev) => {
                let (major, minor) = (libc::major(*rdev) as u32, libc::minor(*rdev) as u32);
                if major < 256 && minor < 256 {
                    iblock[0] = (major << 8) | minor;
                } else {
                    iblock[1] = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
                }
            }
            _ => {
                for (k, b) in n.blocks.iter().take(DIRECT as usize).enumerate() {
                    iblock[k] = *b;
                }
                let mut meta = n.meta_blocks.iter();
                let rest = n.blocks.get(DIRECT as usize..).unwrap_or(&[]);
                if !rest.is_empty() {
                    let single = *meta.next().unwrap();
                    iblock[12] = single;
                    let (first, more) = rest.split_at(rest.len().min(PTRS_PER_BLOCK as usize));
                    write_at(&pointers(first), u64::from(single) * BLOCK)?;
                    if !more.is_empty() {
                        let double = *meta.next().unwrap();
                        iblock[13] = double;
                        let mut level1 = Vec::new();
                        for group in more.chunks(PTRS_PER_BLOCK as usize) {
                            let ind = *meta.next().unwrap();
                            write_at(&pointers(group), u64::from(ind) * BLOCK)?;
                            level1.push(ind);
                        }
                        write_at(&pointers(&level1), u64::from(double) * BLOCK)?;
                    }
                }
            }
        }
        if n.mode == 0 {
            continue; // reserved inode: left zeroed
        }
        let g = (u64::from(ino) - 1) / l.inodes_per_group;
        let at = (((u64::from(ino) - 1) % l.inodes_per_group) * INODE_SIZE) as usize;
        let e = &mut itables[g as usize][at..at + INODE_SIZE as usize];
        let sectors = ((n.blocks.len() + n.meta_blocks.len()) as u64 * BLOCK / 512) as u32;
        e[0..2].copy_from_slice(&n.mode.to_le_bytes());
        e[2..4].copy_from_slice(&(n.uid as u16).to_le_bytes());
        e[4..8].copy_from_slice(&(n.size as u32).to_le_bytes());
        for off in [8, 12, 16] {
            e[off..off + 4].copy_from_slice(&n.mtime.to_le_bytes());
        }
        e[24..26].copy_from_slice(&(n.gid as u16).to_le_bytes());
        e[26..28].copy_from_slice(&n.links.to_le_bytes());
        e[28..32].copy_from_slice(&sectors.to_le_bytes());
        for (k, w) in iblock.iter().enumerate() {
            e[40 + 4 * k..44 + 4 * k].copy_from_slice(&w.to_le_bytes());
        }
        e[120..122].copy_from_slice(&((n.uid >> 16) as u16).to_le_bytes());
        e[122..124].copy_from_slice(&((n.gid >> 16) as u16).to_le_bytes());
    }

    // Bitmaps, descriptors and superblocks.
    let total_inodes = l.groups * l.inodes_per_group;
    if (tree.nodes.len() as u64) > total_inodes {
        return Err(err!(
            "ext2 layout error: {} inodes do not fit",
            tree.nodes.len()
        ));
    }
    let mut gdt = vec![0u8; (l.gdt_blocks * BLOCK) as usize];
    let (mut free_blocks_total, mut free_inodes_total) = (0u64, 0u64);
    for g in 0..l.groups {
        let start = l.group_start(g);
        let in_group = l.group_blocks(g);
        let used_in_group = if g < used_blocks.0 {
            in_group
        } else if g == used_blocks.0 {
            used_blocks.1
        } else {
            l.overhead()
        };
        let mut bbitmap = vec![0u8; BLOCK as usize];
        for b in 0..BLOCK * 8 {
            if b < used_in_group || b >= in_group {
                bbitmap[(b / 8) as usize] |= 1 << (b % 8);
            }
        }
        let first_ino = g * l.inodes_per_group;
        let used_inodes = (tree.nodes.len() as u64)
            .saturating_sub(first_ino)
            .min(l.inodes_per_group);
        let mut ibitmap = vec![0u8; BLOCK as usize];
        for i in 0..BLOCK * 8 {
            if i < used_inodes || i >= l.inodes_per_group {
                ibitmap[(i / 8) as usize] |= 1 << (i % 8);
            }
        }
        let dirs_in_group = tree
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| {
                (*i as u64) / l.inodes_per_group == g && file_type(n.mode) == FT_DIR && n.mode != 0
            })
            .count() as u16;
        let bb = start + 1 + l.gdt_blocks;
        write_at(&bbitmap, bb * BLOCK)?;
        write_at(&ibitmap, (bb + 1) * BLOCK)?;
        write_at(&itables[g as usize], (bb + 2) * BLOCK)?;
        let free_b = in_group - used_in_group;
        let free_i = l.inodes_per_group - used_inodes;
        free_blocks_total += free_b;
        free_inodes_total += free_i;
        let d = &mut gdt[(g * 32) as usize..(g * 32 + 32) as usize];
        d[0..4].copy_from_slice(&(bb as u32).to_le_bytes());
        d[4..8].copy_from_slice(&((bb + 1) as u32).to_le_bytes());
        d[8..12].copy_from_slice(&((bb + 2) as u32).to_le_bytes());
        d[12..14].copy_from_slice(&(free_b as u16).to_le_bytes());
        d[14..16].copy_from_slice(&(free_i as u16).to_le_bytes());
        d[16..18].copy_from_slice(&dirs_in_group.to_le_bytes());
    }
    let mut sb = vec![0u8; 1024];
    let put32 = |sb: &mut Vec<u8>, off: usize, v: u64| {
        sb[off..off + 4].copy_from_slice(&(v as u32).to_le_bytes())
    };
    put32(&mut sb, 0, total_inodes);
    put32(&mut sb, 4, l.blocks);
    put32(&mut sb, 12, free_blocks_total);
    put32(&mut sb, 16, free_inodes_total);
    put32(&mut sb, 20, 0); // first data block
    put32(&mut sb, 24, 2); // log2(block size) - 10
    put32(&mut sb, 28, 2);
    put32(&mut sb, 32, BLOCKS_PER_GROUP);
    put32(&mut sb, 36, BLOCKS_PER_GROUP);
    put32(&mut sb, 40, l.inodes_per_group);
    sb[54..56].copy_from_slice(&0xffffu16.to_le_bytes()); // no forced checks by mount count
    sb[56..58].copy_from_slice(&0xef53u16.to_le_bytes());
    sb[58..60].copy_from_slice(&1u16.to_le_bytes()); // clean
    sb[60..62].copy_from_slice(&1u16.to_le_bytes()); // errors: continue
    put32(&mut sb, 76, 1); // revision 1 (dynamic)
    put32(&mut sb, 84, u64::from(FIRST_INO));
    sb[88..90].copy_from_slice(&(INODE_SIZE as u16).to_le_bytes());
    put32(&mut sb, 96, 0x2); // incompat: filetype
                             // A stable UUID derived from the label and geometry: identical trees give identical images.
    use sha2::Digest;
    let uuid = sha2::Sha256::digest(format!("{label}/{}/{}", l.blocks, total_inodes));
    sb[104..120].copy_from_slice(&uuid[..16]);
    let lb = label.as_bytes();
    sb[120..120 + lb.len().min(16)].copy_from_slice(&lb[..lb.len().min(16)]);
    for g in 0..l.groups {
        sb[90..92].copy_from_slice(&(g as u16).to_le_bytes());
        let start = l.group_start(g) * BLOCK;
        write_at(&sb, if g == 0 { 1024 } else { start })?;
        write_at(&gdt, start + BLOCK)?;
    }
    out.sync_data()
        .with_context(|| format!("syncing {}", image.display()))?;
    Ok(())
}

fn pointers(blocks: &[u32]) -> Vec<u8> {
    let mut v = vec![0u8; BLOCK as usize];
    for (i, b) in blocks.iter().enumerate() {
        v[i * 4..i * 4 + 4].copy_from_slice(&b.to_le_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_entries_never_cross_blocks() {
        let names: Vec<_> = (0..300)
            .map(|i| {
                (
                    format!("file-with-a-longish-name-{i:04}").into_bytes(),
                    12 + i,
                    FT_REG,
                )
            })
            .collect();
        let bytes = dir_bytes(&names);
        assert_eq!(bytes.len() % BLOCK as usize, 0);
        let mut seen = 0;
        for block in bytes.chunks(BLOCK as usize) {
            let mut off = 0usize;
            while off < block.len() {
                let rec = u16::from_le_bytes([block[off + 4], block[off + 5]]) as usize;
                assert!(rec >= 8 && off + rec <= block.len());
                seen += 1;
                off += rec;
            }
        }
        assert_eq!(seen, 300);
    }

    #[test]
    fn indirect_block_counts() {
        assert_eq!(indirect_blocks(12).unwrap(), 0);
        assert_eq!(indirect_blocks(13).unwrap(), 1);
        assert_eq!(indirect_blocks(12 + 1024).unwrap(), 1);
        assert_eq!(indirect_blocks(12 + 1025).unwrap(), 3);
    }
}
