//! The local control sockets: `.iii/engine.sock` (the engine) and
//! `.iii/workers/<name>/control.sock` (a worker's monitor).
//!
//! Wire format: one JSON request line, one JSON reply line, then the connection closes.
//! Sockets are created mode 0600 and every connection is checked with `SO_PEERCRED`: only the
//! same user (or root) may drive a worker.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::WorkerState;
use crate::{Context, Result};

/// A request on either socket. The monitor answers `Status`, `Stop` and `Signal` for its
/// worker; the engine answers `Start`, `Stop` and `Restart` naming a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Stop {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        timeout_s: u64,
    },
    Signal {
        signal: i32,
    },
    Start {
        name: String,
    },
    Restart {
        name: String,
        timeout_s: u64,
    },
    /// `iii worker exec` (monitor): after the `ok` reply the connection carries an exec stream
    /// (`protocol::exec` frames) to the worker's init.
    Exec,
    /// The engine: the SDK connections on its worker port (`Reply::connections`).
    Connections,
}

/// The answer: `ok` and a human sentence, plus the worker's state where it has one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<WorkerState>,
    /// For `Stop`: the worker was already stopped.
    #[serde(default)]
    pub already_stopped: bool,
    /// For `Stop`: it ignored the stop signal and was killed.
    #[serde(default)]
    pub killed: bool,
    /// For the engine's `Status`: the worker port it listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// For `Connections`: one object per connection on the engine's worker port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<serde_json::Value>,
}

impl Reply {
    pub fn ok(message: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            message: message.into(),
            ..Default::default()
        }
    }
    pub fn fail(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            message: message.into(),
            ..Default::default()
        }
    }
}

/// Unix socket paths are limited to 107 bytes; a deep project directory can exceed that. Such
/// a path is reached through `/proc/self/fd/<dir>/<file>` with the directory held open.
struct ShortPath {
    path: PathBuf,
    _dir: Option<OwnedFd>,
}

fn short_path(path: &Path) -> Result<ShortPath> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().len() < 100 {
        return Ok(ShortPath {
            path: path.to_path_buf(),
            _dir: None,
        });
    }
    let (dir, file) = match (path.parent(), path.file_name()) {
        (Some(d), Some(f)) => (d, f),
        _ => return Err(crate::err!("bad socket path {}", path.display())),
    };
    let dirfd: OwnedFd = std::fs::File::open(dir)
        .with_context(|| format!("opening {}", dir.display()))?
        .into();
    let p = PathBuf::from(format!("/proc/self/fd/{}", dirfd.as_raw_fd())).join(file);
    Ok(ShortPath {
        path: p,
        _dir: Some(dirfd),
    })
}

/// Bind a fresh socket at `path` (a stale file from a dead process is replaced), mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let sp = short_path(path)?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(crate::err!("removing stale {}: {e}", path.display())),
    }
    let l = UnixListener::bind(&sp.path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode of {}", path.display()))?;
    Ok(l)
}

/// Whether the peer of `stream` is the same user as this process, or root.
pub fn peer_allowed(stream: &UnixStream) -> bool {
    let me = crate::sys::pid::effective_uid();
    crate::sys::socket::peer_uid(stream.as_fd()).is_ok_and(|uid| uid == me || uid == 0)
}

/// Connect to the socket at `path`; `Ok(None)` when nothing listens there (no file, or a
/// stale file from a process that died).
pub fn connect(path: &Path) -> Result<Option<UnixStream>> {
    let sp = short_path(path)?;
    match UnixStream::connect(&sp.path) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(crate::err!("connecting to {}: {e}", path.display())),
    }
}

/// Send one request and wait for its reply; `Ok(None)` when nothing listens at `path`.
pub fn call(path: &Path, req: &Request) -> Result<Option<Reply>> {
    let Some(mut stream) = connect(path)? else {
        return Ok(None);
    };
    let mut line = serde_json::to_vec(req).context("encoding control request")?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .with_context(|| format!("writing to {}", path.display()))?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .with_context(|| format!("reading from {}", path.display()))?;
    if reply.is_empty() {
        // The server went away mid-request (e.g. a monitor ending as it was asked to stop).
        return Ok(None);
    }
    serde_json::from_str(&reply)
        .with_context(|| format!("parsing reply from {}", path.display()))
        .map(Some)
}

/// Read one request from a connection the server accepted (after the peer check).
pub fn read_request(stream: &UnixStream) -> Result<Request> {
    let mut line = String::new();
    // A request is small; a peer that sends an endless line is cut off.
    let mut r = BufReader::new(stream).take(64 * 1024);
    r.read_line(&mut line).context("reading control request")?;
    serde_json::from_str(&line).context("parsing control request")
}

/// Write the reply; a client that already left is not an error worth reporting.
pub fn write_reply(mut stream: &UnixStream, reply: &Reply) {
    if let Ok(mut line) = serde_json::to_vec(reply) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format_is_tagged_json() {
        let r = Request::Stop {
            name: None,
            timeout_s: 10,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"stop","timeout_s":10}"#
        );
        let back: Request = serde_json::from_str(r#"{"op":"start","name":"a"}"#).unwrap();
        assert_eq!(back, Request::Start { name: "a".into() });
    }

    #[test]
    fn round_trip_over_a_long_socket_path() {
        let base = std::env::temp_dir().join(format!(
            "iii-control-{}-{}",
            std::process::id(),
            "d".repeat(90)
        ));
        std::fs::create_dir_all(&base).unwrap();
        let sock = base.join("control.sock");
        assert!(sock.as_os_str().len() > 107);
        assert!(call(&sock, &Request::Status).unwrap().is_none());
        let l = bind(&sock).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            assert!(peer_allowed(&s));
            let req = read_request(&s).unwrap();
            write_reply(&s, &Reply::ok(format!("{req:?}")));
        });
        let rep = call(&sock, &Request::Signal { signal: 15 })
            .unwrap()
            .unwrap();
        assert!(rep.ok);
        assert_eq!(rep.message, "Signal { signal: 15 }");
        server.join().unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }
}
