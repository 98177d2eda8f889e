//! `iii.lock` end to end through the CLI: `iii worker add NAME[@VERSION]` against a fake
//! worker registry API (binary artifacts from an HTTPS file server, images from a real
//! `docker-registry`), `add` of a direct OCI reference, and `verify`, `sync [--frozen]`,
//! `update`, `remove`, `clear` — with config.yaml, iii.lock and the store checked after each
//! step, and every bad input shown to fail with one `error:` line and change nothing.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;
#[path = "common/worker_api.rs"]
mod worker_api;

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::image::*;
use support::registry::{Auth, Registry};
use support::TempDir;
use worker_api::{binary_node, graph, host_target, image_node, tarball, Api, FileServer, Reply};

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A project directory, its store (`III_HOME`), and what the iii processes get in their
/// environment.
struct Project {
    home: TempDir,
    dir: TempDir,
    api: Option<String>,
    cert: Option<PathBuf>,
    allow_private: bool,
}

impl Project {
    fn new() -> Project {
        Project {
            home: TempDir::new("home"),
            dir: TempDir::new("project"),
            api: None,
            cert: None,
            allow_private: true,
        }
    }

    /// A project talking to `api`, trusting `files`' certificate.
    fn with(api: &Api, files: Option<&FileServer>) -> Project {
        let mut p = Project::new();
        p.api = Some(api.url());
        p.cert = files.map(|f| f.cert.clone());
        p
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }
    fn lock(&self) -> PathBuf {
        self.dir.path().join("iii.lock")
    }

    fn command(&self, home: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iii"));
        c.arg("-c")
            .arg(self.config())
            .args(args)
            .current_dir(self.dir.path())
            .env("III_HOME", home)
            .env_remove("III_CONFIG_PATH")
            .env_remove("III_ALLOW_PRIVATE_DOWNLOADS")
            .env_remove("III_API_URL")
            .env_remove("SSL_CERT_FILE");
        if let Some(a) = &self.api {
            c.env("III_API_URL", a);
        }
        if let Some(cert) = &self.cert {
            c.env("SSL_CERT_FILE", cert);
        }
        if self.allow_private {
            c.env("III_ALLOW_PRIVATE_DOWNLOADS", "1");
        }
        c
    }

    /// `iii -c DIR/config.yaml ARGS…` with this project's store; stdin is /dev/null (no
    /// terminal), stdout and stderr captured.
    fn iii(&self, args: &[&str]) -> Output {
        self.iii_home(self.home.path(), args)
    }

    /// Like [`Project::iii`] with another store.
    fn iii_home(&self, home: &Path, args: &[&str]) -> Output {
        run_bounded(self.command(home, args), args)
    }

    fn read_config(&self) -> String {
        std::fs::read_to_string(self.config()).unwrap_or_default()
    }
    fn read_lock(&self) -> String {
        std::fs::read_to_string(self.lock()).unwrap_or_default()
    }

    /// The bytes of config.yaml and iii.lock (`None` for a missing one).
    fn files(&self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        (
            std::fs::read(self.config()).ok(),
            std::fs::read(self.lock()).ok(),
        )
    }

    fn lock_yaml(&self) -> serde_yaml::Value {
        let text = self.read_lock();
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("iii.lock: {e}:\n{text}"))
    }

    fn config_yaml(&self) -> serde_yaml::Value {
        let text = self.read_config();
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("config.yaml: {e}:\n{text}"))
    }

    /// The config.yaml entry named `name`.
    fn entry(&self, name: &str) -> Option<serde_yaml::Value> {
        self.config_yaml()["workers"]
            .as_sequence()?
            .iter()
            .find(|w| w["name"].as_str() == Some(name))
            .cloned()
    }

    /// Append a worker entry to config.yaml's `workers:` list (the last key of the file),
    /// indented like the entries already there.
    fn append_entry(&self, name: &str, image: &str) {
        let text = self.read_config();
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("- name: "))
            .unwrap_or_else(|| panic!("no entry in config.yaml:\n{text}"));
        let indent = &line[..line.len() - line.trim_start().len()];
        let mut new = text.clone();
        if !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str(&format!(
            "{indent}- name: {name}\n{indent}  image: {image}\n"
        ));
        std::fs::write(self.config(), new).unwrap();
    }
}

/// How long one iii command may take before the test kills it (by its PID) and fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Run `cmd` with stdin from /dev/null and stdout/stderr captured, like `Command::output`,
/// but kill it by PID and panic if it runs past [`COMMAND_TIMEOUT`].
fn run_bounded(mut cmd: Command, args: &[&str]) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run iii");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for iii") {
            break st;
        }
        if Instant::now() > deadline {
            // Child::kill signals exactly this PID.
            let _ = child.kill();
            let _ = child.wait();
            panic!("iii {args:?} ran past {COMMAND_TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code, stdout and stderr, for assertion messages.
fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

fn error_lines(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(str::to_string)
        .collect()
}

/// Exit 0, else panic showing the output.
#[track_caller]
fn ok(o: &Output, what: &str) {
    assert_eq!(o.status.code(), Some(0), "{what}:\n{}", show(o));
}

/// Exit 1 with exactly one `error:` line, which contains every needle.
#[track_caller]
fn fails(o: &Output, what: &str, needles: &[&str]) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{what}: expected exit 1\n{}",
        show(o)
    );
    let errors = error_lines(o);
    assert_eq!(
        errors.len(),
        1,
        "{what}: expected one `error:` line\n{}",
        show(o)
    );
    for n in needles {
        assert!(
            errors[0].to_lowercase().contains(&n.to_lowercase()),
            "{what}: the error should name {n:?}\n{}",
            show(o)
        );
    }
    eprintln!("{what}: {}", errors[0]);
    errors[0].clone()
}

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap()
}

/// Top-level names of a store directory (`images/sha256`, `binaries`), dot entries included.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Everything in a store that is an installed artifact: `images/sha256/*` and `binaries/*`.
fn installed(home: &Path) -> Vec<String> {
    let mut v: Vec<String> = names_in(&home.join("images/sha256"))
        .into_iter()
        .map(|n| format!("images/{n}"))
        .collect();
    v.extend(
        names_in(&home.join("binaries"))
            .into_iter()
            .map(|n| format!("binaries/{n}")),
    );
    v
}

