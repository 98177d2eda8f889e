//! Serving a whole exec connection: one byte stream that carries one exec stream, read and
//! written by the exec server itself (the client's connection handed over the exec door, or
//! one end of a socketpair whose other end init attaches to the control channel).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::{ExecContext, ExecSession, Sink};
use crate::protocol::exec::{encode_failure, Decoder, ExecFrame, ExecMessage, Side};

/// How long a finished exec connection waits for the client to close its end.
const LINGER: Duration = Duration::from_secs(30);

/// Serve an exec stream on a new thread; returns the other end of the byte stream, for the
/// owner to attach to the control channel's multiplexer (`OpenRequest::Exec`).
pub fn serve_stream(ctx: ExecContext) -> std::io::Result<UnixStream> {
    let (ours, theirs) = UnixStream::pair()?;
    serve_stream_on(ours, ctx)?;
    Ok(theirs)
}

/// Serve the exec connection `conn` (blocking) on a new thread.
pub fn serve_stream_on(conn: UnixStream, ctx: ExecContext) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("exec".into())
        .spawn(move || serve_connection(conn, &ctx))?;
    Ok(())
}

/// Serve one exec connection that carries one exec stream: read the `Open`, run the command,
/// pump frames both ways until it ends. Used where the exec server owns the byte stream
/// itself (no multiplexer in between).
pub fn serve_connection(conn: UnixStream, ctx: &ExecContext) {
    let mut reader = match conn.try_clone() {
        Ok(r) => r,
        Err(_) => return,
    };
    crate::protocol::exec::widen_send_buffer(conn.as_fd());
    let mut writer = conn;
    let mut decoder = Decoder::new(Side::Server);
    let mut buf = vec![0u8; 64 << 10];
    let req = loop {
        match decoder.next_frame() {
            Ok(Some(ExecFrame::Message(ExecMessage::Open(req)))) => break req,
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => {}
        }
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => decoder.feed(&buf[..n]),
        }
    };
    let mut out = writer.try_clone().ok();
    let sink: Sink = Box::new(move |bytes| match out.as_mut() {
        Some(w) => w.write_all(bytes).is_ok(),
        None => false,
    });
    let session = match ExecSession::start(ctx, &req, sink) {
        Ok(s) => s,
        Err(f) => {
            let mut bytes = Vec::new();
            encode_failure(&mut bytes, f.code, f.message);
            let _ = writer.write_all(&bytes);
            linger(&writer, &mut reader, &mut buf);
            return;
        }
    };
    // Frames already decoded after the Open, then the rest of the connection.
    loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => session.deliver(f),
                Ok(None) => break,
                Err(_) => {
                    session.deliver(ExecFrame::Close);
                    session.join();
                    return;
                }
            }
        }
        if session.is_finished() {
            break;
        }
        // Straight into the decoder's buffer: stdin can be bulk data too.
        match decoder.read_from(reader.as_fd(), 1 << 20) {
            Ok(0) => {
                session.deliver(ExecFrame::Close);
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                session.deliver(ExecFrame::Close);
                break;
            }
        }
    }
    session.join();
    linger(&writer, &mut reader, &mut buf);
}

/// End our side of an exec connection without losing the end of what we sent: half-close,
/// then keep reading (and dropping) until the peer closes too. Closing outright, or refusing
/// further input, while the relay still holds our last output unsent (waiting for credit)
/// makes it fail the stream and drop that output.
fn linger(writer: &UnixStream, reader: &mut UnixStream, buf: &mut [u8]) {
    let _ = writer.shutdown(std::net::Shutdown::Write);
    // The client closes as soon as it has read the exit status; do not wait on a stuck one.
    let _ = reader.set_read_timeout(Some(LINGER));
    while let Ok(n) = reader.read(buf) {
        if n == 0 {
            break;
        }
    }
}
