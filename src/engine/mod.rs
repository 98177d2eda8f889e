//! The engine: supervises workers and serves the control socket.

use crate::project::Project;
use crate::Result;

/// Stop `name` before `remove` deletes its state. Workers cannot run yet in this version, so
/// there is nothing to stop; the supervisor replaces this with a real stop.
pub fn stop_for_removal(_project: &Project, _name: &str) -> Result<()> {
    Ok(())
}
