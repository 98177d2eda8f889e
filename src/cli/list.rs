//! `iii worker list`: every worker in config.yaml with its state.

use argh::FromArgs;

use super::Ctx;

#[derive(FromArgs, Debug)]
/// List every worker in config.yaml: NAME, IMAGE, STATUS, SANDBOX, PID, UPTIME, RESTARTS.
#[argh(subcommand, name = "list")]
pub struct Args {
    /// print a JSON array on stdout instead of a table
    #[argh(switch)]
    pub json: bool,
}

pub fn run(_ctx: &Ctx, _args: Args) -> crate::Result<i32> {
    super::not_yet_available("`iii worker list`")
}
