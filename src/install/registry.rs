//! `iii worker add NAME[@VERSION]`: a worker of the iii registry and its dependency graph.
//!
//! The registry resolves the name to a graph (`POST /resolve`; registries without it answer
//! one worker at `GET /download/<name>`). Every node is checked before anything changes — a
//! binary needs an artifact for this host on a public HTTPS URL, an image a reference — then
//! the artifacts are installed (binaries downloaded, verified and unpacked; images pulled),
//! and only then do config.yaml and iii.lock change, together. A built-in worker needs no
//! registry at all.

use std::collections::BTreeMap;

use crate::config::{edit, image, is_engine_worker, Config, WorkerEntry};
use crate::lockfile::{sha256_value, Artifact, Kind, Locked, Source};
use crate::oci::{Reference, Store};
use crate::project::Project;
use crate::worker_registry::{
    self as registry, binary, Download, Failure, Node, NodeRef, Resolved,
};
use crate::{err, Result};

/// How `add` may proceed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Consent to graphs of more than [`registry::CONSENT_ABOVE`] workers.
    pub yes: bool,
    /// Replace entries of the same name even when they are of another kind.
    pub force: bool,
}

/// What one node installs.
enum What {
    Binary(Artifact),
    Image(String),
    Engine,
}

struct Step {
    node: Node,
    what: What,
    dependencies: BTreeMap<String, String>,
    /// Filled in by the install: the pin and, for an image, what config.yaml gets from it.
    locked: Option<Locked>,
    installed_image: Option<crate::oci::InstalledImage>,
}

/// Add `name` (at `version`, else the registry's latest) with its dependencies. The names
/// written to config.yaml, dependencies first.
pub fn add(
    project: &Project,
    name: &str,
    version: Option<&str>,
    opts: Options,
) -> Result<Vec<String>> {
    crate::config::validate_name(name).map_err(crate::Error::new)?;
    if is_engine_worker(name) {
        return add_engine(project, name, version);
    }
    let target = binary::host_target();
    let graph = match registry::resolve(name, version, target) {
        Ok(g) => g,
        Err(Failure::NotFound) => return Err(not_found(name)),
        Err(Failure::Unsupported(why)) => legacy(name, version, &why)?,
        Err(Failure::Other(e)) => return Err(e),
    };
    install_graph(project, &graph, target, opts)
}

fn not_found(name: &str) -> crate::Error {
    err!(
        "worker {name} is not in the registry at {} (an image reference needs a registry host or a tag, e.g. docker.io/library/{name}:latest)",
        registry::api_base()
    )
}

/// Install a resolved graph (also what `update` does with a re-resolved one).
pub fn install_graph(
    project: &Project,
    graph: &Resolved,
    target: &str,
    opts: Options,
) -> Result<Vec<String>> {
    let order = graph.install_order()?;
    if order.len() > registry::CONSENT_ABOVE && !opts.yes {
        let question = format!(
            "{} needs {} workers; continue installing all of them?",
            graph.root.name,
            order.len()
        );
        if !super::interactive() {
            return Err(err!(
                "{} needs {} workers (more than {}); pass --yes to install them all",
                graph.root.name,
                order.len(),
                registry::CONSENT_ABOVE
            ));
        }
        if !super::confirm(&question) {
            return Err(err!("aborted; nothing was installed"));
        }
    }
    // Every node is checked before anything is downloaded or written.
    let mut steps = order
        .iter()
        .map(|n| plan(n, graph, target))
        .collect::<Result<Vec<_>>>()?;
    let config = Config::load(&project.config_path)?;
    for s in &steps {
        check_conflict(&config, s, opts.force, &project.config_path)?;
    }
    let home = crate::project::store_home()?;
    let store = Store::open(&home)?;
    for s in &mut steps {
        install(s, &home, &store)?;
    }
    let written = super::commit(
        project,
        |text, current| {
            let mut text = text.to_string();
            let mut current = current.clone();
            let mut written = Vec::new();
            for s in &steps {
                let Some(entry) = entry_for(s, &current) else {
                    continue;
                };
                let exists = current.worker(&entry.name).is_some();
                text = if exists {
                    edit::replace_entry(&text, &current, &entry.name, &entry)?
                } else if current.builtin(&entry.name).is_some() {
                    written.push(entry.name.clone());
                    continue;
                } else {
                    edit::add_entry(&text, &entry)?
                };
                current = Config::parse_lenient(&text, &project.config_path)?;
                written.push(entry.name.clone());
            }
            Ok((text, written))
        },
        |lock| {
            for s in &steps {
                if let Some(l) = &s.locked {
                    lock.workers.insert(s.node.name.clone(), l.clone());
                }
            }
            Ok(())
        },
    )?;
    print_tree(graph, &steps);
    Ok(written)
}

