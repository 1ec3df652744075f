//! The miniport's routines as the simulator holds and calls them: an address the miniport
//! registered (HW_INITIALIZATION_DATA, ConfigInfo, a DPC, a timer, a callback), called in the
//! convention of the module that holds it ([`crate::image::abi_of`]): `extern "system"` for the
//! linked miniport, Windows' for a loaded image (`extern "win64"` on x64; on ARM64 AAPCS64,
//! `extern "C"`), whose calls run on the bounded image stack
//! ([`crate::image::stack::enter_image`]).

use std::ffi::c_void;

use crate::image::{Abi, abi_of, stack};

use super::locks::{CallContext, with_cpu};

/// The entry-point label of a call into an image, for the stack high-water table.
fn entry_label(routine: &'static str) -> &'static str {
    let (context, dump) = with_cpu(|cpu| {
        (
            cpu.context,
            cpu.machine
                .as_ref()
                .is_some_and(|machine| machine.options.dump.is_some()),
        )
    });
    match (context, dump, routine) {
        (CallContext::Interrupt, true, _) => "dump poll (HwInterrupt)",
        (CallContext::StartIo, true, _) => "dump StartIo",
        (CallContext::Interrupt, false, "HwUlongFn") => "MSI-X routine",
        (CallContext::Interrupt, false, _) => "HwInterrupt",
        (CallContext::DriverEntry, ..) => "DriverEntry",
        (CallContext::FindAdapter, ..) => "FindAdapter",
        (CallContext::Initialize, ..) => "Initialize",
        (CallContext::PassiveInitialize, ..) => "passive init",
        (CallContext::BuildIo, ..) => "BuildIo",
        (CallContext::StartIo, ..) => "StartIo",
        (CallContext::Dpc, ..) => "DPC",
        (CallContext::ResetBus, ..) => "ResetBus",
        (CallContext::AdapterControl, ..) => "AdapterControl",
        (CallContext::Timer, ..) => "timer",
        (CallContext::StateChange, ..) => "state change",
        (CallContext::UnitControl, ..) => "UnitControl",
        (CallContext::None, ..) => "other",
    }
}

/// Defines, for each routine signature, a type holding a registered address and its
/// convention, with an `unsafe fn call` that makes the call in that convention.
macro_rules! routines {
    ($(
        $(#[$doc:meta])*
        $name:ident($($argument:ident: $type:ty),*) $(-> $ret:ty)?;
    )*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name {
            address: usize,
            abi: Abi,
        }

        impl $name {
            /// The routine at `address`; `None` for a null pointer (not registered).
            #[must_use]
            pub fn at(address: usize) -> Option<Self> {
                (address != 0).then(|| Self {
                    address,
                    abi: abi_of(address),
                })
            }

            /// Calls the routine in its module's convention.
            ///
            /// # Safety
            /// The address is the miniport's routine of exactly this type (the WDK fixes the
            /// signature), and the arguments are what StorPort passes it.
            #[allow(
                clippy::too_many_arguments,
                reason = "the routine's own parameters (HwFindAdapter has six)"
            )]
            pub unsafe fn call(self, $($argument: $type),*) $(-> $ret)? {
                match self.abi {
                    Abi::Linked => {
                        // SAFETY: a non-null address of linked code of this signature (the
                        // caller's contract), so a valid `extern "system"` function pointer.
                        let routine = unsafe {
                            std::mem::transmute::<
                                usize,
                                unsafe extern "system" fn($($type),*) $(-> $ret)?,
                            >(self.address)
                        };
                        // SAFETY: the caller passes the arguments StorPort would.
                        unsafe { routine($($argument),*) }
                    }
                    Abi::Win64 => {
                        // SAFETY: an address inside a loaded image's code, of this signature
                        // in the Windows x64 convention (the caller's contract).
                        #[cfg(target_arch = "x86_64")]
                        let routine = unsafe {
                            std::mem::transmute::<
                                usize,
                                unsafe extern "win64" fn($($type),*) $(-> $ret)?,
                            >(self.address)
                        };
                        // SAFETY: as above, in the Windows ARM64 convention, which for these
                        // fixed signatures is AAPCS64 (the image never touches x18).
                        #[cfg(target_arch = "aarch64")]
                        let routine = unsafe {
                            std::mem::transmute::<
                                usize,
                                unsafe extern "C" fn($($type),*) $(-> $ret)?,
                            >(self.address)
                        };
                        let entry = entry_label(stringify!($name));
                        stack::enter_image(entry, || {
                            stack::note_call_site();
                            // SAFETY: as above; the image runs on its own bounded stack.
                            unsafe { routine($($argument),*) }
                        })
                    }
                }
            }
        }
    )*};
}

routines! {
    /// `NTSTATUS DriverEntry(PVOID DriverObject, PVOID RegistryPath)`.
    DriverEntryRoutine(driver_object: *mut c_void, registry_path: *mut c_void) -> i32;
    /// `BOOLEAN HwInitialize(PVOID)`, also HwInterrupt and the passive-initialisation routine.
    HwBoolFn(extension: *mut c_void) -> u8;
    /// `BOOLEAN HwStartIo(PVOID, PSCSI_REQUEST_BLOCK)`, also HwBuildIo.
    HwSrbFn(extension: *mut c_void, srb: *mut c_void) -> u8;
    /// `ULONG HwFindAdapter(PVOID, PVOID, PVOID, PCHAR, PPORT_CONFIGURATION_INFORMATION,
    /// PBOOLEAN)`.
    HwFindAdapterFn(
        extension: *mut c_void,
        hw_context: *mut c_void,
        bus_information: *mut c_void,
        argument: *mut u8,
        config: *mut c_void,
        again: *mut u8
    ) -> u32;
    /// `BOOLEAN HwMessageSignaledInterruptRoutine(PVOID, ULONG)`, also HwResetBus.
    HwUlongFn(extension: *mut c_void, value: u32) -> u8;
    /// `SCSI_ADAPTER_CONTROL_STATUS HwAdapterControl(PVOID, SCSI_ADAPTER_CONTROL_TYPE, PVOID)`,
    /// also HwUnitControl.
    HwAdapterControlFn(extension: *mut c_void, control: u32, parameters: *mut c_void) -> u32;
    /// `VOID HwDpcRoutine(PSTOR_DPC, PVOID, PVOID, PVOID)`.
    HwDpcFn(dpc: *mut c_void, extension: *mut c_void, argument1: *mut c_void, argument2: *mut c_void);
    /// `VOID HwTimer(PVOID)`.
    HwTimerFn(extension: *mut c_void);
    /// `VOID HwStateChange(PVOID, PVOID, SHORT, PVOID, ULONG)`.
    HwStateChangeFn(
        extension: *mut c_void,
        context: *mut c_void,
        address_type: i16,
        address: *mut c_void,
        status: u32
    );
    /// `BOOLEAN STOR_SYNCHRONIZED_ACCESS(PVOID, PVOID)`.
    SynchronizedAccessFn(extension: *mut c_void, context: *mut c_void) -> u8;
}
