//! `iii worker start <name>…`.

use argh::FromArgs;

use super::Ctx;

#[derive(FromArgs, Debug)]
/// Start workers (through the engine when it runs, else detached).
#[argh(subcommand, name = "start")]
pub struct Args {
    /// worker names
    #[argh(positional, greedy)]
    pub names: Vec<String>,
}

pub fn run(_ctx: &Ctx, _args: Args) -> crate::Result<i32> {
    super::not_yet_available("`iii worker start`")
}
