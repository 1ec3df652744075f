//! The StorPort exports in both calling conventions from one definition: [`export!`] turns an
//! `extern "system"` function (what the linked miniport calls; System V on Linux) into that
//! function plus a Windows entry point in the module of the same name (what a loaded image
//! calls: `extern "win64"` on x64, AAPCS64 on ARM64), and [`win64_export`] is the table the
//! image loader binds imports by.

use std::ffi::c_void;

/// Defines a StorPort export once, in both conventions: the `extern "system"` function with its
/// C name (`#[no_mangle]`, for the linked miniport) and, in a module of the same name, `win64`,
/// the entry point a loaded image's import is bound to: a thunk onto the simulator's stack
/// (`crate::image::stack::import_thunk!`) calling `host`, the same body in the Windows
/// convention.
macro_rules! export {
    (
        $(#[$attribute:meta])*
        pub extern "system" fn $name:ident($($argument:ident: $type:ty),* $(,)?) $(-> $ret:ty)?
        $body:block
    ) => {
        $(#[$attribute])*
        #[unsafe(no_mangle)]
        pub extern "system" fn $name($($argument: $type),*) $(-> $ret)? $body

        #[doc = concat!("The Windows x64 flavour of `", stringify!($name), "`.")]
        #[expect(non_snake_case, reason = "the module is named after the StorPort routine")]
        pub mod $name {
            #[allow(
                clippy::wildcard_imports,
                unused_imports,
                reason = "the signature's types, whatever the parent imported for them"
            )]
            use super::*;

            #[doc = concat!("`", stringify!($name), "` in the Windows x64 convention.")]
            #[cfg(target_arch = "x86_64")]
            #[allow(
                clippy::used_underscore_binding,
                reason = "the arguments the body ignores are passed on all the same"
            )]
            extern "win64" fn host($($argument: $type),*) $(-> $ret)? {
                super::$name($($argument),*)
            }

            #[doc = concat!("`", stringify!($name), "` in the Windows ARM64 convention.")]
            #[cfg(target_arch = "aarch64")]
            #[allow(
                clippy::used_underscore_binding,
                reason = "the arguments the body ignores are passed on all the same"
            )]
            extern "C" fn host($($argument: $type),*) $(-> $ret)? {
                super::$name($($argument),*)
            }

            crate::image::stack::import_thunk!(host, fn($($argument: $type),*) $(-> $ret)?);
        }
    };
}
pub(crate) use export;

// The variadic exports: their Windows x64 halves are in `variadic.c` (ms_abi), each reached
// through a thunk of its own.
#[cfg(target_arch = "x86_64")]
unsafe extern "win64" {
    fn rvscsi_win64_StorPortNotification(notification: u32, extension: *mut c_void, ...);
    fn rvscsi_win64_StorPortExtendedFunction(function: u32, extension: *mut c_void, ...) -> u32;
    fn rvscsi_win64_StorPortDebugPrint(level: u32, format: *const u8, ...);
}
#[cfg(target_arch = "aarch64")]
unsafe extern "C" {
    fn rvscsi_win64_StorPortNotification(notification: u32, extension: *mut c_void, ...);
    fn rvscsi_win64_StorPortExtendedFunction(function: u32, extension: *mut c_void, ...) -> u32;
    fn rvscsi_win64_StorPortDebugPrint(level: u32, format: *const u8, ...);
}

/// The thunk of `StorPortNotification`.
mod notification {
    use super::{c_void, rvscsi_win64_StorPortNotification};
    crate::image::stack::import_thunk!(
        rvscsi_win64_StorPortNotification,
        fn(notification: u32, extension: *mut c_void)
    );
}

/// The thunk of `StorPortExtendedFunction`.
mod extended_function {
    use super::{c_void, rvscsi_win64_StorPortExtendedFunction};
    crate::image::stack::import_thunk!(
        rvscsi_win64_StorPortExtendedFunction,
        fn(function: u32, extension: *mut c_void) -> u32
    );
}

/// The thunk of `StorPortDebugPrint`.
mod debug_print {
    use super::rvscsi_win64_StorPortDebugPrint;
    crate::image::stack::import_thunk!(
        rvscsi_win64_StorPortDebugPrint,
        fn(level: u32, format: *const u8)
    );
}

