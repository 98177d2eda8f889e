//! `iii worker exec <name> [flags] -- <cmd> [args…]`: docker-exec into a running worker.

use argh::FromArgs;

use super::Ctx;

#[derive(FromArgs, Debug)]
/// Run a command inside a running worker, like `docker exec`. The command's exit code is
/// iii's exit code (128+N for signal N; 125 iii failed, 126 not executable, 127 not found).
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

pub fn run(_ctx: &Ctx, _args: Args) -> crate::Result<i32> {
    super::not_yet_available("`iii worker exec`").map_err(|e| e.with_exit_code(125))
}
