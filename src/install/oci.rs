//! `iii worker add <image reference>`: pull the image into the store, write its config.yaml
//! entry, and pin the manifest digest the reference resolved to in iii.lock — so a tag that
//! moves later cannot change what `sync` installs on another machine.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{edit, image, validate_name, Config};
use crate::lockfile::{Kind, Locked, Source};
use crate::oci::{Reference, Store};
use crate::project::Project;
use crate::{err, Error, Result};

/// Add `reference` as the worker `name` (default: the repository's last component); with
/// `force`, replace an entry of that name. The worker's name.
pub fn add(project: &Project, reference: &str, name: Option<&str>, force: bool) -> Result<String> {
    let parsed = Reference::parse(reference)?;
    let name = name.unwrap_or_else(|| parsed.short_name()).to_string();
    validate_name(&name).map_err(|m| {
        let hint = if name == parsed.short_name() {
            " (choose one with --name)"
        } else {
            ""
        };
        Error::new(format!("{m}{hint}"))
    })?;
    let config_path = &project.config_path;
    // Fail before a long pull when the name is taken; checked again under the lock below.
    if !force && Config::load(config_path)?.worker(&name).is_some() {
        return Err(name_taken(&name, config_path));
    }

    let store = Store::open(&crate::project::store_home()?)?;
    let mut progress = crate::oci::progress::for_stderr();
    let installed = crate::oci::pull(reference, &store, progress.as_mut())?;
    let resources = image::resources(&installed)?;
    let locked = pin(&parsed, &installed.manifest_digest);

    super::commit(
        project,
        |text, current| {
            let existing = current.worker(&name);
            let entry = image::entry(&name, reference, &installed, resources, existing);
            let text = match existing {
                None => edit::add_entry(text, &entry)?,
                Some(_) if force => edit::replace_entry(text, current, &name, &entry)?,
                Some(_) => return Err(name_taken(&name, config_path)),
            };
            Ok((text, ()))
        },
        |lock| {
            lock.workers.insert(name.clone(), locked);
            Ok(())
        },
    )?;
    Ok(name)
}

/// The iii.lock entry of an image `reference` that resolved to the manifest `digest`: its tag
/// as the version, the repository at that digest as the source.
pub fn pin(reference: &Reference, digest: &str) -> Locked {
    let version = match (&reference.tag, &reference.digest) {
        (Some(t), _) => t.clone(),
        (None, Some(d)) => d.to_string(),
        (None, None) => "latest".into(),
    };
    Locked {
        version,
        kind: Kind::Image,
        dependencies: BTreeMap::new(),
        source: Some(Source::Image {
            image: format!("{}/{}@{digest}", reference.registry, reference.repository),
        }),
    }
}

fn name_taken(name: &str, config_path: &Path) -> Error {
    err!(
        "a worker named {name:?} is already in {}; use --force to replace it or --name to pick another",
        config_path.display()
    )
}
