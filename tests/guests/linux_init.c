/* /init for the Linux boot test (hosted, static): marks "init reached" on the progress port,
 * says so on the serial console and over the virtio-console (hvc0), then reboots (i8042 reset
 * with reboot=k), which the VMM reports as VmExit::Reset. */
#include <fcntl.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

static void say(const char *path, const char *msg) {
    int fd = open(path, O_WRONLY | O_NOCTTY);
    if (fd >= 0) {
        write(fd, msg, strlen(msg));
        close(fd);
    }
}

int main(void) {
    if (ioperm(0x502, 1, 1) == 0) outl(3, 0x502);
    say("/dev/console", "init reached\n");
    mkdir("/dev", 0755);
    mount("devtmpfs", "/dev", "devtmpfs", 0, 0);
    say("/dev/hvc0", "hello over hvc0\n");
    sync();
    reboot(RB_AUTOBOOT);
    return 1;
}
