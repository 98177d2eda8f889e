//! `iii worker restart <name>…`.

use argh::FromArgs;

use super::Ctx;
use crate::supervisor::lifecycle;

#[derive(FromArgs, Debug)]
/// Stop then start workers.
#[argh(subcommand, name = "restart")]
pub struct Args {
    /// worker names
    #[argh(positional)]
    pub names: Vec<String>,
    /// seconds to wait after SIGTERM before SIGKILL (default 10)
    #[argh(option, short = 't', default = "10")]
    pub time: u64,
}

pub fn run(ctx: &Ctx, args: Args) -> crate::Result<i32> {
    if args.names.is_empty() {
        return Err(crate::err!("iii worker restart: name at least one worker"));
    }
    let timeout = std::time::Duration::from_secs(args.time);
    let mut code = 0;
    for name in &args.names {
        match lifecycle::restart_worker(&ctx.project, name, timeout) {
            Ok(msg) => crate::say!("{msg}"),
            Err(e) => code = super::report(&e),
        }
    }
    Ok(code)
}
