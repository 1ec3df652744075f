//! The storport.sys exports a miniport imports, declared with their C names.
//!
//! Only real exports are declared (the list is `tools/pecheck/src/storport_exports.rs`): an
//! import of a name storport.sys does not export stops the driver from loading. On Windows
//! (MSVC targets) the imports are linked with `raw-dylib`, so no WDK import library is needed;
//! the library name is `storport.sys` with the `+verbatim` modifier, because plain `raw-dylib`
//! appends `.dll` and the kernel loader would look for a `storport.dll` that does not exist (a
//! test image linked with rust-lld imports from `storport.sys`, checked with objdump);
//! on Linux the test crate `rvscsi-tests` defines the same symbols (the fixed-argument ones in
//! Rust with `#[no_mangle] extern "system"`, the variadic ones in C), so the miniport runs
//! against a simulator unchanged.
//!
//! On x86_64 and aarch64 Windows there is one calling convention, so `extern "system"` and
//! `extern "C"` are the same ABI; the variadic routines are declared `extern "C"` because Rust
//! only allows `...` there.
//!
//! # The WDK's inline wrappers
//!
//! Many documented "routines" are `FORCEINLINE` wrappers in storport.h over the two variadic
//! exports. The miniport calls the export with exactly the argument list the wrapper passes, and
//! the simulator decodes the same list. Integer arguments narrower than 32 bits (`UCHAR`,
//! `BOOLEAN`, `USHORT`) undergo C's default argument promotion and travel as 32-bit `int`s (Rust
//! requires the caller to widen them to `u32` itself). "Succ" results are a `LONG` the caller
//! zeroes and StorPort sets nonzero on success.
//!
//! | wrapper | export and code | variadic arguments after the device extension | result |
//! |---|---|---|---|
//! | `StorPortEnablePassiveInitialization` | `StorPortNotification(EnablePassiveInitialization)` | `PHW_PASSIVE_INITIALIZE_ROUTINE`, `*mut i32` Succ | Succ != 0 |
//! | `StorPortInitializeDpc` | `StorPortNotification(InitializeDpc)` | `*mut StorDpc`, `PHW_DPC_ROUTINE` | none |
//! | `StorPortIssueDpc` | `StorPortNotification(IssueDpc)` | `*mut StorDpc`, `*mut c_void` SystemArgument1, `*mut c_void` SystemArgument2, `*mut i32` Succ | Succ != 0 (FALSE: already queued) |
//! | `StorPortAcquireSpinLock` | `StorPortNotification(AcquireSpinLock)` | `u32` STOR_SPINLOCK, `*mut c_void` LockContext (the `PSTOR_DPC` for `DpcLock`, else null), `*mut StorLockHandle` | none |
//! | `StorPortReleaseSpinLock` | `StorPortNotification(ReleaseSpinLock)` | `*mut StorLockHandle` | none |
//! | (complete an SRB) | `StorPortNotification(RequestComplete)` | `*mut ScsiRequestBlock` | none |
//! | (arm HwStorTimer) | `StorPortNotification(RequestTimerCall)` | `PHW_TIMER`, `u32` microseconds (0 cancels) | none |
//! | (rescan) | `StorPortNotification(BusChangeDetected)` | `u32` PathId (promoted UCHAR) | none |
//! | (reset seen) | `StorPortNotification(ResetDetected)` | none | none |
//! | `StorPortStateChangeDetected` | `StorPortNotification(StateChangeDetectedCall)` | `u32` ChangedEntity, `*mut StorAddrBtl8` Address, `u32` Attributes, `PHW_STATE_CHANGE`, `*mut c_void` Context, `*mut u32` Status | Status (`STOR_STATUS_*`) |
//! | `StorPortAcquireMSISpinLock` | `StorPortExtendedFunction(ExtFunctionAcquireMSISpinLock)` | `u32` MessageId, `*mut u32` OldIrql | STOR_STATUS |
//! | `StorPortReleaseMSISpinLock` | `StorPortExtendedFunction(ExtFunctionReleaseMSISpinLock)` | `u32` MessageId, `u32` OldIrql | STOR_STATUS |
//! | `StorPortGetMSIInfo` | `StorPortExtendedFunction(ExtFunctionGetMessageInterruptInformation)` | `u32` MessageId, `*mut MessageInterruptInformation` | STOR_STATUS |
//! | `StorPortInitializePerfOpts` | `StorPortExtendedFunction(ExtFunctionInitializePerformanceOptimizations)` | `u32` Query (promoted BOOLEAN), `*mut PerfConfigurationData` | STOR_STATUS |
//! | `StorPortGetStartIoPerfParams` | `StorPortExtendedFunction(ExtFunctionGetStartIoPerformanceParameters)` | `*mut ScsiRequestBlock`, `*mut StartioPerformanceParameters` | STOR_STATUS |
//! | `StorPortGetCurrentProcessorNumber` | `StorPortExtendedFunction(ExtFunctionGetCurrentProcessorNumber)` | `*mut ProcessorNumber` | STOR_STATUS |
//! | `StorPortGetActiveGroupCount` | `StorPortExtendedFunction(ExtFunctionGetActiveGroupCount)` | `*mut u16` NumberGroups | STOR_STATUS |
//! | `StorPortGetGroupAffinity` | `StorPortExtendedFunction(ExtFunctionGetGroupAffinity)` | `u32` GroupNumber (promoted USHORT), `*mut usize` KAFFINITY | STOR_STATUS |
//! | `StorPortGetActiveNodeCount` | `StorPortExtendedFunction(ExtFunctionGetActiveNodeCount)` | `*mut u32` | STOR_STATUS |
//! | `StorPortGetNodeAffinity` | `StorPortExtendedFunction(ExtFunctionGetNodeAffinity)` | `u32` NodeNumber, `*mut GroupAffinity` | STOR_STATUS |
//! | `StorPortGetHighestNodeNumber` | `StorPortExtendedFunction(ExtFunctionGetHighestNodeNumber)` | `*mut u32` | STOR_STATUS |
//! | `StorPortGetSystemAddress` | `StorPortExtendedFunction(ExtFunctionGetSystemAddress)` | `*mut ScsiRequestBlock`, `*mut *mut c_void` | STOR_STATUS |
//! | `StorPortAllocatePool` | `StorPortExtendedFunction(ExtFunctionAllocatePool)` | `u32` NumberOfBytes, `u32` Tag, `*mut *mut c_void` | STOR_STATUS |
//! | `StorPortFreePool` | `StorPortExtendedFunction(ExtFunctionFreePool)` | `*mut c_void` | STOR_STATUS |
//! | `StorPortInitializeTimer` | `StorPortExtendedFunction(ExtFunctionInitializeTimer)` | `*mut *mut c_void` TimerHandle | STOR_STATUS |
//! | `StorPortRequestTimer` | `StorPortExtendedFunction(ExtFunctionRequestTimer)` | `*mut c_void` TimerHandle, `PHW_TIMER_EX`, `*mut c_void` Context, `u64` TimerValue (µs), `u64` TolerableDelay (µs) | STOR_STATUS |
//! | `StorPortFreeTimer` | `StorPortExtendedFunction(ExtFunctionFreeTimer)` | `*mut c_void` TimerHandle | STOR_STATUS |
//!
//! The register and port routines are real exports, but on x64 free builds the WDK turns them
//! into inline `READ_REGISTER_*`/`WRITE_REGISTER_*` macros; calling the export costs a call and
//! is otherwise equivalent.
//!
//! The argument orders are those of storport.h's inline definitions, checked against the
//! public ReactOS copy of storport.h, public copies of the WDK 10 storport.h and Microsoft's
//! reference page of each wrapper.
//!
//! The imports carry storport.sys's export names and the parameters keep the WDK's names, so
//! the declarations read like the header (rustc does not apply `non_snake_case` to foreign
//! items).

