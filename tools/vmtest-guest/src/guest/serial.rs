//! COM1 (the 16550 UART at 0x3F8): the guest's only output, read by `cargo xtask vmtest`, and
//! the host's go signals for the two-node sequence.

use core::fmt;

use super::port;

/// COM1's base port on the PC.
const COM1: u16 = 0x3f8;
/// Line status register offset; bit 5 is "transmit holding register empty".
const LINE_STATUS: u16 = 5;
const TRANSMIT_EMPTY: u8 = 1 << 5;
/// Line status bit 0: "data ready", a received byte waits in the receive buffer.
const DATA_READY: u8 = 1 << 0;

/// Programs COM1 for 115200 baud, 8 data bits, no parity, one stop bit, FIFOs on.
pub fn init() {
    let program = [
        (1, 0x00), // interrupt enable: none
        (3, 0x80), // line control: DLAB, to reach the divisor latch
        (0, 0x01), // divisor low: 115200 / 1
        (1, 0x00), // divisor high
        (3, 0x03), // line control: 8N1, DLAB off
        (2, 0xc7), // FIFO control: enable and clear, 14-byte threshold
        (4, 0x03), // modem control: DTR, RTS
    ];
    for (offset, value) in program {
        // SAFETY: COM1 is the UART of QEMU's PC machine; its registers start no DMA.
        unsafe { port::out8(COM1 + offset, value) };
    }
}

/// Writes one byte, waiting for room in the transmitter.
fn write_byte(byte: u8) {
    loop {
        // SAFETY: reading COM1's line status has no side effects.
        let status = unsafe { port::in8(COM1 + LINE_STATUS) };
        if status & TRANSMIT_EMPTY != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: writing COM1's transmit register only sends the byte.
    unsafe { port::out8(COM1, byte) };
}

/// Takes one byte the host sent (QEMU's `-serial stdio` feeds its standard input to COM1),
/// if one is waiting.
pub fn try_read() -> Option<u8> {
    // SAFETY: reading COM1's line status has no side effects.
    let status = unsafe { port::in8(COM1 + LINE_STATUS) };
    if status & DATA_READY == 0 {
        return None;
    }
    // SAFETY: with DLAB off, reading COM1's base register takes the received byte; nothing
    // else reads it.
    Some(unsafe { port::in8(COM1) })
}

/// A [`fmt::Write`] sink on COM1 (`\n` becomes `\r\n`).
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if byte == b'\n' {
                write_byte(b'\r');
            }
            write_byte(byte);
        }
        Ok(())
    }
}

/// The CPU writing a line (its APIC ID), or `u32::MAX`.
static LINE_OWNER: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(u32::MAX);

/// Runs `write` with COM1 to this CPU alone, so that lines from two CPUs do not interleave:
/// interrupts are masked meanwhile (a handler's line waits for this one), and a CPU already
/// writing (an exception while printing) writes on rather than waiting for itself.
pub fn line(write: impl FnOnce(&mut Serial)) {
    use core::sync::atomic::Ordering;
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack and masks maskable interrupts on this CPU; they
    // are restored below.
    unsafe {
        core::arch::asm!("pushfq", "pop {}", "cli", out(reg) flags, options(preserves_flags));
    }
    let me = super::interrupts::apic_id();
    let mut owned = false;
    loop {
        match LINE_OWNER.compare_exchange_weak(u32::MAX, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                owned = true;
                break;
            }
            Err(holder) if holder == me => break,
            Err(_) => core::hint::spin_loop(),
        }
    }
    write(&mut Serial);
    if owned {
        LINE_OWNER.store(u32::MAX, Ordering::Release);
    }
    if flags & (1 << 9) != 0 {
        // SAFETY: interrupts were enabled on entry; every deliverable vector has a gate.
        unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    }
}
