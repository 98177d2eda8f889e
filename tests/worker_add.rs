//! `iii worker add` / `remove` end to end through the CLI: a real registry, images the test
//! pushes, and the resulting config.yaml and store checked exactly.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::image::*;
use support::registry::{Auth, Registry};
use support::TempDir;

struct Project {
    home: TempDir,
    dir: TempDir,
}

impl Project {
    fn new() -> Project {
        Project {
            home: TempDir::new("home"),
            dir: TempDir::new("project"),
        }
    }
    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("config.yaml")
    }
    fn iii(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_iii"))
            .arg("-c")
            .arg(self.config())
            .args(args)
            .env("III_HOME", self.home.path())
            .env_remove("III_CONFIG_PATH")
            .output()
            .expect("run iii")
    }
    fn read_config(&self) -> String {
        std::fs::read_to_string(self.config()).unwrap_or_default()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// busybox plus a worker manifest and an image ENV with system and worker variables.
fn worker_image() -> Option<Image> {
    let mut img = Image::new(
        Format::Oci,
        vec![
            busybox_layer(Comp::Gzip)?,
            Layer::new(
                Comp::Gzip,
                vec![
                    dir("iii"),
                    file(
                        "iii/worker.yaml",
                        b"resources:\n  cpus: 2\n  memory: 256Mi\n",
                    ),
                ],
            ),
        ],
    );
    img.run_config = serde_json::json!({
        "Env": ["PATH=/bin", "HOME=/root", "LANG=C.UTF-8", "GREETING=hello world",
                "VERSION=1.0", "III_URL=ws://localhost:49134"],
        "Entrypoint": ["/bin/sh", "-c", "echo up; sleep 1000"],
    });
    Some(img)
}

fn blob_gets(reg: &Registry) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains("GET /v2/") && l.contains("/blobs/sha256:"))
        .count()
}