use core::ffi::{c_char, c_void};

use super::types::{
    AccessRange, Boolean, HwInitializationData, PortConfigurationInformation, ScsiRequestBlock,
    StorPhysicalAddress, StorScatterGatherList, StorSynchronizedAccess,
};

#[cfg_attr(
    all(target_os = "windows", target_env = "msvc"),
    link(name = "storport.sys", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "system" {
    /// DriverEntry only (PASSIVE_LEVEL): registers the miniport; `Argument1`/`Argument2` are
    /// DriverEntry's DriverObject and RegistryPath. Returns an NTSTATUS as `ULONG`.
    pub fn StorPortInitialize(
        Argument1: *mut c_void,
        Argument2: *mut c_void,
        HwInitializationData: *mut HwInitializationData,
        Unused: *mut c_void,
    ) -> u32;

    /// HwStorFindAdapter only (PASSIVE_LEVEL): reads `Length` bytes of bus data (PCI config
    /// space for `PCIConfiguration`); returns the bytes read (0: no device, 2: slot empty).
    pub fn StorPortGetBusData(
        DeviceExtension: *mut c_void,
        BusDataType: u32,
        SystemIoBusNumber: u32,
        SlotNumber: u32,
        Buffer: *mut c_void,
        Length: u32,
    ) -> u32;

    /// Any IRQL ≤ DISPATCH_LEVEL: writes `Length` bytes of bus data at `Offset`; returns bytes
    /// written.
    pub fn StorPortSetBusDataByOffset(
        DeviceExtension: *mut c_void,
        BusDataType: u32,
        SystemIoBusNumber: u32,
        SlotNumber: u32,
        Buffer: *mut c_void,
        Offset: u32,
        Length: u32,
    ) -> u32;

    /// HwStorFindAdapter only: maps an access range (a BAR from `AccessRanges`) and returns
    /// its base (a virtual address for memory, a port base for I/O), or null.
    pub fn StorPortGetDeviceBase(
        HwDeviceExtension: *mut c_void,
        BusType: u32,
        SystemIoBusNumber: u32,
        IoAddress: StorPhysicalAddress,
        NumberOfBytes: u32,
        InIoSpace: Boolean,
    ) -> *mut c_void;

    /// HwStorFindAdapter / adapter control: unmaps a range mapped by `StorPortGetDeviceBase`.
    pub fn StorPortFreeDeviceBase(HwDeviceExtension: *mut c_void, MappedAddress: *mut c_void);

    /// HwStorFindAdapter only, once: allocates `NumberOfBytes` of common-buffer DMA memory
    /// (the rings); needs `ConfigInfo`'s DMA fields set first. Null on failure.
    pub fn StorPortGetUncachedExtension(
        HwDeviceExtension: *mut c_void,
        ConfigInfo: *mut PortConfigurationInformation,
        NumberOfBytes: u32,
    ) -> *mut c_void;

    /// Any IRQL: the bus address of `VirtualAddress` (in the uncached extension, or in `Srb`'s
    /// data/sense buffers) and, in `*Length`, the contiguous bytes from it.
    pub fn StorPortGetPhysicalAddress(
        HwDeviceExtension: *mut c_void,
        Srb: *mut ScsiRequestBlock,
        VirtualAddress: *mut c_void,
        Length: *mut u32,
    ) -> StorPhysicalAddress;

    /// Any IRQL: the virtual address of a bus address in the uncached extension.
    pub fn StorPortGetVirtualAddress(
        HwDeviceExtension: *mut c_void,
        PhysicalAddress: StorPhysicalAddress,
    ) -> *mut c_void;

    /// HwStorBuildIo / HwStorStartIo: the SG list of `Srb`'s data buffer, owned by StorPort
    /// until the SRB completes; null when the SRB has no data.
    pub fn StorPortGetScatterGatherList(
        DeviceExtension: *mut c_void,
        Srb: *mut ScsiRequestBlock,
    ) -> *mut StorScatterGatherList;

    /// Any IRQL: reads a byte register of a memory range.
    pub fn StorPortReadRegisterUchar(HwDeviceExtension: *mut c_void, Register: *mut u8) -> u8;
    /// Any IRQL: reads a 16-bit register of a memory range.
    pub fn StorPortReadRegisterUshort(HwDeviceExtension: *mut c_void, Register: *mut u16) -> u16;
    /// Any IRQL: reads a 32-bit register of a memory range.
    pub fn StorPortReadRegisterUlong(HwDeviceExtension: *mut c_void, Register: *mut u32) -> u32;
    /// Any IRQL: writes a byte register of a memory range.
    pub fn StorPortWriteRegisterUchar(HwDeviceExtension: *mut c_void, Register: *mut u8, Value: u8);
    /// Any IRQL: writes a 16-bit register of a memory range.
    pub fn StorPortWriteRegisterUshort(
        HwDeviceExtension: *mut c_void,
        Register: *mut u16,
        Value: u16,
    );
    /// Any IRQL: writes a 32-bit register of a memory range.
    pub fn StorPortWriteRegisterUlong(
        HwDeviceExtension: *mut c_void,
        Register: *mut u32,
        Value: u32,
    );
    /// Any IRQL: reads a byte I/O port.
    pub fn StorPortReadPortUchar(HwDeviceExtension: *mut c_void, Port: *mut u8) -> u8;
    /// Any IRQL: reads a 16-bit I/O port.
    pub fn StorPortReadPortUshort(HwDeviceExtension: *mut c_void, Port: *mut u16) -> u16;
    /// Any IRQL: reads a 32-bit I/O port.
    pub fn StorPortReadPortUlong(HwDeviceExtension: *mut c_void, Port: *mut u32) -> u32;
    /// Any IRQL: writes a byte I/O port.
    pub fn StorPortWritePortUchar(HwDeviceExtension: *mut c_void, Port: *mut u8, Value: u8);
    /// Any IRQL: writes a 16-bit I/O port.
    pub fn StorPortWritePortUshort(HwDeviceExtension: *mut c_void, Port: *mut u16, Value: u16);
    /// Any IRQL: writes a 32-bit I/O port.
    pub fn StorPortWritePortUlong(HwDeviceExtension: *mut c_void, Port: *mut u32, Value: u32);

    /// Any IRQL: busy-waits `Delay` microseconds (keep it short above DISPATCH_LEVEL).
    pub fn StorPortStallExecution(Delay: u32);

    /// Any IRQL: the system time in 100 ns units since 1601 (`KeQuerySystemTime`).
    pub fn StorPortQuerySystemTime(CurrentTime: *mut i64);

    /// DISPATCH_LEVEL or below (not from the ISR): completes every outstanding SRB of the
    /// addressed unit (`0xFF` = all) with `SrbStatus`.
    pub fn StorPortCompleteRequest(
        HwDeviceExtension: *mut c_void,
        PathId: u8,
        TargetId: u8,
        Lun: u8,
        SrbStatus: u8,
    );

    /// Any IRQL ≤ DISPATCH_LEVEL: the LU extension of a unit, or null if StorPort has none.
    pub fn StorPortGetLogicalUnit(
        HwDeviceExtension: *mut c_void,
        PathId: u8,
        TargetId: u8,
        Lun: u8,
    ) -> *mut c_void;

    /// HwStorStartIo / DPC: sets the unit's queue depth; TRUE on success.
    pub fn StorPortSetDeviceQueueDepth(
        HwDeviceExtension: *mut c_void,
        PathId: u8,
        TargetId: u8,
        Lun: u8,
        Depth: u32,
    ) -> Boolean;

    /// DISPATCH_LEVEL or below: stops sending requests to the adapter for `TimeOut` seconds
    /// (or until `StorPortResume`).
    pub fn StorPortPause(HwDeviceExtension: *mut c_void, TimeOut: u32) -> Boolean;

    /// DISPATCH_LEVEL or below: resumes a paused adapter.
    pub fn StorPortResume(HwDeviceExtension: *mut c_void) -> Boolean;

    /// DISPATCH_LEVEL or below: the adapter is busy until `RequestsToComplete` requests
    /// complete.
    pub fn StorPortBusy(HwDeviceExtension: *mut c_void, RequestsToComplete: u32) -> Boolean;

    /// DISPATCH_LEVEL or below: the adapter is ready again after `StorPortBusy`.
    pub fn StorPortReady(HwDeviceExtension: *mut c_void) -> Boolean;

    /// DISPATCH_LEVEL or below: writes an event-log entry (`ErrorCode` is an `SP_*` code).
    pub fn StorPortLogError(
        HwDeviceExtension: *mut c_void,
        Srb: *mut ScsiRequestBlock,
        PathId: u8,
        TargetId: u8,
        Lun: u8,
        ErrorCode: u32,
        UniqueId: u32,
    );

    /// DISPATCH_LEVEL or below (not from the ISR): runs `SynchronizedAccessRoutine(ext,
    /// Context)` with the interrupt lock held, at DIRQL, and returns its result (the WDK 10
    /// prototype returns `BOOLEAN`; older headers said `VOID`, so callers must not rely on it on
    /// old systems).
    pub fn StorPortSynchronizeAccess(
        HwDeviceExtension: *mut c_void,
        SynchronizedAccessRoutine: StorSynchronizedAccess,
        Context: *mut c_void,
    ) -> Boolean;

    /// HwStorFindAdapter: TRUE if the range is free to map (an `AccessRange`'s bounds).
    pub fn StorPortValidateRange(
        HwDeviceExtension: *mut c_void,
        BusType: u32,
        SystemIoBusNumber: u32,
        IoAddress: StorPhysicalAddress,
        NumberOfBytes: u32,
        InIoSpace: Boolean,
    ) -> Boolean;

    /// PASSIVE_LEVEL: allocates the adapter's one registry buffer of `*Length` bytes (updated
    /// to the size allocated). Null on failure or while another is allocated.
    pub fn StorPortAllocateRegistryBuffer(
        HwDeviceExtension: *mut c_void,
        Length: *mut u32,
    ) -> *mut u8;

    /// PASSIVE_LEVEL: frees the buffer from `StorPortAllocateRegistryBuffer`.
    pub fn StorPortFreeRegistryBuffer(HwDeviceExtension: *mut c_void, Buffer: *mut u8);

    /// PASSIVE_LEVEL: reads value `ValueName` (NUL-terminated ASCII) of type `Type` from
    /// `Parameters\Device` (`Global` nonzero) or `Parameters\Device<n>` into `Buffer`, which
    /// must come from `StorPortAllocateRegistryBuffer`; `*BufferLength` is the buffer's size on
    /// entry and the data's on return. FALSE if absent, of another type, or too long.
    pub fn StorPortRegistryRead(
        HwDeviceExtension: *mut c_void,
        ValueName: *const u8,
        Global: u32,
        Type: u32,
        Buffer: *mut u8,
        BufferLength: *mut u32,
    ) -> Boolean;
}

#[cfg_attr(
    all(target_os = "windows", target_env = "msvc"),
    link(name = "storport.sys", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "C" {
    /// Any IRQL ≤ DIRQL (depends on the code): the notification hub; see the module table for
    /// each `NotificationType`'s variadic arguments.
    pub fn StorPortNotification(NotificationType: u32, HwDeviceExtension: *mut c_void, ...);

    /// IRQL depends on `FunctionCode`: the extended-function hub; see the module table.
    /// Returns a `STOR_STATUS_*` (`STOR_STATUS_NOT_IMPLEMENTED` on an older storport.sys).
    pub fn StorPortExtendedFunction(FunctionCode: u32, HwDeviceExtension: *mut c_void, ...) -> u32;

    /// Any IRQL: a checked-build debug print with printf-style `Format` (NUL-terminated).
    pub fn StorPortDebugPrint(DebugPrintLevel: u32, Format: *const c_char, ...);
}

/// Keeps `AccessRange` in this module's vocabulary: `StorPortGetDeviceBase`'s `IoAddress` is
/// an `AccessRange::range_start` and its `InIoSpace` is `!range_in_memory`.
#[must_use]
pub const fn device_base_in_io_space(range: &AccessRange) -> Boolean {
    if range.range_in_memory == 0 { 1 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_space_is_the_negation_of_range_in_memory() {
        let mut range = AccessRange::default();
        assert_eq!(device_base_in_io_space(&range), 1);
        range.range_in_memory = 1;
        assert_eq!(device_base_in_io_space(&range), 0);
        // A nonzero BOOLEAN other than 1 still means TRUE.
        range.range_in_memory = 7;
        assert_eq!(device_base_in_io_space(&range), 0);
    }
}
