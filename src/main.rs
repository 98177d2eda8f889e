//! The `iii` binary: the engine (no subcommand) and the `iii worker …` CLI.

fn main() {
    // Inside a sandbox this same binary runs as PID 1 (iii's init), chosen by a hidden first
    // argument, before any command-line parsing.
    if let Some(code) = iii::init::entry() {
        std::process::exit(code);
    }
    std::process::exit(iii::cli::main());
}
