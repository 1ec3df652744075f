//! The kernel stack a loaded image runs on: every call into the image ([`enter_image`]) runs on
//! a per-thread stack of [`IMAGE_STACK_BYTES`] (an x64 kernel stack) below a guard page, and
//! every call the image makes back into the simulator ([`on_host_stack`]) switches to the
//! thread's own stack, so the image stack holds the image's frames alone. The stack is painted
//! before each outermost entry and scanned after it; the deepest word touched is the entry
//! point's high-water mark ([`high_water`]), and a mark above [`STACK_LIMIT_BYTES`] fails.
//!
//! The `unsafe` here is the stack switch itself (a few lines of inline assembly) and the
//! painting and scanning of the thread's own image stack.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;

use super::PAGE_SIZE;

/// The image stack: 24 KiB, an x64 kernel stack (shared there with StorPort and everything
/// above the miniport, hence the lower limit below).
pub const IMAGE_STACK_BYTES: usize = 24 * 1024;
/// The most stack one entry point of the image may use: half the kernel stack.
pub const STACK_LIMIT_BYTES: usize = 12 * 1024;
/// The word the unused image stack is painted with.
const PAINT: u64 = 0x5354_4143_4B5F_5041; // "STACK_PA"

/// What one entry point of the image used, over every call of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HighWater {
    /// Calls measured.
    pub calls: u64,
    /// Deepest stack use in bytes, from the stack pointer the routine was called with to the
    /// deepest word written: the image's frames, and below an image call into the simulator
    /// the import shim's first frames (at most `shim_bytes`), so an upper bound.
    pub bytes: usize,
    /// Deepest stack use at a call the image made into the simulator (to its return-address
    /// slot): exact, and a lower bound of `bytes`.
    pub at_import: usize,
    /// The most the simulator's import shim frames took below an image call.
    pub shim_bytes: usize,
}

/// Per-entry-point statistics.
static HIGH_WATER: Mutex<BTreeMap<&'static str, HighWater>> = Mutex::new(BTreeMap::new());

/// The image stack of one thread and where each side of the switch stands.
struct ThreadStack {
    /// Lowest usable address (just above the guard page).
    bottom: usize,
    /// One past the highest usable address, 16-aligned.
    top: usize,
    /// The host stack pointer saved by the innermost switch to the image stack.
    host_sp: Cell<usize>,
    /// The image stack pointer saved by the innermost switch back to the host.
    image_sp: Cell<usize>,
    /// Whether this thread is running on the image stack now.
    on_image: Cell<bool>,
    /// Image entries live on this thread (nested ones run while the image waits on the host).
    depth: Cell<u32>,
    /// The lowest address painted and not yet scanned (`top` when all is clean).
    dirty_from: Cell<usize>,
    /// The stack pointer from which the outermost entry called the image's routine (its
    /// return address is stored just below): the image's usage is measured from here.
    call_sp: Cell<usize>,
    /// The outermost entry's deepest image stack pointer at a call into the simulator (its
    /// return-address slot), exactly.
    deepest_import_call: Cell<usize>,
    /// The most bytes the simulator's import shim frames took below an image call.
    shim_bytes: Cell<usize>,
}

impl ThreadStack {
    fn new() -> Self {
        let len = IMAGE_STACK_BYTES + PAGE_SIZE;
        // SAFETY: an anonymous private mapping at an address of the kernel's choice touches no
        // existing memory.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            address != libc::MAP_FAILED,
            "image stack: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the lowest page of this thread's own fresh mapping becomes the guard page;
        // nothing lives there.
        let status = unsafe { libc::mprotect(address, PAGE_SIZE, libc::PROT_NONE) };
        assert_eq!(
            status,
            0,
            "image stack guard: {}",
            std::io::Error::last_os_error()
        );
        let bottom = address.addr() + PAGE_SIZE;
        let stack = Self {
            bottom,
            top: bottom + IMAGE_STACK_BYTES,
            host_sp: Cell::new(0),
            image_sp: Cell::new(0),
            on_image: Cell::new(false),
            depth: Cell::new(0),
            dirty_from: Cell::new(bottom),
            call_sp: Cell::new(0),
            deepest_import_call: Cell::new(0),
            shim_bytes: Cell::new(0),
        };
        stack.paint(bottom);
        stack
    }

    /// Paints `[from, top)` (a part of the stack no frame occupies).
    fn paint(&self, from: usize) {
        let words = (self.top - from) / 8;
        // SAFETY: `[from, top)` lies in this thread's image stack mapping, readable and
        // writable, and no frame is live on the image stack between outermost entries.
        let stack = unsafe {
            std::slice::from_raw_parts_mut(
                std::ptr::with_exposed_provenance_mut::<u64>(from),
                words,
            )
        };
        stack.fill(PAINT);
        self.dirty_from.set(self.top);
    }

