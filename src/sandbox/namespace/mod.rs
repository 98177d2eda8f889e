//! The `namespace` backend: Linux namespaces, overlayfs, pivot_root, cgroups, seccomp.
