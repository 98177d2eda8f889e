//! The `*at` system calls extraction is built on, as small safe wrappers over libc.
//!
//! Every call takes a directory fd and a single path component and never follows a
//! symlink in that component, so confinement only has to reason about which directory fd
//! is used (see `confine.rs`).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A path component as a C string; tar names cannot contain NUL, but check anyway.
pub(super) fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn open_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string and `dir` a live fd for the call.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: openat succeeded, so `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory `name` in `dir`; fails with ELOOP if it is a symlink, ENOTDIR if it
/// is something else.
pub(super) fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    open_at(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

/// Creates a new regular file; EEXIST if anything (even a dangling symlink) is there.
pub(super) fn create_file_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: u32,
) -> io::Result<std::fs::File> {
    let fd = open_at(
        dir,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        mode,
    )?;
    Ok(std::fs::File::from(fd))
}

pub(super) fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid C string and live fd for the duration of the call.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

/// Removes a non-directory (`is_dir` false) or an empty directory.
pub(super) fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid C string and live fd for the duration of the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    Ok(())
}

pub(super) fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid C strings and live fd for the duration of the call.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })?;
    Ok(())
}

/// Hard-links `old_dir/old` as `new_dir/new`; a symlink `old` is linked itself, not followed.
pub(super) fn link_at(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    // SAFETY: valid C strings and live fds for the duration of the call; flags 0 means the
    // kernel does not dereference `old` if it is a symlink.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

pub(super) fn mknod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32, dev: u64) -> io::Result<()> {
    // SAFETY: valid C string and live fd for the duration of the call.
    check(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            dev as libc::dev_t,
        )
    })?;
    Ok(())
}

/// The file type bits (`S_IFMT`) of `name` in `dir`, without following a symlink.
pub(super) fn file_type_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<u32> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid C string, live fd, and `st` points to writable memory for one stat.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() }.st_mode & libc::S_IFMT)
}

/// Changes the owner of `name` in `dir` itself (a symlink is not followed).
pub(super) fn lchown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid C string and live fd for the duration of the call.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

pub(super) fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: live fd for the duration of the call.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })?;
    Ok(())
}

fn times(mtime: (i64, u32)) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: mtime.0 as _,
        tv_nsec: mtime.1 as _,
    };
    // atime = mtime: extraction stays reproducible, as docker does.
    [ts, ts]
}

pub(super) fn futimens(fd: BorrowedFd<'_>, mtime: (i64, u32)) -> io::Result<()> {
    let ts = times(mtime);
    // SAFETY: live fd and a pointer to two timespecs, as futimens requires.
    check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) })?;
    Ok(())
}

/// Sets the times of `name` in `dir` itself (a symlink is not followed).
pub(super) fn lutimens_at(dir: BorrowedFd<'_>, name: &CStr, mtime: (i64, u32)) -> io::Result<()> {
    let ts = times(mtime);
    // SAFETY: valid C string, live fd and a pointer to two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

pub(super) fn fsetxattr(fd: BorrowedFd<'_>, key: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: valid C string, live fd, and `value` is readable for `value.len()` bytes.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })?;
    Ok(())
}

/// Sets an xattr on `name` in `dir` without following it: through the fd's /proc path,
/// which names the directory itself, so no other path is resolved.
pub(super) fn lsetxattr_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    key: &CStr,
    value: &[u8],
) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let path = cstr(&path)?;
    // SAFETY: valid C strings, and `value` is readable for `value.len()` bytes.
    check(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })?;
    Ok(())
}

/// The names in directory `dir` (without `.` and `..`), read through a fresh fd so `dir`
/// stays usable.
pub(super) fn read_dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let fd = open_at(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let raw = fd.as_raw_fd();
    // SAFETY: `raw` is an open directory fd; on success the DIR stream owns it.
    let dirp = unsafe { libc::fdopendir(raw) };
    if dirp.is_null() {
        return Err(io::Error::last_os_error());
    }
    // The DIR stream owns the fd now; closedir below closes it.
    std::mem::forget(fd);
    let mut names = Vec::new();
    let result = loop {
        // errno tells end-of-directory (unchanged) from failure (set) after a NULL.
        // SAFETY: __errno_location returns this thread's errno slot.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dirp` is a valid, open DIR stream owned by this function.
        let ent = unsafe { libc::readdir(dirp) };
        if ent.is_null() {
            // SAFETY: as above.
            let errno = unsafe { *libc::__errno_location() };
            break if errno == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(errno))
            };
        }
        // SAFETY: a non-NULL dirent from readdir has a NUL-terminated d_name, valid
        // until the next readdir call; we copy it out before that.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    };
    // SAFETY: `dirp` is valid and not used after this.
    unsafe { libc::closedir(dirp) };
    result.map(|()| names)
}

/// Sets the permission bits of `name` in `dir`. Only used on a device node or fifo this
/// process just created there (those cannot be opened safely to use fchmod), so the name
/// is known not to be a symlink.
pub(super) fn chmod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid C string and live fd for the duration of the call.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0) })?;
    Ok(())
}

/// The `st_mode` of an open fd.
pub(super) fn fstat_mode(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: live fd and `st` points to writable memory for one stat.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() }.st_mode)
}
