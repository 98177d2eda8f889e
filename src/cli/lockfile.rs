//! `iii worker verify | sync | update`: the `iii.lock` workflow (a later milestone).

use argh::FromArgs;

#[derive(FromArgs, Debug)]
/// Check that installed workers match iii.lock (not yet available).
#[argh(subcommand, name = "verify")]
pub struct VerifyArgs {}

#[derive(FromArgs, Debug)]
/// Install exactly the workers pinned in iii.lock (not yet available).
#[argh(subcommand, name = "sync")]
pub struct SyncArgs {}

#[derive(FromArgs, Debug)]
/// Re-resolve workers and rewrite iii.lock (not yet available).
#[argh(subcommand, name = "update")]
pub struct UpdateArgs {}

pub fn not_yet(cmd: &str) -> crate::Result<i32> {
    super::not_yet_available(&format!("`iii worker {cmd}` (iii.lock support)"))
}
