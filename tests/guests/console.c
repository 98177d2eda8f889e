/* Control-channel guest: finds the virtio-console, sends "ping from guest\n", reads one line
 * from the host and sends it back upper-cased, then exits 0.
 * With "flood" on the command line: transmits 1 MiB buffers forever (host not reading). */
#include "virtio.h"

static struct vq rxq, txq;
static char rxbuf[256], txbuf[256], line[256];
static char big[1 << 20];

static void send(const char *s, u32 n) {
    memcpy(txbuf, s, n);
    txq.desc[0].addr = (u64)txbuf;
    txq.desc[0].len = n;
    txq.desc[0].flags = 0;
    vq_submit(&txq, 0);
    vq_wait(&txq);
}

static void post_rx(void) {
    rxq.desc[0].addr = (u64)rxbuf;
    rxq.desc[0].len = sizeof rxbuf;
    rxq.desc[0].flags = DESC_F_WRITE;
    vq_submit(&rxq, 0);
}

ENTRY void _start(u64 cpu, u64 bp) {
    if (cpu != 0) for (;;) __asm__ volatile("cli; hlt"); /* one driver: the boot vCPU */
    progress(1);
    u64 base = virtio_find(3);
    if (!base) fail("no virtio-console", 10);
    puts("virtio-console at ");
    puthex(base);
    puts("\n");
    virtio_negotiate(base, 0);
    vq_setup(base, &rxq, 0);
    vq_setup(base, &txq, 1);
    virtio_driver_ok(base);
    if (has_word(bp_cmdline(bp), "flood")) {
        puts("flooding\n");
        for (;;) {
            txq.desc[0] = (struct vq_desc){(u64)big, sizeof big, 0, 0};
            vq_submit(&txq, 0);
            vq_wait(&txq);
        }
    }
    post_rx();
    send("ping from guest\n", 16);
    /* The device raises InterruptStatus right after publishing the used entry. */
    for (u64 spins = 0; !(vr(base, R_INT_STATUS) & 1); spins++)
        if (spins > 100000000ul) fail("no used-buffer interrupt status after tx", 11);
    vw(base, R_INT_ACK, 1);
    u32 n = 0;
    while (n == 0 || line[n - 1] != '\n') {
        u32 got = vq_wait(&rxq);
        for (u32 i = 0; i < got && n < sizeof line; i++) line[n++] = rxbuf[i];
        post_rx();
    }
    for (u32 i = 0; i < n; i++)
        if (line[i] >= 'a' && line[i] <= 'z') line[i] = (char)(line[i] - 32);
    send(line, n);
    puts("round trip done\n");
    progress(2);
    guest_exit(0);
}
