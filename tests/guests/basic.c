/* Step-1/2 guest: behaviour chosen by a word on the command line.
 *   hello      print a greeting and the command line, exit 42
 *   ud2        execute an invalid opcode (no IDT: triple fault)
 *   wild-jump  jump to an unmapped address (page fault, triple fault)
 *   hang       halt with interrupts off forever (the host must stop it)
 *   smp        every vCPU marks its own flag and prints; vCPU 0 waits for N=smp-count and
 *              exits with the bitmask of vCPUs seen
 *   e820       print the e820 map from boot_params and exit with the entry count
 *   hdr        print the setup header fields the loader put in boot_params, exit 7
 *   mptable    find and check the MP table, print its CPUs and IOAPIC, exit with the CPU count
 *   sipi       (as a bzImage, where other vCPUs wait for SIPI) start vCPU 1 the way Linux
 *              does: INIT + SIPI through the local APIC into a real-mode trampoline at 0x8000,
 *              which prints 'A' and sets a flag; exit 0 once the flag is seen
 *   reset      pulse the i8042 reset line (port 0x64 <- 0xfe), as Linux does with reboot=k
 *   bench      mark "init reached" (progress 2), time port-I/O and MMIO exits (marks 3, 4),
 *              halt; the benchmark stops the VM */
#include "guest.h"

static volatile u32 flags[16];

/* Real-mode AP trampoline, copied to 0x8000 (SIPI vector 0x08): says 'A' on COM1, sets the
 * word at 0x8f00, halts. */
extern const u8 tramp_start[], tramp_end[];
__asm__(".pushsection .rodata\n"
        ".globl tramp_start, tramp_end\n"
        "tramp_start:\n"
        ".code16\n"
        "cli\n"
        "xor %ax, %ax\n"
        "mov %ax, %ds\n"
        "mov $0x3f8, %dx\n"
        "mov $0x41, %al\n"
        "out %al, %dx\n"
        "movw $0x5a5a, 0x8f00\n"
        "1: hlt\n"
        "jmp 1b\n"
        ".code64\n"
        "tramp_end:\n"
        ".popsection\n");
static volatile int serial_lock;

static void lock(void) { while (__atomic_exchange_n(&serial_lock, 1, __ATOMIC_ACQUIRE)) {} }
static void unlock(void) { __atomic_store_n(&serial_lock, 0, __ATOMIC_RELEASE); }

