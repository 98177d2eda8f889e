//! The sandbox's filesystem, built by init inside its fresh mount namespace: the image under
//! an overlay whose upper layer is the worker's persistent writable layer, fresh `/proc`, a
//! minimal `/dev` (device nodes, `/dev/pts` with its own ptmx, `/dev/shm`), tmpfs `/tmp`,
//! read-only `/sys`, masked `/proc` paths, then `pivot_root` into it. Everything is mounted in
//! init's mount namespace only, so it all disappears with the sandbox.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::{err, Context, Result};

fn cstr(p: impl AsRef<std::ffi::OsStr>) -> CString {
    CString::new(p.as_ref().as_bytes()).unwrap_or_else(|_| CString::new("?").expect("no NUL"))
}

/// mount(2), with the target named in the error.
fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let src = source.map(cstr);
    let tgt = cstr(target);
    let fst = fstype.map(cstr);
    let dat = data.map(cstr);
    let p = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null.
    let r = unsafe {
        libc::mount(
            p(&src),
            tgt.as_ptr(),
            p(&fst),
            flags,
            p(&dat) as *const libc::c_void,
        )
    };
    if r < 0 {
        return Err(err!(
            "mounting {} on {}: {}",
            fstype.or(source).unwrap_or("bind"),
            target.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn mknod_char(path: &Path, major: u32, minor: u32) -> Result<()> {
    let c = cstr(path);
    // SAFETY: `c` is a valid path string; mknod takes plain integers otherwise.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    if r < 0 {
        return Err(err!(
            "creating device {}: {}",
            path.display(),
            io::Error::last_os_error()
        ));
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
        .with_context(|| format!("chmod {}", path.display()))
}

/// A directory inside the new root, created (in the writable layer) when the image lacks it.
fn ensure_dir(root: &Path, rel: &str) -> Result<std::path::PathBuf> {
    let p = root.join(rel);
    // The image may make this a symlink (e.g. /tmp → /var/tmp) pointing anywhere; mounting
    // over a symlink would follow it, so refuse rather than mount outside the root.
    if let Ok(m) = fs::symlink_metadata(&p) {
        if m.file_type().is_symlink() {
            return Err(err!(
                "image path /{rel} is a symlink; it must be a directory"
            ));
        }
    }
    fs::create_dir_all(&p).with_context(|| format!("creating /{rel} in the worker root"))?;
    Ok(p)
}

/// What `/proc` paths are hidden (bound to /dev/null or an empty read-only tmpfs) or made
/// read-only, as docker does.
const MASKED: &[&str] = &[
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/acpi",
    "proc/scsi",
    "sys/firmware",
];
const READ_ONLY: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// The overlay layers and where to mount their union (host paths).
pub struct Layers<'a> {
    pub lower: &'a str,
    pub upper: &'a str,
    pub work: &'a str,
    pub merged: &'a str,
}

/// Build the root filesystem at `layers.merged` and pivot into it. Runs in init, as root, in
/// its own mount namespace (and PID namespace, for `/proc`). `host_network`: the sandbox shares
/// the host's network, so the host's DNS configuration applies.
pub fn build_root(
    layers: &Layers<'_>,
    hostname: &str,
    host_network: bool,
    network: Option<&crate::protocol::NetworkConfig>,
) -> Result<()> {
    // Nothing we mount may propagate back to the host.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    for (what, p) in [
        ("image", layers.lower),
        ("layer", layers.upper),
        ("work", layers.work),
    ] {
        if p.contains([',', ':', '\\']) {
            return Err(err!(
                "{what} path {p} contains ',', ':' or '\\', which overlayfs cannot take"
            ));
        }
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        layers.lower, layers.upper, layers.work
    );
    let root = Path::new(layers.merged);
    mount(Some("overlay"), root, Some("overlay"), 0, Some(&opts))?;

    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let proc_ = ensure_dir(root, "proc")?;
    mount(
        Some("proc"),
        &proc_,
        Some("proc"),
        nosuid_nodev_noexec,
        None,
    )?;

    let dev = ensure_dir(root, "dev")?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        mknod_char(&dev.join(name), major, minor)?;
    }
    let pts = ensure_dir(root, "dev/pts")?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = ensure_dir(root, "dev/shm")?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link)).with_context(|| format!("creating /dev/{link}"))?;
    }

    let sys = ensure_dir(root, "sys")?;
    mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        nosuid_nodev_noexec | libc::MS_RDONLY,
        None,
    )?;
    let tmp = ensure_dir(root, "tmp")?;
    mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
    ensure_dir(root, "workspace")?;
    seed_etc(root, hostname, host_network);
    if let Some(net) = network {
        let dir = Path::new(layers.upper)
            .parent()
            .map(|p| p.join("net"))
            .ok_or_else(|| err!("the writable layer {} has no parent", layers.upper))?;
        bind_network_files(root, &dir, net)?;
    }

    let null = dev.join("null");
    for rel in MASKED {
        let p = root.join(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => mount(
                Some("tmpfs"),
                &p,
                Some("tmpfs"),
                libc::MS_RDONLY | nosuid_nodev_noexec,
                Some("size=0"),
            )?,
            Ok(_) => mount(
                Some(null.to_str().unwrap_or("/dev/null")),
                &p,
                None,
                libc::MS_BIND,
                None,
            )?,
            Err(_) => {}
        }
    }
    for rel in READ_ONLY {
        let p = root.join(rel);
        if fs::symlink_metadata(&p).is_err() {
            continue;
        }
        let ps = p.to_string_lossy().into_owned();
        mount(Some(&ps), &p, None, libc::MS_BIND | libc::MS_REC, None)?;
        mount(
            None,
            &p,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | nosuid_nodev_noexec,
            None,
        )?;
    }

    pivot_into(root)
}

