//! `iii worker stop <name>…`.

use argh::FromArgs;

use super::Ctx;
use crate::config::Config;
use crate::supervisor::lifecycle;

#[derive(FromArgs, Debug)]
/// Stop workers: SIGTERM (or the image's StopSignal), then SIGKILL after --time.
#[argh(subcommand, name = "stop")]
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
        return Err(crate::err!("iii worker stop: name at least one worker"));
    }
    let timeout = std::time::Duration::from_secs(args.time);
    // Stopped in parallel: each may take its whole grace period.
    let results: Vec<_> = std::thread::scope(|s| {
        let jobs: Vec<_> = args
            .names
            .iter()
            .map(|n| s.spawn(move || (n, stop_one(ctx, n, timeout))))
            .collect();
        jobs.into_iter().filter_map(|j| j.join().ok()).collect()
    });
    let mut code = 0;
    for (name, r) in results {
        match r {
            Ok(outcome) => crate::say!("{}", outcome.message(name)),
            Err(e) => code = super::report(&e),
        }
    }
    Ok(code)
}

fn stop_one(
    ctx: &Ctx,
    name: &str,
    timeout: std::time::Duration,
) -> crate::Result<lifecycle::StopOutcome> {
    let config = Config::load(&ctx.project.config_path)?;
    if config.worker(name).is_none() && !ctx.project.worker_dir(name).exists() {
        return Err(crate::err!(
            "no worker named {name} in {}",
            ctx.project.config_path.display()
        ));
    }
    lifecycle::stop_worker(&ctx.project, name, timeout)
}
