//! `iii worker update [NAME]`: move pins in iii.lock on purpose.

use argh::FromArgs;

use super::Ctx;
use crate::Result;

#[derive(FromArgs, Debug)]
/// Re-resolve pinned workers — an image from the tag config.yaml names, a registry worker at
/// the registry's latest version — and rewrite iii.lock. Prints each worker whose pin moved.
#[argh(subcommand, name = "update")]
pub struct Args {
    /// the worker to update (default: every pin that no other pin depends on)
    #[argh(positional)]
    pub name: Option<String>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let moved = crate::install::update::update(&ctx.project, args.name.as_deref())?;
    for m in &moved {
        crate::say!("{}: {} → {}", m.name, m.from, m.to);
        crate::stdio::out(&format!("{}\n", m.name))?;
    }
    Ok(0)
}
