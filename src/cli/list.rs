//! `iii worker list`: every worker in config.yaml with its state.

use argh::FromArgs;

use super::Ctx;
use std::io::Write;

use crate::supervisor::lifecycle;
use crate::Context;

#[derive(FromArgs, Debug)]
/// List every worker in config.yaml: NAME, IMAGE, STATUS, SANDBOX, PID, UPTIME, RESTARTS,
/// SDK, FUNCTIONS.
#[argh(subcommand, name = "list")]
pub struct Args {
    /// print a JSON array on stdout instead of a table
    #[argh(switch)]
    pub json: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> crate::Result<i32> {
    let rows = lifecycle::list(&ctx.project)?;
    // The table has no room for why an entry is invalid: say it on stderr.
    if !args.json {
        for r in rows.iter().filter(|r| r.status == "invalid") {
            crate::say!("warning: {}", r.error.as_deref().unwrap_or("invalid entry"));
        }
    }
    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&rows).context("encoding the worker list")?;
        s.push('\n');
        s
    } else {
        lifecycle::format_table(&rows)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
        .context("writing to stdout")?;
    Ok(0)
}
