//! `iii worker logs <name>`: the worker's stdout and stderr, in order.

use argh::FromArgs;

use super::Ctx;
use std::io::Write;

use crate::config::Config;
use crate::supervisor::logs;

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
    let mut out = Stdout {
        inner: std::io::stdout().lock(),
        closed: false,
    };
    let opts = logs::ReadOptions {
        tail: args.tail,
        timestamps: args.timestamps,
    };
    let res = if args.follow {
        // Whatever is on disk now, then everything that follows, until Ctrl-C (which ends the
        // process by its default action: nothing to clean up).
        logs::follow_from(&dir, opts, &mut out, &|| true)
    } else {
        logs::print(&dir, opts, &mut out)
    };
    match res {
        // `iii worker logs w | head`: the reader had enough; that is not a failure.
        Err(_) if out.closed => Ok(0),
        Err(e) => Err(e),
        Ok(()) => Ok(0),
    }
}

/// Standard output that remembers whether the reader went away (EPIPE).
struct Stdout<W: Write> {
    inner: W,
    closed: bool,
}

impl<W: Write> Write for Stdout<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.closed |= matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe);
        r
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.closed |= matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe);
        r
    }
}
