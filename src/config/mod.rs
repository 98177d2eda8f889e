//! `config.yaml`: the declarative list of workers.
//!
//! - [`Config::load`] parses and validates the file (errors carry line and column).
//! - [`flatten`] turns a worker's `config:` mapping into environment variables, expanding
//!   `${VAR}` and `${VAR:-default}` from iii's own environment.
//! - [`edit`] changes the file *as text* (add/remove one entry) so everything else the user wrote
//!   stays byte-for-byte, and writes it atomically under a lock.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{err, Result};

pub mod edit;
pub mod flatten;
pub mod image;
pub mod invalid;
pub mod quantity;

pub use invalid::InvalidEntry;

/// The parsed `config.yaml`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Container workers: entries with `image:`, and registry-managed workers (a bare
    /// `- name:` that is not built in, run from what iii.lock pins).
    pub workers: Vec<WorkerEntry>,
    /// Built-in workers the engine runs itself (bare entries naming one), in file order.
    pub builtins: Vec<BuiltinEntry>,
    pub engine: EngineSettings,
    pub vm: VmSettings,
    /// Entries of `workers:` that do not validate, set aside by [`Config::load_lenient`] (the
    /// strict [`Config::load`] fails on them instead): `list` shows them, `remove` takes them out.
    pub invalid: Vec<InvalidEntry>,
}

/// `engine:` — where the engine serves workers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// Engine port on 127.0.0.1 (default 49134, or the port of `III_URL`).
    pub port: Option<u16>,
}

/// `vm:` — settings of the `vm` sandbox backend.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSettings {
    /// Guest kernel (vmlinux ELF or bzImage); `III_KERNEL` overrides it.
    pub kernel: Option<PathBuf>,
}

/// One entry of `workers:`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerEntry {
    pub name: String,
    /// The OCI reference; `None` for a registry-managed worker, whose artifact (a binary, or
    /// an image) iii.lock pins.
    pub image: Option<String>,
    /// The raw `config:` mapping (flattened into env vars at start; see [`flatten`]).
    pub config: serde_yaml::Mapping,
    pub resources: Resources,
    pub sandbox: SandboxChoice,
    pub network: NetworkChoice,
}

/// Built-in workers, selected by a `workers:` entry with this name and no `image:`.
pub const BUILTIN_WORKERS: &[&str] = &[
    "iii-worker-manager",
    "iii-http",
    "iii-cron",
    "iii-pubsub",
    "iii-state",
];

/// Names other iii engines always run; an entry naming one is accepted and changes nothing.
const ALWAYS_ON: &[&str] = &[
    "iii-engine-functions",
    "iii-observability",
    "iii-telemetry",
    "configuration",
];

/// One built-in worker entry: its name and its `config:` (JSON, `${VAR}` expanded; `null`
/// when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltinEntry {
    pub name: String,
    pub config: serde_json::Value,
    /// Position in `workers:`.
    pub index: usize,
}

/// `resources:` of one worker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub cpus: Option<f64>,
    /// Bytes.
    pub memory: Option<u64>,
}

/// `sandbox:` — which backend runs the worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxChoice {
    /// `vm` when `/dev/kvm` is usable and a guest kernel is configured, else `namespace`.
    #[default]
    Auto,
    Vm,
    Namespace,
}

/// `network:` — the worker's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkChoice {
    /// `none`: loopback plus the engine link.
    None,
    /// `egress` (the default): outbound TCP, UDP and DNS through the worker's user-mode
    /// network, as its policy allows.
    Egress(EgressPolicy),
    /// `host`: share the host's network (no isolation).
    Host,
}

/// `network: {allow, host_ports}`: who an `egress` worker may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Only these destinations (CIDRs, addresses, host names, each optionally `:PORT`);
    /// `None`: anywhere but the host.
    pub allow: Option<Vec<String>>,
    /// Ports of the host's loopback the worker may reach at its gateway (beside the engine's).
    pub host_ports: Vec<u16>,
}

impl Default for NetworkChoice {
    fn default() -> Self {
        NetworkChoice::Egress(EgressPolicy::default())
    }
}