    /// At an import call, on the host stack: finds the image's return address above the
    /// shim's frames (from the stack pointer saved at the switch), which is where the image's
    /// stack stood at the call.
    fn note_import_call(&self) {
        let shim_bottom = self.image_sp.get();
        let mut slot = shim_bottom;
        while slot + 8 <= self.top {
            // SAFETY: `slot` lies in this thread's image stack, between the stack pointer of
            // the live shim frame and the top, readable.
            let word = unsafe { std::ptr::with_exposed_provenance::<u64>(slot).read() };
            if super::is_import_return(word as usize) {
                if slot < self.deepest_import_call.get() {
                    self.deepest_import_call.set(slot);
                }
                self.shim_bytes
                    .set(self.shim_bytes.get().max(slot - shim_bottom));
                return;
            }
            slot += 8;
        }
    }

    /// The lowest address written since the last paint; `top` if none.
    fn deepest_touched(&self) -> usize {
        let words = (self.top - self.bottom) / 8;
        // SAFETY: the usable image stack of this thread, readable; the image has returned, so
        // no frame is live on it while it is read.
        let stack = unsafe {
            std::slice::from_raw_parts(std::ptr::with_exposed_provenance::<u64>(self.bottom), words)
        };
        stack
            .iter()
            .position(|&word| word != PAINT)
            .map_or(self.top, |index| self.bottom + index * 8)
    }
}

impl Drop for ThreadStack {
    fn drop(&mut self) {
        // SAFETY: the thread is exiting, so no frame is live on its image stack; the mapping
        // (guard page included) is this structure's own.
        unsafe {
            libc::munmap(
                std::ptr::with_exposed_provenance_mut(self.bottom - PAGE_SIZE),
                IMAGE_STACK_BYTES + PAGE_SIZE,
            );
        }
    }
}

thread_local! {
    static STACK: ThreadStack = ThreadStack::new();
}

/// Runs `body` with the stack pointer at `stack_top` (16-aligned), saving the current stack
/// pointer in `*saved_sp` first, and returns to the current stack afterwards.
///
/// # Safety
/// `stack_top` is the top of a writable stack region deep enough for `body`, with nothing live
/// below it; `saved_sp` is writable.
unsafe fn call_on_stack(stack_top: usize, saved_sp: *mut usize, body: &mut dyn FnMut()) {
    /// Calls the closure `data` points at, on whatever stack it is called.
    extern "C" fn trampoline(data: *mut &mut dyn FnMut()) {
        // SAFETY: `data` is the pointer `call_on_stack` passes, to a closure reference alive
        // for the whole call.
        let body = unsafe { &mut *data };
        body();
    }
    let mut body = body;
    let data: *mut &mut dyn FnMut() = &raw mut body;
    // SAFETY: r12 (callee-saved, so the trampoline preserves it) keeps the old stack pointer
    // across the call on the new stack, which the caller guarantees is usable; the call is
    // made 16-aligned as both conventions require, and every caller-saved register is
    // declared clobbered.
    unsafe {
        std::arch::asm!(
            "mov qword ptr [{saved}], rsp",
            "mov r12, rsp",
            "mov rsp, {top}",
            "call {trampoline}",
            "mov rsp, r12",
            saved = in(reg) saved_sp,
            top = in(reg) stack_top & !15,
            trampoline = sym trampoline,
            in("rdi") data,
            out("r12") _,
            clobber_abi("C"),
        );
    }
}

/// Runs `f`, a call into a loaded image's code labelled `entry` (for the high-water table), on
/// the image stack: from its top when this is the outermost entry, or below the image frames
/// still live (an image routine the simulator calls while serving the image's own call, as
/// StorPortSynchronizeAccess does) otherwise.
///
/// # Panics
/// If the outermost call used more than [`STACK_LIMIT_BYTES`] of stack.
pub fn enter_image<R>(entry: &'static str, f: impl FnOnce() -> R) -> R {
    STACK.with(|stack| {
        let outermost = stack.depth.get() == 0;
        let start = if outermost {
            if stack.dirty_from.get() < stack.top {
                stack.paint(stack.dirty_from.get());
            }
            stack.call_sp.set(0);
            stack.deepest_import_call.set(stack.top);
            stack.shim_bytes.set(0);
            // A margin above the first frame, so that nothing reads past the mapping.
            stack.top - 64
        } else {
            // Below the image's frames and the switch's own, with a margin.
            stack.image_sp.get() - 256
        };
        let mut f = Some(f);
        let mut result = None;
        let saved_host = stack.host_sp.get();
        let mut body = || {
            if let Some(f) = f.take() {
                result = Some(f());
            }
        };
        let was_on_image = stack.on_image.replace(true);
        stack.depth.set(stack.depth.get() + 1);
        let slot = stack.host_sp.as_ptr();
        // SAFETY: `start` is the top of this thread's image stack (outermost), or lies below
        // every live image frame (nested); the stack is mapped and guarded below.
        unsafe { call_on_stack(start, slot, &mut body) };
        stack.depth.set(stack.depth.get() - 1);
        stack.on_image.set(was_on_image);
        stack.host_sp.set(saved_host);
        if outermost {
            let deepest = stack.deepest_touched();
            stack.dirty_from.set(deepest);
            let from = match stack.call_sp.get() {
                0 => stack.top,
                sp => sp,
            };
            let used = from.saturating_sub(deepest);
            let at_import = from.saturating_sub(stack.deepest_import_call.get());
            record(
                entry,
                HighWater {
                    calls: 1,
                    bytes: used,
                    at_import,
                    shim_bytes: stack.shim_bytes.get(),
                },
            );
            assert!(
                used <= STACK_LIMIT_BYTES,
                "{entry} used {used} bytes of the image stack, above the {STACK_LIMIT_BYTES}-byte limit"
            );
        }
        result.expect("the image call ran")
    })
}

