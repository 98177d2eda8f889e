//! The worker's capabilities: docker's default set, minus `CAP_MKNOD`; and [`drop_process`],
//! which a VM worker's monitor uses to give up its own once the VM is built.
//!
//! Docker can keep `CAP_MKNOD` because its device cgroup stops a container from opening the
//! nodes it makes; we have no device cgroup, so a worker able to `mknod` a block device could
//! read the host's disks. Everything else matches docker's default: enough for a root worker to
//! own its files, bind low ports and switch users, and nothing that reaches outside it.

use std::io;

const KEEP: &[u32] = &[
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    29, // AUDIT_WRITE
    31, // SETFCAP
];

/// The kept set as a bit mask (capabilities 0–63).
pub fn keep_mask() -> u64 {
    KEEP.iter().fold(0u64, |m, c| m | (1 << c))
}

/// The highest capability this kernel knows (read before forking: not async-signal-safe).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drop every capability outside the kept set from the bounding set and clear the ambient
/// set. Needs CAP_SETPCAP; async-signal-safe (raw prctl calls only).
pub fn drop_bounding(last_cap: u32) -> io::Result<()> {
    drop_bounding_except(keep_mask(), last_cap)
}

/// Drop every capability outside `keep` from the bounding set and clear the ambient set.
fn drop_bounding_except(keep: u64, last_cap: u32) -> io::Result<()> {
    for cap in 0..=last_cap.min(63) {
        if keep & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// Reduce the calling thread's effective and permitted sets to the kept set and empty the
/// inheritable set (for a worker that stays root; a non-root worker loses all at setuid).
/// Async-signal-safe.
pub fn limit_current() -> io::Result<()> {
    let keep = keep_mask();
    let (mut hdr, mut data) = capget()?;
    for (i, d) in data.iter_mut().enumerate() {
        let k = (keep >> (32 * i)) as u32;
        d.effective &= k;
        d.permitted &= k;
        d.inheritable = 0;
    }
    // SAFETY: capset reads the header and two-element array.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `CAP_DAC_OVERRIDE`, as a bit of a capability mask.
pub const DAC_OVERRIDE: u64 = 1 << 1;

fn capget() -> io::Result<(CapHeader, [CapData; 2])> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget fills the two-element array the v3 ABI expects.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok((hdr, data))
}

/// Reduce this process to the capabilities in `keep` for good: effective and permitted sets
/// cut to `keep`, the inheritable and ambient sets emptied, every other capability dropped
/// from the bounding set, and no_new_privs set (so no exec could regain one).
///
/// Capabilities belong to threads, so this refuses (with an error, changing nothing) unless
/// the calling thread is the process's only one: threads created afterwards inherit the
/// reduced sets.
pub fn drop_process(keep: u64) -> io::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the process has {threads} threads; capabilities are per thread"),
        ));
    }
    let (mut hdr, mut data) = capget()?;
    let held = u64::from(data[0].permitted) | u64::from(data[1].permitted) << 32;
    if held != 0 {
        drop_bounding_except(keep, last_cap())?;
        for (i, d) in data.iter_mut().enumerate() {
            let k = (keep >> (32 * i)) as u32;
            d.effective &= k;
            d.permitted &= k;
            d.inheritable = 0;
        }
        // SAFETY: capset reads the header and two-element array.
        if unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) } < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    super::seccomp::set_no_new_privs()
}
