//! `iii worker remove <name>…`: stop, unregister and delete a worker's state.

use argh::FromArgs;

use super::Ctx;
use crate::{Error, Result};

#[derive(FromArgs, Debug)]
/// Stop workers if running, remove them from config.yaml and delete their state in .iii/.
/// Cached image layers stay in the store.
#[argh(subcommand, name = "remove")]
pub struct Args {
    /// worker names
    #[argh(positional, greedy)]
    pub names: Vec<String>,
    /// keep the worker's writable layer in .iii/workers/NAME/
    #[argh(switch)]
    pub keep_data: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    if args.names.is_empty() {
        return Err(Error::new("worker remove needs at least one worker name").with_exit_code(2));
    }
    let mut failures = 0;
    for name in &args.names {
        match crate::supervisor::lifecycle::remove(&ctx.project, name, args.keep_data) {
            // Like `docker rm`: each removed name on stdout, for scripts.
            Ok(()) => {
                if let Err(e) = crate::stdio::out(&format!("{name}\n")) {
                    super::report(&e);
                    failures += 1;
                }
            }
            Err(e) => {
                super::report(&e);
                failures += 1;
            }
        }
    }
    Ok(if failures == 0 { 0 } else { 1 })
}
