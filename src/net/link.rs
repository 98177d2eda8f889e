//! The worker's virtual NIC on the Linux side: a TAP device created in the sandbox's network
//! namespace, and its IPv4 configuration (address, netmask, MTU, up, default route) set with
//! the classic interface ioctls — no netlink messages to build.
//!
//! Network namespaces are per thread for `setns`, so [`in_netns`] runs its closure on a
//! short-lived thread of its own: the calling thread (and the rest of the monitor) never
//! leaves the host's namespace.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `_IOW('T', 202, int)`: attach a TUN/TAP device to the open `/dev/net/tun`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain data (a name array and a union of plain fields); all-zero is a
    // valid value for every field.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(r)
}

fn ipv4_sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and sockaddr is plain
    // data; this is how every sockaddr-taking ioctl is fed an IPv4 address.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Run one interface ioctl on `sock` with `req`.
fn ioctl<T>(sock: &OwnedFd, request: libc::c_ulong, arg: &mut T, what: &str) -> io::Result<()> {
    // SAFETY: `arg` is a live, exclusively borrowed value of the type `request` expects
    // (checked by the callers below); the kernel reads/writes only within it.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, arg as *mut T) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new fd we own.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Create TAP device `name` (Ethernet frames, no packet-info header) in the calling thread's
/// network namespace; the returned fd reads and writes one frame per call (non-blocking).
pub fn create_tap(name: &str) -> io::Result<OwnedFd> {
    let tun = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| io::Error::new(e.kind(), format!("opening /dev/net/tun: {e}")))?;
    let fd: OwnedFd = tun.into();
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    ioctl(&fd, TUNSETIFF, &mut req, "creating the TAP device")?;
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(fd)
}

/// The kernel's `struct rtentry` (for SIOCADDRT), as Linux lays it out on 64-bit.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// An interface's IPv4 setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Setup {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

/// Give interface `name` its address, netmask and MTU, bring it up and route everything
/// through `gateway` (in the calling thread's network namespace).
pub fn configure(name: &str, s: &Ipv4Setup) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_mtu = s.mtu as libc::c_int;
    ioctl(&sock, libc::SIOCSIFMTU, &mut r, "setting the MTU")?;
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_addr = ipv4_sockaddr(s.address);
    ioctl(&sock, libc::SIOCSIFADDR, &mut r, "setting the address")?;
    let mask = if s.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(s.prefix))
    };
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_netmask = ipv4_sockaddr(Ipv4Addr::from(mask));
    ioctl(&sock, libc::SIOCSIFNETMASK, &mut r, "setting the netmask")?;
    let mut r = ifreq(name)?;
    ioctl(
        &sock,
        libc::SIOCGIFFLAGS,
        &mut r,
        "reading the interface flags",
    )?;
    // SAFETY: SIOCGIFFLAGS just filled the flags member of the union.
    let flags = unsafe { r.ifr_ifru.ifru_flags };
    r.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(
        &sock,
        libc::SIOCSIFFLAGS,
        &mut r,
        "bringing the interface up",
    )?;
    let dev = CString::new(name).expect("checked by ifreq above");
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: ipv4_sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_gateway: ipv4_sockaddr(s.gateway),
        rt_genmask: ipv4_sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev.as_ptr() as *mut libc::c_char,
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    match ioctl(&sock, libc::SIOCADDRT, &mut rt, "adding the default route") {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Run `f` inside the network namespace at `ns` (`/proc/PID/ns/net`, or a bind mount of one),
/// on a thread of its own.
pub fn in_netns<T: Send + 'static>(
    ns: &std::path::Path,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let ns = File::open(ns).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("opening the network namespace {}: {e}", ns.display()),
        )
    })?;
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            // SAFETY: setns(2) with an fd we hold open; it only changes this thread's network
            // namespace, and this thread ends when `f` returns.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("entering the network namespace: {e}"),
                ));
            }
            f()
        })?
        .join()
        .map_err(|_| io::Error::other("the network setup thread panicked"))?
}