/// The install step for `node`, refused before anything changes if it cannot work here.
fn plan(node: &Node, graph: &Resolved, target: &str) -> Result<Step> {
    let name = &node.name;
    let what = match node.kind.as_str() {
        "binary" => {
            let binaries = node.binaries.clone().unwrap_or_default();
            let artifact = binaries.get(target).cloned().ok_or_else(|| {
                err!(
                    "worker {name}: the registry has no binary for {target} (available: {})",
                    if binaries.is_empty() {
                        "none".to_string()
                    } else {
                        binaries.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                )
            })?;
            if !crate::lockfile::is_sha256_hex(&sha256_value(&artifact.sha256)) {
                return Err(err!(
                    "worker {name}: the registry's sha256 {:?} is not 64 hex digits",
                    artifact.sha256
                ));
            }
            binary::check_url(&artifact.url).map_err(|e| err!("worker {name}: {e}"))?;
            What::Binary(artifact)
        }
        "image" => {
            let image = node
                .image
                .clone()
                .filter(|i| !i.trim().is_empty())
                .ok_or_else(|| err!("worker {name}: the registry names no image"))?;
            Reference::parse(&image).map_err(|e| err!("worker {name}: {e}"))?;
            What::Image(image)
        }
        "engine" => What::Engine,
        other => {
            return Err(err!(
                "worker {name}: workers of type {other:?} are not supported by this iii (binary, image and engine are)"
            ))
        }
    };
    let dependencies = match &node.dependencies {
        Some(d) => d.clone(),
        None => graph
            .edges
            .iter()
            .filter(|e| e.from == *name)
            .map(|e| (e.to.clone(), e.range.clone().unwrap_or_else(|| "*".into())))
            .collect(),
    };
    Ok(Step {
        node: node.clone(),
        what,
        dependencies,
        locked: None,
        installed_image: None,
    })
}

/// A same-named entry of another kind is only replaced with `--force`.
fn check_conflict(config: &Config, s: &Step, force: bool, path: &std::path::Path) -> Result<()> {
    let Some(existing) = config.worker(&s.node.name) else {
        return Ok(());
    };
    let same_kind = matches!(
        (&s.what, &existing.image),
        (What::Binary(_), None) | (What::Image(_), Some(_))
    );
    if same_kind || force {
        return Ok(());
    }
    Err(err!(
        "a worker named {:?} is already in {} ({}); use --force to replace it",
        s.node.name,
        path.display(),
        match &existing.image {
            Some(i) => format!("image {i}"),
            None => "a registry-managed worker".into(),
        }
    ))
}

fn install(s: &mut Step, home: &std::path::Path, store: &Store) -> Result<()> {
    let name = s.node.name.clone();
    let (kind, source) = match &s.what {
        What::Binary(a) => {
            binary::install(home, &name, a, &mut |m| crate::say!("{m}"))
                .map_err(|e| err!("worker {name}: {e}"))?;
            (
                Kind::Binary,
                Some(Source::Binary {
                    artifacts: BTreeMap::from([(binary::host_target().to_string(), a.clone())]),
                }),
            )
        }
        What::Image(image) => {
            let mut progress = crate::oci::progress::for_stderr();
            let installed = crate::oci::pull(image, store, progress.as_mut())
                .map_err(|e| err!("worker {name}: {e}"))?;
            let pin = super::oci::pin(&Reference::parse(image)?, &installed.manifest_digest);
            s.installed_image = Some(installed);
            (Kind::Image, pin.source)
        }
        What::Engine => {
            if !is_engine_worker(&name) {
                crate::say!(
                    "warning: {name} is built into other iii engines, not this one; pinned in iii.lock but not added to config.yaml"
                );
            }
            (Kind::Engine, None)
        }
    };
    // A binary keeps every target the registry offers, so the lock serves other hosts too.
    let source = match (&s.what, source) {
        (What::Binary(_), Some(Source::Binary { mut artifacts })) => {
            for (t, a) in s.node.binaries.clone().unwrap_or_default() {
                artifacts.entry(t).or_insert(a);
            }
            Some(Source::Binary { artifacts })
        }
        (_, other) => other,
    };
    s.locked = Some(Locked {
        version: s.node.version.clone(),
        kind,
        dependencies: s.dependencies.clone(),
        source,
    });
    Ok(())
}

/// The config.yaml entry a step writes (`None`: an engine worker this iii does not run).
fn entry_for(s: &Step, current: &Config) -> Option<edit::NewEntry> {
    let name = &s.node.name;
    let existing = current.worker(name);
    match &s.what {
        What::Image(image) => {
            let installed = s.installed_image.as_ref()?;
            let resources = image::resources(installed).unwrap_or((None, None));
            Some(image::entry(name, image, installed, resources, existing))
        }
        What::Binary(_) => Some(bare(name, existing)),
        What::Engine if is_engine_worker(name) => Some(bare(name, None)),
        What::Engine => None,
    }
}

/// A bare `- name:` entry, keeping what the user set on an existing one.
fn bare(name: &str, existing: Option<&WorkerEntry>) -> edit::NewEntry {
    edit::NewEntry {
        name: name.to_string(),
        image: None,
        config: existing
            .map(|e| {
                e.config
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.clone())))
                    .collect()
            })
            .unwrap_or_default(),
        cpus: existing.and_then(|e| e.resources.cpus),
        memory: existing.and_then(|e| e.resources.memory),
        sandbox: existing.map(|e| e.sandbox),
        network: existing.map(|e| e.network.clone()),
    }
}

