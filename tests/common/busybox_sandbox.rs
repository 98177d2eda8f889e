//! Namespace sandboxes for tests: a busybox-static root filesystem, a [`SandboxSpec`] for it,
//! and a running sandbox whose stdout and stderr are collected; [`Running::finish`] waits for
//! it and hands back its cgroup directories (tests check they are gone).
//!
//! Include it in a test crate with skip.rs and tempdir.rs:
//! `#[path = "common/busybox_sandbox.rs"] mod busybox_sandbox;`

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use iii::sandbox::namespace::{self, NamespaceSandbox, Options};
use iii::sandbox::{
    Network, ProcessSpec, Resources, Sandbox, SandboxSpec, Stdio, User, WorkerExit,
};

pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip!("the namespace backend needs root");
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        skip!("/bin/busybox (busybox-static) is not installed");
        return false;
    }
    true
}

/// Whether this host can give sandboxes `res` (cgroup controllers mounted and delegable).
pub fn limits_available(res: &Resources) -> bool {
    match namespace::cgroup::Cgroup::probe(res) {
        Ok(()) => true,
        Err(e) => {
            skip!("resource limits unavailable here: {e}");
            false
        }
    }
}

/// A busybox root filesystem: /bin/busybox, its applets, /etc/passwd and /etc/group.
pub fn busybox_root(dir: &Path) -> PathBuf {
    let root = dir.join("image");
    for d in ["bin", "etc", "home/app"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nusers:x:100:app\n",
    )
    .unwrap();
    root
}

pub fn spec(dir: &Path, image: &Path, name: &str, args: &[&str]) -> SandboxSpec {
    SandboxSpec {
        name: name.into(),
        image_root: image.to_path_buf(),
        worker_dir: dir.join("worker"),
        process: ProcessSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![
                ("PATH".into(), "/bin".into()),
                ("HOME".into(), "/root".into()),
            ],
            cwd: "/workspace".into(),
            user: User::default(),
        },
        resources: Resources::default(),
        network: Network::Isolated,
        engine_addr: "127.0.0.1:49134".parse().unwrap(),
        engine_link: None,
    }
}

pub fn opts() -> Options {
    Options {
        init_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_iii"))),
    }
}

/// A running sandbox plus the threads collecting its stdout and stderr.
pub struct Running {
    pub sb: NamespaceSandbox,
    pub out: JoinHandle<String>,
    pub err: JoinHandle<String>,
}

pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array with two fresh fds that we then own.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

pub fn collect(fd: OwnedFd) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        fs::File::from(fd).read_to_end(&mut s).ok();
        String::from_utf8_lossy(&s).into_owned()
    })
}

pub fn start(spec: &SandboxSpec) -> Running {
    let (or, ow) = pipe();
    let (er, ew) = pipe();
    let sb = match namespace::start_with(
        spec,
        Stdio {
            stdout: ow,
            stderr: ew,
        },
        &opts(),
    ) {
        Ok(sb) => sb,
        Err(e) => {
            // Init is gone: its log (the worker's stderr) says why.
            let log = collect(er).join().unwrap();
            panic!("starting {}: {e}\ninit's log: {log}", spec.name);
        }
    };
    Running {
        sb,
        out: collect(or),
        err: collect(er),
    }
}

impl Running {
    pub fn finish(mut self) -> (WorkerExit, String, String, Vec<PathBuf>) {
        let cgroups = self.sb.cgroup_dirs();
        let exit = self.sb.wait().unwrap();
        drop(self.sb);
        (
            exit,
            self.out.join().unwrap(),
            self.err.join().unwrap(),
            cgroups,
        )
    }
}

pub fn run(spec: &SandboxSpec) -> (WorkerExit, String, String) {
    let (exit, out, err, cgroups) = start(spec).finish();
    for d in cgroups {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
    (exit, out, err)
}

/// The lines after `== tag` up to the next `==` line.
pub fn section<'a>(out: &'a str, tag: &str) -> Vec<&'a str> {
    out.lines()
        .skip_while(|l| *l != format!("== {tag}"))
        .skip(1)
        .take_while(|l| !l.starts_with("== "))
        .collect()
}
