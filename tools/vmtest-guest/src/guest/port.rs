//! x86 port I/O, the one place the guest executes `in` and `out`.
//!
//! The `asm!` blocks are not `nomem`: the compiler treats each as touching memory, so it keeps
//! DMA-memory stores before a port write and DMA-memory loads after a port read (the same
//! ordering the MMIO path gets from its compiler fences; x86 port I/O is serialising in
//! hardware).

use core::arch::asm;

/// Writes a byte to I/O port `port`.
///
/// # Safety
/// The port must belong to a device whose reaction to this write does not break memory safety
/// (it must not, for example, start DMA into memory the program uses).
pub unsafe fn out8(port: u16, value: u8) {
    // SAFETY: the caller vouches for the device's reaction; `out` touches no memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nostack, preserves_flags));
    };
}

/// Writes a 16-bit value to I/O port `port`.
///
/// # Safety
/// As for [`out8`].
pub unsafe fn out16(port: u16, value: u16) {
    // SAFETY: as in `out8`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nostack, preserves_flags));
    };
}

/// Writes a 32-bit value to I/O port `port`.
///
/// # Safety
/// As for [`out8`].
pub unsafe fn out32(port: u16, value: u32) {
    // SAFETY: as in `out8`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags));
    };
}

/// Reads a byte from I/O port `port`.
///
/// # Safety
/// As for [`out8`]: reads of some registers have side effects.
pub unsafe fn in8(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as in `out8`.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nostack, preserves_flags));
    };
    value
}

/// Reads a 16-bit value from I/O port `port`.
///
/// # Safety
/// As for [`in8`].
pub unsafe fn in16(port: u16) -> u16 {
    let value: u16;
    // SAFETY: as in `out8`.
    unsafe {
        asm!("in ax, dx", in("dx") port, out("ax") value, options(nostack, preserves_flags));
    };
    value
}

/// Reads a 32-bit value from I/O port `port`.
///
/// # Safety
/// As for [`in8`].
pub unsafe fn in32(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as in `out8`.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") value, options(nostack, preserves_flags));
    };
    value
}
