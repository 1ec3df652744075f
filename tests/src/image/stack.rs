//! The kernel stack a loaded image runs on. Every call into the image ([`enter_image`]) runs
//! on a per-thread stack of [`IMAGE_STACK_BYTES`] (an x64 kernel stack) below a guard page, and
//! every call the image makes back into the simulator goes through an import thunk
//! (`import_thunk!`) that switches to the thread's own stack before anything else, writing
//! nothing on the image stack: that stack holds the image's frames alone. It is painted before
//! each outermost entry and scanned after it; the deepest word written is the entry point's
//! high-water mark ([`high_water`]), exact, and a mark above [`STACK_LIMIT_BYTES`] fails.
//!
//! The thunk finds its way back to the host stack without thread-local storage: each image
//! stack is a [`REGION_BYTES`]-aligned region (guard page, stack, control page), so the image's
//! stack pointer, rounded down, locates the [`Control`] page of its thread.
//!
//! The `unsafe` here is the stack switch (inline assembly), the mapping of the regions, and
//! the painting and scanning of the thread's own image stack.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;

use super::PAGE_SIZE;

/// The image stack: 24 KiB, an x64 kernel stack (shared there with StorPort and everything
/// above the miniport, hence the lower limit below).
pub const IMAGE_STACK_BYTES: usize = 24 * 1024;
/// The most stack one entry point of the image may use: half the kernel stack.
pub const STACK_LIMIT_BYTES: usize = 12 * 1024;
/// One image stack region: a guard page, the stack, the control page; aligned to its size.
pub const REGION_BYTES: usize = 32 * 1024;
/// Where the [`Control`] page starts in a region.
pub const CONTROL_OFFSET: usize = PAGE_SIZE + IMAGE_STACK_BYTES;
/// The word the unused image stack is painted with.
const PAINT: u64 = 0x5354_4143_4B5F_5041; // "STACK_PA"

const _: () = assert!(CONTROL_OFFSET + PAGE_SIZE == REGION_BYTES);
const _: () = assert!(REGION_BYTES.is_power_of_two());

/// What one entry point of the image used, over every call of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HighWater {
    /// Calls measured.
    pub calls: u64,
    /// Deepest stack use in bytes: from the stack pointer the routine was called with to the
    /// deepest word the image wrote, or its stack pointer at an import call if deeper.
    pub bytes: usize,
    /// Deepest stack use at a call the image made into the simulator (to its return address).
    pub at_import: usize,
}

/// Per-entry-point statistics.
static HIGH_WATER: Mutex<BTreeMap<&'static str, HighWater>> = Mutex::new(BTreeMap::new());

/// The control page of an image stack region, shared with the import thunk's assembly (the
/// field offsets are part of `import_thunk!`).
#[repr(C)]
pub struct Control {
    /// The host stack pointer saved by the innermost switch to the image stack: the thunk
    /// runs the simulator below it.
    host_sp: Cell<usize>,
    /// The image's deepest stack pointer at an import call (the thunk lowers it).
    deepest_import: Cell<usize>,
    /// The image's stack pointer at its latest import call (the thunk sets it), below which a
    /// nested entry may run.
    last_import: Cell<usize>,
}

/// The image stack of one thread.
struct ThreadStack {
    /// The whole mapping (for unmapping).
    mapping: usize,
    /// Lowest usable address (just above the guard page).
    bottom: usize,
    /// One past the highest usable address (the control page starts here).
    top: usize,
    /// The region's control page.
    control: &'static Control,
    /// Image entries live on this thread (nested ones run while the image waits on the host).
    depth: Cell<u32>,
    /// The lowest address written and not yet painted again (`top` when all is clean).
    dirty_from: Cell<usize>,
    /// The stack pointer from which the outermost entry called the image's routine (its
    /// return address is stored just below): the image's usage is measured from here.
    call_sp: Cell<usize>,
}

/// Bytes mapped per region: twice the region, so an aligned one fits.
const MAPPING_BYTES: usize = 2 * REGION_BYTES;

