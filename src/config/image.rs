//! What an installed image contributes to its worker's config.yaml entry: its `ENV` (minus the
//! variables that describe the image's own system) as `config:` values, and the `resources:`
//! its `/iii/worker.yaml` asks for — merged under what the user already wrote.

use std::path::Path;

use serde_yaml::Value;

use super::{edit, quantity, WorkerEntry};
use crate::oci::store::InstalledImage;
use crate::{err, Result};

/// Image `ENV` names that describe the image's own environment, not the worker's settings.
const SYSTEM_ENV: [&str; 5] = ["PATH", "HOME", "HOSTNAME", "LANG", "TERM"];

/// The entry `iii worker add` writes. With `--force` over an existing entry, the user's own `config:` values,
/// resources and sandbox/network choices win; the image only contributes keys that are new.
pub fn entry(
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
    for (k, v) in env(image) {
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
        image: Some(reference.to_string()),
        config,
        cpus,
        memory,
        sandbox: existing.map(|o| o.sandbox),
        network: existing.map(|o| o.network.clone()),
    }
}

/// The image's `ENV` as (name, value), minus the system variables.
fn env(image: &InstalledImage) -> Vec<(String, String)> {
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
pub fn resources(image: &InstalledImage) -> Result<(Option<f64>, Option<u64>)> {
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
