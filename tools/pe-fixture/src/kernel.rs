//! The kernel-mode side of the fixture: `DriverEntry`, its StorPort imports and the panic handler.

use core::ffi::c_void;

/// An NTSTATUS value as `DriverEntry` returns it.
pub type NtStatus = i32;

// Every import of a StorPort miniport comes from storport.sys (the HLK "Storage Imports" rule;
// it also keeps dump mode valid, where only storport.sys's dump copy is loaded). `raw-dylib`
// makes rustc write the import entries itself, so no import library is needed on Linux, and
// `+verbatim` keeps the DLL name exactly `storport.sys` instead of `storport.sys.dll`.
#[link(name = "storport.sys", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "system" {
    /// `StorPortInitialize` (storport.h): registers the miniport's HW_INITIALIZATION_DATA.
    fn StorPortInitialize(
        argument1: *mut c_void,
        argument2: *mut c_void,
        hw_initialization_data: *mut c_void,
        hw_context: *mut c_void,
    ) -> u32;
}

#[cfg(not(feature = "link-time-panic-check"))]
#[link(name = "storport.sys", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    /// `StorPortDebugPrint` (storport.h): a `DbgPrintEx`-style message for the kernel debugger.
    fn StorPortDebugPrint(debug_print_level: u32, format: *const core::ffi::c_char, ...);
}

/// A statically initialised pointer, like the miniport's tables of routines and strings: the
/// image holds its absolute address, so the loader must patch it when the image is placed
/// (base relocations, `.reloc`), which the PE check requires.
static FIXTURE_NAME: &core::ffi::CStr = c"rvscsi-pe-fixture";

/// The size in bytes of the buffer handed to StorPortInitialize: larger than any revision of
/// HW_INITIALIZATION_DATA, so StorPort never reads past it.
const INIT_DATA_BYTES: usize = 512;

/// The driver's entry point: hands StorPort an initialisation block and returns its verdict.
///
/// The block is all zeros, so its `HwInitializationDataSize` is 0 and StorPort refuses it: the
/// fixture proves the link, not a working adapter, and a machine that loads it by mistake gets
/// a failed driver load rather than a half-initialised miniport.
///
/// # Safety
/// Called by the I/O manager at PASSIVE_LEVEL with its own `DRIVER_OBJECT` and registry path,
/// which are passed to StorPort unchanged.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn DriverEntry(
    driver_object: *mut c_void,
    registry_path: *mut c_void,
) -> NtStatus {
    let mut init_data = [0_u8; INIT_DATA_BYTES];
    // The pointer is read through `black_box` so the optimiser keeps the static (and with it
    // the relocation) rather than folding it into a RIP-relative address.
    core::hint::black_box(&FIXTURE_NAME);
    #[cfg(feature = "reachable-panic")]
    reachable_panic(&init_data);
    #[cfg(feature = "large-stack-frame")]
    large_stack_frame();
    // SAFETY: the two system arguments are forwarded untouched, the initialisation block is a
    // live, writable local that outlives the call, and no HwContext is passed (NULL is allowed).
    let status = unsafe {
        StorPortInitialize(
            driver_object,
            registry_path,
            init_data.as_mut_ptr().cast(),
            core::ptr::null_mut(),
        )
    };
    // NTSTATUS is a 32-bit pattern; StorPort returns it as a ULONG.
    status.cast_signed()
}

/// A bounds-checked index the optimiser cannot resolve: the no-panic link must reject it.
#[cfg(feature = "reachable-panic")]
#[inline(never)]
fn reachable_panic(bytes: &[u8]) {
    let index = core::hint::black_box(bytes.len());
    core::hint::black_box(bytes[index]);
}

/// A local array larger than a page: LLVM probes such a frame with `__chkstk`, which a
/// `/NODEFAULTLIB` kernel image does not have, so the link must fail loudly.
#[cfg(feature = "large-stack-frame")]
#[inline(never)]
fn large_stack_frame() {
    let frame = core::hint::black_box([0_u8; 3 * 4096]);
    core::hint::black_box(&frame);
}

/// `FAST_FAIL_FATAL_APP_EXIT` (winnt.h): the fail-fast code for "the program chose to stop".
#[cfg(not(feature = "link-time-panic-check"))]
const FAST_FAIL_FATAL_APP_EXIT: u32 = 7;

/// Panics end in a bug check that names this driver, with no import outside storport.sys.
///
/// storport.sys exports no bug-check routine (neither Microsoft's StorPort reference nor any
/// export list has one), and `KeBugCheckEx` lives in ntoskrnl.exe, which a miniport must not
/// import. The processor's fail-fast trap is the documented alternative: `__fastfail` is
/// `int 0x29` on x64 and `brk #0xF003` on ARM64, and in kernel mode Windows turns it into bug
/// check 0x139 KERNEL_SECURITY_CHECK_FAILURE with the code as parameter 1 and this driver on
/// the stack. The message goes to the kernel debugger first, through StorPort.
#[cfg(not(feature = "link-time-panic-check"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the format is a NUL-terminated string without conversions, so StorPortDebugPrint
    // reads no variadic argument; it may be called at any IRQL.
    unsafe { StorPortDebugPrint(0, c"rvscsi-pe-fixture: panic, failing fast\n".as_ptr()) };
    fail_fast()
}

/// Raises the fail-fast trap; never returns.
#[cfg(not(feature = "link-time-panic-check"))]
fn fail_fast() -> ! {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `int 0x29` is the Windows fail-fast trap: the kernel bug-checks and never returns
    // here. It touches no memory and only reads ecx.
    unsafe {
        core::arch::asm!("int 0x29", in("ecx") FAST_FAIL_FATAL_APP_EXIT, options(noreturn, nostack));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `brk #0xF003` is the Windows ARM64 fail-fast trap: the kernel bug-checks and
    // never returns here. It touches no memory and only reads x0.
    unsafe {
        core::arch::asm!("brk #0xF003", in("x0") FAST_FAIL_FATAL_APP_EXIT, options(noreturn, nostack));
    }
}

/// The no-panic link check: a panic handler that calls a function nobody defines.
///
/// If the optimiser proved every panic unreachable, nothing calls this handler, it is dropped,
/// and the image links. If any panic path survives, the link fails with
/// `undefined symbol: rvscsi_panic_path_survived_optimisation`, which `cargo xtask package
/// --no-panic-check` reports as "a panic path survived".
#[cfg(feature = "link-time-panic-check")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    unsafe extern "C" {
        /// Defined nowhere, on purpose.
        fn rvscsi_panic_path_survived_optimisation() -> !;
    }
    // SAFETY: never executed: the link fails if this call is still present.
    unsafe { rvscsi_panic_path_survived_optimisation() }
}
