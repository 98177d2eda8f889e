//! `iii worker clear [NAME] [-y]`: free store space nothing uses.

use argh::FromArgs;

use super::Ctx;
use crate::install::{self, clear};
use crate::{err, Result};

#[derive(FromArgs, Debug)]
/// Delete image trees, blobs and binaries from the store that no running worker and no entry
/// of this project's config.yaml uses (with NAME: that worker's own, while it is stopped).
/// Asks first on a terminal; needs -y otherwise.
#[argh(subcommand, name = "clear")]
pub struct Args {
    /// the worker whose artifacts to delete (default: everything unused)
    #[argh(positional)]
    pub name: Option<String>,
    /// do not ask
    #[argh(switch, short = 'y')]
    pub yes: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let plan = clear::plan(&ctx.project, args.name.as_deref())?;
    if plan.is_empty() {
        crate::say!("nothing to clear");
        return Ok(0);
    }
    if !args.yes {
        let question = format!(
            "delete {} ({}) from the store?",
            plan.summary(),
            clear::human_bytes(plan.bytes())
        );
        if !install::interactive() {
            return Err(err!(
                "clear would delete {} ({}); pass -y to confirm when not on a terminal",
                plan.summary(),
                clear::human_bytes(plan.bytes())
            ));
        }
        if !install::confirm(&question) {
            return Err(err!("aborted; nothing was deleted"));
        }
    }
    let freed = clear::execute(&plan)?;
    crate::say!("freed {}: {}", clear::human_bytes(freed), plan.summary());
    Ok(0)
}
