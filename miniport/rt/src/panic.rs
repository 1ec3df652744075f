//! The panic handler of a StorPort kernel image: a debugger message, then the fail-fast trap.

/// `FAST_FAIL_FATAL_APP_EXIT` (winnt.h): the fail-fast code for "the program chose to stop".
#[cfg(not(feature = "link-time-panic-check"))]
const FAST_FAIL_FATAL_APP_EXIT: u32 = 7;

// The one import this crate makes, from storport.sys like every other. `raw-dylib` writes the
// import entry without an import library, and `+verbatim` keeps the DLL name `storport.sys`
// (without it the import would name `storport.sys.dll`). The miniport's own declaration of the
// same routine (`rvscsi::storport`) names the same DLL, so the linker merges the two into one
// import.
#[cfg(not(feature = "link-time-panic-check"))]
#[link(name = "storport.sys", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    /// `StorPortDebugPrint` (storport.h): a `DbgPrintEx`-style message for the kernel debugger.
    fn StorPortDebugPrint(debug_print_level: u32, format: *const core::ffi::c_char, ...);
}

/// Panics end in a bug check that names the driver, with no import outside storport.sys.
///
/// storport.sys exports no bug-check routine (neither Microsoft's StorPort reference nor any
/// export list has one), and `KeBugCheckEx` lives in ntoskrnl.exe, which a miniport must not
/// import. The processor's fail-fast trap is the documented alternative: `__fastfail` is
/// `int 0x29` on x64 and `brk #0xF003` on ARM64, and in kernel mode Windows turns it into bug
/// check 0x139 KERNEL_SECURITY_CHECK_FAILURE with the code as parameter 1 and the driver on
/// the stack. The message goes to the kernel debugger first, through StorPort.
#[cfg(not(feature = "link-time-panic-check"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the format is a NUL-terminated string without conversions, so StorPortDebugPrint
    // reads no variadic argument; it may be called at any IRQL.
    unsafe { StorPortDebugPrint(0, c"rvscsi: panic, failing fast\n".as_ptr()) };
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
