#!/bin/sh
# Build a minimal x86_64 guest kernel for iii's `vm` backend from Debian's linux-source package:
# virtio-mmio (devices given on the command line), virtio-blk, virtio-console, virtio-vsock,
# 8250 serial console, ext2/ext4/erofs/overlayfs, initramfs, PVH entry; no modules, no PCI/ACPI.
#
# Usage: scripts/build-guest-kernel.sh [OUTDIR]   (default: target/guest-kernel)
# Produces OUTDIR/bzImage and OUTDIR/vmlinux. Takes a while (tens of minutes on 2 cores).
# Then: III_TEST_KERNEL=OUTDIR/bzImage cargo test --test vm_linux
set -eu

OUT=$(realpath -m "${1:-target/guest-kernel}")
mkdir -p "$OUT"
WORK="$OUT/src"

need="linux-source build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils lz4"
missing=""
for p in $need; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing" >&2
    apt-get install -y --no-install-recommends $missing
fi

TARBALL=$(ls /usr/src/linux-source-*.tar.xz | sort -V | tail -n 1)
if [ ! -d "$WORK" ]; then
    mkdir -p "$WORK"
    tar -xf "$TARBALL" -C "$WORK" --strip-components=1
fi
cd "$WORK"

make -s ARCH=x86_64 tinyconfig
on() { for o in "$@"; do scripts/config --enable "$o"; done; }
off() { for o in "$@"; do scripts/config --disable "$o"; done; }
on 64BIT SMP PRINTK BUG TTY MULTIUSER POSIX_TIMERS FUTEX EPOLL SIGNALFD TIMERFD EVENTFD SHMEM \
   FILE_LOCKING BINFMT_ELF BINFMT_SCRIPT PROC_FS SYSFS TMPFS DEVTMPFS DEVTMPFS_MOUNT \
   BLK_DEV_INITRD RD_GZIP BLOCK BLK_DEV \
   HYPERVISOR_GUEST PARAVIRT KVM_GUEST PVH \
   SERIAL_8250 SERIAL_8250_CONSOLE \
   VIRTIO_MENU VIRTIO VIRTIO_MMIO VIRTIO_MMIO_CMDLINE_DEVICES VIRTIO_BLK VIRTIO_CONSOLE \
   NET INET UNIX VSOCKETS VIRTIO_VSOCKETS NETDEVICES NET_CORE VIRTIO_NET \
   EXT2_FS EXT4_FS EROFS_FS OVERLAY_FS \
   NAMESPACES UTS_NS SYSVIPC IPC_NS PID_NS NET_NS CGROUPS SECCOMP \
   X86_IOPL_IOPERM
# NETDEVICES NET_CORE VIRTIO_NET: the worker's NIC (network: egress) is a virtio-net device.
# X86_IOPL_IOPERM: ioperm()/iopl(); tests/guests/linux_init.c (the vm_linux test's /init) needs
#   ioperm() to write its progress mark to the VMM's port 0x502 from user space. Without it
#   ioperm() fails with ENOSYS and the mark never comes.
off MODULES PCI ACPI SOUND DRM USB WLAN WIRELESS
# No PS/2 keyboard controller: the VMM only stubs the i8042 ports (0x60/0x64, there for the
# reboot=k reset pulse, which the kernel writes directly and needs no driver), so the i8042
# driver's probe fails ("i8042: Can't read CTR while initializing i8042", a KERN_ERR that
# `quiet` lets through to the serial console, i.e. the worker's log) after 0.4-1.4 s of
# timeouts. All four must go: enabling TTY brings in VT (default y), which selects INPUT, whose
# KEYBOARD_ATKBD and MOUSE_PS2 default to y and each select SERIO and SERIO_I8042 again.
off SERIO SERIO_I8042 KEYBOARD_ATKBD MOUSE_PS2
# Boot time (a worker's start waits on it; measured with initcall_debug in a nested guest):
# LZ4 instead of tinyconfig's XZ for the bzImage (decompression was the first ~3 s there);
# one 8250 UART probed, not four (the VMM has ttyS0 only); no legacy BSD ptys (256 devices
# registered at boot; exec -t uses /dev/ptmx); no IPv6-in-IPv4 tunnel (it also showed up in
# every worker's /sys/class/net as sit0).
on KERNEL_LZ4
off KERNEL_XZ LEGACY_PTYS IPV6_SIT
scripts/config --set-val SERIAL_8250_NR_UARTS 1 --set-val SERIAL_8250_RUNTIME_UARTS 1
make -s ARCH=x86_64 olddefconfig
make -s ARCH=x86_64 -j"$(nproc)" bzImage vmlinux
cp arch/x86/boot/bzImage vmlinux "$OUT/"
echo "guest kernel: $OUT/bzImage ($(du -h "$OUT/bzImage" | cut -f1)), $OUT/vmlinux"
