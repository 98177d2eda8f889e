//! The monitor's two outside dependencies behind one seam: finding an installed image in the
//! store, and starting a sandbox with the chosen backend.

use std::path::{Path, PathBuf};

use crate::config::{SandboxChoice, VmSettings, WorkerEntry};
use crate::lockfile::{sha256_value, Kind, Lock, Source};
use crate::project::Project;
use crate::sandbox::{Backend, Sandbox, SandboxSpec, Stdio};
use crate::worker_registry::binary;
use crate::{err, Result};

/// What the engine needs from an installed image.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    pub manifest_digest: String,
    pub rootfs: PathBuf,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
}

/// The installed image for `image` (as written in config.yaml), or `None` if it was never added.
pub fn lookup_image(image: &str) -> Result<Option<ImageInfo>> {
    let home = crate::project::store_home()?;
    let store = crate::oci::Store::open(&home)?;
    Ok(store.lookup(image)?.map(image_info))
}

fn image_info(i: crate::oci::store::InstalledImage) -> ImageInfo {
    ImageInfo {
        manifest_digest: i.manifest_digest,
        rootfs: i.rootfs,
        entrypoint: i.config.entrypoint.unwrap_or_default(),
        cmd: i.config.cmd.unwrap_or_default(),
        env: i.config.env,
        working_dir: i.config.working_dir,
        user: i.config.user,
        stop_signal: i.config.stop_signal,
    }
}

