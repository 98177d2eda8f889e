//! The engine: supervises workers and serves the control socket.

pub mod logs;
pub mod spec;