/// What one path of a tree is, with everything a byte-for-byte copy must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        sha: String,
    },
    Dir {
        mode: u32,
    },
    Symlink(String),
    Other {
        mode: u32,
    },
}

fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    support::tree::snapshot_with(root, |path, m| {
        if m.file_type().is_symlink() {
            Node::Symlink(support::tree::link_target(path))
        } else if m.is_dir() {
            Node::Dir {
                mode: m.mode() & 0o7777,
            }
        } else if m.is_file() {
            Node::File {
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                sha: worker_api::sha256_hex(&std::fs::read(path).unwrap()),
            }
        } else {
            Node::Other { mode: m.mode() }
        }
    })
}

/// Every difference between two snapshots, one line each.
fn tree_diff(a: &BTreeMap<String, Node>, b: &BTreeMap<String, Node>) -> Vec<String> {
    let mut diffs = Vec::new();
    for (p, n) in a {
        match b.get(p) {
            None => diffs.push(format!("only in the first: {p} ({n:?})")),
            Some(m) if m != n => diffs.push(format!("{p}: {n:?} vs {m:?}")),
            Some(_) => {}
        }
    }
    for (p, n) in b {
        if !a.contains_key(p) {
            diffs.push(format!("only in the second: {p} ({n:?})"));
        }
    }
    diffs
}

/// Bytes of every regular file under `dir` (symlinks not followed).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                total += du(&e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

/// Every path under `dir`, for "nothing changed" checks of a store.
fn listing(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .into_iter()
        .map(|(p, n)| format!("{p} {n:?}"))
        .collect()
}

/// A binary worker published on `files`: a tarball holding `dist/<name>`; its URL and the
/// tarball's sha256.
fn publish_binary(files: &FileServer, name: &str, binary: &[u8]) -> (String, String) {
    let tgz = tarball(&[
        ("README", b"a test worker\n"),
        (&format!("dist/{name}"), binary),
    ]);
    let url = files.put(&format!("{name}.tar.gz"), &tgz);
    (url, worker_api::sha256_hex(&tgz))
}

/// The API, the file server and the compiled worker, or `None` (after saying why).
struct Fixture {
    api: Api,
    files: FileServer,
    binary: Vec<u8>,
    _build: TempDir,
}

fn fixture() -> Option<Fixture> {
    let build = TempDir::new("build");
    let binary = worker_api::worker_binary(build.path())?;
    let files = FileServer::start()?;
    Some(Fixture {
        api: Api::start(),
        files,
        binary,
        _build: build,
    })
}

/// `pdfkit` 1.2.0, a binary with `deps`; returns its URL and sha256.
fn serve_pdfkit(
    f: &Fixture,
    deps: serde_json::Value,
    extra: &[serde_json::Value],
    edges: &[(&str, &str, &str)],
) -> (String, String) {
    let (url, sha) = publish_binary(&f.files, "pdfkit", &f.binary);
    let mut nodes = vec![binary_node("pdfkit", "1.2.0", &url, &sha, deps)];
    nodes.extend_from_slice(extra);
    f.api.set_graph("pdfkit", graph(&nodes, edges));
    (url, sha)
}

/// The registry graph two tests share: `pdfkit` (a binary) depending on `imgconv ^1.0` (an
/// image pushed to a real registry), served to an empty project.
struct PdfkitGraph {
    reg: Registry,
    f: Fixture,
    /// imgconv's manifest digest, and its reference as the registry names it.
    digest: String,
    image: String,
    /// pdfkit's artifact URL and sha256.
    url: String,
    sha: String,
    p: Project,
}

impl PdfkitGraph {
    fn new() -> Option<PdfkitGraph> {
        let reg = Registry::start(Auth::None)?;
        let f = fixture()?;
        let digest = push_busybox(&reg, "team/imgconv", "1.0.0", "imgconv")?;
        let image = format!("{}/team/imgconv:1.0.0", reg.host);
        let (url, sha) = serve_pdfkit(
            &f,
            json!({"imgconv": "^1.0"}),
            &[image_node("imgconv", "1.0.0", &image)],
            &[("pdfkit", "imgconv", "^1.0")],
        );
        let p = Project::with(&f.api, Some(&f.files));
        std::fs::write(p.config(), "workers: []\n").unwrap();
        Some(PdfkitGraph {
            reg,
            f,
            digest,
            image,
            url,
            sha,
            p,
        })
    }
}

/// The registry's busybox image under `repo:tag`, plus a layer with `marker`, so every
/// marker gives a different manifest; the manifest digest's hex.
fn push_busybox(reg: &Registry, repo: &str, tag: &str, marker: &str) -> Option<String> {
    let mut img = busybox_image()?;
    img.layers.push(Layer::new(
        Comp::Gzip,
        vec![file("marker", marker.as_bytes())],
    ));
    let built = img.push(reg, repo, Some(tag));
    Some(built.manifest_digest.hex().to_string())
}

/// The lock entry the reference format gives a binary.
fn binary_pin(version: &str, url: &str, sha: &str, deps: &str) -> serde_yaml::Value {
    yaml(&format!(
        "version: {version}\ntype: binary\ndependencies: {deps}\nsource:\n  kind: binary\n  artifacts:\n    {}:\n      url: {url}\n      sha256: {sha}\n",
        host_target()
    ))
}

// ---------------------------------------------------------------------------------------
// 1. add of a registry binary: config entry, the reference lock format, the resolve request
// ---------------------------------------------------------------------------------------

