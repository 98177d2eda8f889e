//! The control-channel wire protocol between the host (engine, CLI) and init, used by both ends.
pub mod exec;
