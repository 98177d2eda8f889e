//! `iii` with no subcommand: run the engine in the foreground.

use super::Ctx;

pub fn run(_ctx: &Ctx) -> crate::Result<i32> {
    super::not_yet_available("the engine (`iii` with no subcommand)")
}
