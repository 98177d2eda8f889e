//! The `iii` binary: the engine (no subcommand) and the `iii worker …` CLI.

fn main() {
    std::process::exit(iii::cli::main());
}
