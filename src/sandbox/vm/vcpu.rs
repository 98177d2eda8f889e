//! One thread per vCPU: run the vCPU, route its exits to the device bus, and stop promptly when
//! the VM ends (kicked out of `KVM_RUN` by a signal plus `immediate_exit`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::devices::{Bus, BusEvent};
use super::kvm::bindings::KVM_MP_STATE_RUNNABLE;
use super::kvm::{VcpuExit, VcpuFd, VcpuKicker};
use super::seccomp::{self, Role};
use super::sys;
use super::VmExit;
use crate::{err, Result};

/// Shared by the vCPU threads, the `Vm` owner and stop handles: the first outcome wins.
pub struct RunState {
    outcome: Mutex<Option<Result<VmExit>>>,
    done: Condvar,
    stop: AtomicBool,
    running: Mutex<Vec<(sys::ThreadHandle, VcpuKicker)>>,
}

impl Default for RunState {
    fn default() -> Self {
        Self::new()
    }
}

impl RunState {
    pub fn new() -> RunState {
        RunState {
            outcome: Mutex::new(None),
            done: Condvar::new(),
            stop: AtomicBool::new(false),
            running: Mutex::new(Vec::new()),
        }
    }

    /// Record how the VM ended (ignored if it already has) and wake the owner.
    pub fn finish(&self, outcome: Result<VmExit>) {
        let mut o = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if o.is_none() {
            *o = Some(outcome);
        }
        self.stop.store(true, Ordering::SeqCst);
        self.done.notify_all();
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Block until some thread calls [`RunState::finish`].
    pub fn wait(&self) -> Result<VmExit> {
        let mut o = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = o.take() {
                // Leave a marker so later `finish` calls stay ignored.
                *o = Some(Ok(VmExit::Stopped));
                return r;
            }
            o = self.done.wait(o).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Make every registered vCPU thread leave `KVM_RUN`.
    ///
    /// # Safety
    /// The registered threads must not have been joined yet.
    pub unsafe fn kick_all(&self) {
        for (thread, kicker) in self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            // SAFETY: per this function's contract, the threads (and so their run areas,
            // owned by those threads) are still alive.
            unsafe {
                kicker.kick();
                sys::kick_thread(*thread);
            }
        }
    }
}

/// The body of a vCPU thread. Returns the vCPU so that its run area stays mapped until the
/// thread is joined (a late kick writes to it).
pub fn run_vcpu(
    mut vcpu: VcpuFd,
    bus: Arc<Bus>,
    state: Arc<RunState>,
    start_runnable: bool,
) -> VcpuFd {
    state
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((sys::current_thread(), vcpu.kicker()));
    let id = vcpu.id();
    // A panic must still end the VM: the owner waits for an outcome, not for threads.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Before the first exit: from here on the thread handles guest-controlled data.
        seccomp::confine(Role::Vcpu)
            .map_err(|e| err!("vCPU {id}: installing its seccomp filter: {e}"))?;
        if start_runnable {
            vcpu.set_mp_state(KVM_MP_STATE_RUNNABLE)?;
        }
        vcpu_loop(&mut vcpu, &bus, &state)
    }));
    match outcome {
        Ok(Ok(Some(exit))) => state.finish(Ok(exit)),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => state.finish(Err(e)),
        Err(_) => state.finish(Err(err!("vCPU {id} thread panicked"))),
    }
    vcpu
}

/// Run until the guest ends the VM (`Some`), the VM is stopped (`None`), or an error.
fn vcpu_loop(vcpu: &mut VcpuFd, bus: &Bus, state: &RunState) -> Result<Option<VmExit>> {
    let id = vcpu.id();
    loop {
        if state.stopping() {
            return Ok(None);
        }
        let exit = vcpu.run()?;
        match exit {
            VcpuExit::IoOut { port, size, data } => {
                for chunk in data.chunks(size.max(1)) {
                    match bus.pio_write(port, chunk) {
                        Some(BusEvent::Exit(code)) => return Ok(Some(VmExit::Exited(code))),
                        Some(BusEvent::Reset) => return Ok(Some(VmExit::Reset)),
                        None => {}
                    }
                }
            }
            VcpuExit::IoIn { port, size, data } => {
                for chunk in data.chunks_mut(size.max(1)) {
                    bus.pio_read(port, chunk);
                }
            }
            VcpuExit::MmioRead { addr, data } => bus.mmio_read(addr, data),
            VcpuExit::MmioWrite { addr, data } => bus.mmio_write(addr, data),
            VcpuExit::Interrupted => {}
            VcpuExit::Hlt => {
                return Err(err!(
                    "vCPU {id} halted at rip {:#x} with nothing to wake it",
                    rip(vcpu)
                ));
            }
            VcpuExit::Shutdown => {
                return Err(err!(
                    "guest crashed: vCPU {id} shut down (triple fault) at rip {:#x}",
                    rip(vcpu)
                ));
            }
            VcpuExit::FailEntry(reason) => {
                return Err(err!(
                    "KVM could not enter vCPU {id}: hardware reason {reason:#x}"
                ));
            }
            VcpuExit::InternalError { suberror } => {
                return Err(err!(
                    "guest crashed: KVM internal error (suberror {suberror}) on vCPU {id} at rip {:#x}",
                    rip(vcpu)
                ));
            }
            VcpuExit::SystemEvent { kind } => {
                // KVM_SYSTEM_EVENT_SHUTDOWN (1) is a clean power-off, RESET (2) a reboot.
                return match kind {
                    2 => Ok(Some(VmExit::Reset)),
                    1 => Ok(Some(VmExit::Exited(0))),
                    _ => Err(err!("guest crashed: system event {kind} on vCPU {id}")),
                };
            }
            VcpuExit::Other(reason) => {
                return Err(err!(
                    "guest crashed: unexpected KVM exit {reason} on vCPU {id} at rip {:#x}",
                    rip(vcpu)
                ));
            }
        }
    }
}

fn rip(vcpu: &VcpuFd) -> u64 {
    vcpu.get_regs().map(|r| r.rip).unwrap_or(u64::MAX)
}
