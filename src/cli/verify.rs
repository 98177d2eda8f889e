//! `iii worker verify [--strict]`: does config.yaml agree with iii.lock?

use argh::FromArgs;

use super::Ctx;
use crate::config::Config;
use crate::lockfile::{check, manifest, Lock};
use crate::worker_registry::binary;
use crate::{err, Result};

#[derive(FromArgs, Debug)]
/// Check that every worker in config.yaml is pinned in iii.lock, by the image or binary
/// config.yaml names. Touches nothing; exits 1 naming each worker that disagrees.
#[argh(subcommand, name = "verify")]
pub struct Args {
    /// also check that every pinned dependency is pinned at a version inside its range
    #[argh(switch)]
    pub strict: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let project = &ctx.project;
    let config = Config::load(&project.config_path)?;
    let lock_path = project.lock_path();
    let lock = Lock::load(&lock_path)?.ok_or_else(|| {
        err!(
            "{} does not exist; `iii worker add` and `iii worker sync` write it",
            lock_path.display()
        )
    })?;
    let mut problems = check::drift(&config, &lock, binary::host_target());
    if args.strict {
        let deps = manifest::dependencies(&project.dir())?;
        problems.extend(check::strict(&lock, deps.as_ref()));
    }
    if !problems.is_empty() {
        for p in &problems {
            crate::say!("  {p}");
        }
        let mut names: Vec<&str> = problems
            .iter()
            .map(|p| p.worker().unwrap_or("iii.worker.yaml"))
            .collect();
        names.dedup();
        return Err(err!(
            "config.yaml and {} disagree ({}); `iii worker sync` pins config.yaml's workers",
            lock_path.display(),
            names.join(", ")
        ));
    }
    crate::say!(
        "config.yaml matches {} ({} pinned{})",
        lock_path.display(),
        match lock.workers.len() {
            1 => "1 worker".to_string(),
            n => format!("{n} workers"),
        },
        if args.strict {
            ", dependencies satisfied"
        } else {
            ""
        }
    );
    Ok(0)
}