#[test]
fn add_writes_entry_and_prints_name_then_remove_restores() {
    let Some(reg) = Registry::start(Auth::None) else {
        return;
    };
    let Some(img) = worker_image() else { return };
    img.push(&reg, "team/image-resize", Some("1.0.0"));
    let p = Project::new();
    let original = "# my project\nengine:\n  port: 49134   # default\n\nworkers: []\n";
    std::fs::write(p.config(), original).unwrap();
    let image = format!("{}/team/image-resize:1.0.0", reg.host);

    let out = p.iii(&["worker", "add", &image]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "image-resize\n");
    // Not a terminal: one plain line per layer on stderr.
    assert!(
        stderr(&out).lines().count() >= 2,
        "progress lines: {}",
        stderr(&out)
    );
    assert_eq!(
        p.read_config(),
        format!(
            "# my project\nengine:\n  port: 49134   # default\n\nworkers:\n  - name: image-resize\n    image: {image}\n    config:\n      GREETING: hello world\n      VERSION: '1.0'\n      III_URL: ws://localhost:49134\n    resources:\n      cpus: 2\n      memory: 256Mi\n"
        )
    );

    // A second add of the same image under another name downloads no blob.
    let before = blob_gets(&reg);
    assert!(before >= 3, "first add fetched the layers and config");
    let out = p.iii(&["worker", "add", "--name", "second", &image]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "second\n");
    assert_eq!(blob_gets(&reg), before, "second add fetched blobs again");

    // Remove both: the file returns to its original bytes.
    std::fs::create_dir_all(p.dir.path().join(".iii/workers/second/layer")).unwrap();
    let out = p.iii(&["worker", "remove", "image-resize", "second"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "image-resize\nsecond\n");
    assert_eq!(p.read_config(), original);
    assert!(!p.dir.path().join(".iii/workers/second").exists());
    // Cached layers stay in the store.
    let blobs = std::fs::read_dir(p.home.path().join("blobs/sha256"))
        .unwrap()
        .count();
    assert!(blobs >= 3, "store kept {blobs} blobs");
}

#[test]
fn name_clash_force_and_keep_data() {
    let Some(reg) = Registry::start(Auth::None) else {
        return;
    };
    let Some(img) = worker_image() else { return };
    img.push(&reg, "w/echo", Some("1"));
    img.push(&reg, "w/echo", Some("2"));
    let p = Project::new();
    let image1 = format!("{}/w/echo:1", reg.host);
    assert_eq!(p.iii(&["worker", "add", &image1]).status.code(), Some(0));

    // The user edits a value; a plain add of the same name is refused and changes nothing.
    let edited = p
        .read_config()
        .replace("GREETING: hello world", "GREETING: bonjour");
    std::fs::write(p.config(), &edited).unwrap();
    let image2 = format!("{}/w/echo:2", reg.host);
    let out = p.iii(&["worker", "add", &image2]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(p.read_config(), edited);

    // --force re-pulls, points at the new image and keeps the user's value.
    let out = p.iii(&["worker", "add", "--force", &image2]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = p.read_config();
    assert!(text.contains(&format!("image: {image2}")), "{text}");
    assert!(text.contains("GREETING: bonjour"), "{text}");
    assert_eq!(text.matches("- name: echo").count(), 1, "{text}");

    // --keep-data keeps the writable layer and nothing else.
    let state = p.dir.path().join(".iii/workers/echo");
    std::fs::create_dir_all(state.join("layer/upper")).unwrap();
    std::fs::write(state.join("state.json"), "{}").unwrap();
    let out = p.iii(&["worker", "remove", "--keep-data", "echo"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(state.join("layer/upper").is_dir());
    assert!(!state.join("state.json").exists());
    assert!(p.read_config().contains("workers: []"));
}

#[test]
fn bad_input_fails_cleanly_and_changes_nothing() {
    let p = Project::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // A registry shorthand with the worker registry down: one line naming the registry API,
    // nothing written.
    let out = Command::new(env!("CARGO_BIN_EXE_iii"))
        .arg("-c")
        .arg(p.config())
        .args(["worker", "add", "image-resize"])
        .env("III_HOME", p.home.path())
        .env("III_API_URL", format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.starts_with("error: registry API http://127.0.0.1:") && e.lines().count() == 1,
        "{e}"
    );
    assert!(!p.config().exists() && !p.dir.path().join("iii.lock").exists());

    // A dead image registry: one line naming the image, nothing written.
    let image = format!("127.0.0.1:{port}/x/y:1");
    let out = p.iii(&["worker", "add", &image]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!p.config().exists());
    assert_no_partial_images(p.home.path());

    // A malformed config.yaml is reported with line and column, before any pull.
    let broken = "workers:\n  - name: a\n    image: x/y\n  bad: : yaml\n";
    std::fs::write(p.config(), broken).unwrap();
    let out = p.iii(&["worker", "add", &image]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("config.yaml:4:"), "{}", stderr(&out));
    assert_eq!(p.read_config(), broken);

    // Unknown worker on remove.
    std::fs::write(p.config(), "workers: []\n").unwrap();
    let out = p.iii(&["worker", "remove", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ghost"), "{}", stderr(&out));
    assert_eq!(p.read_config(), "workers: []\n");
}

fn assert_no_partial_images(home: &Path) {
    let images = home.join("images");
    if let Ok(entries) = std::fs::read_dir(&images) {
        for e in entries.flatten() {
            let n = std::fs::read_dir(e.path()).map(|d| d.count()).unwrap_or(0);
            assert_eq!(n, 0, "partial image left in {}", e.path().display());
        }
    }
}

/// A hand-written entry iii would never write (a name that is not one, a missing image, a
/// field it does not know) does not take the rest of the project down: `list` shows it as
/// invalid and `remove` takes it out, touching nothing but its lines in config.yaml.
#[test]
fn invalid_entries_are_listed_as_such_and_removable() {
    let p = Project::new();
    // Where `.iii/workers/../../../victim` would lead from the project's state directory.
    let victim = p
        .dir
        .path()
        .join(format!("../iii-victim-{}", std::process::id()));
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), b"x").unwrap();
    let victim_name = format!("../../../{}", victim.file_name().unwrap().to_string_lossy());
    let text = format!(
        "# hand-written\nworkers:\n  - name: ok\n    image: r/ok:1\n  - name: {victim_name}\n    \
         image: r/x:1\n  - name: wörker\n    image: r/w:1\n  - name: typo\n    imgae: r/t:1\n"
    );
    std::fs::write(p.config(), &text).unwrap();

    let out = p.iii(&["worker", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ok", victim_name.as_str(), "wörker", "typo"]);
    assert_eq!(rows[0]["status"], "stopped");
    for r in &rows[1..] {
        assert_eq!(r["status"], "invalid", "{r}");
        assert!(r["error"].as_str().unwrap().contains("workers["), "{r}");
    }
    let out = p.iii(&["worker", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("invalid"), "{}", stdout(&out));

    for name in [victim_name.as_str(), "wörker", "typo"] {
        let out = p.iii(&["worker", "remove", name]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("{name}\n"));
    }
    assert_eq!(
        p.read_config(),
        "# hand-written\nworkers:\n  - name: ok\n    image: r/ok:1\n"
    );
    assert!(
        victim.join("keep").exists(),
        "nothing outside the project was touched"
    );
    std::fs::remove_dir_all(&victim).unwrap();
    // Other commands still refuse a config with an invalid entry, saying which.
    std::fs::write(p.config(), &text).unwrap();
    let out = p.iii(&["worker", "start", "ok"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("workers["), "{}", stderr(&out));
}
