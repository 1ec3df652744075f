//! PVH entry: from QEMU's 32-bit protected-mode hand-off to 64-bit Rust, plus the exception IDT.
//!
//! QEMU's `-kernel` loader finds the `XEN_ELFNOTE_PHYS32_ENTRY` note, loads the ELF at its
//! physical addresses and enters `pvh_start` in flat 32-bit protected mode with paging off,
//! interrupts disabled and `ebx` pointing at the `hvm_start_info` structure (the Xen PVH boot
//! ABI, `xen/include/public/arch-x86/hvm/start_info.h`). The code below identity-maps the low
//! 4 GiB with 2 MiB pages (the tables are [`paging`](super::paging)'s statics), enables long
//! mode, loads a 64-bit GDT and an IDT (32 exception vectors that report and exit, 16 device
//! interrupt vectors from 0x40 for [`interrupts`](super::interrupts), the APIC's spurious
//! vector 0xFF), and calls
//! [`kmain`](super::kmain) with the start-info address.

use core::arch::global_asm;

use super::paging::{BOOT_PD, BOOT_PDPT, BOOT_PML4};

/// Bytes of the boot stack (the guest runs on it throughout; the driver's queue tables live
/// on it, since the guest has no heap).
const STACK_SIZE: usize = 1024 * 1024;

global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4                         /* namesz: "Xen\0" */
    .long 8                         /* descsz: a 64-bit address */
    .long 18                        /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .quad pvh_start

    .section .bss.boot_stack, "aw", @nobits
    .p2align 12
boot_stack_bottom:
    .skip {stack_size}
boot_stack_top:

    .section .bss.boot_idt, "aw", @nobits
    .p2align 4
boot_idt:
    .skip 256 * 16

    .section .rodata.boot_gdt, "a"
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit code, present, ring 0 */
    .quad 0x00cf92000000ffff        /* 0x10: data, present, writable */
boot_gdt_end:
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt
    .p2align 3
boot_idt_pointer:
    .word 256 * 16 - 1
    .quad boot_idt

    .section .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    movl %ebx, %esi
    movl $boot_stack_top, %esp

    /* PML4[0] -> PDPT; PDPT[0..4] -> the four page directories. */
    movl ${pdpt}, %eax
    orl $0x3, %eax
    movl %eax, {pml4}
    movl ${pd}, %eax
    orl $0x3, %eax
    xorl %ecx, %ecx
1:
    movl %eax, {pdpt}(,%ecx,8)
    addl $4096, %eax
    incl %ecx
    cmpl $4, %ecx
    jb 1b

    /* 2048 entries of 2 MiB: present, writable, page size. */
    xorl %ecx, %ecx
2:
    movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, {pd}(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jb 2b

    /* CR4.PAE, CR3, EFER.LME, then CR0.PG|PE: long mode (Intel SDM vol. 3, 10.8.5). */
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl ${pml4}, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0

    lgdt boot_gdt_pointer
    ljmp $0x08, $3f

    .code64
3:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot_stack_top, %rsp

    /* SSE for the loaded Windows image's code (the guest's own Rust is soft-float): CR0.EM
       off, CR0.MP on, CR4.OSFXSR and CR4.OSXMMEXCPT on (Intel SDM vol. 3, 13.1.4). */
    movq %cr0, %rax
    andq $-5, %rax
    orq $2, %rax
    movq %rax, %cr0
    movq %cr4, %rax
    orq $0x600, %rax
    movq %rax, %cr4
    fninit

    /* Gates for every vector with a handler in the table: 64-bit interrupt gates (type 0xE),
       selector 0x08, present. Vectors without one stay not-present (a #NP if raised). */
    leaq boot_idt(%rip), %rdi
    leaq gate_table(%rip), %r8
    xorl %ecx, %ecx
4:
    movq (%r8,%rcx,8), %rax
    testq %rax, %rax
    jz 7f
    movw %ax, (%rdi)
    movw $0x08, 2(%rdi)
    movw $0x8e00, 4(%rdi)
    shrq $16, %rax
    movw %ax, 6(%rdi)
    shrq $16, %rax
    movl %eax, 8(%rdi)
    movl $0, 12(%rdi)
7:
    addq $16, %rdi
    incl %ecx
    cmpl $256, %ecx
    jb 4b
    lidt boot_idt_pointer(%rip)

    movl %esi, %edi
    call {kmain}
5:
    hlt
    jmp 5b

    /* One stub per exception vector; those without a CPU error code push a zero. */
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
exception_stub_\vector:
    .if (\vector == 8) || ((\vector >= 10) && (\vector <= 14)) || (\vector == 17) || (\vector == 21) || (\vector == 29) || (\vector == 30)
    .else
    pushq $0
    .endif
    pushq $\vector
    jmp exception_common
    .endr

exception_common:
    movq (%rsp), %rdi
    movq 8(%rsp), %rsi
    movq 16(%rsp), %rdx
    movq %cr2, %rcx
    andq $-16, %rsp
    call {exception}
6:
    hlt
    jmp 6b

    /* Interrupt stubs: save the caller-saved registers (the target has no SSE state), call
       the Rust handler with the vector, restore, return. Nine pushes after the CPU's five
       leave the stack 16-byte aligned for the call. */
    .irp vector, 64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79
interrupt_stub_\vector:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    movl $\vector, %edi
    call {interrupt}
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    iretq
    .endr

    /* The local APIC's spurious vector needs no EOI (Intel SDM vol. 3, 11.9). */
spurious_stub:
    iretq

    .section .rodata.gate_table, "a"
    .p2align 3
gate_table:
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exception_stub_\vector
    .endr
    .fill 32, 8, 0
    .irp vector, 64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79
    .quad interrupt_stub_\vector
    .endr
    .fill 175, 8, 0
    .quad spurious_stub
    .text
"#,
    stack_size = const STACK_SIZE,
    pml4 = sym BOOT_PML4,
    pdpt = sym BOOT_PDPT,
    pd = sym BOOT_PD,
    kmain = sym super::kmain,
    exception = sym exception,
    interrupt = sym super::interrupts::interrupt,
    options(att_syntax)
);

/// Called by the exception stubs: reports the CPU exception on the serial port and fails the run.
extern "C" fn exception(vector: u64, error_code: u64, rip: u64, cr2: u64) -> ! {
    super::println!("EXCEPTION vector {vector} error {error_code:#x} rip {rip:#x} cr2 {cr2:#x}");
    super::exit::exit(super::exit::ExitCode::Failure)
}
