//! The `iii` binary: the engine (no subcommand) and the `iii worker …` CLI — and, re-executed
//! with a hidden first argument, the two internal roles, dispatched here before any
//! command-line parsing: iii's init (PID 1 inside a sandbox; also `/init` of a `vm` guest)
//! and a worker's monitor (the process that owns one sandbox). Neither is in `--help`.

fn main() {
    let code = iii::init::entry()
        .or_else(iii::supervisor::monitor::entry)
        .unwrap_or_else(iii::cli::main);
    std::process::exit(code);
}
