//! The command line: argument parsing and dispatch. One file per command; each stays thin and
//! calls into the module that owns the concept.
//!
//! Contract for scripts: exit 0 success, 1 failure, 2 usage error; machine output on
//! stdout, human messages on stderr, errors as one `error: …` line.

use std::path::PathBuf;

use argh::FromArgs;

use crate::project::Project;
use crate::Error;

pub mod add;
pub mod clear;
pub mod engine;
pub mod exec;
pub mod list;
pub mod logs;
pub mod remove;
pub mod restart;
pub mod start;
pub mod stop;
pub mod sync;
pub mod trigger;
pub mod update;
pub mod verify;

#[derive(FromArgs, Debug)]
/// iii runs workers — OCI images in isolated sandboxes. Without a subcommand it is the engine:
/// it starts every worker in config.yaml and supervises them until SIGINT/SIGTERM.
pub struct Iii {
    /// path to config.yaml (default: $III_CONFIG_PATH, else ./config.yaml)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,

    #[argh(subcommand)]
    pub command: Option<TopCommand>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum TopCommand {
    Worker(WorkerCommand),
    Trigger(trigger::Args),
}

#[derive(FromArgs, Debug)]
/// Manage workers: add, remove, list, start, stop, restart, logs, exec, verify, sync, update,
/// clear.
#[argh(subcommand, name = "worker")]
pub struct WorkerCommand {
    #[argh(subcommand)]
    pub command: WorkerSub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum WorkerSub {
    Add(add::Args),
    Remove(remove::Args),
    List(list::Args),
    Start(start::Args),
    Stop(stop::Args),
    Restart(restart::Args),
    Logs(logs::Args),
    Exec(exec::Args),
    Verify(verify::Args),
    Sync(sync::Args),
    Update(update::Args),
    Clear(clear::Args),
}

/// What every command gets besides its own arguments.
pub struct Ctx {
    pub project: Project,
}

/// Parse `std::env::args`, run the command, print any error, and return the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    let name = args.first().map(String::as_str).unwrap_or("iii");
    let name = std::path::Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("iii");
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let parsed = match Iii::from_args(&[name], &rest) {
        Ok(p) => p,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    die_quietly_on_closed_stdout();
                    match crate::stdio::out(&format!("{}\n", early.output)) {
                        Ok(()) => 0,
                        Err(e) => report(&e),
                    }
                }
                Err(()) => {
                    crate::say!("error: {} (see '{} --help')", usage_error(&early.output), {
                        command_path(&rest)
                    });
                    2
                }
            };
        }
    };
    match run(parsed) {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// argh's usage error ("Unrecognized argument: x", "Required positional arguments not
/// provided:\n    name") as one lower-case clause.
fn usage_error(output: &str) -> String {
    let mut parts = output.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = parts
        .next()
        .unwrap_or("invalid usage")
        .trim_end_matches(['.', ':']);
    // "Error parsing option …": the line already starts with `error: `.
    let first = first.strip_prefix("Error ").unwrap_or(first);
    let rest: Vec<&str> = parts.collect();
    let mut msg = first.to_string();
    if !rest.is_empty() {
        msg = format!("{msg}: {}", rest.join(", "));
    }
    let mut c = msg.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => msg,
    }
}

/// The command a usage error is about, for its `--help` hint: `iii`, `iii worker` or
/// `iii worker <command>`, as far as the arguments name real ones.
fn command_path(args: &[&str]) -> String {
    use argh::SubCommands;
    let mut path = String::from("iii");
    let mut words = args.iter().filter(|a| !a.starts_with('-'));
    if args.first().is_some_and(|a| *a == "-c" || *a == "--config") {
        words.next(); // -c's value
    }
    if words.next() != Some(&"worker") {
        return path;
    }
    path.push_str(" worker");
    if let Some(sub) = words.next() {
        if WorkerSub::COMMANDS.iter().any(|c| c.name == *sub) {
            path.push(' ');
            path.push_str(sub);
        }
    }
    path
}

/// Print an error as the one-line `error: …` and return its exit code.
pub fn report(e: &Error) -> i32 {
    crate::say!("error: {e}");
    e.exit_code
}

fn run(cli: Iii) -> crate::Result<i32> {
    let ctx = Ctx {
        project: Project::locate(cli.config.as_deref()),
    };
    match cli.command {
        None => engine::run(&ctx),
        Some(TopCommand::Trigger(a)) => trigger::run(&ctx, a),
        Some(TopCommand::Worker(w)) => match w.command {
            WorkerSub::Add(a) => add::run(&ctx, a),
            WorkerSub::Remove(a) => remove::run(&ctx, a),
            WorkerSub::List(a) => {
                die_quietly_on_closed_stdout();
                list::run(&ctx, a)
            }
            WorkerSub::Start(a) => start::run(&ctx, a),
            WorkerSub::Stop(a) => stop::run(&ctx, a),
            WorkerSub::Restart(a) => restart::run(&ctx, a),
            WorkerSub::Logs(a) => {
                die_quietly_on_closed_stdout();
                logs::run(&ctx, a)
            }
            WorkerSub::Exec(a) => exec::run(&ctx, a),
            WorkerSub::Verify(a) => verify::run(&ctx, a),
            WorkerSub::Sync(a) => sync::run(&ctx, a),
            WorkerSub::Update(a) => update::run(&ctx, a),
            WorkerSub::Clear(a) => clear::run(&ctx, a),
        },
    }
}

/// Commands that only print (`iii worker list | head`, `--help | head`) end by SIGPIPE like
/// coreutils when their reader goes away, instead of panicking in `println!`. Everything else
/// keeps Rust's default (SIGPIPE ignored): a closed registry connection or control socket is
/// an error to handle (retry, report), not a reason to die silently.
fn die_quietly_on_closed_stdout() {
    // SAFETY: resetting a signal disposition to its default has no memory-safety preconditions;
    // it runs before the command starts any thread.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}
