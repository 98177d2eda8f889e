//! `iii worker start <name>…`.

use argh::FromArgs;

use super::Ctx;
use crate::supervisor::lifecycle;

#[derive(FromArgs, Debug)]
/// Start workers (through the engine when it runs, else detached).
#[argh(subcommand, name = "start")]
pub struct Args {
    /// worker names
    #[argh(positional)]
    pub names: Vec<String>,
}

pub fn run(ctx: &Ctx, args: Args) -> crate::Result<i32> {
    if args.names.is_empty() {
        return Err(crate::err!("iii worker start: name at least one worker"));
    }
    let mut code = 0;
    for name in &args.names {
        match lifecycle::start_worker(&ctx.project, name) {
            Ok(msg) => crate::say!("{msg}"),
            Err(e) => code = super::report(&e),
        }
    }
    Ok(code)
}
