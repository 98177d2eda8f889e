//! `iii worker add <ref>`: pull an image into the store and register it in config.yaml.

use argh::FromArgs;

use super::Ctx;

#[derive(FromArgs, Debug)]
/// Pull an OCI image and add it to config.yaml as a worker. Prints the worker name on stdout.
#[argh(subcommand, name = "add")]
pub struct Args {
    /// image reference, e.g. ghcr.io/org/worker:1.0 or localhost:5000/w@sha256:…
    #[argh(positional)]
    pub reference: String,
    /// worker name (default: the last path component of the repository)
    #[argh(option)]
    pub name: Option<String>,
    /// replace an existing worker of that name (re-pulls; keeps edited config: values)
    #[argh(switch)]
    pub force: bool,
}

pub fn run(_ctx: &Ctx, _args: Args) -> crate::Result<i32> {
    super::not_yet_available("`iii worker add`")
}
