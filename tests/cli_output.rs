//! What the CLI prints when its own stdout or stderr cannot take it (a full disk, a reader
//! that went away), how it words usage errors, and how much of an offending value an error
//! line may quote. The contract (README, man pages): never a panic; errors are one `error: …`
//! line where stderr can take one; usage errors exit 2.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tempdir.rs"]
mod tempdir;

mod support;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use support::fake::FakeRegistry;
use support::image::*;
use support::TempDir;

fn dev_full() -> Stdio {
    Stdio::from(File::options().write(true).open("/dev/full").unwrap())
}

struct Project {
    dir: TempDir,
    home: TempDir,
}

impl Project {
    fn new() -> Project {
        Project {
            dir: TempDir::new("project"),
            home: TempDir::new("home"),
        }
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iii"));
        c.arg("-c")
            .arg(self.config())
            .args(args)
            .env("III_HOME", self.home.path())
            .env_remove("III_CONFIG_PATH")
            .stdin(Stdio::null());
        c
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one `error: …` line of a failed command (no panic message around it).
fn error_line(o: &Output) -> String {
    let e = stderr(o);
    assert!(!e.contains("panicked"), "a panic: {e}");
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "one error line: {e}");
    lines[0].to_string()
}

/// A one-layer image served by an in-process registry, as `<host>/w/app:1`.
fn served_image() -> (FakeRegistry, String) {
    let fake = FakeRegistry::start();
    let built = Image::new(
        Format::Oci,
        vec![Layer::new(Comp::Gzip, vec![file("hello", b"hi")])],
    )
    .build();
    fake.serve(&built, "1");
    let image = format!("{}/w/app:1", fake.host);
    (fake, image)
}

#[test]
fn help_to_a_full_stdout_is_an_error_not_a_panic() {
    for args in [&["--help"][..], &["worker", "add", "--help"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_iii"))
            .args(args)
            .stdout(dev_full())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(error_line(&out).contains("stdout"), "{}", stderr(&out));
    }
}

#[test]
fn add_and_remove_to_a_full_stdout_fail_after_the_config_changed() {
    let (_fake, image) = served_image();
    let p = Project::new();
    let out = p
        .cmd(&["worker", "add", "--name", "w", &image])
        .stdout(dev_full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(error_line(&out).contains("stdout"), "{}", stderr(&out));
    // As the man page says: the entry is in config.yaml although its name could not be printed.
    let text = std::fs::read_to_string(p.config()).unwrap();
    assert!(text.contains("name: w"), "{text}");

    let out = p
        .cmd(&["worker", "remove", "w"])
        .stdout(dev_full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(error_line(&out).contains("stdout"), "{}", stderr(&out));
    let text = std::fs::read_to_string(p.config()).unwrap();
    assert!(!text.contains("name: w"), "{text}");
}

#[test]
fn a_reader_that_went_away_ends_the_command_without_a_panic() {
    let (_fake, image) = served_image();
    let p = Project::new();
    let mut child = p
        .cmd(&["worker", "add", "--name", "w", &image])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_ne!(out.status.code(), Some(101), "{}", stderr(&out));
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn an_unwritable_stderr_still_gives_the_exit_code() {
    let p = Project::new();
    std::fs::write(p.config(), "workers: [\n").unwrap();
    for args in [
        &["worker", "list"][..],
        &["worker", "start", "w"],
        &["worker", "bogus"],
    ] {
        let out = p.cmd(args).stderr(dev_full()).output().unwrap();
        let want = if args[1] == "bogus" { 2 } else { 1 };
        assert_eq!(out.status.code(), Some(want), "{args:?}");
    }
}

#[test]
fn usage_errors_are_one_error_line_with_a_hint() {
    let cases: [(&[&str], &str); 4] = [
        (&["bogus"], "iii --help"),
        (&["worker", "bogus"], "iii worker --help"),
        (
            &["worker", "add", "--no-such-flag", "x/y"],
            "iii worker add --help",
        ),
        (
            &["worker", "logs", "w", "-n", "many"],
            "iii worker logs --help",
        ),
    ];
    for (args, hint) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_iii"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let e = stderr(&out);
        assert_eq!(e.lines().count(), 1, "{args:?}: one line: {e:?}");
        assert!(e.starts_with("error: "), "{args:?}: {e:?}");
        assert!(e.contains(&format!("see '{hint}'")), "{args:?}: {e:?}");
        assert!(out.stdout.is_empty());
    }
}

/// An error quotes at most a short excerpt of the value it is about.
#[test]
fn errors_quote_an_excerpt_of_huge_values() {
    let p = Project::new();
    std::os::unix::fs::symlink("/etc/passwd", p.config()).unwrap();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let out = p.cmd(&["worker", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.len() < 400, "{} bytes: {line}", line.len());
    if passwd.len() > 400 {
        assert!(line.contains('…'), "{line}");
    }

    std::fs::remove_file(p.config()).unwrap();
    std::fs::write(p.config(), "x".repeat(10 << 20)).unwrap();
    let out = p.cmd(&["worker", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.len() < 400, "{} bytes: {}", line.len(), &line[..400]);
    assert!(line.contains('…'), "{line}");

    let name = "n".repeat(100_000);
    let out = p
        .cmd(&["worker", "add", "--name", &name, "x/y"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.len() < 400, "{} bytes", line.len());
}
