/* PVH-entry guest: an ELF with a Xen PHYS32_ENTRY note, entered in 32-bit protected mode
 * with %ebx = hvm_start_info. Checks the magic, prints the command line, exits with the
 * number of memory-map entries (0xbad if the magic is wrong). */
    .code32
    .section .text.start, "ax"
    .globl pvh_start
pvh_start:
    cmpl $0x336ec578, (%ebx)
    jne bad
    mov 24(%ebx), %esi          /* cmdline_paddr (low half) */
1:  movb (%esi), %al
    test %al, %al
    jz 2f
    mov $0x3f8, %dx
    out %al, %dx
    inc %esi
    jmp 1b
2:  mov 48(%ebx), %eax          /* memmap_entries */
    mov $0x501, %dx
    out %eax, %dx
bad:
    mov $0xbad, %eax
    mov $0x501, %dx
    out %eax, %dx
    hlt

    .pushsection .note.Xen, "a", @note
    .long 4                     /* namesz */
    .long 4                     /* descsz */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start
    .popsection
