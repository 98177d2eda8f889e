//! Unix sockets beyond what std offers: `SOCK_SEQPACKET` pairs, handing a file descriptor to
//! another process (`SCM_RIGHTS`), peeking, the peer's credentials, send buffer sizing.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A connected `SOCK_SEQPACKET` pair, both ends close-on-exec.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: socketpair writes two fds into the array of two on success.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Ancillary buffer for one fd, aligned as `cmsghdr` requires.
#[repr(C)]
union CmsgBuf {
    _align: libc::cmsghdr,
    bytes: [u8; 64],
}

/// Send `fd` over `socket` (one byte of data carrying it as `SCM_RIGHTS`). The receiver gets
/// its own descriptor of the same open file; ours stays ours.
pub fn send_fd(socket: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut byte = [b'x'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: an all-zero cmsg buffer is a valid (empty) value.
    let mut cbuf: CmsgBuf = unsafe { std::mem::zeroed() };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    // SAFETY: zeroed msghdr is valid; the pointers set below outlive the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: the union's bytes field is plain bytes.
    msg.msg_control = unsafe { cbuf.bytes.as_mut_ptr() }.cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` ≤ 64 bytes, room for one header plus one int;
    // CMSG_FIRSTHDR/CMSG_DATA stay inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd.as_raw_fd());
    }
    loop {
        // SAFETY: msg and everything it points to are valid for the call.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Take the next fd sent with [`send_fd`] (close-on-exec). `Ok(None)`: nothing waiting on a
/// non-blocking socket. `Err(UnexpectedEof)`: the peer closed its end.
pub fn recv_fd(socket: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: an all-zero cmsg buffer is a valid (empty) value.
    let mut cbuf: CmsgBuf = unsafe { std::mem::zeroed() };
    // SAFETY: zeroed msghdr is valid; the pointers set below outlive the recvmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: the union's bytes field is plain bytes.
    msg.msg_control = unsafe { cbuf.bytes.as_mut_ptr() }.cast();
    msg.msg_controllen = 64;
    let n = loop {
        // SAFETY: msg and everything it points to are valid for the call. Received fds are
        // close-on-exec, so no program this process starts inherits one by accident.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    };
    let mut got = None;
    // SAFETY: the kernel filled msg_control with well-formed headers within msg_controllen;
    // CMSG_FIRSTHDR/CMSG_NXTHDR walk only inside it. Every fd found is taken into ownership
    // (so none leaks, even if more than one arrived).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    let owned = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                    if got.is_none() {
                        got = Some(owned);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 0 && got.is_none() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(got)
}

/// Copy what is waiting on the stream socket into `buf` without consuming it (`MSG_PEEK`).
pub fn peek(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: recv into a valid buffer of `buf.len()` bytes.
        let n = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The user id of the process at the other end of a connected Unix socket.
pub fn peer_uid(socket: BorrowedFd<'_>) -> io::Result<u32> {
    peer_credentials(socket).map(|(_, uid)| uid)
}

/// The process id and user id at the other end of a connected Unix socket.
pub fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` holds the size of `cred`.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.pid as u32, cred.uid))
}

/// Ask for a send buffer of `bytes` (best effort: the kernel caps it at `net.core.wmem_max`).
pub fn set_send_buffer(socket: BorrowedFd<'_>, bytes: i32) {
    // SAFETY: SO_SNDBUF reads one int through a valid pointer of the given length.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn an_fd_crosses_a_seqpacket_pair_and_still_works() {
        let (a, b) = seqpacket_pair().unwrap();
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        send_fd(a.as_fd(), theirs.as_fd()).unwrap();
        drop(theirs);
        let mut got = UnixStream::from(recv_fd(b.as_fd()).unwrap().expect("an fd"));
        ours.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(peek(got.as_fd(), &mut buf).unwrap(), 4);
        got.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        assert_eq!(
            peer_uid(got.as_fd()).unwrap(),
            crate::sys::pid::effective_uid()
        );
        // SAFETY: F_GETFD on a valid fd.
        let flags = unsafe { libc::fcntl(got.as_raw_fd(), libc::F_GETFD) };
        assert!(
            flags & libc::FD_CLOEXEC != 0,
            "received fd is close-on-exec"
        );
        crate::sys::fd::set_nonblocking(b.as_raw_fd(), true).unwrap();
        assert!(recv_fd(b.as_fd()).unwrap().is_none(), "nothing waiting");
        drop(a);
        let e = recv_fd(b.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