#[test]
fn add_registry_binary_writes_bare_entry_and_reference_lock() {
    let Some(f) = fixture() else { return };
    let (url, sha) = serve_pdfkit(&f, json!({}), &[], &[]);
    let p = Project::with(&f.api, Some(&f.files));
    std::fs::write(p.config(), "workers: []\n").unwrap();

    let out = p.iii(&["worker", "add", "pdfkit"]);
    ok(&out, "add pdfkit");
    assert!(
        stdout(&out).lines().any(|l| l == "pdfkit"),
        "stdout lists pdfkit\n{}",
        show(&out)
    );

    // The request: latest, for this host's target.
    let bodies = f.api.resolve_bodies();
    assert_eq!(bodies.len(), 1, "one resolve request: {bodies:?}");
    assert_eq!(bodies[0]["worker"], "pdfkit", "{bodies:?}");
    assert_eq!(bodies[0]["version"], "latest", "{bodies:?}");
    assert_eq!(bodies[0]["target"], host_target(), "{bodies:?}");

    // config.yaml: a bare entry.
    let text = p.read_config();
    assert!(text.contains("- name: pdfkit"), "config.yaml:\n{text}");
    let entry = p
        .entry("pdfkit")
        .unwrap_or_else(|| panic!("config.yaml:\n{text}"));
    assert!(
        entry.get("image").is_none(),
        "a binary entry has no image:\n{text}"
    );

    // iii.lock: the reference format.
    let lock = p.read_lock();
    assert!(
        lock.starts_with("version: 1\n"),
        "iii.lock starts with `version: 1`:\n{lock}"
    );
    assert!(!lock.contains("---"), "no document marker:\n{lock}");
    let expected = yaml(&format!(
        "version: 1\nworkers:\n  pdfkit:\n    version: 1.2.0\n    type: binary\n    dependencies: {{}}\n    source:\n      kind: binary\n      artifacts:\n        {}:\n          url: {url}\n          sha256: {sha}\n",
        host_target()
    ));
    assert_eq!(p.lock_yaml(), expected, "iii.lock:\n{lock}");
    // The reference format's field order within an entry.
    let order: Vec<usize> = ["    version:", "type:", "dependencies:", "source:", "kind:"]
        .iter()
        .map(|k| {
            lock.find(k)
                .unwrap_or_else(|| panic!("{k} missing:\n{lock}"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "fields in the reference order (version, type, dependencies, source):\n{lock}"
    );

    // The store: the binary at /bin/pdfkit of its root filesystem.
    let bin = p
        .home
        .path()
        .join(format!("binaries/{sha}/rootfs/bin/pdfkit"));
    let installed_bytes = std::fs::read(&bin).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; store: {:?}",
            bin.display(),
            installed(p.home.path())
        )
    });
    assert_eq!(
        installed_bytes, f.binary,
        "the installed binary is the one in the tarball"
    );
    let mode = std::fs::metadata(&bin).unwrap().mode() & 0o777;
    assert_eq!(mode & 0o111, 0o111, "executable: {mode:o}");

    // add NAME@VERSION asks for that version; the same pins give the same bytes.
    let p2 = Project::with(&f.api, Some(&f.files));
    std::fs::write(p2.config(), "workers: []\n").unwrap();
    let out = p2.iii(&["worker", "add", "pdfkit@1.2.0"]);
    ok(&out, "add pdfkit@1.2.0");
    let bodies = f.api.resolve_bodies();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[1]["worker"], "pdfkit", "{bodies:?}");
    assert_eq!(bodies[1]["version"], "1.2.0", "{bodies:?}");
    let raw = String::from_utf8_lossy(&f.api.requests().last().unwrap().body).into_owned();
    assert!(raw.contains("\"1.2.0\""), "request body: {raw}");
    assert_eq!(
        p2.read_lock(),
        lock,
        "the same pins, the same iii.lock bytes"
    );
}

// ---------------------------------------------------------------------------------------
// 2. a dependency graph: a binary root depending on an image
// ---------------------------------------------------------------------------------------

#[test]
fn add_installs_dependency_graph_into_config_and_lock() {
    let Some(PdfkitGraph {
        reg,
        // Held: its API and file servers serve the whole test.
        f: _servers,
        digest,
        image,
        url,
        sha,
        p,
    }) = PdfkitGraph::new()
    else {
        return;
    };

    let out = p.iii(&["worker", "add", "pdfkit"]);
    ok(&out, "add pdfkit (with imgconv)");
    let names: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert!(
        names.contains(&"pdfkit".to_string()) && names.contains(&"imgconv".to_string()),
        "stdout lists both\n{}",
        show(&out)
    );

    let text = p.read_config();
    let img_entry = p
        .entry("imgconv")
        .unwrap_or_else(|| panic!("imgconv in config.yaml:\n{text}"));
    assert_eq!(
        img_entry["image"].as_str(),
        Some(image.as_str()),
        "imgconv's image:\n{text}"
    );
    let pdf_entry = p
        .entry("pdfkit")
        .unwrap_or_else(|| panic!("pdfkit in config.yaml:\n{text}"));
    assert!(pdf_entry.get("image").is_none(), "pdfkit is bare:\n{text}");

    let lock = p.read_lock();
    let l = p.lock_yaml();
    assert_eq!(l["version"], yaml("1"), "iii.lock:\n{lock}");
    assert_eq!(
        l["workers"]["pdfkit"],
        binary_pin("1.2.0", &url, &sha, "{imgconv: ^1.0}"),
        "pdfkit's pin:\n{lock}"
    );
    assert_eq!(
        l["workers"]["imgconv"],
        yaml(&format!(
            "version: 1.0.0\ntype: image\ndependencies: {{}}\nsource:\n  kind: image\n  image: {}/team/imgconv@sha256:{digest}\n",
            reg.host
        )),
        "imgconv's pin:\n{lock}"
    );
    assert_eq!(
        l["workers"].as_mapping().map(|m| m.len()),
        Some(2),
        "two pins:\n{lock}"
    );
    assert!(
        lock.find("\n  imgconv:") < lock.find("\n  pdfkit:"),
        "workers sorted by name:\n{lock}"
    );
    assert!(
        p.home
            .path()
            .join(format!("images/sha256/{digest}/rootfs"))
            .is_dir(),
        "imgconv installed; store: {:?}",
        installed(p.home.path())
    );
    assert!(
        p.home
            .path()
            .join(format!("binaries/{sha}/rootfs/bin/pdfkit"))
            .is_file(),
        "pdfkit installed; store: {:?}",
        installed(p.home.path())
    );
}

// ---------------------------------------------------------------------------------------
// 3. a binary worker runs in a sandbox
// ---------------------------------------------------------------------------------------

