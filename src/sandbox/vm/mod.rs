//! The `vm` backend: a small VMM on raw KVM ioctls.
