//! iii's own init: PID 1 inside every sandbox (namespace or VM).
pub mod exec;
