//! Device interrupts: the local APIC, per-vector counts of the MSI-X messages that arrive, and
//! sleeping until one does.
//!
//! Completions wait here: the driver sleeps (`sti; hlt`) until its queue's vector count moves.
//! The APIC timer ticks on a vector of its own so that a sleep always ends, and a wait that sees
//! too many ticks gives up (a lost interrupt fails the run rather than hanging it). The host
//! compares what the guest received on each queue's vector with what QEMU says it sent
//! (`virtio_notify`).

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// First vector the boot code routes here (the MSI-X table's entry 0).
pub const FIRST_VECTOR: u8 = 0x40;
/// Number of vectors routed here.
const VECTORS: usize = 16;
/// The APIC timer's vector: the last one routed here (the device uses the first nine).
const TIMER_VECTOR: u8 = FIRST_VECTOR + VECTORS as u8 - 1;
/// Local vector table entry of the timer, and its periodic-mode bit (Intel SDM vol. 3, 11.5.1).
const APIC_LVT_TIMER: usize = 0x320;
const APIC_TIMER_PERIODIC: u32 = 1 << 17;
/// Timer initial-count and divide-configuration registers (Intel SDM vol. 3, 11.5.4).
const APIC_TIMER_INITIAL_COUNT: usize = 0x380;
const APIC_TIMER_DIVIDE: usize = 0x3e0;
/// Divide configuration 0b0011: the bus clock divided by 16.
const APIC_TIMER_DIVIDE_BY_16: u32 = 0b0011;
/// Timer period in divided bus cycles: QEMU's APIC bus runs at 1 GHz (`APIC_BUS_CYCLE_NS`),
/// so this is 100 ms (under a slower clock, longer, which only lengthens the limit below).
const APIC_TIMER_COUNT: u32 = 6_250_000;
/// Timer ticks a wait may see before it gives up: about 20 seconds, far beyond any request
/// under TCG (the slowest, a 32 MiB transfer, takes well under a second) and inside the host's
/// two-minute silence limit.
const WAIT_LIMIT_TICKS: u64 = 200;
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
    apic_write(APIC_TIMER_DIVIDE, APIC_TIMER_DIVIDE_BY_16);
    apic_write(
        APIC_LVT_TIMER,
        APIC_TIMER_PERIODIC | u32::from(TIMER_VECTOR),
    );
    // Writing the initial count starts the timer.
    apic_write(APIC_TIMER_INITIAL_COUNT, APIC_TIMER_COUNT);
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

/// Timer ticks so far.
pub fn ticks() -> u64 {
    count(u16::from(TIMER_VECTOR))
}

/// The timer's current-count register (Intel SDM vol. 3, 11.5.4).
const APIC_TIMER_CURRENT_COUNT: usize = 0x390;
/// Nanoseconds per divided bus cycle: QEMU's 1 GHz APIC bus divided by 16.
const NANOS_PER_COUNT: u64 = 16;

/// Reads a local APIC register.
fn apic_read(register: usize) -> u32 {
    // SAFETY: as for `apic_write`: an architectural, identity-mapped, uncached register.
    unsafe { core::ptr::read_volatile((APIC_BASE + register) as *const u32) }
}

/// Nanoseconds of guest time since the timer started, at the timer's resolution (16 ns): whole
/// periods from the tick count, the current period from the timer's current count. Read twice
/// around the count so a tick in between is not lost. For figures only (under TCG, QEMU's
/// virtual clock follows the host's).
pub fn now_nanos() -> u64 {
    loop {
        let before = ticks();
        let current = u64::from(apic_read(APIC_TIMER_CURRENT_COUNT));
        if ticks() == before {
            let into_period = u64::from(APIC_TIMER_COUNT).saturating_sub(current);
            return (before * u64::from(APIC_TIMER_COUNT) + into_period) * NANOS_PER_COUNT;
        }
    }
}

/// Sleeps until the count of `vector` differs from `seen` and returns it, or `None` after
/// [`WAIT_LIMIT_TICKS`] timer ticks.
pub fn wait(vector: u16, seen: u64) -> Option<u64> {
    let start = ticks();
    loop {
        // Hold interrupts off between the check and the sleep: one arriving in between stays
        // pending and ends the `hlt` instead of being taken before it and sleeping a whole
        // timer period. (No `nomem`: the asm orders the counter loads around it.)
        // SAFETY: `cli` only masks maskable interrupts on this CPU; they are re-enabled below
        // on every path.
        unsafe { asm!("cli", options(nostack)) };
        let now = count(vector);
        let waited = ticks().wrapping_sub(start);
        if now != seen || waited > WAIT_LIMIT_TICKS {
            // SAFETY: as in `enable`: every deliverable vector has a gate.
            unsafe { asm!("sti", options(nostack)) };
            return (now != seen).then_some(now);
        }
        // SAFETY: `sti` takes effect after the next instruction (Intel SDM vol. 2, STI), so an
        // interrupt pending since the check is taken in the `hlt` and wakes it; the timer
        // wakes it at the latest.
        unsafe { asm!("sti", "hlt", options(nostack)) };
    }
}

/// Polls `ready` until it returns a value, sleeping between polls until the next interrupt
/// (the APIC timer's tick at the latest), and gives up after `limit` ticks. For sources that
/// do not interrupt, such as the UART's receive buffer: a value that arrives just before a
/// sleep waits for the next tick.
pub fn sleep_until<T>(limit: u64, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let start = ticks();
    loop {
        if let Some(value) = ready() {
            return Some(value);
        }
        if ticks().wrapping_sub(start) > limit {
            return None;
        }
        // SAFETY: interrupts are enabled (`enable` ran), so the timer ends the `hlt`; the
        // handlers preserve all state they touch.
        unsafe { asm!("sti", "hlt", options(nostack)) };
    }
}

/// Called by the boot code's interrupt stubs with the vector number.
pub extern "C" fn interrupt(vector: u64) {
    let index = usize::try_from(vector)
        .unwrap_or(usize::MAX)
        .wrapping_sub(usize::from(FIRST_VECTOR));
    if let Some(count) = COUNTS.get(index) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    // A device vector goes to the loaded image's message routine when the guest's StorPort
    // has connected it (`mode=image`), before the EOI as on Windows.
    if vector != u64::from(TIMER_VECTOR) {
        super::storport::interrupt(vector as u8);
    }
    apic_write(APIC_EOI, 0);
}

/// The driver's view of these interrupts, by MSI-X table entry (entry `n` is vector
/// [`FIRST_VECTOR`] + `n`).
pub struct MsixInterrupts;

impl vmtest_guest::driver::Interrupts for MsixInterrupts {
    fn count(&self, entry: u16) -> u64 {
        count(u16::from(FIRST_VECTOR).saturating_add(entry))
    }

    fn wait(&self, entry: u16, seen: u64) -> Option<u64> {
        wait(u16::from(FIRST_VECTOR).saturating_add(entry), seen)
    }
}
