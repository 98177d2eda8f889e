//! Whether a project's config.yaml and iii.lock agree (`verify`, `sync --frozen`), and whether
//! the pins satisfy the version ranges they declare (`verify --strict`).
//!
//! Every container worker of config.yaml must be pinned: an `image:` entry by an image pin of
//! the same repository, a bare registry-managed entry by a binary with an artifact for this
//! host (or an image). Built-in workers need no pin; extra pins are fine (a dependency that
//! config.yaml no longer lists costs nothing).

use std::collections::BTreeMap;
use std::fmt;

use super::{Lock, Source};
use crate::config::Config;

/// One way config.yaml and iii.lock disagree, naming the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// In config.yaml, not in iii.lock.
    NotPinned { name: String },
    /// config.yaml names something other than what iii.lock pins.
    Mismatch {
        name: String,
        config: String,
        pinned: String,
    },
    /// A binary pin without an artifact for this host.
    NoArtifact {
        name: String,
        target: String,
        available: Vec<String>,
    },
    /// A dependency (of a pin, or of the project's iii.worker.yaml: `of` is `None`) that is
    /// not pinned, or pinned at a version outside its range.
    Dependency {
        of: Option<String>,
        dep: String,
        range: String,
        locked: Option<String>,
    },
    /// iii.worker.yaml's dependencies changed since iii.lock recorded their hash.
    ManifestChanged,
}

impl Problem {
    /// The worker the problem is about (`None`: the project's manifest).
    pub fn worker(&self) -> Option<&str> {
        match self {
            Problem::NotPinned { name }
            | Problem::Mismatch { name, .. }
            | Problem::NoArtifact { name, .. } => Some(name),
            Problem::Dependency { of, .. } => of.as_deref(),
            Problem::ManifestChanged => None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotPinned { name } => {
                write!(f, "+ {name}: in config.yaml, not pinned in iii.lock")
            }
            Problem::Mismatch {
                name,
                config,
                pinned,
            } => write!(
                f,
                "~ {name}: config.yaml has {config}, iii.lock pins {pinned}"
            ),
            Problem::NoArtifact {
                name,
                target,
                available,
            } => write!(
                f,
                "! {name}: iii.lock has no binary for {target} (it has: {})",
                available.join(", ")
            ),
            Problem::Dependency {
                of,
                dep,
                range,
                locked,
            } => {
                let who = of.as_deref().unwrap_or("iii.worker.yaml");
                match locked {
                    None => write!(
                        f,
                        "! {who}: depends on {dep} {range}, which iii.lock does not pin"
                    ),
                    Some(v) => write!(
                        f,
                        "! {who}: depends on {dep} {range}, iii.lock pins {dep} {v}"
                    ),
                }
            }
            Problem::ManifestChanged => write!(
                f,
                "! iii.worker.yaml: its dependencies changed since iii.lock was written"
            ),
        }
    }
}

/// Where config.yaml's container workers and iii.lock's pins disagree, for a host of
/// `target` (a target triple).
pub fn drift(config: &Config, lock: &Lock, target: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    for w in &config.workers {
        let name = w.name.clone();
        let Some(pin) = lock.workers.get(&w.name) else {
            problems.push(Problem::NotPinned { name });
            continue;
        };
        match (&w.image, &pin.source) {
            (Some(image), Some(Source::Image { image: pinned })) => {
                if !crate::oci::reference::same_repository(image, pinned) {
                    problems.push(Problem::Mismatch {
                        name,
                        config: format!("image {image}"),
                        pinned: pinned.clone(),
                    });
                }
            }
            (None, Some(Source::Image { .. })) => {}
            (None, Some(Source::Binary { artifacts })) => {
                if !artifacts.contains_key(target) {
                    problems.push(Problem::NoArtifact {
                        name,
                        target: target.to_string(),
                        available: artifacts.keys().cloned().collect(),
                    });
                }
            }
            (image, _) => problems.push(Problem::Mismatch {
                name,
                config: match image {
                    Some(i) => format!("image {i}"),
                    None => "a registry-managed worker".into(),
                },
                pinned: format!("a worker of type {}", pin.kind.as_str()),
            }),
        }
    }
    problems
}