/// Runs `f`, the simulator's side of a call the image made, on the thread's own stack (the
/// one the image was entered from), so the image stack keeps the image's frames alone; runs it
/// in place when the thread is not on the image stack.
///
/// # Panics
/// Only if the switched-to stack did not run `f`, which the switch always does.
pub fn on_host_stack<R>(f: impl FnOnce() -> R) -> R {
    STACK.with(|stack| {
        if !stack.on_image.get() {
            return f();
        }
        let mut f = Some(f);
        let mut result = None;
        let mut body = || {
            // On the host stack now, so the image stack is left as the image and the shim
            // made it.
            stack.note_import_call();
            if let Some(f) = f.take() {
                result = Some(f());
            }
        };
        let saved_image = stack.image_sp.get();
        // The host frames live above the saved host stack pointer; leave a margin below it.
        let host_top = stack.host_sp.get() - 256;
        stack.on_image.set(false);
        let slot = stack.image_sp.as_ptr();
        // SAFETY: nothing of the host lives below the stack pointer saved when it switched to
        // the image stack, and the thread's own stack extends far below it.
        unsafe { call_on_stack(host_top, slot, &mut body) };
        stack.on_image.set(true);
        stack.image_sp.set(saved_image);
        result.expect("the host call ran")
    })
}

/// `void rvscsi_sim_on_host_stack(void (*body)(void *), void *context)`: [`on_host_stack`] for
/// the C half of the variadic exports.
#[unsafe(no_mangle)]
pub extern "C" fn rvscsi_sim_on_host_stack(
    body: extern "C" fn(*mut std::ffi::c_void),
    context: *mut std::ffi::c_void,
) {
    on_host_stack(|| body(context));
}

fn record(entry: &'static str, call: HighWater) {
    let mut table = HIGH_WATER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let slot = table.entry(entry).or_default();
    slot.calls += call.calls;
    slot.bytes = slot.bytes.max(call.bytes);
    slot.at_import = slot.at_import.max(call.at_import);
    slot.shim_bytes = slot.shim_bytes.max(call.shim_bytes);
}

/// Every entry point entered so far in this process, by label.
#[must_use]
pub fn high_water() -> Vec<(&'static str, HighWater)> {
    HIGH_WATER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(&entry, &water)| (entry, water))
        .collect()
}

/// The high-water table as lines `rvscsi-image-stack: <entry>\t<calls>\t<bytes>\t<at
/// import>\t<shim bytes>`, the format `cargo xtask sim-image` merges across test binaries.
#[must_use]
pub fn table_lines() -> Vec<String> {
    high_water()
        .into_iter()
        .map(|(entry, water)| {
            format!(
                "rvscsi-image-stack: {entry}\t{}\t{}\t{}\t{}",
                water.calls, water.bytes, water.at_import, water.shim_bytes
            )
        })
        .collect()
}

/// Records the stack pointer the outermost entry calls the image's routine from; call it
/// right before that call, in the frame that makes it (it is inlined there).
#[allow(
    clippy::inline_always,
    reason = "the stack pointer must be read in the caller's frame, so even unoptimised"
)]
#[inline(always)]
pub fn note_call_site() {
    let sp: usize;
    // SAFETY: reads the stack pointer; no memory is touched.
    unsafe {
        std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags));
    };
    STACK.with(|stack| {
        if stack.depth.get() == 1 && stack.call_sp.get() == 0 {
            stack.call_sp.set(sp);
        }
    });
}

/// Prints [`table_lines`] to stderr when the process exits (once, however often called): the
/// test harness has no hook after its last test, and the table covers them all.
pub fn report_at_exit() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    extern "C" fn print_table() {
        for line in table_lines() {
            eprintln!("{line}");
        }
    }
    REGISTERED.call_once(|| {
        // SAFETY: registers a function with no preconditions, run once at exit.
        let _ = unsafe { libc::atexit(print_table) };
    });
}
