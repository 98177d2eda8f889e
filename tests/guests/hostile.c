/* A guest driver that hands the devices garbage, to show the VMM survives it and reports it
 * the virtio way (DEVICE_NEEDS_RESET) instead of crashing, allocating without bound, or
 * touching memory outside the guest:
 *  1. virtio-console: a transmit descriptor 2 GiB long outside guest RAM -> NEEDS_RESET, no
 *     used entry; then a driver reset clears it and a normal message goes through.
 *  2. virtio-blk: a read past the end with a 2 GiB buffer -> IOERR (device keeps going); a
 *     read into an address outside guest RAM -> NEEDS_RESET.
 *  3. a queue size that is not a power of two -> NEEDS_RESET at DRIVER_OK. */
#include "virtio.h"

static struct vq rxq, txq, bq;
static struct { u32 type, reserved; u64 sector; } req;
static volatile u8 status;
static char msg[] = "recovered after a reset\n";

static void wait_needs_reset(u64 base, u32 code) {
    for (u64 i = 0; !(vr(base, R_STATUS) & 0x40); i++)
        if (i > 200000000ul) fail("device did not report NEEDS_RESET", code);
}

static void console_up(u64 base) {
    virtio_negotiate(base, 0);
    vq_setup(base, &rxq, 0);
    vq_setup(base, &txq, 1);
    virtio_driver_ok(base);
}

ENTRY void _start(u64 cpu, u64 bp) {
    (void)bp;
    if (cpu != 0) for (;;) __asm__ volatile("cli; hlt");
    u64 con = virtio_find(3), blk = virtio_find(2);
    if (!con || !blk) fail("devices missing", 10);

    console_up(con);
    txq.desc[0] = (struct vq_desc){0x700000000ul, 0x80000000u, 0, 0};
    vq_submit(&txq, 0);
    wait_needs_reset(con, 11);
    if (txq.used.idx != 0) fail("bogus descriptor was consumed", 12);
    if (!(vr(con, R_INT_STATUS) & 2)) fail("no configuration-change interrupt status", 13);
    console_up(con); /* starts with a reset (status 0) */
    if (vr(con, R_STATUS) & 0x40) fail("NEEDS_RESET survived a reset", 14);
    txq.desc[0] = (struct vq_desc){(u64)msg, sizeof msg - 1, 0, 0};
    vq_submit(&txq, 0);
    vq_wait(&txq);

    virtio_negotiate(blk, 0);
    vq_setup(blk, &bq, 0);
    virtio_driver_ok(blk);
    req.type = 0;
    req.sector = 1u << 30;
    bq.desc[0] = (struct vq_desc){(u64)&req, 16, DESC_F_NEXT, 1};
    bq.desc[1] = (struct vq_desc){0x200000, 0x80000000u, DESC_F_NEXT | DESC_F_WRITE, 2};
    bq.desc[2] = (struct vq_desc){(u64)&status, 1, DESC_F_WRITE, 0};
    status = 0xff;
    vq_submit(&bq, 0);
    vq_wait(&bq);
    if (status != 1) fail("out-of-range read did not fail with IOERR", 20);
    req.sector = 0;
    bq.desc[1] = (struct vq_desc){0x700000000ul, 512, DESC_F_NEXT | DESC_F_WRITE, 2};
    vq_submit(&bq, 0);
    wait_needs_reset(blk, 21);

    /* Queue size 3: refused at DRIVER_OK. */
    virtio_negotiate(blk, 0);
    vw(blk, R_QUEUE_SEL, 0);
    vw(blk, R_QUEUE_NUM, 3);
    vw(blk, R_QUEUE_DESC, (u32)(u64)bq.desc);
    vw(blk, R_QUEUE_DRIVER, (u32)(u64)&bq.avail);
    vw(blk, R_QUEUE_DEVICE, (u32)(u64)&bq.used);
    vw(blk, R_QUEUE_READY, 1);
    vw(blk, R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    if (!(vr(blk, R_STATUS) & 0x40)) fail("bad queue size accepted", 30);

    puts("hostile done\n");
    guest_exit(0);
}