/// Dependencies that iii.lock does not satisfy: each pin's own, and those of the project's
/// `iii.worker.yaml` (`manifest`, when there is one), plus a manifest whose hash changed.
pub fn strict(lock: &Lock, manifest: Option<&BTreeMap<String, String>>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut check = |of: Option<&str>, dep: &str, range: &str| {
        let locked = lock.workers.get(dep).map(|p| p.version.clone());
        let ok = locked.as_deref().is_some_and(|v| satisfies(v, range));
        if !ok {
            problems.push(Problem::Dependency {
                of: of.map(str::to_string),
                dep: dep.to_string(),
                range: range.to_string(),
                locked,
            });
        }
    };
    for (name, pin) in &lock.workers {
        for (dep, range) in &pin.dependencies {
            check(Some(name), dep, range);
        }
    }
    if let Some(deps) = manifest {
        for (dep, range) in deps {
            check(None, dep, range);
        }
        if lock
            .manifest_hash
            .as_ref()
            .is_some_and(|h| *h != super::manifest::hash(deps))
        {
            problems.push(Problem::ManifestChanged);
        }
    }
    problems
}

/// Whether `version` is in `range` (`*` and `latest` take anything; `1` reads as `1.0.0`).
pub fn satisfies(version: &str, range: &str) -> bool {
    let range = range.trim();
    if range == "*" || range == "latest" {
        return true;
    }
    let Ok(req) = semver::VersionReq::parse(range) else {
        return false;
    };
    let v = version.trim().trim_start_matches('v');
    let padded = match v.matches('.').count() {
        0 => format!("{v}.0.0"),
        1 => format!("{v}.0"),
        _ => v.to_string(),
    };
    semver::Version::parse(&padded).is_ok_and(|v| req.matches(&v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn lock(text: &str) -> Lock {
        Lock::parse(text, Path::new("iii.lock")).unwrap()
    }

    #[test]
    fn config_workers_must_be_pinned_by_the_same_repository() {
        let config = Config::parse(
            "workers:\n  - {name: a, image: 'r.io/x/a:1'}\n  - {name: b, image: 'r.io/x/b:1'}\n  - {name: c}\n  - {name: d}\n  - {name: iii-http}\n",
            Path::new("config.yaml"),
        )
        .unwrap();
        let l = lock(&format!(
            "version: 1\nworkers:\n  a: {{version: '1', type: image, source: {{kind: image, image: 'r.io/x/a@sha256:{D}'}}}}\n  b: {{version: '1', type: image, source: {{kind: image, image: 'r.io/x/other@sha256:{D}'}}}}\n  c: {{version: '1', type: binary, source: {{kind: binary, artifacts: {{aarch64-apple-darwin: {{url: 'https://e/c', sha256: {D}}}}}}}}}\n"
        ));
        let p = drift(&config, &l, "x86_64-unknown-linux-gnu");
        let names: Vec<_> = p.iter().map(|p| p.worker().unwrap()).collect();
        assert_eq!(names, ["b", "c", "d"], "{p:?}");
        assert!(matches!(p[0], Problem::Mismatch { .. }));
        assert!(p[1].to_string().contains("no binary for x86_64"));
        assert!(p[2].to_string().contains("not pinned"));
    }

    #[test]
    fn strict_checks_ranges_and_the_manifest() {
        let l = lock("version: 1\nworkers:\n  a: {version: 1.2.0, type: engine, dependencies: {b: ^2.0, c: '*'}}\n  b: {version: 1.4.0, type: engine}\n");
        let p = strict(&l, None);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].to_string().contains("b ^2.0, iii.lock pins b 1.4.0"));
        assert!(p[1]
            .to_string()
            .contains("c *, which iii.lock does not pin"));
        let deps = BTreeMap::from([("b".to_string(), "^1".to_string())]);
        assert!(strict(
            &lock("version: 1\nworkers:\n  b: {version: '1.4', type: engine}\n"),
            Some(&deps)
        )
        .is_empty());
        assert!(satisfies("1", "^1.0") && !satisfies("0.9.0", ">=1") && !satisfies("x", "^1"));
    }
}