/// Read a `network:` value: `none` (or `isolated`), `egress`, `host`, or `{mode: egress,
/// allow: [...], host_ports: [...]}`.
fn network_choice(v: &serde_yaml::Value) -> std::result::Result<NetworkChoice, String> {
    use serde_yaml::Value;
    match v {
        Value::String(s) => match s.as_str() {
            "none" | "isolated" => Ok(NetworkChoice::None),
            "egress" => Ok(NetworkChoice::Egress(EgressPolicy::default())),
            "host" => Ok(NetworkChoice::Host),
            other => Err(format!("network: {other:?} is not none, egress or host")),
        },
        Value::Mapping(m) => {
            let mut policy = EgressPolicy::default();
            for (k, v) in m {
                match k.as_str() {
                    Some("mode") => match v.as_str() {
                        Some("egress") => {}
                        _ => {
                            return Err(
                                "network.mode: only egress takes allow and host_ports".into()
                            )
                        }
                    },
                    Some("allow") => {
                        let items = v.as_sequence().ok_or("network.allow must be a list")?;
                        let mut rules = Vec::new();
                        for i in items {
                            let r = match i {
                                Value::String(s) => s.clone(),
                                Value::Number(n) => n.to_string(),
                                _ => {
                                    return Err(format!(
                                        "network.allow: {i:?} is not a destination"
                                    ))
                                }
                            };
                            crate::net::policy::Rule::parse(&r)
                                .map_err(|e| format!("network.allow: {e}"))?;
                            rules.push(r);
                        }
                        policy.allow = Some(rules);
                    }
                    Some("host_ports") => {
                        let items = v
                            .as_sequence()
                            .ok_or("network.host_ports must be a list of ports")?;
                        for i in items {
                            let p = i
                                .as_u64()
                                .and_then(|p| u16::try_from(p).ok())
                                .filter(|p| *p != 0)
                                .ok_or_else(|| {
                                    format!("network.host_ports: {i:?} is not a port")
                                })?;
                            policy.host_ports.push(p);
                        }
                    }
                    _ => {
                        return Err(format!(
                            "network: unknown key {k:?} (mode, allow, host_ports)"
                        ))
                    }
                }
            }
            Ok(NetworkChoice::Egress(policy))
        }
        other => Err(format!(
            "network: {other:?} is not none, egress, host or a policy"
        )),
    }
}

// --- raw serde shapes (validated into the public types above) ---

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    workers: Option<Vec<RawWorker>>,
    #[serde(default)]
    engine: Option<EngineSettings>,
    #[serde(default)]
    vm: Option<VmSettings>,
    // Other top-level sections belong to the engine's own configuration and are kept as-is.
    #[serde(flatten)]
    _other: serde_yaml::Mapping,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    name: String,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    config: Option<serde_yaml::Mapping>,
    #[serde(default)]
    resources: Option<RawResources>,
    #[serde(default)]
    sandbox: Option<SandboxChoice>,
    #[serde(default)]
    network: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    #[serde(default)]
    cpus: Option<f64>,
    #[serde(default)]
    memory: Option<serde_yaml::Value>,
}