ENTRY void _start(u64 cpu, u64 bp) {
    const char *cmd = bp_cmdline(bp);
    if (cpu == 0) progress(1);
    /* Every vCPU enters here; outside "smp" only vCPU 0 does the work. */
    if (cpu != 0 && !has_word(cmd, "smp")) for (;;) __asm__ volatile("cli; hlt");
    if (has_word(cmd, "mptable")) {
        u8 *fp = 0;
        for (u64 a = 0x9fc00; a < 0xa0000; a += 16)
            if (starts_with((const char *)a, "_MP_")) { fp = (u8 *)a; break; }
        if (!fp) { puts("no _MP_\n"); guest_exit(100); }
        u8 sum = 0;
        for (int i = 0; i < 16; i++) sum += fp[i];
        u8 *t = (u8 *)(u64)*(u32 *)(fp + 4);
        u16 len = *(u16 *)(t + 4), count = *(u16 *)(t + 34);
        for (int i = 0; i < len; i++) sum += t[i];
        if (sum || !starts_with((const char *)t, "PCMP")) { puts("bad MP checksum\n"); guest_exit(101); }
        u32 cpus = 0, ints = 0;
        u8 *e = t + 44;
        for (int i = 0; i < count; i++) {
            if (*e == 0) { cpus++; if (e[3] & 2) { puts("bsp "); putdec(e[1]); puts(" "); } e += 20; continue; }
            if (*e == 2) { puts("ioapic "); puthex(*(u32 *)(e + 4)); puts(" "); }
            if (*e == 3) ints++;
            e += 8;
        }
        puts("cpus ");
        putdec(cpus);
        puts(" ints ");
        putdec(ints);
        puts("\n");
        guest_exit(cpus);
    }
    if (has_word(cmd, "sipi")) {
        volatile u16 *flag = (volatile u16 *)0x8f00ul;
        *flag = 0;
        memcpy((void *)0x8000ul, tramp_start, (u64)(tramp_end - tramp_start));
        u64 lapic = 0xfee00000ul;
        mmio_write32(lapic + 0xf0, 0x1ff);          /* software-enable */
        mmio_write32(lapic + 0x310, 1u << 24);       /* destination: APIC id 1 */
        mmio_write32(lapic + 0x300, 0x4500);         /* INIT */
        for (int i = 0; i < 2; i++) {
            for (volatile int d = 0; d < 100000; d++) {
            }
            mmio_write32(lapic + 0x310, 1u << 24);
            mmio_write32(lapic + 0x300, 0x4600 | 0x08); /* STARTUP, vector 0x08 -> 0x8000 */
        }
        for (u64 i = 0; *flag != 0x5a5a; i++) {
            if (i > 2000000000ul) { puts("AP never ran\n"); guest_exit(50); }
            __asm__ volatile("pause");
        }
        puts(" <- AP via SIPI\n");
        guest_exit(0);
    }
    if (has_word(cmd, "reset")) {
        while (inb(0x64) & 2) {
        }
        outb(0x64, 0xfe);
        for (;;) __asm__ volatile("cli; hlt");
    }
    if (has_word(cmd, "bench")) {
        progress(2);
        /* Exit costs: 100000 port writes the VMM ignores, then 100000 MMIO reads of the first
         * virtio-mmio magic register, each bracketed by progress marks. */
        for (int i = 0; i < 100000; i++) outb(0x80, 0);
        progress(3);
        for (int i = 0; i < 100000; i++) (void)mmio_read32(0xd0000000ul);
        progress(4);
        for (;;) __asm__ volatile("cli; hlt");
    }
    if (has_word(cmd, "smp")) {
        lock();
        puts("cpu ");
        putdec(cpu);
        puts(" up\n");
        unlock();
        /* Only after printing: vCPU 0 exits (cutting output short) once all flags are set. */
        __atomic_store_n(&flags[cpu], 0x100 + (u32)cpu, __ATOMIC_RELEASE);
        if (cpu != 0) for (;;) __asm__ volatile("cli; hlt");
        u32 mask = 0;
        for (u64 spins = 0; spins < 2000000000ul; spins++) {
            mask = 0;
            for (int i = 0; i < 16; i++)
                if (flags[i] == 0x100u + (u32)i) mask |= 1u << i;
            if (mask == 3) break;
            __asm__ volatile("pause");
        }
        guest_exit(mask);
    }
    if (has_word(cmd, "ud2")) {
        puts("about to ud2\n");
        __asm__ volatile("ud2");
    }
    if (has_word(cmd, "wild-jump")) {
        puts("about to jump\n");
        void (*f)(void) = (void (*)(void))0x7000000000ul;
        f();
    }
    if (has_word(cmd, "hang")) {
        puts("hanging\n");
        for (;;) __asm__ volatile("cli; hlt");
    }
    if (has_word(cmd, "e820")) {
        u8 n = *(u8 *)(bp + 0x1e8);
        for (int i = 0; i < n; i++) {
            u64 e = bp + 0x2d0 + 20 * (u64)i;
            puts("e820 ");
            puthex(*(u64 *)e);
            puts(" ");
            puthex(*(u64 *)(e + 8));
            puts(" ");
            putdec(*(u32 *)(e + 16));
            puts("\n");
        }
        u32 rd = *(u32 *)(bp + 0x218), rdsz = *(u32 *)(bp + 0x21c);
        if (rdsz) {
            puts("initramfs ");
            putdec(rdsz);
            puts(" bytes: ");
            for (u32 i = 0; i < rdsz && i < 32; i++) putc(*(char *)(u64)(rd + i));
            puts("\n");
        }
        guest_exit(n);
    }
    if (has_word(cmd, "hdr")) {
        puts("hdr ");
        for (int i = 0; i < 4; i++) putc(*(char *)(bp + 0x202 + i));
        puts(" ver ");
        puthex(*(u16 *)(bp + 0x206));
        puts(" loader ");
        puthex(*(u8 *)(bp + 0x210));
        puts(" entry ");
        puthex((u64)&_start);
        puts("\n");
        guest_exit(7);
    }
    puts("hello from the guest\ncmdline: ");
    puts(cmd);
    puts("\n");
    progress(2);
    guest_exit(42);
}
