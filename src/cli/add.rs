//! `iii worker add <ref>`: pull an image into the store and register it in config.yaml.

use std::path::Path;

use argh::FromArgs;
use serde_yaml::Value;

use super::Ctx;
use crate::config::{edit, quantity, validate_name, Config, WorkerEntry};
use crate::oci::reference::Reference;
use crate::oci::store::{InstalledImage, Store};
use crate::{err, project, Error, Result};

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

/// Image `ENV` names that describe the image's own environment, not the worker's settings.
const SYSTEM_ENV: [&str; 5] = ["PATH", "HOME", "HOSTNAME", "LANG", "TERM"];

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
    let resources = image_resources(&image)?;

    edit::update_file(config_path, |text, current| {
        let existing = current.worker(&name);
        let entry = new_entry(&name, &args.reference, &image, resources, existing);
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

/// The entry to write. With `--force` over an existing entry, the user's own `config:` values,
/// resources and sandbox/network choices win; the image only contributes keys that are new.
fn new_entry(
    name: &str,
    reference: &str,
    image: &InstalledImage,
    image_resources: (Option<f64>, Option<u64>),
    existing: Option<&WorkerEntry>,
) -> edit::NewEntry {
    let mut config: Vec<(String, Value)> = Vec::new();
    if let Some(old) = existing {
        for (k, v) in &old.config {
            if let Some(k) = k.as_str() {
                config.push((k.to_string(), v.clone()));
            }
        }
    }
    for (k, v) in image_env(image) {
        if !config.iter().any(|(ok, _)| *ok == k) {
            config.push((k, Value::String(v)));
        }
    }
    let (mut cpus, mut memory) = image_resources;
    if let Some(old) = existing {
        cpus = old.resources.cpus.or(cpus);
        memory = old.resources.memory.or(memory);
    }
    edit::NewEntry {
        name: name.to_string(),
        image: reference.to_string(),
        config,
        cpus,
        memory,
        sandbox: existing.map(|o| o.sandbox),
        network: existing.map(|o| o.network.clone()),
    }
}

/// The image's `ENV` as (name, value), minus the system variables.
fn image_env(image: &InstalledImage) -> Vec<(String, String)> {
    image
        .config
        .env
        .iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            (!k.is_empty() && !SYSTEM_ENV.contains(&k)).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// `resources: {cpus, memory}` from the image's `/iii/worker.yaml`, when it has them.
fn image_resources(image: &InstalledImage) -> Result<(Option<f64>, Option<u64>)> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        #[serde(default)]
        resources: Option<Res>,
    }
    #[derive(serde::Deserialize)]
    struct Res {
        #[serde(default)]
        cpus: Option<f64>,
        #[serde(default)]
        memory: Option<Value>,
    }
    // The tree is the image's, so refuse symlinks: `/iii` → `/etc` must not make iii read
    // host files.
    let dir = image.rootfs.join("iii");
    let file = dir.join("worker.yaml");
    let is_real = |p: &Path, want_dir: bool| {
        std::fs::symlink_metadata(p).is_ok_and(|m| {
            if want_dir {
                m.is_dir()
            } else {
                m.is_file() && m.len() <= 64 * 1024
            }
        })
    };
    if !is_real(&dir, true) || !is_real(&file, false) {
        return Ok((None, None));
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| err!("reading /iii/worker.yaml of the image: {e}"))?;
    let m: Manifest = serde_yaml::from_str(&text)
        .map_err(|e| err!("the image's /iii/worker.yaml is malformed: {e}"))?;
    let Some(r) = m.resources else {
        return Ok((None, None));
    };
    let memory = match r.memory {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            quantity::parse_bytes_value(&v)
                .map_err(|e| err!("the image's /iii/worker.yaml: resources.memory: {e}"))?,
        ),
    };
    Ok((r.cpus.filter(|c| *c > 0.0 && c.is_finite()), memory))
}
