//! The engine: supervises workers and serves the control socket.
//!
//! - [`supervisor`]: `iii` with no subcommand — one supervisor thread per worker, restarts with
//!   backoff, `.iii/engine.sock`, SIGHUP reload, graceful shutdown.
//! - [`monitor`]: the host-side process that owns one running worker's sandbox.
//! - [`lifecycle`]: start/stop/restart/list as the CLI uses them, with or without an engine.
//! - [`spec`]: the worker process (argv, env, user) from image and config, backend-independent.
//! - [`logs`], [`state`], [`control`], [`lock`]: the files and sockets under `.iii/`.

use std::time::Duration;

use crate::project::Project;
use crate::Result;

pub mod backend;
pub mod control;
pub mod lifecycle;
pub mod logs;
pub mod monitor;
pub mod spec;
pub mod state;
pub mod supervisor;

pub use lifecycle::{stop_worker, StopOutcome};

/// Stop `name` (if it runs) before `remove` deletes its state, with the default grace period.
pub fn stop_for_removal(project: &Project, name: &str) -> Result<()> {
    stop_worker(project, name, Duration::from_secs(10)).map(|_| ())
}
