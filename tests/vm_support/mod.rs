//! Shared by the `vm_*` integration tests: KVM availability, building test guests with gcc,
//! temp dirs that clean up, a serial sink, and a watchdog so a stuck guest fails the test.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use crate::tempdir::TempDir;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iii::sandbox::vm::{Vm, VmExit};

/// `Some(reason)` when this host cannot run the VM tests.
pub fn kvm_unavailable() -> Option<String> {
    if !Path::new("/dev/kvm").exists() {
        return Some("/dev/kvm does not exist".into());
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Some("/dev/kvm is not accessible".into());
    }
    if Command::new("gcc").arg("--version").output().is_err() {
        return Some("gcc is not installed (needed to build test guests)".into());
    }
    None
}

#[macro_export]
macro_rules! require_kvm {
    () => {
        if let Some(why) = vm_support::kvm_unavailable() {
            skip!("{why}");
            return;
        }
    };
}

pub fn guests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests")
}

/// Compile `tests/guests/<name>.c` into a freestanding x86_64 ELF in `dir`.
pub fn build_guest(name: &str, dir: &Path) -> PathBuf {
    build_guest_linked(name, "guest.ld", dir)
}

/// As [`build_guest`], with another linker script from `tests/guests`.
pub fn build_guest_linked(name: &str, script: &str, dir: &Path) -> PathBuf {
    // `name` is a C file's stem, or a file name with its extension (e.g. `pvh.S`).
    let src = if name.contains('.') {
        guests_dir().join(name)
    } else {
        guests_dir().join(format!("{name}.c"))
    };
    let out = dir.join(format!("{name}-{script}.elf"));
    if out.exists() {
        return out; // already built in this test's temp dir
    }
    let o = Command::new("gcc")
        .args([
            "-O2",
            "-ffreestanding",
            "-fno-builtin",
            "-nostdlib",
            "-static",
            "-fno-pic",
            "-no-pie",
            "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables",
            "-mno-red-zone",
            "-mgeneral-regs-only",
            "-Wl,--build-id=none",
        ])
        .arg(format!("-Wl,-T,{}", guests_dir().join(script).display()))
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .expect("running gcc");
    assert!(
        o.status.success(),
        "gcc {name}.c failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Serial output collected in memory.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Run `vm`, stopping it if it has not ended after `secs`; returns the outcome and whether the
/// watchdog fired.
pub fn run_with_watchdog(vm: Vm, secs: u64) -> (iii::Result<VmExit>, bool) {
    let stop = vm.stop_handle();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let fired = Arc::new(Mutex::new(false));
    let f = fired.clone();
    let dog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(secs)).is_err() {
            *f.lock().unwrap() = true;
            stop.stop();
        }
    });
    let r = vm.run();
    let _ = done_tx.send(());
    dog.join().unwrap();
    let fired = *fired.lock().unwrap();
    (r, fired)
}

/// Number of open fds and threads of this process.
pub fn fds_and_threads() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let tasks = std::fs::read_dir("/proc/self/task").unwrap().count();
    (fds, tasks)
}

/// A synthetic bzImage whose protected-mode code is `tests/guests/<name>.c` (64-bit entry at
/// offset 0x200), to exercise the bzImage loader with a guest that runs here.
pub fn build_bzimage_guest(name: &str, dir: &Path) -> PathBuf {
    let elf = build_guest_linked(name, "bzimage.ld", dir);
    let bin = dir.join(format!("{name}.bin"));
    let o = Command::new("objcopy")
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(&bin)
        .output()
        .expect("running objcopy");
    assert!(
        o.status.success(),
        "objcopy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let payload = std::fs::read(&bin).unwrap();
    let out = dir.join(format!("{name}.bzImage"));
    std::fs::write(
        &out,
        iii::sandbox::vm::boot::bzimage::wrap_payload(&payload),
    )
    .unwrap();
    out
}
