//! `iii worker exec` on the host side: the client that streams a command's stdin, stdout and
//! stderr (or a terminal) through a worker's control socket (SPEC §7).
//!
//! - [`client`]: the `mio` event loop over stdin, stdout, stderr, the connection and signals.
//! - [`terminal`]: raw mode restored on every exit path; window sizes.
//! - [`duration`]: `--timeout` values (`1500ms`, `30s`, `5m`, `1h`, `1m30s`).
//! - [`host`]: the monitor hands a client connection to the sandbox as an exec stream.
//! - [`door`]: or, for `namespace` sandboxes, hands the connection itself to init.
//!
//! The server side lives in `init::exec`; the frames both speak in `protocol::exec`.

pub mod client;
pub mod door;
pub mod duration;
pub mod host;
pub mod terminal;
