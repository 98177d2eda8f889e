//! The `namespace` backend against the real kernel: isolation, persistence, limits, hardening,
//! init's duties, teardown and the engine link. Each test builds a busybox-static root
//! filesystem of its own (no registry needed) and runs the real `iii` binary as init.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/busybox_sandbox.rs"]
mod busybox_sandbox;
#[path = "common/tempdir.rs"]
mod tempdir;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tempdir::TempDir;

use busybox_sandbox::*;

use iii::sandbox::namespace::{self};
use iii::sandbox::{Network, Resources, Sandbox, SandboxSpec, Stdio, WorkerExit};

#[test]
fn worker_sees_only_its_own_processes_files_hostname_and_loopback() {
    if !can_run() {
        return;
    }
    let dir = TempDir::new("iso");
    let image = busybox_root(&dir.0);
    let sentinel = dir.0.join("host-sentinel");
    fs::write(&sentinel, "secret").unwrap();
    let script = format!(
        "echo '== pids'; ls /proc | grep '^[0-9]*$'; \
         echo '== ps'; ps -o pid,comm; \
         echo '== host'; hostname; \
         echo '== sentinel'; if [ -e {s} ]; then echo VISIBLE; else echo INVISIBLE; fi; \
         echo '== net'; ls /sys/class/net; \
         echo '== write'; echo mine > /etc/written && echo ok; \
         echo '== cwd'; pwd; \
         echo '== localhost'; ping -c1 -W1 localhost >/dev/null && echo ok; \
         echo '== cgroup'; cut -d: -f3 /proc/self/cgroup | sort -u; \
         echo '== end'",
        s = sentinel.display()
    );
    let s = spec(&dir.0, &image, "iso-worker", &["sh", "-c", &script]);
    let (exit, out, err) = run(&s);
    assert_eq!(exit, WorkerExit::Code(0), "stdout: {out}\nstderr: {err}");
    let pids: Vec<u32> = section(&out, "pids")
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    // init (1), the shell, and `ls` (maybe grep): nothing of the host.
    assert!(pids.contains(&1), "{pids:?}");
    assert!(pids.len() <= 4 && pids.iter().all(|p| *p < 50), "{pids:?}");
    let ps = section(&out, "ps");
    assert!(
        ps.iter().any(|l| l.trim_start().starts_with("1 ")),
        "{ps:?}"
    );
    assert!(ps.len() <= 5, "ps sees more than the sandbox: {ps:?}");
    assert_eq!(section(&out, "host"), ["iso-worker"]);
    assert_eq!(section(&out, "sentinel"), ["INVISIBLE"]);
    assert_eq!(section(&out, "net"), ["lo"]);
    assert_eq!(section(&out, "write"), ["ok"]);
    assert_eq!(section(&out, "cwd"), ["/workspace"]);
    assert_eq!(section(&out, "localhost"), ["ok"], "{err}");
    // Its own cgroup namespace, rooted at the sandbox's cgroups: no host cgroup paths.
    assert_eq!(section(&out, "cgroup"), ["/"]);
    // The write landed in the worker's layer, not in the shared image.
    let upper = s.worker_dir.join("layer/upper");
    assert_eq!(
        fs::read_to_string(upper.join("etc/written")).unwrap(),
        "mine\n"
    );
    assert!(!image.join("etc/written").exists());
    assert!(upper.join("workspace").is_dir());
    assert_eq!(fs::read_to_string(&sentinel).unwrap(), "secret");
}

#[test]
fn writes_persist_in_the_layer_across_starts() {
    if !can_run() {
        return;
    }
    let dir = TempDir::new("persist");
    let image = busybox_root(&dir.0);
    let first = spec(
        &dir.0,
        &image,
        "persist",
        &["sh", "-c", "echo 1 >> /workspace/count"],
    );
    assert_eq!(run(&first).0, WorkerExit::Code(0));
    let second = spec(
        &dir.0,
        &image,
        "persist",
        &[
            "sh",
            "-c",
            "echo 2 >> /workspace/count; cat /workspace/count",
        ],
    );
    let (exit, out, err) = run(&second);
    assert_eq!(exit, WorkerExit::Code(0), "{err}");
    assert_eq!(out, "1\n2\n");
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    if !can_run() {
        return;
    }
    let mem = Resources {
        memory_bytes: Some(32 << 20),
        ..Resources::default()
    };
    if !limits_available(&mem) {
        return;
    }
    let dir = TempDir::new("oom");
    let image = busybox_root(&dir.0);
    // busybox tail keeps the last lines of a newline-free stream in memory: it grows forever.
    let mut s = spec(&dir.0, &image, "oom", &["tail", "/dev/zero"]);
    s.resources.memory_bytes = Some(32 << 20);
    let (exit, _, err) = run(&s);
    assert_eq!(
        exit,
        WorkerExit::Signal {
            signal: 9,
            oom_killed: true
        },
        "{err}"
    );
}

