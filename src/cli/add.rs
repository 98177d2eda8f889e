//! `iii worker add <ref|name[@version]>…`: install workers and register them in config.yaml
//! and iii.lock.

use super::Ctx;
use crate::install::{self, registry, Source};
use crate::{err, Error, Result};
use argh::FromArgs;

#[derive(FromArgs, Debug)]
/// Add workers to config.yaml, pinned in iii.lock: an OCI image (pulled into the store) or a
/// worker of the iii registry with its dependencies. Prints each added worker's name on stdout.
#[argh(subcommand, name = "add")]
pub struct Args {
    /// image references (ghcr.io/org/worker:1.0, localhost:5000/w@sha256:…) or registry
    /// workers (pdfkit, pdfkit@1.2.0)
    #[argh(positional, greedy)]
    pub workers: Vec<String>,
    /// worker name for an image (default: the last path component of the repository)
    #[argh(option)]
    pub name: Option<String>,
    /// replace an existing worker of that name (re-pulls; keeps edited config: values)
    #[argh(switch)]
    pub force: bool,
    /// install dependency graphs of more than 32 workers without asking
    #[argh(switch, short = 'y')]
    pub yes: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    if args.workers.is_empty() {
        return Err(
            Error::new("worker add needs an image reference or a worker name").with_exit_code(2),
        );
    }
    if args.name.is_some() && args.workers.len() > 1 {
        return Err(
            Error::new("--name names one worker; add the others separately").with_exit_code(2),
        );
    }
    let mut failures = 0;
    for (i, arg) in args.workers.iter().enumerate() {
        if args.workers.len() > 1 {
            crate::say!("[{}/{}] adding {arg}", i + 1, args.workers.len());
        }
        match add_one(ctx, &args, arg) {
            Ok(names) => {
                // After the edit: printing can fail (stdout full or gone), and the man page says
                // that config.yaml holds the entry then.
                for n in names {
                    crate::stdio::out(&format!("{n}\n"))?;
                }
            }
            Err(e) if args.workers.len() == 1 => return Err(e),
            Err(e) => {
                super::report(&e);
                failures += 1;
            }
        }
    }
    Ok(if failures == 0 { 0 } else { 1 })
}

fn add_one(ctx: &Ctx, args: &Args, arg: &str) -> Result<Vec<String>> {
    match Source::classify(arg) {
        Source::Local(p) => Err(err!(
            "{p}: adding a local directory is not supported; build it into an image and add the image"
        )),
        Source::Oci(reference) => Ok(vec![install::oci::add(
            &ctx.project,
            reference,
            args.name.as_deref(),
            args.force,
        )?]),
        Source::Registry { name, version } => {
            if args.name.is_some() {
                return Err(Error::new(
                    "--name is for images; a registry worker keeps its registry name",
                )
                .with_exit_code(2));
            }
            registry::add(
                &ctx.project,
                name,
                version,
                registry::Options {
                    yes: args.yes,
                    force: args.force,
                },
            )
        }
    }
}
