//! iii — a worker runtime: pulls OCI images, unpacks them into a shared store and runs each
//! worker in an isolated sandbox (a microVM on KVM, or Linux namespaces).
//!
//! Module map (one concept, one home):
//! - [`oci`]: image references, the registry client, the content-addressed store, layer unpacking.
//! - [`config`]: `config.yaml` — the model, `${VAR}` expansion, flattening, textual editing.
//! - [`lockfile`]: `iii.lock`, the pins of a project's workers.
//! - [`project`]: where a project's files and the per-user store live.
//! - [`file_lock`]: flock-based locks that die with their holder.
//! - [`sys`]: the raw system calls host and init share (processes, fds, fd passing, signals,
//!   terminals), behind small safe functions.
//! - [`stdio`]: iii's own stdout and stderr, written without panicking ([`say!`]).
//! - [`sandbox`]: the contract both backends keep, the control channel's host end, and the
//!   backends: [`sandbox::namespace`], and [`sandbox::microvm`] over our VMM [`sandbox::vm`].
//! - [`init`]: iii's own PID 1 inside a sandbox.
//! - [`net`]: a worker's user-mode network (virtual NIC, smoltcp stack, DNS, egress policy).
//! - [`harden`]: what init takes away from a worker (capabilities, seccomp, the root it
//!   sees), and the seccomp builder the VMM confines its threads with.
//! - [`protocol`]: the control-channel wire format, used by both ends.
//! - [`engine`]: `iii` itself — the process that serves workers and supervises them.
//! - [`supervisor`]: the container workers' supervisor, per-worker monitor, control sockets, logs.
//! - [`exec`]: `iii worker exec` on the host — the client's event loop and terminal handling.
//! - [`install`]: from an `add` argument or an iii.lock pin to the store, config.yaml and
//!   iii.lock (`add`, `sync`, `update`, `clear`).
//! - [`worker_registry`]: the iii worker registry (`name[@version]` → a dependency graph) and
//!   binary workers' artifacts.
//! - [`cli`]: one file per command, thin.
#![warn(clippy::undocumented_unsafe_blocks)]

// Unit tests that cannot run here say why with `skip!`, recorded like the integration tests'.
#[cfg(test)]
#[macro_use]
#[path = "../tests/common/skip.rs"]
mod skip;

pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod exec;
pub mod file_lock;
pub mod harden;
pub mod init;
pub mod install;
pub mod lockfile;
pub mod net;
pub mod oci;
pub mod project;
pub mod protocol;
pub mod sandbox;
pub mod stdio;
pub mod supervisor;
pub mod sys;
pub mod worker_registry;

pub use error::{Context, Error, Result};
