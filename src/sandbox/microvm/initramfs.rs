//! The guest's initramfs: a cpio "newc" archive (the format the kernel unpacks into its rootfs)
//! holding iii itself as `/init` plus the directories the guest bring-up mounts on
//! (`crate::init::guest`).
//!
//! newc: each entry is the ASCII magic `070701`, thirteen 8-digit hex fields (ino, mode, uid,
//! gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check), the
//! NUL-terminated name padded to a multiple of 4, then the data padded to a multiple of 4. The
//! archive ends with an entry named `TRAILER!!!`.
//!
//! Hand-written rather than a crate: the format is a dozen hex fields per entry, the archive
//! holds a handful of entries, and no crate iii already builds with writes it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{err, Context, Result};

/// Directories the guest's bring-up needs before anything is mounted.
pub const GUEST_DIRS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "mnt",
    "mnt/lower",
    "mnt/rw",
    "newroot",
];

/// Writes a newc archive entry by entry; [`CpioWriter::finish`] adds the trailer.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> CpioWriter<W> {
        CpioWriter {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    pub fn dir(&mut self, name: &str, perm: u32) -> Result<()> {
        self.entry(
            name,
            libc::S_IFDIR | (perm & 0o7777),
            (0, 0),
            0,
            &mut std::io::empty(),
        )
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        self.entry(
            name,
            libc::S_IFCHR | (perm & 0o7777),
            (major, minor),
            0,
            &mut std::io::empty(),
        )
    }

    /// A regular file of exactly `size` bytes read from `data`.
    pub fn file(&mut self, name: &str, perm: u32, size: u64, data: &mut dyn Read) -> Result<()> {
        self.entry(name, libc::S_IFREG | (perm & 0o7777), (0, 0), size, data)
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        rdev: (u32, u32),
        size: u64,
        data: &mut dyn Read,
    ) -> Result<()> {
        if name.is_empty() || name.starts_with('/') || name.contains('\0') {
            return Err(err!("initramfs: bad entry name {name:?}"));
        }
        let size32 =
            u32::try_from(size).map_err(|_| err!("initramfs: {name} is larger than 4 GiB"))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & libc::S_IFMT == libc::S_IFDIR {
            2
        } else {
            1
        };
        self.header(ino, mode, nlink, size32, rdev, name)?;
        let copied = std::io::copy(&mut data.take(size), &mut self.out)
            .with_context(|| format!("initramfs: writing {name}"))?;
        if copied != size {
            return Err(err!(
                "initramfs: {name} ended after {copied} of {size} bytes"
            ));
        }
        self.written += size;
        self.pad(4)
    }

    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
        rdev: (u32, u32),
        name: &str,
    ) -> Result<()> {
        let namesize = name.len() as u32 + 1;
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut h = Vec::with_capacity(110 + name.len() + 4);
        h.extend_from_slice(b"070701");
        for f in fields {
            h.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        h.extend_from_slice(name.as_bytes());
        h.push(0);
        self.write(&h)?;
        self.pad(4)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).context("initramfs: writing")?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, to: u64) -> Result<()> {
        let n = (to - self.written % to) % to;
        self.write(&[0u8; 512][..n as usize])
    }

    /// Write the trailer (and pad the archive to 512 bytes, as cpio does); returns the sink.
    pub fn finish(mut self) -> Result<W> {
        self.header(0, 0, 1, 0, (0, 0), "TRAILER!!!")?;
        self.pad(512)?;
        self.out.flush().context("initramfs: flushing")?;
        Ok(self.out)
    }
}

/// Whether the ELF file at `path` is statically linked (no `PT_INTERP` program header): only
/// such a binary can run as the guest's `/init`, where no dynamic loader exists.
pub fn is_static_elf(path: &Path) -> Result<bool> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh)
        .with_context(|| format!("reading the ELF header of {}", path.display()))?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return Err(err!("{} is not a 64-bit little-endian ELF", path.display()));
    }
    let phoff = u64::from_le_bytes(eh[32..40].try_into().expect("8 bytes"));
    let phentsize = u16::from_le_bytes([eh[54], eh[55]]) as u64;
    let phnum = u16::from_le_bytes([eh[56], eh[57]]) as u64;
    if phentsize < 4 {
        return Err(err!("{}: bad ELF program header size", path.display()));
    }
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(phoff))
        .and_then(|_| f.read_exact(&mut ph))
        .with_context(|| format!("reading the ELF program headers of {}", path.display()))?;
    const PT_INTERP: u32 = 3;
    Ok(!ph
        .chunks(phentsize as usize)
        .any(|p| u32::from_le_bytes(p[..4].try_into().expect("4 bytes")) == PT_INTERP))
}

