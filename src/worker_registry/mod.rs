//! The iii worker registry: where `iii worker add NAME[@VERSION]` finds a worker and its
//! dependencies (`III_API_URL`, default the public registry).
//!
//! - `POST /resolve {worker, version, target}` → the dependency graph to install
//!   ([`Resolved`], checked by [`Resolved::install_order`]);
//! - `GET /download/<name>[?version=V]` → one worker, for registries without `/resolve`.
//!
//! Answers are capped at 1 MiB and must be JSON: an HTML error page or an oversized body is a
//! clear error, not a panic or a hang. Binary artifacts are fetched by [`binary`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::time::Duration;

use serde::Deserialize;

use crate::lockfile::Artifact;
use crate::{err, Result};

pub mod binary;

/// Where the registry is when `III_API_URL` does not say.
pub const DEFAULT_API: &str = "https://api.workers.iii.dev";
/// Largest answer read from the registry API.
const MAX_ANSWER: u64 = 1 << 20;
/// A graph with more workers than this installs only with consent (`--yes`).
pub const CONSENT_ABOVE: usize = 32;

/// The registry API's base URL.
pub fn api_base() -> String {
    std::env::var("III_API_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_API.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// `{name, version}` of the graph's root.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NodeRef {
    pub name: String,
    pub version: String,
}

/// One worker of a graph.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: String,
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub binaries: Option<BTreeMap<String, Artifact>>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub archive_url: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub dependencies: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub range: Option<String>,
}

/// What `/resolve` answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Resolved {
    pub root: NodeRef,
    #[serde(default)]
    pub target: Option<String>,
    pub graph: Vec<Node>,
    #[serde(default)]
    pub edges: Vec<Edge>,
}

/// Why a lookup failed.
#[derive(Debug)]
pub enum Failure {
    /// The registry does not know the worker (404).
    NotFound,
    /// This registry has no such endpoint (404/405 on the endpoint, or not JSON): try the
    /// older one.
    Unsupported(String),
    Other(crate::Error),
}

impl Node {
    /// A node of `kind` with nothing but its name and version (the rest filled in by whoever
    /// builds it).
    pub fn bare(name: &str, kind: &str, version: &str) -> Node {
        Node {
            name: name.to_string(),
            kind: kind.to_string(),
            version: version.to_string(),
            repo: None,
            config: None,
            binaries: None,
            image: None,
            archive_url: None,
            sha256: None,
            dependencies: None,
        }
    }
}

impl Resolved {
    /// Check the graph — unique names, edges between declared workers, no cycle, every
    /// worker reachable from the root — and return the workers in install order
    /// (dependencies before the workers that need them).
    pub fn install_order(&self) -> Result<Vec<&Node>> {
        let mut by_name: HashMap<&str, &Node> = HashMap::new();
        for n in &self.graph {
            crate::config::validate_name(&n.name).map_err(|e| err!("registry graph: {e}"))?;
            if by_name.insert(n.name.as_str(), n).is_some() {
                return Err(err!("registry graph: worker {:?} appears twice", n.name));
            }
        }
        if !by_name.contains_key(self.root.name.as_str()) {
            return Err(err!(
                "registry graph: the root {:?} is not among its workers",
                self.root.name
            ));
        }
        let mut deps: HashMap<&str, Vec<&str>> = HashMap::new();
        for e in &self.edges {
            for end in [&e.from, &e.to] {
                if !by_name.contains_key(end.as_str()) {
                    return Err(err!(
                        "registry graph: edge {} → {} names {end:?}, which is not in the graph",
                        e.from,
                        e.to
                    ));
                }
            }
            deps.entry(e.from.as_str()).or_default().push(e.to.as_str());
        }
        // Depth-first from the root: finds cycles and gives a post-order (dependencies first).
        let mut order: Vec<&Node> = Vec::new();
        let mut done: HashSet<&str> = HashSet::new();
        let mut on_path: Vec<&str> = Vec::new();
        fn visit<'a>(
            n: &'a str,
            deps: &HashMap<&'a str, Vec<&'a str>>,
            by_name: &HashMap<&'a str, &'a Node>,
            done: &mut HashSet<&'a str>,
            on_path: &mut Vec<&'a str>,
            order: &mut Vec<&'a Node>,
        ) -> Result<()> {
            if done.contains(n) {
                return Ok(());
            }
            if let Some(i) = on_path.iter().position(|p| *p == n) {
                let mut cycle: Vec<&str> = on_path[i..].to_vec();
                cycle.push(n);
                return Err(err!(
                    "registry graph: dependency cycle {}",
                    cycle.join(" → ")
                ));
            }
            on_path.push(n);
            for d in deps.get(n).into_iter().flatten() {
                visit(d, deps, by_name, done, on_path, order)?;
            }
            on_path.pop();
            done.insert(n);
            order.push(by_name[n]);
            Ok(())
        }
        visit(
            self.root.name.as_str(),
            &deps,
            &by_name,
            &mut done,
            &mut on_path,
            &mut order,
        )?;
        if let Some(stray) = self.graph.iter().find(|n| !done.contains(n.name.as_str())) {
            return Err(err!(
                "registry graph: worker {:?} is not reachable from {:?}",
                stray.name,
                self.root.name
            ));
        }
        Ok(order)
    }
}

