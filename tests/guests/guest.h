/* Freestanding helpers for VMM test guests: port I/O, serial output, the debug-exit and
 * progress ports, and the boot_params fields the VMM fills in.
 * Entry convention (plain ELF): 64-bit mode, rdi = vCPU index, rsi = boot_params. */
#ifndef GUEST_H
#define GUEST_H

typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define EXIT_PORT 0x501
#define PROGRESS_PORT 0x502
#define COM1 0x3f8

#define ENTRY __attribute__((section(".text.start"), used))

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) {
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline void progress(u32 mark) { outl(PROGRESS_PORT, mark); }

static __attribute__((noreturn)) void guest_exit(u32 code) {
    outl(EXIT_PORT, code);
    for (;;) __asm__ volatile("cli; hlt");
}

static void putc(char c) {
    while (!(inb(COM1 + 5) & 0x20)) {
    }
    outb(COM1, (u8)c);
}
static void puts(const char *s) {
    while (*s) putc(*s++);
}
static void puthex(u64 v) {
    const char *d = "0123456789abcdef";
    char b[17];
    for (int i = 15; i >= 0; i--) { b[i] = d[v & 15]; v >>= 4; }
    b[16] = 0;
    const char *p = b;
    while (*p == '0' && p[1]) p++;
    puts(p);
}
static void putdec(u64 v) {
    char b[21];
    int i = 20;
    b[i] = 0;
    do { b[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    puts(b + i);
}

static inline u32 mmio_read32(u64 a) { return *(volatile u32 *)a; }
static inline void mmio_write32(u64 a, u32 v) { *(volatile u32 *)a = v; }

/* Linux boot_params fields. */
static const char *bp_cmdline(u64 bp) { return (const char *)(u64)(*(u32 *)(bp + 0x228)); }

static int starts_with(const char *s, const char *p) {
    while (*p) if (*s++ != *p++) return 0;
    return 1;
}
/* Does the command line contain the word `w` (space separated)? */
static int has_word(const char *s, const char *w) {
    while (*s) {
        if (starts_with(s, w)) {
            const char *e = s;
            const char *p = w;
            while (*p) { p++; e++; }
            if (*e == 0 || *e == ' ') return 1;
        }
        while (*s && *s != ' ') s++;
        while (*s == ' ') s++;
    }
    return 0;
}

/* gcc may emit calls to these even in freestanding code. */
void *memset(void *d, int c, u64 n) {
    u8 *p = d;
    while (n--) *p++ = (u8)c;
    return d;
}
void *memcpy(void *d, const void *s, u64 n) {
    u8 *p = d;
    const u8 *q = s;
    while (n--) *p++ = *q++;
    return d;
}
int memcmp(const void *a, const void *b, u64 n) {
    const u8 *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q) return *p - *q;
    return 0;
}

#endif
