//! The engine: supervises workers and serves the control socket.
