//! `iii worker sync [--frozen]`: install exactly what iii.lock pins.
//!
//! Images are pulled by the digest in the lock (never by the tag config.yaml shows, which may
//! have moved), binaries downloaded from the pinned URL and checked against the pinned
//! sha256. What is already in the store costs one directory lookup, so a warm sync is quick
//! enough to run on every CI job.
//!
//! Plain `sync` first pins what config.yaml lists and iii.lock does not (like `add` would:
//! an image by the digest its tag resolves to now), and re-pins an entry whose image
//! changed in config.yaml. `--frozen` changes neither file: when they disagree it prints the
//! drift and fails, before touching the store.

use crate::config::Config;
use crate::lockfile::check::{self, Problem};
use crate::lockfile::{manifest, Kind, Lock, Source};
use crate::oci::{Reference, Store};
use crate::project::Project;
use crate::worker_registry::binary;
use crate::{err, Result};

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Workers newly pinned in iii.lock (plain sync only).
    pub pinned: Vec<String>,
    /// Pins whose artifact was downloaded now.
    pub installed: usize,
    /// Pins already in the store.
    pub current: usize,
    /// Pins with nothing to install (engine built-ins, other hosts' binaries).
    pub skipped: usize,
}

impl Report {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "installed {}, already current {}, skipped {}",
            self.installed, self.current, self.skipped
        );
        if !self.pinned.is_empty() {
            s.push_str(&format!("; pinned {}", self.pinned.join(", ")));
        }
        s
    }
}

pub fn sync(project: &Project, frozen: bool) -> Result<Report> {
    let config = Config::load(&project.config_path)?;
    let lock_path = project.lock_path();
    let target = binary::host_target();
    let mut report = Report::default();
    let lock = match Lock::load(&lock_path)? {
        Some(l) => l,
        None if frozen => {
            return Err(err!(
                "{} does not exist; `sync --frozen` installs what it pins (run `iii worker sync` to write it)",
                lock_path.display()
            ))
        }
        None => Lock::new(),
    };
    let mut problems = check::drift(&config, &lock, target);
    if lock.manifest_hash.is_some() {
        match manifest::dependencies(&project.dir())? {
            None => {
                return Err(err!(
                    "{} records the dependencies of {} (manifest_hash), and there is no such file",
                    lock_path.display(),
                    project.dir().join(manifest::FILE).display()
                ))
            }
            Some(deps) if lock.manifest_hash != Some(manifest::hash(&deps)) => {
                problems.push(Problem::ManifestChanged)
            }
            Some(_) => {}
        }
    }
    let lock = if frozen {
        if !problems.is_empty() {
            return Err(drift_error(&problems, &lock_path));
        }
        lock
    } else {
        pin_missing(project, &config, &problems, &mut report)?;
        Lock::load(&lock_path)?.unwrap_or_else(Lock::new)
    };
    replay(&lock, &config, target, &mut report)?;
    Ok(report)
}

/// The drift report (one line per problem on stderr) and the error that ends `--frozen`.
pub fn drift_error(problems: &[Problem], lock_path: &std::path::Path) -> crate::Error {
    for p in problems {
        crate::say!("  {p}");
    }
    let names: Vec<&str> = problems
        .iter()
        .map(|p| p.worker().unwrap_or("iii.worker.yaml"))
        .collect();
    err!(
        "config.yaml and {} disagree ({}); nothing was changed — run `iii worker sync` to pin config.yaml's workers and commit iii.lock",
        lock_path.display(),
        names.join(", ")
    )
}

/// Plain sync: pin the config.yaml workers that iii.lock lacks or pins differently.
fn pin_missing(
    project: &Project,
    config: &Config,
    problems: &[Problem],
    report: &mut Report,
) -> Result<()> {
    let store = Store::open(&crate::project::store_home()?)?;
    for p in problems {
        match p {
            Problem::NotPinned { name } | Problem::Mismatch { name, .. } => {
                let entry = config.worker(name).expect("drift names config workers");
                match &entry.image {
                    Some(image) => {
                        let mut progress = crate::oci::progress::for_stderr();
                        let installed = crate::oci::pull(image, &store, progress.as_mut())
                            .map_err(|e| err!("worker {name}: {e}"))?;
                        let locked =
                            super::oci::pin(&Reference::parse(image)?, &installed.manifest_digest);
                        super::pin_only(project, |lock| {
                            lock.workers.insert(name.clone(), locked);
                            Ok(())
                        })?;
                    }
                    None => {
                        super::registry::add(
                            project,
                            name,
                            None,
                            super::registry::Options::default(),
                        )?;
                    }
                }
                report.pinned.push(name.clone());
            }
            Problem::ManifestChanged => {
                let deps = manifest::dependencies(&project.dir())?.unwrap_or_default();
                super::pin_only(project, |lock| {
                    lock.manifest_hash = Some(manifest::hash(&deps));
                    lock.declared_dependencies = Some(deps);
                    Ok(())
                })?;
            }
            Problem::NoArtifact { .. } | Problem::Dependency { .. } => {
                return Err(err!("{}", p.to_string().trim_start_matches(['!', ' '])))
            }
        }
    }
    Ok(())
}

/// Install every pin of `lock` that is not in the store yet.
fn replay(lock: &Lock, config: &Config, target: &str, report: &mut Report) -> Result<()> {
    let home = crate::project::store_home()?;
    let store = Store::open(&home)?;
    let mut failed = Vec::new();
    for (name, pin) in &lock.workers {
        let outcome = (|| -> Result<Outcome> {
            match (&pin.kind, &pin.source) {
                (Kind::Image, Some(Source::Image { image })) => {
                    let digest = Reference::parse(image)?
                        .digest
                        .ok_or_else(|| err!("{image} has no digest"))?;
                    if store.installed(&digest)?.is_some() {
                        return Ok(Outcome::Current);
                    }
                    let mut progress = crate::oci::progress::for_stderr();
                    crate::oci::pull(image, &store, progress.as_mut())?;
                    Ok(Outcome::Installed)
                }
                (Kind::Binary, Some(Source::Binary { artifacts })) => {
                    let Some(a) = artifacts.get(target) else {
                        if config.worker(name).is_some() {
                            return Err(err!("iii.lock has no binary for {target}"));
                        }
                        return Ok(Outcome::Skipped);
                    };
                    if binary::rootfs_of(&home, &a.sha256)
                        .join("bin")
                        .join(name)
                        .is_file()
                    {
                        return Ok(Outcome::Current);
                    }
                    binary::install(&home, name, a, &mut |m| crate::say!("{m}"))?;
                    Ok(Outcome::Installed)
                }
                (Kind::Engine, _) => Ok(Outcome::Skipped),
                (Kind::Bundle, _) => Err(err!("bundle workers are not supported by this iii")),
                (k, _) => Err(err!("a {} pin without its source", k.as_str())),
            }
        })();
        match outcome {
            Ok(Outcome::Installed) => report.installed += 1,
            Ok(Outcome::Current) => report.current += 1,
            Ok(Outcome::Skipped) => report.skipped += 1,
            Err(e) => {
                crate::say!("error: worker {name}: {e}");
                failed.push(name.clone());
            }
        }
    }
    if !failed.is_empty() {
        return Err(err!(
            "{} of {} pinned workers could not be installed: {} ({})",
            failed.len(),
            lock.workers.len(),
            failed.join(", "),
            report.summary()
        ));
    }
    Ok(())
}

enum Outcome {
    Installed,
    Current,
    Skipped,
}
