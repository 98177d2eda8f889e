/* A minimal polling virtio-mmio (version 2) driver for test guests: device discovery, feature
 * negotiation, one split virtqueue per call to vq_setup, synchronous requests. */
#ifndef VIRTIO_H
#define VIRTIO_H
#include "guest.h"

#define VIRTIO_MMIO_BASE 0xd0000000ul
#define VIRTIO_MMIO_SLOTS 8

#define R_MAGIC 0x000
#define R_VERSION 0x004
#define R_DEVICE_ID 0x008
#define R_DEV_FEATURES 0x010
#define R_DEV_FEATURES_SEL 0x014
#define R_DRV_FEATURES 0x020
#define R_DRV_FEATURES_SEL 0x024
#define R_QUEUE_SEL 0x030
#define R_QUEUE_NUM_MAX 0x034
#define R_QUEUE_NUM 0x038
#define R_QUEUE_READY 0x044
#define R_QUEUE_NOTIFY 0x050
#define R_INT_STATUS 0x060
#define R_INT_ACK 0x064
#define R_STATUS 0x070
#define R_QUEUE_DESC 0x080
#define R_QUEUE_DRIVER 0x090
#define R_QUEUE_DEVICE 0x0a0
#define R_CONFIG 0x100

#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8

#define VQ_SIZE 16
#define DESC_F_NEXT 1
#define DESC_F_WRITE 2

struct vq_desc { u64 addr; u32 len; u16 flags; u16 next; };
struct vq_avail { u16 flags; u16 idx; u16 ring[VQ_SIZE]; u16 used_event; };
struct vq_used_elem { u32 id; u32 len; };
struct vq_used { u16 flags; u16 idx; struct vq_used_elem ring[VQ_SIZE]; u16 avail_event; };

struct vq {
    struct vq_desc desc[VQ_SIZE] __attribute__((aligned(16)));
    struct vq_avail avail __attribute__((aligned(2)));
    struct vq_used used __attribute__((aligned(4)));
    u16 last_used;
    u64 base;
    u32 index;
};

static __attribute__((noreturn)) void fail(const char *why, u32 code) {
    puts("FAIL: ");
    puts(why);
    puts("\n");
    guest_exit(code);
}

static u32 vr(u64 base, u32 reg) { return mmio_read32(base + reg); }
static void vw(u64 base, u32 reg, u32 v) { mmio_write32(base + reg, v); }

/* The mmio base of the first device of type `id`, or 0. */
static u64 virtio_find(u32 id) {
    for (u64 i = 0; i < VIRTIO_MMIO_SLOTS; i++) {
        u64 base = VIRTIO_MMIO_BASE + i * 0x1000;
        if (vr(base, R_MAGIC) != 0x74726976) continue;
        if (vr(base, R_VERSION) != 2) fail("virtio-mmio version is not 2", 90);
        if (vr(base, R_DEVICE_ID) == id) return base;
    }
    return 0;
}

/* Reset, acknowledge, and negotiate VERSION_1 plus the low feature bits in `want`. Returns the
 * low feature bits accepted. */
static u32 virtio_negotiate(u64 base, u32 want) {
    vw(base, R_STATUS, 0);
    vw(base, R_STATUS, S_ACK);
    vw(base, R_STATUS, S_ACK | S_DRIVER);
    vw(base, R_DEV_FEATURES_SEL, 1);
    if (!(vr(base, R_DEV_FEATURES) & 1)) fail("device does not offer VIRTIO_F_VERSION_1", 91);
    vw(base, R_DEV_FEATURES_SEL, 0);
    u32 low = vr(base, R_DEV_FEATURES) & want;
    vw(base, R_DRV_FEATURES_SEL, 0);
    vw(base, R_DRV_FEATURES, low);
    vw(base, R_DRV_FEATURES_SEL, 1);
    vw(base, R_DRV_FEATURES, 1);
    vw(base, R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    if (!(vr(base, R_STATUS) & S_FEATURES_OK)) fail("device refused FEATURES_OK", 92);
    return low;
}

static void vq_setup(u64 base, struct vq *q, u32 index) {
    q->base = base;
    q->index = index;
    q->last_used = 0;
    vw(base, R_QUEUE_SEL, index);
    if (vr(base, R_QUEUE_READY)) fail("queue already live", 93);
    if (vr(base, R_QUEUE_NUM_MAX) < VQ_SIZE) fail("queue too small", 94);
    vw(base, R_QUEUE_NUM, VQ_SIZE);
    vw(base, R_QUEUE_DESC, (u32)(u64)q->desc);
    vw(base, R_QUEUE_DESC + 4, 0);
    vw(base, R_QUEUE_DRIVER, (u32)(u64)&q->avail);
    vw(base, R_QUEUE_DRIVER + 4, 0);
    vw(base, R_QUEUE_DEVICE, (u32)(u64)&q->used);
    vw(base, R_QUEUE_DEVICE + 4, 0);
    vw(base, R_QUEUE_READY, 1);
}

static void virtio_driver_ok(u64 base) {
    vw(base, R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    if (vr(base, R_STATUS) & 0x40) fail("device needs reset after DRIVER_OK", 95);
}

/* Make the chain starting at descriptor `head` available and notify the device. */
static void vq_submit(struct vq *q, u16 head) {
    volatile struct vq_avail *a = &q->avail;
    a->ring[a->idx % VQ_SIZE] = head;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    a->idx = a->idx + 1;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    vw(q->base, R_QUEUE_NOTIFY, q->index);
}

/* Poll until the device returns a chain; returns its used length. */
static u32 vq_wait(struct vq *q) {
    volatile struct vq_used *u = &q->used;
    for (u64 spins = 0;; spins++) {
        if (u->idx != q->last_used) break;
        if (spins > 4000000000ul) fail("timed out waiting for the device", 96);
        __asm__ volatile("pause");
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    u32 len = u->ring[q->last_used % VQ_SIZE].len;
    q->last_used++;
    return len;
}

#endif
