//! `iii worker exec` on the host side: the client that streams a command's stdin, stdout and
//! stderr (or a terminal) through a worker's control socket.
//!
//! - [`client`]: the `mio` event loop over stdin, stdout, stderr, the connection and signals.
//! - [`terminal`]: raw mode restored on every exit path; window sizes.
//! - [`duration`]: `--timeout` values (`1500ms`, `30s`, `5m`, `1h`, `1m30s`).
//!
//! The client's connection reaches init through the worker's monitor: a `namespace`
//! sandbox hands the connection itself to init (`sandbox::namespace::door`), a `vm` one
//! carries it over the control channel (`sandbox::channel::exec_opener`). The server side
//! lives in `init::exec`; the frames both speak in `protocol::exec`.

pub mod client;
pub mod duration;
pub mod terminal;