impl ThreadStack {
    fn new() -> Self {
        // SAFETY: an anonymous private mapping at an address of the kernel's choice touches no
        // existing memory.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAPPING_BYTES,
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
        let mapping = address.addr();
        let region = mapping.next_multiple_of(REGION_BYTES);
        // Everything but the stack and the control page is inaccessible: the guard page below
        // the stack, and the slack of the alignment on both sides.
        for (start, end) in [
            (mapping, region + PAGE_SIZE),
            (region + REGION_BYTES, mapping + MAPPING_BYTES),
        ] {
            if end > start {
                // SAFETY: a part of this thread's fresh mapping where nothing lives.
                let status = unsafe {
                    libc::mprotect(
                        std::ptr::with_exposed_provenance_mut(start),
                        end - start,
                        libc::PROT_NONE,
                    )
                };
                assert_eq!(
                    status,
                    0,
                    "image stack guard: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        let bottom = region + PAGE_SIZE;
        let top = region + CONTROL_OFFSET;
        // SAFETY: the control page is zeroed, readable and writable memory of this mapping,
        // which lives as long as the thread (unmapped in `drop`, after the last use); zero is
        // a valid `Cell<usize>`, and only this thread (and its thunks) use it.
        let control = unsafe { &*std::ptr::with_exposed_provenance::<Control>(top) };
        let stack = Self {
            mapping,
            bottom,
            top,
            control,
            depth: Cell::new(0),
            dirty_from: Cell::new(bottom),
            call_sp: Cell::new(0),
        };
        stack.paint();
        stack
    }

    /// Paints what was written since the last paint (no frame is live on the stack).
    fn paint(&self) {
        let from = self.dirty_from.get();
        let words = (self.top - from) / 8;
        // SAFETY: `[from, top)` lies in this thread's image stack, readable and writable, and
        // no frame is live on the image stack between outermost entries.
        let stack = unsafe {
            std::slice::from_raw_parts_mut(
                std::ptr::with_exposed_provenance_mut::<u64>(from),
                words,
            )
        };
        stack.fill(PAINT);
        self.dirty_from.set(self.top);
    }

    /// The lowest address written since the last paint; `top` if none.
    fn deepest_written(&self) -> usize {
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
        // SAFETY: the thread is exiting, so no frame is live on its image stack and nothing
        // uses the control page any more; the mapping is this structure's own.
        unsafe {
            libc::munmap(
                std::ptr::with_exposed_provenance_mut(self.mapping),
                MAPPING_BYTES,
            );
        }
    }
}

thread_local! {
    static STACK: ThreadStack = ThreadStack::new();
}

/// Runs `body` with the stack pointer at `stack_top` (rounded down to 16), saving the current
/// stack pointer in `*saved_sp` first, and returns to the current stack afterwards.
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
    // made 16-aligned as the convention requires, and every caller-saved register is
    // declared clobbered.
    #[cfg(target_arch = "x86_64")]
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
    // SAFETY: as above, with x20 (callee-saved) keeping the old stack pointer.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!(
            "mov x20, sp",
            "str x20, [{saved}]",
            "mov sp, {top}",
            "bl {trampoline}",
            "mov sp, x20",
            saved = in(reg) saved_sp,
            top = in(reg) stack_top & !15,
            trampoline = sym trampoline,
            in("x0") data,
            out("x20") _,
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
        let control = stack.control;
        let outermost = stack.depth.get() == 0;
        let start = if outermost {
            if stack.dirty_from.get() < stack.top {
                stack.paint();
            }
            stack.call_sp.set(0);
            control.deepest_import.set(stack.top);
            // A margin above the first frame: the thunk reads eight argument slots above the
            // image's stack pointer, whatever the callee takes.
            stack.top - 128
        } else {
            // Below the image's frames: the thunk left nothing under its stack pointer.
            control.last_import.get()
        };
        let mut f = Some(f);
        let mut result = None;
        let mut body = || {
            if let Some(f) = f.take() {
                result = Some(f());
            }
        };
        let saved_host = control.host_sp.get();
        let saved_last_import = control.last_import.get();
        stack.depth.set(stack.depth.get() + 1);
        // SAFETY: `start` is the top of this thread's image stack (outermost), or lies below
        // every live image frame (nested); the stack is mapped and guarded below; the control
        // page's host slot is writable.
        unsafe { call_on_stack(start, control.host_sp.as_ptr(), &mut body) };
        stack.depth.set(stack.depth.get() - 1);
        control.host_sp.set(saved_host);
        control.last_import.set(saved_last_import);
        if outermost {
            let deepest = stack.deepest_written();
            stack.dirty_from.set(deepest);
            let from = match stack.call_sp.get() {
                0 => stack.top,
                sp => sp,
            };
            let at_import = from.saturating_sub(control.deepest_import.get());
            // The stack pointer at an import call counts even where the image reserved more
            // than it wrote (an AArch64 frame's outgoing argument area).
            let used = from.saturating_sub(deepest).max(at_import);
            record(
                entry,
                HighWater {
                    calls: 1,
                    bytes: used,
                    at_import,
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

/// Records the stack pointer the outermost entry calls the image's routine from; call it
/// right before that call, in the frame that makes it (it is inlined there).
#[expect(
    clippy::inline_always,
    reason = "the stack pointer must be read in the caller's frame, so even unoptimised"
)]
#[inline(always)]
pub fn note_call_site() {
    let sp: usize;
    // SAFETY: reads the stack pointer; no memory is touched.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    // SAFETY: reads the stack pointer; no memory is touched.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    STACK.with(|stack| {
        if stack.depth.get() == 1 && stack.call_sp.get() == 0 {
            stack.call_sp.set(sp);
        }
    });
}

/// Defines `win64`, the Windows x64 entry point a loaded image's import is bound to: a naked
/// thunk that switches from the image stack to the host stack saved in the region's
/// [`Control`] page (recording the image's stack pointer there), copies the register
/// arguments (untouched) and eight stack argument slots, calls `$host` (an `extern "win64"`
/// function of the same signature, or more slots for a variadic one), and switches back. It
/// writes nothing on the image stack.
#[cfg(target_arch = "x86_64")]
macro_rules! import_thunk {
    ($host:path, fn($($argument:ident: $type:ty),*) $(-> $ret:ty)?) => {
        #[doc = "The entry point a loaded image's import is bound to (a stack-switching thunk)."]
        #[unsafe(naked)]
        pub extern "win64" fn win64($($argument: $type),*) $(-> $ret)? {
            core::arch::naked_asm!(
                // r10: the image's stack pointer (at its return address); rax: its control
                // page, from the stack pointer rounded down to the region.
                "mov r10, rsp",
                "mov rax, rsp",
                "and rax, {region_mask}",
                "add rax, {control}",
                "mov [rax + 16], r10",
                "cmp r10, [rax + 8]",
                "jae 2f",
                "mov [rax + 8], r10",
                "2:",
                // The host stack, below the frames of the simulator that entered the image.
                "mov r11, [rax]",
                "sub r11, 256",
                "and r11, -16",
                "mov rsp, r11",
                "push r10",
                // 8 for alignment, 32 of shadow space, 64 for eight stack arguments.
                "sub rsp, 104",
                "mov r11, [r10 + 40]",
                "mov [rsp + 32], r11",
                "mov r11, [r10 + 48]",
                "mov [rsp + 40], r11",
                "mov r11, [r10 + 56]",
                "mov [rsp + 48], r11",
                "mov r11, [r10 + 64]",
                "mov [rsp + 56], r11",
                "mov r11, [r10 + 72]",
                "mov [rsp + 64], r11",
                "mov r11, [r10 + 80]",
                "mov [rsp + 72], r11",
                "mov r11, [r10 + 88]",
                "mov [rsp + 80], r11",
                "mov r11, [r10 + 96]",
                "mov [rsp + 88], r11",
                "call {host}",
                "add rsp, 104",
                "pop rsp",
                "ret",
                region_mask = const !($crate::image::stack::REGION_BYTES - 1),
                control = const $crate::image::stack::CONTROL_OFFSET,
                host = sym $host,
            )
        }
    };
}
/// Defines `win64`, the Windows ARM64 entry point a loaded image's import is bound to: the
/// AArch64 form of the x64 thunk above (the image's stack pointer is its stack at the call,
/// the return address is in x30; x0-x7 pass untouched and eight stack argument slots are
/// copied; only the scratch registers x9, x10, x16 and x17 are used).
#[cfg(target_arch = "aarch64")]
macro_rules! import_thunk {
    ($host:path, fn($($argument:ident: $type:ty),*) $(-> $ret:ty)?) => {
        #[doc = "The entry point a loaded image's import is bound to (a stack-switching thunk)."]
        #[unsafe(naked)]
        pub extern "C" fn win64($($argument: $type),*) $(-> $ret)? {
            core::arch::naked_asm!(
                "mov x16, sp",
                "and x17, x16, #{region_mask}",
                "add x17, x17, #{control}",
                "str x16, [x17, #16]",
                "ldr x9, [x17, #8]",
                "cmp x16, x9",
                "b.hs 2f",
                "str x16, [x17, #8]",
                "2:",
                "ldr x9, [x17]",
                "sub x9, x9, #256",
                "and x9, x9, #-16",
                "mov sp, x9",
                "stp x16, x30, [sp, #-16]!",
                "sub sp, sp, #64",
                "ldp x9, x10, [x16, #0]",
                "stp x9, x10, [sp, #0]",
                "ldp x9, x10, [x16, #16]",
                "stp x9, x10, [sp, #16]",
                "ldp x9, x10, [x16, #32]",
                "stp x9, x10, [sp, #32]",
                "ldp x9, x10, [x16, #48]",
                "stp x9, x10, [sp, #48]",
                "bl {host}",
                "add sp, sp, #64",
                "ldp x16, x30, [sp], #16",
                "mov sp, x16",
                "ret",
                region_mask = const !($crate::image::stack::REGION_BYTES - 1),
                control = const $crate::image::stack::CONTROL_OFFSET,
                host = sym $host,
            )
        }
    };
}
pub(crate) use import_thunk;

fn record(entry: &'static str, call: HighWater) {
    let mut table = HIGH_WATER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let slot = table.entry(entry).or_default();
    slot.calls += call.calls;
    slot.bytes = slot.bytes.max(call.bytes);
    slot.at_import = slot.at_import.max(call.at_import);
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
/// import>`, the format `cargo xtask sim-image` merges across test binaries.
#[must_use]
pub fn table_lines() -> Vec<String> {
    high_water()
        .into_iter()
        .map(|(entry, water)| {
            format!(
                "rvscsi-image-stack: {entry}\t{}\t{}\t{}",
                water.calls, water.bytes, water.at_import
            )
        })
        .collect()
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
