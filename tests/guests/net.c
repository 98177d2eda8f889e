/* NIC guest: finds the virtio-net device, checks the MAC and MTU in its config space, posts a
 * receive buffer split over two descriptors, transmits one Ethernet frame (header + frame over
 * two descriptors), and waits for the host's reply frame; prints what it got and exits 0.
 * With "arp" on the command line the frame is an ARP request for the gateway 10.0.2.2 from
 * 10.0.2.15, and the reply must be the gateway's ARP answer (printed as "arp reply from MAC"). */
#include "virtio.h"

static struct vq rxq, txq;
static u8 rxhdr[12], rxbuf[2048], txhdr[12];
static u8 frame[64] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* broadcast */
    0x52, 0x55, 0x0a, 0x00, 0x02, 0x0f, /* the device's MAC */
    0x88, 0xb5,                         /* local experimental ethertype */
    'p', 'i', 'n', 'g', ' ', 'f', 'r', 'o', 'm', ' ', 'g', 'u', 'e', 's', 't',
};

static u8 arp[42] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x55, 0x0a, 0x00, 0x02, 0x0f, 0x08, 0x06,
    0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,           /* Ethernet/IPv4, request */
    0x52, 0x55, 0x0a, 0x00, 0x02, 0x0f, 10, 0, 2, 15,   /* sender */
    0, 0, 0, 0, 0, 0, 10, 0, 2, 2,                      /* target: the gateway */
};

static u8 cfg8(u64 base, u32 off) { return *(volatile u8 *)(base + R_CONFIG + off); }

ENTRY void _start(u64 cpu, u64 bp) {
    int want_arp = has_word(bp_cmdline(bp), "arp");
    if (cpu != 0) for (;;) __asm__ volatile("cli; hlt");
    u64 base = virtio_find(1);
    if (!base) fail("no virtio-net", 10);
    puts("virtio-net at ");
    puthex(base);
    puts("\n");
    /* MAC (bit 5) and MTU (bit 3). */
    u32 got = virtio_negotiate(base, (1u << 5) | (1u << 3));
    if (got != ((1u << 5) | (1u << 3))) fail("MAC and MTU not offered", 11);
    for (u32 i = 0; i < 6; i++)
        if (cfg8(base, i) != frame[6 + i]) fail("config MAC differs", 12);
    u32 mtu = cfg8(base, 10) | ((u32)cfg8(base, 11) << 8);
    puts("mtu ");
    puthex(mtu);
    puts("\n");
    vq_setup(base, &rxq, 0);
    vq_setup(base, &txq, 1);
    virtio_driver_ok(base);

    rxq.desc[0] = (struct vq_desc){(u64)rxhdr, sizeof rxhdr, DESC_F_WRITE | DESC_F_NEXT, 1};
    rxq.desc[1] = (struct vq_desc){(u64)rxbuf, sizeof rxbuf, DESC_F_WRITE, 0};
    vq_submit(&rxq, 0);

    txq.desc[0] = (struct vq_desc){(u64)txhdr, sizeof txhdr, DESC_F_NEXT, 1};
    if (want_arp)
        txq.desc[1] = (struct vq_desc){(u64)arp, sizeof arp, 0, 0};
    else
        txq.desc[1] = (struct vq_desc){(u64)frame, sizeof frame, 0, 0};
    vq_submit(&txq, 0);
    vq_wait(&txq);

    u32 len = vq_wait(&rxq);
    if (len < 12 + 14) fail("short receive", 13);
    if (rxhdr[10] != 1 || rxhdr[11] != 0) fail("num_buffers is not 1", 14);
    if (want_arp) {
        if (rxbuf[12] != 0x08 || rxbuf[13] != 0x06 || rxbuf[21] != 2) fail("not an ARP reply", 15);
        if (rxbuf[28] != 10 || rxbuf[29] != 0 || rxbuf[30] != 2 || rxbuf[31] != 2)
            fail("the reply is not from 10.0.2.2", 16);
        puts("arp reply from ");
        for (u32 i = 22; i < 28; i++) puthex(rxbuf[i]);
        puts("\n");
        guest_exit(0);
    }
    puts("got: ");
    for (u32 i = 14; i < len - 12 && rxbuf[i]; i++) {
        char c[2] = {(char)rxbuf[i], 0};
        puts(c);
    }
    puts("\n");
    guest_exit(0);
}
