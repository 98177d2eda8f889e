//! The exec door of a `namespace` sandbox: a `SOCK_SEQPACKET` socketpair between the host and
//! init over which the host hands each exec client's connection (the fd itself, as
//! `SCM_RIGHTS`) to init. Init's exec server then speaks exec frames with the client directly,
//! so output skips the monitor and the control channel's multiplexer (two processes and
//! several copies fewer). The VM backend cannot pass fds into a guest and keeps carrying exec
//! streams over its control channel ([`super::host`]).
//!
//! Flow control is unchanged: the client and init's exec server run the exec protocol's credit
//! end to end, and init writes to the connection blocking, so the socket's own buffer is all
//! that is ever queued for a slow reader.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// A connected pair of door ends (host, init), both close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
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

/// Hand `conn` through the door (host side). The connection is closed here once it is sent:
/// from then on init owns it.
pub fn send(door: BorrowedFd<'_>, conn: UnixStream) -> io::Result<()> {
    let fd = conn.as_raw_fd();
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
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
    }
    loop {
        // SAFETY: msg and everything it points to are valid for the call.
        let n = unsafe { libc::sendmsg(door.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Take the next connection from the door (init side; the door is non-blocking).
/// `Ok(None)`: nothing waiting now. `Err(UnexpectedEof)`: the host closed its end.
pub fn recv(door: BorrowedFd<'_>) -> io::Result<Option<UnixStream>> {
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
        // close-on-exec, so no command init starts inherits another client's connection.
        let n = unsafe { libc::recvmsg(door.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
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
    let mut conn = None;
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
                    let fd = std::ptr::read_unaligned(data.add(i));
                    let owned = UnixStream::from_raw_fd(fd);
                    if conn.is_none() {
                        conn = Some(owned);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 0 && conn.is_none() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_connection_crosses_the_door_and_still_works() {
        let (host, init) = pair().unwrap();
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        send(host.as_fd(), theirs).unwrap();
        let mut got = recv(init.as_fd()).unwrap().expect("a connection");
        ours.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        got.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        // SAFETY: F_GETFD on a valid fd.
        let flags = unsafe { libc::fcntl(got.as_raw_fd(), libc::F_GETFD) };
        assert!(
            flags & libc::FD_CLOEXEC != 0,
            "received fd must be close-on-exec"
        );
        // Nothing more waiting (the door is blocking here, so check with MSG_DONTWAIT-like
        // non-blocking mode), then EOF once the host end closes.
        // SAFETY: fcntl on our own fd.
        unsafe {
            let fl = libc::fcntl(init.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(init.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        assert!(recv(init.as_fd()).unwrap().is_none());
        drop(host);
        let e = recv(init.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
