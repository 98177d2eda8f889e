//! `iii` with no subcommand: run the engine in the foreground.

use super::Ctx;

pub fn run(ctx: &Ctx) -> crate::Result<i32> {
    crate::engine::run(&ctx.project)
}
