//! Leaving QEMU through the isa-debug-exit device (`-device isa-debug-exit,iobase=0xf4,iosize=4`).
//!
//! A write of `v` to the port makes QEMU exit with status `(v << 1) | 1`, so the guest cannot
//! produce status 0; the host expects [`ExitCode::Success`]'s status, 33.

use super::port;

/// The isa-debug-exit port.
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// How the guest run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Every step passed: QEMU exits with status 33.
    Success = 0x10,
    /// A step failed, or the guest panicked or faulted: QEMU exits with status 35.
    Failure = 0x11,
}

/// Exits QEMU with `code`; halts forever if the device is missing.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: isa-debug-exit only terminates QEMU; without the device the write is ignored.
    unsafe { port::out32(DEBUG_EXIT_PORT, code as u32) };
    loop {
        // SAFETY: `cli; hlt` stops this CPU for good, which is the intent when QEMU did not exit.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
