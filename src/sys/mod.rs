//! The raw system calls that iii's host side and its init share, each behind a small safe
//! function: processes by PID, file descriptors, Unix sockets (fd passing), signals, and
//! pseudo-terminals.
//!
//! Only mechanism lives here; what to do with it (which capabilities a worker keeps, which
//! fds init gets) belongs to the modules that use it. The VMM keeps its own few in
//! [`crate::sandbox::vm::sys`] and its ioctls in [`crate::sandbox::vm::kvm`]; the layer
//! unpacker its `*at` calls in `oci::unpack::sys`. Code that runs between `fork` and `exec`
//! calls libc directly (see `init::spawn`): it may only make async-signal-safe calls.

pub mod fd;
pub mod pid;
pub mod pty;
pub mod signal;
pub mod socket;