/// What the worker `entry` of `project` runs, installed: the image iii.lock pins for it (its
/// digest, whatever the tag in config.yaml points at now), else the image as config.yaml
/// names it, else — for a bare registry-managed entry — the binary iii.lock pins, in its
/// minimal root filesystem, started as `/bin/<name> --url <engine>`.
pub fn lookup_worker(project: &Project, entry: &WorkerEntry) -> Result<ImageInfo> {
    let name = &entry.name;
    let lock = Lock::load(&project.lock_path())?;
    let pinned = lock.as_ref().and_then(|l| l.workers.get(name));
    let home = crate::project::store_home()?;
    let store = crate::oci::Store::open(&home)?;
    let not_synced = |what: &str| {
        err!(
            "worker {name}: {what} pinned in {} is not installed; run `iii worker sync`",
            project.lock_path().display()
        )
    };
    match (&entry.image, pinned.and_then(|p| p.source.as_ref())) {
        (image, Some(Source::Image { image: pin })) if image.as_deref().is_none_or(|i| crate::oci::reference::same_repository(i, pin)) => {
            let digest = crate::oci::Reference::parse(pin)?
                .digest
                .ok_or_else(|| err!("worker {name}: iii.lock pin {pin} has no digest"))?;
            store
                .installed(&digest)?
                .map(image_info)
                .ok_or_else(|| not_synced(&format!("image {pin}")))
        }
        (Some(image), _) => lookup_image(image)
            .map_err(|e| err!("worker {name}: {e}"))?
            .ok_or_else(|| {
                err!("worker {name}: image {image} is not installed; run `iii worker add {image}`")
            }),
        (None, Some(Source::Binary { artifacts })) => {
            let target = binary::host_target();
            let artifact = artifacts.get(target).ok_or_else(|| {
                err!(
                    "worker {name}: iii.lock has no binary for {target} (it has: {})",
                    artifacts.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            let rootfs = binary::rootfs_of(&home, &artifact.sha256);
            if !rootfs.join("bin").join(name).is_file() {
                return Err(not_synced("its binary"));
            }
            Ok(ImageInfo {
                manifest_digest: format!("sha256:{}", sha256_value(&artifact.sha256)),
                rootfs,
                entrypoint: vec![format!("/bin/{name}")],
                // The engine URL: `process_args` points `--url` at the worker's engine link.
                cmd: vec!["--url".into(), "ws://127.0.0.1:49134".into()],
                env: vec!["PATH=/bin".into()],
                working_dir: Some("/workspace".into()),
                user: None,
                stop_signal: None,
            })
        }
        (None, Some(Source::Bundle { .. })) => Err(err!(
            "worker {name}: iii.lock pins a bundle, which this iii cannot run"
        )),
        (None, _) => match pinned {
            Some(p) if p.kind == Kind::Engine => Err(err!(
                "worker {name} is built into other iii engines, not this one (built-in: {})",
                crate::config::BUILTIN_WORKERS.join(", ")
            )),
            _ => Err(err!(
                "worker {name} has no image, is not a built-in worker (built-in: {}) and is not pinned in {}; run `iii worker add {name}`",
                crate::config::BUILTIN_WORKERS.join(", "),
                project.lock_path().display()
            )),
        },
    }
}

/// The backend a worker runs in, and why `auto` chose it.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub backend: Backend,
    /// The guest kernel (`vm` only): `III_KERNEL`, else `vm.kernel` in config.yaml.
    pub kernel: Option<PathBuf>,
    /// Why `auto` fell back to `namespace` (for `list --json`), one short line.
    pub note: Option<String>,
}

/// The guest kernel configured for the `vm` backend: `III_KERNEL` (when non-empty) overrides
/// `vm.kernel`.
pub fn configured_kernel(vm: &VmSettings) -> Option<PathBuf> {
    match std::env::var_os("III_KERNEL") {
        Some(k) if !k.is_empty() => Some(PathBuf::from(k)),
        _ => vm.kernel.clone(),
    }
}

/// The KVM device: `/dev/kvm`, or `III_KVM_DEVICE` (to point iii at another device node).
pub fn kvm_device() -> PathBuf {
    match std::env::var_os("III_KVM_DEVICE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/dev/kvm"),
    }
}

/// How long the probe waits for a kernel to reach its root-mount panic: well under a second on
/// a hardware KVM, a few seconds on one nested under emulation.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Whether the KVM `device` boots `kernel` ([`crate::sandbox::vm::probe`]; the error says why
/// not, in one line). Remembered under `III_HOME/cache/kvm-probe/`, keyed by the kernel's path,
/// size and mtime and the device's path and number: one boot per kernel and device, not one
/// per `list` or worker start; a rebuilt kernel or another device is probed afresh.
pub fn kvm_boots(kernel: &Path, device: &Path) -> std::result::Result<(), String> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let k = kernel.display();
    let meta = std::fs::metadata(kernel).map_err(|e| format!("guest kernel {k}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("guest kernel {k} is not a file"));
    }
    let rdev = std::fs::metadata(device).map(|m| m.rdev()).unwrap_or(0);
    let key = format!(
        "{k}\0{}\0{}.{}\0{}\0{rdev}",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        device.display()
    );
    let name = crate::oci::digest::hex_lower(&sha2::Sha256::digest(key.as_bytes()));
    let cache = crate::project::store_home()
        .ok()
        .map(|h| h.join("cache").join("kvm-probe").join(name));
    let cached = || {
        let s = std::fs::read_to_string(cache.as_ref()?).ok()?;
        match s.trim_end().split_once(' ') {
            Some(("ok", _)) => Some(Ok(())),
            Some(("no", why)) => Some(Err(why.to_string())),
            _ => None,
        }
    };
    if let Some(v) = cached() {
        return v;
    }
    // Workers start on threads of their own: one probe at a time in this process, the others
    // then read its verdict.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = cached() {
        return v;
    }
    let verdict = crate::sandbox::vm::probe::boots_linux(kernel, device, PROBE_TIMEOUT)
        .map_err(|e| format!("{k} did not boot on {}: {}", device.display(), e.message()));
    if let Some(c) = &cache {
        let line = match &verdict {
            Ok(took) => format!("ok {} ms\n", took.as_millis()),
            Err(why) => format!("no {why}\n"),
        };
        let tmp = c.with_extension(format!("tmp{}", std::process::id()));
        let wrote = c
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, line))
            .and_then(|()| std::fs::rename(&tmp, c));
        if wrote.is_err() {
            let _ = std::fs::remove_file(&tmp); // no cache: the next call probes again
        }
    }
    verdict.map(|_| ())
}