/// Write the guest initramfs to `out` (through a temporary file renamed into place): the
/// directories of [`GUEST_DIRS`], `/dev/console`, and `init_exe` as `/init`. `init_exe` must be
/// a static binary (see [`is_static_elf`]).
pub fn build(init_exe: &Path, out: &Path) -> Result<()> {
    if !is_static_elf(init_exe)? {
        return Err(err!(
            "vm: {} is dynamically linked and cannot be the guest's init; use a static iii \
             (cargo build --release --target x86_64-unknown-linux-musl)",
            init_exe.display()
        ));
    }
    let mut exe =
        std::fs::File::open(init_exe).with_context(|| format!("opening {}", init_exe.display()))?;
    let size = exe
        .metadata()
        .with_context(|| format!("reading {}", init_exe.display()))?
        .len();
    let mut partial = out.as_os_str().to_owned();
    partial.push(format!(".partial-{}", std::process::id()));
    let partial = PathBuf::from(partial);
    let result = (|| {
        let f = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut w = CpioWriter::new(std::io::BufWriter::new(f));
        for d in GUEST_DIRS {
            w.dir(d, 0o755)?;
        }
        // The kernel opens /dev/console for init's stdio before anything is mounted.
        w.char_dev("dev/console", 0o600, 5, 1)?;
        w.file("init", 0o755, size, &mut exe)?;
        w.finish()?
            .into_inner()
            .map_err(|e| err!("writing {}: {}", partial.display(), e.error()))?
            .sync_all()
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, out).with_context(|| format!("renaming into {}", out.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed entry: (name, mode, rdev, data).
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    fn hex(b: &[u8]) -> u32 {
        u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap()
    }

    /// A small newc reader, independent of the writer: returns every entry up to and
    /// including the trailer, and checks alignment as it goes.
    fn parse(a: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut off = 0;
        loop {
            assert_eq!(off % 4, 0, "entry at {off} is not 4-aligned");
            assert_eq!(&a[off..off + 6], b"070701", "magic at {off}");
            let field = |i: usize| hex(&a[off + 6 + i * 8..off + 14 + i * 8]);
            let (mode, size, rdev, namesize) =
                (field(1), field(6), (field(9), field(10)), field(11));
            let name_at = off + 110;
            let name = &a[name_at..name_at + namesize as usize];
            assert_eq!(*name.last().unwrap(), 0, "name is NUL-terminated");
            let name = String::from_utf8(name[..name.len() - 1].to_vec()).unwrap();
            let data_at = (name_at + namesize as usize).next_multiple_of(4);
            let data = a[data_at..data_at + size as usize].to_vec();
            off = (data_at + size as usize).next_multiple_of(4);
            let done = name == "TRAILER!!!";
            out.push((name, mode, rdev, data));
            if done {
                assert_eq!(a.len() % 512, 0, "archive is padded to 512 bytes");
                assert!(
                    a[off..].iter().all(|&b| b == 0),
                    "only padding after the trailer"
                );
                return out;
            }
        }
    }

    #[test]
    fn writer_round_trips_names_modes_sizes_and_trailer() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("dev", 0o755).unwrap();
        w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        // Sizes around the 4-byte padding.
        for n in 0..6u8 {
            let data: Vec<u8> = (0..n).collect();
            w.file(&format!("f{n}"), 0o644, n as u64, &mut &data[..])
                .unwrap();
        }
        let a = w.finish().unwrap();
        let e = parse(&a);
        assert_eq!(e.len(), 2 + 6 + 1);
        assert_eq!(e[0].0, "dev");
        assert_eq!(e[0].1, libc::S_IFDIR | 0o755);
        assert_eq!(e[1].0, "dev/console");
        assert_eq!(e[1].1, libc::S_IFCHR | 0o600);
        assert_eq!(e[1].2, (5, 1));
        for n in 0..6u8 {
            let (name, mode, _, data) = &e[2 + n as usize];
            assert_eq!(name, &format!("f{n}"));
            assert_eq!(*mode, libc::S_IFREG | 0o644);
            assert_eq!(data, &(0..n).collect::<Vec<u8>>());
        }
        assert_eq!(e.last().unwrap().0, "TRAILER!!!");
    }

    #[test]
    fn short_data_and_bad_names_are_refused() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("x", 0o644, 10, &mut &b"abc"[..]).is_err());
        assert!(w.dir("/abs", 0o755).is_err());
        assert!(w.dir("", 0o755).is_err());
    }

    #[test]
    fn elf_linkage_is_detected() {
        // The test binary itself is a dynamically linked ELF on glibc hosts; /bin/busybox
        // (busybox-static) is static.
        assert!(is_static_elf(Path::new("/proc/self/exe")).is_ok());
        if Path::new("/bin/busybox").exists() {
            assert!(is_static_elf(Path::new("/bin/busybox")).unwrap());
        }
        if Path::new("/bin/ls").exists() {
            assert!(!is_static_elf(Path::new("/bin/ls")).unwrap());
        }
        assert!(is_static_elf(Path::new("/etc/hostname")).is_err());
    }
}
