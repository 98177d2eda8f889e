//! The CLI's contract for scripts: usage errors exit 2, help exits 0, every implemented
//! command's man page documents every flag its --help shows.

use std::path::Path;
use std::process::Command;

fn iii(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iii"))
        .args(args)
        .output()
        .expect("run iii")
}

/// `--long` flags listed in an argh help text.
fn flags(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-")
                .filter(|_| l.len() > 2 && l.as_bytes()[2] == b',')
                .map(|_| l[3..].trim_start())
                .unwrap_or(l);
            l.strip_prefix("--").map(|f| {
                format!(
                    "--{}",
                    f.split(|c: char| c.is_whitespace() || c == ',')
                        .next()
                        .unwrap()
                )
            })
        })
        .filter(|f| f != "--help")
        .collect()
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let out = iii(&["worker", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!out.stderr.is_empty());
    let out = iii(&["worker", "add", "--no-such-flag", "x/y"]);
    assert_eq!(out.status.code(), Some(2));
    let out = iii(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("worker"));
}

#[test]
fn man_pages_match_help() {
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut checked = 0;
    for cmd in [
        "add", "remove", "list", "start", "stop", "restart", "logs", "exec",
    ] {
        let page = man.join(format!("iii-worker-{cmd}.1"));
        let help = iii(&["worker", cmd, "--help"]);
        assert_eq!(help.status.code(), Some(0), "{cmd} --help");
        let help = String::from_utf8_lossy(&help.stdout).to_string();
        let Ok(text) = std::fs::read_to_string(&page) else {
            // Commands not built yet say so when run; they get their page when they are built.
            let mut run = iii(&["worker", cmd, "x"]);
            if run.status.code() == Some(2) {
                run = iii(&["worker", cmd]);
            }
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert!(
                stderr.contains("not yet available"),
                "{cmd} is implemented but {} is missing",
                page.display()
            );
            continue;
        };
        // roff escapes '-' as '\-'.
        let text = text.replace("\\-", "-");
        let flags = flags(&help);
        if cmd == "add" {
            assert_eq!(flags, ["--name", "--force"], "help parsing broke: {help}");
        }
        for flag in flags {
            assert!(
                text.contains(&flag),
                "{} does not document {flag}",
                page.display()
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected at least add and remove to have man pages"
    );
}

#[test]
fn trigger_man_page_matches_help() {
    let help = iii(&["trigger", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("man/iii-trigger.1");
    let text = std::fs::read_to_string(&page).unwrap().replace("\\-", "-");
    let flags = flags(&help);
    assert_eq!(
        flags,
        ["--json", "--timeout-ms", "--address", "--port"],
        "{help}"
    );
    for flag in flags {
        assert!(
            text.contains(&flag),
            "{} does not document {flag}",
            page.display()
        );
    }
    // A payload field that is not KEY=VALUE is a usage error.
    let out = iii(&["trigger", "f", "novalue", "--port", "1"]);
    assert_eq!(out.status.code(), Some(2), "{:?}", out);
}
