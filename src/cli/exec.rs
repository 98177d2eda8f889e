//! `iii worker exec <name> [flags] -- <cmd> [args…]`: docker-exec into a running worker.

use argh::FromArgs;

use super::Ctx;
use crate::config::Config;
use crate::{err, Error};

#[derive(FromArgs, Debug)]
/// Run a command inside a running worker, like `docker exec`. The command's exit code is
/// iii's exit code (128+N for signal N; 124 timed out, 125 iii failed, 126 not executable,
/// 127 not found).
#[argh(subcommand, name = "exec")]
pub struct Args {
    /// set an environment variable in the command (KEY=VALUE, repeatable)
    #[argh(option, short = 'e')]
    pub env: Vec<String>,
    /// working directory inside the worker (default /workspace)
    #[argh(option, short = 'w')]
    pub workdir: Option<String>,
    /// force a pseudo-terminal
    #[argh(switch, short = 't')]
    pub tty: bool,
    /// force pipe mode even when stdin and stdout are terminals
    #[argh(switch)]
    pub no_tty: bool,
    /// kill the command after DURATION (e.g. 1500ms, 30s, 5m) and exit 124
    #[argh(option)]
    pub timeout: Option<String>,
    /// worker name
    #[argh(positional)]
    pub name: String,
    /// the command and its arguments (after --)
    #[argh(positional, greedy)]
    pub command: Vec<String>,
}

pub fn run(ctx: &Ctx, args: Args) -> crate::Result<i32> {
    use crate::exec::{client, duration};
    use crate::protocol::exec::{code, ExecRequest};
    use std::io::IsTerminal;

    let fail = |e: Error| e.with_exit_code(code::III_FAILED);
    if args.command.is_empty() {
        return Err(Error::new(
            "worker exec needs a command: iii worker exec <name> -- <cmd> [args…]",
        )
        .with_exit_code(2));
    }
    if args.tty && args.no_tty {
        return Err(Error::new("-t/--tty and --no-tty contradict each other").with_exit_code(2));
    }
    let timeout = match &args.timeout {
        Some(t) => Some(duration::parse(t).map_err(fail)?),
        None => None,
    };
    let mut env = Vec::new();
    for kv in &args.env {
        match kv.split_once('=') {
            Some(("", _)) => return Err(fail(err!("-e {kv:?}: the variable name is empty"))),
            Some((k, v)) => env.push((k.to_string(), v.to_string())),
            // `-e KEY` passes iii's own value, as docker does; unset means not passed.
            None => {
                if let Ok(v) = std::env::var(kv) {
                    env.push((kv.clone(), v));
                }
            }
        }
    }
    let config = Config::load(&ctx.project.config_path).map_err(fail)?;
    if config.worker(&args.name).is_none() {
        return Err(fail(err!(
            "no worker named {:?} in {}",
            args.name,
            ctx.project.config_path.display()
        )));
    }
    let sock = ctx.project.worker_dir(&args.name).join("control.sock");
    let Some(conn) = client::connect(&sock).map_err(fail)? else {
        return Err(fail(err!(
            "worker {} is not running (start it with `iii worker start {}`)",
            args.name,
            args.name
        )));
    };
    // TTY when asked, or when both ends are terminals (seed: piping either turns it off).
    let tty = args.tty
        || (!args.no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal());
    let req = ExecRequest {
        args: args.command,
        env,
        cwd: args.workdir.unwrap_or_else(|| "/workspace".into()),
        tty: tty.then(client::local_size),
    };
    client::run(conn, req, client::Options { timeout }).map_err(|e| {
        if e.exit_code == 1 {
            fail(e)
        } else {
            e
        }
    })
}