impl Config {
    /// Read and validate `path`. A missing file is an empty config (no workers).
    pub fn load(path: &Path) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(err!("reading {}: {e}", path.display())),
        }
    }

    /// Parse the text of a config file; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let raw: Option<RawConfig> = if text.trim().is_empty() {
            None
        } else {
            serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))?
        };
        let Some(raw) = raw else {
            return Ok(Config::default());
        };
        let mut workers = Vec::new();
        let mut builtins: Vec<BuiltinEntry> = Vec::new();
        // Names seen so far: a set, so that a long list loads in linear time.
        let mut names = std::collections::HashSet::new();
        for (i, w) in raw.workers.unwrap_or_default().into_iter().enumerate() {
            if !names.insert(w.name.clone()) {
                return Err(err!(
                    "{}: workers[{i}]: duplicate worker name {:?}",
                    path.display(),
                    w.name
                ));
            }
            let at = |m: String| err!("{}: workers[{i}]: {m}", path.display());
            match classify(w, i, &std_lookup).map_err(at)? {
                Classified::Worker(w) => workers.push(w),
                Classified::Builtin(b) => builtins.push(b),
                Classified::AlwaysOn => {}
            }
        }
        Ok(Config {
            workers,
            builtins,
            engine: raw.engine.unwrap_or_default(),
            vm: raw.vm.unwrap_or_default(),
            invalid: Vec::new(),
        })
    }

    pub fn worker(&self, name: &str) -> Option<&WorkerEntry> {
        self.workers.iter().find(|w| w.name == name)
    }

    /// The built-in worker entry named `name`, if config.yaml lists it.
    pub fn builtin(&self, name: &str) -> Option<&BuiltinEntry> {
        self.builtins.iter().find(|b| b.name == name)
    }

    /// `key` of the `iii-worker-manager` entry's config, if set.
    fn manager_setting(&self, key: &str) -> Option<&serde_json::Value> {
        self.builtin("iii-worker-manager")
            .and_then(|b| b.config.get(key))
            .filter(|v| !v.is_null())
    }

    /// The address the worker port binds: `iii-worker-manager`'s `host`, else 127.0.0.1 (the
    /// engine is not reachable from other machines unless config.yaml says so).
    pub fn worker_host(&self) -> Result<String> {
        match self.manager_setting("host") {
            None => Ok("127.0.0.1".into()),
            Some(serde_json::Value::String(h)) if !h.is_empty() => Ok(h.clone()),
            Some(v) => Err(err!("iii-worker-manager: host must be an address, not {v}")),
        }
    }

    /// The worker port's handshake timeout: `iii-worker-manager`'s `handshake_timeout_ms`,
    /// else 10 s.
    pub fn handshake_timeout_ms(&self) -> Result<u64> {
        match self.manager_setting("handshake_timeout_ms") {
            None => Ok(10_000),
            Some(v) => v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                err!("iii-worker-manager: handshake_timeout_ms must be a positive integer, not {v}")
            }),
        }
    }

    /// The engine port: `iii-worker-manager`'s `port` or `engine.port` in config.yaml, else
    /// the port of `III_URL`, else 49134. Port 0 asks the kernel for a free one (the engine
    /// prints which).
    pub fn worker_port(&self) -> Result<u16> {
        let manager = match self.manager_setting("port") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| err!("iii-worker-manager: port must be 0-65535, not {v}"))?,
            ),
        };
        match (manager, self.engine.port) {
            (Some(a), Some(b)) if a != b => {
                return Err(err!(
                    "engine.port ({b}) and the port of iii-worker-manager ({a}) disagree; keep one"
                ))
            }
            (Some(p), _) | (None, Some(p)) => return Ok(p),
            (None, None) => {}
        }
        match std::env::var("III_URL") {
            Ok(url) if !url.is_empty() => {
                port_of_url(&url).ok_or_else(|| err!("III_URL={url}: expected ws://HOST:PORT"))
            }
            _ => Ok(DEFAULT_WORKER_PORT),
        }
    }
}

impl WorkerEntry {
    /// The worker's `config:` flattened into environment variables, `${VAR}` expanded with
    /// `lookup` (iii's environment). A variable with no value and no default is an error
    /// naming the worker and the variable.
    pub fn environment(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>> {
        flatten::flatten(&self.config, lookup).map_err(|e| err!("worker {}: {e}", self.name))
    }
}

/// The engine's worker port when neither config.yaml nor `III_URL` names one.
pub const DEFAULT_WORKER_PORT: u16 = 49134;

fn port_of_url(url: &str) -> Option<u16> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (_, port) = authority.rsplit_once(':')?;
    port.parse().ok()
}

/// `serde_yaml` error → `error: FILE:LINE:COLUMN: message`.
fn yaml_error(path: &Path, e: &serde_yaml::Error) -> crate::Error {
    match e.location() {
        Some(loc) => err!(
            "{}:{}:{}: {}",
            path.display(),
            loc.line(),
            loc.column(),
            strip_location(&e.to_string())
        ),
        None => err!("{}: {e}", path.display()),
    }
}

/// serde_yaml appends " at line L column C" to its messages; we print the location up front.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Worker names: `[a-z0-9][a-z0-9._-]{0,62}` (they name directories and hostnames).
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid worker name {name:?}: use 1-63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        ))
    }
}

fn std_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// What one `workers:` entry is.
enum Classified {
    Worker(WorkerEntry),
    Builtin(BuiltinEntry),
    /// A name other engines always run: accepted, nothing to do.
    AlwaysOn,
}

/// Whether `name` is one the engine runs itself (or always runs): such a bare entry needs no
/// download and no pin.
pub fn is_engine_worker(name: &str) -> bool {
    BUILTIN_WORKERS.contains(&name) || ALWAYS_ON.contains(&name)
}

