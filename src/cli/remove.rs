//! `iii worker remove <name>…`: stop, unregister and delete a worker's state.

use argh::FromArgs;

use super::Ctx;

#[derive(FromArgs, Debug)]
/// Stop workers if running, remove them from config.yaml and delete their state in .iii/.
/// Cached image layers stay in the store.
#[argh(subcommand, name = "remove")]
pub struct Args {
    /// worker names
    #[argh(positional, greedy)]
    pub names: Vec<String>,
    /// keep the worker's writable layer in .iii/workers/<name>/
    #[argh(switch)]
    pub keep_data: bool,
}

pub fn run(_ctx: &Ctx, _args: Args) -> crate::Result<i32> {
    super::not_yet_available("`iii worker remove`")
}
