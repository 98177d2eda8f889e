/* A stand-in for iii's init in a `vm` sandbox, for hosts that cannot boot Linux: speaks the
 * control protocol (src/protocol) over the virtio-console like init does.
 * Announces itself (a Window frame of 0 credit on stream 0), waits for the host's Start message, answers Started, writes the "worker's" output on the
 * serial console (the worker's log), then waits for a Signal message and answers
 * Exited(signal N) before ending the guest. If the Start message contains "vanish", it ends
 * the guest right after Started without reporting an exit (a guest crash, as the host sees it);
 * if it contains "link", it opens an engine-link stream, sends "ping\n" and logs the reply.
 * Frames: stream u32 LE, kind u8 (1 = message), length u32 LE, JSON payload. */
#include "virtio.h"

static struct vq rxq, txq;
static char rxbuf[4096], txbuf[512];
static char acc[65536];
static u32 acc_len;

/* JSON the host's serde encoding produces (tests/vm_sandbox.rs checks these stay equal). */
#define STARTED "{\"type\":\"started\",\"pid\":1}"
#define EXITED_SIGNAL "{\"type\":\"exited\",\"signal\":"

static u32 slen(const char *s) { u32 n = 0; while (s[n]) n++; return n; }

static void post_rx(void) {
    rxq.desc[0] = (struct vq_desc){(u64)rxbuf, sizeof rxbuf, DESC_F_WRITE, 0};
    vq_submit(&rxq, 0);
}

static void send_frame(u32 stream, u8 kind, const char *payload, u32 n) {
    memcpy(txbuf, &stream, 4);
    txbuf[4] = (char)kind;
    memcpy(txbuf + 5, &n, 4);
    memcpy(txbuf + 9, payload, n);
    txq.desc[0] = (struct vq_desc){(u64)txbuf, 9 + n, 0, 0};
    vq_submit(&txq, 0);
    vq_wait(&txq);
}

static void send_message(const char *json, u32 n) { send_frame(0, 1, json, n); }

/* Block until a whole frame of `want_kind` on `want_stream` is buffered; copy its payload into
 * `out` (NUL terminated) and drop it from the buffer. Other frames are skipped. */
static u32 next_frame(u32 want_stream, u8 want_kind, char *out, u32 cap) {
    for (;;) {
        while (acc_len >= 9) {
            u32 stream, len;
            memcpy(&stream, acc, 4);
            memcpy(&len, acc + 5, 4);
            if (len + 9 > sizeof acc) fail("frame too large", 20);
            if (acc_len < 9 + len) break;
            u8 kind = (u8)acc[4];
            u32 n = 0;
            int match = stream == want_stream && kind == want_kind;
            if (match) {
                n = len < cap - 1 ? len : cap - 1;
                memcpy(out, acc + 9, n);
                out[n] = 0;
            }
            u32 rest = acc_len - 9 - len;
            for (u32 i = 0; i < rest; i++) acc[i] = acc[9 + len + i];
            acc_len = rest;
            if (match) return n;
        }
        u32 got = vq_wait(&rxq);
        if (acc_len + got > sizeof acc) fail("receive buffer overflow", 21);
        memcpy(acc + acc_len, rxbuf, got);
        acc_len += got;
        post_rx();
    }
}

static u32 next_message(char *out, u32 cap) { return next_frame(0, 1, out, cap); }

static int contains(const char *s, const char *w) {
    u32 n = slen(w);
    for (; *s; s++) {
        u32 i = 0;
        while (i < n && s[i] == w[i]) i++;
        if (i == n) return 1;
    }
    return 0;
}

static char msg[65536];

ENTRY void _start(u64 cpu, u64 bp) {
    (void)bp;
    if (cpu != 0) for (;;) __asm__ volatile("cli; hlt");
    u64 base = virtio_find(3);
    if (!base) fail("no virtio-console", 10);
    virtio_negotiate(base, 0);
    vq_setup(base, &rxq, 0);
    vq_setup(base, &txq, 1);
    virtio_driver_ok(base);
    post_rx();
    puts("guest: booted\n");
    /* init's announcement: a Window frame of 0 credit on stream 0 (console now raw). */
    static const char ready[13] = {0, 0, 0, 0, 5, 4, 0, 0, 0, 0, 0, 0, 0};
    memcpy(txbuf, ready, sizeof ready);
    txq.desc[0] = (struct vq_desc){(u64)txbuf, sizeof ready, 0, 0};
    vq_submit(&txq, 0);
    vq_wait(&txq);
    for (;;) {
        next_message(msg, sizeof msg);
        if (contains(msg, "\"type\":\"start\"")) break;
    }
    int vanish = contains(msg, "vanish");
    send_message(STARTED, slen(STARTED));
    puts("hello from the guest worker\n");
    if (vanish) guest_exit(3);
    if (contains(msg, "link")) {
        /* An engine-link connection, as init opens one for a worker: stream 1 (init's ids are
         * odd), Open, then bytes both ways. */
        static const char open[] = "{\"type\":\"open\",\"kind\":\"engine_link\"}";
        send_frame(1, 1, open, slen(open));
        send_frame(1, 2, "ping\n", 5);
        static char data[256];
        next_frame(1, 2, data, sizeof data);
        puts("link: ");
        puts(data);
    }
    for (;;) {
        next_message(msg, sizeof msg);
        if (!contains(msg, "\"type\":\"signal\"")) continue;
        /* "signal":N */
        const char *p = msg;
        while (*p && !(p[0] == ':' && p[1] >= '0' && p[1] <= '9')) p++;
        u32 sig = 0;
        for (p++; *p >= '0' && *p <= '9'; p++) sig = sig * 10 + (u32)(*p - '0');
        puts("guest: got signal ");
        putdec(sig);
        puts("\n");
        char out[64];
        u32 n = slen(EXITED_SIGNAL);
        memcpy(out, EXITED_SIGNAL, n);
        char digits[12];
        u32 d = 0;
        do { digits[d++] = (char)('0' + sig % 10); sig /= 10; } while (sig);
        while (d) out[n++] = digits[--d];
        out[n++] = '}';
        send_message(out, n);
        guest_exit(0);
    }
}
