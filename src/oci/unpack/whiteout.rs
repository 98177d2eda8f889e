//! Removing what lower layers put in the rootfs: `.wh.<name>` whiteouts, `.wh..wh..opq`
//! opaque directories, and entries replaced by a different kind of entry.
//!
//! Everything works on directory fds and single names, never following symlinks, so a
//! removal can only reach inside the rootfs.

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::sys;

/// Removes `name` in `dir`, a whole tree if it is a directory. Returns whether it was a
/// directory (the caller must then drop cached fds below it).
pub(super) fn remove_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<bool> {
    match sys::unlink_at(dir, name, false) {
        Ok(()) => Ok(false),
        // Linux answers EISDIR for a directory; POSIX allows EPERM.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) => {
            let sub = match sys::open_dir_at(dir, name) {
                Ok(sub) => sub,
                // Not a directory after all: the EPERM was real.
                Err(_) => return Err(e),
            };
            // Without root, a read-only directory (0555) cannot be emptied until it is
            // writable; it is going away, so its mode does not matter any more.
            let mode = sys::fstat_mode(sub.as_fd())?;
            if mode & 0o700 != 0o700 {
                sys::fchmod(sub.as_fd(), (mode | 0o700) & 0o7777)?;
            }
            for child in sys::read_dir_names(sub.as_fd())? {
                remove_at(sub.as_fd(), &sys::cstr(&child)?)?;
            }
            drop(sub);
            sys::unlink_at(dir, name, true)?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// Like [`remove_at`], but nothing there is fine.
pub(super) fn remove_if_present(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<bool> {
    match remove_at(dir, name) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        r => r,
    }
}

/// Whether this layer put something at `path` or below it (paths relative to the rootfs,
/// as [`super::confine::join`] writes them).
pub(super) fn added_by_layer(unpacked: &BTreeSet<Vec<u8>>, path: &[u8]) -> bool {
    if unpacked.contains(path) {
        return true;
    }
    let mut prefix = path.to_vec();
    prefix.push(b'/');
    unpacked
        .range(prefix.clone()..)
        .next()
        .is_some_and(|p| p.starts_with(&prefix))
}

/// Empties directory `dir` (at `path`) of everything lower layers put there, keeping what
/// this layer added (`unpacked`), also inside directories this layer merged into. The
/// marker may come before or after its siblings in the tar: before, nothing is kept yet;
/// after, the kept set holds them.
pub(super) fn clear_opaque(
    dir: BorrowedFd<'_>,
    path: &[u8],
    unpacked: &BTreeSet<Vec<u8>>,
) -> io::Result<()> {
    for name in sys::read_dir_names(dir)? {
        let mut child = path.to_vec();
        if !child.is_empty() {
            child.push(b'/');
        }
        child.extend_from_slice(&name);
        let c = sys::cstr(&name)?;
        if !added_by_layer(unpacked, &child) {
            remove_at(dir, &c)?;
        } else if sys::file_type_at(dir, &c)? == libc::S_IFDIR {
            let sub = sys::open_dir_at(dir, &c)?;
            clear_opaque(sub.as_fd(), &child, unpacked)?;
        }
    }
    Ok(())
}
