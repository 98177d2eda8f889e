//! The `vm` sandbox backend behind the sandbox contract: the pieces that run on any host (the
//! guest initramfs, the root and layer disks, backend choice and its errors through the CLI)
//! and, where a Linux guest can boot (`III_TEST_KERNEL` set, a KVM that is not the paravirtual
//! `kvm_pvm`, a static iii binary), a worker started, logged and stopped in a real VM.

#[macro_use]
#[path = "common/skip.rs"]
mod skip;
#[path = "common/engine.rs"]
mod engine;
#[path = "common/tempdir.rs"]
mod tempdir;

mod support;
mod vm_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use iii::protocol::{ExitStatus, Message};
use iii::sandbox::microvm::{self as vmsb, initramfs};
use iii::sandbox::{Backend, ProcessSpec, Sandbox, SandboxSpec, WorkerExit};
use serde_json::Value;
use support::image::{busybox_layer, Comp, Format, Image};
use support::registry::{Auth, Registry};
use support::{have_tool, TempDir};

/// (name, mode, data) of every entry of a newc archive up to the trailer, read independently of
/// the writer.
fn read_cpio(a: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
    let mut out = Vec::new();
    let mut off = 0;
    loop {
        assert_eq!(&a[off..off + 6], b"070701");
        let f = |i: usize| hex(&a[off + 6 + i * 8..off + 14 + i * 8]);
        let (mode, size, namesize) = (f(1), f(6) as usize, f(11) as usize);
        let name = String::from_utf8(a[off + 110..off + 110 + namesize - 1].to_vec()).unwrap();
        let data_at = (off + 110 + namesize).next_multiple_of(4);
        let data = a[data_at..data_at + size].to_vec();
        off = (data_at + size).next_multiple_of(4);
        if name == "TRAILER!!!" {
            return out;
        }
        out.push((name, mode, data));
    }
}

