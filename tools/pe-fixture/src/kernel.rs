//! The kernel-mode side of the fixture: `DriverEntry` and its StorPort import (the panic handler
//! and the memory functions come from `rvscsi-rt`, as in the miniport).

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
