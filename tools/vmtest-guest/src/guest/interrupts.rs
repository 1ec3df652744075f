//! Device interrupts: the local APIC, and per-vector counts of the MSI-X messages that arrive.
//!
//! The guest still polls for completions; interrupts only count, so the host can compare what
//! the guest received on each queue's vector with what QEMU says it sent (`virtio_notify`),
//! which checks the MSI-X routing set up through virtio-core end to end.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// First vector the boot code routes here (the MSI-X table's entry 0).
pub const FIRST_VECTOR: u8 = 0x40;
/// Number of vectors routed here.
const VECTORS: usize = 16;
/// The local APIC's registers at their reset address (Intel SDM vol. 3, 11.4.1), identity-mapped.
const APIC_BASE: usize = 0xfee0_0000;
/// Task priority register: 0 lets every vector through.
const APIC_TPR: usize = 0x80;
/// End-of-interrupt register.
const APIC_EOI: usize = 0xb0;
/// Spurious interrupt vector register: bit 8 enables the APIC; the low byte is the vector.
const APIC_SVR: usize = 0xf0;
const APIC_SOFTWARE_ENABLE: u32 = 1 << 8;
const SPURIOUS_VECTOR: u32 = 0xff;

/// Interrupts received per vector, from [`FIRST_VECTOR`].
static COUNTS: [AtomicU64; VECTORS] = [const { AtomicU64::new(0) }; VECTORS];

/// Writes a local APIC register.
fn apic_write(register: usize, value: u32) {
    // SAFETY: the local APIC's register page is at its architectural address, identity-mapped
    // (the boot code maps the low 4 GiB) and uncached by the firmware's MTRRs; `register` is one
    // of the 16-byte-aligned registers named above. APIC registers are not Rust memory.
    unsafe { core::ptr::write_volatile((APIC_BASE + register) as *mut u32, value) };
}

/// The 8259 PICs' interrupt mask registers (master, slave).
const PIC_MASKS: [u16; 2] = [0x21, 0xa1];

/// Masks the legacy PICs, enables the local APIC, then interrupts on this CPU.
pub fn enable() {
    // The firmware leaves the PICs routing the PIT's IRQ 0 to vector 8, the double-fault
    // vector; only MSI-X is wanted here.
    for port in PIC_MASKS {
        // SAFETY: writing a PIC's mask register only masks its interrupt lines.
        unsafe { super::port::out8(port, 0xff) };
    }
    apic_write(APIC_TPR, 0);
    apic_write(APIC_SVR, APIC_SOFTWARE_ENABLE | SPURIOUS_VECTOR);
    // SAFETY: the IDT has gates for every vector the APIC can deliver here (the device's
    // vectors and the spurious one), and the handlers preserve all state they touch.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Interrupts received on `vector` so far.
pub fn count(vector: u16) -> u64 {
    usize::from(vector)
        .checked_sub(usize::from(FIRST_VECTOR))
        .and_then(|index| COUNTS.get(index))
        .map_or(0, |count| count.load(Ordering::Relaxed))
}

/// Called by the boot code's interrupt stubs with the vector number.
pub extern "C" fn interrupt(vector: u64) {
    let index = usize::try_from(vector)
        .unwrap_or(usize::MAX)
        .wrapping_sub(usize::from(FIRST_VECTOR));
    if let Some(count) = COUNTS.get(index) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    apic_write(APIC_EOI, 0);
}