/// Validate one entry: with `image:` a container worker; without, a built-in worker when it
/// names one, else a registry-managed worker.
fn classify(
    w: RawWorker,
    index: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Classified, String> {
    if w.image.is_some() || !is_engine_worker(&w.name) {
        return validate_worker(w).map(Classified::Worker);
    }
    let name = w.name;
    if ALWAYS_ON.contains(&name.as_str()) {
        return Ok(Classified::AlwaysOn);
    }
    if w.resources.is_some() || w.sandbox.is_some() || w.network.is_some() {
        return Err(format!(
            "{name} is a built-in worker: it takes only `name` and `config`"
        ));
    }
    let config = match w.config {
        None => serde_json::Value::Null,
        Some(m) => flatten::expand_json(&serde_yaml::Value::Mapping(m), lookup)
            .map_err(|e| format!("{name}: config: {e}"))?,
    };
    Ok(Classified::Builtin(BuiltinEntry {
        name,
        config,
        index,
    }))
}

fn validate_worker(w: RawWorker) -> std::result::Result<WorkerEntry, String> {
    validate_name(&w.name)?;
    if w.image.as_ref().is_some_and(|i| i.trim().is_empty()) {
        return Err(format!("worker {:?}: image is empty", w.name));
    }
    let resources = match w.resources {
        None => Resources::default(),
        Some(r) => {
            if let Some(c) = r.cpus {
                if !(c > 0.0 && c.is_finite()) {
                    return Err(format!("worker {:?}: resources.cpus must be > 0", w.name));
                }
            }
            let memory = match r.memory {
                None | Some(serde_yaml::Value::Null) => None,
                Some(v) => Some(
                    quantity::parse_bytes_value(&v)
                        .map_err(|e| format!("worker {:?}: resources.memory: {e}", w.name))?,
                ),
            };
            Resources {
                cpus: r.cpus,
                memory,
            }
        }
    };
    let network = match &w.network {
        None => NetworkChoice::default(),
        Some(v) => network_choice(v).map_err(|e| format!("worker {:?}: {e}", w.name))?,
    };
    Ok(WorkerEntry {
        name: w.name,
        image: w.image,
        config: w.config.unwrap_or_default(),
        resources,
        sandbox: w.sandbox.unwrap_or_default(),
        network,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config> {
        Config::parse(t, Path::new("config.yaml"))
    }

    #[test]
    fn parses_full_entry() {
        let c = parse(
            "workers:\n  - name: image-resize\n    image: ghcr.io/iii-hq/image-resize:1.0.0\n    config:\n      LOG_LEVEL: debug\n    resources: {cpus: 2, memory: 512Mi}\n    sandbox: namespace\n    network: host\nengine: {port: 5000}\nvm: {kernel: /boot/vmlinux}\nmodules: [x]\n",
        )
        .unwrap();
        let w = &c.workers[0];
        assert_eq!(w.name, "image-resize");
        assert_eq!(
            w.resources,
            Resources {
                cpus: Some(2.0),
                memory: Some(512 << 20)
            }
        );
        assert_eq!(w.sandbox, SandboxChoice::Namespace);
        assert_eq!(w.network, NetworkChoice::Host);
        let n = parse("workers:\n  - {name: a, image: x/y}\n  - {name: b, image: x/y, network: none}\n  - {name: c, image: x/y, network: {allow: [10.0.0.0/8, 'api.example.com:443'], host_ports: [5432]}}\n").unwrap();
        assert_eq!(n.workers[0].network, NetworkChoice::default());
        assert_eq!(n.workers[1].network, NetworkChoice::None);
        assert_eq!(
            n.workers[2].network,
            NetworkChoice::Egress(EgressPolicy {
                allow: Some(vec!["10.0.0.0/8".into(), "api.example.com:443".into()]),
                host_ports: vec![5432]
            })
        );
        for (bad, needle) in [
            ("network: wifi", "not none, egress or host"),
            ("network: {allow: ['10.0.0.0/99']}", "network.allow"),
            ("network: {host_ports: [0]}", "host_ports"),
            ("network: {allow: x}", "must be a list"),
            ("network: {mode: host, allow: []}", "only egress"),
        ] {
            let e = parse(&format!(
                "workers:\n  - name: a\n    image: x/y\n    {bad}\n"
            ))
            .unwrap_err();
            assert!(e.to_string().contains(needle), "{bad}: {e}");
        }
        assert_eq!(c.engine.port, Some(5000));
        assert_eq!(c.vm.kernel.as_deref(), Some(Path::new("/boot/vmlinux")));
    }

    #[test]
    fn empty_and_missing_lists_are_no_workers() {
        assert!(parse("").unwrap().workers.is_empty());
        assert!(parse("workers: []\n").unwrap().workers.is_empty());
        assert!(parse("workers:\n").unwrap().workers.is_empty());
        assert!(Config::load(Path::new("/nonexistent/config.yaml"))
            .unwrap()
            .workers
            .is_empty());
    }

    #[test]
    fn malformed_yaml_names_line_and_column() {
        let e = parse("workers:\n  - name: a\n    image: [unclosed\n").unwrap_err();
        assert!(e.to_string().starts_with("config.yaml:"), "{e}");
        let e = parse("workers:\n  - name: a\n    image: b\n  x: : y\n").unwrap_err();
        assert!(e.to_string().starts_with("config.yaml:4:"), "{e}");
    }

    #[test]
    fn rejects_bad_names_duplicates_and_unknown_fields() {
        let e = parse("workers:\n  - {name: Bad, image: x/y}\n").unwrap_err();
        assert!(e.to_string().contains("invalid worker name"), "{e}");
        let e =
            parse("workers:\n  - {name: a, image: x/y}\n  - {name: a, image: x/z}\n").unwrap_err();
        assert!(e.to_string().contains("duplicate worker name"), "{e}");
        let e = parse("workers:\n  - {name: a, image: x/y, imgae: z}\n").unwrap_err();
        assert!(e.to_string().contains("imgae"), "{e}");
        let e =
            parse("workers:\n  - {name: a, image: x/y, resources: {memory: 12Q}}\n").unwrap_err();
        assert!(e.to_string().contains("resources.memory"), "{e}");
    }

    #[test]
    fn loading_is_linear_in_the_number_of_entries() {
        // 80,000 entries: the duplicate-name check once compared every pair (7 s to list).
        let n = 80_000;
        let mut text = String::from("workers:\n");
        for i in 0..n {
            text.push_str(&format!("  - {{name: w{i}, image: r/w:{i}}}\n"));
        }
        let t = std::time::Instant::now();
        let c = parse(&text).unwrap();
        let took = t.elapsed();
        assert_eq!(c.workers.len(), n);
        // About 1 s in a debug build (40 s with the pairwise check).
        assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn port_comes_from_config_or_url() {
        assert_eq!(port_of_url("ws://127.0.0.1:5000"), Some(5000));
        assert_eq!(port_of_url("ws://localhost:49134/x"), Some(49134));
        assert_eq!(port_of_url("ws://localhost"), None);
        let cfg = Config {
            engine: EngineSettings { port: Some(7) },
            ..Default::default()
        };
        assert_eq!(cfg.worker_port().unwrap(), 7);
    }

    #[test]
    fn builtin_entries_have_no_image() {
        let c = parse(
            "workers:\n  - name: iii-http\n    config: {port: 3999, host: 127.0.0.1}\n  - name: iii-state\n  - name: iii-engine-functions\n  - name: w\n    image: x/y\n",
        )
        .unwrap();
        assert_eq!(c.workers.len(), 1);
        assert_eq!(c.builtins.len(), 2);
        assert_eq!(c.builtin("iii-http").unwrap().config["port"], 3999);
        assert_eq!(
            c.builtin("iii-state").unwrap().config,
            serde_json::Value::Null
        );
        // A bare name the engine does not run is a registry-managed worker (iii.lock pins it).
        let c = parse("workers:\n  - name: pdfkit\n    config: {A: b}\n").unwrap();
        assert_eq!(c.workers[0].image, None);
        assert!(c.builtins.is_empty());
        let e = parse("workers:\n  - name: iii-http\n    sandbox: vm\n").unwrap_err();
        assert!(e.to_string().contains("only `name` and `config`"), "{e}");
    }

    #[test]
    fn worker_manager_sets_the_worker_port() {
        let c = parse("workers:\n  - name: iii-worker-manager\n    config: {port: 4100, host: 0.0.0.0, handshake_timeout_ms: 500}\n").unwrap();
        assert_eq!(c.worker_port().unwrap(), 4100);
        assert_eq!(c.worker_host().unwrap(), "0.0.0.0");
        assert_eq!(c.handshake_timeout_ms().unwrap(), 500);
        let c = parse(
            "engine: {port: 5}\nworkers:\n  - name: iii-worker-manager\n    config: {port: 6}\n",
        )
        .unwrap();
        assert!(c
            .worker_port()
            .unwrap_err()
            .to_string()
            .contains("disagree"));
        let c = parse("workers: []\n").unwrap();
        assert_eq!(c.worker_host().unwrap(), "127.0.0.1");
        assert_eq!(c.handshake_timeout_ms().unwrap(), 10_000);
    }

    #[test]
    fn environment_names_worker_on_missing_variable() {
        let c = parse("workers:\n  - name: w\n    image: x/y\n    config: {KEY: \"${NOPE}\"}\n")
            .unwrap();
        let e = c.workers[0].environment(&|_| None).unwrap_err();
        assert!(
            e.to_string().contains("worker w") && e.to_string().contains("NOPE"),
            "{e}"
        );
    }
}
