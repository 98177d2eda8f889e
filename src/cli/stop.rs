//! `iii worker stop <name>…`.

use argh::FromArgs;

use super::Ctx;

#[derive(FromArgs, Debug)]
/// Stop workers: SIGTERM (or the image's StopSignal), then SIGKILL after --time.
#[argh(subcommand, name = "stop")]
pub struct Args {
    /// worker names
    #[argh(positional, greedy)]
    pub names: Vec<String>,
    /// seconds to wait after SIGTERM before SIGKILL (default 10)
    #[argh(option, short = 't', default = "10")]
    pub time: u64,
}

pub fn run(_ctx: &Ctx, _args: Args) -> crate::Result<i32> {
    super::not_yet_available("`iii worker stop`")
}