/// Lists each export's Windows x64 entry point under its StorPort name.
macro_rules! win64_table {
    ($($name:ident),* $(,)?) => {
        /// The Windows x64 entry point of the StorPort routine `name`, for binding a loaded
        /// image's imports; `None` if the simulator does not export it.
        #[must_use]
        pub fn win64_export(name: &str) -> Option<u64> {
            use super::exports::*;
            let address = match name {
                $(stringify!($name) => ($name::win64 as *const ()).addr(),)*
                "StorPortNotification" => (notification::win64 as *const ()).addr(),
                "StorPortExtendedFunction" => (extended_function::win64 as *const ()).addr(),
                "StorPortDebugPrint" => (debug_print::win64 as *const ()).addr(),
                _ => return None,
            };
            Some(address as u64)
        }
    };
}

win64_table!(
    StorPortInitialize,
    StorPortGetDeviceBase,
    StorPortFreeDeviceBase,
    StorPortValidateRange,
    StorPortGetBusData,
    StorPortSetBusDataByOffset,
    StorPortGetUncachedExtension,
    StorPortAllocateRegistryBuffer,
    StorPortFreeRegistryBuffer,
    StorPortRegistryRead,
    StorPortGetPhysicalAddress,
    StorPortGetVirtualAddress,
    StorPortGetScatterGatherList,
    StorPortGetLogicalUnit,
    StorPortCompleteRequest,
    StorPortSetDeviceQueueDepth,
    StorPortBusy,
    StorPortReady,
    StorPortLogError,
    StorPortStallExecution,
    StorPortQuerySystemTime,
    StorPortMoveMemory,
    StorPortConvertUlong64ToPhysicalAddress,
    StorPortConvertPhysicalAddressToUlong64,
    StorPortSynchronizeAccess,
    StorPortReadRegisterUchar,
    StorPortWriteRegisterUchar,
    StorPortReadRegisterBufferUchar,
    StorPortWriteRegisterBufferUchar,
    StorPortReadRegisterUshort,
    StorPortWriteRegisterUshort,
    StorPortReadRegisterBufferUshort,
    StorPortWriteRegisterBufferUshort,
    StorPortReadRegisterUlong,
    StorPortWriteRegisterUlong,
    StorPortReadRegisterBufferUlong,
    StorPortWriteRegisterBufferUlong,
    StorPortReadRegisterUlong64,
    StorPortWriteRegisterUlong64,
    StorPortReadRegisterBufferUlong64,
    StorPortWriteRegisterBufferUlong64,
    StorPortReadPortUchar,
    StorPortWritePortUchar,
    StorPortReadPortBufferUchar,
    StorPortWritePortBufferUchar,
    StorPortReadPortUshort,
    StorPortWritePortUshort,
    StorPortReadPortBufferUshort,
    StorPortWritePortBufferUshort,
    StorPortReadPortUlong,
    StorPortWritePortUlong,
    StorPortReadPortBufferUlong,
    StorPortWritePortBufferUlong,
);

#[cfg(test)]
mod tests {
    use super::win64_export;

    /// Every StorPort routine exports.rs defines (directly or through `register_routines!`)
    /// has a Windows entry point in the table, so a new export cannot be forgotten there.
    #[test]
    fn every_export_has_a_windows_entry_point() {
        let source = include_str!("exports.rs");
        let mut names: Vec<&str> = source
            .split("pub extern \"system\" fn ")
            .skip(1)
            .filter_map(|rest| rest.split('(').next())
            .filter(|name| name.starts_with("StorPort"))
            .collect();
        for block in source.split("register_routines!(").skip(1) {
            let arguments = block.split(')').next().unwrap_or_default();
            names.extend(
                arguments
                    .split(',')
                    .map(str::trim)
                    .filter(|name| name.starts_with("StorPort")),
            );
        }
        assert!(names.len() > 40, "{names:?}");
        for name in names {
            assert!(
                win64_export(name).is_some(),
                "{name} has no Windows entry point"
            );
        }
        for variadic in [
            "StorPortNotification",
            "StorPortExtendedFunction",
            "StorPortDebugPrint",
        ] {
            assert!(win64_export(variadic).is_some(), "{variadic}");
        }
        assert_eq!(win64_export("StorPortNoSuchRoutine"), None);
    }
}
