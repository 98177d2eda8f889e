//! Keeping every write inside the rootfs.
//!
//! Entry names are normalised lexically (a leading `/` dropped, `.` skipped, `..` popped,
//! an escaping `..` refused), and the parent directory of each entry is then opened one
//! component at a time from a rootfs fd with `O_NOFOLLOW | O_DIRECTORY`. The kernel thus
//! never resolves a symlink or a `..` on our behalf: a symlink planted by this or an earlier
//! layer (`a -> /etc`, then `a/passwd`) makes the walk fail instead of leading outside.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::sys;

/// The components of an entry name inside the rootfs, or `None` when a `..` climbs above
/// it. The empty list is the rootfs itself.
pub(super) fn normalize(name: &[u8]) -> Option<Vec<&[u8]>> {
    let mut comps: Vec<&[u8]> = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                comps.pop()?;
            }
            c => comps.push(c),
        }
    }
    Some(comps)
}

/// Joins components back into the canonical relative path ("" for the rootfs).
pub(super) fn join(comps: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(comps.iter().map(|c| c.len() + 1).sum());
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    out
}

/// Why a directory could not be reached; the count is how many leading components (of
/// the list given to [`Walker::dir`]) name the offending path.
#[derive(Debug)]
pub(super) enum WalkError {
    Symlink(usize),
    NotDir(usize),
    Missing(usize),
    Io(usize, io::Error),
}

impl WalkError {
    /// One phrase for an error message, naming the path that stopped the walk.
    pub(super) fn describe(&self, comps: &[&[u8]]) -> String {
        let at = |n: usize| String::from_utf8_lossy(&join(&comps[..n])).into_owned();
        match self {
            WalkError::Symlink(n) => {
                format!("'{}' is a symlink (refusing to write through it)", at(*n))
            }
            WalkError::NotDir(n) => format!("'{}' is not a directory", at(*n)),
            WalkError::Missing(n) => format!("'{}' does not exist", at(*n)),
            WalkError::Io(n, e) => format!("opening '{}': {e}", at(*n)),
        }
    }
}

/// Opens directories under the rootfs without following symlinks, remembering the chain
/// of directories opened last: tar entries come grouped by directory, so most entries
/// reuse every fd of the previous one and cost no extra syscalls.
pub(super) struct Walker {
    root: OwnedFd,
    /// `chain[i]` is the directory `comps[..=i]` of the last walk.
    chain: Vec<(Vec<u8>, OwnedFd)>,
    /// Without root, a directory a lower layer made read-only (0555) cannot be written
    /// into: such directories get owner rwx while the layer is applied, and are listed
    /// here (path, original mode) to be put back at the end. `None` when privileged.
    made_writable: Option<Vec<(Vec<u8>, u32)>>,
}

impl Walker {
    pub(super) fn new(root: OwnedFd, privileged: bool) -> Walker {
        Walker {
            root,
            chain: Vec::new(),
            made_writable: (!privileged).then(Vec::new),
        }
    }

