//! `iii worker logs <name>`: the worker's stdout and stderr, in order.

use argh::FromArgs;

use super::Ctx;

#[derive(FromArgs, Debug)]
/// Print a worker's logs (stdout and stderr, in order) on stdout.
#[argh(subcommand, name = "logs")]
pub struct Args {
    /// worker name
    #[argh(positional)]
    pub name: String,
    /// keep following new output, across worker restarts, until Ctrl-C
    #[argh(switch, short = 'f')]
    pub follow: bool,
    /// show only the last N lines
    #[argh(option, short = 'n')]
    pub tail: Option<usize>,
    /// prefix each line with its RFC 3339 timestamp
    #[argh(switch)]
    pub timestamps: bool,
}

pub fn run(_ctx: &Ctx, _args: Args) -> crate::Result<i32> {
    super::not_yet_available("`iii worker logs`")
}
