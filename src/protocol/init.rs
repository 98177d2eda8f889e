//! What a host backend and init agree on besides the frames: how init is started (the hidden
//! first argument, the fds it finds open) and, in a `vm` guest, which disk is which.

use std::os::fd::RawFd;

/// The first argument that makes the iii binary run as init (namespace backend).
pub const INIT_ARG: &str = "__iii_init";
/// The control channel's fd number in init (namespace backend).
pub const INIT_CONTROL_FD: RawFd = 3;
/// The exec door's fd number in init (namespace backend; see `sandbox::namespace::door`).
pub const INIT_EXEC_DOOR_FD: RawFd = 4;

/// ext2 volume label of a guest's root disk (the image tree, read-only): init finds its disks
/// by label, not by probe order.
pub const ROOT_LABEL: &str = "iii-root";
/// ext2 volume label of a guest's writable layer disk.
pub const LAYER_LABEL: &str = "iii-layer";
