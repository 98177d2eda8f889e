//! The CLI's contract for scripts: usage errors exit 2, help exits 0, every implemented
//! command has a man page that documents every flag its --help shows.

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

/// The subcommands an argh help text lists under `Commands:`.
fn commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Every page in man/, by file name.
fn man_pages() -> Vec<String> {
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut pages: Vec<String> = std::fs::read_dir(man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    pages
}

#[test]
fn every_command_has_a_man_page_documenting_its_flags_and_no_page_is_orphaned() {
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let top = String::from_utf8_lossy(&iii(&["--help"]).stdout).to_string();
    let worker = String::from_utf8_lossy(&iii(&["worker", "--help"]).stdout).to_string();
    let top_cmds = commands(&top);
    assert_eq!(top_cmds, ["worker", "trigger"], "help parsing broke: {top}");
    let worker_cmds = commands(&worker);
    assert!(worker_cmds.len() >= 8, "help parsing broke: {worker}");
    // (page, the command line whose --help it documents)
    let mut expected: Vec<(String, Vec<String>)> = vec![("iii.1".into(), vec![])];
    expected.push(("iii-trigger.1".into(), vec!["trigger".into()]));
    for cmd in &worker_cmds {
        expected.push((
            format!("iii-worker-{cmd}.1"),
            vec!["worker".into(), cmd.clone()],
        ));
    }
    let mut want: Vec<String> = expected.iter().map(|(p, _)| p.clone()).collect();
    want.sort();
    assert_eq!(
        man_pages(),
        want,
        "man/ must hold exactly one page per command"
    );
    let iii_page = std::fs::read_to_string(man.join("iii.1"))
        .unwrap()
        .replace("\\-", "-");
    for (page, argv) in &expected {
        let mut args: Vec<&str> = argv.iter().map(String::as_str).collect();
        args.push("--help");
        let help = iii(&args);
        assert_eq!(help.status.code(), Some(0), "{args:?}");
        let help = String::from_utf8_lossy(&help.stdout).to_string();
        // roff escapes '-' as '\-'.
        let text = std::fs::read_to_string(man.join(page))
            .unwrap()
            .replace("\\-", "-");
        let flags = flags(&help);
        if argv.last().map(String::as_str) == Some("add") {
            assert_eq!(
                flags,
                ["--name", "--force", "--yes"],
                "help parsing broke: {help}"
            );
        }
        for flag in flags {
            assert!(text.contains(&flag), "{page} does not document {flag}");
        }
        // The top page names every page.
        let stem = page.trim_end_matches(".1");
        if stem != "iii" {
            assert!(iii_page.contains(stem), "iii.1 does not refer to {stem}");
        }
    }
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