/// Stops the worker (and kills its process by PID if it outlives that) when the test ends.
struct Running<'a> {
    p: &'a Project,
    name: &'a str,
    pid: Option<i32>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let _ = self.p.iii(&["worker", "stop", self.name]);
        if let Some(pid) = self.pid {
            let deadline = Instant::now() + Duration::from_secs(5);
            // SAFETY: kill with signal 0 only checks that the process exists.
            while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            // SAFETY: signalling the one PID this test started (through iii).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn worker_pid(p: &Project, name: &str) -> Option<i64> {
    let out = p.iii(&["worker", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    rows.as_array()?
        .iter()
        .find(|r| r["name"] == name && r["status"] == "running")?["pid"]
        .as_i64()
}

#[test]
fn binary_worker_runs_sandboxed_with_engine_url() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip!("the namespace sandbox needs root");
        return;
    }
    let Some(f) = fixture() else { return };
    serve_pdfkit(&f, json!({}), &[], &[]);
    let p = Project::with(&f.api, Some(&f.files));
    std::fs::write(p.config(), "workers: []\n").unwrap();
    ok(&p.iii(&["worker", "add", "pdfkit"]), "add pdfkit");

    let mut running = Running {
        p: &p,
        name: "pdfkit",
        pid: None,
    };
    let out = p.iii(&["worker", "start", "pdfkit"]);
    ok(&out, "start pdfkit");

    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        if let Some(pid) = worker_pid(&p, "pdfkit") {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "pdfkit never ran; list: {}",
            show(&p.iii(&["worker", "list", "--json"]))
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    running.pid = Some(pid as i32);

    // Its log: the arguments, with the engine link's URL.
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let out = p.iii(&["worker", "logs", "pdfkit"]);
        let log = stdout(&out);
        if log.contains("argv:") {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "no argv line in the log\n{}",
            show(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let words: Vec<&str> = log
        .lines()
        .find(|l| l.starts_with("argv:"))
        .unwrap()
        .split_whitespace()
        .collect();
    eprintln!("worker log: {}", words.join(" "));
    let i = words
        .iter()
        .position(|w| *w == "--url")
        .unwrap_or_else(|| panic!("no --url in the log:\n{log}"));
    let url = words.get(i + 1).copied().unwrap_or("");
    let port = url
        .strip_prefix("ws://127.0.0.1:")
        .map(|r| r.trim_end_matches('/'))
        .unwrap_or_else(|| panic!("--url {url:?} is not ws://127.0.0.1:<port>\n{log}"));
    assert!(
        !port.is_empty() && port.parse::<u16>().is_ok(),
        "--url {url:?}: port\n{log}"
    );

    // In namespaces of its own.
    for ns in ["pid", "mnt"] {
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let its = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/ns/{ns}: {e}"));
        assert_ne!(
            mine, its,
            "the worker (pid {pid}) shares the test's {ns} namespace"
        );
    }

    // The binary sits at /bin/pdfkit inside.
    let out = p.iii(&["worker", "exec", "pdfkit", "--", "/bin/pdfkit", "--version"]);
    ok(&out, "exec /bin/pdfkit --version");
    assert_eq!(stdout(&out), "pdfkit-test 1.2.0\n", "{}", show(&out));

    let out = p.iii(&["worker", "stop", "pdfkit"]);
    ok(&out, "stop pdfkit");
}

// ---------------------------------------------------------------------------------------
// 4. a moved tag: sync installs the pin, update moves it
// ---------------------------------------------------------------------------------------

#[test]
fn moved_tag_sync_installs_pinned_digest_and_update_moves_it() {
    let Some(reg) = Registry::start(Auth::None) else {
        return;
    };
    let Some(d1) = push_busybox(&reg, "team/repo", "1", "first") else {
        return;
    };
    let p = Project::new();
    let reference = format!("{}/team/repo:1", reg.host);
    let out = p.iii(&["worker", "add", &reference]);
    ok(&out, "add the image");
    assert_eq!(stdout(&out), "repo\n", "{}", show(&out));
    let lock = p.read_lock();
    assert!(lock.starts_with("version: 1\n"), "iii.lock:\n{lock}");
    let pinned1 = format!("{}/team/repo@sha256:{d1}", reg.host);
    assert_eq!(
        p.lock_yaml()["workers"],
        yaml(&format!(
            "repo: {{version: '1', type: image, dependencies: {{}}, source: {{kind: image, image: '{pinned1}'}}}}"
        )),
        "iii.lock:\n{lock}"
    );
    assert!(
        matches!(
            p.lock_yaml()["workers"]["repo"]["version"],
            serde_yaml::Value::String(_)
        ),
        "the version is the string '1':\n{lock}"
    );

    // The tag moves.
    let Some(d2) = push_busybox(&reg, "team/repo", "1", "second") else {
        return;
    };
    assert_ne!(d1, d2);
    let config_before = p.read_config();

    // sync into an empty store installs what the lock pins, not what the tag says now.
    let home2 = TempDir::new("home2");
    let out = p.iii_home(home2.path(), &["worker", "sync"]);
    ok(&out, "sync");
    assert!(
        home2
            .path()
            .join(format!("images/sha256/{d1}/rootfs"))
            .is_dir(),
        "D1 installed; store: {:?}\n{}",
        installed(home2.path()),
        show(&out)
    );
    assert!(
        !home2.path().join(format!("images/sha256/{d2}")).exists(),
        "D2 not installed; store: {:?}",
        installed(home2.path())
    );
    assert_eq!(p.read_lock(), lock, "sync leaves iii.lock as it was");
    assert_eq!(
        p.read_config(),
        config_before,
        "sync leaves config.yaml as it was"
    );

    // update moves the pin on purpose.
    let out = p.iii_home(home2.path(), &["worker", "update", "repo"]);
    ok(&out, "update repo");
    assert!(
        stdout(&out).lines().any(|l| l == "repo"),
        "update prints the moved worker\n{}",
        show(&out)
    );
    let lock2 = p.read_lock();
    assert_eq!(
        p.lock_yaml()["workers"]["repo"]["source"]["image"].as_str(),
        Some(format!("{}/team/repo@sha256:{d2}", reg.host).as_str()),
        "iii.lock after update:\n{lock2}"
    );
    assert_eq!(
        p.lock_yaml()["workers"]["repo"]["type"].as_str(),
        Some("image"),
        "{lock2}"
    );
    assert!(lock2.starts_with("version: 1\n"), "{lock2}");

    // The moved pin is what a frozen sync into another empty store installs now.
    let home3 = TempDir::new("home3");
    let out = p.iii_home(home3.path(), &["worker", "sync", "--frozen"]);
    ok(&out, "sync --frozen after update");
    assert!(
        home3
            .path()
            .join(format!("images/sha256/{d2}/rootfs"))
            .is_dir(),
        "D2 installed; store: {:?}\n{}",
        installed(home3.path()),
        show(&out)
    );
    assert!(
        !home3.path().join(format!("images/sha256/{d1}")).exists(),
        "D1 not installed; store: {:?}",
        installed(home3.path())
    );
    assert_eq!(p.read_lock(), lock2, "frozen sync leaves iii.lock alone");
}

/// `sync` (not frozen) pins a config.yaml image entry iii.lock lacks — by the digest its tag
/// names now — and installs it; `verify` then passes.
#[test]
fn sync_pins_config_workers_missing_from_the_lock() {
    let Some(reg) = Registry::start(Auth::None) else {
        return;
    };
    let Some(d1) = push_busybox(&reg, "team/handmade", "1", "handmade") else {
        return;
    };
    let p = Project::new();
    let image = format!("{}/team/handmade:1", reg.host);
    std::fs::write(
        p.config(),
        format!("workers:\n  - name: handmade\n    image: {image}\n"),
    )
    .unwrap();
    let config = p.read_config();
    let out = p.iii(&["worker", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify without iii.lock fails\n{}",
        show(&out)
    );
    let out = p.iii(&["worker", "sync"]);
    ok(&out, "sync");
    let lock = p.read_lock();
    assert!(lock.starts_with("version: 1\n"), "iii.lock:\n{lock}");
    assert_eq!(
        p.lock_yaml()["workers"]["handmade"]["source"]["image"].as_str(),
        Some(format!("{}/team/handmade@sha256:{d1}", reg.host).as_str()),
        "iii.lock:\n{lock}"
    );
    assert_eq!(
        p.lock_yaml()["workers"]["handmade"]["type"].as_str(),
        Some("image"),
        "iii.lock:\n{lock}"
    );
    assert!(
        p.home
            .path()
            .join(format!("images/sha256/{d1}/rootfs"))
            .is_dir(),
        "installed; store: {:?}",
        installed(p.home.path())
    );
    assert_eq!(p.read_config(), config, "sync leaves config.yaml alone");
    ok(&p.iii(&["worker", "verify"]), "verify after sync");
}

// ---------------------------------------------------------------------------------------
// 5. sync --frozen: the same tree in a fresh store; drift refused, nothing changed
// ---------------------------------------------------------------------------------------

#[test]
fn frozen_sync_reproduces_store_and_refuses_drift() {
    let Some(PdfkitGraph {
        reg,
        // Held: its API and file servers serve the whole test.
        f: _servers,
        digest,
        image,
        url: _,
        sha,
        p,
    }) = PdfkitGraph::new()
    else {
        return;
    };
    ok(&p.iii(&["worker", "add", "pdfkit"]), "add pdfkit");
    let (config0, lock0) = p.files();

    let home2 = TempDir::new("home2");
    let out = p.iii_home(home2.path(), &["worker", "sync", "--frozen"]);
    ok(&out, "sync --frozen into a fresh store");
    assert_eq!(
        p.files(),
        (config0.clone(), lock0.clone()),
        "frozen sync wrote nothing"
    );

    // Byte for byte the same trees.
    let trees = [
        format!("images/sha256/{digest}/rootfs"),
        format!("binaries/{sha}/rootfs"),
    ];
    for t in &trees {
        let (a, b) = (p.home.path().join(t), home2.path().join(t));
        assert!(a.is_dir(), "{} missing after add", a.display());
        assert!(
            b.is_dir(),
            "{} missing after sync --frozen; store: {:?}",
            b.display(),
            installed(home2.path())
        );
        let diffs = tree_diff(&snapshot(&a), &snapshot(&b));
        assert!(diffs.is_empty(), "{t} differs:\n{}", diffs.join("\n"));
    }
    let visible = |home: &Path| -> Vec<String> {
        installed(home)
            .into_iter()
            .filter(|n| !n.rsplit('/').next().unwrap_or("").starts_with('.'))
            .collect()
    };
    assert_eq!(
        visible(p.home.path()),
        visible(home2.path()),
        "the same artifacts installed"
    );

    // Drift 1: a worker config.yaml has and iii.lock lacks.
    let home3 = TempDir::new("home3");
    let cases: [(&str, &dyn Fn()); 2] = [
        ("extra", &|| {
            p.append_entry("extra", &format!("{}/team/extra:1", reg.host))
        }),
        ("imgconv", &|| {
            let text = String::from_utf8(config0.clone().unwrap()).unwrap();
            let changed = text.replace(&image, &format!("{}/team/other:1.0.0", reg.host));
            assert_ne!(changed, text);
            std::fs::write(p.config(), changed).unwrap();
        }),
    ];
    for (drifted, make) in cases {
        std::fs::write(p.config(), config0.as_ref().unwrap()).unwrap();
        make();
        let before = p.files();
        let store2 = listing(home2.path());
        let out = p.iii_home(home2.path(), &["worker", "sync", "--frozen"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "frozen sync with drift in {drifted}\n{}",
            show(&out)
        );
        assert!(
            stderr(&out).contains(drifted),
            "stderr names {drifted}\n{}",
            show(&out)
        );
        assert_eq!(error_lines(&out).len(), 1, "one error line\n{}", show(&out));
        assert_eq!(
            p.files(),
            before,
            "config.yaml and iii.lock unchanged ({drifted})"
        );
        assert_eq!(
            listing(home2.path()),
            store2,
            "the store unchanged ({drifted})"
        );
        // Also with an empty store: nothing installed.
        let out = p.iii_home(home3.path(), &["worker", "sync", "--frozen"]);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert!(
            installed(home3.path()).is_empty(),
            "a refused frozen sync installs nothing: {:?}",
            installed(home3.path())
        );
        assert_eq!(p.files(), before);
    }
}

// ---------------------------------------------------------------------------------------
// 6. verify and verify --strict
// ---------------------------------------------------------------------------------------

const FAKE: &str = "127.0.0.1:5999";
const D_ALPHA: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const D_BETA: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn verify_config(extra: &str) -> String {
    format!(
        "workers:\n  - name: alpha\n    image: {FAKE}/team/alpha:1.0.0\n  - name: beta\n    image: {FAKE}/team/beta:1.0.0\n{extra}"
    )
}

fn verify_lock(alpha_deps: &str) -> String {
    format!(
        "version: 1\nworkers:\n  alpha:\n    version: 1.0.0\n    type: image\n    dependencies: {alpha_deps}\n    source:\n      kind: image\n      image: {FAKE}/team/alpha@sha256:{D_ALPHA}\n  beta:\n    version: 1.0.0\n    type: image\n    dependencies: {{}}\n    source:\n      kind: image\n      image: {FAKE}/team/beta@sha256:{D_BETA}\n"
    )
}

#[test]
fn verify_names_missing_and_mismatched_workers_and_strict_checks_dependencies() {
    let p = Project::new();
    let write = |config: &str, lock: &str| {
        std::fs::write(p.config(), config).unwrap();
        std::fs::write(p.lock(), lock).unwrap();
    };
    write(&verify_config(""), &verify_lock("{}"));
    ok(
        &p.iii(&["worker", "verify"]),
        "verify of a consistent project",
    );
    ok(
        &p.iii(&["worker", "verify", "--strict"]),
        "verify --strict of a consistent project",
    );

    // ghost: in config.yaml, not pinned; beta: config names another repository.
    let drifted = verify_config(&format!(
        "  - name: ghost\n    image: {FAKE}/team/ghost:1\n"
    ))
    .replace("team/beta:1.0.0", "team/gamma:1.0.0");
    write(&drifted, &verify_lock("{}"));
    let before = p.files();
    let out = p.iii(&["worker", "verify"]);
    fails(&out, "verify with drift", &[]);
    let err = stderr(&out);
    assert!(
        err.contains("ghost"),
        "names the missing worker\n{}",
        show(&out)
    );
    assert!(
        err.contains("beta"),
        "names the mismatched worker\n{}",
        show(&out)
    );
    assert_eq!(p.files(), before, "verify changes nothing");
    assert!(
        installed(p.home.path()).is_empty(),
        "verify installs nothing"
    );

    // Dependencies: only --strict looks at them.
    for (deps, named) in [("{beta: ^2.0}", "beta"), ("{nothere: ^1.0}", "nothere")] {
        write(&verify_config(""), &verify_lock(deps));
        let before = p.files();
        let out = p.iii(&["worker", "verify"]);
        ok(&out, &format!("plain verify ignores dependencies {deps}"));
        let out = p.iii(&["worker", "verify", "--strict"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "verify --strict with {deps}\n{}",
            show(&out)
        );
        assert!(
            stderr(&out).contains(named),
            "verify --strict names {named}\n{}",
            show(&out)
        );
        assert_eq!(error_lines(&out).len(), 1, "one error line\n{}", show(&out));
        assert_eq!(p.files(), before, "verify --strict changes nothing");
    }
    write(&verify_config(""), &verify_lock("{beta: ^1.0}"));
    ok(
        &p.iii(&["worker", "verify", "--strict"]),
        "a satisfied dependency passes --strict",
    );
}

// ---------------------------------------------------------------------------------------
// 7. bad input: one error line, nothing changed
// ---------------------------------------------------------------------------------------

#[test]
fn malformed_lock_files_are_refused_by_verify_and_sync() {
    let config = format!("workers:\n  - name: alpha\n    image: {FAKE}/team/alpha:1.0.0\n");
    let good = format!(
        "    version: 1.0.0\n    dependencies: {{}}\n    source:\n      kind: image\n      image: {FAKE}/team/alpha@sha256:{D_ALPHA}\n"
    );
    let cases = [
        (
            "version 2",
            format!("version: 2\nworkers:\n  alpha:\n    type: image\n{good}"),
            vec!["iii.lock", "version"],
        ),
        (
            "unpinned image",
            format!(
                "version: 1\nworkers:\n  alpha:\n    version: 1.0.0\n    type: image\n    dependencies: {{}}\n    source:\n      kind: image\n      image: {FAKE}/team/alpha:1.0.0\n"
            ),
            vec!["iii.lock", "alpha", "sha256"],
        ),
        (
            "type plugin",
            format!("version: 1\nworkers:\n  alpha:\n    type: plugin\n{good}"),
            vec!["iii.lock", "alpha", "plugin"],
        ),
    ];
    for (what, lock, needles) in &cases {
        let p = Project::new();
        std::fs::write(p.config(), &config).unwrap();
        std::fs::write(p.lock(), lock).unwrap();
        let before = p.files();
        for cmd in [
            &["worker", "verify"][..],
            &["worker", "sync"],
            &["worker", "sync", "--frozen"],
        ] {
            let out = p.iii(cmd);
            fails(&out, &format!("{cmd:?} with {what}"), needles);
            assert_eq!(p.files(), before, "{cmd:?} with {what} changed files");
            assert!(
                installed(p.home.path()).is_empty(),
                "{cmd:?} with {what} installed {:?}",
                installed(p.home.path())
            );
        }
    }
}

#[test]
fn registry_api_faults_fail_cleanly_and_change_nothing() {
    let api = Api::start();
    api.set(
        "boom",
        Reply::json(500, &json!({"error": "internal server error"})),
    );
    api.set(
        "html",
        Reply::raw(
            200,
            "text/html",
            b"<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>".to_vec(),
        ),
    );
    let mut huge = b"{\"root\":{\"name\":\"huge\",\"version\":\"1.0.0\"},\"pad\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', (1 << 20) + 4096));
    huge.extend_from_slice(b"\",\"graph\":[]}");
    api.set("huge", Reply::raw(200, "application/json", huge));
    api.set_graph(
        "cyclea",
        graph(
            &[
                image_node("cyclea", "1.0.0", &format!("{FAKE}/c/a:1")),
                image_node("cycleb", "1.0.0", &format!("{FAKE}/c/b:1")),
            ],
            &[("cyclea", "cycleb", "^1.0"), ("cycleb", "cyclea", "^1.0")],
        ),
    );
    // 33 workers: the root and 32 dependencies.
    let mut nodes = vec![image_node("big", "1.0.0", &format!("{FAKE}/big/root:1"))];
    let mut edges = Vec::new();
    let dep_names: Vec<String> = (0..32).map(|i| format!("dep{i}")).collect();
    for d in &dep_names {
        nodes.push(image_node(d, "1.0.0", &format!("{FAKE}/big/{d}:1")));
    }
    for d in &dep_names {
        edges.push(("big", d.as_str(), "^1.0"));
    }
    api.set_graph("big", graph(&nodes, &edges));

    let base = api.url();
    let cases: [(&str, Vec<&str>); 6] = [
        ("boom", vec!["500"]),
        ("html", vec![&base]),
        ("huge", vec![&base]),
        ("cyclea", vec!["cycle"]),
        ("big", vec!["33", "--yes"]),
        ("nosuch", vec!["nosuch"]),
    ];
    for (worker, needles) in &cases {
        // Without config.yaml or iii.lock: both stay missing.
        let p = Project::with(&api, None);
        let out = p.iii(&["worker", "add", worker]);
        fails(&out, &format!("add {worker}"), needles);
        assert_eq!(p.files(), (None, None), "add {worker} wrote files");
        assert!(
            installed(p.home.path()).is_empty(),
            "add {worker} installed {:?}",
            installed(p.home.path())
        );
        // With both: their bytes stay.
        let p = Project::with(&api, None);
        std::fs::write(p.config(), "# mine\nworkers: []\n").unwrap();
        std::fs::write(p.lock(), "version: 1\nworkers: {}\n").unwrap();
        let before = p.files();
        let out = p.iii(&["worker", "add", worker]);
        fails(&out, &format!("add {worker} (files present)"), needles);
        assert_eq!(p.files(), before, "add {worker} changed files");
    }
}

/// The API serving one faulty binary worker per case (and a good `pdfkit`).
fn bad_binary_fixture() -> Option<Fixture> {
    let f = fixture()?;
    let bin = f.binary.as_slice();
    // The sha256 in the graph is not the tarball's.
    let (url, _) = publish_binary(&f.files, "badsha", bin);
    let wrong = worker_api::sha256_hex(b"something else");
    f.api.set_graph(
        "badsha",
        graph(
            &[binary_node("badsha", "1.0.0", &url, &wrong, json!({}))],
            &[],
        ),
    );
    // Plain HTTP.
    let (url, sha) = publish_binary(&f.files, "plainhttp", bin);
    let http = url.replacen("https://", "http://", 1);
    f.api.set_graph(
        "plainhttp",
        graph(
            &[binary_node("plainhttp", "1.0.0", &http, &sha, json!({}))],
            &[],
        ),
    );
    // No entry named after the worker.
    let tgz = tarball(&[("dist/other", bin)]);
    let url = f.files.put("noentry.tar.gz", &tgz);
    f.api.set_graph(
        "noentry",
        graph(
            &[binary_node(
                "noentry",
                "1.0.0",
                &url,
                &worker_api::sha256_hex(&tgz),
                json!({}),
            )],
            &[],
        ),
    );
    // The matching entry climbs out.
    let tgz = tarball(&[("../../escape", bin)]);
    let url = f.files.put("escape.tar.gz", &tgz);
    f.api.set_graph(
        "escape",
        graph(
            &[binary_node(
                "escape",
                "1.0.0",
                &url,
                &worker_api::sha256_hex(&tgz),
                json!({}),
            )],
            &[],
        ),
    );
    // A good one, for the private-address check.
    serve_pdfkit(&f, json!({}), &[], &[]);
    Some(f)
}

/// `add WORKER` fails with one error line holding `needles`, with config.yaml and iii.lock
/// present and absent, and leaves the store and both files as they were.
fn check_bad_binary(worker: &str, allow_private: bool, needles: &[&str]) {
    let Some(f) = bad_binary_fixture() else {
        return;
    };
    let mut p = Project::with(&f.api, Some(&f.files));
    p.allow_private = allow_private;
    std::fs::write(p.config(), "# mine\nworkers: []\n").unwrap();
    std::fs::write(p.lock(), "version: 1\nworkers: {}\n").unwrap();
    let before = p.files();
    let out = p.iii(&["worker", "add", worker]);
    let err = fails(&out, &format!("add {worker}"), needles);
    // The error names what the user can act on, not a temporary file already deleted.
    assert!(
        !err.contains("/.tmp-"),
        "add {worker}: the error names a temporary path\n{}",
        show(&out)
    );
    assert_eq!(p.files(), before, "add {worker} changed files");
    assert!(
        installed(p.home.path()).is_empty(),
        "add {worker} left {:?} in the store",
        installed(p.home.path())
    );
    for stray in ["escape", "binaries/escape", "../escape"] {
        assert!(
            !p.home.path().join(stray).exists(),
            "{stray} written by add {worker}"
        );
    }
    // Missing files stay missing.
    let mut p = Project::with(&f.api, Some(&f.files));
    p.allow_private = allow_private;
    let out = p.iii(&["worker", "add", worker]);
    fails(&out, &format!("add {worker} (no files)"), needles);
    assert_eq!(p.files(), (None, None), "add {worker} wrote files");
    assert!(
        !std::env::temp_dir().join("escape").exists(),
        "../../escape landed in the temp dir"
    );
}

#[test]
fn binary_with_wrong_sha256_is_refused() {
    check_bad_binary("badsha", true, &["badsha.tar.gz", "sha256"]);
}

#[test]
fn binary_on_plain_http_is_refused() {
    check_bad_binary("plainhttp", true, &["plainhttp.tar.gz", "https"]);
}

#[test]
fn binary_tarball_without_the_named_entry_is_refused() {
    check_bad_binary("noentry", true, &["noentry.tar.gz", "noentry"]);
}

#[test]
fn binary_tarball_entry_climbing_out_is_refused() {
    check_bad_binary("escape", true, &["escape.tar.gz", "../../escape"]);
}

#[test]
fn binary_on_private_address_needs_allow_private_downloads() {
    check_bad_binary("pdfkit", false, &["pdfkit.tar.gz", "127.0.0.1"]);
}

// ---------------------------------------------------------------------------------------
// 8. remove drops the pin; clear deletes only what nothing uses
// ---------------------------------------------------------------------------------------

/// `N[.N] UNIT` somewhere in `s` (B, KiB, MiB, GiB, kB, MB, GB, bytes).
fn has_size(s: &str) -> bool {
    let words: Vec<&str> = s.split_whitespace().collect();
    let units = ["B", "KiB", "MiB", "GiB", "kB", "KB", "MB", "GB", "bytes"];
    let number = |w: &str| {
        let w = w.trim_start_matches('(');
        !w.is_empty()
            && w.chars().all(|c| c.is_ascii_digit() || c == '.')
            && w.chars().next().is_some_and(|c| c.is_ascii_digit())
    };
    let unit = |w: &str| units.contains(&w.trim_end_matches([')', ',', ':', ';', '.']));
    words.windows(2).any(|p| number(p[0]) && unit(p[1]))
        || words.iter().any(|w| {
            let w = w.trim_start_matches('(');
            let digits: String = w
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            !digits.is_empty() && unit(&w[digits.len()..])
        })
}

#[test]
fn remove_drops_pin_and_clear_frees_only_unused_images() {
    let Some(reg) = Registry::start(Auth::None) else {
        return;
    };
    let Some(keep) = push_busybox(&reg, "team/keep", "1", "keep") else {
        return;
    };
    // The unused image is the bigger one: an extra 512 KiB layer.
    let Some(mut img) = busybox_image() else {
        return;
    };
    let filler: Vec<u8> = (0..512 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    img.layers
        .push(Layer::new(Comp::Gzip, vec![file("filler.bin", &filler)]));
    let drop = img
        .push(&reg, "team/drop", Some("1"))
        .manifest_digest
        .hex()
        .to_string();

    let p = Project::new();
    ok(
        &p.iii(&["worker", "add", &format!("{}/team/keep:1", reg.host)]),
        "add keep",
    );
    ok(
        &p.iii(&["worker", "add", &format!("{}/team/drop:1", reg.host)]),
        "add drop",
    );
    let l = p.lock_yaml();
    assert!(
        l["workers"].get("keep").is_some() && l["workers"].get("drop").is_some(),
        "both pinned:\n{}",
        p.read_lock()
    );

    let out = p.iii(&["worker", "remove", "drop"]);
    ok(&out, "remove drop");
    let l = p.lock_yaml();
    assert!(
        l["workers"].get("drop").is_none(),
        "remove deletes the pin:\n{}",
        p.read_lock()
    );
    assert!(
        l["workers"].get("keep").is_some(),
        "keep stays pinned:\n{}",
        p.read_lock()
    );
    assert!(
        p.entry("drop").is_none() && p.entry("keep").is_some(),
        "{}",
        p.read_config()
    );

    let images = p.home.path().join("images/sha256");
    assert!(
        images.join(&keep).join("rootfs").is_dir() && images.join(&drop).join("rootfs").is_dir()
    );
    let size0 = du(p.home.path());
    let store0 = listing(p.home.path());

    // Not a terminal, no -y: refused, nothing deleted.
    let out = p.iii(&["worker", "clear"]);
    fails(&out, "clear without -y", &["-y"]);
    assert_eq!(
        listing(p.home.path()),
        store0,
        "clear without -y deleted something"
    );

    let files_before = p.files();
    let out = p.iii(&["worker", "clear", "-y"]);
    ok(&out, "clear -y");
    assert!(
        !images.join(&drop).exists(),
        "the unused image is gone; store: {:?}\n{}",
        installed(p.home.path()),
        show(&out)
    );
    assert!(
        images.join(&keep).join("rootfs").is_dir(),
        "the used image stays; store: {:?}\n{}",
        installed(p.home.path()),
        show(&out)
    );
    assert!(
        has_size(&stderr(&out)),
        "clear reports the space it freed\n{}",
        show(&out)
    );
    let size1 = du(p.home.path());
    assert!(
        size1 + 512 * 1024 <= size0,
        "the store shrank by the unused image: {size0} → {size1}\n{}",
        show(&out)
    );
    assert_eq!(
        p.files(),
        files_before,
        "clear leaves config.yaml and iii.lock alone"
    );

    // The kept worker still verifies and its tree is whole.
    ok(&p.iii(&["worker", "verify"]), "verify after clear");
    let rootfs = images.join(&keep).join("rootfs");
    assert!(rootfs.join("bin/busybox").is_file() && rootfs.join("marker").is_file());
}

#[test]
fn remove_and_clear_a_binary_worker() {
    let Some(f) = fixture() else { return };
    let (_, sha) = serve_pdfkit(&f, json!({}), &[], &[]);
    let p = Project::with(&f.api, Some(&f.files));
    std::fs::write(p.config(), "workers: []\n").unwrap();
    ok(&p.iii(&["worker", "add", "pdfkit"]), "add pdfkit");
    let dir = p.home.path().join(format!("binaries/{sha}"));
    assert!(dir.join("rootfs/bin/pdfkit").is_file());

    // In use: clear leaves it.
    let out = p.iii(&["worker", "clear", "-y"]);
    ok(&out, "clear -y with pdfkit in config.yaml");
    assert!(
        dir.join("rootfs/bin/pdfkit").is_file(),
        "clear deleted a binary config.yaml uses\n{}",
        show(&out)
    );

    let out = p.iii(&["worker", "remove", "pdfkit"]);
    ok(&out, "remove pdfkit");
    assert_eq!(stdout(&out), "pdfkit\n", "{}", show(&out));
    assert!(p.entry("pdfkit").is_none(), "{}", p.read_config());
    assert!(
        p.lock_yaml()["workers"].get("pdfkit").is_none(),
        "remove deletes the pin:\n{}",
        p.read_lock()
    );

    let before = du(p.home.path());
    let out = p.iii(&["worker", "clear", "-y"]);
    ok(&out, "clear -y after remove");
    assert!(
        !dir.exists(),
        "the unused binary is gone; store: {:?}\n{}",
        installed(p.home.path()),
        show(&out)
    );
    assert!(
        has_size(&stderr(&out)),
        "freed space reported\n{}",
        show(&out)
    );
    assert!(
        du(p.home.path()) + f.binary.len() as u64 <= before,
        "the store shrank by at least the binary"
    );
}

#[test]
fn has_size_reads_sizes() {
    assert!(has_size("freed 1.5 MiB: 1 image"));
    assert!(has_size("freed 512KiB"));
    assert!(has_size("freed 12345 bytes"));
    assert!(!has_size("freed everything"));
}
