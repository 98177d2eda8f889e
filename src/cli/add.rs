//! `iii worker add <ref>`: pull an image into the store and register it in config.yaml.

use std::path::Path;

use super::Ctx;
use crate::config::{edit, image, validate_name, Config};
use crate::oci::reference::Reference;
use crate::oci::store::Store;
use crate::{err, project, Error, Result};
use argh::FromArgs;

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

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    let reference = Reference::parse(&args.reference)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| reference.short_name().to_string());
    validate_name(&name).map_err(|m| {
        let hint = if args.name.is_none() {
            " (choose one with --name)"
        } else {
            ""
        };
        Error::new(format!("{m}{hint}"))
    })?;
    let config_path = &ctx.project.config_path;
    // Fail before a long pull when the name is taken; checked again under the lock below.
    if !args.force && Config::load(config_path)?.worker(&name).is_some() {
        return Err(name_taken(&name, config_path));
    }

    let store = Store::open(&project::store_home()?)?;
    let mut progress = crate::oci::progress::for_stderr();
    let image = crate::oci::pull(&args.reference, &store, progress.as_mut())?;
    let resources = image::resources(&image)?;

    edit::update_file(config_path, |text, current| {
        let existing = current.worker(&name);
        let entry = image::entry(&name, &args.reference, &image, resources, existing);
        let text = match existing {
            None => edit::add_entry(text, &entry)?,
            Some(_) if args.force => edit::replace_entry(text, current, &name, &entry)?,
            Some(_) => return Err(name_taken(&name, config_path)),
        };
        Ok((text, ()))
    })?;
    // After the edit: printing can fail (stdout full or gone), and the man page says that
    // config.yaml holds the entry then.
    crate::stdio::out(&format!("{name}\n"))?;
    Ok(0)
}

fn name_taken(name: &str, config_path: &Path) -> Error {
    err!(
        "a worker named {name:?} is already in {}; use --force to replace it or --name to pick another",
        config_path.display()
    )
}