/// `pdfkit@1.2.0` and one `└─ dep@version (range)` line per dependency, on stderr.
fn print_tree(graph: &Resolved, steps: &[Step]) {
    let version_of = |n: &str| {
        steps
            .iter()
            .find(|s| s.node.name == n)
            .map(|s| s.node.version.clone())
            .unwrap_or_default()
    };
    crate::say!("{}@{}", graph.root.name, version_of(&graph.root.name));
    for s in steps.iter().filter(|s| s.node.name != graph.root.name) {
        let range = steps
            .iter()
            .find_map(|p| p.dependencies.get(&s.node.name))
            .cloned()
            .unwrap_or_else(|| "*".into());
        crate::say!("└─ {}@{} ({range})", s.node.name, s.node.version);
    }
    crate::say!("wrote iii.lock");
}

/// A worker built into the engine: a bare entry and an `engine` pin, no network.
fn add_engine(project: &Project, name: &str, version: Option<&str>) -> Result<Vec<String>> {
    if !crate::config::BUILTIN_WORKERS.contains(&name) {
        crate::say!("{name} is always on in the engine; nothing to add");
        return Ok(vec![]);
    }
    let locked = Locked {
        version: version.unwrap_or(env!("CARGO_PKG_VERSION")).to_string(),
        kind: Kind::Engine,
        dependencies: BTreeMap::new(),
        source: None,
    };
    super::commit(
        project,
        |text, current| {
            if current.builtin(name).is_some() {
                return Ok((text.to_string(), ()));
            }
            Ok((edit::add_entry(text, &bare(name, None))?, ()))
        },
        |lock| {
            lock.workers.insert(name.to_string(), locked);
            Ok(())
        },
    )?;
    Ok(vec![name.to_string()])
}

/// One worker from `GET /download/<name>`, for registries without `/resolve`.
fn legacy(name: &str, version: Option<&str>, why: &str) -> Result<Resolved> {
    let node = |kind: &str, version: String| Node::bare(name, kind, &version);
    let n = match registry::download(name, version) {
        Ok(Download::Binary {
            version, binaries, ..
        }) => Node {
            binaries: Some(binaries),
            ..node("binary", version)
        },
        Ok(Download::Image {
            version, image_url, ..
        }) => Node {
            image: Some(image_url),
            ..node("image", version)
        },
        Ok(Download::Bundle { version, .. }) => node("bundle", version),
        Ok(Download::Engine) => node("engine", version.unwrap_or("latest").to_string()),
        // The graph endpoint failed for a reason of its own: say it, not just "not found".
        Err(Failure::NotFound) => {
            return Err(err!(
                "registry API {}: /resolve: {why}; /download: worker {name} not found",
                registry::api_base()
            ))
        }
        Err(Failure::Unsupported(w)) => {
            return Err(err!(
                "registry API {}: /resolve: {why}; /download: {w}",
                registry::api_base()
            ))
        }
        Err(Failure::Other(e)) => return Err(e),
    };
    Ok(Resolved {
        root: NodeRef {
            name: name.to_string(),
            version: n.version.clone(),
        },
        target: None,
        graph: vec![n],
        edges: vec![],
    })
}