#[test]
fn fork_bomb_is_stopped_by_the_pids_limit() {
    if !can_run() {
        return;
    }
    let pids = Resources {
        pids: Some(40),
        ..Resources::default()
    };
    if !limits_available(&pids) {
        return;
    }
    let dir = TempDir::new("bomb");
    let image = busybox_root(&dir.0);
    let mut s = spec(
        &dir.0,
        &image,
        "bomb",
        &["sh", "-c", "b() { b | b & }; b; sleep 3"],
    );
    s.resources.pids = Some(40);
    let r = start(&s);
    std::thread::sleep(Duration::from_millis(1500));
    let pids_dir =
        r.sb.cgroup_dirs()
            .into_iter()
            .find(|d| d.join("pids.max").exists())
            .expect("a pids cgroup");
    assert_eq!(
        fs::read_to_string(pids_dir.join("pids.max"))
            .unwrap()
            .trim(),
        "40"
    );
    let current: u64 = fs::read_to_string(pids_dir.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(current <= 40, "pids.current {current}");
    let events = fs::read_to_string(pids_dir.join("pids.events")).unwrap_or_default();
    r.sb.signal(libc::SIGKILL).unwrap();
    let (exit, _, _, cgroups) = r.finish();
    assert_eq!(
        exit,
        WorkerExit::Signal {
            signal: 9,
            oom_killed: false
        }
    );
    assert!(
        events.is_empty() || !events.contains("max 0"),
        "limit never hit: {events}"
    );
    for d in cgroups {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
}

/// A static C program that tries what the seccomp filter and capability set must refuse.
fn build_probe(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("probe.c");
    fs::write(
        &src,
        r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
static void show(const char *what, long r) {
    printf("%s=%s\n", what, r < 0 ? strerror(errno) : "ok");
}
int main(void) {
    show("mount", mount("x", "/mnt", "tmpfs", 0, 0));
    show("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, 0));
    show("unshare_user", unshare(CLONE_NEWUSER));
    show("keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0));
    show("bpf", syscall(SYS_bpf, 0, 0, 0));
    show("mknod", mknod("/tmp/disk", S_IFBLK | 0600, makedev(8, 0)));
    show("getpid", getpid());
    return 0;
}
"#,
    )
    .unwrap();
    let out = dir.join("probe");
    let ok = std::process::Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(out)
}

#[test]
fn hardening_refuses_mount_kexec_and_namespaces() {
    if !can_run() {
        return;
    }
    let dir = TempDir::new("harden");
    let image = busybox_root(&dir.0);
    fs::create_dir_all(image.join("mnt")).unwrap();
    let s = spec(
        &dir.0,
        &image,
        "harden",
        &[
            "sh",
            "-c",
            "mount -t tmpfs x /mnt; echo rc=$?; cat /proc/keys | wc -c; \
          echo x > /proc/sys/kernel/domainname; echo sysctl=$?; \
          cat /proc/1/exe > /dev/null; echo init_exe=$?",
        ],
    );
    let (exit, out, err) = run(&s);
    assert_eq!(exit, WorkerExit::Code(0), "{err}");
    assert!(out.contains("rc=255") || out.contains("rc=1"), "{out}");
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
    // /proc/keys is masked: /dev/null reads as empty; /proc/sys is read-only.
    assert!(out.lines().any(|l| l.trim() == "0"), "{out}");
    assert!(out.contains("sysctl=1"), "{out}");
    // Init runs the host's iii binary; the worker must not reach it through /proc/1/exe
    // (it lacks init's capabilities, so ptrace-mode access to PID 1 is refused).
    assert!(out.contains("init_exe=1"), "{out}");
    assert!(err.contains("Read-only file system"), "{err}");

    let Some(probe) = build_probe(&dir.0) else {
        skip!("(part) gcc -static unavailable, syscall probe not run");
        return;
    };
    fs::copy(&probe, image.join("bin/probe")).unwrap();
    let s = spec(&dir.0, &image, "harden", &["/bin/probe"]);
    let (exit, out, err) = run(&s);
    assert_eq!(exit, WorkerExit::Code(0), "{err}");
    let eperm = "Operation not permitted";
    for call in [
        "mount",
        "kexec_load",
        "unshare_user",
        "keyctl",
        "bpf",
        "mknod",
    ] {
        assert!(
            out.contains(&format!("{call}={eperm}")),
            "{call} was not refused: {out}"
        );
    }
    assert!(out.contains("getpid=ok"), "{out}");
}

#[test]
fn worker_runs_as_the_image_user() {
    if !can_run() {
        return;
    }
    let dir = TempDir::new("user");
    let image = busybox_root(&dir.0);
    let mut s = spec(&dir.0, &image, "user", &["id"]);
    s.process.user = iii::supervisor::spec::resolve_user(&image, "busybox", Some("app")).unwrap();
    let (exit, out, err) = run(&s);
    assert_eq!(exit, WorkerExit::Code(0), "{err}");
    assert_eq!(
        out.trim(),
        "uid=1000(app) gid=1000(app) groups=100(users),1000(app)"
    );
}

#[test]
fn init_reaps_orphaned_zombies() {
    if !can_run() {
        return;
    }
    let dir = TempDir::new("reap");
    let image = busybox_root(&dir.0);
    // Each subshell exits at once, orphaning its `sleep` to PID 1 (init), which must reap it
    // when it exits.
    let script = "for i in 1 2 3 4 5; do (sleep 0.2 &); done; sleep 1; \
                  for f in /proc/[0-9]*/stat; do read pid comm state rest < $f; echo \"$pid $state\"; done";
    let s = spec(&dir.0, &image, "reap", &["sh", "-c", script]);
    let (exit, out, err) = run(&s);
    assert_eq!(exit, WorkerExit::Code(0), "{err}");
    assert!(out.lines().count() >= 2, "{out}");
    assert!(
        !out.lines().any(|l| l.ends_with(" Z")),
        "zombies left: {out}"
    );
}

/// Wait until the worker created `rel` in its writable layer.
fn wait_for_layer_file(spec: &SandboxSpec, rel: &str) {
    let p = spec.worker_dir.join("layer/upper").join(rel);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.exists() {
        assert!(Instant::now() < deadline, "worker never created {rel}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_is_forwarded_and_the_exit_code_reported() {
    if !can_run() {
        return;
    }
    let dir = TempDir::new("term");
    let image = busybox_root(&dir.0);
    let script = "trap 'echo got-term; exit 42' TERM; touch /workspace/ready; \
                  while true; do sleep 0.05; done";
    let mut s = spec(&dir.0, &image, "term", &["sh", "-c", script]);
    s.process.env.push(("X".into(), "1".into()));
    let r = start(&s);
    // The trap is set once the shell created /workspace/ready.
    wait_for_layer_file(&s, "workspace/ready");
    r.sb.signal(libc::SIGTERM).unwrap();
    let (exit, out, err, _) = r.finish();
    assert_eq!(exit, WorkerExit::Code(42), "{out} {err}");
    assert!(out.contains("got-term"));

    // A worker without a handler dies of the forwarded signal, and that is what is reported.
    let s = spec(&dir.0, &image, "term", &["sleep", "100"]);
    let r = start(&s);
    r.sb.signal(libc::SIGTERM).unwrap();
    let (exit, _, _, _) = r.finish();
    assert_eq!(
        exit,
        WorkerExit::Signal {
            signal: libc::SIGTERM,
            oom_killed: false
        }
    );
}

#[test]
fn exec_failures_exit_127_and_126_with_a_message() {
    if !can_run() {
        return;
    }
    let dir = TempDir::new("execfail");
    let image = busybox_root(&dir.0);
    let (exit, _, err) = run(&spec(&dir.0, &image, "ef", &["/no/such/program"]));
    assert_eq!(exit, WorkerExit::Code(127));
    // One launcher for the worker and execs: the reason reads as exec's does.
    assert!(
        err.contains("/no/such/program") && err.to_lowercase().contains("no such file"),
        "{err}"
    );
    let (exit, _, err) = run(&spec(&dir.0, &image, "ef", &["no-such-cmd"]));
    assert_eq!(exit, WorkerExit::Code(127));
    assert!(err.contains("not found in $PATH"), "{err}");
    let (exit, _, err) = run(&spec(&dir.0, &image, "ef", &["/etc/passwd"]));
    assert_eq!(exit, WorkerExit::Code(126));
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
}

/// Our forked monitor child: SIGKILLed and reaped by PID when dropped, even if a test fails.
struct KillOnDrop(libc::pid_t);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: killing and reaping our own child by PID.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

fn proc_state(pid: i32) -> Option<char> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit(')').next()?.trim_start().chars().next()
}

fn alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(c) if c != 'Z' && c != 'X')
}

#[test]
fn killing_the_monitor_leaves_no_worker_process() {
    if !can_run() {
        return;
    }
    let dir = TempDir::new("monitor");
    let image = busybox_root(&dir.0);
    let s = spec(
        &dir.0,
        &image,
        "orphan",
        &["sh", "-c", "sleep 1000 & sleep 1000 & wait"],
    );
    let (rd, wr) = pipe();
    // The monitor is a forked child of this test process: it starts the sandbox, reports
    // init's PID and the cgroups, then waits to be killed. glibc's fork keeps malloc usable
    // in the child; the child only allocates, never prints.
    // SAFETY: see above; the child ends in _exit, never returning into the test harness.
    let monitor = unsafe { libc::fork() };
    assert!(monitor >= 0);
    if monitor == 0 {
        drop(rd);
        let r = std::panic::catch_unwind(|| {
            let sb = namespace::start_with(
                &s,
                Stdio {
                    stdout: fs::File::open("/dev/null").unwrap().into(),
                    stderr: fs::File::open("/dev/null").unwrap().into(),
                },
                &opts(),
            )
            .unwrap();
            let mut msg = format!("{}\n", sb.pid());
            for d in sb.cgroup_dirs() {
                msg.push_str(&format!("{}\n", d.display()));
            }
            fs::File::from(wr).write_all(msg.as_bytes()).unwrap();
            std::mem::forget(sb);
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let _ = r;
        // SAFETY: leaving the forked child without running the harness's exit path.
        unsafe { libc::_exit(1) };
    }
    let _monitor = KillOnDrop(monitor);
    drop(wr);
    let mut msg = String::new();
    fs::File::from(rd).read_to_string(&mut msg).unwrap();
    let mut lines = msg.lines();
    let init: i32 = lines
        .next()
        .expect("monitor reported init's pid")
        .parse()
        .unwrap();
    let cgroups: Vec<PathBuf> = lines.map(PathBuf::from).collect();
    // The worker and its children, by host PID.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut family = vec![init];
    while Instant::now() < deadline {
        family = vec![init];
        let mut i = 0;
        while i < family.len() {
            let p = family[i];
            let kids =
                fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
            family.extend(kids.split_whitespace().map(|k| k.parse::<i32>().unwrap()));
            i += 1;
        }
        if family.len() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        family.len() >= 4,
        "init, sh and two sleeps expected: {family:?}"
    );
    drop(_monitor);
    let deadline = Instant::now() + Duration::from_secs(5);
    while family.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survivors: Vec<i32> = family.iter().copied().filter(|p| alive(*p)).collect();
    // Clean up what the dead monitor could not (its cgroups), before asserting.
    for d in &cgroups {
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(
        survivors.is_empty(),
        "processes outlived the monitor: {survivors:?}"
    );
}

/// An echo server on 127.0.0.1:0 that closes after echoing `total` bytes; returns its address
/// and a handle yielding everything it received.
fn echo_server(total: usize) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = Vec::with_capacity(total);
        let mut buf = vec![0u8; 64 << 10];
        while got.len() < total {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            c.write_all(&buf[..n]).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        c.shutdown(std::net::Shutdown::Write).ok();
        got
    });
    (addr, h)
}

#[test]
fn engine_link_carries_10_mb_both_ways_byte_exact() {
    if !can_run() {
        return;
    }
    let dir = TempDir::new("link");
    let image = busybox_root(&dir.0);
    const N: usize = 10_000_000;
    let (addr, server) = echo_server(N);
    let script = format!(
        "head -c {N} /dev/urandom > /tmp/in; \
         nc 127.0.0.1 {port} < /tmp/in > /tmp/out; \
         sha256sum /tmp/in /tmp/out; cmp /tmp/in /tmp/out && echo SAME",
        port = addr.port()
    );
    let mut s = spec(&dir.0, &image, "link", &["sh", "-c", &script]);
    s.engine_addr = addr;
    let (exit, out, err) = run(&s);
    assert_eq!(exit, WorkerExit::Code(0), "{out}\n{err}");
    assert!(out.contains("SAME"), "{out}\n{err}");
    let received = server.join().unwrap();
    assert_eq!(received.len(), N);
    use sha2::Digest;
    let host_sum: String = sha2::Sha256::digest(&received)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let inner_sum = out
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(
        inner_sum, host_sum,
        "the host received other bytes than were sent"
    );
}

#[test]
fn limits_reach_the_cgroups_and_a_control_channel_signal_reaches_the_worker() {
    if !can_run() {
        return;
    }
    let all = Resources {
        cpus: Some(0.5),
        memory_bytes: Some(64 << 20),
        pids: Some(100),
    };
    if !limits_available(&all) {
        return;
    }
    let dir = TempDir::new("limits");
    let image = busybox_root(&dir.0);
    let script = "trap 'exit 7' INT; touch /workspace/ready; while true; do sleep 0.05; done";
    let mut s = spec(&dir.0, &image, "limits", &["sh", "-c", script]);
    s.resources = all;
    let r = start(&s);
    wait_for_layer_file(&s, "workspace/ready");
    let read = |file: &str| -> Option<String> {
        r.sb.cgroup_dirs()
            .iter()
            .find_map(|d| fs::read_to_string(d.join(file)).ok())
            .map(|v| v.trim().to_string())
    };
    if read("cgroup.controllers").is_some() && read("memory.max").is_some() {
        // cgroup v2
        assert_eq!(read("memory.max").unwrap(), (64u64 << 20).to_string());
        assert_eq!(read("cpu.max").unwrap(), "50000 100000");
    } else {
        assert_eq!(
            read("memory.limit_in_bytes").unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("cpu.cfs_quota_us").unwrap(), "50000");
        assert_eq!(read("cpu.cfs_period_us").unwrap(), "100000");
    }
    assert_eq!(read("pids.max").unwrap(), "100");
    // Streams the host opens reach init, which refuses kinds it does not serve, and the
    // opener is told why.
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let (id, replies) =
        r.sb.control()
            .open(
                iii::protocol::OpenRequest::EngineLink,
                Box::new(mio::net::UnixStream::from_std(a)),
            )
            .unwrap();
    assert_eq!(id % 2, 0, "host-opened streams are even");
    match replies.recv_timeout(Duration::from_secs(10)).unwrap() {
        iii::protocol::Message::OpenFailed { message } => assert!(message.contains("init")),
        other => panic!("unexpected reply {other:?}"),
    }
    // The host can also signal through the control channel instead of kill(2).
    r.sb.control()
        .send(
            0,
            iii::protocol::Message::Signal {
                signal: libc::SIGINT,
            },
        )
        .unwrap();
    let (exit, _, err, cgroups) = r.finish();
    assert_eq!(exit, WorkerExit::Code(7), "{err}");
    for d in cgroups {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
}

#[test]
fn host_network_shares_interfaces_but_keeps_the_hostname_private() {
    if !can_run() {
        return;
    }
    let dir = TempDir::new("hostnet");
    let image = busybox_root(&dir.0);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let script = format!(
        "hostname; ls /sys/class/net | wc -l; echo hello | nc 127.0.0.1 {port}; echo rc=$?"
    );
    let mut s = spec(&dir.0, &image, "hostnet", &["sh", "-c", &script]);
    s.network = Network::Host;
    let server = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        got
    });
    let (exit, out, err) = run(&s);
    assert_eq!(exit, WorkerExit::Code(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hostnet");
    let host_ifaces = fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(lines[1], host_ifaces.to_string());
    assert_eq!(server.join().unwrap(), "hello\n");
}

#[test]
fn engine_link_to_a_dead_engine_closes_the_connection() {
    if !can_run() {
        return;
    }
    let dir = TempDir::new("deadlink");
    let image = busybox_root(&dir.0);
    // A port that was just free: nothing listens on the host.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!("echo hi | nc 127.0.0.1 {port}; echo done");
    let mut s = spec(&dir.0, &image, "deadlink", &["sh", "-c", &script]);
    s.engine_addr = format!("127.0.0.1:{port}").parse().unwrap();
    let t = Instant::now();
    let (exit, out, err) = run(&s);
    assert_eq!(exit, WorkerExit::Code(0), "{err}");
    assert_eq!(out, "done\n");
    assert!(t.elapsed() < Duration::from_secs(10));
}
