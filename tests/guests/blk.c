/* virtio-blk guest: reads the first 64 KiB of the disk and prints their FNV-1a hash, finds
 * /hello.txt in the ext2 filesystem on it and prints its content, writes two sectors at the
 * end of the disk, flushes, checks that an out-of-range read fails, then exits 0.
 * With "ro" on the command line: checks the disk is offered read-only and refuses a write. */
#include "virtio.h"

#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define F_FLUSH (1u << 9)
#define F_RO (1u << 5)

struct blk_req { u32 type; u32 reserved; u64 sector; };

static struct vq q;
static struct blk_req req;
static volatile u8 status;
static u8 buf[4096] __attribute__((aligned(512)));
static u8 blockbuf[4096];

/* One request: header, optional data (device-writable for reads), status. Returns status. */
static u8 blk_io(u32 type, u64 sector, void *data, u32 len) {
    req.type = type;
    req.reserved = 0;
    req.sector = sector;
    status = 0xff;
    q.desc[0] = (struct vq_desc){(u64)&req, sizeof req, DESC_F_NEXT, 1};
    u16 last = 1;
    if (len) {
        q.desc[1] = (struct vq_desc){(u64)data, len, (u16)(DESC_F_NEXT | (type == BLK_T_IN ? DESC_F_WRITE : 0)), 2};
        last = 2;
    }
    q.desc[last] = (struct vq_desc){(u64)&status, 1, DESC_F_WRITE, 0};
    vq_submit(&q, 0);
    vq_wait(&q);
    return status;
}

static void read_bytes(u64 off, void *dst, u32 len) {
    /* Sector-aligned reads through `buf`, at most 4 KiB at a time. */
    u8 *d = dst;
    while (len) {
        u64 sector = off / 512;
        u32 skip = (u32)(off % 512);
        u32 n = 4096 - skip;
        if (n > len) n = len;
        if (blk_io(BLK_T_IN, sector, buf, 4096) != 0) fail("read failed", 20);
        memcpy(d, buf + skip, n);
        d += n;
        off += n;
        len -= n;
    }
}

static u32 rd32(const u8 *p) { return p[0] | p[1] << 8 | p[2] << 16 | (u32)p[3] << 24; }
static u16 rd16(const u8 *p) { return (u16)(p[0] | p[1] << 8); }

static u8 sb[1024], inode[256];
static u32 bsize, ipg, isize;

static void read_inode(u32 n) {
    u32 group = (n - 1) / ipg, index = (n - 1) % ipg;
    u8 gd[32];
    u64 gdt = (u64)(bsize == 1024 ? 2 : 1) * bsize;
    read_bytes(gdt + 32ul * group, gd, 32);
    read_bytes((u64)rd32(gd + 8) * bsize + (u64)index * isize, inode, isize > 256 ? 256 : isize);
}

ENTRY void _start(u64 cpu, u64 bp) {
    if (cpu != 0) for (;;) __asm__ volatile("cli; hlt"); /* one driver: the boot vCPU */
    u64 base = virtio_find(2);
    if (!base) fail("no virtio-blk", 10);
    u32 feats = virtio_negotiate(base, F_FLUSH | F_RO);
    vq_setup(base, &q, 0);
    virtio_driver_ok(base);
    u64 capacity = vr(base, R_CONFIG) | (u64)vr(base, R_CONFIG + 4) << 32;
    puts("capacity ");
    putdec(capacity);
    puts(" sectors, flush ");
    puts(feats & F_FLUSH ? "yes\n" : "no\n");

    u64 h = 0xcbf29ce484222325ul;
    for (u64 s = 0; s < 128; s += 8) {
        if (blk_io(BLK_T_IN, s, buf, 4096) != 0) fail("read failed", 21);
        for (int i = 0; i < 4096; i++) { h ^= buf[i]; h *= 0x100000001b3ul; }
    }
    puts("fnv ");
    puthex(h);
    puts("\n");

    if (has_word(bp_cmdline(bp), "ro")) {
        /* Read-only disk: offered as such, and writes fail with IOERR. */
        if (!(feats & F_RO)) fail("read-only disk without VIRTIO_BLK_F_RO", 30);
        if (blk_io(BLK_T_OUT, 0, buf, 512) != 1) fail("write to a read-only disk did not fail", 31);
        puts("write refused\n");
        guest_exit(0);
    }

    read_bytes(1024, sb, 1024);
    if (rd16(sb + 56) != 0xef53) fail("no ext2 superblock", 22);
    bsize = 1024u << rd32(sb + 24);
    ipg = rd32(sb + 40);
    isize = rd32(sb + 76) ? rd16(sb + 88) : 128;
    read_inode(2);
    u32 dir_size = rd32(inode + 4);
    read_bytes((u64)rd32(inode + 40) * bsize, blockbuf, bsize);
    u32 found = 0;
    for (u32 off = 0; off < bsize && off < dir_size;) {
        u8 *e = blockbuf + off;
        u32 ino = rd32(e);
        u16 rec = rd16(e + 4);
        u8 nlen = e[6];
        if (rec == 0) break;
        if (ino && nlen == 9 && !memcmp(e + 8, "hello.txt", 9)) found = ino;
        off += rec;
    }
    if (!found) fail("/hello.txt not in the root directory", 23);
    read_inode(found);
    u32 fsize = rd32(inode + 4);
    if (fsize > sizeof blockbuf - 1) fsize = sizeof blockbuf - 1;
    read_bytes((u64)rd32(inode + 40) * bsize, blockbuf, fsize);
    blockbuf[fsize] = 0;
    puts("hello.txt: ");
    puts((const char *)blockbuf);

    for (int i = 0; i < 1024; i++) buf[i] = (u8)"guest-wrote-this-sector "[i % 24];
    if (blk_io(BLK_T_OUT, capacity - 2, buf, 1024) != 0) fail("write failed", 24);
    if (blk_io(BLK_T_FLUSH, 0, 0, 0) != 0) fail("flush failed", 25);
    if (blk_io(BLK_T_IN, capacity, buf, 512) != 1) fail("read past the end did not fail", 26);
    puts("blk done\n");
    guest_exit(0);
}
