//! The second CPU (`-smp 2`): started by INIT-SIPI-SIPI through the boot code's real-mode
//! trampoline, then handed one task at a time.
//!
//! The trampoline ([`super::boot`]) is copied to [`TRAMPOLINE`], below 1 MiB where a start-up
//! IPI can point (its vector is the page number), and takes the CPU from real mode to long
//! mode on the boot page tables; [`ap_main`] then enables its local APIC (with a timer of its
//! own, so that its sleeps end) and waits for tasks from [`run_on_second`].

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::interrupts;

/// Where the trampoline is copied: page 8, free low memory once the boot information was read.
pub const TRAMPOLINE: usize = 0x8000;
/// Bytes of the second CPU's stack.
const AP_STACK_SIZE: usize = 256 * 1024;
/// ICR: INIT and start-up delivery modes, level assert, to all but this CPU (Intel SDM vol. 3,
/// 11.6.1); with `-smp 2` that is the second CPU.
const ICR_INIT_OTHERS: u32 = 0x000c_4500;
const ICR_STARTUP_OTHERS: u32 = 0x000c_4600;
/// How long INIT is held before the first start-up IPI, and the wait between the two (Intel SDM
/// vol. 3, 8.4.4.1), and how long the second CPU may take to report.
const INIT_WAIT_NANOS: u64 = 10_000_000;
const STARTUP_WAIT_NANOS: u64 = 200_000;
const ONLINE_LIMIT_NANOS: u64 = 2_000_000_000;

/// The second CPU's stack.
#[repr(C, align(16))]
struct ApStack(UnsafeCell<[u8; AP_STACK_SIZE]>);

// SAFETY: only the second CPU uses the area, as its stack; Rust never references it.
unsafe impl Sync for ApStack {}

static AP_STACK: ApStack = ApStack(UnsafeCell::new([0; AP_STACK_SIZE]));
/// The stack pointer the trampoline loads (read by the boot code's `ap_entry`).
pub static AP_STACK_TOP: AtomicU64 = AtomicU64::new(0);
/// The second CPU's APIC ID once it runs Rust; `u32::MAX` until then.
static AP_ONLINE: AtomicU32 = AtomicU32::new(u32::MAX);
/// The task for the second CPU (a `fn()` address), 0 when it has none.
static AP_TASK: AtomicUsize = AtomicUsize::new(0);
/// Tasks the second CPU finished.
static AP_FINISHED: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    /// The trampoline's first and past-the-last bytes (boot.rs).
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// Why the second CPU did not start.
#[derive(Clone, Copy, Debug)]
pub enum SmpError {
    /// The trampoline is larger than its page.
    TrampolineTooLarge(usize),
    /// No CPU reported within [`ONLINE_LIMIT_NANOS`] (one CPU only, or it failed on the way).
    NoSecondCpu,
}

impl core::fmt::Display for SmpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TrampolineTooLarge(len) => write!(f, "the trampoline is {len} bytes"),
            Self::NoSecondCpu => write!(f, "no second CPU came up"),
        }
    }
}

/// Copies the trampoline low, starts the second CPU with INIT-SIPI-SIPI and waits until it
/// runs Rust; returns its APIC ID. Needs the first CPU's APIC timer running
/// ([`interrupts::enable`]) for the waits.
///
/// # Errors
/// [`SmpError`].
pub fn start_second_cpu() -> Result<u32, SmpError> {
    let start = core::ptr::addr_of!(ap_trampoline_start).addr();
    let len = core::ptr::addr_of!(ap_trampoline_end).addr() - start;
    if len > 4096 {
        return Err(SmpError::TrampolineTooLarge(len));
    }
    // SAFETY: the trampoline's bytes are in the guest's read-only data; page 8 is
    // identity-mapped low RAM that nothing uses once kmain has read the boot information
    // (QEMU's PVH boot places it elsewhere and the command line was copied).
    unsafe {
        core::ptr::copy_nonoverlapping(
            core::ptr::with_exposed_provenance::<u8>(start),
            core::ptr::with_exposed_provenance_mut::<u8>(TRAMPOLINE),
            len,
        );
    }
    let top = AP_STACK.0.get().addr() + AP_STACK_SIZE;
    AP_STACK_TOP.store(top as u64, Ordering::Release);
    interrupts::send_ipi(ICR_INIT_OTHERS);
    pause_nanos(INIT_WAIT_NANOS);
    let startup = ICR_STARTUP_OTHERS | (TRAMPOLINE >> 12) as u32;
    interrupts::send_ipi(startup);
    pause_nanos(STARTUP_WAIT_NANOS);
    if AP_ONLINE.load(Ordering::Acquire) == u32::MAX {
        interrupts::send_ipi(startup);
    }
    let began = interrupts::now_nanos();
    loop {
        let id = AP_ONLINE.load(Ordering::Acquire);
        if id != u32::MAX {
            return Ok(id);
        }
        if interrupts::now_nanos().saturating_sub(began) > ONLINE_LIMIT_NANOS {
            return Err(SmpError::NoSecondCpu);
        }
        core::hint::spin_loop();
    }
}

/// Busy-waits `nanos` of the APIC clock.
fn pause_nanos(nanos: u64) {
    let began = interrupts::now_nanos();
    while interrupts::now_nanos().saturating_sub(began) < nanos {
        core::hint::spin_loop();
    }
}

/// Hands `task` to the second CPU (which must be idle: see [`second_finished`]).
pub fn run_on_second(task: fn()) {
    AP_TASK.store(task as usize, Ordering::Release);
}

/// Whether the second CPU has finished `count` tasks in all.
pub fn second_finished(count: u64) -> bool {
    AP_FINISHED.load(Ordering::Acquire) >= count
}

/// The second CPU's Rust entry (from the boot code's `ap_entry`): its local APIC, then tasks.
pub extern "C" fn ap_main() -> ! {
    interrupts::enable_secondary();
    AP_ONLINE.store(interrupts::apic_id(), Ordering::Release);
    loop {
        let task = AP_TASK.load(Ordering::Acquire);
        if task == 0 {
            core::hint::spin_loop();
            continue;
        }
        // SAFETY: `run_on_second` stored a `fn()`'s address; nothing else writes AP_TASK.
        let task = unsafe { core::mem::transmute::<usize, fn()>(task) };
        task();
        AP_TASK.store(0, Ordering::Release);
        AP_FINISHED.fetch_add(1, Ordering::AcqRel);
    }
}
