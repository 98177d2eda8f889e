//! Whether a KVM device can boot a given Linux kernel, found out by booting it: what
//! `sandbox: auto` asks before it picks `vm` (through a cache, `crate::supervisor::backend`).
//! A module name cannot answer it: a nested paravirtual KVM (`kvm_pvm`) runs small guests of
//! our own but an unmodified Linux falls into instruction emulation and dies there, and a host
//! may fail some other way nobody has named yet.
//!
//! The probe boots the kernel with no initramfs and no root device. A kernel that gets that far
//! has brought up its CPU, memory, timers and console, and then panics ("VFS: Unable to mount
//! root fs"); with `panic=-1 reboot=k` it resets, which the VMM reports as [`VmExit::Reset`].
//! That takes well under a second on a hardware KVM. Anything else — a crash, a KVM internal
//! error, not a word on the console within [`FIRST_WORD`], no reset within the timeout — means
//! this device cannot boot this kernel.

use std::io::Write;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Vm, VmConfig, VmExit};
use crate::{err, Result};

/// The kernel's console output, kept for the verdict and a one-line reason.
#[derive(Clone, Default)]
struct Console(Arc<Mutex<Vec<u8>>>);

impl Write for Console {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Only the tail matters (the panic line); keep memory bounded whatever the guest says.
        if v.len() > 64 << 10 {
            v.drain(..32 << 10);
        }
        v.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Console {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// The kernel command line of the probe: notices and worse on the console — a few lines, the
/// first of them ("Linux version") as soon as the console is up, and the panic.
pub const CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 loglevel=6";

/// A kernel that has not said a word by then is not booting: on a nested paravirtual KVM it
/// spins in instruction emulation, silent, until the timeout. A hardware KVM gets its first
/// line out within milliseconds, one nested under emulation within a second or two.
pub const FIRST_WORD: Duration = Duration::from_secs(5);

/// Boot `kernel` on `kvm_device` until it panics for want of a root file system and resets.
/// `Ok(how long it took)`, or why not in one line.
pub fn boots_linux(kernel: &Path, kvm_device: &Path, timeout: Duration) -> Result<Duration> {
    let console = Console::default();
    let mut cfg = VmConfig::new(kernel.to_path_buf());
    cfg.vcpus = 1;
    cfg.memory_mib = 128;
    cfg.cmdline = CMDLINE.into();
    cfg.control_channel = false;
    cfg.kvm_device = kvm_device.to_path_buf();
    cfg.serial_out = Box::new(console.clone());
    let t0 = Instant::now();
    let vm = Vm::build(cfg)?;
    let stop = vm.stop_handle();
    let (tx, rx) = mpsc::channel();
    let runner = std::thread::Builder::new()
        .name("kvm-probe".into())
        .spawn(move || {
            let _ = tx.send(vm.run());
        })
        .map_err(|e| err!("kvm probe: cannot start a thread: {e}"))?;
    let mut silent = false;
    let outcome = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => break Some(r),
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let quiet = t0.elapsed() >= FIRST_WORD.min(timeout) && console.text().is_empty();
        if quiet || t0.elapsed() >= timeout {
            silent = quiet;
            stop.stop();
            break None;
        }
    };
    let _ = runner.join();
    let took = t0.elapsed();
    let text = console.text();
    let last = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(120)
        .collect::<String>();
    let said = if last.is_empty() {
        "no console output".to_string()
    } else {
        format!("last console line: {last:?}")
    };
    match outcome {
        Some(Ok(VmExit::Reset)) if text.contains("Kernel panic") => Ok(took),
        Some(Ok(exit)) => Err(err!(
            "the kernel ended with {exit:?} before booting ({said})"
        )),
        Some(Err(e)) => Err(err!("{} ({said})", e.message())),
        None if silent => Err(err!(
            "the kernel said nothing within {} s",
            FIRST_WORD.min(timeout).as_secs()
        )),
        None => Err(err!(
            "the kernel did not boot within {} s ({said})",
            timeout.as_secs()
        )),
    }
}
