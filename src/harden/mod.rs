//! Hardening: what iii takes away from the code it runs, applied inside the sandbox by init
//! (namespace backend) — the capability set, no_new_privs and the seccomp deny-list a worker
//! and its execs run under, and the root filesystem they see (overlay, minimal `/dev`,
//! read-only `/sys`, masked `/proc` paths) — plus the seccomp program builder that the VMM
//! also uses to confine its own threads (see `sandbox::vm::seccomp`).
//!
//! It is neither host-backend nor init code, so both reach it without importing each other:
//! the namespace backend describes the sandbox, init applies this.

pub mod capabilities;
pub mod mounts;
pub mod seccomp;

/// A worker's restrictions, prepared before the fork (reading `/proc` and building the BPF
/// program are not async-signal-safe; applying them in the child is).
pub struct Hardening {
    pub seccomp: Vec<libc::sock_filter>,
    pub last_cap: u32,
}

impl Hardening {
    /// What a worker in a `namespace` sandbox runs under: docker's default capability set
    /// minus `CAP_MKNOD`, no_new_privs, the seccomp deny-list.
    pub fn namespace_default() -> Hardening {
        Hardening {
            seccomp: seccomp::program(),
            last_cap: capabilities::last_cap(),
        }
    }
}