fn agent(url: &str) -> ureq::Agent {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("");
    crate::oci::registry::transport::agent_for(host)
}

/// Read at most [`MAX_ANSWER`] bytes of an answer; more is an error.
fn read_capped(url: &str, body: &mut ureq::Body) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    body.as_reader()
        .take(MAX_ANSWER + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err!("registry API {url}: reading the answer: {e}"))?;
    if bytes.len() as u64 > MAX_ANSWER {
        return Err(err!(
            "registry API {url}: the answer is larger than {} KiB; refusing it",
            MAX_ANSWER >> 10
        ));
    }
    Ok(bytes)
}

fn excerpt(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = one_line.chars().take(120).collect();
    if out.len() < one_line.len() {
        out.push('…');
    }
    out
}

/// `POST /resolve` for `name` at `version` (`None`: the registry's latest).
pub fn resolve(
    name: &str,
    version: Option<&str>,
    target: &str,
) -> std::result::Result<Resolved, Failure> {
    let url = format!("{}/resolve", api_base());
    let body = serde_json::json!({
        "worker": name,
        "version": version.unwrap_or("latest"),
        "target": target,
    });
    let mut resp = agent(&url)
        .post(&url)
        .config()
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .header("content-type", "application/json")
        .send(body.to_string())
        .map_err(|e| Failure::Other(err!("registry API {url}: {e}")))?;
    let status = resp.status().as_u16();
    let bytes = read_capped(&url, resp.body_mut()).map_err(Failure::Other)?;
    match status {
        200..=299 => {}
        404 if String::from_utf8_lossy(&bytes).contains("not found") => {
            return Err(Failure::NotFound)
        }
        404 | 405 => return Err(Failure::Unsupported(format!("HTTP {status}"))),
        _ => {
            return Err(Failure::Other(err!(
                "registry API {url}: HTTP {status}: {}",
                excerpt(&bytes)
            )))
        }
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::Unsupported(format!(
            "the answer is not a worker graph ({e}): {}",
            excerpt(&bytes)
        ))
    })
}

/// What `GET /download/<name>` answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Download {
    Binary {
        name: String,
        version: String,
        binaries: BTreeMap<String, Artifact>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    },
    Image {
        name: String,
        version: String,
        image_url: String,
    },
    Bundle {
        name: String,
        version: String,
        archive_url: String,
        sha256: String,
    },
    /// 204: a worker built into the engine.
    #[serde(skip)]
    Engine,
}

/// `GET /download/<name>[?version=V]`.
pub fn download(name: &str, version: Option<&str>) -> std::result::Result<Download, Failure> {
    let mut url = format!("{}/download/{name}", api_base());
    if let Some(v) = version {
        url.push_str(&format!("?version={v}"));
    }
    let mut resp = agent(&url)
        .get(&url)
        .config()
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .call()
        .map_err(|e| Failure::Other(err!("registry API {url}: {e}")))?;
    let status = resp.status().as_u16();
    if status == 204 {
        return Ok(Download::Engine);
    }
    let bytes = read_capped(&url, resp.body_mut()).map_err(Failure::Other)?;
    match status {
        200..=299 => serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Other(err!(
                "registry API {url}: the answer is not a worker ({e}): {}",
                excerpt(&bytes)
            ))
        }),
        404 => Err(Failure::NotFound),
        _ => Err(Failure::Other(err!(
            "registry API {url}: HTTP {status}: {}",
            excerpt(&bytes)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node::bare(name, "engine", "1.0.0")
    }

    fn graph(nodes: &[&str], edges: &[(&str, &str)]) -> Resolved {
        Resolved {
            root: NodeRef {
                name: nodes[0].into(),
                version: "1.0.0".into(),
            },
            target: None,
            graph: nodes.iter().map(|n| node(n)).collect(),
            edges: edges
                .iter()
                .map(|(f, t)| Edge {
                    from: f.to_string(),
                    to: t.to_string(),
                    range: None,
                })
                .collect(),
        }
    }

    #[test]
    fn dependencies_install_first() {
        let g = graph(
            &["app", "db", "log"],
            &[("app", "db"), ("db", "log"), ("app", "log")],
        );
        let order: Vec<&str> = g
            .install_order()
            .unwrap()
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(order, ["log", "db", "app"]);
    }

    #[test]
    fn bad_graphs_say_why() {
        for (g, needle) in [
            (graph(&["a", "b", "a"], &[]), "appears twice"),
            (graph(&["a"], &[("a", "zz")]), "not in the graph"),
            (
                graph(&["a", "b"], &[("a", "b"), ("b", "a")]),
                "cycle a → b → a",
            ),
            (graph(&["a", "b"], &[]), "not reachable"),
            (graph(&["A"], &[]), "invalid worker name"),
        ] {
            let e = g.install_order().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
