//! `iii worker exec` in pipe mode against a busybox worker: exit codes, byte-exact streams,
//! `-e`/`-w`, timeouts, concurrency, Ctrl-C, and no processes left behind.

#[path = "common/feed.rs"]
mod feed;
#[macro_use]
#[path = "common/skip.rs"]
mod skip;

mod exec_harness;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use exec_harness::{skip_reason, Worker, WORKER};

macro_rules! worker {
    () => {
        match skip_reason() {
            Some(why) => {
                skip!("{why}");
                return;
            }
            None => Worker::start(),
        }
    };
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exit_codes_are_the_commands() {
    let w = worker!();
    for (cmd, code) in [
        (vec!["true"], 0),
        (vec!["false"], 1),
        (vec!["sh", "-c", "exit 42"], 42),
        (vec!["sh", "-c", "kill -9 $$"], 137),
    ] {
        let mut args = vec![WORKER, "--"];
        args.extend(cmd.iter().copied());
        let out = w.exec(&args, b"");
        assert_eq!(
            out.status.code(),
            Some(code),
            "{cmd:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "{cmd:?}: {}", text(&out.stderr));
    }
}

#[test]
fn missing_and_unexecutable_commands_are_127_and_126() {
    let w = worker!();
    let out = w.exec(&[WORKER, "--", "no-such-command", "x"], b"");
    assert_eq!(out.status.code(), Some(127));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("no-such-command"),
        "{err}"
    );

    let out = w.exec(&[WORKER, "--", "/data/notexec"], b"");
    assert_eq!(out.status.code(), Some(126));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/data/notexec") && err.contains("permission denied"),
        "{err}"
    );

    let out = w.exec(&[WORKER, "--", "/data"], b"");
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));

    let out = w.exec(&[WORKER, "-w", "/nowhere", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(126));
    assert!(text(&out.stderr).contains("/nowhere"));
}

#[test]
fn ten_megabytes_of_random_bytes_come_back_identical() {
    let w = worker!();
    let mut data = vec![0u8; 10 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    let out = w.exec(&[WORKER, "--", "cat"], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "bytes differ");
    assert!(out.stderr.is_empty());
}

#[test]
fn stdin_from_a_file_and_eof() {
    let w = worker!();
    let f = w.dir.join("input");
    std::fs::write(&f, b"one\ntwo\n").unwrap();
    let out = w
        .exec_cmd(&[WORKER, "--", "wc", "-l"])
        .stdin(std::fs::File::open(&f).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "2");
    let out = w
        .exec_cmd(&[WORKER, "--", "cat"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
}

#[test]
fn stdout_and_stderr_stay_separate() {
    let w = worker!();
    let out = w.exec(
        &[
            WORKER,
            "--",
            "sh",
            "-c",
            "echo out1; echo err1 >&2; printf 'out2\\0\\r\\n'; echo err2 >&2",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"out1\nout2\0\r\n");
    assert_eq!(out.stderr, b"err1\nerr2\n");
}

#[test]
fn env_and_workdir_take_effect_and_default_cwd_is_workspace() {
    let w = worker!();
    let out = w.exec(&[WORKER, "--", "pwd"], b"");
    assert_eq!(text(&out.stdout), "/workspace\n");
    let out = w.exec(
        &[
            WORKER,
            "-e",
            "FOO=bar=baz",
            "-e",
            "PATH=/bin:/x",
            "-w",
            "/tmp",
            "--",
            "sh",
            "-c",
            "echo $FOO; echo $PATH; pwd; echo $HOME",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "bar=baz\n/bin:/x\n/tmp\n/root\n");
}

#[test]
fn timeout_kills_and_exits_124() {
    let w = worker!();
    let t = Instant::now();
    let out = w.exec(&[WORKER, "--timeout", "1s", "--", "sleep", "30"], b"");
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        w.wait_until(Duration::from_secs(2), || w
            .processes(Some("sleep"))
            .is_empty()),
        "sleep still runs inside"
    );
    let out = w.exec(&[WORKER, "--timeout", "soon", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("invalid duration"));
}

#[test]
fn twenty_concurrent_execs_do_not_mix() {
    let w = worker!();
    let w = &w;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                s.spawn(move || {
                    let script = format!(
                        "i=0; while [ $i -lt 300 ]; do echo exec{i}-line$i; echo exec{i}-err$i >&2; i=$((i+1)); done"
                    );
                    let out = w.exec(&[WORKER, "--", "sh", "-c", &script], b"");
                    (i, out)
                })
            })
            .collect();
        for h in handles {
            let (i, out) = h.join().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "exec {i}: {}",
                text(&out.stderr)
            );
            let want: String = (0..300).map(|n| format!("exec{i}-line{n}\n")).collect();
            let want_err: String = (0..300).map(|n| format!("exec{i}-err{n}\n")).collect();
            assert_eq!(text(&out.stdout), want, "exec {i} stdout");
            assert_eq!(text(&out.stderr), want_err, "exec {i} stderr");
        }
    });
}

