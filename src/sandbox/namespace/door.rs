//! The exec door of a `namespace` sandbox: a `SOCK_SEQPACKET` socketpair between the host and
//! init over which the host hands each exec client's connection (the fd itself, as
//! `SCM_RIGHTS`) to init, which takes it with [`crate::sys::socket::recv_fd`] on fd
//! [`crate::protocol::init::INIT_EXEC_DOOR_FD`]. Init's exec server then speaks exec frames
//! with the client directly, so output skips the monitor and the control channel's
//! multiplexer (two processes and several copies fewer). The VM backend cannot pass fds into
//! a guest and keeps carrying exec streams over its control channel
//! ([`super::super::channel::exec_opener`]).
//!
//! Flow control is unchanged: the client and init's exec server run the exec protocol's credit
//! end to end, and init writes to the connection blocking, so the socket's own buffer is all
//! that is ever queued for a slow reader.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::sys::socket;

/// A connected pair of door ends (host, init), both close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socket::seqpacket_pair()
}

/// Hand `conn` through the door (host side). The connection is closed here once it is sent:
/// from then on init owns it.
pub fn send(door: BorrowedFd<'_>, conn: UnixStream) -> io::Result<()> {
    socket::send_fd(door, conn.as_fd())
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
        let recv = |fd| socket::recv_fd(fd).map(|c| c.map(UnixStream::from));
        let mut got = recv(init.as_fd()).unwrap().expect("a connection");
        ours.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        got.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        // Nothing more waiting (checked non-blocking), then EOF once the host end closes.
        crate::sys::fd::set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&init), true).unwrap();
        assert!(recv(init.as_fd()).unwrap().is_none());
        drop(host);
        let e = recv(init.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
