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
//!
//! [`allow_list`] builds the other kind of program, for the VMM's own threads: only the listed
//! calls (optionally only with listed values of one argument) pass, everything else gets the
//! default action.
//!
//! Written by hand rather than through libseccomp: that is a C library (against the one
//! static binary), and the two programs here are small enough to read instruction by
//! instruction; the unit tests check every jump lands inside the program.

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

/// One system call an [`allow_list`] program lets through.
#[derive(Debug, Clone, Copy)]
pub struct Allow {
    pub nr: libc::c_long,
    /// Only when argument `.0` (its low 32 bits) is one of `.1`; any other value gets the
    /// program's default action.
    pub only: Option<(u32, &'static [u32])>,
    /// What a match returns (`SECCOMP_RET_ALLOW`, or an errno action).
    pub ret: u32,
}

impl Allow {
    pub const fn call(nr: libc::c_long) -> Allow {
        Allow {
            nr,
            only: None,
            ret: libc::SECCOMP_RET_ALLOW,
        }
    }

    /// `nr` only when argument `arg` is one of `values` (e.g. `ioctl` with given requests).
    pub const fn with_arg(nr: libc::c_long, arg: u32, values: &'static [u32]) -> Allow {
        Allow {
            nr,
            only: Some((arg, values)),
            ret: libc::SECCOMP_RET_ALLOW,
        }
    }

    /// `nr` fails with `errno` instead of running (e.g. `clone3` → ENOSYS, so that a libc falls
    /// back to `clone`).
    pub const fn fail(nr: libc::c_long, errno: i32) -> Allow {
        Allow {
            nr,
            only: None,
            ret: libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA),
        }
    }
}

/// An allow-list program: the native architecture's calls in `rules` get their action,
/// everything else (foreign architectures and x32 included) gets `default`.
pub fn allow_list(rules: &[Allow], default: u32) -> Vec<libc::sock_filter> {
    // Layout: 0 ld arch; 1 jeq native ? 2 : DEFAULT; 2 ld nr; 3 jge x32 ? DEFAULT : 4; then
    // per rule either `jeq nr ? ret : next` + `ret action`, or, with an argument condition,
    // `jeq nr ? 1 : skip`, `ld arg`, `jeq value ? ALLOW : next`…, `ret default`; then
    // DEFAULT: ret default; ALLOW: ret allow. Jumps to DEFAULT/ALLOW are patched at the end.
    enum To {
        Here(u8),
        Default,
        Allow,
    }
    let mut code: Vec<(u32, u32, To, To)> = Vec::new();
    let ins = |code: &mut Vec<(u32, u32, To, To)>, op: u32, k: u32| {
        code.push((op, k, To::Here(0), To::Here(0)))
    };
    ins(&mut code, LD_W_ABS, OFF_ARCH);
    code.push((JEQ_K, AUDIT_ARCH_NATIVE, To::Here(0), To::Default));
    ins(&mut code, LD_W_ABS, OFF_NR);
    code.push((JGE_K, X32_SYSCALL_BIT, To::Default, To::Here(0)));
    for r in rules {
        match r.only {
            None if r.ret == libc::SECCOMP_RET_ALLOW => {
                code.push((JEQ_K, r.nr as u32, To::Allow, To::Here(0)));
            }
            None => {
                code.push((JEQ_K, r.nr as u32, To::Here(0), To::Here(1)));
                ins(&mut code, RET_K, r.ret);
            }
            Some((arg, values)) => {
                let skip = u8::try_from(values.len() + 2).expect("seccomp rule fits");
                code.push((JEQ_K, r.nr as u32, To::Here(0), To::Here(skip)));
                ins(&mut code, LD_W_ABS, OFF_ARG0_LO + 8 * arg);
                for v in values {
                    code.push((JEQ_K, *v, To::Allow, To::Here(0)));
                }
                ins(&mut code, RET_K, default);
            }
        }
    }
    let default_at = code.len();
    ins(&mut code, RET_K, default);
    let allow_at = code.len();
    ins(&mut code, RET_K, libc::SECCOMP_RET_ALLOW);
    let rel = |from: usize, to: &To| -> u8 {
        let target = match to {
            To::Here(d) => return *d,
            To::Default => default_at,
            To::Allow => allow_at,
        };
        u8::try_from(target - from - 1).expect("seccomp jump fits")
    };
    code.iter()
        .enumerate()
        .map(|(i, (op, k, jt, jf))| libc::sock_filter {
            code: *op as u16,
            jt: rel(i, jt),
            jf: rel(i, jf),
            k: *k,
        })
        .collect()
}

/// Set no_new_privs on the calling thread (inherited by its children and execs; never
/// cleared): what lets a thread without CAP_SYS_ADMIN install a filter. Async-signal-safe.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

    /// Run a classic BPF program over a seccomp_data, as the kernel would.
    fn eval(p: &[libc::sock_filter], nr: u32, args: [u32; 6]) -> u32 {
        let mut data = [0u32; 16];
        data[0] = nr;
        data[1] = AUDIT_ARCH_NATIVE;
        for (i, a) in args.iter().enumerate() {
            data[4 + 2 * i] = *a;
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = p[pc];
            let code = ins.code as u32;
            pc += 1;
            match code {
                LD_W_ABS => acc = data[ins.k as usize / 4],
                JEQ_K => pc += if acc == ins.k { ins.jt } else { ins.jf } as usize,
                JGE_K => pc += if acc >= ins.k { ins.jt } else { ins.jf } as usize,
                RET_K => return ins.k,
                _ => panic!("unexpected instruction {code:#x}"),
            }
        }
    }

    #[test]
    fn allow_list_passes_listed_calls_and_arguments_only() {
        const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
        let rules = [
            Allow::call(libc::SYS_read),
            Allow::with_arg(libc::SYS_ioctl, 1, &[0xAE80, 0x5421]),
            Allow::fail(libc::SYS_clone3, libc::ENOSYS),
            Allow::call(libc::SYS_write),
        ];
        let p = allow_list(&rules, KILL);
        let allow = libc::SECCOMP_RET_ALLOW;
        assert_eq!(eval(&p, libc::SYS_read as u32, [0; 6]), allow);
        assert_eq!(eval(&p, libc::SYS_write as u32, [0; 6]), allow);
        assert_eq!(
            eval(&p, libc::SYS_ioctl as u32, [3, 0xAE80, 0, 0, 0, 0]),
            allow
        );
        assert_eq!(
            eval(&p, libc::SYS_ioctl as u32, [3, 0x5421, 0, 0, 0, 0]),
            allow
        );
        assert_eq!(
            eval(&p, libc::SYS_ioctl as u32, [3, 0xAE81, 0, 0, 0, 0]),
            KILL
        );
        assert_eq!(
            eval(&p, libc::SYS_clone3 as u32, [0; 6]),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(eval(&p, libc::SYS_openat as u32, [0; 6]), KILL);
        assert_eq!(
            eval(&p, X32_SYSCALL_BIT | libc::SYS_read as u32, [0; 6]),
            KILL
        );
        for (i, ins) in p.iter().enumerate() {
            if (ins.code as u32 & 0x07) == libc::BPF_JMP {
                assert!(i + 1 + (ins.jt as usize) < p.len());
                assert!(i + 1 + (ins.jf as usize) < p.len());
            }
        }
    }
}
