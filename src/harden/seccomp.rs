//! The worker's seccomp filter: a deny-list in the spirit of docker's default profile, as a
//! classic BPF program built by hand. Denied calls fail with EPERM (so programs see an ordinary
//! permission error); `clone3` fails with ENOSYS so that libcs fall back to `clone`, whose flags
//! the filter can inspect. Foreign architectures and the x32 ABI are refused outright, since
//! their syscall numbers would dodge the list.
//!
//! Decisions: `ptrace`, `process_vm_*` and `kcmp` stay allowed (docker allows them on kernels
//! ≥ 4.8, where ptrace can no longer bypass seccomp; debuggers inside a worker are legitimate).
//! Namespace creation is refused (`unshare`/`setns`, and `clone` with namespace flags), as are
//! mounting, module loading, kexec, reboot, the kernel keyring, bpf, perf, clock setting,
//! swap, accounting, quotas, file handles (`open_by_handle_at`), `userfaultfd` and `io_uring`.

use std::io;

const AUDIT_ARCH_NATIVE: u32 = if cfg!(target_arch = "x86_64") {
    0xC000_003E
} else {
    0xC000_00B7 // aarch64
};
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// seccomp_data offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16;

const NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

/// Syscalls that always fail with EPERM.
fn denied() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_lookup_dcookie,
        libc::SYS_quotactl,
        libc::SYS_setns,
        libc::SYS_userfaultfd,
        libc::SYS_vhangup,
        libc::SYS_syslog,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS__sysctl,
        libc::SYS_nfsservctl,
    ]);
    v
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

const LD_W_ABS: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const JEQ_K: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const JGE_K: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
const JSET_K: u32 = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
const RET_K: u32 = libc::BPF_RET | libc::BPF_K;

/// The filter program.
pub fn program() -> Vec<libc::sock_filter> {
    let deny = denied();
    // Layout (classic BPF only jumps forward, relative to the next instruction):
    //   0 ld arch; 1 jeq native ? 2 : EPERM; 2 ld nr; 3 jge x32 ? EPERM : 4
    //   4 jeq clone3 ? ENOSYS : 5; 5 jeq clone ? CHECK : 6; 6 jeq unshare ? CHECK : 7
    //   7.. jeq denied[i] ? EPERM : next
    //   ALLOW: ret allow
    //   CHECK: ld arg0 (the flags of clone and unshare); jset NS_FLAGS ? EPERM : ALLOW2
    //   ALLOW2: ret allow; EPERM: ret errno(EPERM); ENOSYS: ret errno(ENOSYS)
    let n = deny.len();
    let first_deny = 7;
    let allow = first_deny + n;
    let check = allow + 1;
    let allow2 = check + 2;
    let eperm = allow2 + 1;
    let enosys = allow2 + 2;
    let rel = |from: usize, to: usize| -> u8 {
        let d = to - from - 1;
        u8::try_from(d).expect("seccomp jump fits")
    };
    let mut p = Vec::with_capacity(enosys + 1);
    p.push(stmt(LD_W_ABS, OFF_ARCH));
    p.push(jump(JEQ_K, AUDIT_ARCH_NATIVE, 0, rel(1, eperm)));
    p.push(stmt(LD_W_ABS, OFF_NR));
    p.push(jump(JGE_K, X32_SYSCALL_BIT, rel(3, eperm), 0));
    p.push(jump(JEQ_K, libc::SYS_clone3 as u32, rel(4, enosys), 0));
    p.push(jump(JEQ_K, libc::SYS_clone as u32, rel(5, check), 0));
    p.push(jump(JEQ_K, libc::SYS_unshare as u32, rel(6, check), 0));
    for (i, nr) in deny.iter().enumerate() {
        p.push(jump(JEQ_K, *nr as u32, rel(first_deny + i, eperm), 0));
    }
    p.push(stmt(RET_K, libc::SECCOMP_RET_ALLOW));
    p.push(stmt(LD_W_ABS, OFF_ARG0_LO));
    p.push(jump(
        JSET_K,
        NS_FLAGS,
        rel(check + 1, eperm),
        rel(check + 1, allow2),
    ));
    p.push(stmt(RET_K, libc::SECCOMP_RET_ALLOW));
    p.push(stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32));
    p.push(stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    p
}

/// Install `prog` for the calling thread (and everything it execs). Requires no_new_privs or
/// CAP_SYS_ADMIN; called in the worker child right before `execve`, so async-signal-safe.
pub fn install(prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_ends_every_path_in_a_return_and_jumps_stay_inside() {
        let p = program();
        assert!(p.len() < 4096);
        for (i, ins) in p.iter().enumerate() {
            if (ins.code as u32 & 0x07) == libc::BPF_JMP {
                assert!(i + 1 + (ins.jt as usize) < p.len());
                assert!(i + 1 + (ins.jf as usize) < p.len());
            }
        }
        assert_eq!(p[p.len() - 1].code as u32 & 0x07, libc::BPF_RET);
    }
}