#[test]
fn killing_the_client_leaves_nothing_behind() {
    let w = worker!();
    let mut child = w
        .exec_cmd(&[WORKER, "--", "sh", "-c", "sleep 300 & sleep 301"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        w.wait_until(Duration::from_secs(5), || w.processes(Some("sleep")).len()
            == 2),
        "the command did not start"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        w.wait_until(Duration::from_secs(5), || w.processes(None).is_empty()),
        "left behind: {:?}",
        w.processes(None)
    );
}

#[test]
fn ctrl_c_once_interrupts_twice_kills() {
    let w = worker!();
    // Once: SIGINT to the command, which dies of it (130).
    let child = w
        .exec_cmd(&[WORKER, "--", "sh", "-c", "echo go; exec sleep 30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = wait_for_go(child);
    let t = Instant::now();
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(3));

    // Twice within a second, on a command that ignores SIGINT: SIGKILL and 130.
    let child = w
        .exec_cmd(&[
            WORKER,
            "--",
            "sh",
            "-c",
            "trap '' INT; echo go; while :; do sleep 1; done",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = wait_for_go(child);
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !w.processes(Some("sh")).is_empty(),
        "one Ctrl-C must not kill it"
    );
    let t = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(w.wait_until(Duration::from_secs(3), || w.processes(None).is_empty()));
}

/// Wait for the command's first line "go" on stdout, then hand the child back.
fn wait_for_go(mut child: std::process::Child) -> std::process::Child {
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 3];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"go\n");
    child.stdout = Some(out);
    child
}

#[test]
fn unknown_or_stopped_worker_is_125_with_one_line() {
    let w = worker!();
    for (name, needle) in [("nope", "no worker named"), ("stopped", "not running")] {
        let out = w.exec(&[name, "--", "true"], b"");
        assert_eq!(out.status.code(), Some(125));
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
    }
}

#[test]
fn a_closed_local_stdout_ends_the_command() {
    let w = worker!();
    let mut child = w
        .exec_cmd(&[WORKER, "--", "yes", "0123456789"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 100_000];
    out.read_exact(&mut buf).unwrap();
    assert!(buf.starts_with(b"0123456789\n0123456789\n"));
    drop(out);
    let t = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(141));
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(
        w.wait_until(Duration::from_secs(3), || w.processes(None).is_empty()),
        "yes still runs inside"
    );
}

#[test]
fn execs_run_with_the_workers_identity_and_restrictions() {
    if let Some(why) = skip_reason() {
        skip!("{why}");
        return;
    }
    for user in [
        iii::sandbox::User::default(),
        iii::sandbox::User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![],
        },
    ] {
        let w = Worker::start_as(user.clone());
        let out = w.exec(&[WORKER, "--", "cat", "/proc/self/status"], b"");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let worker = std::fs::read_to_string(format!("/proc/{}/status", w.worker_pid())).unwrap();
        let pick = |status: &str| -> Vec<String> {
            status
                .lines()
                .filter(|l| {
                    [
                        "Uid:",
                        "Gid:",
                        "Groups:",
                        "CapBnd:",
                        "CapEff:",
                        "CapPrm:",
                        "NoNewPrivs:",
                        "Seccomp:",
                    ]
                    .iter()
                    .any(|k| l.starts_with(k))
                })
                .map(str::to_string)
                .collect()
        };
        let (mine, theirs) = (pick(&text(&out.stdout)), pick(&worker));
        assert_eq!(mine.len(), 8, "{mine:?}");
        assert_eq!(mine, theirs, "exec vs worker (uid {})", user.uid);
        assert!(mine
            .iter()
            .any(|l| l.starts_with("Seccomp:") && l.ends_with('2')));
        assert!(mine
            .iter()
            .any(|l| l == &format!("Uid:\t{0}\t{0}\t{0}\t{0}", user.uid)));
        // Same namespaces as the worker: its hostname, its PID namespace (init is PID 1).
        let out = w.exec(
            &[WORKER, "--", "sh", "-c", "hostname; cat /proc/1/comm"],
            b"",
        );
        assert_eq!(text(&out.stdout), format!("{WORKER}\niii\n"));
    }
}
