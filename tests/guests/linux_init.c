/* /init for the Linux boot test (hosted, static): marks "init reached" on the progress port,
 * says so on the serial console and over the virtio-console (hvc0), then reboots (i8042 reset
 * with reboot=k), which the VMM reports as VmExit::Reset. */
#include <fcntl.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

/* Write `msg` to the tty at `path` byte for byte: raw mode first, as iii's own init does for
 * its consoles (src/init/guest.rs), or the line discipline's OPOST/ONLCR turns "\n" into
 * "\r\n" on the way out. */
static void say(const char *path, const char *msg) {
    int fd = open(path, O_WRONLY | O_NOCTTY);
    if (fd >= 0) {
        struct termios t;
        if (tcgetattr(fd, &t) == 0) {
            cfmakeraw(&t);
            tcsetattr(fd, TCSANOW, &t);
        }
        write(fd, msg, strlen(msg));
        close(fd);
    }
}

int main(void) {
    /* The progress port is 4 bytes wide (outl): the I/O bitmap must allow 0x502..0x505, or
     * the outl is a #GP that kills init. Needs CONFIG_X86_IOPL_IOPERM in the guest kernel. */
    if (ioperm(0x502, 4, 1) == 0) outl(3, 0x502);
    say("/dev/console", "init reached\n");
    mkdir("/dev", 0755);
    mount("devtmpfs", "/dev", "devtmpfs", 0, 0);
    say("/dev/hvc0", "hello over hvc0\n");
    sync();
    reboot(RB_AUTOBOOT);
    return 1;
}