/// The backend `sandbox:` asks for on this host: `auto` picks `vm` only when a guest kernel is
/// configured, the KVM device passes [`crate::sandbox::vm::check_host`] and boots that kernel
/// ([`kvm_boots`]), else `namespace` (saying why in [`Choice::note`]).
pub fn choose(choice: SandboxChoice, vm: &VmSettings) -> Choice {
    let kernel = configured_kernel(vm);
    match choice {
        SandboxChoice::Namespace => Choice {
            backend: Backend::Namespace,
            kernel: None,
            note: None,
        },
        SandboxChoice::Vm => Choice {
            backend: Backend::Vm,
            kernel,
            note: None,
        },
        SandboxChoice::Auto => {
            let why_not = match &kernel {
                None => Some("auto: no guest kernel (set III_KERNEL or vm.kernel)".to_string()),
                Some(k) => match crate::sandbox::vm::check_host(&kvm_device()) {
                    Err(e) => Some(format!("auto: {}", e.message())),
                    Ok(()) => kvm_boots(k, &kvm_device())
                        .err()
                        .map(|why| format!("auto: {why}; set `sandbox: vm` to try anyway")),
                },
            };
            match why_not {
                None => Choice {
                    backend: Backend::Vm,
                    kernel,
                    note: None,
                },
                Some(note) => Choice {
                    backend: Backend::Namespace,
                    kernel: None,
                    note: Some(note),
                },
            }
        }
    }
}

/// Start the sandbox `choice` names. Must be called from the thread that then waits on it:
/// the sandbox is torn down when that thread exits.
pub fn start(choice: &Choice, spec: &SandboxSpec, stdio: Stdio) -> Result<Box<dyn Sandbox>> {
    match choice.backend {
        Backend::Namespace => Ok(Box::new(crate::sandbox::namespace::start(spec, stdio)?)),
        Backend::Vm => {
            let kernel = choice.kernel.clone().ok_or_else(|| {
                crate::err!(
                    "sandbox: vm needs a guest kernel: set III_KERNEL or vm.kernel in config.yaml"
                )
            })?;
            let device = kvm_device();
            crate::sandbox::vm::check_host(&device)
                .map_err(|e| crate::err!("sandbox: vm: {}", e.message()))?;
            let mut opts = crate::sandbox::microvm::Options::new(kernel);
            opts.kvm_device = device;
            // Only the monitor starts sandboxes through here, and it is a process of its own.
            opts.drop_capabilities = true;
            // The guest's /init must be a static iii; a dynamically linked build (a debug
            // build on glibc) can name a static one here.
            opts.init_exe = std::env::var_os("III_VM_INIT")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from);
            Ok(Box::new(crate::sandbox::microvm::start(
                spec, stdio, &opts,
            )?))
        }
    }
}

/// A signal by name (`SIGTERM`, `TERM`) or number, as an image's `StopSignal` gives it.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => {
            let off = name.strip_prefix("RTMIN+")?.parse::<i32>().ok()?;
            let n = libc::SIGRTMIN() + off;
            return (n <= libc::SIGRTMAX()).then_some(n);
        }
    };
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_parse_like_docker() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("QUIT"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("SIGBOGUS"), None);
        assert_eq!(parse_signal("0"), None);
    }

    #[test]
    fn a_kernel_that_is_not_there_never_boots() {
        let e = kvm_boots(Path::new("/nonexistent/bzImage"), Path::new("/dev/kvm")).unwrap_err();
        assert!(e.starts_with("guest kernel /nonexistent/bzImage: "), "{e}");
    }

    #[test]
    fn explicit_choices_are_kept_and_auto_needs_a_kernel() {
        // III_KERNEL is not set in unit tests (the vm tests set it only on child processes).
        if std::env::var_os("III_KERNEL").is_some() {
            skip!("III_KERNEL is set in this environment");
            return;
        }
        let none = VmSettings::default();
        assert_eq!(
            choose(SandboxChoice::Namespace, &none).backend,
            Backend::Namespace
        );
        let vm = choose(SandboxChoice::Vm, &none);
        assert_eq!((vm.backend, vm.kernel), (Backend::Vm, None));
        let auto = choose(SandboxChoice::Auto, &none);
        assert_eq!(auto.backend, Backend::Namespace);
        assert!(auto.note.unwrap().contains("no guest kernel"));
        let with = VmSettings {
            kernel: Some("/boot/k".into()),
        };
        assert_eq!(
            choose(SandboxChoice::Vm, &with).kernel.as_deref(),
            Some(std::path::Path::new("/boot/k"))
        );
    }
}