/// Give an image without them the `/etc` files every program expects, as docker does:
/// `/etc/hosts` (so `localhost` and the hostname resolve) and, on the host network, the host's
/// `/etc/resolv.conf`. Written into the worker's layer, only where the image has none;
/// best-effort (an image with a read-only or odd /etc simply keeps what it has).
fn seed_etc(root: &Path, hostname: &str, host_network: bool) {
    let etc = root.join("etc");
    match fs::symlink_metadata(&etc) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return,
        Err(_) => {
            if fs::create_dir(&etc).is_err() {
                return;
            }
        }
    }
    let hosts = etc.join("hosts");
    if fs::symlink_metadata(&hosts).is_err() {
        let text =
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        fs::write(&hosts, text).ok();
    }
    let resolv = etc.join("resolv.conf");
    if host_network && fs::symlink_metadata(&resolv).is_err() {
        if let Ok(text) = fs::read_to_string("/etc/resolv.conf") {
            fs::write(&resolv, text).ok();
        }
    }
}

/// Put the virtual NIC's name resolution in place: `/etc/resolv.conf` (the gateway's DNS)
/// and `/etc/hosts`, written into `dir` (beside the worker's layer on the host; a tmpfs in a
/// guest) and bound read-only over the image's files, so the image's own files stay as they
/// are.
pub fn bind_network_files(
    root: &Path,
    dir: &Path,
    net: &crate::protocol::NetworkConfig,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let etc = ensure_dir(root, "etc")?;
    for (name, text) in [("resolv.conf", &net.resolv_conf), ("hosts", &net.hosts)] {
        let src = dir.join(name);
        fs::write(&src, text).with_context(|| format!("writing {}", src.display()))?;
        let target = etc.join(name);
        // A symlink (e.g. to a resolver's runtime file) would be followed by the bind mount:
        // replace it (in the worker's layer) with a plain file to mount over.
        if fs::symlink_metadata(&target).is_ok_and(|m| !m.is_file()) {
            fs::remove_file(&target).with_context(|| format!("replacing {}", target.display()))?;
        }
        if fs::symlink_metadata(&target).is_err() {
            fs::write(&target, "").with_context(|| format!("creating {}", target.display()))?;
        }
        let s = src.to_string_lossy().into_owned();
        mount(Some(&s), &target, None, libc::MS_BIND, None)?;
        mount(
            None,
            &target,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

/// Make `root` the root: pivot_root(".", ".") stacks the old root on top of the new one, and
/// the lazy unmount then drops it, so no host path stays reachable.
fn pivot_into(root: &Path) -> Result<()> {
    std::env::set_current_dir(root).with_context(|| format!("entering {}", root.display()))?;
    let dot = cstr(".");
    // SAFETY: pivot_root and umount2 take valid NUL-terminated strings.
    unsafe {
        if libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) < 0 {
            return Err(err!(
                "pivot_root into {}: {}",
                root.display(),
                io::Error::last_os_error()
            ));
        }
        if libc::umount2(dot.as_ptr(), libc::MNT_DETACH) < 0 {
            return Err(err!(
                "detaching the host root: {}",
                io::Error::last_os_error()
            ));
        }
    }
    std::env::set_current_dir("/").context("entering /")?;
    Ok(())
}

/// Set the hostname (UTS namespace).
pub fn set_hostname(name: &str) -> Result<()> {
    // SAFETY: pointer and length of a live byte slice.
    if unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) } < 0 {
        return Err(err!(
            "setting hostname {name}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Bring the loopback interface up (a new network namespace starts with it down).
pub fn loopback_up() -> Result<()> {
    // SAFETY: a plain socket call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err!(
            "bringing lo up: socket: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: the ioctls read/write the ifreq we own; the union field is the flags word.
    let r = unsafe {
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req);
        if r >= 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req);
        }
        r
    };
    let e = io::Error::last_os_error();
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(err!("bringing lo up: {e}"));
    }
    Ok(())
}

/// Enter a new cgroup namespace (after the host moved us into our cgroups), so the worker
/// sees its own cgroup as the root rather than the host's paths.
pub fn unshare_cgroup() -> Result<()> {
    // SAFETY: unshare takes a flag word.
    if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } < 0 {
        return Err(err!(
            "entering a cgroup namespace: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}
