//! Installing workers: from what the user typed (`iii worker add ARG`) or what iii.lock pins
//! (`sync`, `update`) to artifacts in the store, entries in config.yaml and pins in iii.lock.
//!
//! - [`Source::classify`]: whether an `add` argument is a path, an OCI reference or a
//!   registry name `name[@version]`;
//! - [`oci`]: `add` of an image reference, pinned by the manifest digest it resolved to;
//! - [`registry`]: `add` of a registry worker and its dependency graph (binaries, images,
//!   engine built-ins);
//! - [`sync`]: replaying iii.lock into the store, [`update`]: moving pins on purpose;
//! - [`clear`]: deleting what nothing uses from the store.
//!
//! config.yaml and iii.lock change together ([`commit`]): both under config.yaml's lock, and
//! when the second write fails the first is put back.

use std::path::Path;

use crate::config::{edit, Config};
use crate::lockfile::{manifest, Lock};
use crate::project::Project;
use crate::Result;

pub mod clear;
pub mod oci;
pub mod registry;
pub mod sync;
pub mod update;

/// What an `add` argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source<'a> {
    /// A local directory (`./w`, `/srv/w`, `~/w`).
    Local(&'a str),
    /// An OCI image reference.
    Oci(&'a str),
    /// A worker of the iii registry, optionally pinned to a version.
    Registry {
        name: &'a str,
        version: Option<&'a str>,
    },
}

impl<'a> Source<'a> {
    /// A path if it starts with `.`, `/` or `~`; an OCI reference if it has a `/`, or a `:`
    /// without an `@` (`python:3.12`, `ghcr.io/o/w:1`); otherwise a registry name, split at
    /// the first `@` (`pdfkit@1.2.0`).
    pub fn classify(arg: &'a str) -> Source<'a> {
        if arg.starts_with(['.', '/', '~']) {
            Source::Local(arg)
        } else if arg.contains('/') || (arg.contains(':') && !arg.contains('@')) {
            Source::Oci(arg)
        } else {
            match arg.split_once('@') {
                Some((name, version)) => Source::Registry {
                    name,
                    version: Some(version).filter(|v| !v.is_empty()),
                },
                None => Source::Registry {
                    name: arg,
                    version: None,
                },
            }
        }
    }
}

/// Edit config.yaml and iii.lock as one change. `edit` turns config.yaml's text into the new
/// text (see [`edit::update_file`]); `pin` changes the lock (an empty one when there is none).
/// The lock is refreshed with the project's `iii.worker.yaml` dependencies when it has one.
/// The lock is written first, under config.yaml's lock; if config.yaml then cannot be written,
/// the previous iii.lock (or its absence) is restored, so the two never disagree by accident.
pub fn commit<T>(
    project: &Project,
    edit: impl FnOnce(&str, &Config) -> Result<(String, T)>,
    pin: impl FnOnce(&mut Lock) -> Result<()>,
) -> Result<T> {
    let lock_path = project.lock_path();
    let mut previous: Option<Option<Vec<u8>>> = None;
    let result = edit::update_file(&project.config_path, |text, current| {
        let (new_text, out) = edit(text, current)?;
        let before = read_optional(&lock_path)?;
        let mut lock = Lock::load(&lock_path)?.unwrap_or_else(Lock::new);
        let unchanged = lock.clone();
        pin(&mut lock)?;
        if let Some(deps) = manifest::dependencies(&project.dir())? {
            lock.manifest_hash = Some(manifest::hash(&deps));
            lock.declared_dependencies = Some(deps);
        }
        if lock != unchanged {
            lock.write(&lock_path)?;
            previous = Some(before);
        }
        Ok((new_text, out))
    });
    if result.is_err() {
        if let Some(before) = previous {
            restore(&lock_path, before);
        }
    }
    result
}

/// Change only iii.lock (under config.yaml's directory lock, like [`commit`]).
pub fn pin_only(project: &Project, pin: impl FnOnce(&mut Lock) -> Result<()>) -> Result<()> {
    let _held = crate::file_lock::FileLock::acquire_dir(&project.dir())?;
    let path = project.lock_path();
    let mut lock = Lock::load(&path)?.unwrap_or_else(Lock::new);
    let unchanged = lock.clone();
    pin(&mut lock)?;
    if lock != unchanged {
        lock.write(&path)?;
    }
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::err!("reading {}: {e}", path.display())),
    }
}

fn restore(path: &Path, before: Option<Vec<u8>>) {
    let res = match before {
        Some(bytes) => std::fs::write(path, bytes),
        None => std::fs::remove_file(path),
    };
    if let Err(e) = res {
        crate::say!("warning: could not restore {}: {e}", path.display());
    }
}

/// Ask `question` on the terminal; `false` unless the answer is y or yes. Only called when
/// stdin and stderr are terminals.
pub fn confirm(question: &str) -> bool {
    {
        use std::io::Write;
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "{question} [y/N] ");
        let _ = stderr.flush();
    }
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Whether a prompt can be answered: stdin and stderr are terminals.
pub fn interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_classified_like_the_reference_cli() {
        let reg = |name, version| Source::Registry { name, version };
        assert_eq!(Source::classify("pdfkit"), reg("pdfkit", None));
        assert_eq!(
            Source::classify("pdfkit@1.2.0"),
            reg("pdfkit", Some("1.2.0"))
        );
        assert_eq!(Source::classify("python:3.12"), Source::Oci("python:3.12"));
        assert_eq!(
            Source::classify("localhost:5000/w:1"),
            Source::Oci("localhost:5000/w:1")
        );
        assert_eq!(
            Source::classify("ghcr.io/o/w@sha256:ab"),
            Source::Oci("ghcr.io/o/w@sha256:ab")
        );
        assert_eq!(Source::classify("./w"), Source::Local("./w"));
        assert_eq!(Source::classify("~/w"), Source::Local("~/w"));
    }
}