#[test]
fn initramfs_holds_a_static_init_and_the_bring_up_dirs() {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() || !initramfs::is_static_elf(busybox).unwrap() {
        skip!("no static /bin/busybox (Debian busybox-static) to stand in for iii");
        return;
    }
    let dir = TempDir::new("vm-initramfs");
    let out = dir.path().join("initramfs.cpio");
    initramfs::build(busybox, &out).unwrap();
    let a = std::fs::read(&out).unwrap();
    assert_eq!(a.len() % 512, 0);
    let entries = read_cpio(&a);
    let find = |n: &str| {
        entries
            .iter()
            .find(|e| e.0 == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    let init = find("init");
    assert_eq!(init.1, libc::S_IFREG | 0o755);
    assert_eq!(init.2, std::fs::read(busybox).unwrap());
    assert_eq!(find("dev/console").1, libc::S_IFCHR | 0o600);
    for d in initramfs::GUEST_DIRS {
        assert_eq!(find(d).1, libc::S_IFDIR | 0o755, "{d}");
    }
    // No temporary left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    if have_tool("cpio") {
        let o = Command::new("cpio")
            .arg("-t")
            .stdin(std::fs::File::open(&out).unwrap())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let listed = String::from_utf8_lossy(&o.stdout);
        for n in ["init", "dev/console", "newroot"] {
            assert!(
                listed.lines().any(|l| l == n),
                "cpio -t lacks {n}: {listed}"
            );
        }
    } else {
        skip!("(part) cpio is not installed; checked with our own reader only");
    }
}

#[test]
fn initramfs_refuses_a_dynamic_init() {
    let me = std::env::current_exe().unwrap();
    if initramfs::is_static_elf(&me).unwrap() {
        skip!("this test binary is static; no dynamic binary at hand");
        return;
    }
    let dir = TempDir::new("vm-initramfs-dyn");
    let out = dir.path().join("initramfs.cpio");
    let e = initramfs::build(&me, &out).unwrap_err().to_string();
    assert!(e.contains("dynamically linked"), "{e}");
    assert!(!e.contains('\n'));
    assert!(!out.exists());
}

/// debugfs's output of `cmd` on `image`.
fn debugfs(image: &Path, cmd: &str) -> String {
    let o = Command::new("debugfs")
        .args(["-R", cmd])
        .arg(image)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "debugfs {cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn root_disk_of_a_busybox_tree_is_built_once_and_reads_back() {
    if !Path::new("/bin/busybox").exists() {
        skip!("/bin/busybox (busybox-static) is not installed");
        return;
    }
    let dir = TempDir::new("vm-rootdisk");
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();

    let disk = vmsb::ensure_root_disk(&root).unwrap();
    assert_eq!(disk, dir.path().join("rootfs.ext2"));
    let mtime = std::fs::metadata(&disk).unwrap().modified().unwrap();
    // Cached: a second start reuses it.
    assert_eq!(vmsb::ensure_root_disk(&root).unwrap(), disk);
    assert_eq!(std::fs::metadata(&disk).unwrap().modified().unwrap(), mtime);

    let worker = dir.path().join("worker");
    let layer = vmsb::ensure_layer_disk(&worker).unwrap();
    assert_eq!(layer, worker.join("layer/disk.ext2"));
    let md = std::fs::metadata(&layer).unwrap();
    assert!(md.len() >= vmsb::LAYER_BYTES, "layer is {} bytes", md.len());
    use std::os::unix::fs::MetadataExt;
    assert!(
        md.blocks() * 512 < md.len() / 10,
        "the layer disk is sparse"
    );
    // Only the disk: the empty source directory is gone.
    let names: Vec<_> = std::fs::read_dir(worker.join("layer"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("disk.ext2")]);

    if !have_tool("debugfs") {
        skip!("(part) debugfs (e2fsprogs) is not installed; disks not read back");
        return;
    }
    assert_eq!(
        debugfs(&disk, "cat /etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n"
    );
    let ls = debugfs(&disk, "ls -l /bin");
    assert!(ls.contains("busybox") && ls.contains(" sh"), "{ls}");
    let stat = debugfs(&disk, "stat /bin/busybox");
    let size = std::fs::metadata("/bin/busybox").unwrap().len();
    assert!(stat.contains(&format!("Size: {size}")), "{stat}");
    assert!(debugfs(&disk, "stat /bin/sh").contains("Type: symlink"));
    let ls = debugfs(&layer, "ls /");
    assert!(!ls.contains("upper"), "a fresh layer is empty: {ls}");
}

/// The worker: greets, names its host, counts its runs in its writable layer, then idles.
const WORKER: &str = "echo hello from $III_WORKER_NAME; echo host $(hostname); \
    n=$(cat /count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /count; echo run $n; \
    while true; do sleep 1; done";

/// A project with one busybox image pulled from a real registry.
struct Project {
    dir: TempDir,
    registry: Registry,
}

impl Project {
    fn new() -> Option<Project> {
        Project::with_worker(WORKER)
    }

    /// A project whose busybox image runs `script` under `/bin/sh -c`.
    fn with_worker(script: &str) -> Option<Project> {
        let mut img = Image::new(Format::Oci, vec![busybox_layer(Comp::Gzip)?]);
        img.run_config = serde_json::json!({
            "Env": ["PATH=/bin"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": [script],
        });
        Project::with_image(|registry| {
            img.push(registry, "test/vm", Some("1"));
        })
    }

    /// A project whose image (`test/vm:1`) `push` puts in its registry; pulled into the
    /// store once (an add and remove), so that starts time the sandbox, not the pull.
    fn with_image(push: impl FnOnce(&Registry)) -> Option<Project> {
        let registry = Registry::start(Auth::None)?;
        let p = Project {
            dir: TempDir::new("vm-sandbox"),
            registry,
        };
        push(&p.registry);
        let out = p.iii(&["worker", "add", "--name", "tmp", &p.image()], &[]);
        assert!(out.status.success(), "add: {}", stderr(&out));
        let out = p.iii(&["worker", "remove", "tmp"], &[]);
        assert!(out.status.success(), "remove: {}", stderr(&out));
        Some(p)
    }

    fn image(&self) -> String {
        format!("{}/test/vm:1", self.registry.host)
    }

    fn write_config(&self, extra: &str) {
        std::fs::write(
            self.dir.path().join("config.yaml"),
            format!(
                "engine: {{port: 0}}\nworkers:\n  - name: w\n    image: {}\n{extra}",
                self.image()
            ),
        )
        .unwrap();
    }

    fn iii(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.iii_fed(args, env, None)
    }

    /// [`Project::iii`] with `input` on its stdin (then closed), or /dev/null.
    /// `iii -c config.yaml ARGS` in the project, with `env` on top of a clean iii environment.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        // III_TEST_III: another iii build to drive (the static musl release, whose VMM
        // threads must live within the same seccomp lists as this debug build's).
        let bin =
            std::env::var_os("III_TEST_III").unwrap_or_else(|| env!("CARGO_BIN_EXE_iii").into());
        let mut c = Command::new(bin);
        c.arg("-c")
            .arg(self.dir.path().join("config.yaml"))
            .args(args)
            .current_dir(self.dir.path())
            .env("III_HOME", self.dir.path().join("store"))
            .env_remove("III_URL")
            .env_remove("III_CONFIG_PATH")
            .env_remove("III_KERNEL")
            .env_remove("III_KVM_DEVICE");
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// The engine (`iii` with no command) on this project, its stderr in the project dir.
    fn engine(&self, env: &[(&str, &str)]) -> engine::Engine {
        engine::Engine::spawn(self.command(&[], env), self.dir.path().join("engine.log"))
    }

    fn iii_fed(&self, args: &[&str], env: &[(&str, &str)], input: Option<&[u8]>) -> Output {
        let mut c = self.command(args, env);
        c.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("running iii");
        let feeder = child.stdin.take().map(|mut stdin| {
            let data = input.unwrap_or_default().to_vec();
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = stdin.write_all(&data);
            })
        });
        let out = child.wait_with_output().expect("running iii");
        if let Some(f) = feeder {
            f.join().unwrap();
        }
        out
    }

    fn row(&self, env: &[(&str, &str)]) -> Value {
        let out = self.iii(&["worker", "list", "--json"], env);
        assert!(out.status.success(), "list: {}", stderr(&out));
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        rows.into_iter()
            .find(|r| r["name"] == "w")
            .expect("w is listed")
    }

    fn wait_status(&self, env: &[(&str, &str)], want: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.row(env);
            if r["status"] == want {
                return r;
            }
            assert!(Instant::now() < deadline, "waiting for {want}: {r}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// For a failed check: the worker's row, its log and its monitor's log.
    fn explain(&self, env: &[(&str, &str)]) -> String {
        let logs = self.iii(&["worker", "logs", "w"], env);
        let monitor = std::fs::read_to_string(self.dir.path().join(".iii/workers/w/monitor.log"));
        format!(
            "\n--- worker: {}\n--- log:\n{}\n--- monitor.log:\n{}",
            self.row(env),
            String::from_utf8_lossy(&logs.stdout),
            monitor.unwrap_or_default()
        )
    }

    fn monitor_pid(&self) -> Option<u32> {
        let s = std::fs::read_to_string(self.dir.path().join(".iii/workers/w/state.json")).ok()?;
        let v: Value = serde_json::from_str(&s).ok()?;
        v["monitor_pid"].as_u64().map(|p| p as u32)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // A monitor this test started (and the VM or namespace sandbox it owns): end it by PID,
        // checking the PID still belongs to a monitor of this project.
        if let Some(pid) = self.monitor_pid() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("__monitor")
                && cmdline.contains(&*self.dir.path().to_string_lossy())
            {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn one_error_line(o: &Output) -> String {
    assert!(!o.status.success());
    let e = stderr(o);
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    assert!(e.starts_with("error: "), "{e}");
    e
}

#[test]
fn sandbox_vm_without_a_kernel_or_kvm_is_a_clear_error() {
    let Some(p) = Project::new() else { return };
    p.write_config("    sandbox: vm\n");
    let e = one_error_line(&p.iii(&["worker", "start", "w"], &[]));
    assert!(
        e.contains("needs a guest kernel") && e.contains("III_KERNEL"),
        "{e}"
    );
    assert_eq!(p.row(&[])["status"], "failed");

    // A kernel, but no KVM device.
    let kernel = p.dir.path().join("vmlinux");
    std::fs::write(&kernel, b"not really a kernel").unwrap();
    let env = [
        ("III_KERNEL", kernel.to_str().unwrap()),
        ("III_KVM_DEVICE", "/nonexistent/kvm"),
    ];
    let e = one_error_line(&p.iii(&["worker", "start", "w"], &env));
    assert!(e.contains("/nonexistent/kvm not found"), "{e}");

    // vm.kernel in config.yaml is read too (and III_KERNEL overrides it): a kernel file that
    // is missing is named.
    p.write_config("    sandbox: vm\nvm: {kernel: /nonexistent/bzImage}\n");
    let e = one_error_line(&p.iii(&["worker", "start", "w"], &[]));
    if Path::new("/dev/kvm").exists() && iii::sandbox::vm::check_host(Path::new("/dev/kvm")).is_ok()
    {
        assert!(e.contains("/nonexistent/bzImage"), "{e}");
    } else {
        assert!(e.contains("/dev/kvm"), "{e}");
    }
}

#[test]
fn auto_falls_back_to_namespace_and_list_says_why() {
    let Some(p) = Project::new() else { return };
    p.write_config("    sandbox: auto\n");
    let r = p.row(&[]);
    assert_eq!(r["sandbox"], "namespace", "{r}");
    let note = r["sandbox_note"].as_str().unwrap_or_default().to_string();
    assert!(note.contains("no guest kernel"), "{r}");
    // With a kernel but no usable KVM device, the note names the device.
    let env = [
        ("III_KERNEL", "/boot/whatever"),
        ("III_KVM_DEVICE", "/nonexistent/kvm"),
    ];
    let r = p.row(&env);
    assert_eq!(r["sandbox"], "namespace", "{r}");
    assert!(
        r["sandbox_note"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/kvm"),
        "{r}"
    );
    // `sandbox: namespace` has nothing to explain.
    p.write_config("    sandbox: namespace\n");
    assert!(p.row(&[]).get("sandbox_note").is_none());

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip!("(part) starting a namespace sandbox needs root");
        return;
    }
    p.write_config("    sandbox: auto\n");
    let out = p.iii(&["worker", "start", "w"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = p.wait_status(&[], "running", 30);
    assert_eq!(r["sandbox"], "namespace");
    assert!(
        r["sandbox_note"]
            .as_str()
            .unwrap()
            .contains("no guest kernel"),
        "{r}"
    );
    let out = p.iii(&["worker", "stop", "-t", "5", "w"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `sandbox: auto` boots the configured kernel once to decide (a probe whose verdict is cached
/// under III_HOME): `vm` where this KVM boots it, `namespace` with the probe's reason where it
/// does not (a nested paravirtual KVM), and `list` after that answers from the cache.
#[test]
fn auto_picks_vm_only_where_the_kernel_boots() {
    let Some(kernel) = std::env::var("III_TEST_KERNEL").ok() else {
        skip!("III_TEST_KERNEL is not set (scripts/build-guest-kernel.sh)");
        return;
    };
    if let Err(e) = iii::sandbox::vm::check_host(Path::new("/dev/kvm")) {
        skip!("{e}");
        return;
    }
    let Some(p) = Project::new() else { return };
    p.write_config("    sandbox: auto\n");
    let env = [("III_KERNEL", kernel.as_str())];
    let r = p.row(&env);
    let probes = p.dir.path().join("store/cache/kvm-probe");
    let cached: Vec<PathBuf> = std::fs::read_dir(&probes)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "one verdict: {cached:?}");
    let verdict = std::fs::read_to_string(&cached[0]).unwrap();
    if iii::sandbox::vm::paravirtual_kvm() {
        assert_eq!(r["sandbox"], "namespace", "{r}");
        let note = r["sandbox_note"].as_str().unwrap_or_default();
        assert!(note.contains("did not boot on /dev/kvm"), "{r}");
        assert!(verdict.starts_with("no "), "{verdict}");
    } else {
        assert_eq!(r["sandbox"], "vm", "{r}");
        assert!(r.get("sandbox_note").is_none(), "{r}");
        assert!(verdict.starts_with("ok "), "{verdict}");
    }
    // The second time it is the cache that answers: the same choice, the verdict not rewritten.
    let written = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();
    assert_eq!(p.row(&env)["sandbox"], r["sandbox"]);
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().modified().unwrap(),
        written
    );
    // A file that is no kernel never boots, whatever the KVM.
    let bogus = p.dir.path().join("not-a-kernel");
    std::fs::write(&bogus, b"not a kernel").unwrap();
    let r = p.row(&[("III_KERNEL", bogus.to_str().unwrap())]);
    assert_eq!(r["sandbox"], "namespace", "{r}");
    assert!(
        r["sandbox_note"]
            .as_str()
            .unwrap_or_default()
            .contains("not-a-kernel did not boot"),
        "{r}"
    );
}

/// The iii the guest runs as /init: `III_VM_INIT` (a static build of this tree), else the iii
/// under test.
fn guest_init() -> PathBuf {
    std::env::var_os("III_VM_INIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_iii")))
}

/// A Linux guest's kernel and /init where one can boot here; `get` skips the test (saying
/// why) where none can.
struct LinuxGuest {
    kernel: String,
    init: String,
}

impl LinuxGuest {
    fn get() -> Option<LinuxGuest> {
        match LinuxGuest::find() {
            Ok(g) => Some(g),
            Err(why) => {
                skip!("{why}");
                None
            }
        }
    }

    fn find() -> Result<LinuxGuest, String> {
        let kernel = std::env::var("III_TEST_KERNEL")
            .map_err(|_| "III_TEST_KERNEL is not set (scripts/build-guest-kernel.sh)")?;
        iii::sandbox::vm::check_host(Path::new("/dev/kvm")).map_err(|e| e.to_string())?;
        if iii::sandbox::vm::paravirtual_kvm() {
            return Err(
                "/dev/kvm is paravirtual KVM (kvm_pvm), which cannot boot an unmodified Linux \
                 kernel"
                    .into(),
            );
        }
        let init = guest_init();
        if !initramfs::is_static_elf(&init).unwrap_or(false) {
            return Err(format!(
                "{} is dynamically linked; the guest's /init must be a static iii \
                 (set III_VM_INIT to one, or cargo test --target x86_64-unknown-linux-musl)",
                init.display()
            ));
        }
        let init = init.to_str().unwrap().to_string();
        Ok(LinuxGuest { kernel, init })
    }

    /// The environment that points iii at them.
    fn env(&self) -> [(&str, &str); 2] {
        [("III_KERNEL", &self.kernel), ("III_VM_INIT", &self.init)]
    }
}

#[test]
fn linux_guest_runs_a_worker_with_logs_exec_and_stop() {
    let Some(guest) = LinuxGuest::get() else {
        return;
    };
    let Some(p) = Project::new() else { return };
    p.write_config("    sandbox: vm\n    resources: {cpus: 1, memory: 256Mi}\n");
    let env = guest.env();
    let out = p.iii(&["worker", "start", "w"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = p.wait_status(&env, "running", 60);
    assert_eq!(r["sandbox"], "vm", "{r}");
    let wait_logs = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = p.iii(&["worker", "logs", "w"], &env);
            let logs = String::from_utf8_lossy(&out.stdout).into_owned();
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the logs: {logs}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let logs = wait_logs("run 1\n");
    assert!(logs.contains("hello from w\n"), "{logs}");
    assert!(logs.contains("host w\n"), "{logs}");
    // The guest console adds no carriage returns.
    assert!(!logs.contains('\r'), "{logs:?}");
    assert!(p
        .dir
        .path()
        .join(".iii/workers/w/layer/disk.ext2")
        .is_file());
    // exec reaches the guest's init over the virtio-console channel, like any stream.
    let out = p.iii(
        &["worker", "exec", "w", "--", "sh", "-c", "hostname; exit 3"],
        &env,
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stderr(&out),
        p.explain(&env)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "w\n");
    // -t without a terminal here: the command still gets one, in the guest.
    // (`tty` through busybox: the test image links only a few applets.)
    let out = p.iii(&["worker", "exec", "-t", "w", "--", "busybox", "tty"], &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stderr(&out),
        p.explain(&env)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("/dev/pts/"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Pipe mode: 200 KB of every byte value in, the same bytes out; closing stdin is EOF.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let out = p.iii_fed(&["worker", "exec", "w", "--", "cat"], &env, Some(&data));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} ({} bytes came back){}",
        stderr(&out),
        out.stdout.len(),
        p.explain(&env)
    );
    assert!(out.stdout == data, "{} bytes came back", out.stdout.len());
    // Several at once share the one channel: three pipes and a terminal, each byte-exact.
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for k in 0..4 {
            let (p, env, data, failures) = (&p, &env, &data, &failures);
            sc.spawn(move || {
                let (args, input) = if k == 3 {
                    (
                        vec!["worker", "exec", "-t", "w", "--", "busybox", "tty"],
                        None,
                    )
                } else {
                    (vec!["worker", "exec", "w", "--", "cat"], Some(&data[..]))
                };
                let out = p.iii_fed(&args, env, input);
                let ok = out.status.code() == Some(0)
                    && match input {
                        Some(d) => out.stdout == d,
                        None => out.stdout.starts_with(b"/dev/pts/"),
                    };
                if !ok {
                    failures.lock().unwrap().push(format!(
                        "exec {k}: exit {:?}, {} bytes out: {}",
                        out.status.code(),
                        out.stdout.len(),
                        stderr(&out)
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:#?}{}", p.explain(&env));
    let out = p.iii(&["worker", "stop", "-t", "10", "w"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("killed"),
        "stop reached the worker: {}",
        stderr(&out)
    );
    assert_eq!(p.row(&env)["status"], "stopped");
    // The writable layer survives a restart.
    let out = p.iii(&["worker", "start", "w"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_logs("run 2\n");
    let out = p.iii(&["worker", "stop", "-t", "10", "w"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    // Two runs, two guest reboots, and none of the kernel's words in the worker's log.
    let logs = String::from_utf8_lossy(&p.iii(&["worker", "logs", "w"], &env).stdout).into_owned();
    assert!(
        !logs.contains("reboot:") && !logs.contains("Restarting"),
        "{logs}"
    );
    // remove deletes the writable layer with the rest of the worker's state.
    let out = p.iii(&["worker", "remove", "w"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!p.dir.path().join(".iii/workers/w").exists());
}

#[test]
fn linux_guest_worker_reaches_the_host_through_its_nic_and_is_held_to_its_policy() {
    let Some(guest) = LinuxGuest::get() else {
        return;
    };
    let Some(p) = Project::new() else { return };
    // A host service the worker may reach at its gateway (host_ports), and one it may not.
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = open.local_addr().unwrap().port();
    let closed_port = closed.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        // Two clients: nc, then wget.
        for _ in 0..2 {
            let (mut c, _) = open.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ =
                c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 19\r\n\r\nhello from the host");
        }
    });
    p.write_config(&format!(
        "    sandbox: vm\n    resources: {{cpus: 1, memory: 256Mi}}\n    network: {{host_ports: [{port}]}}\n"
    ));
    let env = guest.env();
    let out = p.iii(&["worker", "start", "w"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    p.wait_status(&env, "running", 60);
    let script = format!(
        "echo '== nics'; ls /sys/class/net; \
         echo '== route'; ip route; \
         echo '== host'; echo GET | nc -w 10 10.0.2.2 {port} 2>&1 | tail -n 1; echo; \
         echo '== wget'; busybox timeout 10 busybox wget -q -O- http://10.0.2.2:{port}/ 2>&1; echo; \
         echo '== closed'; nc -w 5 10.0.2.2 {closed_port} </dev/null >/dev/null 2>&1 && echo open || echo refused; \
         echo '== resolv'; cat /etc/resolv.conf"
    );
    let out = p.iii(&["worker", "exec", "w", "--", "sh", "-c", &script], &env);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let logs = p.iii(&["worker", "logs", "w"], &env);
    let text = format!(
        "{text}== worker log\n{}",
        String::from_utf8_lossy(&logs.stdout)
    );
    let stop = p.iii(&["worker", "stop", "-t", "10", "w"], &env);
    assert!(stop.status.success(), "{}", stderr(&stop));
    drop(closed);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    let section = |tag: &str| -> Vec<String> {
        text.split(&format!("== {tag}\n"))
            .nth(1)
            .unwrap_or("")
            .lines()
            .take_while(|l| !l.starts_with("== "))
            .map(str::to_string)
            .collect()
    };
    // The NIC and loopback, nothing else (no sit0: the guest kernel has no IPv6-in-IPv4).
    assert_eq!(section("nics"), ["eth0", "lo"], "{text}");
    assert!(
        section("route")
            .iter()
            .any(|l| l.starts_with("default via 10.0.2.2")),
        "{text}"
    );
    assert_eq!(section("host"), ["hello from the host"], "{text}");
    // An HTTP client too. (Not `wget -T`: Debian's busybox 1.35 wget segfaults with it, on
    // any kernel.)
    assert_eq!(section("wget"), ["hello from the host"], "{text}");
    assert_eq!(section("closed"), ["refused"], "{text}");
    assert!(
        section("resolv").iter().any(|l| l == "nameserver 10.0.2.2"),
        "{text}"
    );
    server.join().unwrap();
}

/// First run: the worker kills itself with SIGKILL (not the OOM killer). Later runs: it eats
/// memory until the guest kernel's OOM killer ends it. (`busybox tail` of /dev/zero holds an
/// ever longer "line"; the test image links only a few applets.)
const MEMORY_HOG: &str = "if [ ! -e /tried ]; then echo > /tried; echo self-kill; kill -9 $$; fi; \
    echo eating; exec busybox tail /dev/zero";

#[test]
fn linux_guest_out_of_memory_is_reported_as_such() {
    let Some(guest) = LinuxGuest::get() else {
        return;
    };
    let Some(p) = Project::with_worker(MEMORY_HOG) else {
        return;
    };
    // The VM's memory is the worker's limit: 128 MiB of guest RAM, kernel and init included.
    p.write_config("    sandbox: vm\n    resources: {cpus: 1, memory: 128Mi}\n");
    let env = guest.env();
    // A SIGKILL that is not the OOM killer's is not reported as one.
    let out = p.iii(&["worker", "start", "w"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = p.wait_status(&env, "crashed", 90);
    assert!(r["error"].is_null(), "{r}");
    // The guest's OOM killer: the worker is killed, and the state says why.
    let out = p.iii(&["worker", "start", "w"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = p.wait_status(&env, "crashed", 180);
    assert_eq!(r["error"], "killed: out of memory", "{r}");
    let state: Value = serde_json::from_slice(
        &std::fs::read(p.dir.path().join(".iii/workers/w/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["signal"], libc::SIGKILL, "{state}");
    let logs = String::from_utf8_lossy(&p.iii(&["worker", "logs", "w"], &env).stdout).into_owned();
    assert!(
        logs.contains("self-kill\n") && logs.contains("eating\n"),
        "{logs}"
    );
    // The kernel's report stays off the console: the log is the worker's.
    assert!(!logs.contains("Killed process"), "{logs}");
}

/// Counts its runs in the writable layer (synced: a panicking kernel writes nothing back);
/// the first run panics the guest kernel (an OOM with `vm.panic_on_oom` set, a real panic
/// any worker can cause in its own guest), later runs idle.
const PANICKER: &str = "n=$(cat /count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /count; \
    busybox sync; echo run $n; \
    if [ $n = 1 ]; then echo 1 > /proc/sys/vm/panic_on_oom; exec busybox tail /dev/zero; fi; \
    while true; do sleep 1; done";

#[test]
fn linux_guest_kernel_panic_is_reported_and_the_worker_restarted() {
    let Some(guest) = LinuxGuest::get() else {
        return;
    };
    let Some(p) = Project::with_worker(PANICKER) else {
        return;
    };
    p.write_config("    sandbox: vm\n    resources: {cpus: 1, memory: 128Mi}\n");
    let env = guest.env();
    let mut engine = p.engine(&env);
    // The supervisor restarts it (after 1 s of backoff) and the second run stays up.
    let deadline = Instant::now() + Duration::from_secs(240);
    let r = loop {
        let r = p.row(&env);
        if r["restarts"].as_u64() >= Some(1) && r["status"] == "running" {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no restart: {r}\n{}",
            engine.stderr()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(r["sandbox"], "vm", "{r}");
    assert_eq!(r["restarts"], 1, "{r}");
    let log = engine.wait_stderr("restarting in 1s", 10);
    assert!(
        log.contains(
            "w: crashed (worker w: the guest kernel panicked: Out of memory: system-wide \
             panic_on_oom is enabled (see the worker's log)); restarting in 1s"
        ),
        "{log}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let logs = loop {
        let out = p.iii(&["worker", "logs", "w"], &env);
        let logs = String::from_utf8_lossy(&out.stdout).into_owned();
        if logs.contains("run 2\n") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Both runs in the log, and between them the kernel's last words.
    let (first, second) = (logs.find("run 1\n"), logs.find("run 2\n"));
    let panic = logs.find("Kernel panic - not syncing: Out of memory");
    assert!(
        first.is_some() && panic.is_some() && second.is_some() && first < panic && panic < second,
        "{logs}"
    );
    engine.signal(libc::SIGTERM);
    let st = engine.wait_exit(60);
    assert_eq!(st.code(), Some(0), "{}", engine.stderr());
    assert_eq!(p.row(&env)["status"], "stopped");
}

/// The Debian worker: glibc-linked bash and coreutils, from a real distribution's files.
const DEBIAN_WORKER: &str = ". /etc/os-release; echo \"$PRETTY_NAME\"; \
    echo \"bash $BASH_VERSION as $(id -un) on $(uname -s)\"; exec sleep infinity";

#[test]
fn linux_guest_runs_a_debian_minbase_image() {
    let Some(guest) = LinuxGuest::get() else {
        return;
    };
    // A debootstrap'd bookworm minbase as one gzip layer, with its digests (scripts/test-kvm.sh
    // builds it once with scripts/lib/debian-minbase.sh: the same image the benchmarks use).
    let Some(layer_path) = std::env::var_os("III_TEST_DEBIAN_LAYER")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
    else {
        skip!(
            "III_TEST_DEBIAN_LAYER is not set (scripts/test-kvm.sh builds a Debian minbase layer)"
        );
        return;
    };
    let read_digest = |ext: &str| {
        let f = layer_path.with_extension("").with_extension(ext);
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        text.trim().to_string()
    };
    let (digest, diff_id) = (read_digest("digest"), read_digest("diff_id"));
    let layer = std::fs::read(&layer_path).unwrap();
    let Some(p) = Project::with_image(|registry| {
        use support::image::{push_blob, push_manifest};
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": support::image::host_arch(), "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Entrypoint": ["/bin/bash", "-c"],
                "Cmd": [DEBIAN_WORKER],
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .unwrap();
        let config_digest = iii::oci::digest::Digest::of(&config);
        let layer_digest = iii::oci::digest::Digest::parse(&digest).unwrap();
        push_blob(registry, "test/vm", &layer_digest, &layer);
        push_blob(registry, "test/vm", &config_digest, &config);
        let mt = "application/vnd.oci.image.manifest.v1+json";
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": mt,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": digest, "size": layer.len()}],
        }))
        .unwrap();
        push_manifest(registry, "test/vm", "1", mt, &manifest);
    }) else {
        return;
    };
    p.write_config("    sandbox: vm\n    resources: {cpus: 1, memory: 256Mi}\n");
    let env = guest.env();
    let out = p.iii(&["worker", "start", "w"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = p.wait_status(&env, "running", 120);
    assert_eq!(r["sandbox"], "vm", "{r}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let logs = loop {
        let out = p.iii(&["worker", "logs", "w"], &env);
        let logs = String::from_utf8_lossy(&out.stdout).into_owned();
        if logs.contains("bash ") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        logs.starts_with("Debian GNU/Linux 12 (bookworm)\n"),
        "{logs:?}"
    );
    assert!(
        logs.contains("bash 5.2") && logs.contains(" as root on Linux\n"),
        "{logs:?}"
    );
    // The distribution's own tools in the guest: dpkg's database, glibc's NSS, apt.
    let out = p.iii(
        &[
            "worker",
            "exec",
            "w",
            "--",
            "sh",
            "-c",
            "dpkg-query -W -f '${Status}\\n' coreutils; getent passwd root | cut -d: -f6; \
             apt-get --version | head -n 1 | cut -d' ' -f1; cat /etc/debian_version | cut -d. -f1",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "install ok installed\n/root\napt\n12\n"
    );
    let out = p.iii(&["worker", "stop", "-t", "10", "w"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(p.row(&env)["status"], "stopped");
    let out = p.iii(&["worker", "remove", "w"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The protocol stand-in guest (`tests/guests/sandbox_init.c`), or why it cannot run here.
fn protocol_guest(dir: &Path) -> Option<PathBuf> {
    if let Some(why) = vm_support::kvm_unavailable() {
        skip!("{why}");
        return None;
    }
    if !Path::new("/bin/busybox").exists() {
        skip!("/bin/busybox (busybox-static) stands in for a static iii in the initramfs");
        return None;
    }
    Some(vm_support::build_guest("sandbox_init", dir))
}

/// A started VM sandbox running the stand-in guest, and the reader of its log pipe.
fn start_protocol_sandbox(dir: &Path, name: &str, args: &[&str]) -> (vmsb::VmSandbox, LogReader) {
    let (sb, reader) = try_start_guest("sandbox_init", dir, name, args);
    (sb.unwrap(), reader)
}

/// Start a VM sandbox with `tests/guests/<guest>.c` as its kernel.
fn try_start_guest(
    guest: &str,
    dir: &Path,
    name: &str,
    args: &[&str],
) -> (iii::Result<vmsb::VmSandbox>, LogReader) {
    try_start_guest_with_engine(guest, dir, name, args, "127.0.0.1:1".parse().unwrap())
}

fn try_start_guest_with_engine(
    guest: &str,
    dir: &Path,
    name: &str,
    args: &[&str],
    engine_addr: std::net::SocketAddr,
) -> (iii::Result<vmsb::VmSandbox>, LogReader) {
    try_start_guest_on(
        guest,
        dir,
        name,
        args,
        engine_addr,
        iii::sandbox::Network::Isolated,
    )
}

fn try_start_guest_on(
    guest: &str,
    dir: &Path,
    name: &str,
    args: &[&str],
    engine_addr: std::net::SocketAddr,
    network: iii::sandbox::Network,
) -> (iii::Result<vmsb::VmSandbox>, LogReader) {
    let kernel = vm_support::build_guest(guest, dir);
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "x\n").unwrap();
    let spec = SandboxSpec {
        name: name.into(),
        image_root: root,
        worker_dir: dir.join(name),
        process: ProcessSpec {
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/".into(),
            user: Default::default(),
        },
        resources: iii::sandbox::Resources {
            cpus: Some(1.0),
            memory_bytes: Some(64 << 20),
            pids: None,
        },
        network,
        engine_addr,
        engine_link: None,
    };
    let (rd, wr) = std::os::unix::net::UnixStream::pair().unwrap();
    let stdio = iii::sandbox::Stdio {
        stdout: std::os::fd::OwnedFd::from(wr.try_clone().unwrap()),
        stderr: std::os::fd::OwnedFd::from(wr),
    };
    let reader = LogReader::start(rd);
    let mut opts = vmsb::Options::new(kernel);
    opts.init_exe = Some(PathBuf::from("/bin/busybox"));
    (vmsb::start(&spec, stdio, &opts), reader)
}

/// The worker's output as the sandbox writes it, collected by a thread.
struct LogReader {
    buf: std::sync::Arc<std::sync::Mutex<String>>,
    thread: std::thread::JoinHandle<()>,
}

impl LogReader {
    fn start(rd: std::os::unix::net::UnixStream) -> LogReader {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let b = buf.clone();
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut &rd, &mut chunk) {
                b.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        LogReader { buf, thread }
    }

    /// Wait until the output contains `needle`.
    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.buf.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in: {}",
                self.buf.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// All of it, once the sandbox closed its end.
    fn join(self) -> String {
        self.thread.join().unwrap();
        let s = self.buf.lock().unwrap().clone();
        s
    }
}

/// Threads of this process whose name starts with one of `prefixes` (VMM and channel threads
/// are named after the worker).
fn threads_named(prefixes: &[&str]) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| prefixes.iter().any(|p| c.starts_with(p)))
        })
        .count()
}

/// How many of the threads named as in [`threads_named`] are still there after up to 2 s (every
/// 10 ms): a joined thread can linger in `/proc/self/task` for a moment, since `join` returns
/// once the kernel clears the thread's tid on exit, before the kernel has finished that exit
/// and dropped the task, so a single read right after a join can still see it.
fn threads_left(prefixes: &[&str]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let n = threads_named(prefixes);
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The seccomp mode (`Seccomp:` in /proc: 0 none, 2 filter) of every thread of this process
/// whose name starts with `prefix`.
fn seccomp_modes(prefix: &str) -> Vec<u32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .filter_map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("Seccomp:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .collect()
}

#[test]
fn stand_in_guest_speaks_the_hosts_encoding() {
    // The C guest hard-codes these: keep them equal to what the host decodes.
    assert_eq!(
        serde_json::to_string(&Message::Started { pid: 1 }).unwrap(),
        r#"{"type":"started","pid":1}"#
    );
    assert_eq!(
        serde_json::to_string(&Message::Exited(ExitStatus::Signal(15))).unwrap(),
        r#"{"type":"exited","signal":15}"#
    );
    assert_eq!(
        serde_json::to_string(&Message::Signal { signal: 15 }).unwrap(),
        r#"{"type":"signal","signal":15}"#
    );
    let mut ready = Vec::new();
    iii::protocol::encode_window(&mut ready, 0, 0);
    assert_eq!(ready, [0, 0, 0, 0, 5, 4, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn an_egress_vm_sandbox_has_its_network_running_until_it_stops() {
    let dir = TempDir::new("vm-egress");
    if protocol_guest(dir.path()).is_none() {
        return;
    }
    let (sb, reader) = try_start_guest_on(
        "sandbox_init",
        dir.path(),
        "vnet",
        &["/bin/worker"],
        "127.0.0.1:1".parse().unwrap(),
        iii::sandbox::Network::Egress(Default::default()),
    );
    let mut sb = sb.unwrap();
    // The NIC's host side: the worker's user-mode network, in this (monitor) process. No
    // other test here runs one.
    assert_eq!(
        threads_named(&["network"]),
        1,
        "the worker's network thread"
    );
    sb.signaller()(libc::SIGTERM).unwrap();
    sb.wait().unwrap();
    assert_eq!(threads_left(&["network"]), 0, "the network outlived its VM");
    drop(sb);
    let log = reader.join();
    assert!(!log.contains("no NIC"), "{log}");
}

#[test]
fn vm_sandbox_start_signal_wait_over_the_console() {
    let dir = TempDir::new("vm-proto-sig");
    if protocol_guest(dir.path()).is_none() {
        return;
    }
    let (mut sb, reader) = start_protocol_sandbox(dir.path(), "vp1", &["/bin/worker"]);
    assert_eq!(sb.backend(), Backend::Vm);
    assert_eq!(sb.pid(), std::process::id());
    // The threads that read guest data run under their seccomp filters; the rest of the
    // process does not (other tests' VMs in this process count too: theirs are confined).
    for prefix in ["vcpu", "vm-console"] {
        let modes = seccomp_modes(prefix);
        assert!(!modes.is_empty(), "no {prefix} thread while the VM runs");
        assert!(modes.iter().all(|m| *m == 2), "{prefix} threads: {modes:?}");
    }
    assert!(seccomp_modes("vm-spawner").iter().all(|m| *m == 0));
    let me = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    assert!(
        me.lines().any(|l| l == "Seccomp:\t0"),
        "the test thread got a filter"
    );
    // The monitor's stop path: a signaller used from another thread.
    let signaller = sb.signaller();
    std::thread::spawn(move || signaller(libc::SIGTERM).unwrap())
        .join()
        .unwrap();
    let exit = sb.wait().unwrap();
    assert_eq!(
        exit,
        WorkerExit::Signal {
            signal: libc::SIGTERM,
            oom_killed: false
        }
    );
    assert!(
        sb.signal(libc::SIGTERM).is_err(),
        "a finished sandbox refuses signals"
    );
    drop(sb);
    let log = reader.join();
    assert!(log.contains("guest: booted\n"), "{log}");
    assert!(log.contains("hello from the guest worker\n"), "{log}");
    assert!(log.contains("guest: got signal 15\n"), "{log}");
    assert_eq!(threads_left(&["iii-vmm-vp1", "iii-vm-vp1"]), 0);
    // The disks: root cached beside the tree, layer in the worker's layer/.
    assert!(dir.path().join("rootfs.ext2").is_file());
    assert!(dir.path().join("vp1/layer/disk.ext2").is_file());
    assert!(dir.path().join("vp1/vm/initramfs.cpio").is_file());
}

#[test]
fn vm_sandbox_guest_ending_without_an_exit_is_a_sandbox_failure() {
    let dir = TempDir::new("vm-proto-vanish");
    if protocol_guest(dir.path()).is_none() {
        return;
    }
    let (mut sb, reader) = start_protocol_sandbox(dir.path(), "vp2", &["vanish"]);
    match sb.wait().unwrap() {
        WorkerExit::SandboxFailed(m) => {
            assert!(m.contains("vp2") && m.contains("without reporting"), "{m}")
        }
        other => panic!("expected a sandbox failure, got {other:?}"),
    }
    drop(sb);
    assert!(reader.join().contains("hello from the guest worker"));
}

#[test]
fn vm_sandbox_sigkill_and_drop_stop_the_vm() {
    let dir = TempDir::new("vm-proto-kill");
    if protocol_guest(dir.path()).is_none() {
        return;
    }
    let (mut sb, reader) = start_protocol_sandbox(dir.path(), "vp3", &["/bin/worker"]);
    sb.signal(libc::SIGKILL).unwrap();
    assert_eq!(
        sb.wait().unwrap(),
        WorkerExit::Signal {
            signal: libc::SIGKILL,
            oom_killed: false
        }
    );
    drop(sb);
    reader.join();
    // Dropped while running: the VM is stopped and every thread joined.
    let (sb, reader) = start_protocol_sandbox(dir.path(), "vp4", &["/bin/worker"]);
    drop(sb);
    reader.join();
    assert_eq!(threads_left(&["iii-vmm-vp4", "iii-vm-vp4"]), 0);
}

#[test]
fn cli_start_logs_stop_of_a_vm_worker_with_the_stand_in_guest() {
    let Some(p) = Project::new() else { return };
    let Some(kernel) = protocol_guest(p.dir.path()) else {
        return;
    };
    p.write_config("    sandbox: vm\n");
    let env = [
        ("III_KERNEL", kernel.to_str().unwrap()),
        ("III_VM_INIT", "/bin/busybox"),
    ];
    let out = p.iii(&["worker", "start", "w"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = p.wait_status(&env, "running", 30);
    assert_eq!(r["sandbox"], "vm", "{r}");
    assert!(r.get("sandbox_note").is_none(), "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs =
            String::from_utf8_lossy(&p.iii(&["worker", "logs", "w"], &env).stdout).into_owned();
        if logs.contains("hello from the guest worker") {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {logs}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // stop reaches the guest as a protocol Signal (the VMM runs inside the monitor, so a
    // kill of the sandbox PID would hit the monitor itself).
    let monitor = p.monitor_pid().unwrap();
    // Once its VM runs, the monitor holds no capability in any of its threads (this test's
    // project belongs to the user running it), and the VMM's threads are confined.
    let mut confined = 0;
    for task in std::fs::read_dir(format!("/proc/{monitor}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        for set in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            assert_eq!(field(set), "0000000000000000", "{set} of {:?}", task.path());
        }
        assert_eq!(field("NoNewPrivs:"), "1");
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("vcpu") || comm.starts_with("vm-console") {
            assert_eq!(field("Seccomp:"), "2", "{comm}");
            confined += 1;
        }
    }
    assert!(
        confined >= 2,
        "the monitor runs a vCPU and a console thread"
    );
    let out = p.iii(&["worker", "stop", "-t", "5", "w"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("killed"), "{}", stderr(&out));
    assert_eq!(p.row(&env)["status"], "stopped");
    let logs = String::from_utf8_lossy(&p.iii(&["worker", "logs", "w"], &env).stdout).into_owned();
    assert!(logs.contains("guest: got signal 15"), "{logs}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{monitor}")).exists()
        && !std::fs::read_to_string(format!("/proc/{monitor}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(
            Instant::now() < deadline,
            "monitor {monitor} outlived its worker"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn vm_sandbox_start_fails_cleanly_when_the_guest_is_not_iii_init() {
    let dir = TempDir::new("vm-proto-notinit");
    if protocol_guest(dir.path()).is_none() {
        return;
    }
    // tests/guests/console.c greets with a text line instead of init's announcement.
    let (r, reader) = try_start_guest("console", dir.path(), "vp5", &["/bin/worker"]);
    let e = r.err().expect("start fails").to_string();
    assert!(e.contains("vp5") && e.contains("announcement"), "{e}");
    assert!(!e.contains('\n'));
    reader.join();
    assert_eq!(threads_left(&["iii-vmm-vp5"]), 0);
    // A guest that ends at once (tests/guests/basic.c exits) is named as such.
    let (r, reader) = try_start_guest("basic", dir.path(), "vp6", &["/bin/worker"]);
    let e = r.err().expect("start fails").to_string();
    assert!(
        e.contains("vp6") && e.contains("ended before its init started"),
        "{e}"
    );
    reader.join();
}

#[test]
fn vm_sandbox_tunnels_the_engine_link_to_the_host_engine() {
    let dir = TempDir::new("vm-proto-link");
    if protocol_guest(dir.path()).is_none() {
        return;
    }
    // The "engine": answers one line with its upper-cased echo.
    let engine = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = engine.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let (conn, _) = engine.accept().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&conn).read_line(&mut line).unwrap();
        (&conn).write_all(line.to_uppercase().as_bytes()).unwrap();
        line
    });
    let (r, reader) =
        try_start_guest_with_engine("sandbox_init", dir.path(), "vp7", &["link"], addr);
    let mut sb = r.unwrap();
    assert_eq!(server.join().unwrap(), "ping\n");
    // The guest logs the reply before it waits for a signal.
    reader.wait_for("link: PING\n");
    sb.signal(libc::SIGTERM).unwrap();
    assert_eq!(
        sb.wait().unwrap(),
        WorkerExit::Signal {
            signal: libc::SIGTERM,
            oom_killed: false
        }
    );
    drop(sb);
    let log = reader.join();
    assert!(log.contains("link: PING\n"), "{log}");
}