    /// The directories made writable by walks (see `made_writable`), emptying the list.
    pub(super) fn take_made_writable(&mut self) -> Vec<(Vec<u8>, u32)> {
        self.made_writable
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The directory named by `comps`, creating missing ones (mode 0755, like docker's
    /// implicit parents) when `create`.
    pub(super) fn dir(
        &mut self,
        comps: &[&[u8]],
        create: bool,
    ) -> Result<BorrowedFd<'_>, WalkError> {
        let keep = self
            .chain
            .iter()
            .zip(comps)
            .take_while(|((have, _), want)| have.as_slice() == **want)
            .count();
        self.chain.truncate(keep);
        for (i, comp) in comps.iter().enumerate().skip(keep) {
            let parent = match self.chain.last() {
                Some((_, fd)) => fd.as_fd(),
                None => self.root.as_fd(),
            };
            let fd = open_component(parent, comp, create)
                .map_err(|e| classify(parent, comp, e, i + 1))?;
            if let Some(list) = &mut self.made_writable {
                let mode = sys::fstat_mode(fd.as_fd()).map_err(|e| WalkError::Io(i + 1, e))?;
                if mode & 0o700 != 0o700 {
                    sys::fchmod(fd.as_fd(), (mode | 0o700) & 0o7777)
                        .map_err(|e| WalkError::Io(i + 1, e))?;
                    list.push((join(&comps[..=i]), mode & 0o7777));
                }
            }
            self.chain.push((comp.to_vec(), fd));
        }
        Ok(match comps.len() {
            0 => self.root.as_fd(),
            n => self.chain[n - 1].1.as_fd(),
        })
    }

    /// Drops the cached fds of directories at depth `depth` and below: the caller removed
    /// or replaced something there, and a cached fd would still point at the old directory.
    pub(super) fn forget_from(&mut self, depth: usize) {
        self.chain.truncate(depth);
    }
}

fn open_component(parent: BorrowedFd<'_>, name: &[u8], create: bool) -> io::Result<OwnedFd> {
    let c = sys::cstr(name)?;
    match sys::open_dir_at(parent, &c) {
        Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
            let created = match sys::mkdir_at(parent, &c, 0o755) {
                Ok(()) => true,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
                Err(e) => return Err(e),
            };
            let fd = sys::open_dir_at(parent, &c)?;
            if created {
                // Exactly 0755 whatever the process umask: an implicit parent has no
                // entry of its own to set its mode later, and the sandbox must traverse it.
                sys::fchmod(fd.as_fd(), 0o755)?;
            }
            Ok(fd)
        }
        r => r,
    }
}

fn classify(parent: BorrowedFd<'_>, name: &[u8], e: io::Error, n: usize) -> WalkError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => WalkError::Missing(n),
        // O_NOFOLLOW reports a symlink as ELOOP (or ENOTDIR with O_DIRECTORY on some
        // kernels): look at what is there to name it right.
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
            let kind = sys::cstr(name).and_then(|c| sys::file_type_at(parent, &c));
            match kind {
                Ok(libc::S_IFLNK) => WalkError::Symlink(n),
                Ok(_) => WalkError::NotDir(n),
                Err(e) => WalkError::Io(n, e),
            }
        }
        _ => WalkError::Io(n, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Option<String> {
        normalize(s.as_bytes()).map(|c| String::from_utf8(join(&c)).unwrap())
    }

    #[test]
    fn normalisation() {
        assert_eq!(norm("a/b/c").as_deref(), Some("a/b/c"));
        assert_eq!(norm("./a//b/./c/").as_deref(), Some("a/b/c"));
        assert_eq!(norm("/etc/x").as_deref(), Some("etc/x"));
        assert_eq!(norm("///etc").as_deref(), Some("etc"));
        assert_eq!(norm("a/../b").as_deref(), Some("b"));
        assert_eq!(norm("./").as_deref(), Some(""));
        assert_eq!(norm("/").as_deref(), Some(""));
        assert_eq!(norm("a/.."), Some(String::new()));
        assert_eq!(norm("../escape"), None);
        assert_eq!(norm("a/../../escape"), None);
        assert_eq!(norm("/../etc"), None);
        assert_eq!(norm("a/b/../../.."), None);
        assert_eq!(norm("..."), Some("...".into()));
    }

    #[test]
    fn walker_creates_reuses_and_refuses_symlinks() {
        struct Gone(std::path::PathBuf);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let tmp = std::env::temp_dir().join(format!("iii-walker-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let _gone = Gone(tmp.clone());
        let root = OwnedFd::from(std::fs::File::open(&tmp).unwrap());
        let mut w = Walker::new(root, true);
        w.dir(&[b"a", b"b"], true).unwrap();
        assert!(tmp.join("a/b").is_dir());
        std::os::unix::fs::symlink("/", tmp.join("a/l")).unwrap();
        std::fs::write(tmp.join("a/f"), b"").unwrap();
        assert!(matches!(
            w.dir(&[b"a", b"l", b"x"], true),
            Err(WalkError::Symlink(2))
        ));
        assert!(matches!(
            w.dir(&[b"a", b"f"], true),
            Err(WalkError::NotDir(2))
        ));
        assert!(matches!(
            w.dir(&[b"a", b"nope"], false),
            Err(WalkError::Missing(2))
        ));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
