/* Interrupt-driven virtio guest: programs an IDT, the local APIC and the IOAPIC so that the
 * virtio-console's line (GSI 5, raised by the VMM through an irqfd) arrives as vector 0x40,
 * then sends a message and sleeps in `hlt` until the used-buffer interrupt wakes it. */
#include "virtio.h"

#define LAPIC 0xfee00000ul
#define IOAPIC 0xfec00000ul
#define VECTOR 0x40
#define GSI 5

struct gate { u16 off0; u16 sel; u8 ist; u8 attr; u16 off1; u32 off2; u32 zero; };
struct idtr { u16 limit; u64 base; } __attribute__((packed));
struct interrupt_frame;

static struct gate idt[256] __attribute__((aligned(16)));
static volatile u32 irq_count, irq_status;
static u64 console_base;
static struct vq rxq, txq;
static char msg[] = "interrupt-driven hello\n";

__attribute__((interrupt)) static void isr(struct interrupt_frame *f) {
    (void)f;
    u32 st = vr(console_base, R_INT_STATUS);
    vw(console_base, R_INT_ACK, st);
    irq_status |= st;
    irq_count++;
    mmio_write32(LAPIC + 0xb0, 0); /* EOI */
}

static void ioapic_write(u32 reg, u32 v) {
    mmio_write32(IOAPIC, reg);
    mmio_write32(IOAPIC + 0x10, v);
}

ENTRY void _start(u64 cpu, u64 bp) {
    (void)bp;
    if (cpu != 0) for (;;) __asm__ volatile("cli; hlt");
    u64 h = (u64)isr;
    idt[VECTOR] = (struct gate){(u16)h, 0x10, 0, 0x8e, (u16)(h >> 16), (u32)(h >> 32), 0};
    struct idtr r = {sizeof idt - 1, (u64)idt};
    __asm__ volatile("lidt %0" : : "m"(r));
    outb(0x21, 0xff); /* mask the legacy PICs: the IOAPIC delivers */
    outb(0xa1, 0xff);
    mmio_write32(LAPIC + 0x80, 0);          /* TPR: accept everything */
    mmio_write32(LAPIC + 0xf0, 0x100 | 0xff); /* software-enable, spurious vector 0xff */
    ioapic_write(0x10 + 2 * GSI + 1, 0);    /* destination APIC 0 */
    ioapic_write(0x10 + 2 * GSI, VECTOR);   /* fixed, physical, edge, unmasked */

    console_base = virtio_find(3);
    if (!console_base) fail("no virtio-console", 10);
    virtio_negotiate(console_base, 0);
    vq_setup(console_base, &rxq, 0);
    vq_setup(console_base, &txq, 1);
    virtio_driver_ok(console_base);

    txq.desc[0] = (struct vq_desc){(u64)msg, sizeof msg - 1, 0, 0};
    __asm__ volatile("cli");
    vq_submit(&txq, 0);
    /* Sleep until the interrupt: `sti; hlt` is atomic with respect to interrupt delivery. */
    for (u64 i = 0; irq_count == 0; i++) {
        if (i > 100000) fail("no interrupt", 12);
        __asm__ volatile("sti; hlt; cli");
    }
    if (txq.used.idx != 1) fail("interrupt before the used entry", 13);
    puts("irq count ");
    putdec(irq_count);
    puts(" status ");
    putdec(irq_status);
    puts("\n");
    guest_exit(0);
}
