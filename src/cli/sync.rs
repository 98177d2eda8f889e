//! `iii worker sync [--frozen]`: install what iii.lock pins.

use argh::FromArgs;

use super::Ctx;
use crate::Result;

#[derive(FromArgs, Debug)]
/// Install exactly the workers pinned in iii.lock into the store (images by digest, binaries
/// by checksum), first pinning config.yaml's workers that iii.lock lacks.
#[argh(subcommand, name = "sync")]
pub struct Args {
    /// change neither config.yaml nor iii.lock: fail, printing the drift, when they disagree
    #[argh(switch)]
    pub frozen: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let report = crate::install::sync::sync(&ctx.project, args.frozen)?;
    crate::say!(
        "synced from {}: {}",
        ctx.project.lock_path().display(),
        report.summary()
    );
    Ok(0)
}
