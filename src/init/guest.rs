//! Init's bring-up as PID 1 of a `vm` guest, before the init loop shared with the `namespace`
//! backend ([`super::run_on`]) takes over.
//!
//! The kernel starts iii as `/init` from the initramfs the host built
//! (`sandbox::vm::initramfs`). Bring-up then:
//! 1. mounts `/proc`, `/sys` and `/dev` (devtmpfs) of the initramfs, points stdin at
//!    `/dev/null` and turns off output post-processing on the serial console (stdout/stderr,
//!    which the host writes into the worker's log byte for byte: no `\n` → `\r\n`);
//! 2. mounts the root disk `/dev/vda` (ext2, the image tree) read-only and the writable layer
//!    `/dev/vdb` (ext2) read-write, and their overlay (`upper`/`work` on vdb) on `/newroot`,
//!    with fresh `/proc`, read-only `/sys`, `/dev` (devtmpfs), `/dev/pts`, `/dev/shm`, `/tmp`;
//! 3. opens the control channel: the VMM has exactly one virtio-console, whose port 0 is the
//!    hvc console `/dev/hvc0` (no multiport, so no `/dev/vport*`). It is put in raw mode and
//!    relayed to a socketpair by a small child process, because the protocol's
//!    [`crate::protocol::mux::Mux`] drives a Unix socket;
//!    Once raw, init announces itself with a [`crate::protocol::FrameKind::Window`] frame of 0
//!    credit on stream 0: the host sends `Start` only after it, since bytes that reached the
//!    tty in its default (cooked, echoing) mode would come back to the host as garbage;
//! 4. switches root (initramfs cannot `pivot_root`: move `/newroot` onto `/`, then chroot).
//!
//! When the init loop returns (worker exited, or the host closed the channel) init lets the
//! relay flush, syncs the disks and reboots, which the VMM sees as the guest's end.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{err, Context, Result};

/// The guest's root disk (image tree, read-only) and writable layer, in the order the host
/// attaches them.
pub const ROOT_DISK: &str = "/dev/vda";
pub const LAYER_DISK: &str = "/dev/vdb";
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
            let code = super::run_on(chan);
            // The worker's exit went into the channel; let the relay write it to the console.
            wait_relay(relay, Duration::from_secs(5));
            if code != 0 {
                eprintln!("iii-init: exiting with status {code}");
            }
        }
        Err(e) => eprintln!("iii-init: guest bring-up: {e}"),
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
    // SAFETY: dup2 onto fd 0 of two descriptors we hold.
    unsafe { libc::dup2(null.as_raw_fd(), 0) };
    raw_output(1);

    wait_for(ROOT_DISK)?;
    wait_for(LAYER_DISK)?;
    mount(ROOT_DISK, "/mnt/lower", "ext2", libc::MS_RDONLY, None)?;
    mount(LAYER_DISK, "/mnt/rw", "ext2", 0, None)?;
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
    mount(
        "devpts",
        "/newroot/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mount(
        "shm",
        "/newroot/dev/shm",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        Some("mode=1777"),
    )?;
    mount(
        "tmpfs",
        "/newroot/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
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
    // SAFETY: termios is plain data filled by tcgetattr on our own fd.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) == 0 {
            t.c_oflag &= !libc::OPOST;
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
    }
}

/// Raw mode on the control console: no echo, no line editing, no byte translation.
fn make_raw(fd: libc::c_int) -> Result<()> {
    // SAFETY: termios is plain data filled by tcgetattr on our own fd.
    let r = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            -1
        } else {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t)
        }
    };
    if r != 0 {
        return Err(err!(
            "raw mode on {CONTROL_CONSOLE}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Fork the relay: console ↔ socket, one thread per direction. It exits once the socket side
/// closes (init is done), after draining what it wrote to the console. Returns init's end of
/// the channel and the relay's PID.
fn spawn_relay(console: OwnedFd) -> Result<(UnixStream, libc::pid_t)> {
    let (chan, sock) = UnixStream::pair().context("creating the relay socketpair")?;
    // SAFETY: init is single-threaded here, so the child may run any code; it only copies
    // bytes and ends with _exit.
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
    let cfd = console.as_raw_fd();
    // SAFETY: dup of our own console fd, owned by the new File.
    let console_in = unsafe { std::fs::File::from_raw_fd(libc::dup(cfd)) };
    let sock_out = sock.try_clone();
    let _ = std::thread::Builder::new()
        .name("relay-in".into())
        .spawn(move || {
            if let Ok(mut s) = sock_out {
                let mut c = console_in;
                let _ = io::copy(&mut c, &mut s);
            }
        });
    let mut console_out = std::fs::File::from(console);
    let mut s = sock;
    let _ = io::copy(&mut s, &mut console_out);
    // SAFETY: tcdrain and _exit on our own fd; nothing to unwind.
    unsafe {
        libc::tcdrain(cfd);
        libc::_exit(0)
    }
}

fn wait_relay(pid: libc::pid_t, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a local status word.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        // Gone (reaped here, or by the init loop) or an error: nothing left to wait for.
        if r != 0 || Instant::now() > deadline {
            return;
        }
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
