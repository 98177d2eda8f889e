//! `iii worker logs <name>`: the worker's stdout and stderr, in order.

use argh::FromArgs;

use super::Ctx;
use crate::config::Config;
use crate::engine::logs;

#[derive(FromArgs, Debug)]
/// Print a worker's logs (stdout and stderr, in order) on stdout.
#[argh(subcommand, name = "logs")]
pub struct Args {
    /// worker name
    #[argh(positional)]
    pub name: String,
    /// keep following new output, across worker restarts, until Ctrl-C
    #[argh(switch, short = 'f')]
    pub follow: bool,
    /// show only the last N lines
    #[argh(option, short = 'n')]
    pub tail: Option<usize>,
    /// prefix each line with its RFC 3339 timestamp
    #[argh(switch)]
    pub timestamps: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> crate::Result<i32> {
    let config = Config::load(&ctx.project.config_path)?;
    let dir = ctx.project.worker_dir(&args.name);
    if config.worker(&args.name).is_none() && !dir.exists() {
        return Err(crate::err!(
            "no worker named {} in {}",
            args.name,
            ctx.project.config_path.display()
        ));
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let opts = logs::ReadOptions {
        tail: args.tail,
        timestamps: args.timestamps,
    };
    if args.follow {
        // Whatever is on disk now, then everything that follows, until Ctrl-C (which ends the
        // process by its default action: nothing to clean up).
        logs::follow_from(&dir, opts, &mut out, &|| true)?;
    } else {
        logs::print(&dir, opts, &mut out)?;
    }
    Ok(0)
}
