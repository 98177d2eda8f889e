//! The engine: supervises workers and serves the control socket.

pub mod control;
pub mod logs;
pub mod spec;
pub mod state;
