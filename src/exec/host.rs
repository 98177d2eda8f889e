//! The host side of an exec between the client and a sandbox: the worker's monitor accepts the
//! client's connection on `control.sock`, answers its `{"op":"exec"}` line with an `ok` reply,
//! and hands the connection over here. From then on the connection's bytes travel unchanged
//! over the sandbox's control channel as one `OpenRequest::Exec` stream, to init's exec
//! server; flow control holds end to end, and when the client goes away the stream closes and
//! init kills the command.
//!
//! The `vm` backend uses this; a `namespace` sandbox hands the connection itself to init
//! instead ([`super::door`]), which saves the monitor's relay.

use std::os::unix::net::UnixStream;

use crate::protocol::OpenRequest;
use crate::sandbox::namespace::ControlHandle;
use crate::{err, Result};

/// The [`ExecOpener`](crate::sandbox::ExecOpener) of a sandbox whose control channel is
/// `control`: the same for both backends, since init serves exec the same way in each.
pub fn opener(control: ControlHandle) -> crate::sandbox::ExecOpener {
    Box::new(move |conn| forward(conn, &control))
}

/// Carry `conn` (already past the handshake) into the sandbox behind `control` as an exec
/// stream. Returns once the stream is open; the sandbox's channel thread carries it from then.
pub fn forward(conn: UnixStream, control: &ControlHandle) -> Result<()> {
    conn.set_nonblocking(true)
        .map_err(|e| err!("exec: preparing the client connection: {e}"))?;
    let endpoint = Box::new(mio::net::UnixStream::from_std(conn));
    control.open(OpenRequest::Exec, endpoint)?;
    Ok(())
}
