//! Init's bring-up as PID 1 of a `vm` guest, before the init loop shared with the `namespace`
//! backend (`super::run_on`) takes over.
//!
//! The kernel starts iii as `/init` from the initramfs the host built
//! (`sandbox::microvm::initramfs`). Bring-up then:
//! 1. mounts `/proc`, `/sys` and `/dev` (devtmpfs) of the initramfs, points stdin at
//!    `/dev/null` and turns off output post-processing on the serial console (stdout/stderr,
//!    which the host writes into the worker's log byte for byte: no `\n` → `\r\n`);
//! 2. finds the root disk (ext2 labelled [`ROOT_LABEL`], the image tree; normally `/dev/vda`)
//!    and the writable layer ([`LAYER_LABEL`], normally `/dev/vdb`), mounts them read-only and
//!    read-write, and their overlay (`upper`/`work` on the layer) on `/newroot`, with fresh
//!    `/proc`, read-only `/sys`, `/dev` (devtmpfs), `/dev/pts`, `/dev/shm`, `/tmp`;
//! 3. opens the control channel: the VMM has exactly one virtio-console, whose port 0 is the
//!    hvc console `/dev/hvc0` (no multiport, so no `/dev/vport*`). It is put in raw mode and
//!    relayed to a socketpair by a small child process (a poll loop), because the protocol's
//!    [`crate::protocol::mux::Mux`] drives a Unix socket. Once raw, init announces itself with a [`crate::protocol::FrameKind::Window`] frame of 0
//!    credit on stream 0: the host sends `Start` only after it, since bytes that reached the
//!    tty in its default (cooked, echoing) mode would come back to the host as garbage;
//! 4. switches root (initramfs cannot `pivot_root`: move `/newroot` onto `/`, then chroot).
//!
//! When the init loop returns (worker exited, or the host closed the channel) init lets the
//! relay flush, syncs the disks and reboots, which the VMM sees as the guest's end.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::protocol::init::{LAYER_LABEL, ROOT_LABEL};
use crate::sys::pty::Termios;
use crate::{err, Context, Result};

/// The control channel's console device in the guest.
pub const CONTROL_CONSOLE: &str = "/dev/hvc0";

/// Whether this process is PID 1 of a VM guest started as the initramfs's `/init`.
pub fn is_guest_init() -> bool {
    std::process::id() == 1 && std::env::args_os().next().as_deref() == Some("/init".as_ref())
}

/// Run as the guest's init; never returns (the guest reboots when init is done).
pub fn run() -> ! {
    match bring_up() {
        Ok((chan, relay)) => {
            // The exit code is the host's to report: it has it from the channel.
            let _code = super::run_on(chan, None);
            // The worker's exit went into the channel; let the relay write it to the console.
            wait_relay(relay, Duration::from_secs(5));
        }
        Err(e) => crate::say!("iii-init: guest bring-up: {e}"),
    }
    power_off()
}

fn cstr(p: impl AsRef<std::ffi::OsStr>) -> CString {
    CString::new(p.as_ref().as_bytes()).unwrap_or_else(|_| CString::new("?").expect("no NUL"))
}

fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
    let (src, tgt, fst) = (cstr(source), cstr(target), cstr(fstype));
    let dat = data.map(cstr);
    let dat_ptr = dat.as_ref().map_or(std::ptr::null(), |d| d.as_ptr());
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fst.as_ptr(),
            flags,
            dat_ptr as *const libc::c_void,
        )
    };
    if r < 0 {
        return Err(err!(
            "mounting {source} ({fstype}) on {target}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The ext2/3/4 volume label of the filesystem on `dev` (superblock at byte 1024, label at
/// byte 120 of it, 16 bytes NUL-padded), or `None` if it has none or cannot be read.
pub fn ext_label(dev: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(dev).ok()?;
    let mut sb = [0u8; 136];
    f.seek(SeekFrom::Start(1024)).ok()?;
    f.read_exact(&mut sb).ok()?;
    // s_magic at byte 56.
    if sb[56..58] != [0x53, 0xef] {
        return None;
    }
    let label = &sb[120..136];
    let end = label.iter().position(|&b| b == 0).unwrap_or(label.len());
    String::from_utf8(label[..end].to_vec()).ok()
}

/// The virtio-blk disk (`/dev/vdX`) whose filesystem carries `label`, waiting for virtio
/// probing to finish.
fn find_disk(label: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(rd) = std::fs::read_dir("/sys/block") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with("vd") {
                    continue;
                }
                let dev = format!("/dev/{name}");
                if ext_label(Path::new(&dev)).as_deref() == Some(label) {
                    return Ok(dev);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(err!("no disk labelled {label} appeared"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Mount an ext2 disk with the ext4 driver (which gives the overlay's upper layer the xattrs
/// it wants), or the ext2 driver where ext4 is not built in.
fn mount_ext(dev: &str, target: &str, flags: libc::c_ulong) -> Result<()> {
    mount(dev, target, "ext4", flags, None).or_else(|_| mount(dev, target, "ext2", flags, None))
}

/// Mount a filesystem the worker should have but can run without: a failure is logged.
fn mount_optional(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) {
    if let Err(e) = mount(source, target, fstype, flags, data) {
        crate::say!("iii-init: warning: {e}");
    }
}

/// Wait for a device node (virtio probing may still be running when init starts).
fn wait_for(dev: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(dev).exists() {
        if Instant::now() > deadline {
            return Err(err!("{dev} did not appear"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Configure the virtio-net NIC `eth0` as the host's network expects (address, default route
/// through the gateway, MTU). The driver registers it while the kernel boots, before init runs;
/// waiting a little covers a late probe.
pub fn nic_up() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !Path::new("/sys/class/net/eth0").exists() {
        if Instant::now() > deadline {
            return Err(err!(
                "network: the guest has no eth0 (is virtio-net in its kernel?)"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    crate::net::link::configure("eth0", &crate::net::worker_setup())
        .map_err(|e| err!("network: configuring eth0: {e}"))
}

/// Whether the guest kernel's OOM killer has killed a process since boot: its report
/// ("Out of memory: Killed process 42 (node) …") in the kernel log, read through `/dev/kmsg`.
/// Only the kernel's own records count (facility 0): the worker is root in its guest and may
/// write `/dev/kmsg` too.
pub fn oom_kill_logged() -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut kmsg) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return false;
    };
    // One record per read; EAGAIN at the end, EPIPE where older records were overwritten
    // (reading on continues with the oldest one left).
    let mut buf = vec![0u8; 8192];
    loop {
        match io::Read::read(&mut kmsg, &mut buf) {
            Ok(0) => return false,
            Ok(n) if is_kernel_oom_kill(&buf[..n]) => return true,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(_) => return false,
        }
    }
}

/// Whether one `/dev/kmsg` record (`PRIORITY,SEQ,USEC,FLAGS;TEXT`) is the kernel's report of an
/// OOM kill.
fn is_kernel_oom_kill(record: &[u8]) -> bool {
    let text = String::from_utf8_lossy(record);
    let Some((prefix, message)) = text.split_once(';') else {
        return false;
    };
    // PRIORITY is facility << 3 | level; the kernel's facility is 0.
    let kernel = prefix
        .split(',')
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p < 8);
    kernel && message.contains("Killed process ")
}

fn bring_up() -> Result<(UnixStream, libc::pid_t)> {
    const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, None)?;
    mount("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, None)?;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, None)?;
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    let _ = crate::sys::fd::redirect(std::os::fd::AsFd::as_fd(&null), 0);
    raw_output(1);

    let root_disk = find_disk(ROOT_LABEL)?;
    let layer_disk = find_disk(LAYER_LABEL)?;
    mount_ext(&root_disk, "/mnt/lower", libc::MS_RDONLY)?;
    mount_ext(&layer_disk, "/mnt/rw", 0)?;
    for d in ["/mnt/rw/upper", "/mnt/rw/work"] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {d}"))?;
    }
    mount(
        "overlay",
        "/newroot",
        "overlay",
        0,
        Some("lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work"),
    )?;
    mount("proc", "/newroot/proc", "proc", NOSUID_NODEV_NOEXEC, None)?;
    mount(
        "sysfs",
        "/newroot/sys",
        "sysfs",
        NOSUID_NODEV_NOEXEC | libc::MS_RDONLY,
        None,
    )?;
    mount(
        "devtmpfs",
        "/newroot/dev",
        "devtmpfs",
        libc::MS_NOSUID,
        None,
    )?;
    mount_optional(
        "devpts",
        "/newroot/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    );
    mount_optional(
        "shm",
        "/newroot/dev/shm",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        Some("mode=1777"),
    );
    mount_optional(
        "tmpfs",
        "/newroot/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    );
    std::fs::create_dir_all("/newroot/workspace").context("creating /workspace")?;

    wait_for(CONTROL_CONSOLE)?;
    let console = std::fs::File::options()
        .read(true)
        .write(true)
        .open(CONTROL_CONSOLE)
        .with_context(|| format!("opening {CONTROL_CONSOLE}"))?;
    make_raw(console.as_raw_fd())?;
    let (chan, relay) = spawn_relay(OwnedFd::from(console))?;
    // Only now may the host send: bytes that reached hvc0 before raw mode would have been
    // echoed back and line-edited.
    let mut ready = Vec::new();
    crate::protocol::encode_window(&mut ready, crate::protocol::SANDBOX_STREAM, 0);
    io::Write::write_all(&mut &chan, &ready).context("announcing the guest on the channel")?;

    switch_root("/newroot")?;
    Ok((chan, relay))
}

/// Clear output post-processing on a terminal (the serial console): log bytes pass unchanged.
fn raw_output(fd: libc::c_int) {
    if let Ok(t) = Termios::get(fd) {
        let _ = t.without_output_processing().set(fd);
    }
}

/// Raw mode on the control console: no echo, no line editing, no byte translation.
fn make_raw(fd: libc::c_int) -> Result<()> {
    Termios::get(fd)
        .and_then(|t| t.raw().set(fd))
        .map_err(|e| err!("raw mode on {CONTROL_CONSOLE}: {e}"))
}

/// Fork the relay: console ↔ socket. It exits once the socket side closes (init is done),
/// after draining what it wrote to the console. Returns init's end of the channel and the
/// relay's PID.
fn spawn_relay(console: OwnedFd) -> Result<(UnixStream, libc::pid_t)> {
    let (chan, sock) = UnixStream::pair().context("creating the relay socketpair")?;
    // SAFETY: the child only closes fds and runs `relay`, which makes raw syscalls on a stack
    // buffer (no allocation, no locks) and ends in _exit: sound even after a fork from a
    // multi-threaded process (the unit tests).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(err!(
            "forking the console relay: {}",
            io::Error::last_os_error()
        ));
    }
    if pid > 0 {
        return Ok((chan, pid));
    }
    // The relay must not hold init's end, or init closing it would never read as EOF here.
    drop(chan);
    relay(console.as_raw_fd(), sock.as_raw_fd())
}

/// The relay's loop: whatever one side has goes to the other. Writes block, which is safe:
/// both ends (init's and the host's channel multiplexers) always keep reading.
fn relay(console: libc::c_int, sock: libc::c_int) -> ! {
    let mut buf = [0u8; 16 << 10];
    let mut fds = [
        libc::pollfd {
            fd: console,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: sock,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ready = libc::POLLIN | libc::POLLHUP | libc::POLLERR;
    loop {
        // SAFETY: `fds` is a live array of two pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            relay_exit(console, 1);
        }
        if fds[0].revents & ready != 0 {
            match read_fd(console, &mut buf) {
                Some(n) if n > 0 => {
                    if !write_all_fd(sock, &buf[..n]) {
                        relay_exit(console, 0);
                    }
                }
                _ => relay_exit(console, 1),
            }
        }
        if fds[1].revents & ready != 0 {
            match read_fd(sock, &mut buf) {
                Some(n) if n > 0 => {
                    if !write_all_fd(console, &buf[..n]) {
                        relay_exit(console, 1);
                    }
                }
                // Init closed its end: it is done.
                _ => relay_exit(console, 0),
            }
        }
    }
}

/// read(2), retried on EINTR; `None` on error.
fn read_fd(fd: libc::c_int, buf: &mut [u8]) -> Option<usize> {
    loop {
        match crate::sys::fd::read(fd, buf) {
            Ok(n) => return Some(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Write all of `data`, retrying on EINTR and short writes; false on error.
fn write_all_fd(fd: libc::c_int, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match crate::sys::fd::write(fd, data) {
            Ok(n) if n > 0 => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return false,
        }
    }
    true
}

fn relay_exit(console: libc::c_int, code: i32) -> ! {
    // What we wrote reaches the host before the relay goes.
    crate::sys::pty::drain_output(console);
    // SAFETY: ending the forked relay without running the parent's destructors or atexit
    // handlers.
    unsafe { libc::_exit(code) }
}

fn wait_relay(pid: libc::pid_t, limit: Duration) {
    let deadline = Instant::now() + limit;
    // Gone (reaped here, or by the init loop) or an error: nothing left to wait for.
    while matches!(crate::sys::pid::try_wait(pid), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// initramfs is the rootfs and cannot be pivoted away: move the new root over it and chroot,
/// as switch_root does.
fn switch_root(new_root: &str) -> Result<()> {
    std::env::set_current_dir(new_root).with_context(|| format!("entering {new_root}"))?;
    let (dot, slash) = (cstr("."), cstr("/"));
    // SAFETY: NUL-terminated strings that outlive the calls.
    unsafe {
        if libc::mount(
            dot.as_ptr(),
            slash.as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        ) < 0
        {
            return Err(err!(
                "moving {new_root} to /: {}",
                io::Error::last_os_error()
            ));
        }
        if libc::chroot(dot.as_ptr()) < 0 {
            return Err(err!(
                "chroot into {new_root}: {}",
                io::Error::last_os_error()
            ));
        }
    }
    std::env::set_current_dir("/").context("entering the new root")
}

fn power_off() -> ! {
    // The reboot's own "reboot: Restarting system" is KERN_EMERG, which the console's
    // `loglevel=1` still prints, into the worker's log: silence the console first. (Only the
    // sysctl takes level 0; syslog(2) stops at 1. A panic from here on turns it verbose again.)
    let _ = std::fs::write("/proc/sys/kernel/printk", "0");
    // SAFETY: sync and reboot take no pointers; a reset is how the guest ends (the VMM sees
    // it with `reboot=k`), and the host already has the worker's exit from the channel.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
        // reboot only returns on error; PID 1 exiting panics the kernel, which also ends the
        // guest (`panic=-1`).
        libc::_exit(1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_oom_kill_records_are_told_from_others() {
        use super::is_kernel_oom_kill as oom;
        assert!(oom(b"3,312,4512345,-;Out of memory: Killed process 42 (tail) total-vm:131072kB, anon-rss:120000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:300kB oom_score_adj:0\n"));
        assert!(oom(
            b"3,9,77,-;Memory cgroup out of memory: Killed process 7 (node)\n"
        ));
        // The worker writing the same words into /dev/kmsg (facility user) is not the kernel.
        assert!(!oom(
            b"12,313,4512399,-;Out of memory: Killed process 42 (tail)\n"
        ));
        assert!(!oom(b"6,1,0,-;Linux version 6.1.0\n"));
        assert!(!oom(b"no separator"));
    }

    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;

    /// A pty stands in for hvc0: raw mode and the relay carry every byte unchanged both ways
    /// (no echo, no CR/LF translation, no ^C/^D handling), and the relay exits once init's
    /// end closes.
    #[test]
    fn relay_carries_raw_bytes_both_ways_over_a_tty() {
        let (mut master, slave) = {
            let (mut m, mut s) = (0, 0);
            // SAFETY: openpty fills the two ints; the name/termios/winsize pointers may be null.
            let r = unsafe {
                libc::openpty(
                    &mut m,
                    &mut s,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    std::ptr::null(),
                )
            };
            assert_eq!(r, 0, "openpty: {}", io::Error::last_os_error());
            // SAFETY: both fds were just opened by openpty and are owned by nobody else.
            unsafe { (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
        };
        make_raw(slave.as_raw_fd()).unwrap();
        let (mut chan, pid) = spawn_relay(slave).unwrap();
        chan.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let bytes: Vec<u8> = (0..=255u8)
            .chain(b"line\n\r\x03\x04\x7f".iter().copied())
            .collect();
        // Host → guest: what the master writes arrives on init's end unchanged.
        master.write_all(&bytes).unwrap();
        let mut got = vec![0u8; bytes.len()];
        chan.read_exact(&mut got).unwrap();
        assert_eq!(got, bytes);
        // Guest → host.
        chan.write_all(&bytes).unwrap();
        let mut got = vec![0u8; bytes.len()];
        master.read_exact(&mut got).unwrap();
        assert_eq!(got, bytes);
        // Init is done: the relay drains and exits 0.
        drop(chan);
        assert_eq!(
            crate::sys::pid::wait(pid).unwrap(),
            crate::sys::pid::Status::Exited(0)
        );
    }
}
