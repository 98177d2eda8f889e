//! `iii worker update [NAME]`: move pins on purpose.
//!
//! An image worker whose config.yaml entry names a tag is re-resolved from that tag (the
//! digest it points at now becomes the pin); a registry worker (a binary, or a built-in) is
//! resolved again at the registry's latest version, with its dependencies. Without a name,
//! the lock's roots — the pins nothing else depends on — are updated.

use crate::config::Config;
use crate::lockfile::{Kind, Lock, Locked, Source};
use crate::oci::{Reference, Store};
use crate::project::Project;
use crate::worker_registry::{self as registry, binary, Failure};
use crate::{err, Result};

/// One pin that moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub name: String,
    pub from: String,
    pub to: String,
}

/// Update `name`, or every root of the lock. The pins that moved.
pub fn update(project: &Project, name: Option<&str>) -> Result<Vec<Moved>> {
    let lock_path = project.lock_path();
    let Some(lock) = Lock::load(&lock_path)? else {
        return match name {
            Some(n) => Err(err!(
                "worker {n} is not in {} (there is no such file)",
                lock_path.display()
            )),
            None => {
                crate::say!("no {}: nothing to update", lock_path.display());
                Ok(vec![])
            }
        };
    };
    let targets: Vec<String> = match name {
        Some(n) if lock.workers.contains_key(n) => vec![n.to_string()],
        Some(n) => return Err(err!("worker {n} is not in {}", lock_path.display())),
        None => roots(&lock),
    };
    if targets.is_empty() {
        crate::say!(
            "no workers pinned in {}; nothing to update",
            lock_path.display()
        );
        return Ok(vec![]);
    }
    let config = Config::load(&project.config_path)?;
    let mut moved = Vec::new();
    let mut failed = Vec::new();
    for t in &targets {
        let before = lock.workers[t].clone();
        match update_one(project, &config, t, &before) {
            Ok(Some(after)) if after != describe(&before) => moved.push(Moved {
                name: t.clone(),
                from: describe(&before),
                to: after,
            }),
            Ok(_) => crate::say!("{t}: already at the newest ({})", describe(&before)),
            Err(e) => {
                crate::say!("error: {e}");
                failed.push(t.clone());
            }
        }
    }
    if !failed.is_empty() {
        return Err(err!(
            "{} of {} workers could not be updated: {}",
            failed.len(),
            targets.len(),
            failed.join(", ")
        ));
    }
    Ok(moved)
}

/// Pins no other pin depends on (all of them when every one is someone's dependency).
fn roots(lock: &Lock) -> Vec<String> {
    let depended: std::collections::HashSet<&String> = lock
        .workers
        .values()
        .flat_map(|p| p.dependencies.keys())
        .collect();
    let roots: Vec<String> = lock
        .workers
        .keys()
        .filter(|n| !depended.contains(n))
        .cloned()
        .collect();
    if roots.is_empty() {
        lock.workers.keys().cloned().collect()
    } else {
        roots
    }
}

/// What a pin points at, for "from → to" lines: the image digest, or the version.
fn describe(p: &Locked) -> String {
    match &p.source {
        Some(Source::Image { image }) => image
            .rsplit_once('@')
            .map_or(image.as_str(), |(_, d)| d)
            .to_string(),
        _ => p.version.clone(),
    }
}

/// Re-resolve one pin; what it points at afterwards.
fn update_one(
    project: &Project,
    config: &Config,
    name: &str,
    pin: &Locked,
) -> Result<Option<String>> {
    let image = config.worker(name).and_then(|w| w.image.clone());
    if let (Kind::Image, Some(image)) = (pin.kind, image) {
        let reference = Reference::parse(&image)?;
        if reference.digest.is_some() {
            crate::say!("{name}: config.yaml pins {image} by digest; nothing to move");
            return Ok(None);
        }
        let store = Store::open(&crate::project::store_home()?)?;
        let mut progress = crate::oci::progress::for_stderr();
        let installed = crate::oci::pull(&image, &store, progress.as_mut())
            .map_err(|e| err!("worker {name}: {e}"))?;
        let locked = super::oci::pin(&reference, &installed.manifest_digest);
        let after = describe(&locked);
        super::pin_only(project, |lock| {
            lock.workers.insert(name.to_string(), locked);
            Ok(())
        })?;
        return Ok(Some(after));
    }
    let graph = match registry::resolve(name, None, binary::host_target()) {
        Ok(g) => g,
        Err(Failure::NotFound) => {
            return Err(err!(
                "worker {name} is no longer in the registry at {}",
                registry::api_base()
            ))
        }
        Err(Failure::Unsupported(why)) => {
            return Err(err!(
                "registry API {}: /resolve: {why}",
                registry::api_base()
            ))
        }
        Err(Failure::Other(e)) => return Err(e),
    };
    super::registry::install_graph(
        project,
        &graph,
        binary::host_target(),
        super::registry::Options {
            yes: true,
            force: false,
        },
    )?;
    let lock = Lock::load(&project.lock_path())?.unwrap_or_else(Lock::new);
    Ok(lock.workers.get(name).map(describe))
}
