//! The names storport.sys exports: the only functions a StorPort miniport may import.
//!
//! Origin. Debian's mingw-w64 (mingw-w64-x86-64-dev 10.0.0) ships no `libstorport.a`, so the
//! list is the intersection of two public sources, checked by hand on 2026-11-25:
//! - ReactOS `drivers/storage/port/storport/storport.spec`, the export table ReactOS reproduces
//!   from Windows' storport.sys (it also names `StorPortExtendedFunction`, which it does not
//!   implement, and the two `ScsiPort*` aliases);
//! - Microsoft's StorPort reference (MicrosoftDocs/windows-driver-docs-ddi,
//!   `wdk-ddi-src/content/storport/nf-storport-*.md`), the routines whose Requirements name
//!   `Storport.lib`.
//!
//! Ten routines appear only in Microsoft's reference (`StorPortGetActivityIdSrb`, the three
//! `StorPortGetDataInBuffer*`, three `StorPortPoFx*`, `StorPortRegistryRead/WriteAdapterKey`,
//! `StorPortSetAdapterBusType`). storport.h defines them inline over
//! `StorPortExtendedFunction` (each has an `ExtFunction*` code), so storport.sys does not
//! export them and a by-name import of one would stop the driver from loading. They are left
//! out on purpose; call them through `StorPortExtendedFunction`. The same holds for the newer
//! inline routines with no `Storport.lib` requirement at all (`StorPortAllocatePool`,
//! `StorPortInitializeSListHead`, `StorPortMarkDeviceFailed`, ...).

/// Every name storport.sys exports that a miniport may import, sorted (ASCII order).
pub const STORPORT_EXPORTS: &[&str] = &[
    "ScsiPortMoveMemory",
    "ScsiPortNotification",
    "StorPortAllocateRegistryBuffer",
    "StorPortBusy",
    "StorPortCompleteRequest",
    "StorPortConvertPhysicalAddressToUlong",
    "StorPortConvertUlongToPhysicalAddress",
    "StorPortDebugPrint",
    "StorPortDeviceBusy",
    "StorPortDeviceReady",
    "StorPortExtendedFunction",
    "StorPortFreeDeviceBase",
    "StorPortFreeRegistryBuffer",
    "StorPortGetBusData",
    "StorPortGetDeviceBase",
    "StorPortGetLogicalUnit",
    "StorPortGetPhysicalAddress",
    "StorPortGetScatterGatherList",
    "StorPortGetSrb",
    "StorPortGetUncachedExtension",
    "StorPortGetVirtualAddress",
    "StorPortInitialize",
    "StorPortLogError",
    "StorPortMoveMemory",
    "StorPortNotification",
    "StorPortPause",
    "StorPortPauseDevice",
    "StorPortQuerySystemTime",
    "StorPortReadPortBufferUchar",
    "StorPortReadPortBufferUlong",
    "StorPortReadPortBufferUshort",
    "StorPortReadPortUchar",
    "StorPortReadPortUlong",
    "StorPortReadPortUshort",
    "StorPortReadRegisterBufferUchar",
    "StorPortReadRegisterBufferUlong",
    "StorPortReadRegisterBufferUshort",
    "StorPortReadRegisterUchar",
    "StorPortReadRegisterUlong",
    "StorPortReadRegisterUshort",
    "StorPortReady",
    "StorPortRegistryRead",
    "StorPortRegistryWrite",
    "StorPortResume",
    "StorPortResumeDevice",
    "StorPortSetBusDataByOffset",
    "StorPortSetDeviceQueueDepth",
    "StorPortStallExecution",
    "StorPortSynchronizeAccess",
    "StorPortValidateRange",
    "StorPortWritePortBufferUchar",
    "StorPortWritePortBufferUlong",
    "StorPortWritePortBufferUshort",
    "StorPortWritePortUchar",
    "StorPortWritePortUlong",
    "StorPortWritePortUshort",
    "StorPortWriteRegisterBufferUchar",
    "StorPortWriteRegisterBufferUlong",
    "StorPortWriteRegisterBufferUshort",
    "StorPortWriteRegisterUchar",
    "StorPortWriteRegisterUlong",
    "StorPortWriteRegisterUshort",
];

/// Whether `name` is a storport.sys export (exact, case-sensitive: PE import names are).
#[must_use]
pub fn is_storport_export(name: &str) -> bool {
    STORPORT_EXPORTS.binary_search(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_and_unique_so_binary_search_is_valid() {
        assert!(STORPORT_EXPORTS.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn real_exports_are_known_and_inline_wrappers_are_not() {
        for name in [
            "StorPortInitialize",
            "StorPortNotification",
            "StorPortExtendedFunction",
        ] {
            assert!(is_storport_export(name), "{name}");
        }
        for name in [
            "StorPortSetAdapterBusType",
            "StorPortAllocatePool",
            "KeBugCheckEx",
            "storportinitialize",
            "",
        ] {
            assert!(!is_storport_export(name), "{name}");
        }
    }
}
